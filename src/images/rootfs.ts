// Image → shared read-only ext4 base (one per manifest digest) → per-box
// qcow2 overlay.
//
// Cache layout under <imagesDir>/rootfs/:
//   <hex>.ext4   the base (mode 0444); published with link(2), which never
//                replaces an existing file, so a base that overlays already
//                reference by path is never swapped under them
//   <hex>.json   image info, written after the base (temp + rename)
//   <hex>.lock   held while one process builds (O_EXCL; stale when its pid is gone)
//   .build-<hex12>-<pid>-<rand>/   scratch of a running build
// The lock only avoids duplicate work; correctness rests on link(2): if two
// builders race, the first base published wins and the other is discarded.

import { randomBytes } from 'node:crypto';
import * as fsp from 'node:fs/promises';
import { hostname } from 'node:os';
import * as path from 'node:path';
import { BoxliteError, StorageError } from '../errors/index.js';
import { storageError } from '../util/fs.js';
import { imageBoundary } from './errors.js';
import { buildExt4, type Ext4BuildResult } from './ext4.js';
import { applyLayers, imageLayerSources } from './layers.js';
import { readOciLayout, type OciImage, type Platform } from './oci-layout.js';
import { describeFailure, runTool } from './tools.js';

/** Version of `<hex>.json`. A published base is never replaced (overlays reference it by path). */
export const ROOTFS_FORMAT = 1;

export interface PrepareRootfsOptions {
  /** Local OCI image layout directory. */
  layoutDir: string;
  /** `$BOXLITE_HOME/images`; bases go to `<imagesDir>/rootfs/`. */
  imagesDir: string;
  reference?: string;
  platform?: Platform;
  /** How long to wait for another process building the same image (default 30 min). */
  lockTimeoutMs?: number;
}

export interface PreparedRootfs {
  ext4Path: string;
  image: OciImage;
  /** True when the base already existed (no build in this call). */
  cached: boolean;
  /** Set when this call built the base. */
  build?: Ext4BuildResult & { layersMs: number; totalMs: number };
}

/** What `<hex>.json` holds. */
export interface RootfsInfo {
  format: number;
  manifestDigest: string;
  configDigest: string;
  platform: Platform;
  config: OciImage['config'];
  layers: Array<{ digest: string; mediaType: string; size: number; diffId: string | null }>;
  ext4: { sizeBytes: number; builtAt: string };
}

const LOCK_POLL_MS = 150;

/** Returns the cached ext4 base for the image in `layoutDir`, building it first if needed. */
export function prepareRootfs(opts: PrepareRootfsOptions): Promise<PreparedRootfs> {
  const what = `cannot prepare the root filesystem of ${opts.reference ?? path.resolve(opts.layoutDir)} in ${opts.imagesDir}`;
  return imageBoundary(what, () => prepareRootfsUnguarded(opts));
}

async function prepareRootfsUnguarded(opts: PrepareRootfsOptions): Promise<PreparedRootfs> {
  const image = await readOciLayout(opts.layoutDir, {
    ...(opts.reference !== undefined ? { reference: opts.reference } : {}),
    ...(opts.platform ? { platform: opts.platform } : {}),
  });
  const dir = path.join(path.resolve(opts.imagesDir), 'rootfs');
  await mkdirp(dir);
  const hex = image.manifestDigest.replace(/^[a-z0-9]+:/, '');
  const ext4Path = path.join(dir, `${hex}.ext4`);
  const infoPath = path.join(dir, `${hex}.json`);
  const lockPath = path.join(dir, `${hex}.lock`);

  const hit = await cacheHit(ext4Path, infoPath, image);
  if (hit) return { ext4Path, image, cached: true };

  await sweepStaleBuilds(dir);
  const deadline = Date.now() + (opts.lockTimeoutMs ?? 30 * 60_000);
  for (;;) {
    const release = await tryLock(lockPath);
    if (release) {
      try {
        if (await cacheHit(ext4Path, infoPath, image)) return { ext4Path, image, cached: true };
        const build = await buildBase(dir, hex, image, ext4Path, infoPath);
        return build.published ? { ext4Path, image, cached: false, build: build.result } : { ext4Path, image, cached: true };
      } finally {
        await release();
      }
    }
    if (await cacheHit(ext4Path, infoPath, image)) return { ext4Path, image, cached: true };
    if (Date.now() > deadline) {
      throw new StorageError(`timed out waiting for another process building ${image.manifestDigest} (lock ${lockPath})`);
    }
    await sleep(LOCK_POLL_MS);
  }
}

