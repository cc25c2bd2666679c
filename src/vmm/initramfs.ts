// The guest initramfs: boxlite-guest as /init plus the kernel modules it loads and the
// toolbox, as an uncompressed newc cpio (compression made no measurable boot difference under TCG).
// Written by our own small newc writer so that every entry is root:root with fixed mtimes,
// whoever the host user is, and the output is byte-for-byte reproducible.
import { createHash } from 'node:crypto';
import { mkdir, readdir, readFile, rename, rm, stat, writeFile } from 'node:fs/promises';
import { join } from 'node:path';

/** Bump when the layout or the writer changes: it is part of the content hash. */
export const INITRAMFS_FORMAT_VERSION = 2;

/** Debian's static busybox (package busybox-static), the agent's toolbox for copies. */
export const DEFAULT_BUSYBOX = '/bin/busybox';

/** Directories the agent mounts on or writes to, created empty. */
export const INITRAMFS_DIRS = ['dev', 'lib', 'lib/boxlite', 'lib/boxlite/modules', 'lib/boxlite/tools', 'mnt', 'mnt/root', 'proc', 'run', 'sys', 'tmp'];

export interface CpioEntry {
  /** Path without a leading slash. */
  path: string;
  type: 'dir' | 'file' | 'chardev';
  /** Permission bits (e.g. 0o755). */
  perm: number;
  data?: Buffer;
  rdevMajor?: number;
  rdevMinor?: number;
}

const S_IFDIR = 0o040000;
const S_IFREG = 0o100000;
const S_IFCHR = 0o020000;

function hex8(n: number): string {
  return n.toString(16).padStart(8, '0');
}

function pad4(n: number): number {
  return (4 - (n % 4)) % 4;
}

/** Serializes entries as a newc ("070701") archive: root:root, mtime 0, inode = index. */
export function writeNewc(entries: readonly CpioEntry[]): Buffer {
  const chunks: Buffer[] = [];
  const push = (ino: number, mode: number, nlink: number, data: Buffer, name: string, rmaj = 0, rmin = 0) => {
    const nameBuf = Buffer.from(`${name}\0`, 'utf8');
    const header =
      '070701' +
      hex8(ino) + hex8(mode) + hex8(0) /* uid */ + hex8(0) /* gid */ + hex8(nlink) + hex8(0) /* mtime */ +
      hex8(data.length) + hex8(0) + hex8(0) /* dev */ + hex8(rmaj) + hex8(rmin) +
      hex8(nameBuf.length) + hex8(0) /* check */;
    chunks.push(Buffer.from(header, 'ascii'), nameBuf, Buffer.alloc(pad4(110 + nameBuf.length)));
    if (data.length > 0) chunks.push(data, Buffer.alloc(pad4(data.length)));
  };
  entries.forEach((e, i) => {
    if (e.path.startsWith('/') || e.path.split('/').includes('..') || e.path === '') {
      throw new Error(`internal error: bad initramfs path "${e.path}"`);
    }
    const typeBits = e.type === 'dir' ? S_IFDIR : e.type === 'file' ? S_IFREG : S_IFCHR;
    push(i + 1, typeBits | (e.perm & 0o7777), e.type === 'dir' ? 2 : 1, e.type === 'file' ? (e.data ?? Buffer.alloc(0)) : Buffer.alloc(0), e.path, e.rdevMajor ?? 0, e.rdevMinor ?? 0);
  });
  push(0, 0, 1, Buffer.alloc(0), 'TRAILER!!!');
  const out = Buffer.concat(chunks);
  // Pad the archive to 512 bytes, as cpio(1) does.
  return Buffer.concat([out, Buffer.alloc((512 - (out.length % 512)) % 512)]);
}

/**
 * Parses a newc archive written by `writeNewc` back into entries (the inverse, for deriving
 * an initramfs from the shipped one). Only the types writeNewc produces are accepted.
 */
export function readNewc(buf: Buffer): CpioEntry[] {
  const entries: CpioEntry[] = [];
  let off = 0;
  for (;;) {
    if (off + 110 > buf.length || buf.toString('ascii', off, off + 6) !== '070701') {
      throw new Error(`not a newc archive (bad header at byte ${off})`);
    }
    const field = (i: number) => parseInt(buf.toString('ascii', off + 6 + i * 8, off + 14 + i * 8), 16);
    const mode = field(1);
    const size = field(6);
    const rdevMajor = field(9);
    const rdevMinor = field(10);
    const nameSize = field(11);
    const name = buf.toString('utf8', off + 110, off + 110 + nameSize - 1);
    off += 110 + nameSize;
    off += pad4(off);
    if (off + size > buf.length) throw new Error(`newc entry "${name}" is truncated`);
    const data = buf.subarray(off, off + size);
    off += size + pad4(size);
    if (name === 'TRAILER!!!') return entries;
    const kind = mode & 0o170000;
    const type = kind === S_IFDIR ? 'dir' : kind === S_IFREG ? 'file' : kind === S_IFCHR ? 'chardev' : undefined;
    if (!type) throw new Error(`newc entry "${name}" has an unsupported type ${kind.toString(8)}`);
    entries.push({
      path: name,
      type,
      perm: mode & 0o7777,
      ...(type === 'file' ? { data: Buffer.from(data) } : {}),
      ...(type === 'chardev' ? { rdevMajor, rdevMinor } : {}),
    });
  }
}

