// The ext4 base cache (one per manifest digest, built once, never replaced)
// and per-box qcow2 overlays that leave the base untouched.

import { execFileSync, spawn } from 'node:child_process';
import * as fs from 'node:fs';
import { hostname } from 'node:os';
import * as path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createOverlay, prepareRootfs, type RootfsInfo } from '../../src/images/rootfs.js';
import { fileSha256, makeBusyboxImage, makeLayersImage, ROOT, scratchDir, stat } from '../fixtures/images.js';

const scratch = scratchDir('rootfs');
afterAll(() => scratch.cleanup());

let busybox: string;
let layers: string;
beforeAll(async () => {
  busybox = path.join(scratch.dir, 'busybox');
  layers = path.join(scratch.dir, 'layers');
  await makeBusyboxImage(busybox);
  await makeLayersImage(layers);
});

const imagesDir = (name: string) => path.join(scratch.dir, name, 'images');

describe('prepareRootfs', () => {
  it('builds once per manifest digest and reuses the cached base', async () => {
    const dir = imagesDir('reuse');
    const first = await prepareRootfs({ layoutDir: busybox, imagesDir: dir });
    expect(first.cached).toBe(false);
    expect(first.build?.totalMs).toBeGreaterThan(0);
    const hex = first.image.manifestDigest.slice('sha256:'.length);
    expect(first.ext4Path).toBe(path.join(dir, 'rootfs', `${hex}.ext4`));
    expect(fs.statSync(first.ext4Path).mode & 0o777).toBe(0o444);
    expect(stat(first.ext4Path, '/usr/local/bin/suid-probe').mode).toBe(0o4755);
    console.log(`[timing] busybox prepareRootfs (cold): ${first.build!.totalMs} ms (layers ${first.build!.layersMs} ms)`);

    const info = JSON.parse(fs.readFileSync(path.join(dir, 'rootfs', `${hex}.json`), 'utf8')) as RootfsInfo;
    expect(info).toMatchObject({
      format: 1,
      manifestDigest: first.image.manifestDigest,
      configDigest: first.image.configDigest,
      config: { Cmd: ['sh'], WorkingDir: '/' },
      ext4: { sizeBytes: fs.statSync(first.ext4Path).size },
    });

    const ino = fs.statSync(first.ext4Path).ino;
    const t0 = performance.now();
    const second = await prepareRootfs({ layoutDir: busybox, imagesDir: dir });
    console.log(`[timing] busybox prepareRootfs (cached): ${Math.round(performance.now() - t0)} ms`);
    expect(second.cached).toBe(true);
    expect(second.build).toBeUndefined();
    expect(second.ext4Path).toBe(first.ext4Path);
    expect(fs.statSync(second.ext4Path).ino).toBe(ino);
    expect(second.image.config).toEqual(first.image.config);

    // Only the published files remain: no scratch, no lock.
    expect(fs.readdirSync(path.join(dir, 'rootfs')).sort()).toEqual([`${hex}.ext4`, `${hex}.json`]);

    // A different image gets its own base.
    const other = await prepareRootfs({ layoutDir: layers, imagesDir: dir });
    expect(other.cached).toBe(false);
    expect(other.ext4Path).not.toBe(first.ext4Path);
  });

  it('rewrites a missing info file without rebuilding the base', async () => {
    const dir = imagesDir('info');
    const first = await prepareRootfs({ layoutDir: layers, imagesDir: dir });
    const infoPath = first.ext4Path.replace(/\.ext4$/, '.json');
    fs.rmSync(infoPath);
    const again = await prepareRootfs({ layoutDir: layers, imagesDir: dir });
    expect(again.cached).toBe(true);
    expect(JSON.parse(fs.readFileSync(infoPath, 'utf8')).manifestDigest).toBe(first.image.manifestDigest);
  });

  it('concurrent callers in one process get one valid base', async () => {
    const dir = imagesDir('concurrent');
    const results = await Promise.all([1, 2, 3].map(() => prepareRootfs({ layoutDir: layers, imagesDir: dir })));
    expect(new Set(results.map((r) => r.ext4Path)).size).toBe(1);
    expect(results.filter((r) => !r.cached)).toHaveLength(1);
    expect(fs.readdirSync(path.join(dir, 'rootfs'))).toHaveLength(2);
  });

  it('concurrent callers in two processes get one valid base', async () => {
    const dir = imagesDir('two-procs');
    const entry = path.join(ROOT, 'src', 'images', 'rootfs.ts');
    const code = `import { prepareRootfs } from ${JSON.stringify(entry)};
      const r = await prepareRootfs({ layoutDir: ${JSON.stringify(busybox)}, imagesDir: ${JSON.stringify(dir)} });
      console.log(JSON.stringify({ path: r.ext4Path, cached: r.cached }));`;
    const script = path.join(scratch.dir, 'two-procs.ts');
    fs.writeFileSync(script, code);
    const vn = path.join(ROOT, 'node_modules', '.bin', 'vite-node');
    const run = () =>
      new Promise<{ path: string; cached: boolean }>((resolve, reject) => {
        const p = spawn(vn, [script], { cwd: ROOT, stdio: ['ignore', 'pipe', 'pipe'] });
        let out = '';
        let err = '';
        p.stdout.on('data', (d) => (out += d));
        p.stderr.on('data', (d) => (err += d));
        p.on('close', (c) => (c === 0 ? resolve(JSON.parse(out.trim().split('\n').pop()!)) : reject(new Error(`exit ${c}: ${err}`))));
      });
    const [a, b] = await Promise.all([run(), run()]);
    expect(a.path).toBe(b.path);
    expect([a.cached, b.cached].sort()).toEqual([false, true]);
    expect(stat(a.path, '/opt/owned-by-1000').uid).toBe(1000);
    expect(fs.readdirSync(path.join(dir, 'rootfs'))).toHaveLength(2);
  }, 60_000);

  it('takes over a stale lock left by a dead process and sweeps its scratch dir', async () => {
    const dir = imagesDir('stale');
    const rootfsDir = path.join(dir, 'rootfs');
    fs.mkdirSync(rootfsDir, { recursive: true });
    const { readOciLayout } = await import('../../src/images/oci-layout.js');
    const hex = (await readOciLayout(layers)).manifestDigest.slice(7);
    // A pid that is not running: a short-lived child that has exited.
    const dead = Number(execFileSync(process.execPath, ['-e', 'console.log(process.pid)'], { encoding: 'utf8' }).trim());
    fs.writeFileSync(path.join(rootfsDir, `${hex}.lock`), JSON.stringify({ pid: dead, host: hostname(), startedAt: new Date().toISOString() }));
    fs.mkdirSync(path.join(rootfsDir, `.build-${hex.slice(0, 12)}-${dead}-deadbeef`));
    const r = await prepareRootfs({ layoutDir: layers, imagesDir: dir, lockTimeoutMs: 10_000 });
    expect(r.cached).toBe(false);
    expect(fs.readdirSync(rootfsDir).sort()).toEqual([`${hex}.ext4`, `${hex}.json`]);
  });

  it('waits for a live lock holder and then uses its base', async () => {
    const dir = imagesDir('live-lock');
    const rootfsDir = path.join(dir, 'rootfs');
    fs.mkdirSync(rootfsDir, { recursive: true });
    const { readOciLayout } = await import('../../src/images/oci-layout.js');
    const hex = (await readOciLayout(layers)).manifestDigest.slice(7);
    const lock = path.join(rootfsDir, `${hex}.lock`);
    fs.writeFileSync(lock, JSON.stringify({ pid: process.pid, host: hostname(), startedAt: new Date().toISOString() }));
    const err = await prepareRootfs({ layoutDir: layers, imagesDir: dir, lockTimeoutMs: 300 }).catch((e: unknown) => e);
    expect((err as { code?: string }).code).toBe('Storage');
    expect((err as Error).message).toMatch(/timed out waiting for another process building/);
    fs.rmSync(lock);
    expect((await prepareRootfs({ layoutDir: layers, imagesDir: dir })).cached).toBe(false);
  });

  it('reports layout problems as ImageError', async () => {
    const err = await prepareRootfs({ layoutDir: path.join(scratch.dir, 'nope'), imagesDir: imagesDir('err') }).catch((e: unknown) => e);
    expect((err as { code?: string }).code).toBe('Image');
  });
});