/**
 * Creates the per-box copy-on-write disk: a qcow2 whose backing file is the
 * raw ext4 base. `sizeGb` (optional) sets the virtual size; the guest grows
 * the filesystem into it. Refuses to overwrite an existing overlay.
 */
export async function createOverlay(baseExt4: string, overlayPath: string, sizeGb?: number): Promise<void> {
  try {
    await createOverlayUnguarded(baseExt4, overlayPath, sizeGb);
  } catch (err) {
    throw storageError(err, `cannot create overlay ${overlayPath}`);
  }
}

async function createOverlayUnguarded(baseExt4: string, overlayPath: string, sizeGb?: number): Promise<void> {
  const base = path.resolve(baseExt4);
  const overlay = path.resolve(overlayPath);
  let baseSize: number;
  try {
    baseSize = (await fsp.stat(base)).size;
  } catch (err) {
    throw new StorageError(`base image not found: ${base}`, { cause: err });
  }
  const args = ['create', '-q', '-f', 'qcow2', '-F', 'raw', '-b', base];
  const tmp = tmpName(overlay);
  args.push(tmp);
  if (sizeGb !== undefined) {
    if (!Number.isFinite(sizeGb) || sizeGb <= 0) throw new StorageError(`invalid disk size ${sizeGb} GB`);
    const bytes = Math.ceil((sizeGb * 1024 ** 3) / 512) * 512;
    if (bytes < baseSize) {
      throw new StorageError(
        `disk size ${sizeGb} GB is smaller than the image's root filesystem (${(baseSize / 1024 ** 3).toFixed(2)} GB)`,
      );
    }
    args.push(String(bytes));
  }
  await mkdirp(path.dirname(overlay));
  const r = await runTool('qemu-img', args, { timeoutMs: 60_000 });
  if (r.code !== 0 || r.signal) {
    await fsp.rm(tmp, { force: true }).catch(() => undefined);
    throw new StorageError(`failed to create overlay ${overlay}: ${describeFailure('qemu-img', r)}`);
  }
  await publishNoReplace(tmp, overlay);
}

// ---------- build ----------

async function buildBase(
  dir: string,
  hex: string,
  image: OciImage,
  ext4Path: string,
  infoPath: string,
): Promise<{ published: boolean; result: Ext4BuildResult & { layersMs: number; totalMs: number } }> {
  const t0 = performance.now();
  const work = path.join(dir, `.build-${hex.slice(0, 12)}-${process.pid}-${randomBytes(4).toString('hex')}`);
  await fsp.mkdir(work, { mode: 0o700 });
  try {
    const staged = await applyLayers(path.join(work, 'rootfs'), imageLayerSources(image));
    const layersMs = performance.now() - t0;
    const tmpExt4 = path.join(work, 'rootfs.ext4');
    const result = await buildExt4(staged, tmpExt4, { uuid: uuidFromHex(hex), workDir: path.join(work, 'debugfs') });
    await fsp.rm(staged.root, { recursive: true, force: true });
    await fsyncFile(tmpExt4);
    await fsp.chmod(tmpExt4, 0o444);
    const published = await publishNoReplace(tmpExt4, ext4Path, true);
    // Winner or not, the info describes the same image; rename keeps it atomic.
    const info = makeInfo(image, (await fsp.stat(ext4Path)).size);
    await writeFileAtomic(infoPath, JSON.stringify(info, null, 2) + '\n');
    await fsyncDir(dir);
    return {
      published,
      result: { ...result, path: ext4Path, layersMs: Math.round(layersMs), totalMs: Math.round(performance.now() - t0) },
    };
  } finally {
    await fsp.rm(work, { recursive: true, force: true }).catch(() => undefined);
  }
}

