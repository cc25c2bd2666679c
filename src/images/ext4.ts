// Builds an ext4 image from a staged rootfs without privileges:
//   1. `mke2fs -t ext4 -d <staging>` copies names, contents, symlinks, hard
//      links and mtimes (the host copy carries only those);
//   2. one `debugfs -w -f <script>` run writes the real metadata from the
//      manifest: owner, mode (incl. setuid/setgid/sticky), device nodes and
//      fifos (placeholder removed, `mknod` in its place) and xattrs.
// debugfs exits 0 even when a command fails, so its stderr is checked too.

import * as fsp from 'node:fs/promises';
import * as path from 'node:path';
import { BoxliteError, StorageError } from '../errors/index.js';
import type { EntryMeta, StagedRootfs } from './layers.js';
import { describeFailure, runTool } from './tools.js';

export interface BuildExt4Options {
  /** Filesystem label (default "boxlite-root"). */
  label?: string;
  /** Filesystem UUID, for reproducible images (default: random). */
  uuid?: string;
  /** Free space to leave on top of the content (default 128 MiB). */
  freeBytes?: number;
  /** Scratch directory for the debugfs script and xattr values (default: next to outPath). */
  workDir?: string;
  /** Per-tool timeout (default 10 min). */
  timeoutMs?: number;
  /** Start from this size / inode count instead of the estimate (still grown if the content does not fit). */
  sizeBytes?: number;
  inodes?: number;
}

export interface Ext4BuildResult {
  path: string;
  sizeBytes: number;
  inodeCount: number;
  mke2fsMs: number;
  debugfsMs: number;
  /** Number of debugfs commands run. */
  debugfsCommands: number;
  /** mke2fs runs needed (more than 1 when the first size was too small). */
  mke2fsAttempts: number;
  /** Xattrs skipped because ext4 has no such namespace (e.g. "com.apple.*"). */
  skippedXattrs: string[];
}

const BLOCK = 4096;
const INODE_SIZE = 256;
const MiB = 1024 * 1024;
const DEFAULT_FREE = 128 * MiB;
const MAX_ATTEMPTS = 3;

const TYPE_BITS: Record<EntryMeta['type'], number> = {
  file: 0o100000,
  dir: 0o040000,
  symlink: 0o120000,
  char: 0o020000,
  block: 0o060000,
  fifo: 0o010000,
};

const EXT4_XATTR = /^(user|trusted|security)\.|^system\.posix_acl_(access|default)$/;

