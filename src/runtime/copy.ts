// box.copyIn / box.copyOut: files move as a tar stream through an execution of the agent's own
// busybox (EXEC flag TOOL), running as the box's user, so copies need no tar in the image and the
// image cannot substitute one. The host side packs with tar-stream, and extracts with its own
// checks: every entry stays inside the destination and nothing is written through a symlink.
import fs from 'node:fs';
import path from 'node:path';
import { Readable, Transform } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import tar from 'tar-stream';
import { BoxliteError, ConfigError, ExecutionError, ResourceExhaustedError } from '../errors/index.js';
import type { Execution } from './execution.js';

/** `CopyOptions` of @boxlite-ai/boxlite 0.10. */
export interface CopyOptions {
  /** Copy directories with their contents (default true); false makes a directory a ConfigError. */
  recursive?: boolean;
  /** Replace existing files (default true). */
  overwrite?: boolean;
  /** Copy what symlinks point to instead of the links (default false). */
  followSymlinks?: boolean;
  /** A directory lands as DEST/<its name> (default true); false copies its contents into DEST. */
  includeParent?: boolean;
  /**
   * BoxLite extension (copyOut only): stop the copy once the box's archive passes this many
   * bytes (headers included) or entries. The box's tar is killed and CopyLimitError thrown; what
   * was written so far stays (a caller extracting into a staging directory removes it).
   */
  maxBytes?: number;
  maxEntries?: number;
}

interface Resolved {
  recursive: boolean;
  overwrite: boolean;
  followSymlinks: boolean;
  includeParent: boolean;
}

function resolve(o?: CopyOptions): Resolved {
  return {
    recursive: o?.recursive ?? true,
    overwrite: o?.overwrite ?? true,
    followSymlinks: o?.followSymlinks ?? false,
    includeParent: o?.includeParent ?? true,
  };
}

/** What copy needs of a box (Box implements it). */
export interface CopyTarget {
  execTool(tool: string, args: string[], workingDir?: string): Promise<Execution>;
  defaultUser(): string;
}

const TOOLBOX = 'busybox';

function isRoot(user: string): boolean {
  const u = user.split(':')[0] ?? '';
  return u === '' || u === '0' || u === 'root';
}

/** Guest paths are absolute, normalized POSIX paths. */
function guestPath(p: string, what: string): string {
  if (typeof p !== 'string' || !p.startsWith('/') || p.includes('\0')) {
    throw new ConfigError(`${what} must be an absolute path in the box, got ${JSON.stringify(p)}`);
  }
  return path.posix.normalize(p);
}

async function collect(ex: Execution, which: 'stdout' | 'stderr'): Promise<Buffer> {
  const s = which === 'stdout' ? await ex.stdout() : await ex.stderr();
  const parts: Buffer[] = [];
  for (;;) {
    const b = await s.nextBuffer();
    if (b === null) return Buffer.concat(parts);
    parts.push(b);
  }
}

/** Runs a toolbox command to its end and returns its output. */
async function runTool(box: CopyTarget, args: string[]): Promise<{ code: number; stdout: string; stderr: string }> {
  const ex = await box.execTool(TOOLBOX, args);
  await (await ex.stdin()).close();
  const [out, err] = await Promise.all([collect(ex, 'stdout'), collect(ex, 'stderr')]);
  const { exitCode } = await ex.wait();
  return { code: exitCode, stdout: out.toString('utf8'), stderr: err.toString('utf8') };
}

export type PathKind = 'dir' | 'none' | 'other';

/**
 * What each guest path is, in one toolbox run (shell builtins only, so nothing of the image is
 * used). `nofollow`: a symlink counts as 'other' even when it points at a directory.
 */