async function cacheHit(ext4Path: string, infoPath: string, image: OciImage): Promise<boolean> {
  try {
    await fsp.access(ext4Path);
  } catch {
    return false;
  }
  // A base is only ever published complete, so its existence is enough; the
  // info file is rewritten if it is missing, stale or damaged.
  let ok = false;
  try {
    const info = JSON.parse(await fsp.readFile(infoPath, 'utf8')) as Partial<RootfsInfo>;
    ok = info.format === ROOTFS_FORMAT && info.manifestDigest === image.manifestDigest;
  } catch {
    ok = false;
  }
  if (!ok) {
    const size = (await fsp.stat(ext4Path)).size;
    await writeFileAtomic(infoPath, JSON.stringify(makeInfo(image, size), null, 2) + '\n');
  }
  return true;
}

function makeInfo(image: OciImage, sizeBytes: number): RootfsInfo {
  return {
    format: ROOTFS_FORMAT,
    manifestDigest: image.manifestDigest,
    configDigest: image.configDigest,
    platform: image.platform,
    config: image.config,
    layers: image.layers.map((l) => ({ digest: l.digest, mediaType: l.mediaType, size: l.size, diffId: l.diffId })),
    ext4: { sizeBytes, builtAt: new Date().toISOString() },
  };
}

// ---------- lock ----------

interface LockInfo {
  pid: number;
  host: string;
  startedAt: string;
}

async function tryLock(lockPath: string): Promise<(() => Promise<void>) | null> {
  const mine: LockInfo = { pid: process.pid, host: hostname(), startedAt: new Date().toISOString() };
  for (let i = 0; i < 2; i++) {
    try {
      const fh = await fsp.open(lockPath, 'wx', 0o644);
      try {
        await fh.writeFile(JSON.stringify(mine));
      } finally {
        await fh.close();
      }
      return async () => {
        await fsp.rm(lockPath, { force: true }).catch(() => undefined);
      };
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'EEXIST') {
        throw new StorageError(`failed to create lock ${lockPath}: ${(err as Error).message}`, { cause: err });
      }
    }
    if (!(await lockIsStale(lockPath))) return null;
    // Move the stale lock aside (atomic) rather than deleting it, then retry once.
    await fsp.rename(lockPath, `${lockPath}.stale-${randomBytes(4).toString('hex')}`).catch(() => undefined);
    const dir = path.dirname(lockPath);
    for (const f of await fsp.readdir(dir)) {
      if (f.startsWith(`${path.basename(lockPath)}.stale-`)) await fsp.rm(path.join(dir, f), { force: true });
    }
  }
  return null;
}

async function lockIsStale(lockPath: string): Promise<boolean> {
  let info: Partial<LockInfo>;
  let mtimeMs: number;
  try {
    const [text, st] = await Promise.all([fsp.readFile(lockPath, 'utf8'), fsp.stat(lockPath)]);
    mtimeMs = st.mtimeMs;
    try {
      info = JSON.parse(text) as Partial<LockInfo>;
    } catch {
      // Being written right now, or garbage from a crash: stale only once old.
      return Date.now() - mtimeMs > 60_000;
    }
  } catch {
    return false; // vanished: the caller retries the lock anyway
  }
  if (info.host === hostname() && typeof info.pid === 'number') return !pidAlive(info.pid);
  // Another host (shared directory): we cannot see its pid; give up after a day.
  return Date.now() - mtimeMs > 24 * 3600_000;
}

function pidAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (err) {
    return (err as NodeJS.ErrnoException).code === 'EPERM';
  }
}

