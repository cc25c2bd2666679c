import { execFileSync, spawn } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, inject, it } from 'vitest';
import { ImageError, JsBoxlite, NetworkError, SimpleBox, type PullProgress } from '../../dist/index.js';
import { startRegistry, type Registry as TestRegistry } from '../fixtures/registry.js';
import { scratchHome } from './helpers.js';

// Real registries (Debian's docker-registry, distribution 2.8) on 127.0.0.1, fed with
// images this suite builds from Debian packages and pushes with skopeo.
const root = inject('root');
const layouts = path.join(root, '.cache', 'images');
let plain: TestRegistry;
let home: string;

function makeLayout(variant: string): string {
  const dir = path.join(layouts, variant);
  execFileSync(process.execPath, [path.join(root, 'scripts', 'make-test-image.mjs'), dir, '--variant', variant], { stdio: 'ignore' });
  return dir;
}

async function manifestDigest(reg: TestRegistry, repo: string, tag: string): Promise<string> {
  const res = await fetch(`${reg.url}/v2/${repo}/manifests/${tag}`, {
    method: 'HEAD',
    headers: { accept: 'application/vnd.oci.image.manifest.v1+json, application/vnd.oci.image.index.v1+json' },
  });
  return res.headers.get('docker-content-digest')!;
}

function cli(args: string[], h = home): { code: number; stdout: string; stderr: string } {
  const r = spawnSyncNode([path.join(root, 'dist', 'cli', 'main.js'), '--home', h, ...args]);
  return r;
}

