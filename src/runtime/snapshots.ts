// Snapshots and clones of a box's disk (issue 11): immutable qcow2 bases shared by reference.
//
// A box's disk is boxes/<id>/disk.qcow2, a qcow2 overlay whose backing chain ends at the image's
// ext4. Taking a base of it never copies data: the stopped disk's file gets a second name,
// bases/<new>.qcow2 (link(2)), and the box gets a fresh empty overlay on it, put in place by
// rename(2). From then on nothing writes that inode: it is the snapshot, or the shared base of
// the box and its clones. Restore = a new empty overlay on the snapshot's base.
//
// Crash safety: the database row of a new base is written `pending` before any file changes and
// made `ready` only after the box's disk sits on it; every operation on a box first recovers
// what a killed operation on it left (recover()): finished (the disk is an overlay on the base)
// → committed, otherwise → the extra name is unlinked and the rows dropped. A half-made base is
// therefore never used, and at every instant disk.qcow2 is a complete disk.
//
// Mutual exclusion: the operation holds the box's shim.lock (the file one booting shim takes
// with O_EXCL), marked `op` so the box does not read as running; a boot meanwhile is refused.
import { randomBytes } from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import { ulid } from 'ulid';
import { AlreadyExistsError, InvalidArgumentError, InvalidStateError, NotFoundError, StorageError, toBoxliteError } from '../errors/index.js';
import { describeFailure, runTool } from '../images/tools.js';
import type { BoxRecord } from '../store/boxes.js';
import type { DiskStore, SnapshotRow } from '../store/disks.js';
import { basePath, basesDir, boxPaths } from '../store/home.js';
import { isProcessAlive, processStartTime, readJson, storageError } from '../util/fs.js';
import { qcow2BackingChain } from '../vmm/jail.js';
import { ShimClient } from '../shim/client.js';
import { nameAsDisk } from '../shim/disk-ops.js';
import type { RuntimeContext } from './context.js';
import type { SnapshotHandle, SnapshotInfo, SnapshotOptions } from './handles.js';
import { SECRETS_FILE } from './secrets.js';

/** What a disk operation needs of the runtime. */
export type DiskContext = Pick<RuntimeContext, 'home' | 'store'> & { disks: DiskStore };

// ---------- names ----------

export const MAX_SNAPSHOT_NAME = 128;

/** Backing layers of a box disk past which a new base is flattened (docs/snapshots.md). */
export const MAX_CHAIN = 8;

/**
 * The reference's rules (no path separators, NUL, leading dot, `.`/`..`) plus the REST
 * contract's 1–128 characters and no control characters: a name is also a CLI argument.
 */
export function validateSnapshotName(name: unknown): string {
  if (typeof name !== 'string' || name.length === 0) throw new InvalidArgumentError('snapshot name must be a non-empty string');
  if (name.length > MAX_SNAPSHOT_NAME) {
    throw new InvalidArgumentError(`snapshot name is too long (${name.length} characters, at most ${MAX_SNAPSHOT_NAME})`);
  }
  if (name.startsWith('.')) throw new InvalidArgumentError(`snapshot name ${JSON.stringify(name)} must not start with '.'`);
  // eslint-disable-next-line no-control-regex
  if (/[/\\\x00-\x1f\x7f]/.test(name)) {
    throw new InvalidArgumentError(`snapshot name ${JSON.stringify(name)} must not contain '/', '\\' or control characters`);
  }
  return name;
}

// ---------- qemu-img ----------

export interface DiskImageInfo {
  format: string;
  virtualSize: number;
  actualSize: number;
  /** The backing file as QEMU resolves it (absolute), or null. */
  backing: string | null;
  /** An external data file (qcow2 `data-file`), or null. */
  dataFile: string | null;
  corrupt: boolean;
}