/** Removes scratch dirs of builds whose process is gone (crash leftovers). */
async function sweepStaleBuilds(dir: string): Promise<void> {
  let names: string[];
  try {
    names = await fsp.readdir(dir);
  } catch {
    return;
  }
  for (const name of names) {
    const m = /^\.build-[0-9a-f]+-(\d+)-[0-9a-f]+$/.exec(name);
    if (!m) continue;
    const pid = Number(m[1]);
    if (pid === process.pid || pidAlive(pid)) continue;
    await fsp.rm(path.join(dir, name), { recursive: true, force: true }).catch(() => undefined);
  }
}

// ---------- fs helpers ----------

async function mkdirp(dir: string): Promise<void> {
  try {
    await fsp.mkdir(dir, { recursive: true, mode: 0o755 });
  } catch (err) {
    throw new StorageError(`failed to create ${dir}: ${(err as Error).message}`, { cause: err });
  }
}

/**
 * Moves `tmp` to `dest` unless `dest` exists. Returns false (and drops tmp)
 * when someone else got there first and `allowExisting`; otherwise EEXIST is
 * a StorageError.
 */
async function publishNoReplace(tmp: string, dest: string, allowExisting = false): Promise<boolean> {
  try {
    try {
      await fsp.link(tmp, dest);
    } catch (err) {
      const code = (err as NodeJS.ErrnoException).code;
      if (code === 'EEXIST') {
        if (allowExisting) return false;
        throw new StorageError(`refusing to overwrite existing ${dest}`);
      }
      if (code !== 'EPERM' && code !== 'ENOTSUP' && code !== 'EOPNOTSUPP' && code !== 'EXDEV') throw err;
      // No hard links on this filesystem: best-effort check-then-rename.
      if (await exists(dest)) {
        if (allowExisting) return false;
        throw new StorageError(`refusing to overwrite existing ${dest}`);
      }
      await fsp.rename(tmp, dest);
      return true;
    }
    return true;
  } catch (err) {
    if (err instanceof BoxliteError) throw err;
    throw new StorageError(`failed to publish ${dest}: ${(err as Error).message}`, { cause: err });
  } finally {
    await fsp.rm(tmp, { force: true }).catch(() => undefined);
  }
}

async function writeFileAtomic(file: string, data: string): Promise<void> {
  const tmp = tmpName(file);
  try {
    const fh = await fsp.open(tmp, 'wx', 0o644);
    try {
      await fh.writeFile(data);
      await fh.sync();
    } finally {
      await fh.close();
    }
    await fsp.rename(tmp, file);
  } catch (err) {
    await fsp.rm(tmp, { force: true }).catch(() => undefined);
    throw new StorageError(`failed to write ${file}: ${(err as Error).message}`, { cause: err });
  }
}

async function fsyncFile(file: string): Promise<void> {
  const fh = await fsp.open(file, 'r');
  try {
    await fh.sync();
  } finally {
    await fh.close();
  }
}

async function fsyncDir(dir: string): Promise<void> {
  try {
    const fh = await fsp.open(dir, 'r');
    try {
      await fh.sync();
    } finally {
      await fh.close();
    }
  } catch {
    // Not supported everywhere (e.g. some network filesystems); the data itself is synced.
  }
}

async function exists(p: string): Promise<boolean> {
  try {
    await fsp.lstat(p);
    return true;
  } catch {
    return false;
  }
}

function tmpName(p: string): string {
  return `${p}.tmp-${process.pid}-${randomBytes(4).toString('hex')}`;
}

/** A stable filesystem UUID derived from the manifest digest (reproducible bases). */
function uuidFromHex(hex: string): string {
  const h = hex.slice(0, 32).padEnd(32, '0').split('');
  h[12] = '4'; // version 4 layout, as mke2fs expects a well-formed UUID
  h[16] = ((parseInt(h[16]!, 16) & 0x3) | 0x8).toString(16);
  const s = h.join('');
  return `${s.slice(0, 8)}-${s.slice(8, 12)}-${s.slice(12, 16)}-${s.slice(16, 20)}-${s.slice(20)}`;
}

const sleep = (ms: number) => new Promise<void>((r) => setTimeout(r, ms));
