// ext4 images built without root: metadata checked with debugfs, the
// filesystem with e2fsck.

import * as fs from 'node:fs';
import * as path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { buildExt4, estimateSize } from '../../src/images/ext4.js';
import { applyLayers, imageLayerSources } from '../../src/images/layers.js';
import { readOciLayout } from '../../src/images/oci-layout.js';
import {
  cat,
  fsck,
  ls,
  makeBusyboxImage,
  makeLayersImage,
  MTIME,
  patchBytes,
  scratchDir,
  stat,
  tarLayer,
  tarSource,
  type TarEntrySpec,
} from '../fixtures/images.js';

const scratch = scratchDir('ext4');
afterAll(() => scratch.cleanup());

async function buildFromLayout(layout: string, name: string) {
  const img = await readOciLayout(layout);
  const staged = await applyLayers(path.join(scratch.dir, `${name}-root`), imageLayerSources(img));
  const out = path.join(scratch.dir, `${name}.ext4`);
  const t0 = performance.now();
  const res = await buildExt4(staged, out);
  return { out, res, staged, ms: Math.round(performance.now() - t0) };
}

describe('buildExt4: busybox test image', () => {
  let image: string;
  beforeAll(async () => {
    const layout = path.join(scratch.dir, 'busybox');
    await makeBusyboxImage(layout);
    const { out, res, ms } = await buildFromLayout(layout, 'busybox');
    image = out;
    console.log(
      `[timing] busybox ext4: ${ms} ms (mke2fs ${res.mke2fsMs} ms, debugfs ${res.debugfsMs} ms, ${res.debugfsCommands} commands, ${(res.sizeBytes / 2 ** 20).toFixed(0)} MiB)`,
    );
  });

  it('is a clean ext4 filesystem labelled boxlite-root', () => {
    fsck(image);
    expect(fs.statSync(image).size % 4096).toBe(0);
  });

  it('keeps owners, modes and special bits', () => {
    expect(stat(image, '/usr/local/bin/suid-probe')).toMatchObject({ type: 'regular', mode: 0o4755, uid: 0, gid: 0 });
    expect(stat(image, '/opt/owned-by-1000')).toMatchObject({ mode: 0o644, uid: 1000, gid: 1000 });
    expect(stat(image, '/home/boxuser')).toMatchObject({ type: 'directory', mode: 0o755, uid: 1000, gid: 1000 });
    expect(stat(image, '/root')).toMatchObject({ type: 'directory', mode: 0o700, uid: 0 });
    expect(stat(image, '/tmp')).toMatchObject({ type: 'directory', mode: 0o1777 });
    expect(stat(image, '/bin/busybox')).toMatchObject({ mode: 0o755, uid: 0 });
    expect(stat(image, '/etc/passwd')).toMatchObject({ mode: 0o644, uid: 0, mtime: MTIME });
    expect(stat(image, '/')).toMatchObject({ type: 'directory', mode: 0o755, uid: 0, gid: 0, mtime: MTIME });
  });

  it('makes real device nodes', () => {
    expect(stat(image, '/dev-fixture/null')).toMatchObject({ type: 'character special', mode: 0o666, device: [1, 3], uid: 0, mtime: MTIME });
    expect(ls(image, '/dev-fixture')).toEqual(['null']);
  });

  it('keeps hard links as one inode with two links', () => {
    const a = stat(image, '/opt/hardlink-a');
    const b = stat(image, '/opt/hardlink-b');
    expect(a.inode).toBe(b.inode);
    expect(a.links).toBe(2);
  });

  it('keeps symlinks verbatim, applet links included', () => {
    expect(stat(image, '/bin/sh')).toMatchObject({ type: 'symlink', fastLink: '/bin/busybox', uid: 0 });
    expect(stat(image, '/usr/bin/env')).toMatchObject({ type: 'symlink', fastLink: '/bin/busybox' });
  });

  it('writes xattrs and the helper scripts', () => {
    expect(stat(image, '/opt/xattr-probe').xattrs).toEqual({ 'user.boxlite': '"probe"' });
    expect(cat(image, '/usr/local/bin/exit-with')).toContain('exit "${1:-0}"');
    expect(stat(image, '/usr/local/bin/ignore-term').mode).toBe(0o755);
  });
});