/** `qemu-img info` of one image (never opens its backing file; `-U`: a running VM's disk too). */
export async function diskImageInfo(file: string, format?: 'qcow2'): Promise<DiskImageInfo> {
  const r = await runTool('qemu-img', ['info', '-U', '--output=json', ...(format ? ['-f', format] : []), file], { timeoutMs: 60_000 });
  if (r.code !== 0 || r.signal) throw new StorageError(`cannot read disk image ${file}: ${describeFailure('qemu-img', r)}`);
  let j: Record<string, unknown>;
  try {
    j = JSON.parse(r.stdout) as Record<string, unknown>;
  } catch (err) {
    throw new StorageError(`qemu-img info ${file}: unreadable output`, { cause: err });
  }
  const data = ((j['format-specific'] as { data?: Record<string, unknown> } | undefined)?.data ?? {}) as Record<string, unknown>;
  const backing = (j['full-backing-filename'] ?? j['backing-filename']) as string | undefined;
  return {
    format: String(j.format),
    virtualSize: Number(j['virtual-size']),
    actualSize: Number(j['actual-size'] ?? 0),
    backing: backing ? path.resolve(path.dirname(file), backing) : null,
    dataFile: typeof data['data-file'] === 'string' ? (data['data-file'] as string) : null,
    corrupt: data.corrupt === true,
  };
}

/** A new empty qcow2 overlay on `backing`, written under a temp name, fsynced, then renamed onto `dest`. */
export async function overlayOnto(backing: string, dest: string, virtualSize: number, backingFormat: 'qcow2' | 'raw' = 'qcow2'): Promise<void> {
  const tmp = path.join(path.dirname(dest), `.${path.basename(dest)}.${process.pid}.${randomBytes(4).toString('hex')}.tmp`);
  const r = await runTool('qemu-img', ['create', '-q', '-f', 'qcow2', '-F', backingFormat, '-b', backing, tmp, String(virtualSize)], {
    timeoutMs: 60_000,
  });
  if (r.code !== 0 || r.signal) {
    fs.rmSync(tmp, { force: true });
    throw new StorageError(`cannot create a disk overlay on ${backing}: ${describeFailure('qemu-img', r)}`);
  }
  try {
    fsyncPath(tmp);
    fs.renameSync(tmp, dest);
    fsyncPath(path.dirname(dest));
  } catch (err) {
    fs.rmSync(tmp, { force: true });
    throw storageError(err, `cannot put the disk overlay in place at ${dest}`);
  }
}

export function fsyncPath(p: string): void {
  const fd = fs.openSync(p, 'r');
  try {
    fs.fsyncSync(fd);
  } finally {
    fs.closeSync(fd);
  }
}

function inode(p: string): number | undefined {
  try {
    return fs.statSync(p).ino;
  } catch {
    return undefined;
  }
}

// ---------- the box's disk lock ----------

/**
 * Holds the box's shim.lock for one disk operation: refused while the box runs or boots (and
 * while another disk operation holds it). A lock left by a dead process is taken over.
 */
export async function withDiskLock<T>(ctx: DiskContext, boxId: string, what: string, fn: () => Promise<T>): Promise<T> {
  const dir = ctx.store.dir(boxId);
  const paths = { ...boxPaths(dir), liveLock: path.join(dir, LIVE_LOCK) };
  if (!fs.existsSync(paths.config)) throw new NotFoundError('box', boxId);
  const refuse = () => new InvalidStateError(`box ${boxId} is running; stop it before ${what}`);
  if (ctx.store.status(boxId).shim) throw refuse();
  assertNoLiveOp(paths.liveLock, boxId);
  const mine = JSON.stringify({ pid: process.pid, startTime: processStartTime(process.pid), op: what });
  for (let attempt = 0; ; attempt++) {
    try {
      fs.writeFileSync(paths.shimLock, mine, { flag: 'wx' });
      break;
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'EEXIST') throw storageError(err, `cannot lock box ${boxId}`);
    }
    const owner = readJson<{ pid: number; startTime?: string; op?: string }>(paths.shimLock);
    if (owner && isProcessAlive(owner.pid, owner.startTime)) {
      if (owner.op) throw new InvalidStateError(`box ${boxId} is busy (${owner.op} in process ${owner.pid})`);
      throw refuse();
    }
    if (attempt > 0) throw new InvalidStateError(`box ${boxId} is locked by another process`);
    fs.rmSync(paths.shimLock, { force: true });
  }
  try {
    // A shim.json left by a VM that died is not a running box; one of a live shim is (it raced us).
    if (ctx.store.status(boxId).shim) throw refuse();
    await recover(ctx, boxId);
    return await fn();
  } catch (err) {
    throw toBoxliteError(err, 'Storage');
  } finally {
    fs.rmSync(paths.shimLock, { force: true });
  }
}