/** Builds `outPath` (overwritten) from `staged`. Failures are StorageError; a failed build leaves no file. */
export async function buildExt4(staged: StagedRootfs, outPath: string, opts: BuildExt4Options = {}): Promise<Ext4BuildResult> {
  const out = path.resolve(outPath);
  const work = opts.workDir ?? `${out}.work`;
  const timeoutMs = opts.timeoutMs ?? 10 * 60_000;
  const estimate = estimateSize(staged.entries, opts.freeBytes ?? DEFAULT_FREE);
  await fsp.mkdir(work, { recursive: true, mode: 0o700 });
  try {
    const { script, commands, skippedXattrs } = await writeDebugfsScript(staged.entries, work);

    let sizeBytes = roundUp(opts.sizeBytes ?? estimate.bytes, MiB);
    let inodeCount = opts.inodes ?? estimate.inodes;
    let mke2fsMs = 0;
    let attempts = 0;
    for (let attempt = 1; ; attempt++) {
      attempts = attempt;
      await fsp.rm(out, { force: true });
      const t0 = performance.now();
      const args = [
        '-q',
        '-F',
        '-t', 'ext4',
        '-b', String(BLOCK),
        '-I', String(INODE_SIZE),
        '-N', String(inodeCount),
        '-m', '0',
        '-L', opts.label ?? 'boxlite-root',
        // lazy_itable_init=0: the guest kernel must not zero inode tables into
        // every box's overlay. lazy_journal_init=1 is safe: the file is new and
        // sparse, so the journal already reads as zeros.
        '-E', ['root_owner=0:0', 'lazy_itable_init=0', 'lazy_journal_init=1', ...(opts.uuid ? [`hash_seed=${opts.uuid}`] : [])].join(','),
        ...(opts.uuid ? ['-U', opts.uuid] : []),
        '-d', staged.root,
        out,
        String(sizeBytes / BLOCK),
      ];
      const r = await runTool('mke2fs', args, { timeoutMs });
      mke2fsMs += performance.now() - t0;
      if (r.code === 0 && !r.signal) break;
      // The estimate is generous, but mke2fs -d placement is not ours to predict: grow and retry.
      const full = /could not allocate|no space left/i.test(r.stderr);
      if (!full || attempt >= MAX_ATTEMPTS) {
        throw new StorageError(`failed to build ext4 image ${out}: ${describeFailure('mke2fs', r)}`);
      }
      sizeBytes = Math.max(roundUp(sizeBytes * 2, MiB), estimate.bytes);
      inodeCount = Math.max(inodeCount * 2, estimate.inodes);
    }

    const t1 = performance.now();
    const r = await runTool('debugfs', ['-w', '-f', script, out], { timeoutMs, captureStdout: false });
    const debugfsMs = performance.now() - t1;
    // stderr carries the version banner plus one line per failed command.
    const errors = r.stderr
      .split('\n')
      .map((l) => l.trim())
      .filter((l) => l && !/^debugfs \d+\.\d+/.test(l));
    if (r.signal || r.code !== 0 || errors.length > 0) {
      const shown = errors.slice(0, 8).join('; ');
      const more = errors.length > 8 ? ` (+${errors.length - 8} more)` : '';
      throw new StorageError(`failed to set metadata in ext4 image ${out}: debugfs: ${shown || describeFailure('debugfs', r)}${more}`);
    }
    return {
      path: out,
      sizeBytes,
      inodeCount,
      mke2fsMs: Math.round(mke2fsMs),
      debugfsMs: Math.round(debugfsMs),
      debugfsCommands: commands,
      mke2fsAttempts: attempts,
      skippedXattrs,
    };
  } catch (err) {
    await fsp.rm(out, { force: true }).catch(() => undefined);
    if (err instanceof BoxliteError) throw err;
    throw new StorageError(`failed to build ext4 image ${out}: ${(err as Error).message}`, { cause: err });
  } finally {
    await fsp.rm(work, { recursive: true, force: true }).catch(() => undefined);
  }
}

/** Size and inode count for the content plus `freeBytes`, with room for ext4's own metadata. */
export function estimateSize(entries: Map<string, EntryMeta>, freeBytes: number): { bytes: number; inodes: number } {
  const seen = new Set<EntryMeta>();
  const dirBytes = new Map<string, number>();
  let blocks = 0;
  for (const [p, meta] of entries) {
    if (p !== '/') {
      const parent = path.posix.dirname(p);
      const nameLen = Buffer.byteLength(path.posix.basename(p));
      dirBytes.set(parent, (dirBytes.get(parent) ?? 0) + 8 + roundUp(nameLen, 4));
    }
    if (seen.has(meta)) continue;
    seen.add(meta);
    if (meta.type === 'file') {
      const b = Math.ceil(meta.size / BLOCK);
      // Extent tree blocks for big files (an extent covers at most 128 MiB).
      blocks += b + (b > 4 * 32768 ? Math.ceil(b / (32768 * 340)) + 1 : 0);
    } else if (meta.type === 'symlink' && Buffer.byteLength(meta.linkTarget ?? '') >= 60) {
      blocks += 1;
    }
    if (meta.xattrs) {
      let x = 0;
      for (const [k, v] of meta.xattrs) x += 16 + roundUp(Buffer.byteLength(k), 4) + roundUp(v.length, 4);
      if (x > 96) blocks += Math.ceil(x / BLOCK);
    }
  }
  for (const [p, meta] of entries) {
    if (meta.type !== 'dir') continue;
    const b = Math.max(1, Math.ceil(((dirBytes.get(p) ?? 0) + 24) / (BLOCK * 0.7)));
    blocks += b + (b > 1 ? 1 : 0);
  }
  const contentBytes = blocks * BLOCK;
  // +11 reserved inodes, lost+found; 30% head-room so small trees with many files fit.
  let inodes = Math.ceil(seen.size * 1.3) + 64;
  const provisional = contentBytes * 1.1 + freeBytes;
  // Keep ext4's default ratio (one inode per 16 KiB) so a grown filesystem gets inodes too.
  inodes = Math.max(inodes, Math.ceil(provisional / 16384));
  const metaBytes = inodes * INODE_SIZE + Math.ceil(provisional * 0.02) + 4 * MiB;
  const beforeJournal = provisional + metaBytes;
  const total = beforeJournal + journalBytes(beforeJournal / BLOCK);
  return { bytes: roundUp(Math.ceil(total), MiB), inodes };
}