async function guestKinds(box: CopyTarget, paths: string[], nofollow = false): Promise<PathKind[]> {
  const r = await runTool(box, [
    'sh',
    '-c',
    'nf=$1; shift; for p; do if [ "$nf" = 1 ] && [ -L "$p" ]; then echo other; elif [ -d "$p" ]; then echo dir; ' +
      'elif [ -e "$p" ] || [ -L "$p" ]; then echo other; else echo none; fi; done',
    'sh',
    nofollow ? '1' : '0',
    ...paths,
  ]);
  const kinds = r.stdout.split('\n').filter(Boolean);
  if (r.code !== 0 || kinds.length !== paths.length || kinds.some((k) => !['dir', 'none', 'other'].includes(k))) {
    throw new ExecutionError(`copy: cannot inspect ${paths.join(', ')} in the box: ${r.stderr.trim() || `exit ${r.code}`}`);
  }
  return kinds as PathKind[];
}

function hostKind(p: string): PathKind {
  try {
    return fs.statSync(p).isDirectory() ? 'dir' : 'other'; // the destination itself may be a symlink the caller chose
  } catch {
    return 'none';
  }
}

/** Where a copy lands: the archive is unpacked in `dir` (created when `create`), its root entry named `top`. */
export interface Placement {
  dir: string;
  /** Name of the source's root entry under `dir`; '' = the source's contents go straight into `dir`. */
  top: string;
  create: boolean;
}

/**
 * The reference's placement rules (same both ways), for POSIX paths:
 * - a directory lands as DEST/<its name> with includeParent (the default), whether DEST exists
 *   or not (DEST is created); without it, its contents go into DEST;
 * - a file (or a symlink copied as a link) lands in DEST when DEST is a directory or ends in '/'
 *   (created then), else it becomes DEST itself, its parent directories created.
 */
export function placeCopy(
  source: { name: string; isDir: boolean },
  dest: string,
  destKind: PathKind,
  o: Pick<Resolved, 'includeParent'>,
  what: string,
): Placement {
  const slash = dest.length > 1 && dest.endsWith('/');
  const d = slash ? dest.replace(/\/+$/, '') || '/' : dest;
  if (source.isDir) {
    if (destKind === 'other') throw new ConfigError(`${what}: cannot copy directory ${source.name} onto file ${d}`);
    return { dir: d, top: o.includeParent ? source.name : '', create: destKind === 'none' };
  }
  if (slash || destKind === 'dir') {
    if (destKind === 'other') throw new ConfigError(`${what}: ${d} exists and is not a directory`);
    return { dir: d, top: source.name, create: destKind === 'none' };
  }
  if (d === '/') throw new ConfigError(`${what}: bad destination /`);
  return { dir: path.posix.dirname(d), top: path.posix.basename(d), create: true };
}

function tarError(what: string, stderr: string, code: number): ExecutionError {
  const msg = stderr.trim().split('\n').filter(Boolean).join('; ') || `tar exited with ${code}`;
  return new ExecutionError(`${what}: ${msg}`, { exitCode: code });
}

// ---------------------------------------------------------------------------------------------
// copyIn

/** Packs hostPath as `top` (or its contents at the archive root when top is ''). */
async function packTree(pack: tar.Pack, hostPath: string, top: string, o: Resolved): Promise<void> {
  const entry = (h: Parameters<tar.Pack["entry"]>[0], data?: Buffer | Readable) =>
    new Promise<void>((res, rej) => {
      const cb = (err?: Error | null) => (err ? rej(err) : res());
      if (data === undefined) {
        pack.entry(h, cb);
      } else if (Buffer.isBuffer(data)) {
        pack.entry(h, data, cb);
      } else {
        const w = pack.entry(h, cb);
        data.on('error', rej);
        data.pipe(w);
      }
    });
  const owner = { uid: 0, gid: 0, uname: '', gname: '' };
  const walk = async (abs: string, name: string, depth: number): Promise<void> => {
    const st = o.followSymlinks ? await fs.promises.stat(abs) : await fs.promises.lstat(abs);
    const base = { ...owner, mode: st.mode & 0o7777, mtime: st.mtime };
    if (st.isSymbolicLink()) {
      if (name) await entry({ ...base, name, type: 'symlink', linkname: await fs.promises.readlink(abs) });
    } else if (st.isFile()) {
      if (name) await entry({ ...base, name, type: 'file', size: st.size }, fs.createReadStream(abs));
    } else if (st.isDirectory()) {
      if (depth > 256) throw new ConfigError(`copyIn: ${abs}: directories nested too deep (a symlink loop?)`);
      if (name) await entry({ ...base, name, type: 'directory' });
      for (const child of (await fs.promises.readdir(abs)).sort()) {
        await walk(path.join(abs, child), name ? `${name}/${child}` : child, depth + 1);
      }
    }
    // sockets, fifos, devices: skipped (docker cp does the same for sockets)
  };
  await walk(hostPath, top, 0);
}

