// The shim's half of a snapshot of a RUNNING box (issue 11, docs/snapshots.md): QEMU switches
// the root drive onto a new, empty qcow2 overlay the SDK prepared (QMP blockdev-snapshot-sync,
// mode `existing`), after which QEMU never writes the old file again: it can become a base.
// Everything else (the base's name, its rows, recovery) is the SDK's (src/runtime/snapshots.ts).
import { randomBytes } from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import { InvalidArgumentError, StorageError } from '../errors/index.js';
import { runTool } from '../images/tools.js';
import type { QmpClient } from './qmp.js';

/** The only overlay names the SDK makes; anything else is refused (the op opens a file as the VM's disk). */
export const LIVE_OVERLAY_RE = /^\.disk-next-[0-9A-Z]{26}\.qcow2$/;

/** The file QEMU currently writes the root drive to (the top of its chain), as QEMU names it. */
export async function activeRootFile(qmp: QmpClient): Promise<string> {
  const devices = (await qmp.execute('query-block')) as Array<{ device?: string; qdev?: string; inserted?: { file?: string } }>;
  const root = devices.find((d) => d.device === 'root');
  const file = root?.inserted?.file;
  if (!file) throw new StorageError('the VM has no root drive (QMP query-block lists none)');
  return protocolFile(file);
}

/**
 * After a switch QEMU names the top node `json:{…}` (its backing node is not the file its
 * header names): the file QEMU writes is the top node's protocol `file.filename`.
 */
export function protocolFile(name: string): string {
  if (!name.startsWith('json:')) return name;
  let spec: { file?: { filename?: unknown } | string; filename?: unknown };
  try {
    spec = JSON.parse(name.slice(5)) as typeof spec;
  } catch {
    throw new StorageError(`QEMU names the root drive by unreadable JSON: ${name.slice(0, 200)}`);
  }
  const file = typeof spec.file === 'string' ? spec.file : spec.file?.filename ?? spec.filename;
  if (typeof file !== 'string') throw new StorageError(`QEMU's root drive has no file name: ${name.slice(0, 200)}`);
  return file;
}

/**
 * Puts the root drive on `overlay` (a qcow2 the SDK created whose backing is the old file's
 * base name). Idempotent: a drive already on it is left as it is. Returns the active file.
 */
export async function switchRootOverlay(qmp: QmpClient, boxDir: string, overlay: string, afterSwitch?: () => Promise<void>): Promise<string> {
  if (!path.isAbsolute(overlay) || path.dirname(overlay) !== path.resolve(boxDir) || !LIVE_OVERLAY_RE.test(path.basename(overlay))) {
    throw new InvalidArgumentError(`not a live snapshot overlay of this box: ${JSON.stringify(overlay)}`);
  }
  if ((await activeRootFile(qmp)) === overlay) return overlay;
  // mode existing: QEMU opens the file without its backing (BDRV_O_NO_BACKING) and stacks it
  // on the running node, so the backing name the SDK wrote (bases/<id>.qcow2, not visible in
  // the jail) is kept as is. QEMU drains and flushes the old node first.
  await qmp.execute('blockdev-snapshot-sync', { device: 'root', 'snapshot-file': overlay, format: 'qcow2', mode: 'existing' }, 60_000);
  await afterSwitch?.(); // test hook: a kill between the switch and the link (recoverRootSwitch)
  const active = await activeRootFile(qmp);
  // disk.qcow2 names the file QEMU writes from here on, done by the shim (it outlives a killed
  // SDK): a later boot must never start from the old, now frozen, file.
  if (active === overlay) nameAsDisk(overlay, path.join(boxDir, 'disk.qcow2'));
  return active;
}

/**
 * Gives the live overlay the disk's name while keeping its own (a link, then a rename over
 * disk.qcow2): the running QEMU knows the file by the overlay's name and reopens the old top
 * read-only BY NAME at the next switch (file-posix cannot drop O_RDWR on an open fd).
 */
export function nameAsDisk(overlay: string, disk: string): void {
  const dir = path.dirname(disk);
  const tmp = path.join(dir, `.${path.basename(disk)}.${process.pid}.${randomBytes(4).toString('hex')}.tmp`);
  fs.linkSync(overlay, tmp);
  fs.renameSync(tmp, disk);
  const fd = fs.openSync(dir, 'r');
  try {
    fs.fsyncSync(fd);
  } finally {
    fs.closeSync(fd);
  }
}

/**
 * Before a boot uses the disk (the shim holds shim.lock): a live switch whose SDK and shim both
 * died between QEMU's switch and the link above leaves disk.qcow2 naming the frozen file (the
 * base's inode) while the guest's later writes are in the overlay. An overlay on that very file
 * that holds data was switched to (an unswitched one is as empty as it was made): it becomes
 * disk.qcow2. The base's `pending` row is then committed by the SDK's next disk operation
 * (recover() in src/runtime/snapshots.ts sees disk.qcow2 backed by the base).
 */
export async function recoverRootSwitch(boxDir: string, log: (line: string) => void): Promise<void> {
  const disk = path.join(boxDir, 'disk.qcow2');
  let names: string[];
  let diskIno: number;
  try {
    names = fs.readdirSync(boxDir).filter((n) => LIVE_OVERLAY_RE.test(n));
    if (!names.length) return;
    diskIno = fs.statSync(disk).ino;
  } catch {
    return;
  }
  for (const name of names) {
    const overlay = path.join(boxDir, name);
    try {
      if (fs.statSync(overlay).ino === diskIno) continue; // already the disk
      const info = await runTool('qemu-img', ['info', '-U', '--output=json', overlay], { timeoutMs: 30_000 });
      if (info.code !== 0) continue;
      const j = JSON.parse(info.stdout) as { 'full-backing-filename'?: string; 'backing-filename'?: string };
      const backing = j['full-backing-filename'] ?? j['backing-filename'];
      if (!backing || !fs.existsSync(backing) || fs.statSync(backing).ino !== diskIno) continue;
      const map = await runTool('qemu-img', ['map', '-U', '--output=json', '-f', 'qcow2', overlay], { timeoutMs: 60_000 });
      if (map.code !== 0) continue;
      const extents = JSON.parse(map.stdout) as Array<{ depth: number }>;
      if (extents.every((e) => e.depth > 0)) continue; // never written: never switched to, or nothing lost
      nameAsDisk(overlay, disk);
      log(`recovered a live disk switch cut short: ${name} is disk.qcow2 again`);
      return;
    } catch (err) {
      log(`cannot check the live overlay ${name}: ${(err as Error).message}`);
    }
  }
}
