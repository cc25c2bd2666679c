// Smoke test of the registry fixture (test/fixtures/registry.ts): each variant
// starts Debian's docker-registry, takes a push of the busybox layout through
// skopeo, serves the manifest to plain undici requests, and leaves no process.
// No VM.

import { execFileSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { Agent, fetch } from 'undici';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { scratchDir } from '../fixtures/images.js';
import { startRegistry, type Registry, type RegistryOptions } from '../fixtures/registry.js';
// @ts-ignore -- no .d.ts for the script
import * as script from '../../scripts/make-test-image.mjs';

const MANIFEST_TYPES = [
  'application/vnd.oci.image.manifest.v1+json',
  'application/vnd.oci.image.index.v1+json',
  'application/vnd.docker.distribution.manifest.v2+json',
  'application/vnd.docker.distribution.manifest.list.v2+json',
].join(', ');

const haveTools = ['/usr/bin/docker-registry', '/usr/bin/skopeo', '/usr/bin/htpasswd', '/usr/bin/openssl'].every((p) => fs.existsSync(p));

const basic = (c: { user: string; password: string }) => 'Basic ' + Buffer.from(`${c.user}:${c.password}`).toString('base64');

/** Parses `Bearer realm="…",service="…",scope="…"`. */
function parseChallenge(header: string | null): Record<string, string> {
  const out: Record<string, string> = {};
  for (const m of (header ?? '').matchAll(/(\w+)="([^"]*)"/g)) out[m[1]!] = m[2]!;
  return out;
}

function registryPids(): number[] {
  return execFileSync('ps', ['-eo', 'pid=,args='], { encoding: 'utf8' })
    .split('\n')
    .filter((l) => /docker-registry serve .*boxlite-registry-/.test(l))
    .map((l) => Number(l.trim().split(/\s+/)[0]));
}

describe.skipIf(!haveTools)('registry fixture', () => {
  let scratch: ReturnType<typeof scratchDir>;
  let busybox: string;
  let busyboxDigest: string;
  let multiarch: string;
  let multiarchDigest: string;
  const before = new Set<number>();

  beforeAll(async () => {
    for (const p of registryPids()) before.add(p);
    scratch = scratchDir('registry');
    busybox = path.join(scratch.dir, 'busybox');
    busyboxDigest = (await script.makeBusyboxImage(busybox)).manifestDigest;
    multiarch = path.join(scratch.dir, 'multiarch');
    multiarchDigest = (await script.makeMultiarchImage(multiarch)).manifestDigest;
  });
  afterAll(() => scratch?.cleanup());

  const variants: Array<[string, RegistryOptions]> = [
    ['http', {}],
    ['https', { tls: true }],
    ['htpasswd', { htpasswd: { user: 'alice', password: 'wonder land' } }],
    ['token', { tokenAuth: true }],
    ['https + token', { tls: true, tokenAuth: true }],
  ];

  for (const [label, opts] of variants) {
    it(`${label}: push busybox, GET its manifest, stop`, async () => {
      const reg: Registry = await startRegistry(opts);
      try {
        expect(reg.host).toMatch(/^127\.0\.0\.1:\d+$/);
        expect(reg.url).toBe(`${opts.tls ? 'https' : 'http'}://${reg.host}`);
        if (opts.tls) expect(fs.readFileSync(reg.caFile!, 'utf8')).toContain('BEGIN CERTIFICATE');

        const pushed = await reg.push(busybox, 'busybox:latest');
        expect(pushed).toBe(busyboxDigest);

        const manifestUrl = `${reg.url}/v2/busybox/manifests/latest`;
        // Plain undici with only the CA: no fixture dispatcher.
        const dispatcher = new Agent(opts.tls ? { connect: { ca: fs.readFileSync(reg.caFile!) } } : {});
        try {
          const anon = await fetch(manifestUrl, { dispatcher, headers: { accept: MANIFEST_TYPES } });
          await anon.arrayBuffer();
          let auth: string | undefined;
          if (opts.htpasswd) {
            expect(anon.status).toBe(401);
            expect(anon.headers.get('www-authenticate')).toMatch(/^Basic /);
            auth = basic(reg.credentials!);
          } else if (opts.tokenAuth) {
            expect(anon.status).toBe(401);
            const ch = parseChallenge(anon.headers.get('www-authenticate'));
            expect(anon.headers.get('www-authenticate')).toMatch(/^Bearer /);
            expect(ch.realm).toBe(reg.token!.realm);
            expect(ch.service).toBe(reg.token!.service);
            expect(ch.scope).toBe('repository:busybox:pull');
            const tokenUrl = `${ch.realm}?service=${encodeURIComponent(ch.service!)}&scope=${encodeURIComponent(ch.scope!)}`;
            const denied = await fetch(tokenUrl, { headers: { authorization: basic({ user: 'boxlite', password: 'wrong' }) } });
            expect(denied.status).toBe(401);
            await denied.arrayBuffer();
            const tok = await fetch(tokenUrl, { headers: { authorization: basic(reg.credentials!) } });
            expect(tok.status).toBe(200);
            const body = (await tok.json()) as { token: string };
            auth = `Bearer ${body.token}`;
          } else {
            expect(anon.status).toBe(200);
          }
          const res = await fetch(manifestUrl, { dispatcher, headers: { accept: MANIFEST_TYPES, ...(auth ? { authorization: auth } : {}) } });
          const text = await res.text();
          expect(res.status, text).toBe(200);
          expect(res.headers.get('docker-content-digest')).toBe(busyboxDigest);
          expect(res.headers.get('content-type')).toBe('application/vnd.oci.image.manifest.v1+json');
          const manifest = JSON.parse(text) as { layers: Array<{ digest: string }> };
          expect(manifest.layers).toHaveLength(1);
        } finally {
          await dispatcher.close();
        }
      } catch (err) {
        console.error(`registry log (${label}):\n${reg.logs()}`);
        throw err;
      } finally {
        await reg.stop();
      }
      expect(() => process.kill(reg.pid, 0)).toThrow();
      expect(fs.existsSync(reg.logFile)).toBe(false);
    });
  }

  it('multiarch: push --all serves an image index with amd64 and arm64', async () => {
    const reg = await startRegistry();
    try {
      expect(await reg.push(multiarch, 'multi:latest', { all: true })).toBe(multiarchDigest);
      const res = await fetch(`${reg.url}/v2/multi/manifests/latest`, { headers: { accept: MANIFEST_TYPES } });
      expect(res.headers.get('content-type')).toBe('application/vnd.oci.image.index.v1+json');
      const index = (await res.json()) as { manifests: Array<{ digest: string; platform: { architecture: string } }> };
      expect(index.manifests.map((m) => m.platform.architecture).sort()).toEqual(['amd64', 'arm64']);
      for (const m of index.manifests) {
        const r = await fetch(`${reg.url}/v2/multi/manifests/${m.digest}`, { headers: { accept: MANIFEST_TYPES } });
        expect(r.status).toBe(200);
        await r.arrayBuffer();
      }
    } finally {
      await reg.stop();
    }
  });

  it('leaves no registry process behind', () => {
    expect(registryPids().filter((p) => !before.has(p))).toEqual([]);
  });
});
