import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { Readable } from 'node:stream';
import tar from 'tar-stream';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { ConfigError, ExecutionError } from '../../src/errors/index.js';
import { extractTarSafely, placeCopy } from '../../src/runtime/copy.js';

type E = { name: string; type?: 'file' | 'directory' | 'symlink' | 'link'; linkname?: string; data?: string; mode?: number };

async function tarOf(entries: E[]): Promise<Buffer> {
  const pack = tar.pack();
  for (const e of entries) {
    const type = e.type ?? 'file';
    await new Promise<void>((res, rej) =>
      pack.entry({ name: e.name, type, linkname: e.linkname, mode: e.mode ?? (type === 'directory' ? 0o755 : 0o644) }, type === 'file' ? (e.data ?? '') : undefined, (err) => (err ? rej(err) : res())),
    );
  }
  pack.finalize();
  const parts: Buffer[] = [];
  for await (const c of pack) parts.push(c as Buffer);
  return Buffer.concat(parts);
}

let root: string;
let dest: string;
let outside: string;

beforeEach(() => {
  root = fs.mkdtempSync(path.join(os.tmpdir(), 'boxlite-copy-'));
  dest = path.join(root, 'dest');
  outside = path.join(root, 'outside');
  fs.mkdirSync(dest);
  fs.mkdirSync(outside);
});
afterEach(() => fs.rmSync(root, { recursive: true, force: true }));

/** Every path under root except those under dest. */
function outsideFiles(): string[] {
  const out: string[] = [];
  const walk = (d: string) => {
    for (const n of fs.readdirSync(d)) {
      const p = path.join(d, n);
      if (p === dest) continue;
      out.push(path.relative(root, p));
      if (fs.lstatSync(p).isDirectory()) walk(p);
    }
  };
  walk(root);
  return out.sort();
}

const extract = async (buf: Buffer, overwrite = true) => extractTarSafely(Readable.from([buf]), dest, { overwrite, label: dest });

describe('copyOut host-side extractor', () => {
  it('extracts files, directories, modes and symlinks (as symlinks)', async () => {
    await extract(
      await tarOf([
        { name: 'd', type: 'directory', mode: 0o750 },
        { name: 'd/a.txt', data: 'hello', mode: 0o640 },
        { name: 'd/run.sh', data: '#!/bin/sh\n', mode: 0o755 },
        { name: 'd/escape', type: 'symlink', linkname: '/etc' },
      ]),
    );
    expect(fs.readFileSync(path.join(dest, 'd/a.txt'), 'utf8')).toBe('hello');
    expect(fs.statSync(path.join(dest, 'd/a.txt')).mode & 0o777).toBe(0o640);
    expect(fs.statSync(path.join(dest, 'd/run.sh')).mode & 0o777).toBe(0o755);
    expect(fs.statSync(path.join(dest, 'd')).mode & 0o777).toBe(0o750);
    expect(fs.readlinkSync(path.join(dest, 'd/escape'))).toBe('/etc');
  });

  it('never writes through a symlink: link -> outside, then link/pwned', async () => {
    const err = await extract(
      await tarOf([
        { name: 'link', type: 'symlink', linkname: outside },
        { name: 'link/pwned', data: 'owned' },
      ]),
    ).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(ExecutionError);
    expect((err as Error).message).toMatch(/copyOut: archive entry "link\/pwned" would leave/);
    expect(fs.readdirSync(outside)).toEqual([]);
    expect(outsideFiles()).toEqual(['outside']);
  });

  it('rejects a symlink entry replaced then written through (file entry over a symlink is a new file)', async () => {
    await extract(
      await tarOf([
        { name: 'f', type: 'symlink', linkname: path.join(outside, 'target') },
        { name: 'f', data: 'new' },
      ]),
    );
    expect(fs.lstatSync(path.join(dest, 'f')).isFile()).toBe(true);
    expect(fs.readdirSync(outside)).toEqual([]);
  });

  it("rejects '..' names", async () => {
    const err = await extract(await tarOf([{ name: '../x', data: 'x' }])).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(ExecutionError);
    expect((err as Error).message).toMatch(/would leave/);
    expect(outsideFiles()).toEqual(['outside']);
    const err2 = await extract(await tarOf([{ name: 'a/../../x', data: 'x' }])).catch((e: unknown) => e);
    expect(err2).toBeInstanceOf(ExecutionError);
    expect(outsideFiles()).toEqual(['outside']);
  });

  it('rejects absolute names', async () => {
    const abs = path.join(outside, 'abs');
    const err = await extract(await tarOf([{ name: abs, data: 'x' }])).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(ExecutionError);
    expect((err as Error).message).toMatch(/would leave/);
    expect(fs.existsSync(abs)).toBe(false);
    expect(outsideFiles()).toEqual(['outside']);
  });

  it('rejects hard links through a symlink or out of the destination', async () => {
    fs.writeFileSync(path.join(outside, 'secret'), 's');
    const err = await extract(
      await tarOf([
        { name: 'l', type: 'symlink', linkname: outside },
        { name: 'h', type: 'link', linkname: 'l/secret' },
      ]),
    ).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(ExecutionError);
    expect(fs.existsSync(path.join(dest, 'h'))).toBe(false);
    const err2 = await extract(await tarOf([{ name: 'h2', type: 'link', linkname: '../outside/secret' }])).catch((e: unknown) => e);
    expect(err2).toBeInstanceOf(ExecutionError);
  });

  it('overwrite: false refuses existing files', async () => {
    fs.writeFileSync(path.join(dest, 'f'), 'old');
    const err = await extract(await tarOf([{ name: 'f', data: 'new' }]), false).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(ExecutionError);
    expect((err as Error).message).toMatch(/already exists/);
    expect(fs.readFileSync(path.join(dest, 'f'), 'utf8')).toBe('old');
    await extract(await tarOf([{ name: 'f', data: 'new' }]), true);
    expect(fs.readFileSync(path.join(dest, 'f'), 'utf8')).toBe('new');
  });
});

