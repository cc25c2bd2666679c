// A home with real qcow2 disks and no VM: boxes whose disks are overlays on a small raw base,
// written and read with qemu-io (patterns at offsets), for the snapshot, clone and archive tests.
import { execFileSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { ulid } from 'ulid';
import { createOverlay } from '../../src/images/rootfs.js';
import type { BoxRecordT } from '../../src/runtime/box.js';
import { normalizeBoxOptions, type BoxOptions } from '../../src/runtime/options.js';
import type { DiskContext } from '../../src/runtime/snapshots.js';
import { BoxStore } from '../../src/store/boxes.js';
import { DiskStore } from '../../src/store/disks.js';
import { boxPaths, ensureHome, resolveHome } from '../../src/store/home.js';

export interface Fixture {
  ctx: DiskContext;
  root: string;
  base: string;
  close(): void;
}

export function makeHome(): Fixture {
  const root = fs.mkdtempSync(path.join(os.tmpdir(), 'bl-snap-'));
  const home = resolveHome(root, {});
  ensureHome(home);
  const base = path.join(root, 'image.ext4');
  // A 4 MiB "image" filled with 0x11, so reads through the chain are distinguishable from zeroes.
  fs.writeFileSync(base, Buffer.alloc(4 * 1024 * 1024, 0x11));
  fs.chmodSync(base, 0o444);
  const store = new BoxStore(home.boxes, home.db);
  const disks = new DiskStore(home.db);
  return {
    ctx: { home, store, disks },
    root,
    base,
    close() {
      store.close();
      disks.close();
      fs.rmSync(root, { recursive: true, force: true });
    },
  };
}

export async function makeBox(f: Fixture, options: BoxOptions = {}, name?: string): Promise<BoxRecordT> {
  const record: BoxRecordT = {
    id: ulid(),
    name,
    createdAt: new Date().toISOString(),
    options: normalizeBoxOptions({ image: 'busybox:latest', ...options }),
    image: { reference: 'busybox:latest', manifestDigest: 'sha256:' + 'ab'.repeat(32), rootfsBase: f.base, config: { Cmd: ['sh'], Env: ['PATH=/bin'], Labels: { a: 'b' }, ExposedPorts: { '80/tcp': {} } } as BoxRecordT['image']['config'] },
  };
  f.ctx.store.create(record);
  await createOverlay(f.base, diskOf(f, record.id));
  return record;
}

export function diskOf(f: Fixture, id: string): string {
  return boxPaths(f.ctx.store.dir(id)).disk;
}

/** Writes `pattern` (a byte) at `offset` (64 KiB) of the image. */
export function writePattern(disk: string, pattern: number, offset = 0): void {
  execFileSync('qemu-io', ['-f', 'qcow2', '-c', `write -P ${pattern} ${offset} 64k`, disk], { stdio: 'pipe' });
}

/** True when the 64 KiB at `offset` all read as `pattern` (through the whole backing chain). */
export function hasPattern(disk: string, pattern: number, offset = 0): boolean {
  try {
    const out = execFileSync('qemu-io', ['-r', '-f', 'qcow2', '-c', `read -P ${pattern} ${offset} 64k`, disk], { stdio: 'pipe' }).toString();
    return !/Pattern verification failed/.test(out);
  } catch {
    return false;
  }
}

export function backingOf(disk: string): string | null {
  const j = JSON.parse(execFileSync('qemu-img', ['info', '-U', '--output=json', disk]).toString()) as Record<string, string>;
  return j['full-backing-filename'] ?? null;
}