describe('createOverlay', () => {
  let base: string;
  beforeAll(async () => {
    base = (await prepareRootfs({ layoutDir: busybox, imagesDir: imagesDir('overlay') })).ext4Path;
  });

  const info = (file: string) =>
    JSON.parse(execFileSync('qemu-img', ['info', '--output=json', file], { encoding: 'utf8' })) as Record<string, unknown>;

  it('creates a qcow2 backed by the raw base; writes go to the overlay only', async () => {
    const overlay = path.join(scratch.dir, 'box1', 'disk.qcow2');
    const before = fileSha256(base);
    await createOverlay(base, overlay, 1);
    const i = info(overlay);
    expect(i).toMatchObject({ format: 'qcow2', 'backing-filename': base, 'backing-filename-format': 'raw', 'virtual-size': 1024 ** 3 });

    execFileSync('qemu-io', ['-f', 'qcow2', '-c', 'write -P 0xab 0 1M', '-c', 'write -P 0xcd 64M 64k', overlay], { stdio: 'pipe' });
    const read = execFileSync('qemu-io', ['-f', 'qcow2', '-c', 'read -P 0xab 0 1M', overlay], { encoding: 'utf8' });
    expect(read).toMatch(/read 1048576\/1048576 bytes/);
    expect(fileSha256(base)).toBe(before);
    // The base is still a valid filesystem.
    expect(stat(base, '/bin/busybox').mode).toBe(0o755);
  });

  it('defaults to the base size and refuses sizes below it', async () => {
    const overlay = path.join(scratch.dir, 'box2', 'disk.qcow2');
    await createOverlay(base, overlay);
    expect(info(overlay)['virtual-size']).toBe(fs.statSync(base).size);
    const err = await createOverlay(base, path.join(scratch.dir, 'box3', 'disk.qcow2'), 0.01).catch((e: unknown) => e);
    expect((err as { code?: string }).code).toBe('Storage');
    expect((err as Error).message).toMatch(/smaller than the image's root filesystem/);
  });

  it('never overwrites an existing disk and reports a missing base', async () => {
    const overlay = path.join(scratch.dir, 'box2', 'disk.qcow2');
    const err = await createOverlay(base, overlay, 2).catch((e: unknown) => e);
    expect((err as { code?: string }).code).toBe('Storage');
    expect((err as Error).message).toMatch(/refusing to overwrite/);
    expect(info(overlay)['virtual-size']).toBe(fs.statSync(base).size);
    expect(fs.readdirSync(path.dirname(overlay))).toEqual(['disk.qcow2']);

    const missing = await createOverlay(path.join(scratch.dir, 'no-base.ext4'), path.join(scratch.dir, 'box4', 'd.qcow2')).catch((e: unknown) => e);
    expect((missing as { code?: string }).code).toBe('Storage');
    expect((missing as Error).message).toMatch(/^storage error: base image not found/);
  });
});