// ---------- a running box (docs/snapshots.md) ----------

/** Held by the one live disk operation on a running box (the shim holds shim.lock then). */
const LIVE_LOCK = 'disk-op.lock';

/** The overlay a live snapshot making base `baseId` switches the VM onto (src/shim/disk-ops.ts). */
export function liveOverlayPath(boxDir: string, baseId: string): string {
  return path.join(boxDir, `.disk-next-${baseId}.qcow2`);
}

function assertNoLiveOp(lockFile: string, boxId: string): void {
  const owner = readJson<{ pid: number; startTime?: string; op?: string }>(lockFile);
  if (owner && owner.pid !== process.pid && isProcessAlive(owner.pid, owner.startTime)) {
    throw new InvalidStateError(`box ${boxId} is busy (${owner.op ?? 'a disk operation'} in process ${owner.pid})`);
  }
}

/** Quiesces the guest before its disk is captured (box.ts passes an agent `sync`). */
export type Quiesce = () => Promise<void>;

/** True when the box's VM is up (a shim that finished booting). */
export function isRunning(ctx: DiskContext, boxId: string): boolean {
  return !!ctx.store.status(boxId).shim?.qemuPid;
}

/**
 * One disk operation on a running box: holds disk-op.lock, connects to the shim, finishes what
 * a killed live operation left, then runs `fn`. If `fn` fails, what it left is recovered at
 * once: with the shim's answer while it lives, else (shim killed: QEMU dies with it) once the
 * VM is gone, as for a stopped box.
 */
export async function withLiveDisk<T>(ctx: DiskContext, boxId: string, what: string, fn: (client: ShimClient) => Promise<T>): Promise<T> {
  const dir = ctx.store.dir(boxId);
  const paths = boxPaths(dir);
  const lockFile = path.join(dir, LIVE_LOCK);
  const shim = ctx.store.status(boxId).shim;
  if (!shim?.qemuPid) throw new InvalidStateError(`box ${boxId} is not running`);
  const mine = JSON.stringify({ pid: process.pid, startTime: processStartTime(process.pid), op: what });
  for (let attempt = 0; ; attempt++) {
    try {
      fs.writeFileSync(lockFile, mine, { flag: 'wx' });
      break;
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'EEXIST') throw storageError(err, `cannot lock box ${boxId}`);
    }
    assertNoLiveOp(lockFile, boxId);
    if (attempt > 0) throw new InvalidStateError(`box ${boxId} is locked by another process`);
    fs.rmSync(lockFile, { force: true });
  }
  let client: ShimClient | undefined;
  try {
    client = await ShimClient.connect(paths.controlSocket);
    await recover(ctx, boxId, (await client.request('disk')).file);
    return await fn(client);
  } catch (err) {
    const live = client && !client.isClosed ? await client.request('disk').then((r) => r.file, () => undefined) : undefined;
    if (live !== undefined) await recover(ctx, boxId, live).catch(() => undefined);
    else if (await vmGone(shim.qemuPid, shim.qemuStartTime)) {
      fs.rmSync(lockFile, { force: true });
      // As any later operation on the stopped box would: under shim.lock, so no boot races it.
      await withDiskLock(ctx, boxId, 'recovering a live snapshot', async () => undefined).catch(() => undefined);
    }
    throw toBoxliteError(err, 'Storage');
  } finally {
    client?.close();
    const owner = readJson<{ pid: number }>(lockFile);
    if (owner?.pid === process.pid) fs.rmSync(lockFile, { force: true });
  }
}