/** Writes `data` to `outPath` through a temp file and a rename, so no reader sees it half-written. */
async function writeAtomically(outPath: string, data: Buffer): Promise<void> {
  const tmp = `${outPath}.tmp-${process.pid}-${Date.now().toString(36)}`;
  try {
    await writeFile(tmp, data, { mode: 0o644 });
    await rename(tmp, outPath);
  } catch (err) {
    await rm(tmp, { force: true });
    throw err;
  }
}

export interface DeriveInitramfsOptions {
  /** The shipped initramfs to start from. */
  base: string;
  /** Replaces /init. */
  agentBinary?: string;
  /** Replaces /lib/boxlite/tools/busybox. */
  busyboxBinary?: string;
  /** Where initramfs-<hash>.cpio is written (a cache outside every home). */
  outDir: string;
}

/**
 * The shipped initramfs with /init and/or the toolbox swapped for other binaries (a development
 * agent, a test double), keeping its modules. Named by a hash of the result and reused.
 */
export async function deriveInitramfs({ base, agentBinary, busyboxBinary, outDir }: DeriveInitramfsOptions): Promise<string> {
  const entries = readNewc(await readFile(base));
  const replace = (path: string, data: Buffer) => {
    const i = entries.findIndex((e) => e.path === path);
    const entry: CpioEntry = { path, type: 'file', perm: 0o755, data };
    if (i >= 0) entries[i] = entry;
    else entries.push(entry);
  };
  if (agentBinary) replace('init', await readFile(agentBinary));
  if (busyboxBinary) replace('lib/boxlite/tools/busybox', await readFile(busyboxBinary));
  const data = writeNewc(entries);
  const digest = createHash('sha256').update(data).digest('hex').slice(0, 16);
  const outPath = join(outDir, `initramfs-${digest}.cpio`);
  try {
    if ((await stat(outPath)).size === data.length) return outPath;
  } catch {
    // not derived yet
  }
  await mkdir(outDir, { recursive: true });
  await writeAtomically(outPath, data);
  return outPath;
}

export interface BuildInitramfsOptions {
  /** Static guest agent; becomes /init. */
  agentBinary: string;
  /** Directory with modules/NN-name.ko (scripts/fetch-kernel.sh output). */
  kernelDir: string;
  /** Where initramfs-<hash>.cpio is written. */
  outDir: string;
  /**
   * Static busybox copied to /lib/boxlite/tools/busybox (EXEC flag TOOL runs it; copyIn/copyOut
   * use its tar). Default $BOXLITE_BUSYBOX or /bin/busybox; when missing the toolbox stays empty.
   */
  busyboxBinary?: string;
}

async function readOptional(path: string): Promise<Buffer | undefined> {
  try {
    return await readFile(path);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return undefined;
    throw err;
  }
}

async function listModules(kernelDir: string): Promise<string[]> {
  try {
    return (await readdir(join(kernelDir, 'modules'))).filter((f) => f.endsWith('.ko')).sort();
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return [];
    throw err;
  }
}

/**
 * Builds (or reuses) the initramfs for this agent and these modules and returns its path.
 * The name carries a hash of everything that goes in, so a changed agent or kernel gives a new
 * file and an unchanged one is reused. Written to a temp file and renamed: concurrent builders
 * and crashes never leave a truncated archive under the final name.
 */
export async function buildInitramfs({ agentBinary, kernelDir, outDir, busyboxBinary }: BuildInitramfsOptions): Promise<string> {
  const agent = await readFile(agentBinary);
  const busybox = await readOptional(busyboxBinary ?? process.env.BOXLITE_BUSYBOX ?? DEFAULT_BUSYBOX);
  const moduleNames = await listModules(kernelDir);
  const modules = await Promise.all(moduleNames.map((n) => readFile(join(kernelDir, 'modules', n))));

  const hash = createHash('sha256');
  hash.update(`boxlite-initramfs ${INITRAMFS_FORMAT_VERSION}\0`);
  const feed = (name: string, data: Buffer) => {
    hash.update(`${name}\0${data.length}\0`);
    hash.update(data);
  };
  feed('init', agent);
  if (busybox) feed('tools/busybox', busybox);
  moduleNames.forEach((n, i) => feed(`modules/${n}`, modules[i]!));
  const digest = hash.digest('hex').slice(0, 16);

  const outPath = join(outDir, `initramfs-${digest}.cpio`);
  try {
    if ((await stat(outPath)).isFile()) return outPath;
  } catch {
    // not built yet
  }

  const entries: CpioEntry[] = [];
  for (const d of INITRAMFS_DIRS) entries.push({ path: d, type: 'dir', perm: d === 'tmp' ? 0o1777 : 0o755 });
  // The kernel opens /dev/console for init's stdio before /init runs (and before the agent
  // can mount devtmpfs); without the node the agent starts with no fds 0-2.
  entries.push({ path: 'dev/console', type: 'chardev', perm: 0o600, rdevMajor: 5, rdevMinor: 1 });
  entries.push({ path: 'init', type: 'file', perm: 0o755, data: agent });
  if (busybox) entries.push({ path: 'lib/boxlite/tools/busybox', type: 'file', perm: 0o755, data: busybox });
  moduleNames.forEach((n, i) => entries.push({ path: `lib/boxlite/modules/${n}`, type: 'file', perm: 0o644, data: modules[i]! }));

  await mkdir(outDir, { recursive: true });
  await writeAtomically(outPath, writeNewc(entries));
  return outPath;
}
