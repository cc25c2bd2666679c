// Layer application into a staging dir: OCI whiteout semantics, hard links,
// metadata kept in the manifest, and no way for a layer to write outside the
// staging root.

import * as fs from 'node:fs';
import * as path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { BoxliteError } from '../../src/errors/index.js';
import { applyLayers, binaryXattrsSupported, imageLayerSources, type StagedRootfs } from '../../src/images/layers.js';
import { readOciLayout } from '../../src/images/oci-layout.js';
import { makeLayersImage, MTIME, patchBytes, scratchDir, sha256, tarLayer, tarSource, type TarEntrySpec } from '../fixtures/images.js';

const scratch = scratchDir('layers');
afterAll(() => scratch.cleanup());

let n = 0;
/** Applies the given layers (entry lists) into a fresh staging dir inside a "jail" dir. */
async function apply(...layers: TarEntrySpec[][]): Promise<StagedRootfs & { jail: string }> {
  const jail = path.join(scratch.dir, `jail-${n++}`);
  fs.mkdirSync(jail);
  const sources = [];
  for (const [i, entries] of layers.entries()) sources.push(tarSource(`L${i + 1}`, await tarLayer(entries)));
  const staged = await applyLayers(path.join(jail, 'root'), sources);
  return { ...staged, jail };
}

async function applyError(layers: TarEntrySpec[][], match: RegExp): Promise<void> {
  const err = await apply(...layers).then(
    () => null,
    (e: unknown) => e,
  );
  expect(err).toBeInstanceOf(BoxliteError);
  expect((err as BoxliteError).code).toBe('Image');
  expect((err as Error).message).toMatch(match);
}

/** Everything under dir (relative paths), to prove nothing landed outside the root. */
function listAll(dir: string): string[] {
  const out: string[] = [];
  const walk = (d: string, rel: string) => {
    for (const e of fs.readdirSync(d, { withFileTypes: true })) {
      const r = rel ? `${rel}/${e.name}` : e.name;
      out.push(r);
      if (e.isDirectory()) walk(path.join(d, e.name), r);
    }
  };
  walk(dir, '');
  return out.sort();
}

const read = (root: string, p: string) => fs.readFileSync(path.join(root, p), 'utf8');

describe('applyLayers: OCI layer semantics (layers test image)', () => {
  let staged: StagedRootfs;
  beforeAll(async () => {
    const dir = path.join(scratch.dir, 'layers-image');
    await makeLayersImage(dir);
    const img = await readOciLayout(dir);
    staged = await applyLayers(path.join(scratch.dir, 'layers-root'), imageLayerSources(img));
  });

  it('whiteouts remove files and directories of lower layers', () => {
    expect(staged.entries.has('/etc/remove-me')).toBe(false);
    expect(fs.existsSync(path.join(staged.root, 'etc/remove-me'))).toBe(false);
    expect(staged.entries.has('/gone')).toBe(false);
    expect(staged.entries.has('/gone/x')).toBe(false);
    expect(fs.existsSync(path.join(staged.root, 'gone'))).toBe(false);
    expect(read(staged.root, 'etc/keep')).toBe('v3\n');
    expect(read(staged.root, 'etc/added')).toBe('added\n');
  });

  it('an opaque directory hides everything lower layers put there, keeps its own entries', () => {
    expect([...staged.entries.keys()].filter((p) => p.startsWith('/data'))).toEqual(['/data', '/data/new']);
    expect(fs.readdirSync(path.join(staged.root, 'data'))).toEqual(['new']);
    expect(staged.entries.get('/data')!.mode).toBe(0o750);
  });

  it('replaces a file by a directory and a directory by a file', () => {
    expect(staged.entries.get('/replace-me')!.type).toBe('dir');
    expect(read(staged.root, 'replace-me/inner')).toBe('inner\n');
    expect(staged.entries.get('/swap')!.type).toBe('file');
    expect(staged.entries.has('/swap/y')).toBe(false);
    expect(read(staged.root, 'swap')).toBe('now a file\n');
  });

  it('stores symlinks verbatim', () => {
    expect(staged.entries.get('/link-to-keep')).toMatchObject({ type: 'symlink', linkTarget: 'etc/keep', mode: 0o777 });
    expect(fs.readlinkSync(path.join(staged.root, 'link-to-keep'))).toBe('etc/keep');
  });

  it('keeps hard links; overwriting one name breaks the link instead of writing through it', () => {
    const a = staged.entries.get('/hl/pair-a')!;
    expect(staged.entries.get('/hl/pair-b')).toBe(a);
    expect(a).toMatchObject({ nlink: 2, uid: 7, gid: 8, mode: 0o600 });
    expect(fs.statSync(path.join(staged.root, 'hl/pair-a')).ino).toBe(fs.statSync(path.join(staged.root, 'hl/pair-b')).ino);
    expect(read(staged.root, 'hl/orig')).toBe('new\n');
    expect(read(staged.root, 'hl/link')).toBe('old\n');
    expect(staged.entries.get('/hl/orig')!.nlink).toBe(1);
    expect(staged.entries.get('/hl/link')!.nlink).toBe(1);
  });

  it('lists parents before children and sets host mtimes', () => {
    const keys = [...staged.entries.keys()];
    expect(keys[0]).toBe('/');
    for (const [i, k] of keys.entries()) {
      if (k !== '/') expect(keys.indexOf(path.posix.dirname(k))).toBeLessThan(i);
    }
    expect(Math.floor(fs.lstatSync(path.join(staged.root, 'etc/keep')).mtimeMs / 1000)).toBe(MTIME);
    expect(Math.floor(fs.lstatSync(path.join(staged.root, 'etc')).mtimeMs / 1000)).toBe(MTIME);
  });
});