async function vmGone(pid: number, startTime: string | undefined, timeoutMs = 10_000): Promise<boolean> {
  for (const t0 = Date.now(); Date.now() - t0 < timeoutMs; await new Promise((r) => setTimeout(r, 50))) {
    if (!isProcessAlive(pid, startTime)) return true;
  }
  return false;
}

/**
 * captureBase for a running box: the guest syncs, the current disk file gets its base name
 * (link(2); QEMU still writes it), QEMU switches onto a new empty overlay backed by that name
 * (QMP, in the shim) and stops writing the old file, then the overlay takes the disk's name.
 * The base is committed only after the switch; recover() decides a cut-short one from QEMU's
 * active file (running) or the overlay's content (stopped).
 */
export async function captureLive(
  ctx: DiskContext,
  boxId: string,
  client: ShimClient,
  quiesce: Quiesce | undefined,
  snapshot?: { name: string },
  shimArgs?: { state?: string; pause?: boolean },
): Promise<{ baseId: string; row?: SnapshotRow; virtualSize: number; pausedMs?: number }> {
  const dir = ctx.store.dir(boxId);
  const disk = boxPaths(dir).disk;
  if (snapshot && ctx.disks.getSnapshot(boxId, snapshot.name)) {
    throw new AlreadyExistsError(`snapshot ${JSON.stringify(snapshot.name)} already exists for box ${boxId}`);
  }
  // The chain cannot be flattened under a running VM (the stopped path does it at MAX_CHAIN);
  // the jail binds 16 layers and the next boot needs them all.
  if (qcow2BackingChain(disk).length >= 14) {
    throw new InvalidStateError(`box ${boxId}'s disk has ${qcow2BackingChain(disk).length} layers; stop it to snapshot or clone it (the chain is flattened then)`);
  }
  await quiesce?.();
  const info = await diskImageInfo(disk);
  const parent = currentBase(ctx, info.backing);
  const baseId = ulid();
  const createdAt = Math.floor(Date.now() / 1000);
  ctx.disks.beginBase(
    { id: baseId, parent, owner: boxId, createdAt },
    snapshot ? { id: ulid(), name: snapshot.name, createdAt, containerDiskBytes: info.virtualSize } : undefined,
  );
  const file = basePath(ctx.home.root, baseId);
  const next = liveOverlayPath(dir, baseId);
  fs.mkdirSync(basesDir(ctx.home.root), { recursive: true, mode: 0o700 });
  fs.linkSync(disk, file);
  fsyncPath(basesDir(ctx.home.root));
  const r = await runTool('qemu-img', ['create', '-q', '-f', 'qcow2', '-F', 'qcow2', '-u', '-b', file, next, String(info.virtualSize)], {
    timeoutMs: 60_000,
  });
  if (r.code !== 0 || r.signal) throw new StorageError(`cannot create the live overlay of box ${boxId}: ${describeFailure('qemu-img', r)}`);
  fsyncPath(next);
  fsyncPath(dir);
  // A fork: the shim also saves the VM's memory at the paused instant of the switch (src/shim/fork.ts).
  const { file: active, pausedMs } = await client.request('disk', undefined, { overlay: next, ...shimArgs });
  if (active !== next) throw new StorageError(`the VM of box ${boxId} did not switch its disk to ${next} (it writes ${active})`);
  // The shim named it disk.qcow2 already; a shim of an older build did not.
  if (inode(next) !== inode(disk)) nameAsDisk(next, disk);
  // QEMU reopens the old top read-only BY NAME at the next switch (file-posix cannot drop
  // O_RDWR on an fd): only the current overlay's name is kept, the older ones can go.
  for (const n of fs.readdirSync(dir)) {
    if (/^\.disk-next-[0-9A-Z]{26}\.qcow2$/.test(n) && path.join(dir, n) !== next) fs.rmSync(path.join(dir, n), { force: true });
  }
  fs.chmodSync(file, 0o444);
  ctx.disks.commitBase(baseId, fs.statSync(file).size);
  return { baseId, virtualSize: info.virtualSize, pausedMs, ...(snapshot ? { row: ctx.disks.getSnapshot(boxId, snapshot.name) } : {}) };
}

