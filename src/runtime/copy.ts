// box.copyIn / box.copyOut: files move as a tar stream through an execution of the agent's own
// busybox (EXEC flag TOOL), running as the box's user, so copies need no tar in the image and the
// image cannot substitute one. The host side packs with tar-stream, and extracts with its own
// checks: every entry stays inside the destination and nothing is written through a symlink.
import fs from 'node:fs';
import path from 'node:path';
import { Readable } from 'node:stream';
import tar from 'tar-stream';
import { BoxliteError, ConfigError, ExecutionError } from '../errors/index.js';
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

type GuestKind = 'dir' | 'none' | 'other';

async function guestKind(box: CopyTarget, p: string): Promise<GuestKind> {
  const r = await runTool(box, [
    'sh',
    '-c',
    'if [ -d "$1" ]; then echo dir; elif [ -e "$1" ] || [ -L "$1" ]; then echo other; else echo none; fi',
    'sh',
    p,
  ]);
  const kind = r.stdout.trim();
  if (r.code !== 0 || !['dir', 'none', 'other'].includes(kind)) {
    throw new ExecutionError(`copy: cannot inspect ${p} in the box: ${r.stderr.trim() || `exit ${r.code}`}`);
  }
  return kind as GuestKind;
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

  // docker cp: into an existing directory, or created under the destination's name.
  const kind = await guestKind(box, dest);
  let dir: string;
  let top: string;
  if (kind === 'dir') {
    dir = dest;
    top = isDir && !o.includeParent ? '' : path.basename(path.resolve(hostPath));
  } else {
    if (guestDest.endsWith('/')) throw new ConfigError(`copyIn: destination directory ${guestDest} does not exist in the box`);
    if (kind === 'other' && isDir) throw new ConfigError(`copyIn: cannot copy directory ${hostPath} onto file ${dest}`);
    if (dest === '/') throw new ConfigError('copyIn: bad destination /');
    dir = path.posix.dirname(dest);
    top = path.posix.basename(dest);
  }

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
}

/**
 * Extracts a tar stream under `base` without ever following a symlink below it: names are
 * relative and free of '..', every existing parent component is lstat-ed and must be a real
 * directory, symlink entries are created as symlinks and never written through.
 */
