// Files over REST as tar (rest-contract §2.6, §3.5, §5.1.11), through the SDK's Box.copyIn/copyOut
// (which carry the reference's placement rules) and a staging directory on the server:
//
// PUT …/files?path=&overwrite= (application/x-tar, streamed to disk, never buffered whole)
//   - exactly one regular entry and nothing else → that file *at* `path`, or *into* `path` when it
//     is an existing directory or ends in '/';
//   - otherwise (the 0.10 client's `./`, `a.txt`, `sub/…` shape, or any tree) → the tree under
//     `path` (created), `./` normalised away;
//   - absolute names, '..' and writes through symlinks are refused (400), `overwrite=false` keeps
//     existing files (409 already_exists when one is in the way), more than the configured
//     maximum is 413 payload_too_large (Content-Length checked first, then the bytes counted);
//   - a client that goes away mid-body: the staging directory is removed and a line logged.
// GET …/files?path=&follow_symlinks=
//   - a file → a tar of one regular entry named by its basename (the client then writes a file);
//   - a directory → `basename/` plus everything under `basename/…`, directory entries included (so
//     a directory with one file still unpacks as a directory); a missing path → 404;
//   - the box's archive is staged within the limits as it is produced: past maxFileBytes (tar
//     bytes, headers included) or maxFileEntries the box's tar is killed and the answer is 413.
// Staging directories are ours: they are opened up (u+rwx) before removal, so a 0o500 or 0o000
// directory from an archive never makes the cleanup fail when the server does not run as root.
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { PassThrough, Readable } from 'node:stream';
import type { FastifyInstance } from 'fastify';
import tar from 'tar-stream';
import { z } from 'zod';
import { BoxliteError, ExecutionError } from '../../errors/index.js';
import { CopyLimitError, extractTarSafely } from '../../runtime/copy.js';
import type { RestContext } from './app.js';
import { HttpError, invalidArgument, payloadTooLarge } from './errors.js';
import { boxOf } from './executions.js';

const flag = (def: boolean) =>
  z
    .enum(['true', 'false', '1', '0'])
    .optional()
    .transform((v) => (v === undefined ? def : v === 'true' || v === '1'));

const FilesQuery = z
  .object({
    path: z.string({ required_error: 'required' }).min(1),
    overwrite: flag(true),
    follow_symlinks: flag(false),
  })
  .passthrough();

function parseQuery(q: unknown): z.infer<typeof FilesQuery> {
  const r = FilesQuery.safeParse(q ?? {});
  if (!r.success) {
    const i = r.error.issues[0]!;
    throw invalidArgument(`${i.path.join('.') || 'query'}: ${i.message}`);
  }
  return r.data;
}

/** A path in the box: absolute, no NUL, no '..' segment (refused rather than resolved). */
function guestPathOf(p: string): string {
  if (!p.startsWith('/')) throw invalidArgument(`path: must be an absolute path in the box, got ${JSON.stringify(p)}`);
  if (p.includes('\0')) throw invalidArgument('path: contains a NUL byte');
  if (p.split('/').includes('..')) throw invalidArgument(`path: '..' segments are not allowed (${JSON.stringify(p)})`);
  return p;
}

/** Default of RestAppOptions.maxFileEntries: inodes a download may stage on the server. */
export const DEFAULT_MAX_FILE_ENTRIES = 500_000;

async function staging(): Promise<string> {
  return fs.promises.mkdtemp(path.join(os.tmpdir(), 'boxlite-rest-files-'));
}

/** Gives every directory under `dir` (symlinks not followed) owner rwx. */
async function openUp(dir: string): Promise<void> {
  let st: fs.Stats;
  try {
    st = await fs.promises.lstat(dir);
  } catch {
    return;
  }
  if (!st.isDirectory()) return;
  if ((st.mode & 0o700) !== 0o700) await fs.promises.chmod(dir, (st.mode & 0o7777) | 0o700).catch(() => undefined);
  const names = await fs.promises.readdir(dir).catch(() => [] as string[]);
  for (const n of names) await openUp(path.join(dir, n));
}

/**
 * Removes a staging directory. As non-root, rm fails with EACCES inside a directory without owner
 * write/search (an archive may name 0o500 or 0o000): those are opened up first. Never throws.
 */
