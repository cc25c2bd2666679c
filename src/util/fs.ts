import fs from 'node:fs';
import path from 'node:path';
import { BoxliteError, StorageError } from '../errors/index.js';

/**
 * The one translation of a Node fs (errno) failure: a StorageError saying what was being
 * done to which path, with the errno error as `cause` and a hint for the common codes.
 * A BoxliteError passes unchanged (it was translated where it arose).
 */
export function storageError(err: unknown, what: string): BoxliteError {
  if (err instanceof BoxliteError) return err;
  const code = (err as NodeJS.ErrnoException | null)?.code;
  const hint =
    code === 'ENOSPC' ? ' (no space left on device)'
    : code === 'EACCES' || code === 'EPERM' ? ' (permission denied)'
    : code === 'EROFS' ? ' (read-only file system)'
    : code === 'ENOTDIR' ? ' (a path component is not a directory)'
    : '';
  return new StorageError(`${what}: ${(err as Error | null)?.message ?? String(err)}${hint}`, { cause: err });
}

/** True for an error raised by a Node fs / syscall (has an errno code such as ENOENT). */
export function isErrnoError(err: unknown): err is NodeJS.ErrnoException {
  const e = err as { code?: unknown; syscall?: unknown; errno?: unknown } | null;
  return typeof e?.code === 'string' && /^E[A-Z0-9]+$/.test(e.code) && (typeof e.syscall === 'string' || typeof e.errno === 'number');
}

/** Temp file + rename: readers see the old content or the new, never half. Failures are StorageError. */
export function writeFileAtomic(file: string, data: string | Buffer): void {
  const tmp = path.join(path.dirname(file), `.${path.basename(file)}.${process.pid}.${Date.now()}.tmp`);
  try {
    fs.writeFileSync(tmp, data);
    fs.renameSync(tmp, file);
  } catch (err) {
    removeQuietly(tmp);
    throw storageError(err, `cannot write ${file}`);
  }
}

/** Best-effort cleanup on a failure path: the failure being reported matters, not this one. */
export function removeQuietly(p: string): void {
  try {
    fs.rmSync(p, { recursive: true, force: true });
  } catch {
    // e.g. ENOTDIR: the directory itself is unusable, so nothing was left behind
  }
}

/** Last `lines` lines of a text file ('' when it does not exist); reads at most 64 KiB. */
export function readTail(file: string, lines: number): string {
  let fd: number;
  try {
    fd = fs.openSync(file, 'r');
  } catch {
    return '';
  }
  try {
    const size = fs.fstatSync(fd).size;
    const len = Math.min(size, 64 * 1024);
    const buf = Buffer.alloc(len);
    fs.readSync(fd, buf, 0, len, size - len);
    return buf.toString('utf8').replace(/\r/g, '').trimEnd().split('\n').slice(-lines).join('\n');
  } catch {
    // Only ever used to enrich another error's message: a log that cannot be read adds nothing.
    return '';
  } finally {
    fs.closeSync(fd);
  }
}

export function readJson<T>(file: string): T | undefined {
  try {
    return JSON.parse(fs.readFileSync(file, 'utf8')) as T;
  } catch {
    return undefined;
  }
}

/**
 * Kernel start time of a process (clock ticks since boot, /proc/<pid>/stat field 22), or
 * undefined where /proc is not available. With the pid it names one process for good:
 * a pid alone can be reused after a crash or a reboot.
 */
export function processStartTime(pid: number): string | undefined {
  try {
    const stat = fs.readFileSync(`/proc/${pid}/stat`, 'utf8');
    return stat.slice(stat.lastIndexOf(')') + 2).split(' ')[19];
  } catch {
    return undefined;
  }
}

/** True while the process runs (and, when `startTime` is known, is the same process). */
export function isProcessAlive(pid: number, startTime?: string): boolean {
  try {
    process.kill(pid, 0);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== 'EPERM') return false;
  }
  if (startTime === undefined || !fs.existsSync('/proc/self/stat')) return true;
  return processStartTime(pid) === startTime;
}
