// box.fork() (docs/snapshots.md "Fork"): a new box that carries on from a running box's memory.
// The source is paused for one instant in which its root drive switches onto a new overlay and
// its memory is saved (src/shim/fork.ts); the clone's disk is its own overlay on the base made
// at that instant, and its QEMU restores the memory with the same device layout. cloneBox()
// stays the reference's disk-only copy.
import fs from 'node:fs';
import path from 'node:path';
import { ulid } from 'ulid';
import { InvalidStateError, StorageError } from '../errors/index.js';
import type { BoxRecord } from '../store/boxes.js';
import { basePath, boxPaths } from '../store/home.js';
import { storageError } from '../util/fs.js';
import { SECRETS_FILE } from './secrets.js';
import { captureLive, collectBases, isRunning, overlayOnto, withLiveDisk, type DiskContext } from './snapshots.js';

/** Where the clone's shim finds the saved memory (removed once the clone runs). */
export const FORK_STATE_FILE = 'fork.state';

/** Saves the running source and makes the clone's record and disk; the caller boots it from `statePath`. */
export async function forkRecord<R extends BoxRecord>(
  ctx: DiskContext,
  source: R,
  name?: string | null,
): Promise<{ record: R; statePath: string; pausedMs: number }> {
  if (!isRunning(ctx, source.id)) {
    throw new InvalidStateError(`box ${source.id} is not running: fork() copies a running box's memory (cloneBox() copies a stopped one's disk)`);
  }
  const saved = path.join(ctx.store.dir(source.id), `.fork-${ulid()}.state`);
  try {
    return await withLiveDisk(ctx, source.id, 'forking it', async (client) => {
      const { baseId, virtualSize, pausedMs } = await captureLive(ctx, source.id, client, undefined, undefined, { state: saved });
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
        const statePath = path.join(dir, FORK_STATE_FILE);
        fs.renameSync(saved, statePath);
        return { record, statePath, pausedMs: pausedMs ?? 0 };
      } catch (err) {
        ctx.store.remove(record.id);
        collectBases(ctx);
        throw storageError(err, `cannot fork box ${source.id}`);
      }
    });
  } finally {
    fs.rmSync(saved, { force: true });
  }
}