export async function removeStaging(dir: string, log?: (line: string) => void): Promise<void> {
  try {
    await fs.promises.rm(dir, { recursive: true, force: true });
    return;
  } catch {
    await openUp(dir);
  }
  try {
    await fs.promises.rm(dir, { recursive: true, force: true });
  } catch (err) {
    log?.(`files: cannot remove staging directory ${dir}: ${(err as NodeJS.ErrnoException).code ?? (err as Error).message}`);
  }
}

const tooLarge = (err: CopyLimitError, max: number, what: string) =>
  payloadTooLarge(
    err.limit === 'bytes'
      ? `payload too large: ${what} exceeds the server's file transfer limit of ${max} bytes`
      : `payload too large: ${what} has more than the server's limit of ${err.max} entries`,
  );

const notFound = (what: string) => new HttpError(404, 'NotFoundError', 'not_found', `not found: ${what}`);

/** Tar of `abs` (a file, symlink or directory) named `name`; its total file bytes. */
async function sizeOf(abs: string, follow: boolean): Promise<number> {
  const st = follow ? await fs.promises.stat(abs) : await fs.promises.lstat(abs);
  if (st.isFile()) return st.size;
  if (!st.isDirectory()) return 0;
  let total = 0;
  for (const c of await fs.promises.readdir(abs)) total += await sizeOf(path.join(abs, c), follow);
  return total;
}

function pack(abs: string, name: string): tar.Pack {
  const p = tar.pack();
  const entry = (h: Parameters<tar.Pack["entry"]>[0], data?: Readable) =>
    new Promise<void>((res, rej) => {
      const cb = (err?: Error | null) => (err ? rej(err) : res());
      if (!data) {
        p.entry(h, cb);
        return;
      }
      const w = p.entry(h, cb);
      data.on('error', rej);
      data.pipe(w);
    });
  const walk = async (a: string, n: string): Promise<void> => {
    const st = await fs.promises.lstat(a);
    const base = { name: n, mode: st.mode & 0o1777, mtime: st.mtime, uid: 0, gid: 0 };
    if (st.isSymbolicLink()) await entry({ ...base, type: 'symlink', linkname: await fs.promises.readlink(a) });
    else if (st.isFile()) await entry({ ...base, type: 'file', size: st.size }, fs.createReadStream(a));
    else if (st.isDirectory()) {
      await entry({ ...base, name: `${n}/`, type: 'directory' });
      // The header carries the real mode; the staging copy must stay readable (0o000 as non-root).
      if ((st.mode & 0o500) !== 0o500) await fs.promises.chmod(a, (st.mode & 0o7777) | 0o700);
      for (const c of (await fs.promises.readdir(a)).sort()) await walk(path.join(a, c), `${n}/${c}`);
    }
  };
  walk(abs, name).then(
    () => p.finalize(),
    (err: unknown) => p.destroy(err as Error),
  );
  return p;
}

export function fileRoutes(scope: FastifyInstance, ctx: RestContext): void {
  void scope.register(async (app) => fileRoutesIn(app, ctx));
}

