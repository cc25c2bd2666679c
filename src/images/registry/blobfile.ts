// Files of a download in progress. A blob being fetched lives in tmpDir as
// `<hex>.<pid>-<n>.partial` (owned by one process); when a download stops
// without finishing it is renamed to `<hex>.partial`, which the next pull
// claims (by rename: only one process can win it) and resumes with a Range
// request. Partials of processes that died are claimed the same way. A
// finished, verified blob is published by rename into the blob directory:
// content-addressed, so two processes publishing the same blob is harmless.

import { createHash, type Hash } from 'node:crypto';
import { createReadStream } from 'node:fs';
import * as fsp from 'node:fs/promises';
import * as path from 'node:path';
import { isProcessAlive, storageError } from '../../util/fs.js';

export { storageError };

let seq = 0;

/** A fresh name for this process's working file of `hex`. */
export function ownPartialName(hex: string): string {
  return `${hex}.${process.pid}-${++seq}.partial`;
}

/** Name under which an unfinished download waits to be resumed. */
export function resumablePartialName(hex: string): string {
  return `${hex}.partial`;
}

/**
 * Moves a resumable partial of `hex` (ours from an earlier run, or left by a
 * dead process) to `ownPath`. Returns its size, or 0 when there was none.
 */
export async function claimPartial(tmpDir: string, hex: string, ownPath: string): Promise<number> {
  let names: string[];
  try {
    names = await fsp.readdir(tmpDir);
  } catch {
    return 0;
  }
  const resumable = resumablePartialName(hex);
  const candidates = names.filter((n) => {
    if (n === resumable) return true;
    const m = new RegExp(`^${hex}\\.(\\d+)-\\d+\\.partial$`).exec(n);
    return m !== null && Number(m[1]) !== process.pid && !isProcessAlive(Number(m[1]));
  });
  // The resumable one first, then the largest leftover.
  const sized: Array<{ name: string; size: number }> = [];
  for (const name of candidates) {
    try {
      sized.push({ name, size: (await fsp.stat(path.join(tmpDir, name))).size });
    } catch {
      // gone meanwhile
    }
  }
  sized.sort((a, b) => (a.name === resumable ? -1 : b.name === resumable ? 1 : b.size - a.size));
  let claimed = -1;
  for (const c of sized) {
    const from = path.join(tmpDir, c.name);
    if (claimed < 0) {
      try {
        await fsp.rename(from, ownPath);
        claimed = (await fsp.stat(ownPath)).size;
        continue;
      } catch {
        continue; // another process won it
      }
    }
    // Other leftovers of dead processes: the claimed one is at least as good.
    if (c.name !== resumable) await fsp.rm(from, { force: true }).catch(() => {});
  }
  return Math.max(0, claimed);
}

/** Leaves `ownPath` for a later pull to resume (or removes it when empty). */
export async function releasePartial(tmpDir: string, hex: string, ownPath: string): Promise<void> {
  try {
    const st = await fsp.stat(ownPath);
    if (st.size === 0) {
      await fsp.rm(ownPath, { force: true });
      return;
    }
    await fsp.rename(ownPath, path.join(tmpDir, resumablePartialName(hex)));
  } catch {
    await fsp.rm(ownPath, { force: true }).catch(() => {});
  }
}

/** sha256 state over the first `length` bytes of a file. */
export async function hashFile(file: string, length: number): Promise<Hash> {
  const hash = createHash('sha256');
  if (length <= 0) return hash;
  await new Promise<void>((resolve, reject) => {
    const s = createReadStream(file, { start: 0, end: length - 1 });
    s.on('data', (c) => hash.update(c as Buffer));
    s.on('error', reject);
    s.on('end', resolve);
  });
  return hash;
}

/** fsync + rename into place. */
export async function publishFile(from: string, to: string): Promise<void> {
  try {
    const fh = await fsp.open(from, 'r');
    try {
      await fh.sync();
    } finally {
      await fh.close();
    }
    await fsp.rename(from, to);
  } catch (err) {
    throw storageError(err, `cannot publish blob ${path.basename(to)} into ${path.dirname(to)}`);
  }
}

/** Writes a small blob (manifest, config) via tmpDir + rename. */
export async function writeBlobAtomic(tmpDir: string, dest: string, data: Buffer): Promise<void> {
  const tmp = path.join(tmpDir, `${path.basename(dest)}.${process.pid}-${++seq}.tmp`);
  try {
    await fsp.writeFile(tmp, data);
  } catch (err) {
    await fsp.rm(tmp, { force: true }).catch(() => {});
    throw storageError(err, `cannot write ${tmp}`);
  }
  await publishFile(tmp, dest).catch(async (err) => {
    await fsp.rm(tmp, { force: true }).catch(() => {});
    throw err;
  });
}
