import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { Readable } from 'node:stream';
import tar from 'tar-stream';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { ConfigError, ExecutionError, ResourceExhaustedError } from '../../src/errors/index.js';
import { copyOut, CopyLimitError, extractTarSafely, modeOf, placeCopy } from '../../src/runtime/copy.js';

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

/** A tar header (512 bytes) for `name`, declaring `size` bytes of content. */
async function header(name: string, size: number): Promise<Buffer> {
  const p = tar.pack();
  p.entry({ name, size, mode: 0o644 }); // its content is never written: only the header comes out
  for await (const c of p) return Buffer.from(c as Buffer).subarray(0, 512);
  throw new Error('no header');
}

/** `n` empty files (packed while read: tarOf's one-by-one callbacks stall on big archives). */
async function empties(n: number): Promise<Buffer> {
  const p = tar.pack();
  for (let i = 0; i < n; i++) p.entry({ name: `e${i}` }, '');
  p.finalize();
  const parts: Buffer[] = [];
  for await (const c of p) parts.push(c as Buffer);
  return Buffer.concat(parts);
}

/** A producer that never ends by itself (a guest's `truncate -s 500G` file): counts what it made. */
function endless(head: Buffer) {
  const st = { produced: 0, stopped: false };
  const zeros = Buffer.alloc(64 * 1024);
  async function* gen() {
    yield head;
    st.produced += head.length;
    while (!st.stopped) {
      st.produced += zeros.length;
      yield zeros;
    }
  }
  return { st, gen };
}

describe('copyOut limits (ExtractOptions maxBytes / maxEntries)', () => {
  it('stops a never-ending archive past maxBytes, counting headers, with a CopyLimitError', async () => {
    const { st, gen } = endless(await header('huge', 500 * 1024 ** 3));
    const e = await extractTarSafely(Readable.from(gen()), dest, { overwrite: true, maxBytes: 1024 * 1024 }).then(
      () => null,
      (x: unknown) => x,
    );
    expect(e).toBeInstanceOf(CopyLimitError);
    expect(e).toBeInstanceOf(ResourceExhaustedError);
    expect((e as CopyLimitError).limit).toBe('bytes');
    expect((e as Error).message).toMatch(/^resource exhausted: copyOut: the archive exceeds the limit of 1048576 bytes/);
    expect(st.produced).toBeLessThan(4 * 1024 * 1024);
    expect(fs.statSync(path.join(dest, 'huge')).size).toBeLessThanOrEqual(1024 * 1024);
    // Headers count: 3000 empty files are 1.5 MB of headers and no content at all.
    const e2 = await extractTarSafely(Readable.from([await empties(3000)]), path.join(root, 'outside'), { overwrite: true, maxBytes: 1024 * 1024 }).catch((x: unknown) => x);
    expect((e2 as CopyLimitError).limit).toBe('bytes');
  });

  it('stops past maxEntries, having written no more than that', async () => {
    const many = await empties(50);
    const e = await extractTarSafely(Readable.from([many]), dest, { overwrite: true, maxEntries: 20 }).catch((x: unknown) => x);
    expect(e).toBeInstanceOf(CopyLimitError);
    expect((e as CopyLimitError).limit).toBe('entries');
    expect((e as Error).message).toMatch(/more than 20 entries/);
    expect(fs.readdirSync(dest).length).toBe(20);
    // At the limit exactly: fine.
    fs.rmSync(dest, { recursive: true });
    fs.mkdirSync(dest);
    await extractTarSafely(Readable.from([many]), dest, { overwrite: true, maxEntries: 50 });
    expect(fs.readdirSync(dest).length).toBe(50);
  });

  it('SDK copyOut kills the box tar once the limit is passed', async () => {
    const { st, gen } = endless(await header('out/big', 500 * 1024 ** 3));
    let killed = 0;
    const it = gen();
    const out = {
      nextBuffer: async () => (st.stopped ? null : ((await it.next()).value as Buffer)),
      drain: () => undefined,
    };
    const done = { nextBuffer: async () => null };
    const exec = (stdout: { nextBuffer(): Promise<Buffer | null> }, code = () => 0) => ({
      stdin: async () => ({ close: async () => undefined }),
      stdout: async () => stdout,
      stderr: async () => done,
      wait: async () => ({ exitCode: code() }),
      kill: async () => {
        killed++;
        st.stopped = true;
      },
    });
    const box = {
      defaultUser: () => 'root',
      execTool: async (_tool: string, args: string[]) => {
        if (args[0] === 'sh') {
          let sent = false;
          return exec({ nextBuffer: async () => (sent ? null : ((sent = true), Buffer.from('dir\n'))) });
        }
        return exec(out, () => (st.stopped ? 137 : 0));
      },
    };
    const e = await copyOut(box as never, '/out', path.join(dest, 'got'), { maxBytes: 256 * 1024, maxEntries: 10 }).catch((x: unknown) => x);
    expect(e).toBeInstanceOf(CopyLimitError);
    expect(killed).toBe(1);
    expect(st.produced).toBeLessThan(2 * 1024 * 1024);
  });
});

describe('ownerAccess (staging trees)', () => {
  const tree = () =>
    tarOf([
      { name: 'ro', type: 'directory', mode: 0o500 },
      { name: 'ro/f', data: 'F' },
      { name: 'none', type: 'directory', mode: 0o001 }, // tar-stream writes a mode of 0 as 0o755
      { name: 'none/g', data: 'G' },
    ]);
  it('without it directories get the archive modes (after their contents are written)', async () => {
    await extractTarSafely(Readable.from([await tree()]), dest, { overwrite: true });
    expect(fs.statSync(path.join(dest, 'ro')).mode & 0o7777).toBe(0o500);
    expect(fs.statSync(path.join(dest, 'none')).mode & 0o7777).toBe(0o001);
    fs.chmodSync(path.join(dest, 'none'), 0o700);
    expect(fs.readFileSync(path.join(dest, 'none/g'), 'utf8')).toBe('G');
  });
  it('with it they keep u+rwx, their other bits as archived', async () => {
    await extractTarSafely(Readable.from([await tree()]), dest, { overwrite: true, ownerAccess: true });
    expect(fs.statSync(path.join(dest, 'ro')).mode & 0o7777).toBe(0o700);
    expect(fs.statSync(path.join(dest, 'none')).mode & 0o7777).toBe(0o701);
    expect(fs.readFileSync(path.join(dest, 'ro/f'), 'utf8')).toBe('F');
  });
  it('setuid/setgid bits never survive, the sticky bit does', () => {
    expect(modeOf({ mode: 0o6755 }, 'file')).toBe(0o755);
    expect(modeOf({ mode: 0o1777 }, 'directory')).toBe(0o1777);
  });
});