function spawnSyncNode(args: string[]): { code: number; stdout: string; stderr: string } {
  try {
    const stdout = execFileSync(process.execPath, args, { encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'] });
    return { code: 0, stdout, stderr: '' };
  } catch (err) {
    const e = err as { status: number; stdout: string; stderr: string };
    return { code: e.status, stdout: e.stdout, stderr: e.stderr };
  }
}

beforeAll(async () => {
  plain = await startRegistry({});
  await plain.push(makeLayout('busybox'), 'busybox:latest');
  await plain.push(path.join(layouts, 'busybox'), 'library/busybox:latest');
  await plain.push(makeLayout('layers'), 'layered:v1');
  await plain.push(makeLayout('multiarch'), 'multi:latest', { all: true });
  // Built by scripts/setup.sh from Debian's python3.11 packages (slow to rebuild here).
  await plain.push(path.join(layouts, 'python'), 'python:3.11');
  home = scratchHome('boxlite-img-');
});

afterAll(async () => {
  await plain?.stop();
  if (home) fs.rmSync(home, { recursive: true, force: true });
});

describe('pull from a real registry', () => {
  it('pulls by tag, stores it, and a second pull downloads nothing', async () => {
    const rt = new JsBoxlite({ homeDir: home, imageRegistries: [{ host: plain.host, transport: 'http' }] });
    const first: PullProgress[] = [];
    const r = await rt.images.pull(`${plain.host}/busybox:latest`, { onProgress: (p) => first.push(p) });
    expect(r.reference).toBe(`${plain.host}/busybox:latest`);
    expect(r.configDigest).toMatch(/^sha256:[0-9a-f]{64}$/);
    expect(r.layerCount).toBe(1);
    expect(first.some((p) => p.status === 'downloading' || p.status === 'done')).toBe(true);

    const again: PullProgress[] = [];
    await rt.images.pull(`${plain.host}/busybox:latest`, { onProgress: (p) => again.push(p) });
    expect(again.length).toBeGreaterThan(0);
    expect(again.every((p) => p.status === 'cached')).toBe(true);

    const list = await rt.images.list();
    expect(list.map((i) => i.reference)).toContain(`${plain.host}/busybox:latest`);
    expect(list.find((i) => i.reference === r.reference)).toMatchObject({ repository: 'busybox', tag: 'latest', id: r.configDigest });
    rt.close();
  });

  it('pulls by digest, and through a configured mirror for an unqualified name', async () => {
    const rt = new JsBoxlite({ homeDir: home, imageRegistries: [{ host: plain.host, transport: 'http', search: true }] });
    const digest = await manifestDigest(plain, 'busybox', 'latest');
    const byDigest = await rt.images.pull(`${plain.host}/busybox@${digest}`);
    expect(byDigest.reference).toBe(`${plain.host}/busybox@${digest}`);
    // No docker.io access here at all: the mirror must answer for "busybox".
    const mirrored = await rt.images.pull('busybox');
    expect(mirrored.configDigest).toBe(byDigest.configDigest);
    // The result echoes the reference as asked for, as the reference's ImagePullResult does.
    expect(mirrored.reference).toBe('busybox');
    expect(mirrored.resolvedReference).toMatch(/busybox:latest$/);
    rt.close();
  });

  it('reports unknown images, unknown digests and bad references as Image errors', async () => {
    const rt = new JsBoxlite({ homeDir: home, imageRegistries: [{ host: plain.host, transport: 'http' }] });
    const missing = await rt.images.pull(`${plain.host}/nope:latest`).catch((e: unknown) => e);
    expect(missing).toBeInstanceOf(ImageError);
    expect((missing as Error).message).toMatch(/^images error: .*(unknown|not found)/i);
    const wrongDigest = await rt.images.pull(`${plain.host}/busybox@sha256:${'0'.repeat(64)}`).catch((e: unknown) => e);
    expect(wrongDigest).toBeInstanceOf(ImageError);
    const bad = await rt.images.pull('UPPER/Case:tag').catch((e: unknown) => e);
    expect(bad).toBeInstanceOf(ImageError);
    expect((bad as Error).message).toMatch(/invalid reference format/);
    rt.close();
  });

  it('applies whiteouts and opaque dirs of a multi-layer image, and picks the host arch of an index', async () => {
    const rt = new JsBoxlite({ homeDir: home, imageRegistries: [{ host: plain.host, transport: 'http' }] });
    const layered = await rt.images.pull(`${plain.host}/layered:v1`);
    expect(layered.layerCount).toBe(3);
    // The pulled layers become the box's root filesystem with whiteouts and the opaque dir applied.
    const lbox = await rt.create({ image: `${plain.host}/layered:v1` });
    const ls = (dir: string) =>
      execFileSync('debugfs', ['-R', `ls ${dir}`, lbox.config.image.rootfsBase], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'ignore'] })
        .split(/\s+/)
        .filter((n) => /^[a-z-]+$/.test(n));
    expect(ls('/etc').sort()).toEqual(['added', 'keep']);
    expect(ls('/data')).toEqual(['new']);
    expect(ls('/')).not.toContain('gone');
    await rt.remove(lbox.id);
    await using box = new SimpleBox({ image: `${plain.host}/multi:latest`, runtime: rt });
    const arch = await box.exec('cat', '/arch');
    expect(arch.stdout.trim()).toBe('amd64');
    const env = await box.exec('sh', '-c', 'echo $PATH');
    expect(env.stdout).toMatch(/\/usr\/local\/bin/);
  });

  it('runs Python from an image built from Debian packages, honouring its config', async () => {
    const rt = new JsBoxlite({ homeDir: home, imageRegistries: [{ host: plain.host, transport: 'http' }] });
    await using box = new SimpleBox({ image: `${plain.host}/python:3.11`, runtime: rt, env: { GREETING: 'hi' } });
    const r = await box.exec('python3', '-c', 'import json, os, sys; print(json.dumps([sys.version_info[:2], os.environ["GREETING"]]))');
    expect(r.stderr).toBe('');
    expect(JSON.parse(r.stdout)).toEqual([[3, 11], 'hi']);
  });

  it('lets two processes pull the same image at once without corrupting the store', async () => {
    const h = scratchHome('boxlite-img-');
    try {
      const script = `
        import { JsBoxlite } from ${JSON.stringify(path.join(root, 'dist', 'index.js'))};
        const rt = new JsBoxlite({ homeDir: ${JSON.stringify(h)}, imageRegistries: [{ host: ${JSON.stringify(plain.host)}, transport: 'http' }] });
        const r = await rt.images.pull(${JSON.stringify(`${plain.host}/layered:v1`)});
        console.log(r.configDigest);
      `;
      const run = () =>
        new Promise<string>((resolve, reject) => {
          const c = spawn(process.execPath, ['--input-type=module', '-e', script], { stdio: ['ignore', 'pipe', 'inherit'] });
          let out = '';
          c.stdout.on('data', (d) => (out += d));
          c.on('close', (code) => (code === 0 ? resolve(out.trim()) : reject(new Error(`pull exited ${code}`))));
        });
      const [a, b] = await Promise.all([run(), run()]);
      expect(a).toBe(b);
      const rt = new JsBoxlite({ homeDir: h });
      expect((await rt.images.list()).length).toBe(1);
      rt.close();
    } finally {
      fs.rmSync(h, { recursive: true, force: true });
    }
  });
});