describe('buildExt4: layer semantics survive into the image', () => {
  it('matches the layers test image expectations', async () => {
    const layout = path.join(scratch.dir, 'layers');
    await makeLayersImage(layout);
    const { out } = await buildFromLayout(layout, 'layers');
    fsck(out);
    expect(ls(out, '/').filter((n) => n !== 'lost+found')).toEqual(['data', 'etc', 'hl', 'link-to-keep', 'replace-me', 'swap']);
    expect(ls(out, '/etc')).toEqual(['added', 'keep']);
    expect(cat(out, '/etc/keep')).toBe('v3\n');
    expect(ls(out, '/data')).toEqual(['new']);
    expect(stat(out, '/data').mode).toBe(0o750);
    expect(cat(out, '/hl/link')).toBe('old\n');
    expect(stat(out, '/hl/pair-a')).toMatchObject({ links: 2, uid: 7, gid: 8, mode: 0o600 });
    expect(stat(out, '/link-to-keep').fastLink).toBe('etc/keep');
  });
});

describe('buildExt4: edge cases', () => {
  it('handles awkward names, big ids, binary xattrs, fifos, block devices, hard-linked device nodes and symlinks', async () => {
    const cap = Buffer.from([0x01, 0x00, 0x00, 0x02, 0x80, 0x20, 0x00, 0x00, 0xff, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]);
    const placeholder = 'Q'.repeat(cap.length);
    const entries: TarEntrySpec[] = [
      { name: 'with space', content: '1' },
      { name: 'quote"d', content: '2', uid: 12 },
      { name: '#hash', content: '3' },
      { name: '-dash', content: '4' },
      { name: 'ünï', content: '5' },
      { name: '<2>', content: '6', mode: 0o600, uid: 99 },
      { name: 'big', content: '7', uid: 3_000_000, gid: 4_000_000, pax: { uid: '3000000', gid: '4000000' } },
      { name: 'ping', mode: 0o755, content: 'x', pax: { 'SCHILY.xattr.security.capability': placeholder, 'SCHILY.xattr.com.apple.quarantine': 'skip' } },
      { name: 'fifo', type: 'fifo', mode: 0o620, uid: 3 },
      { name: 'sda', type: 'block-device', mode: 0o660, gid: 6, devmajor: 8, devminor: 16 },
      { name: 'tty', type: 'character-device', mode: 0o620, devmajor: 4, devminor: 1 },
      { name: 'tty-again', type: 'link', linkname: 'tty' },
      { name: 'long-link', type: 'symlink', linkname: '/x'.repeat(60) },
      { name: 'sym', type: 'symlink', linkname: '/target', uid: 5 },
      { name: 'sym-again', type: 'link', linkname: 'sym' },
      { name: 'fifo-again', type: 'link', linkname: 'fifo' },
    ];
    const tar = patchBytes(await tarLayer(entries), placeholder, cap);
    const staged = await applyLayers(path.join(scratch.dir, 'edge-root'), [tarSource('L1', tar)]);
    const out = path.join(scratch.dir, 'edge.ext4');
    const res = await buildExt4(staged, out, { freeBytes: 0 });
    fsck(out);
    expect(res.skippedXattrs).toEqual(['/ping: com.apple.quarantine']);
    expect(cat(out, '/with space')).toBe('1');
    expect(stat(out, '/quote"d').uid).toBe(12);
    expect(cat(out, '/#hash')).toBe('3');
    expect(cat(out, '/-dash')).toBe('4');
    expect(cat(out, '/ünï')).toBe('5');
    expect(stat(out, '/<2>')).toMatchObject({ uid: 99, mode: 0o600 });
    expect(stat(out, '/big')).toMatchObject({ uid: 3_000_000, gid: 4_000_000 });
    expect(stat(out, '/ping').xattrs['security.capability']).toBe('01 00 00 02 80 20 00 00 ff 00 00 00 00 00 00 00 00 00 00 00 ');
    expect(stat(out, '/fifo')).toMatchObject({ type: 'FIFO', mode: 0o620, uid: 3, links: 2 });
    expect(stat(out, '/fifo-again').inode).toBe(stat(out, '/fifo').inode);
    const sym = stat(out, '/sym');
    expect(sym).toMatchObject({ type: 'symlink', uid: 5, links: 2, fastLink: '/target' });
    expect(stat(out, '/sym-again').inode).toBe(sym.inode);
    expect(stat(out, '/sda')).toMatchObject({ type: 'block special', mode: 0o660, gid: 6, device: [8, 16] });
    const tty = stat(out, '/tty');
    expect(tty).toMatchObject({ type: 'character special', device: [4, 1], links: 2 });
    expect(stat(out, '/tty-again').inode).toBe(tty.inode);
    expect(stat(out, '/long-link').size).toBe(120);
  });

  it('fails with a StorageError when the staging dir does not match the manifest', async () => {
    const staged = await applyLayers(path.join(scratch.dir, 'mismatch-root'), [tarSource('L1', await tarLayer([{ name: 'a', content: 'a' }]))]);
    fs.rmSync(path.join(staged.root, 'a'));
    const out = path.join(scratch.dir, 'mismatch.ext4');
    const err = await buildExt4(staged, out).catch((e: unknown) => e);
    expect((err as { code?: string }).code).toBe('Storage');
    expect((err as Error).message).toMatch(/^storage error: failed to set metadata in ext4 image .*debugfs: .*File not found/);
    expect(fs.existsSync(out)).toBe(false);
  });

  it('grows the image and retries when the content does not fit', async () => {
    const entries: TarEntrySpec[] = [{ name: 'big', content: Buffer.alloc(3 * 2 ** 20, 1) }];
    for (let i = 0; i < 100; i++) entries.push({ name: `f${i}`, content: String(i) });
    const staged = await applyLayers(path.join(scratch.dir, 'retry-root'), [tarSource('L1', await tarLayer(entries))]);
    const out = path.join(scratch.dir, 'retry.ext4');
    const res = await buildExt4(staged, out, { sizeBytes: 2 * 2 ** 20, inodes: 32, freeBytes: 0 });
    expect(res.mke2fsAttempts).toBeGreaterThan(1);
    fsck(out);
    expect(stat(out, '/big').size).toBe(3 * 2 ** 20);
  });

  it('reports a failing mke2fs as a StorageError and leaves no image behind', async () => {
    const staged = await applyLayers(path.join(scratch.dir, 'gone-root'), [tarSource('L1', await tarLayer([{ name: 'a', content: 'a' }]))]);
    fs.rmSync(staged.root, { recursive: true });
    const out = path.join(scratch.dir, 'gone.ext4');
    const err = await buildExt4(staged, out).catch((e: unknown) => e);
    expect((err as { code?: string }).code).toBe('Storage');
    expect((err as Error).message).toMatch(/^storage error: failed to build ext4 image .*mke2fs failed \(exit code \d+\)/);
    expect(fs.existsSync(out)).toBe(false);
  });

  it('leaves room for the content: estimate grows with files and inodes', () => {
    const entries = new Map([
      ['/', { type: 'dir' as const, mode: 0o755, uid: 0, gid: 0, mtime: 0, size: 0, inode: 1, nlink: 1 }],
    ]);
    const small = estimateSize(entries, 0);
    for (let i = 0; i < 10_000; i++) {
      entries.set(`/f${i}`, { type: 'file' as const, mode: 0o644, uid: 0, gid: 0, mtime: 0, size: 10_000, inode: i + 2, nlink: 1 });
    }
    const big = estimateSize(entries, 0);
    expect(big.inodes).toBeGreaterThan(10_000);
    expect(big.bytes).toBeGreaterThan(10_000 * 12_288);
    expect(big.bytes).toBeGreaterThan(small.bytes);
  });
});