/**
 * A running box's disk frozen at one instant, for a reader that needs the whole chain (export):
 * the guest syncs, the VM is paused (as the reference pauses for export) while its root drive is
 * switched onto a new overlay, then resumed whatever happened; `fn` reads the base, which no one
 * writes again, while the box runs on. The base stays as one more layer of the box's chain.
 */
export async function withFrozenLiveDisk<T>(
  ctx: DiskContext,
  boxId: string,
  what: string,
  quiesce: Quiesce | undefined,
  fn: (baseFile: string) => Promise<T>,
): Promise<T> {
  return withLiveDisk(ctx, boxId, what, async (client) => {
    // The shim stops the VM for the switch and thaws it in its own finally: neither an error
    // nor a killed SDK leaves the box paused.
    const { baseId } = await captureLive(ctx, boxId, client, quiesce, undefined, { pause: true });
    return fn(basePath(ctx.home.root, baseId));
  });
}

// ---------- recovery and garbage collection ----------

/**
 * Finishes or undoes what a killed operation on this box left (called under its lock).
 * `activeFile`: the file QEMU writes the root drive to when the box runs (live recovery);
 * undefined when the VM is stopped.
 */
export async function recover(ctx: DiskContext, boxId: string, activeFile?: string): Promise<void> {
  const dir = ctx.store.dir(boxId);
  const disk = boxPaths(dir).disk;
  for (const base of ctx.disks.pendingOf(boxId)) {
    const file = basePath(ctx.home.root, base.id);
    const next = liveOverlayPath(dir, base.id);
    let done = false;
    if (fs.existsSync(disk) && fs.existsSync(file) && inode(disk) !== inode(file)) {
      done = (await diskImageInfo(disk).catch(() => undefined))?.backing === file;
    } else if (fs.existsSync(next) && fs.existsSync(file) && inode(disk) === inode(file)) {
      // A live snapshot cut short between QEMU's switch and the rename. Switched = QEMU writes
      // the overlay (running box), or the overlay holds data (stopped: had it not been switched
      // it would be as empty as it was made; switched but never written, dropping it loses nothing).
      const switched = activeFile !== undefined ? activeFile === next : !(await topLayerEmpty(next));
      if (switched) {
        fsyncPath(next);
        nameAsDisk(next, disk);
        done = true;
      }
    }
    if (done) {
      fs.chmodSync(file, 0o444);
      ctx.disks.commitBase(base.id, fs.statSync(file).size);
    } else {
      // Unlinking drops only the extra name: the box's disk (same inode, when linked) stays.
      fs.rmSync(file, { force: true });
      ctx.disks.abortBase(base.id);
    }
    if (next !== activeFile) fs.rmSync(next, { force: true });
    for (const name of fs.existsSync(path.dirname(file)) ? fs.readdirSync(path.dirname(file)) : []) {
      if (name.startsWith(`${base.id}.qcow2.`) && name.endsWith('.tmp')) fs.rmSync(path.join(path.dirname(file), name), { force: true });
    }
  }
  for (const name of fs.existsSync(dir) ? fs.readdirSync(dir) : []) {
    if (/^\.disk\.qcow2\.\d+\.[0-9a-f]+\.tmp$/.test(name)) fs.rmSync(path.join(dir, name), { force: true });
    // A fork cut short (src/runtime/fork.ts): its saved memory is of no use any more.
    if (/^\.fork-(?:[0-9A-Z]{26}\.state|[0-9a-f]{8}\.sock)$|^fork\.state$/.test(name)) fs.rmSync(path.join(dir, name), { force: true });
    // An overlay's own name is needed only while a running QEMU writes it (see captureLive).
    const m = /^\.disk-next-([0-9A-Z]{26})\.qcow2$/.exec(name);
    if (m && ctx.disks.base(m[1]!)?.state !== 'pending' && path.join(dir, name) !== activeFile) fs.rmSync(path.join(dir, name), { force: true });
  }
}