export async function copyIn(box: CopyTarget, hostPath: string, guestDest: string, options?: CopyOptions): Promise<void> {
  const o = resolve(options);
  const dest = guestPath(guestDest, 'copyIn destination');
  let st: fs.Stats;
  try {
    st = o.followSymlinks ? fs.statSync(hostPath) : fs.lstatSync(hostPath);
  } catch (err) {
    throw new ConfigError(`copyIn: host path ${hostPath} does not exist or cannot be read: ${(err as Error).message}`);
  }
  const isDir = st.isDirectory();
  if (isDir && !o.recursive) throw new ConfigError(`copyIn: ${hostPath} is a directory and recursive is false`);
  if (!isDir && !st.isFile() && !st.isSymbolicLink()) throw new ConfigError(`copyIn: ${hostPath} is not a file, directory or symlink`);

  const bare = dest.length > 1 ? dest.replace(/\/+$/, '') || '/' : dest;
  const [kind, parentKind] = await guestKinds(box, [bare, path.posix.dirname(bare)]);
  const place = placeCopy({ name: path.basename(path.resolve(hostPath)), isDir }, dest, kind!, o, 'copyIn');
  // The archive unpacks in DEST itself or, for a file onto a new name, in DEST's parent: create it only when missing.
  if (place.create && (place.dir === bare ? kind : parentKind) !== 'dir') {
    const r = await runTool(box, ['mkdir', '-p', '--', place.dir]);
    if (r.code !== 0) throw tarError(`copyIn: cannot create ${place.dir} in the box`, r.stderr, r.code);
  }
  const dir = place.dir;
  const top = place.top;

  const args = ['tar', '-x', '-f', '-', '-C', dir];
  if (isRoot(box.defaultUser())) args.push('-o'); // files belong to the exec user, never to host ids
  if (!o.overwrite) args.push('-k');
  const ex = await box.execTool(TOOLBOX, args);
  const stdin = await ex.stdin();
  const outputs = Promise.all([collect(ex, 'stdout'), collect(ex, 'stderr')]);
  const pack = tar.pack();
  const packing = packTree(pack, hostPath, top, o).then(
    () => pack.finalize(),
    (err: unknown) => {
      pack.destroy(err as Error);
      throw err;
    },
  );
  let sendError: unknown;
  try {
    for await (const chunk of pack) await stdin.write(chunk as Buffer);
  } catch (err) {
    sendError = err;
  }
  await stdin.close().catch(() => undefined);
  const packError = await packing.then(
    () => undefined,
    (e: unknown) => e,
  );
  if (packError || sendError) await ex.kill().catch(() => undefined);
  const [, stderr] = await outputs;
  const { exitCode } = await ex.wait();
  if (packError) throw packError instanceof BoxliteError ? packError : new ConfigError(`copyIn: ${(packError as Error).message}`);
  if (exitCode !== 0) throw tarError(`copyIn to ${dest} failed`, stderr.toString('utf8'), exitCode);
  if (sendError) throw sendError;
}

// ---------------------------------------------------------------------------------------------
// copyOut: the host-side extractor

export interface ExtractOptions {
  overwrite: boolean;
  /** Archive name (normalized, no trailing '/') → path relative to base, '' to skip, or null to use it as is. */
  map?: (name: string, type: string) => string | null;
  /** How the destination is named in errors (default: base). */
  label?: string;
  /** Stop past this many archive bytes, headers and padding included (CopyLimitError). */
  maxBytes?: number;
  /** Stop past this many archive entries (CopyLimitError). */
  maxEntries?: number;
  /**
   * Directories keep u+rwx: for a staging tree that the process must still read and remove
   * whatever modes the archive named (as non-root a 0o500 or 0o000 directory holding files
   * cannot be emptied, nor a 0o000 one read).
   */
  ownerAccess?: boolean;
}