describe('authentication and TLS', () => {
  it('needs credentials for an htpasswd registry and uses them from imageRegistries', async () => {
    const secured = await startRegistry({ htpasswd: { user: 'alice', password: 's3cret' } });
    try {
      await secured.push(path.join(layouts, 'busybox'), 'private:latest');
      const h = scratchHome('boxlite-img-');
      const anon = new JsBoxlite({ homeDir: h, imageRegistries: [{ host: secured.host, transport: 'http' }] });
      const err = await anon.images.pull(`${secured.host}/private:latest`).catch((e: unknown) => e);
      expect(err).toBeInstanceOf(ImageError);
      expect((err as Error).message).toMatch(/authentication required|unauthorized/i);
      anon.close();
      const authed = new JsBoxlite({
        homeDir: h,
        imageRegistries: [{ host: secured.host, transport: 'http', auth: { username: 'alice', password: 's3cret' } }],
      });
      expect((await authed.images.pull(`${secured.host}/private:latest`)).layerCount).toBe(1);
      authed.close();
      fs.rmSync(h, { recursive: true, force: true });
    } finally {
      await secured.stop();
    }
  });

  it('talks https to a registry with a self-signed certificate only when told to', async () => {
    const tls = await startRegistry({ tls: true });
    try {
      await tls.push(path.join(layouts, 'busybox'), 'secure:latest');
      const h = scratchHome('boxlite-img-');
      const strict = new JsBoxlite({ homeDir: h, imageRegistries: [{ host: tls.host }] });
      const err = await strict.images.pull(`${tls.host}/secure:latest`).catch((e: unknown) => e);
      expect(err).toBeInstanceOf(NetworkError);
      expect((err as Error).message).toMatch(/^network error: .*(certificate|TLS)/i);
      expect((err as Error).message).toMatch(/skipVerify|caFile/);
      strict.close();
      const withCa = new JsBoxlite({ homeDir: h, imageRegistries: [{ host: tls.host, caFile: tls.caFile }] });
      expect((await withCa.images.pull(`${tls.host}/secure:latest`)).layerCount).toBe(1);
      withCa.close();
      const lax = new JsBoxlite({ homeDir: h, imageRegistries: [{ host: tls.host, skipVerify: true }] });
      expect((await lax.images.pull(`${tls.host}/secure:latest`)).layerCount).toBe(1);
      lax.close();
      fs.rmSync(h, { recursive: true, force: true });
    } finally {
      await tls.stop();
    }
  });
});

describe('boxlite pull, images, rmi, image prune, image load', () => {
  it('manages images from the CLI', async () => {
    const h = scratchHome('boxlite-img-');
    try {
      const reg = ['--registry', `http://${plain.host}`];
      const pulled = cli([...reg, 'pull', `${plain.host}/busybox:latest`], h);
      expect(pulled.code).toBe(0);
      expect(pulled.stdout).toMatch(/Pulled .*busybox:latest/);
      const quiet = cli([...reg, 'pull', '-q', 'busybox'], h);
      expect(quiet.stdout.trim()).toBe('docker.io/library/busybox:latest');

      const json = JSON.parse(cli(['images', '--format', 'json'], h).stdout) as Array<{ reference: string }>;
      expect(json.map((i) => i.reference).sort()).toEqual([`${plain.host}/busybox:latest`, 'docker.io/library/busybox:latest'].sort());
      expect(cli(['images', '--format', 'yaml'], h).stdout).toMatch(/reference: /);
      expect(cli(['images'], h).stdout).toMatch(/^REPOSITORY\s+TAG\s+IMAGE ID/);

      // A box keeps its image: rmi refuses until forced.
      const run = cli([...reg, 'run', '--name', 'keeper', `${plain.host}/busybox:latest`, 'true'], h);
      expect(run.code).toBe(0);
      const refused = cli(['rmi', `${plain.host}/busybox:latest`], h);
      expect(refused.code).toBe(1);
      expect(refused.stderr).toMatch(/invalid state: image .* is used by box/);
      expect(cli(['rmi', '-f', `${plain.host}/busybox:latest`], h).code).toBe(0);
      expect(cli(['rm', 'keeper'], h).code).toBe(0);
      expect(cli(['rmi', 'busybox'], h).code).toBe(0);
      const pruned = cli(['image', 'prune'], h);
      expect(pruned.stdout).toMatch(/Deleted [1-9]\d* blobs/);
      expect(fs.readdirSync(path.join(h, 'images', 'blobs', 'sha256'))).toEqual([]);

      // Without any registry: a docker save archive and an OCI archive made by skopeo.
      const archive = path.join(h, 'saved.tar');
      execFileSync('skopeo', ['copy', '-q', `oci:${path.join(layouts, 'busybox')}`, `docker-archive:${archive}:offline/busybox:1.0`]);
      const loaded = cli(['image', 'load', '-i', archive], h);
      expect(loaded.stdout).toMatch(/Loaded image: .*offline\/busybox:1\.0/);
      const ociArchive = path.join(h, 'oci.tar');
      execFileSync('skopeo', ['copy', '-q', `oci:${path.join(layouts, 'busybox')}`, `oci-archive:${ociArchive}:example.com/oci/busybox:2.0`]);
      expect(cli(['image', 'load', '-i', ociArchive], h).stdout).toMatch(/Loaded image: example\.com\/oci\/busybox:2\.0/);
      const out = cli(['run', '--rm', 'offline/busybox:1.0', 'echo', 'loaded ok'], h);
      expect(out.stdout).toBe('loaded ok\n');
    } finally {
      cli(['rm', '-f', 'keeper'], h);
      fs.rmSync(h, { recursive: true, force: true });
    }
  });

  it('refuses rmi of an unknown image with a not-found error', () => {
    const r = cli(['rmi', 'never/pulled:1']);
    expect(r.code).toBe(1);
    expect(r.stderr).toMatch(/image not found: never\/pulled:1/);
  });
});
