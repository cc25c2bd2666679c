// box.fork() (docs/snapshots.md "Fork"): a new box that carries on from a running box's memory.
// The source is paused for one instant in which its root drive switches onto a new overlay and
// its memory is saved (src/shim/fork.ts); the clone's disk is its own overlay on the base made
// at that instant, and its QEMU restores the memory with the same device layout. cloneBox()
// stays the reference's disk-only copy.
import fs from 'node:fs';
import path from 'node:path';
import { ulid } from 'ulid';
import { InvalidStateError } from '../errors/index.js';
import type { BoxRecord } from '../store/boxes.js';
import { storageError } from '../util/fs.js';
import { boxOnBase, captureLive, collectBases, isRunning, withLiveDisk, type DiskContext } from './snapshots.js';

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
      const record = await boxOnBase(ctx, source, name, baseId, virtualSize, 'fork');
      const statePath = path.join(ctx.store.dir(record.id), FORK_STATE_FILE);
      try {
        fs.renameSync(saved, statePath);
      } catch (err) {
        ctx.store.remove(record.id);
        collectBases(ctx);
        throw storageError(err, `cannot fork box ${source.id}`);
      }
      return { record, statePath, pausedMs: pausedMs ?? 0 };
    });
  } finally {
    fs.rmSync(saved, { force: true });
  }
}