/** A copy went past ExtractOptions.maxBytes / maxEntries; the producer has been stopped. */
export class CopyLimitError extends ResourceExhaustedError {
  constructor(
    message: string,
    readonly limit: 'bytes' | 'entries',
    readonly max: number,
  ) {
    super(message);
    this.name = 'CopyLimitError';
  }
}

/** Header fields the extractor reads (tar-stream's Headers). */
export type EntryHeader = Pick<tar.Header, 'name' | 'type' | 'mode' | 'mtime' | 'linkname'>;

/** Mode bits kept from an archive: permissions and sticky, never setuid/setgid. */
export const modeOf = (h: Pick<tar.Header, 'mode'>, type?: string | null): number =>
  (h.mode ?? (type === 'directory' ? 0o755 : 0o644)) & 0o1777;

/**
 * Writes archive entries under `base` without ever following a symlink below it: names are
 * relative and free of '..', every existing parent component is lstat-ed and must be a real
 * directory, symlink entries are created as symlinks and never written through. Directories are
 * created owner-writable and get their modes in finish(), so an entry can land in a 0o500 one.
 */
export class SafeExtractor {
  private readonly dirModes: Array<[string, number]> = [];
  private readonly label: string;

  constructor(
    private readonly base: string,
    private readonly opts: ExtractOptions,
  ) {
    this.label = opts.label ?? base;
  }

  private unsafe(name: string, why: string): ExecutionError {
    return new ExecutionError(`copyOut: archive entry ${JSON.stringify(name)} would leave ${this.label} (${why})`);
  }