export async function extractTarSafely(input: Readable, base: string, opts: ExtractOptions): Promise<void> {
  const label = opts.label ?? base;
  const unsafe = (name: string, why: string) =>
    new ExecutionError(`copyOut: archive entry ${JSON.stringify(name)} would leave ${label} (${why})`);
  const dirModes: Array<[string, number]> = [];
  const extract = tar.extract();
  input.on('error', (e) => extract.destroy(e));
  input.pipe(extract);
  try {
    for await (const entry of extract) {
      const h = entry.header;
      try {
        const raw = h.name;
        if (raw.startsWith('/') || raw.includes('\0')) throw unsafe(raw, 'absolute name');
        const parts0 = raw.split('/').filter((p) => p !== '' && p !== '.');
        if (parts0.includes('..')) throw unsafe(raw, "'..' in the name");
        const name = parts0.join('/');
        if (!name) continue;
        let rel = opts.map ? opts.map(name, h.type ?? 'file') : name;
        if (rel === null) rel = name;
        if (rel === '') continue;
        const parts = rel.split('/').filter((p) => p !== '' && p !== '.');
        if (parts.includes('..') || path.isAbsolute(rel) || parts.length === 0) throw unsafe(raw, 'bad name');
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
          if (st.isSymbolicLink()) throw unsafe(raw, `${path.relative(base, cur)} is a symlink`);
          if (!st.isDirectory()) throw unsafe(raw, `${path.relative(base, cur)} is not a directory`);
        }
        const target = path.join(cur, parts[parts.length - 1]!);
        if (path.relative(base, target).startsWith('..')) throw unsafe(raw, 'outside');
        let existing: fs.Stats | undefined;
        try {
          existing = fs.lstatSync(target);
        } catch {
          existing = undefined;
        }
        const mode = (h.mode ?? 0o644) & 0o1777;
        const refuse = () => new ExecutionError(`copyOut: ${path.relative(base, target) || target} already exists in ${label} and overwrite is false`);
        switch (h.type) {
          case 'directory': {
            if (existing && !existing.isDirectory()) {
              if (!opts.overwrite) throw refuse();
              fs.rmSync(target, { recursive: true, force: true });
              existing = undefined;
            }
            if (!existing) fs.mkdirSync(target, { mode: 0o700 });
            dirModes.push([target, mode]);
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
            const fh = await fs.promises.open(target, 'wx', mode);
            try {
              for await (const chunk of entry) await fh.write(chunk as Buffer);
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
            if (lraw.startsWith('/') || lparts0.includes('..')) throw unsafe(raw, 'hard link target outside');
            let lrel = opts.map ? opts.map(lparts0.join('/'), 'file') : lparts0.join('/');
            if (lrel === null) lrel = lparts0.join('/');
            const lparts = lrel.split('/').filter((p) => p !== '' && p !== '.');
            if (!lparts.length || lparts.includes('..')) throw unsafe(raw, 'hard link target outside');
            let lc = base;
            for (const p of lparts) {
              lc = path.join(lc, p);
              const st = fs.lstatSync(lc);
              if (st.isSymbolicLink()) throw unsafe(raw, 'hard link through a symlink');
            }
            if (!fs.lstatSync(lc).isFile()) throw unsafe(raw, 'hard link to a non-file');
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
      } finally {
        entry.resume();
      }
    }
  } catch (err) {
    input.unpipe(extract);
    input.destroy();
    extract.destroy();
    throw err;
  } finally {
    for (let i = dirModes.length - 1; i >= 0; i--) {
      try {
        fs.chmodSync(dirModes[i]![0], dirModes[i]![1]);
      } catch {
        // removed meanwhile
      }
    }
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

  // Where it lands (docker cp): into an existing directory, else created under hostDest's name.
  const destAbs = path.resolve(hostDest);
  let destStat: fs.Stats | undefined;
  try {
    destStat = fs.statSync(destAbs); // the destination itself may be a symlink the caller chose
  } catch {
    destStat = undefined;
  }
  let base: string;
  let topName: string;
  if (destStat?.isDirectory()) {
    base = destAbs;
    topName = srcName;
  } else {
    base = path.dirname(destAbs);
    topName = path.basename(destAbs);
    let parent: fs.Stats | undefined;
    try {
      parent = fs.statSync(base);
    } catch {
      parent = undefined;
    }
    if (!parent?.isDirectory()) throw new ConfigError(`copyOut: the parent directory of ${hostDest} does not exist`);
  }

  const args = ['tar', '-c', '-f', '-'];
  if (o.followSymlinks) args.push('-h');
  args.push('-C', path.posix.dirname(src), '--', srcName);
  const ex = await box.execTool(TOOLBOX, args);
  await (await ex.stdin()).close();
  const stderrP = collect(ex, 'stderr');

  let topIsDir: boolean | undefined;
  let configError: BoxliteError | undefined;
  const map = (name: string, type: string): string | null => {
    const parts = name.split('/');
    if (parts[0] !== srcName) throw new ExecutionError(`copyOut: unexpected archive entry ${JSON.stringify(name)}`);
    if (topIsDir === undefined) {
      topIsDir = parts.length === 1 ? type === 'directory' : true;
      if (topIsDir && !o.recursive) {
        configError = new ConfigError(`copyOut: ${src} is a directory and recursive is false`);
        throw configError;
      }
      if (topIsDir && destStat && !destStat.isDirectory()) {
        configError = new ConfigError(`copyOut: cannot copy directory ${src} onto file ${hostDest}`);
        throw configError;
      }
    }
    const rest = parts.slice(1);
    if (topIsDir && destStat?.isDirectory() && !o.includeParent) return rest.join('/'); // '' = the top itself: skipped
    return [topName, ...rest].join('/');
  };
  let extractError: unknown;
  try {
    await extractTarSafely(Readable.from(outputChunks(ex)), base, {
      overwrite: o.overwrite,
      map,
      label: hostDest,
    });
  } catch (err) {
    extractError = err;
    await ex.kill().catch(() => undefined);
    (await ex.stdout()).drain(); // the rest is not wanted; keep granting credit so the exit arrives
  }
  const stderr = (await stderrP).toString('utf8');
  const { exitCode } = await ex.wait();
  if (configError) throw configError;
  if (exitCode !== 0 && !extractError) throw tarError(`copyOut of ${src} failed`, stderr, exitCode);
  if (exitCode !== 0 && extractError && !(extractError instanceof BoxliteError)) throw tarError(`copyOut of ${src} failed`, stderr, exitCode);
  if (extractError) {
    if (extractError instanceof BoxliteError) throw extractError;
    throw new ExecutionError(`copyOut: ${(extractError as Error).message}`);
  }
}
