// `.boxlite` archives without a VM: export of a real qcow2 chain, import on a fresh home, and
// hostile archives (truncated, corrupted, newer format, extra or linked members, host paths,
// a disk with a backing file). A failed import leaves no box and no staging files.
import { execFileSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import tar from 'tar-stream';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import {
  ARCHIVE_VERSION,
  archivedOptions,
  exportArchive,
  exportTarget,
  importArchive,
  parseArchiveConfig,
  parseManifest,
} from '../../src/runtime/archive.js';
import { BoxSnapshots } from '../../src/runtime/snapshots.js';
import { backingOf, diskOf, hasPattern, makeBox, makeHome, writePattern, type Fixture } from './snapshot-fixture.js';

let src: Fixture;
let dst: Fixture;
beforeEach(() => {
  src = makeHome();
  dst = makeHome();
});
afterEach(() => {
  src.close();
  dst.close();
});

const sha = (b: Buffer) => createHash('sha256').update(b).digest('hex');

interface Member {
  name: string;
  data?: Buffer;
  type?: 'file' | 'symlink' | 'directory';
  linkname?: string;
}

async function writeTar(file: string, members: Member[]): Promise<void> {
  const pack = tar.pack();
  const out = fs.createWriteStream(file);
  const done = new Promise<void>((resolve, reject) => out.on('finish', resolve).on('error', reject));
  pack.pipe(out);
  for (const m of members) {
    await new Promise<void>((resolve, reject) =>
      pack.entry({ name: m.name, type: m.type ?? 'file', linkname: m.linkname }, m.type && m.type !== 'file' ? undefined : m.data ?? Buffer.alloc(0), (e) =>
        e ? reject(e) : resolve(),
      ),
    );
  }
  pack.finalize();
  await done;
}

/** Reads a valid archive back into its three members. */
async function readTar(file: string): Promise<Map<string, Buffer>> {
  const out = new Map<string, Buffer>();
  const ex = tar.extract();
  fs.createReadStream(file).pipe(ex);
  for await (const e of ex) {
    const parts: Buffer[] = [];
    for await (const c of e as unknown as AsyncIterable<Buffer>) parts.push(c);
    out.set(e.header.name, Buffer.concat(parts));
  }
  return out;
}

/** An archive made of these members, with a manifest whose sizes and sums match them (unless overridden). */
async function craft(file: string, opts: { config?: unknown; disk?: Buffer; manifest?: (m: Record<string, unknown>) => void; extra?: Member[] }) {
  const config = Buffer.from(JSON.stringify(opts.config ?? { options: { cpus: 1, memoryMib: 256 }, image: { reference: 'busybox:latest', manifestDigest: 'sha256:00', config: {} } }));
  const disk = opts.disk ?? fs.readFileSync(await flatDisk());
  const manifest: Record<string, unknown> = {
    format: 'boxlite-archive',
    version: ARCHIVE_VERSION,
    createdAt: new Date().toISOString(),
    box: { name: null, image: 'busybox:latest' },
    members: [
      { name: 'config.json', size: config.length, sha256: sha(config) },
      { name: 'disk.qcow2', size: disk.length, sha256: sha(disk) },
    ],
  };
  opts.manifest?.(manifest);
  await writeTar(file, [
    { name: 'manifest.json', data: Buffer.from(JSON.stringify(manifest)) },
    { name: 'config.json', data: config },
    { name: 'disk.qcow2', data: disk },
    ...(opts.extra ?? []),
  ]);
}

async function flatDisk(): Promise<string> {
  const file = path.join(src.root, 'flat.qcow2');
  if (!fs.existsSync(file)) execFileSync('qemu-img', ['create', '-q', '-f', 'qcow2', file, '4M']);
  return file;
}

function leftovers(f: Fixture): { boxes: number; staging: string[]; boxDirs: string[] } {
  return {
    boxes: f.ctx.store.list().length,
    staging: fs.readdirSync(f.ctx.home.tmp),
    boxDirs: fs.readdirSync(f.ctx.home.boxes),
  };
}

describe('export → import', () => {
  it('gives back the same disk content on a fresh home, flattened, with the config and no host paths', async () => {
    const box = await makeBox(src, { env: [{ key: 'GREETING', value: 'hi' }], cpus: 1, memoryMib: 300, workingDir: '/srv', ports: [{ guestPort: 80, hostPort: 0 }] }, 'web');
    const disk = diskOf(src, box.id);
    writePattern(disk, 0xa1);
    await new BoxSnapshots(() => src.ctx, () => box.id).create('s'); // a chain: disk → base → image
    writePattern(disk, 0xb2, 65536);
    const out = path.join(src.root, 'out');
    fs.mkdirSync(out);
    const t0 = performance.now();
    const file = await exportArchive(src.ctx, box, out);
    const ms = performance.now() - t0;
    console.log(`[timing] export of a 4 MiB disk: ${ms.toFixed(0)} ms, archive ${fs.statSync(file).size} bytes`);
    expect(file).toBe(path.join(out, 'web.boxlite'));
    expect(fs.readdirSync(out)).toEqual(['web.boxlite']); // no temp file left
    expect(fs.readdirSync(src.ctx.home.tmp)).toEqual([]);

    const members = await readTar(file);
    expect([...members.keys()]).toEqual(['manifest.json', 'config.json', 'disk.qcow2']);
    const manifest = JSON.parse(members.get('manifest.json')!.toString());
    expect(manifest).toMatchObject({ format: 'boxlite-archive', version: 1, box: { name: 'web', image: 'busybox:latest' } });
    for (const m of manifest.members) expect(m.sha256).toBe(sha(members.get(m.name)!));
    const configText = members.get('config.json')!.toString();
    expect(configText).not.toContain(src.root); // no host path of the exporting home
    expect(JSON.parse(configText).options).toMatchObject({ memoryMib: 300, workingDir: '/srv', env: [{ key: 'GREETING', value: 'hi' }] });

    const t1 = performance.now();
    const imported = await importArchive(dst.ctx, file, 'web2');
    console.log(`[timing] import: ${(performance.now() - t1).toFixed(0)} ms`);
    expect(imported.name).toBe('web2');
    expect(imported.options).toMatchObject({ memoryMib: 300, workingDir: '/srv', env: [['GREETING', 'hi']] });
    expect(imported.options.ports).toEqual([{ guestPort: 80, hostPort: 0, protocol: 'tcp', hostIp: '127.0.0.1' }]);
    expect(imported.image.config).toEqual({ Cmd: ['sh'], Env: ['PATH=/bin'] }); // the run fields only
    const newDisk = diskOf(dst, imported.id);
    expect(backingOf(newDisk)).toBeNull();
    expect(hasPattern(newDisk, 0xa1)).toBe(true);
    expect(hasPattern(newDisk, 0xb2, 65536)).toBe(true);
    expect(hasPattern(newDisk, 0x11, 1024 * 1024)).toBe(true); // the image's own bytes, flattened in
    expect(leftovers(dst).staging).toEqual([]);
    // The imported box is an ordinary one: it snapshots like any other.
    await expect(new BoxSnapshots(() => dst.ctx, () => imported.id).create('after-import')).resolves.toMatchObject({ name: 'after-import' });
    // A second import with the same name is refused and leaves nothing.
    await expect(importArchive(dst.ctx, file, 'web2')).rejects.toMatchObject({ code: 'AlreadyExists' });
    expect(leftovers(dst)).toMatchObject({ boxes: 1, staging: [] });
  });

  it('names the archive after the box (or "box") in a directory, and keeps a file path as given', () => {
    expect(exportTarget(src.root, 'n')).toBe(path.join(src.root, 'n.boxlite'));
    expect(exportTarget(src.root, undefined)).toBe(path.join(src.root, 'box.boxlite'));
    expect(exportTarget(src.root, '../../etc/x')).toBe(path.join(src.root, '__.._etc_x.boxlite'));
    expect(exportTarget(path.join(src.root, 'x.tar'), 'n')).toBe(path.join(src.root, 'x.tar'));
    expect(() => exportTarget(path.join(src.root, 'nodir', 'x'), 'n')).toThrowError(expect.objectContaining({ code: 'NotFound' }));
  });

  it('refuses to export a box that is still booting (its shim holds the lock, no VM yet)', async () => {
    const box = await makeBox(src);
    fs.writeFileSync(path.join(src.ctx.store.dir(box.id), 'shim.lock'), JSON.stringify({ pid: process.pid }));
    await expect(exportArchive(src.ctx, box, src.root)).rejects.toMatchObject({ code: 'InvalidState' });
    expect(fs.readdirSync(src.root).filter((n) => n.includes('boxlite'))).toEqual([]);
  });
});

describe('import of hostile archives', () => {
  const cases: Array<[string, (file: string) => Promise<void>, string, RegExp]> = [
    [
      'truncated',
      async (file) => {
        await craft(file, {});
        const full = fs.readFileSync(file);
        fs.writeFileSync(file, full.subarray(0, Math.floor(full.length / 2)));
      },
      'InvalidArgument',
      /truncated|lacks/,
    ],
    [
      'a flipped byte in the disk',
      async (file) => {
        await craft(file, {});
        const buf = fs.readFileSync(file);
        buf[512 * 6 + 100] ^= 0xff; // inside disk.qcow2's data (after three headers and two small members)
        fs.writeFileSync(file, buf);
      },
      'InvalidArgument',
      /sha256|corrupt|valid/,
    ],
    ['a newer format version', (file) => craft(file, { manifest: (m) => (m.version = ARCHIVE_VERSION + 1) }), 'Unsupported', /newer than this BoxLite reads/],
    ['not a tar at all', async (file) => fs.writeFileSync(file, Buffer.alloc(4096, 0x41)), 'InvalidArgument', /not a valid \.boxlite archive/],
    ['an empty file', async (file) => fs.writeFileSync(file, ''), 'InvalidArgument', /empty/],
    ['a size that lies', (file) => craft(file, { manifest: (m) => ((m.members as Array<{ size: number }>)[1]!.size += 1) }), 'InvalidArgument', /bytes, the manifest says/],
    ['a checksum that lies', (file) => craft(file, { manifest: (m) => ((m.members as Array<{ sha256: string }>)[0]!.sha256 = '0'.repeat(64)) }), 'InvalidArgument', /sha256/],
    ['an extra member', (file) => craft(file, { extra: [{ name: 'evil.sh', data: Buffer.from('x') }] }), 'InvalidArgument', /not in the manifest/],
    ['a symlink member', (file) => craft(file, { extra: [{ name: 'link', type: 'symlink', linkname: '/etc/passwd' }] }), 'InvalidArgument', /only regular files/],
    [
      'host volumes in the config',
      (file) => craft(file, { config: { options: { volumes: [{ hostPath: '/', guestPath: '/host' }] }, image: { reference: 'x', manifestDigest: 'y', config: {} } } }),
      'Unsupported',
      /volumes/,
    ],
    [
      'rootfsPath in the config',
      (file) => craft(file, { config: { options: { rootfsPath: '/etc' }, image: { reference: 'x', manifestDigest: 'y', config: {} } } }),
      'Unsupported',
      /rootfsPath/,
    ],
    [
      'an unknown option',
      (file) => craft(file, { config: { options: { kernel: '/boot/vmlinuz' }, image: { reference: 'x', manifestDigest: 'y', config: {} } } }),
      'InvalidArgument',
      /kernel|Unrecognized/,
    ],
    [
      'a port published on every interface',
      (file) => craft(file, { config: { options: { ports: [{ guestPort: 22, hostPort: 2222, hostIp: '0.0.0.0' }] }, image: { reference: 'x', manifestDigest: 'y', config: {} } } }),
      'Unsupported',
      /loopback/,
    ],
    [
      'a disk with a backing file',
      async (file) => {
        const d = path.join(src.root, 'backed.qcow2');
        execFileSync('qemu-img', ['create', '-q', '-f', 'qcow2', '-F', 'raw', '-b', src.base, d]);
        await craft(file, { disk: fs.readFileSync(d) });
      },
      'Unsupported',
      /backing file/,
    ],
    ['a disk that is not qcow2', (file) => craft(file, { disk: Buffer.alloc(65536, 0) }), 'InvalidArgument', /not a qcow2|not qcow2/],
    [
      'manifest not first',
      async (file) => {
        await writeTar(file, [{ name: 'config.json', data: Buffer.from('{}') }, { name: 'manifest.json', data: Buffer.from('{}') }]);
      },
      'InvalidArgument',
      /first member must be manifest\.json/,
    ],
    ['a manifest that is not JSON', async (file) => writeTar(file, [{ name: 'manifest.json', data: Buffer.from('{nope') }]), 'InvalidArgument', /not JSON/],
  ];

  for (const [what, make, code, message] of cases) {
    it(`refuses ${what} with a coded error and leaves nothing`, async () => {
      const file = path.join(src.root, 'bad.boxlite');
      await make(file);
      const err = await importArchive(dst.ctx, file, 'bad').then(
        () => undefined,
        (e: unknown) => e as { code: string; message: string; stack?: string },
      );
      expect(err, 'import must fail').toBeDefined();
      expect(err!.code).toBe(code);
      expect(err!.message).toMatch(message);
      expect(leftovers(dst)).toEqual({ boxes: 0, staging: [], boxDirs: [] });
    });
  }

  it('holds the archive to the size limit', async () => {
    const file = path.join(src.root, 'ok.boxlite');
    await craft(file, {});
    process.env.BOXLITE_IMPORT_MAX_BYTES = '1024';
    try {
      await expect(importArchive(dst.ctx, file)).rejects.toMatchObject({ code: 'ResourceExhausted', message: /import limit/ });
    } finally {
      delete process.env.BOXLITE_IMPORT_MAX_BYTES;
    }
    await expect(importArchive(dst.ctx, file)).resolves.toMatchObject({ name: undefined });
    await expect(importArchive(dst.ctx, path.join(src.root, 'missing.boxlite'))).rejects.toMatchObject({ code: 'NotFound' });
  });

  it('sweeps the staging directory a killed import left', async () => {
    const stale = path.join(dst.ctx.home.tmp, `import-${2 ** 22 + 9}-abc`);
    fs.mkdirSync(stale);
    fs.writeFileSync(path.join(stale, 'disk.qcow2'), 'half');
    const file = path.join(src.root, 'ok.boxlite');
    await craft(file, {});
    await importArchive(dst.ctx, file);
    expect(fs.existsSync(stale)).toBe(false);
  });
});

describe('manifest and config parsing', () => {
  it('reads only what it knows', () => {
    expect(() => parseManifest(Buffer.from(JSON.stringify({ format: 'other', version: 1 })))).toThrowError(expect.objectContaining({ code: 'InvalidArgument' }));
    expect(() => parseManifest(Buffer.from(JSON.stringify({ format: 'boxlite-archive', version: 99 })))).toThrowError(
      expect.objectContaining({ code: 'Unsupported', message: expect.stringMatching(/^unsupported: archive format version 99/) }),
    );
    const config = { options: { cpus: 64, memoryMib: 256, security: { seccompEnabled: true } }, image: { reference: 'r', manifestDigest: 'd', config: { Cmd: ['sh'] } } };
    const parsed = parseArchiveConfig(Buffer.from(JSON.stringify(config)), 2);
    expect(parsed.options.cpus).toBe(2); // clamped to this host
    expect(parsed.options.seccomp).toBe(true);
    expect(parsed.options.volumes).toEqual([]);
    expect(() => parseArchiveConfig(Buffer.from(JSON.stringify({ ...config, options: { memoryMib: 1 } })), 2)).toThrowError(expect.objectContaining({ code: 'Config' }));
  });

  it('archivedOptions drops host-side options and secrets', async () => {
    const f = makeHome();
    try {
      const hostDir = f.root;
      const box = await makeBox(f, { volumes: [{ hostPath: hostDir, guestPath: '/data' }], autoRemove: true });
      const o = archivedOptions(box.options);
      expect(JSON.stringify(o)).not.toContain(hostDir);
      expect(o).not.toHaveProperty('volumes');
      expect(o).not.toHaveProperty('autoRemove');
    } finally {
      f.close();
    }
  });
});