describe('buildExt4: ~5000 files', () => {
  it('builds in reasonable time and keeps every file and hard link', async () => {
    const entries: TarEntrySpec[] = [];
    for (let d = 0; d < 100; d++) {
      entries.push({ name: `d${d}/`, type: 'directory', uid: d % 3 ? 0 : 1000 });
      for (let f = 0; f < 49; f++) {
        entries.push({ name: `d${d}/f${f}`, content: Buffer.alloc((f * 397) % 20_000, 97), mode: f % 7 ? 0o644 : 0o4755, uid: f % 5 ? 0 : 1000 });
      }
      entries.push({ name: `d${d}/hl`, type: 'link', linkname: `d${d}/f1` });
    }
    const tar = await tarLayer(entries);
    const t0 = performance.now();
    const staged = await applyLayers(path.join(scratch.dir, 'many-root'), [tarSource('L1', tar)]);
    const t1 = performance.now();
    const out = path.join(scratch.dir, 'many.ext4');
    const res = await buildExt4(staged, out);
    const t2 = performance.now();
    console.log(
      `[timing] ${entries.length} entries / ${(tar.length / 2 ** 20).toFixed(1)} MiB: layers ${Math.round(t1 - t0)} ms, ` +
        `ext4 ${Math.round(t2 - t1)} ms (mke2fs ${res.mke2fsMs} ms, debugfs ${res.debugfsMs} ms, ${res.debugfsCommands} commands)`,
    );
    fsck(out);
    expect(ls(out, '/d42')).toHaveLength(50);
    expect(stat(out, '/d42/hl')).toMatchObject({ links: 2, inode: stat(out, '/d42/f1').inode });
    expect(stat(out, '/d99/f14')).toMatchObject({ mode: 0o4755, uid: 0 });
    expect(stat(out, '/d99/f15')).toMatchObject({ mode: 0o644, uid: 1000 });
    expect(stat(out, '/d0')).toMatchObject({ uid: 1000 });
  }, 120_000);
});
