// Locating and running the external tools of the image layer (mke2fs,
// debugfs, qemu-img). mke2fs and debugfs live in /sbin or /usr/sbin, which an
// ordinary user's PATH on Debian does not contain, so we look there too.

import { spawn } from 'node:child_process';
import { accessSync, constants } from 'node:fs';
import * as path from 'node:path';
import { StorageError } from '../errors/index.js';

const EXTRA_DIRS = [
  '/usr/sbin',
  '/sbin',
  '/usr/local/sbin',
  '/opt/homebrew/opt/e2fsprogs/sbin',
  '/usr/local/opt/e2fsprogs/sbin',
];

const HINTS: Record<string, string> = {
  mke2fs: 'install e2fsprogs',
  debugfs: 'install e2fsprogs',
  e2fsck: 'install e2fsprogs',
  'qemu-img': 'install qemu-utils (Debian) or qemu',
  'qemu-io': 'install qemu-utils (Debian) or qemu',
};

const cache = new Map<string, string>();

/** Absolute path of `name` from PATH or the sbin directories; StorageError if absent. */
export function findTool(name: string): string {
  // Keyed by PATH too: a caller that changes PATH gets the tool that PATH names.
  const key = `${name}\0${process.env.PATH ?? ''}`;
  const hit = cache.get(key);
  if (hit) return hit;
  const dirs = [...(process.env.PATH ?? '').split(path.delimiter).filter(Boolean), ...EXTRA_DIRS];
  for (const dir of dirs) {
    const candidate = path.join(dir, name);
    try {
      accessSync(candidate, constants.X_OK);
      cache.set(key, candidate);
      return candidate;
    } catch {
      // next
    }
  }
  throw new StorageError(`${name} not found in PATH or ${EXTRA_DIRS.join(', ')} (${HINTS[name] ?? 'install it'})`);
}

export interface ToolResult {
  code: number | null;
  signal: NodeJS.Signals | null;
  stdout: string;
  stderr: string;
}

export interface RunOptions {
  timeoutMs?: number;
  /** Keep stdout (default true). debugfs echoes every command, which we do not need. */
  captureStdout?: boolean;
}

/** Runs a tool to completion with LC_ALL=C. Never throws for a non-zero exit; spawn failures are StorageError. */
export function runTool(name: string, args: string[], opts: RunOptions = {}): Promise<ToolResult> {
  const bin = findTool(name);
  return new Promise((resolve, reject) => {
    const child = spawn(bin, args, {
      stdio: ['ignore', opts.captureStdout === false ? 'ignore' : 'pipe', 'pipe'],
      env: { ...process.env, LC_ALL: 'C', LANG: 'C' },
    });
    const out: Buffer[] = [];
    const err: Buffer[] = [];
    let errBytes = 0;
    child.stdout?.on('data', (d: Buffer) => out.push(d));
    child.stderr!.on('data', (d: Buffer) => {
      // Bounded: a runaway tool must not exhaust memory.
      if (errBytes < 1 << 20) err.push(d);
      errBytes += d.length;
    });
    const timer =
      opts.timeoutMs !== undefined
        ? setTimeout(() => {
            child.kill('SIGKILL');
          }, opts.timeoutMs)
        : null;
    child.on('error', (e) => {
      if (timer) clearTimeout(timer);
      reject(new StorageError(`failed to run ${bin}: ${e.message}`, { cause: e }));
    });
    child.on('close', (code, signal) => {
      if (timer) clearTimeout(timer);
      resolve({
        code,
        signal,
        stdout: Buffer.concat(out).toString('utf8'),
        stderr: Buffer.concat(err).toString('utf8'),
      });
    });
  });
}

/** Short description of a failed run for error messages. */
export function describeFailure(name: string, r: ToolResult): string {
  const status = r.signal ? `killed by ${r.signal}` : `exit code ${r.code}`;
  const detail = r.stderr.trim().split('\n').slice(-8).join('; ');
  return `${name} failed (${status})${detail ? `: ${detail}` : ''}`;
}