  async add(h: EntryHeader, body: AsyncIterable<unknown>): Promise<void> {
    const { base, opts } = this;
    const raw = h.name;
    if (raw.startsWith('/') || raw.includes('\0')) throw this.unsafe(raw, 'absolute name');
    const parts0 = raw.split('/').filter((p) => p !== '' && p !== '.');
    if (parts0.includes('..')) throw this.unsafe(raw, "'..' in the name");
    const name = parts0.join('/');
    if (!name) return;
    let rel = opts.map ? opts.map(name, h.type ?? 'file') : name;
    if (rel === null) rel = name;
    if (rel === '') return;
    const parts = rel.split('/').filter((p) => p !== '' && p !== '.');
    if (parts.includes('..') || path.isAbsolute(rel) || parts.length === 0) throw this.unsafe(raw, 'bad name');
    // Every parent: an existing real directory, or created here.
    let cur = base;
    for (const p of parts.slice(0, -1)) {
      cur = path.join(cur, p);
      let st: fs.Stats | undefined;
      try {
        st = fs.lstatSync(cur);
      } catch {
        fs.mkdirSync(cur, { mode: 0o755 });
        continue;
      }
      if (st.isSymbolicLink()) throw this.unsafe(raw, `${path.relative(base, cur)} is a symlink`);
      if (!st.isDirectory()) throw this.unsafe(raw, `${path.relative(base, cur)} is not a directory`);
    }
    const target = path.join(cur, parts[parts.length - 1]!);
    if (path.relative(base, target).startsWith('..')) throw this.unsafe(raw, 'outside');
    let existing: fs.Stats | undefined;
    try {
      existing = fs.lstatSync(target);
    } catch {
      existing = undefined;
    }
    const mode = modeOf(h, h.type);
    const refuse = () =>
      new ExecutionError(`copyOut: ${path.relative(base, target) || target} already exists in ${this.label} and overwrite is false`);
    switch (h.type) {
      case 'directory': {
        if (existing && !existing.isDirectory()) {
          if (!opts.overwrite) throw refuse();
          fs.rmSync(target, { recursive: true, force: true });
          existing = undefined;
        }
        if (!existing) fs.mkdirSync(target, { mode: 0o700 });
        this.dirModes.push([target, opts.ownerAccess ? mode | 0o700 : mode]);
        break;
      }
      case 'file':
      case 'contiguous-file': {
        if (existing) {
          if (!opts.overwrite) throw refuse();
          if (existing.isDirectory()) throw new ExecutionError(`copyOut: cannot overwrite directory ${target} with a file`);
          fs.unlinkSync(target); // a symlink is removed, never written through
        }
        // 'wx' = O_CREAT|O_EXCL: fails rather than follow anything that appeared meanwhile.
        const fh = await fs.promises.open(target, 'wx', 0o600);
        try {
          for await (const chunk of body) await fh.write(chunk as Buffer);
          await fh.chmod(mode);
        } finally {
          await fh.close();
        }
        if (h.mtime) fs.utimesSync(target, h.mtime, h.mtime);
        break;
      }
      case 'symlink': {
        if (existing) {
          if (!opts.overwrite) throw refuse();
          if (existing.isDirectory()) throw new ExecutionError(`copyOut: cannot overwrite directory ${target} with a symlink`);
          fs.unlinkSync(target);
        }
        fs.symlinkSync(h.linkname ?? '', target);
        break;
      }
      case 'link': {
        // A hard link to an earlier entry: it must resolve inside base with no symlink on the way.
        const lraw = h.linkname ?? '';
        const lparts0 = lraw.split('/').filter((p) => p !== '' && p !== '.');
        if (lraw.startsWith('/') || lparts0.includes('..')) throw this.unsafe(raw, 'hard link target outside');
        let lrel = opts.map ? opts.map(lparts0.join('/'), 'file') : lparts0.join('/');
        if (lrel === null) lrel = lparts0.join('/');
        const lparts = lrel.split('/').filter((p) => p !== '' && p !== '.');
        if (!lparts.length || lparts.includes('..')) throw this.unsafe(raw, 'hard link target outside');
        let lc = base;
        for (const p of lparts) {
          lc = path.join(lc, p);
          const st = fs.lstatSync(lc);
          if (st.isSymbolicLink()) throw this.unsafe(raw, 'hard link through a symlink');
        }
        if (!fs.lstatSync(lc).isFile()) throw this.unsafe(raw, 'hard link to a non-file');
        if (existing) {
          if (!opts.overwrite) throw refuse();
          fs.unlinkSync(target);
        }
        fs.linkSync(lc, target);
        break;
      }
      default:
        break; // devices, fifos: not copied
    }
  }

  /** Gives the directories their modes, deepest first (also after a failure). */
  finish(): void {
    for (let i = this.dirModes.length - 1; i >= 0; i--) {
      try {
        fs.chmodSync(this.dirModes[i]![0], this.dirModes[i]![1]);
      } catch {
        // removed meanwhile
      }
    }
    this.dirModes.length = 0;
  }
}

/** Counts the bytes going through; past `max` it fails with a CopyLimitError. */
export function byteLimit(max: number, what: string): Transform {
  let n = 0;
  return new Transform({
    transform(chunk: Buffer, _enc, cb) {
      n += chunk.length;
      if (n > max) cb(new CopyLimitError(`${what}: the archive exceeds the limit of ${max} bytes`, 'bytes', max));
      else cb(null, chunk);
    },
  });
}

