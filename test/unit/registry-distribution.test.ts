// pullImage against the real thing: Debian's docker-registry (distribution
// 2.8) from test/fixtures/registry.ts, over http, https with a private CA,
// htpasswd Basic auth and token auth. Skipped when the tools are missing.

import * as fs from 'node:fs';
import * as path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { BoxliteError } from '../../src/errors/index.js';
import { hostPlatform } from '../../src/images/oci-layout.js';
import { pullImage } from '../../src/images/pull.js';
import type { RegistrySettings } from '../../src/images/registry/index.js';
import { scratchDir } from '../fixtures/images.js';
import { startRegistry, type RegistryOptions } from '../fixtures/registry.js';
// @ts-ignore -- no .d.ts for the script
import * as script from '../../scripts/make-test-image.mjs';

// scripts/setup.sh installs these; a missing one is a set-up failure, not a reason to skip.
const missingTools = ['/usr/bin/docker-registry', '/usr/bin/skopeo', '/usr/bin/htpasswd', '/usr/bin/openssl'].filter((p) => !fs.existsSync(p));

describe('pullImage from docker-registry (distribution 2.8)', () => {
  it('has the registry tools scripts/setup.sh installs', () => {
    expect(missingTools).toEqual([]);
  });

  let scratch: ReturnType<typeof scratchDir>;
  let busybox: string;
  let busyboxDigest: string;
  let multiarch: string;
  let multiarchDigest: string;
  let n = 0;
  const env = () => ({ ...process.env, DOCKER_CONFIG: path.join(scratch.dir, 'no-docker-config') });
  const store = () => {
    const root = path.join(scratch.dir, `store-${++n}`);
    return { blobsDir: path.join(root, 'blobs', 'sha256'), tmpDir: path.join(root, 'tmp') };
  };

  beforeAll(async () => {
    scratch = scratchDir('registry-dist');
    busybox = path.join(scratch.dir, 'busybox');
    busyboxDigest = (await script.makeBusyboxImage(busybox)).manifestDigest;
    multiarch = path.join(scratch.dir, 'multiarch');
    multiarchDigest = (await script.makeMultiarchImage(multiarch)).manifestDigest;
  });
  afterAll(() => scratch?.cleanup());

  const variants: Array<[string, RegistryOptions]> = [
    ['http', {}],
    ['https (caFile)', { tls: true }],
    ['htpasswd', { htpasswd: { user: 'alice', password: 'wonder land' } }],
    ['token', { tokenAuth: true }],
  ];

  for (const [label, opts] of variants) {
    it(`${label}: pull, pull again (nothing downloaded), wrong credentials`, async () => {
      const reg = await startRegistry(opts);
      try {
        await reg.push(busybox, 'busybox:latest');
        const base: RegistrySettings = { host: reg.host, ...(opts.tls ? { caFile: reg.caFile! } : { transport: 'http' as const }) };
        const settings: RegistrySettings = reg.credentials
          ? { ...base, auth: { username: reg.credentials.user, password: reg.credentials.password } }
          : base;
        const s = store();
        const r = await pullImage(`${reg.host}/busybox:latest`, { ...s, registries: [settings], env: env() });
        expect(r.manifestDigest).toBe(busyboxDigest);
        expect(r.downloadedBytes).toBeGreaterThan(0);
        for (const l of r.layers) expect(fs.statSync(l.path).size).toBe(l.size);
        const again = await pullImage(`${reg.host}/busybox`, { ...s, registries: [settings], env: env() });
        expect(again.downloadedBytes).toBe(0);
        expect(again.manifestDigest).toBe(busyboxDigest);
        if (reg.credentials) {
          const err = await pullImage(`${reg.host}/busybox:latest`, {
            ...store(),
            registries: [{ ...base, auth: { username: reg.credentials.user, password: 'wrong' } }],
            env: env(),
          }).then(
            () => undefined,
            (e: unknown) => e,
          );
          expect(err).toBeInstanceOf(BoxliteError);
          expect((err as Error).message).toMatch(/authentication required for busybox at 127\.0\.0\.1:\d+/);
        }
        const missing = await pullImage(`${reg.host}/busybox:nope`, { ...store(), registries: [settings], env: env() }).then(
          () => undefined,
          (e: unknown) => e,
        );
        expect((missing as Error).message).toBe(`images error: manifest unknown: ${reg.host}/busybox:nope`);
      } catch (err) {
        console.error(`registry log (${label}):\n${reg.logs()}`);
        throw err;
      } finally {
        await reg.stop();
      }
    });
  }

  it('multiarch index: picks the host platform; by digest from the store needs no registry', async () => {
    const reg = await startRegistry();
    try {
      await reg.push(multiarch, 'multi:latest', { all: true });
      const s = store();
      const registries: RegistrySettings[] = [{ host: reg.host, transport: 'http' }];
      const r = await pullImage(`${reg.host}/multi:latest`, { ...s, registries, env: env() });
      expect(r.indexDigest).toBe(multiarchDigest);
      expect(r.platform.architecture).toBe(hostPlatform().architecture);
      expect(r.layers).toHaveLength(2);
      await reg.stop();
      const offline = await pullImage(`${reg.host}/multi@${multiarchDigest}`, { ...s, registries, env: env() });
      expect(offline.manifestDigest).toBe(r.manifestDigest);
    } finally {
      await reg.stop();
    }
  });
});