/** Deletes every base nothing uses any more (rows first, then files). */
export function collectBases(ctx: DiskContext): void {
  if (!ctx.disks?.inUse) return;
  const freed = ctx.disks.collect(() => new Set(ctx.store.list().map((r) => r.id)));
  for (const id of freed) fs.rmSync(basePath(ctx.home.root, id), { force: true });
}

// ---------- bases ----------

/**
 * Turns the stopped box's current disk into a new immutable base (optionally named by a
 * snapshot) and puts the box on a fresh overlay over it. Called under the box's lock.
 */
async function captureBase(
  ctx: DiskContext,
  boxId: string,
  snapshot?: { name: string },
): Promise<{ baseId: string; row?: SnapshotRow; virtualSize: number }> {
  const disk = boxPaths(ctx.store.dir(boxId)).disk;
  if (!fs.existsSync(disk)) throw new StorageError(`box ${boxId} has no disk (${disk} is missing)`);
  const info = await diskImageInfo(disk);
  // A long chain slows every read and exceeds what the jailer binds (16 layers): past
  // MAX_CHAIN the new base is the whole disk flattened (a copy, bounded), with no parent.
  const flatten = qcow2BackingChain(disk).length >= MAX_CHAIN;
  const parent = flatten ? null : currentBase(ctx, info.backing);
  const baseId = ulid();
  const createdAt = Math.floor(Date.now() / 1000);
  const snapshotId = snapshot ? ulid() : undefined;
  ctx.disks.beginBase(
    { id: baseId, parent, owner: boxId, createdAt },
    snapshot ? { id: snapshotId!, name: snapshot.name, createdAt, containerDiskBytes: info.virtualSize } : undefined,
  );
  const file = basePath(ctx.home.root, baseId);
  try {
    fs.mkdirSync(basesDir(ctx.home.root), { recursive: true, mode: 0o700 });
    fsyncPath(disk);
    if (flatten) {
      // Written under a temp name: a killed convert never leaves a torn file under the base's name.
      const tmp = `${file}.${process.pid}.tmp`;
      const r = await runTool('qemu-img', ['convert', '-q', '-O', 'qcow2', disk, tmp], { timeoutMs: 60 * 60_000 });
      if (r.code !== 0 || r.signal) {
        fs.rmSync(tmp, { force: true });
        throw new StorageError(`cannot flatten the disk of box ${boxId}: ${describeFailure('qemu-img', r)}`);
      }
      fsyncPath(tmp);
      fs.renameSync(tmp, file);
    } else {
      fs.linkSync(disk, file);
    }
    fsyncPath(basesDir(ctx.home.root));
    await overlayOnto(file, disk, info.virtualSize);
    fs.chmodSync(file, 0o444);
  } catch (err) {
    // Whatever got done is finished or undone as after a crash: the box keeps a whole disk.
    await recover(ctx, boxId).catch(() => undefined);
    throw storageError(err, `cannot capture the disk of box ${boxId}`);
  }
  const sizeBytes = fs.statSync(file).size;
  ctx.disks.commitBase(baseId, sizeBytes);
  return {
    baseId,
    virtualSize: info.virtualSize,
    ...(snapshot ? { row: ctx.disks.getSnapshot(boxId, snapshot.name) } : {}),
  };
}