describe('applyLayers: metadata stays in the manifest, host copies are owner-only', () => {
  it('records owner, mode bits, devices, fifos and xattrs; host files are 0600/0700, dirs 0700', async () => {
    const s = await apply([
      { name: 'bin/', type: 'directory' },
      { name: 'bin/su', mode: 0o4755, content: 'ELF' },
      { name: 'bin/sgid', mode: 0o2711, uid: 0, gid: 42, content: 'x' },
      { name: 'tmp/', type: 'directory', mode: 0o1777 },
      { name: 'home/', type: 'directory' },
      { name: 'home/u/', type: 'directory', mode: 0o750, uid: 1000, gid: 1000 },
      { name: 'home/u/f', mode: 0o640, uid: 1000, gid: 1000, content: 'f' },
      { name: 'big-ids', uid: 3_000_000, gid: 4_000_000, content: 'b', pax: { uid: '3000000', gid: '4000000' } },
      { name: 'dev/', type: 'directory' },
      { name: 'dev/null', type: 'character-device', mode: 0o666, devmajor: 1, devminor: 3 },
      { name: 'dev/sda', type: 'block-device', mode: 0o660, gid: 6, devmajor: 8, devminor: 0 },
      { name: 'dev/pipe', type: 'fifo', mode: 0o644 },
      { name: 'x', content: 'x', pax: { 'SCHILY.xattr.user.note': 'hello', 'LIBARCHIVE.xattr.user.b64': Buffer.from('from-libarchive').toString('base64') } },
    ]);
    const e = (p: string) => s.entries.get(p)!;
    expect(e('/bin/su')).toMatchObject({ type: 'file', mode: 0o4755, uid: 0, gid: 0, size: 3 });
    expect(e('/bin/sgid')).toMatchObject({ mode: 0o2711, gid: 42 });
    expect(e('/tmp')).toMatchObject({ type: 'dir', mode: 0o1777 });
    expect(e('/home/u')).toMatchObject({ mode: 0o750, uid: 1000, gid: 1000 });
    expect(e('/big-ids')).toMatchObject({ uid: 3_000_000, gid: 4_000_000 });
    expect(e('/dev/null')).toMatchObject({ type: 'char', mode: 0o666, devMajor: 1, devMinor: 3 });
    expect(e('/dev/sda')).toMatchObject({ type: 'block', gid: 6, devMajor: 8, devMinor: 0 });
    expect(e('/dev/pipe')).toMatchObject({ type: 'fifo' });
    expect(e('/x').xattrs?.get('user.note')?.toString()).toBe('hello');
    expect(e('/x').xattrs?.get('user.b64')?.toString()).toBe('from-libarchive');
    expect(e('/').type).toBe('dir');

    const mode = (p: string) => fs.lstatSync(path.join(s.root, p)).mode & 0o7777;
    expect(mode('bin/su')).toBe(0o700);
    expect(mode('bin/sgid')).toBe(0o700);
    expect(mode('home/u/f')).toBe(0o600);
    expect(mode('tmp')).toBe(0o700);
    expect(mode('home/u')).toBe(0o700);
    const dev = fs.lstatSync(path.join(s.root, 'dev/null'));
    expect(dev.isFile()).toBe(true); // placeholder, made real in the ext4 image
    expect(dev.size).toBe(0);
    expect(fs.lstatSync(path.join(s.root, 'dev/pipe')).isFile()).toBe(true);
    const uid = process.getuid?.();
    if (uid !== undefined) expect(fs.lstatSync(path.join(s.root, 'home/u/f')).uid).toBe(uid);
  });

  it('keeps binary xattr values (security.capability) byte for byte', async () => {
    expect(binaryXattrsSupported()).toBe(true);
    const cap = Buffer.from([0x01, 0x00, 0x00, 0x02, 0x80, 0x20, 0x00, 0x00, 0xff, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00]);
    const placeholder = 'P'.repeat(cap.length);
    const tar = patchBytes(
      await tarLayer([{ name: 'ping', mode: 0o755, content: 'ELF', pax: { 'SCHILY.xattr.security.capability': placeholder } }]),
      placeholder,
      cap,
    );
    const s = await applyLayers(path.join(scratch.dir, 'xattr-root'), [tarSource('L1', tar)]);
    expect(s.entries.get('/ping')!.xattrs!.get('security.capability')).toEqual(cap);
  });

  it('a directory entry over an existing directory keeps its children and takes the new metadata', async () => {
    const s = await apply(
      [{ name: 'd/', type: 'directory', mode: 0o755 }, { name: 'd/f', content: 'f' }],
      [{ name: 'd/', type: 'directory', mode: 0o700, uid: 5 }],
    );
    expect(s.entries.get('/d')).toMatchObject({ mode: 0o700, uid: 5 });
    expect(s.entries.has('/d/f')).toBe(true);
  });

  it('creates missing parents as root-owned 0755 directories', async () => {
    const s = await apply([{ name: 'a/b/c/file', content: 'x' }]);
    for (const p of ['/a', '/a/b', '/a/b/c']) expect(s.entries.get(p)).toMatchObject({ type: 'dir', mode: 0o755, uid: 0, gid: 0 });
  });

  it('a whiteout does not hide what its own layer wrote; aufs metadata entries are ignored', async () => {
    const s = await apply(
      [{ name: 'd/', type: 'directory' }, { name: 'd/old', content: 'old' }],
      [{ name: 'd/new', content: 'new' }, { name: 'd/.wh.new' }, { name: 'd/.wh..wh.plnk' }, { name: '.wh..wh.aufs' }],
    );
    expect(s.entries.has('/d/new')).toBe(true);
    expect(s.entries.has('/d/old')).toBe(true);
    expect(s.entries.has('/d/.wh..wh.plnk')).toBe(false);
  });

  it('an opaque marker that comes after its own layer entries keeps them', async () => {
    const s = await apply(
      [{ name: 'd/', type: 'directory' }, { name: 'd/old', content: 'old' }, { name: 'd/sub/', type: 'directory' }, { name: 'd/sub/deep', content: 'deep' }],
      [{ name: 'd/', type: 'directory' }, { name: 'd/sub/', type: 'directory' }, { name: 'd/sub/mine', content: 'mine' }, { name: 'd/.wh..wh..opq' }],
    );
    expect([...s.entries.keys()].filter((p) => p.startsWith('/d'))).toEqual(['/d', '/d/sub', '/d/sub/mine']);
  });

  it('checks the uncompressed content against the diff_id', async () => {
    const tar = await tarLayer([{ name: 'f', content: 'f' }]);
    await expect(applyLayers(path.join(scratch.dir, 'diffid-ok'), [tarSource('L1', tar, sha256(tar))])).resolves.toBeTruthy();
    const err = await applyLayers(path.join(scratch.dir, 'diffid-bad'), [tarSource('L1', tar, sha256('other'))]).catch((e: unknown) => e);
    expect((err as BoxliteError).code).toBe('Image');
    expect((err as Error).message).toMatch(/diff_id mismatch for layer L1/);
  });

  it('reports a truncated or corrupt tar as an ImageError', async () => {
    const tar = await tarLayer([{ name: 'f', content: 'x'.repeat(5000) }]);
    const bad = Buffer.from(tar);
    bad[148] ^= 0x01; // header checksum field
    const err = await applyLayers(path.join(scratch.dir, 'corrupt'), [tarSource('L1', bad)]).catch((e: unknown) => e);
    expect((err as BoxliteError).code).toBe('Image');
    expect((err as Error).message).toMatch(/failed to apply layer L1/);
  });

  it('refuses a staging directory that is not empty', async () => {
    const dir = path.join(scratch.dir, 'not-empty');
    fs.mkdirSync(dir);
    fs.writeFileSync(path.join(dir, 'x'), 'x');
    const err = await applyLayers(dir, []).catch((e: unknown) => e);
    expect((err as BoxliteError).code).toBe('Storage');
  });
});