/** Extracts a tar stream under `base` with SafeExtractor's checks, within opts.maxBytes / maxEntries. */
export async function extractTarSafely(input: Readable, base: string, opts: ExtractOptions): Promise<void> {
  const out = new SafeExtractor(base, opts);
  const extract = tar.extract();
  const stages: Array<NodeJS.ReadableStream | NodeJS.WritableStream> = [input];
  if (opts.maxBytes !== undefined) stages.push(byteLimit(opts.maxBytes, 'copyOut'));
  // The stage that fails first says why (a limit, the source's error); extract only echoes it.
  let first: unknown;
  for (const s of stages) (s as Readable).once('error', (e: unknown) => (first ??= e));
  // pipeline: an error or early close of any stage destroys the others, so the loop below ends.
  const piped = (pipeline as (streams: ReadonlyArray<NodeJS.ReadableStream | NodeJS.WritableStream>) => Promise<void>)([...stages, extract]).then(
    () => undefined,
    (e: unknown) => e,
  );
  let entries = 0;
  try {
    for await (const entry of extract) {
      try {
        if (opts.maxEntries !== undefined && ++entries > opts.maxEntries) {
          throw new CopyLimitError(`copyOut: the archive has more than ${opts.maxEntries} entries`, 'entries', opts.maxEntries);
        }
        await out.add(entry.header, entry);
      } finally {
        entry.resume();
      }
    }
    const err = await piped;
    if (err) throw err;
  } catch (err) {
    // Not awaited: the source may only settle once its producer is stopped (the caller's job).
    input.destroy();
    extract.destroy();
    throw first instanceof BoxliteError ? first : err;
  } finally {
    out.finish();
  }
}

/** Node stream of an execution's stdout. */
async function* outputChunks(ex: Execution): AsyncGenerator<Buffer> {
  const s = await ex.stdout();
  for (;;) {
    const b = await s.nextBuffer();
    if (b === null) return;
    yield b;
  }
}

export async function copyOut(box: CopyTarget, guestSrc: string, hostDest: string, options?: CopyOptions): Promise<void> {
  const o = resolve(options);
  const src = guestPath(guestSrc, 'copyOut source');
  if (src === '/') throw new ConfigError('copyOut: copying the whole root filesystem is not supported');
  const srcName = path.posix.basename(src);
  const [srcKind] = await guestKinds(box, [src], !o.followSymlinks);
  if (srcKind === 'none') throw new ExecutionError(`copyOut: ${src}: No such file or directory`);
  const isDir = srcKind === 'dir';
  if (isDir && !o.recursive) throw new ConfigError(`copyOut: ${src} is a directory and recursive is false`);

  const destAbs = path.resolve(hostDest) + (hostDest.length > 1 && hostDest.endsWith('/') ? '/' : '');
  const place = placeCopy({ name: srcName, isDir }, destAbs, hostKind(path.resolve(hostDest)), o, 'copyOut');
  const base = place.dir;
  if (place.create) {
    try {
      fs.mkdirSync(base, { recursive: true });
    } catch (err) {
      throw new ConfigError(`copyOut: cannot create ${base}: ${(err as Error).message}`);
    }
  }

  const args = ['tar', '-c', '-f', '-'];
  if (o.followSymlinks) args.push('-h');
  args.push('-C', path.posix.dirname(src), '--', srcName);
  const ex = await box.execTool(TOOLBOX, args);
  await (await ex.stdin()).close();
  const stderrP = collect(ex, 'stderr');

  const map = (name: string): string => {
    const parts = name.split('/');
    if (parts[0] !== srcName) throw new ExecutionError(`copyOut: unexpected archive entry ${JSON.stringify(name)}`);
    const rest = parts.slice(1);
    return place.top ? [place.top, ...rest].join('/') : rest.join('/'); // '' = the top itself: skipped
  };
  let extractError: unknown;
  try {
    await extractTarSafely(Readable.from(outputChunks(ex)), base, {
      overwrite: o.overwrite,
      map,
      label: hostDest,
      maxBytes: options?.maxBytes,
      maxEntries: options?.maxEntries,
    });
  } catch (err) {
    extractError = err;
    await ex.kill().catch(() => undefined);
    (await ex.stdout()).drain(); // the rest is not wanted; keep granting credit so the exit arrives
  }
  const stderr = (await stderrP).toString('utf8');
  const { exitCode } = await ex.wait();
  if (exitCode !== 0 && !extractError) throw tarError(`copyOut of ${src} failed`, stderr, exitCode);
  if (exitCode !== 0 && extractError && !(extractError instanceof BoxliteError)) throw tarError(`copyOut of ${src} failed`, stderr, exitCode);
  if (extractError) {
    if (extractError instanceof BoxliteError) throw extractError;
    throw new ExecutionError(`copyOut: ${(extractError as Error).message}`);
  }
}