function journalBytes(blocks: number): number {
  const jb =
    blocks < 32768 ? 1024 : blocks < 262144 ? 4096 : blocks < 524288 ? 8192 : blocks < 4194304 ? 16384 : blocks < 8388608 ? 32768 : 65536;
  return jb * BLOCK;
}

function roundUp(n: number, to: number): number {
  return Math.ceil(n / to) * to;
}

/** Quotes a path or word for debugfs' parser (ss): double quotes, `""` for a literal quote. */
function q(s: string): string {
  if (/[\n\r\0]/.test(s)) throw new StorageError(`cannot represent path with a line break in ext4 metadata script: ${JSON.stringify(s)}`);
  return `"${s.replace(/"/g, '""')}"`;
}

async function writeDebugfsScript(
  entries: Map<string, EntryMeta>,
  work: string,
): Promise<{ script: string; commands: number; skippedXattrs: string[] }> {
  const groups = new Map<EntryMeta, string[]>();
  for (const [p, meta] of entries) {
    const g = groups.get(meta);
    if (g) g.push(p);
    else groups.set(meta, [p]);
  }
  const lines: string[] = [];
  const skippedXattrs: string[] = [];
  let xattrFiles = 0;
  for (const [meta, paths] of groups) {
    const primary = paths[0]!;
    const others = paths.slice(1);
    const isNode = meta.type === 'char' || meta.type === 'block' || meta.type === 'fifo';
    if (isNode) {
      // The host has an empty placeholder file (sharing an inode if hard-linked): replace it.
      for (const p of paths) lines.push(`rm ${q(p)}`);
      const spec = meta.type === 'fifo' ? 'p' : `${meta.type === 'char' ? 'c' : 'b'} ${meta.devMajor ?? 0} ${meta.devMinor ?? 0}`;
      lines.push(`cd ${q(path.posix.dirname(primary))}`, `mknod ${q(path.posix.basename(primary))} ${spec}`, 'cd /');
    } else if (meta.type === 'symlink' && others.length > 0) {
      // mke2fs -d keeps hard links between regular files only; relink symlinks here.
      for (const p of others) lines.push(`rm ${q(p)}`);
    }
    if ((isNode || meta.type === 'symlink') && others.length > 0) {
      // debugfs ln does not count links; set the count once all names exist.
      for (const p of others) lines.push(`ln ${q(primary)} ${q(p)}`);
      lines.push(`sif ${q(primary)} links_count ${paths.length}`);
    }
    if (isNode || primary === '/') {
      // mke2fs -d takes times from the host copy, except for the root and the nodes made here.
      for (const f of ['mtime', 'atime', 'ctime']) lines.push(`sif ${q(primary)} ${f} @${meta.mtime}`);
    }
    if (meta.type !== 'symlink') {
      lines.push(`sif ${q(primary)} mode 0${(TYPE_BITS[meta.type] | (meta.mode & 0o7777)).toString(8)}`);
    }
    lines.push(`sif ${q(primary)} uid ${meta.uid}`, `sif ${q(primary)} gid ${meta.gid}`);
    if (meta.xattrs) {
      for (const [name, value] of meta.xattrs) {
        if (!EXT4_XATTR.test(name)) {
          skippedXattrs.push(`${primary}: ${name}`);
          continue;
        }
        const file = path.join(work, `xattr-${xattrFiles++}`);
        await fsp.writeFile(file, value, { mode: 0o600 });
        lines.push(`ea_set -f ${q(file)} ${q(primary)} ${q(name)}`);
      }
    }
  }
  const script = path.join(work, 'debugfs.script');
  await fsp.writeFile(script, lines.join('\n') + '\n', { mode: 0o600 });
  return { script, commands: lines.length, skippedXattrs };
}