describe('applyLayers: a layer cannot reach outside the staging root', () => {
  it('follows an absolute symlink from a lower layer inside the root (evil -> /)', async () => {
    const s = await apply(
      [{ name: 'evil', type: 'symlink', linkname: '/' }],
      [{ name: 'evil/etc/x', content: 'inside' }],
    );
    expect(read(s.root, 'etc/x')).toBe('inside');
    expect(s.entries.get('/etc/x')).toBeTruthy();
    expect(listAll(s.jail)).toEqual(['root', 'root/etc', 'root/etc/x', 'root/evil']);
    expect(fs.readlinkSync(path.join(s.root, 'evil'))).toBe('/');
  });

  it('clamps .. in symlink targets at the root (up -> ../../../.., abs -> /../../tmp)', async () => {
    const s = await apply(
      [
        { name: 'a/', type: 'directory' },
        { name: 'a/up', type: 'symlink', linkname: '../../../..' },
        { name: 'abs', type: 'symlink', linkname: '/../../tmp' },
      ],
      [
        { name: 'a/up/escaped', content: 'no' },
        { name: 'abs/t', content: 't' },
      ],
    );
    expect(read(s.root, 'escaped')).toBe('no');
    expect(read(s.root, 'tmp/t')).toBe('t');
    expect(listAll(s.jail).every((p) => p === 'root' || p.startsWith('root/'))).toBe(true);
  });

  it('follows chains of symlinks inside the root and stops on loops', async () => {
    const s = await apply(
      [
        { name: 'l1', type: 'symlink', linkname: 'l2' },
        { name: 'l2', type: 'symlink', linkname: '/real' },
        { name: 'real/', type: 'directory' },
      ],
      [{ name: 'l1/f', content: 'f' }],
    );
    expect(read(s.root, 'real/f')).toBe('f');
    await applyError(
      [[{ name: 'loop', type: 'symlink', linkname: 'loop' }], [{ name: 'loop/f', content: 'f' }]],
      /too many levels of symbolic links/,
    );
  });

  it('replaces a symlink at the final component instead of writing through it', async () => {
    const s = await apply(
      [{ name: 'target', content: 'original' }, { name: 'link', type: 'symlink', linkname: '/target' }],
      [{ name: 'link', content: 'replaced' }],
    );
    expect(read(s.root, 'target')).toBe('original');
    expect(fs.lstatSync(path.join(s.root, 'link')).isFile()).toBe(true);
    expect(read(s.root, 'link')).toBe('replaced');
  });

  it('rejects entry names that climb out of the root, and absolute names', async () => {
    await applyError([[{ name: '../x', content: 'x' }]], /layer L1 contains unsafe path "\.\.\/x"/);
    await applyError([[{ name: 'a/../../x', content: 'x' }]], /layer L1 contains unsafe path "a\/\.\.\/\.\.\/x"/);
    await applyError([[{ name: '/etc/x', content: 'x' }]], /layer L1 contains unsafe path "\/etc\/x" \(absolute/);
    await applyError([[{ name: 'd/.wh...', content: '' }]], /unsafe path/);
    // A ".." that stays inside is only lexical cleaning.
    const s = await apply([{ name: 'a/../b', content: 'b' }]);
    expect(read(s.root, 'b')).toBe('b');
  });

  it('rejects hard links that climb out of the root or are absolute', async () => {
    await applyError(
      [[{ name: 'etc/', type: 'directory' }, { name: 'etc/pw', type: 'link', linkname: '../../etc/passwd' }]],
      /layer L1 contains unsafe path "\.\.\/\.\.\/etc\/passwd" \(escapes the root in hard link target of "etc\/pw"\)/,
    );
    await applyError([[{ name: 'pw', type: 'link', linkname: '/etc/passwd' }]], /unsafe path "\/etc\/passwd" \(absolute/);
  });

  it('resolves hard link targets inside the root, through symlinked parents, never to a directory', async () => {
    const s = await apply(
      [
        { name: 'real/', type: 'directory' },
        { name: 'real/file', content: 'data' },
        { name: 'via', type: 'symlink', linkname: '/real' },
        { name: 'hl', type: 'link', linkname: 'via/file' },
      ],
    );
    expect(s.entries.get('/hl')).toBe(s.entries.get('/real/file'));
    expect(read(s.root, 'hl')).toBe('data');
    await applyError([[{ name: 'd/', type: 'directory' }, { name: 'hl', type: 'link', linkname: 'd' }]], /points at directory/);
    await applyError([[{ name: 'hl', type: 'link', linkname: 'missing' }]], /points at missing "missing"/);
  });

  it('refuses to place an entry under a regular file', async () => {
    await applyError([[{ name: 'f', content: 'f' }, { name: 'f/x', content: 'x' }]], /"\/f" is not a directory/);
  });

  it('whiteouts resolve through symlinks inside the root only', async () => {
    const s = await apply(
      [
        { name: 'etc/', type: 'directory' },
        { name: 'etc/victim', content: 'v' },
        { name: 'evil', type: 'symlink', linkname: '/' },
      ],
      [{ name: 'evil/etc/.wh.victim' }],
    );
    expect(s.entries.has('/etc/victim')).toBe(false);
    expect(listAll(s.jail)).toEqual(['root', 'root/etc', 'root/evil']);
  });
});