/** The registered base a disk's backing file is, if it is one (else the image's ext4, or none). */
function currentBase(ctx: DiskContext, backing: string | null): string | null {
  if (!backing || path.dirname(backing) !== basesDir(ctx.home.root)) return null;
  const id = path.basename(backing, '.qcow2');
  return ctx.disks.base(id)?.state === 'ready' ? id : null;
}

/** True when the overlay holds no data of its own (every extent comes from its backing chain). */
export async function topLayerEmpty(disk: string): Promise<boolean> {
  const r = await runTool('qemu-img', ['map', '-U', '--output=json', '-f', 'qcow2', disk], { timeoutMs: 60_000 });
  if (r.code !== 0 || r.signal) return false;
  try {
    const extents = JSON.parse(r.stdout) as Array<{ depth: number; data?: boolean; zero?: boolean }>;
    return extents.every((e) => e.depth > 0);
  } catch {
    return false;
  }
}

// ---------- the reference's JsSnapshotHandle ----------

function snapshotInfo(row: SnapshotRow): SnapshotInfo {
  return {
    id: row.id,
    boxId: row.boxId,
    name: row.name,
    createdAt: row.createdAt,
    containerDiskBytes: row.containerDiskBytes,
    sizeBytes: row.sizeBytes,
  };
}

/** `box.snapshot`: snapshots of a stopped box's disk. */
export class BoxSnapshots implements SnapshotHandle {
  constructor(
    private readonly ctx: () => DiskContext,
    private readonly id: () => string,
    private readonly quiesce?: Quiesce,
  ) {}

  private get boxId(): string {
    return this.id();
  }

  async create(name: string, _options?: SnapshotOptions | null): Promise<SnapshotInfo> {
    validateSnapshotName(name);
    const ctx = this.ctx();
    if (isRunning(ctx, this.boxId)) {
      return withLiveDisk(ctx, this.boxId, `snapshot ${JSON.stringify(name)}`, async (client) => {
        const { row } = await captureLive(ctx, this.boxId, client, this.quiesce, { name });
        if (!row) throw new StorageError(`snapshot ${JSON.stringify(name)} of box ${this.boxId} vanished while it was made`);
        return snapshotInfo(row);
      });
    }
    return withDiskLock(ctx, this.boxId, `snapshot ${JSON.stringify(name)}`, async () => {
      if (ctx.disks.getSnapshot(this.boxId, name)) {
        throw new AlreadyExistsError(`snapshot ${JSON.stringify(name)} already exists for box ${this.boxId}`);
      }
      const { row } = await captureBase(ctx, this.boxId, { name });
      if (!row) throw new StorageError(`snapshot ${JSON.stringify(name)} of box ${this.boxId} vanished while it was made`);
      return snapshotInfo(row);
    });
  }

  async list(): Promise<SnapshotInfo[]> {
    const ctx = this.ctx();
    this.assertExists(ctx);
    return ctx.disks.listSnapshots(this.boxId).map(snapshotInfo);
  }

  async get(name: string): Promise<SnapshotInfo | null> {
    validateSnapshotName(name);
    const ctx = this.ctx();
    this.assertExists(ctx);
    const row = ctx.disks.getSnapshot(this.boxId, name);
    return row ? snapshotInfo(row) : null;
  }

  /**
   * Forgets the snapshot. Its base stays as long as the box's disk, a clone or another snapshot
   * is built on it (reference counts), so removing a snapshot never breaks anything.
   */
  async remove(name: string): Promise<void> {
    validateSnapshotName(name);
    const ctx = this.ctx();
    this.assertExists(ctx);
    if (!ctx.disks.removeSnapshot(this.boxId, name)) throw new NotFoundError(`snapshot ${JSON.stringify(name)} of box`, this.boxId);
    collectBases(ctx);
  }