describe('where a copy lands (placeCopy, the reference rules both ways)', () => {
  const dir = { name: 'tree', isDir: true };
  const file = { name: 'a.txt', isDir: false };
  const withParent = { includeParent: true };
  const contents = { includeParent: false };

  it('a directory with includeParent lands as DEST/<name>, whether DEST exists or not', () => {
    expect(placeCopy(dir, '/out', 'dir', withParent, 'copy')).toEqual({ dir: '/out', top: 'tree', create: false });
    expect(placeCopy(dir, '/out', 'none', withParent, 'copy')).toEqual({ dir: '/out', top: 'tree', create: true });
    expect(placeCopy(dir, '/out/', 'none', withParent, 'copy')).toEqual({ dir: '/out', top: 'tree', create: true });
  });

  it('a directory without includeParent puts its contents into DEST (created when missing)', () => {
    expect(placeCopy(dir, '/out', 'dir', contents, 'copy')).toEqual({ dir: '/out', top: '', create: false });
    expect(placeCopy(dir, '/out', 'none', contents, 'copy')).toEqual({ dir: '/out', top: '', create: true });
  });

  it('a file goes into an existing directory or a DEST ending in /, else becomes DEST', () => {
    expect(placeCopy(file, '/out', 'dir', withParent, 'copy')).toEqual({ dir: '/out', top: 'a.txt', create: false });
    expect(placeCopy(file, '/new/', 'none', withParent, 'copy')).toEqual({ dir: '/new', top: 'a.txt', create: true });
    expect(placeCopy(file, '/x/b.txt', 'none', withParent, 'copy')).toEqual({ dir: '/x', top: 'b.txt', create: true });
    expect(placeCopy(file, '/x/b.txt', 'other', withParent, 'copy')).toEqual({ dir: '/x', top: 'b.txt', create: true });
    // includeParent only concerns directories
    expect(placeCopy(file, '/out', 'dir', contents, 'copy')).toEqual({ dir: '/out', top: 'a.txt', create: false });
  });

  it('refuses a directory onto a file, a file into a "directory/" that is a file, and a file onto /', () => {
    expect(() => placeCopy(dir, '/f', 'other', withParent, 'copyIn')).toThrow(ConfigError);
    expect(() => placeCopy(file, '/f/', 'other', withParent, 'copyIn')).toThrow(/not a directory/);
    expect(() => placeCopy(file, '/', 'none', withParent, 'copyIn')).toThrow(ConfigError);
  });
});