function fileRoutesIn(app: FastifyInstance, ctx: RestContext): void {
  const max = ctx.opts.maxFileBytes;
  const maxEntries = ctx.opts.maxFileEntries ?? DEFAULT_MAX_FILE_ENTRIES;
  // The body stays a stream (in this scope only): the route counts and extracts it as it arrives.
  app.addContentTypeParser('application/x-tar', (_req, payload, done) => done(null, payload));

  app.put<{ Params: { box_id: string }; Querystring: Record<string, string> }>('/boxes/:box_id/files', async (req, reply) => {
    const q = parseQuery(req.query);
    const dest = guestPathOf(q.path);
    const declared = Number(req.headers['content-length']);
    if (Number.isFinite(declared) && declared > max) {
      reply.header('connection', 'close'); // the body is not read
      reply.raw.once('finish', () => req.raw.destroy());
      throw payloadTooLarge(`payload too large: ${declared} bytes exceeds the server's file transfer limit of ${max} bytes`);
    }
    const body = req.body as Readable | undefined;
    if (!body || typeof (body as Readable).pipe !== 'function') {
      throw invalidArgument('body: expected an application/x-tar archive');
    }
    // Any failure before the body was read to its end: answer, then close the connection (the rest
    // of an oversized or refused upload is not read, and must not hold the keep-alive socket).
    const abandon = () => {
      if (!body.readableEnded) {
        reply.header('connection', 'close');
        reply.raw.once('finish', () => req.raw.destroy());
      }
    };
    let box;
    try {
      box = await boxOf(ctx, req.params.box_id);
    } catch (err) {
      abandon();
      throw err;
    }
    // The body reaches the extractor through `feed`: a client that goes away mid-body fails it
    // (pipe() alone would leave the extractor waiting forever), while a refusal here (limit, bad
    // tar) stops reading without destroying the request, so the error can still be answered.
    const feed = new PassThrough();
    let cutOff = false;
    const onGone = () => {
      if (req.raw.complete) return;
      cutOff = true;
      feed.destroy(invalidArgument('body: the upload was cut off'));
    };
    body.once('error', onGone);
    req.raw.once('close', onGone);
    body.pipe(feed);
    const dir = await staging();
    try {
      const entries: Array<{ name: string; type: string }> = [];
      try {
        await extractTarSafely(feed, dir, {
          overwrite: true,
          label: 'the upload',
          maxBytes: max,
          maxEntries,
          // Root reads any mode; otherwise a 0o000 directory could not be packed for the box.
          ownerAccess: process.getuid?.() !== 0,
          map: (name, type) => {
            entries.push({ name, type });
            return null;
          },
        });
      } catch (err) {
        if (cutOff) {
          ctx.log(`${req.id} files: upload to ${JSON.stringify(dest)} aborted by the client; its staging directory is removed`);
          throw invalidArgument('body: the upload was cut off');
        }
        abandon();
        if (err instanceof CopyLimitError) throw tooLarge(err, max, 'the archive');
        if (err instanceof HttpError) throw err;
        const msg = err instanceof BoxliteError ? err.message.replace(/^Execution error: copyOut: /, '') : (err as Error).message;
        throw invalidArgument(`body: bad tar archive: ${msg}`);
      }
      const single = entries.length === 1 && (entries[0]!.type === 'file' || entries[0]!.type === 'contiguous-file');
      try {
        if (single) await box.copyIn(path.join(dir, entries[0]!.name), dest, { overwrite: q.overwrite });
        else await box.copyIn(dir, dest, { overwrite: q.overwrite, includeParent: false });
      } catch (err) {
        if (!q.overwrite && err instanceof ExecutionError && /exists/i.test(err.message)) {
          throw new HttpError(409, 'AlreadyExistsError', 'already_exists', `already exists: a file in the way under ${dest} and overwrite is false`);
        }
        throw err;
      }
      return reply.code(204).send();
    } finally {
      body.off('error', onGone);
      req.raw.off('close', onGone);
      await removeStaging(dir, ctx.log);
    }
  });

  app.get<{ Params: { box_id: string }; Querystring: Record<string, string> }>('/boxes/:box_id/files', async (req, reply) => {
    const q = parseQuery(req.query);
    const src = guestPathOf(q.path);
    if (src.replace(/\/+$/, '') === '') throw invalidArgument('path: copying the whole root filesystem is not supported');
    const box = await boxOf(ctx, req.params.box_id);
    const dir = await staging();
    let handedOver = false;
    try {
      try {
        await box.copyOut(src, `${dir}/`, { followSymlinks: q.follow_symlinks, includeParent: true, maxBytes: max, maxEntries });
      } catch (err) {
        if (err instanceof CopyLimitError) throw tooLarge(err, max, src);
        if (err instanceof BoxliteError && /No such file or directory/i.test(err.message)) throw notFound(`${src}: No such file or directory`);
        throw err;
      }
      const [name] = await fs.promises.readdir(dir);
      if (!name) throw notFound(`${src}: No such file or directory`);
      const abs = path.join(dir, name);
      const size = await sizeOf(abs, false);
      if (size > max) throw payloadTooLarge(`payload too large: ${src} holds ${size} bytes, over the server's file transfer limit of ${max} bytes`);
      const packer = pack(abs, name);
      const stream = Readable.from(packer);
      let cleaned = false;
      // Whichever comes first: the stream is done, or the response is (a client gone mid-download
      // leaves a half-read packer whose stream may never report close).
      const cleanup = () => {
        if (cleaned) return;
        cleaned = true;
        packer.destroy();
        void removeStaging(dir, ctx.log);
      };
      stream.once('close', cleanup);
      stream.once('error', cleanup);
      reply.raw.once('close', cleanup);
      handedOver = true;
      return reply.code(200).type('application/x-tar').send(stream);
    } finally {
      if (!handedOver) await removeStaging(dir, ctx.log);
    }
  });
}