  /** Puts the stopped box back on the snapshot's disk (what was written since is discarded). */
  async restore(name: string): Promise<void> {
    validateSnapshotName(name);
    const ctx = this.ctx();
    await withDiskLock(ctx, this.boxId, `restoring snapshot ${JSON.stringify(name)}`, async () => {
      const row = ctx.disks.getSnapshot(this.boxId, name);
      if (!row) throw new NotFoundError(`snapshot ${JSON.stringify(name)} of box`, this.boxId);
      // Referenced before the rename, released after: a crash between leaves one extra reference, never a missing one.
      if (!ctx.disks.addRef(this.boxId, row.baseId)) throw new StorageError(`the disk base of snapshot ${JSON.stringify(name)} is gone`);
      await overlayOnto(basePath(ctx.home.root, row.baseId), boxPaths(ctx.store.dir(this.boxId)).disk, row.containerDiskBytes);
      ctx.disks.keepOnlyRef(this.boxId, row.baseId);
      collectBases(ctx);
    });
  }

  private assertExists(ctx: DiskContext): void {
    if (!ctx.store.get(this.boxId)) throw new NotFoundError('box', this.boxId);
  }
}

// ---------- clone ----------

/**
 * A new box with the source's configuration (and secrets) whose disk is a fresh overlay on
 * `baseId` (clone and fork). Undone whole on any failure.
 */
export async function boxOnBase<R extends BoxRecord>(
  ctx: DiskContext,
  source: R,
  name: string | null | undefined,
  baseId: string,
  virtualSize: number,
  verb: 'clone' | 'fork',
): Promise<R> {
  const record: R = { ...(JSON.parse(JSON.stringify(source)) as R), id: ulid(), name: name ?? undefined, createdAt: new Date().toISOString() };
  ctx.store.create(record);
  const dir = ctx.store.dir(record.id);
  try {
    if (!ctx.disks.addRef(record.id, baseId)) throw new StorageError(`the disk base ${baseId} of box ${source.id} is gone`);
    const secrets = path.join(ctx.store.dir(source.id), SECRETS_FILE);
    if (fs.existsSync(secrets)) {
      fs.copyFileSync(secrets, path.join(dir, SECRETS_FILE), fs.constants.COPYFILE_EXCL);
      fs.chmodSync(path.join(dir, SECRETS_FILE), 0o600);
    }
    await overlayOnto(basePath(ctx.home.root, baseId), boxPaths(dir).disk, virtualSize);
    return record;
  } catch (err) {
    ctx.store.remove(record.id);
    collectBases(ctx);
    throw storageError(err, `cannot ${verb} box ${source.id}`);
  }
}

/**
 * A new box with the stopped source's configuration whose disk is an overlay on a shared base
 * of the source's disk: no data is copied, and writes on either side stay on that side.
 * Returns the new box's record (the caller makes the handle).
 */
export async function cloneRecord<R extends BoxRecord>(
  ctx: DiskContext,
  source: R,
  name?: string | null,
  quiesce?: Quiesce,
): Promise<R> {
  const body = async (capture: () => Promise<{ baseId: string }>) => {
    const disk = boxPaths(ctx.store.dir(source.id)).disk;
    const info = await diskImageInfo(disk);
    const current = currentBase(ctx, info.backing);
    // A disk with nothing written since it was put on its base shares that base as it is
    // (a running box's top layer may still change in the guest's cache: always captured).
    const baseId = current && !live && (await topLayerEmpty(disk)) ? current : (await capture()).baseId;
    return boxOnBase(ctx, source, name, baseId, info.virtualSize, 'clone');
  };
  const live = isRunning(ctx, source.id);
  if (live) return withLiveDisk(ctx, source.id, 'cloning it', (client) => body(() => captureLive(ctx, source.id, client, quiesce)));
  return withDiskLock(ctx, source.id, 'cloning it', () => body(() => captureBase(ctx, source.id)));
}
