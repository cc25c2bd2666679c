// A box on a REST server: the same methods as the local Box, over rest-contract §3.2.
import fs from 'node:fs';
import path from 'node:path';
import { pipeline } from 'node:stream/promises';
import tarStream from 'tar-stream';
type TarHeaders = Parameters<tarStream.Pack['entry']>[0];
import { BoxliteError, InternalError, InvalidArgumentError, UnsupportedError } from '../../errors/index.js';
import type { BoxInfo, BoxMetrics } from '../../runtime/box.js';
import { modeOf, SafeExtractor, type CopyOptions, type EntryHeader } from '../../runtime/copy.js';
import { type BoxNetworkHandle, type SnapshotHandle, type SnapshotInfo } from '../../runtime/handles.js';
import { RestExecution } from './execution.js';
import { restTunnel } from './tunnel.js';
import type { RestTransport, StreamBody } from './transport.js';
import { checkCapability, parseBox, parseBoxMetrics, REJECT } from './wire.js';

export class RestBox {
  /** `box.snapshot`, behind the server's `snapshots_enabled` (rest-contract §3.2). */
  readonly snapshot: SnapshotHandle = {
    create: async (name) => parseSnapshot(await this.gated('snapshots_enabled', 'snapshots', () => this.transport.json('POST', `${this.path}/snapshots`, { json: { name } }))),
    list: async () => {
      const r = await this.gated('snapshots_enabled', 'snapshots', () => this.transport.json<{ snapshots?: unknown[] }>('GET', `${this.path}/snapshots`));
      return (Array.isArray(r.snapshots) ? r.snapshots : []).map(parseSnapshot);
    },
    get: async (name) => {
      try {
        return parseSnapshot(await this.gated('snapshots_enabled', 'snapshots', () => this.transport.json('GET', `${this.path}/snapshots/${encodeURIComponent(name)}`)));
      } catch (err) {
        if ((err as BoxliteError).code === 'NotFound') return null;
        throw err;
      }
    },
    remove: (name) => this.gated('snapshots_enabled', 'snapshots', () => this.transport.call('DELETE', `${this.path}/snapshots/${encodeURIComponent(name)}`)),
    restore: (name) => this.gated('snapshots_enabled', 'snapshots', () => this.transport.call('POST', `${this.path}/snapshots/${encodeURIComponent(name)}/restore`)),
  };
  /** `box.network`: a tunnel is `POST …/network/tunnel` plus an HTTP CONNECT (tunnel.ts). */
  readonly network: BoxNetworkHandle = { tunnel: (port) => restTunnel(this.transport, this.path, port) };

  /** @internal */
  constructor(
    private readonly transport: RestTransport,
    readonly id: string,
    readonly name: string | null,
  ) {}

  private get path(): string {
    return `/boxes/${encodeURIComponent(this.id)}`;
  }

  /** A Box answer must be this box (the reference checks the id too). */
  private own(raw: unknown): BoxInfo {
    const info = parseBox(raw);
    if (info.id !== this.id) throw new InternalError(`server answered for box ${info.id}, expected ${this.id}`);
    return info;
  }

  async info(): Promise<BoxInfo> {
    return this.own(await this.transport.json('GET', this.path));
  }

  /** `POST …/start`, no body; the answer is the Box. */
  async start(): Promise<void> {
    this.own(await this.transport.json('POST', `${this.path}/start`));
  }

  /** `POST …/stop`, no body; the answer is the Box. */
  async stop(): Promise<void> {
    this.own(await this.transport.json('POST', `${this.path}/stop`));
  }

  async metrics(): Promise<BoxMetrics> {
    return parseBoxMetrics(await this.transport.json('GET', `${this.path}/metrics`));
  }

  /**
   * `POST …/exec`, then the attach socket (opened asynchronously, as in the reference). `user` is
   * sent (our server honours it; the reference's client drops it and its server ignores it).
   */
  async exec(
    command: string,
    args?: string[] | null,
    env?: Array<[string, string]> | null,
    tty?: boolean | null,
    user?: string | null,
    timeoutSecs?: number | null,
    workingDir?: string | null,
  ): Promise<RestExecution> {
    // As the reference: the command and resize values are the server's to judge; a bad timeout is not.
    if (timeoutSecs !== undefined && timeoutSecs !== null && !(Number.isFinite(timeoutSecs) && timeoutSecs >= 0)) {
      throw new InvalidArgumentError('timeout_seconds must be a non-negative finite number');
    }
    const body: Record<string, unknown> = { command };
    if (args?.length) body.args = args;
    if (env) body.env = Object.fromEntries(env);
    if (timeoutSecs !== undefined && timeoutSecs !== null) body.timeout_seconds = timeoutSecs;
    if (workingDir !== undefined && workingDir !== null) body.working_dir = workingDir;
    body.tty = tty === true;
    if (user !== undefined && user !== null) body.user = user;
    const res = await this.transport.json<{ execution_id?: unknown }>('POST', `${this.path}/exec`, { json: body });
    if (typeof res.execution_id !== 'string' || !res.execution_id) {
      throw new InternalError(`failed to parse response: missing field \`execution_id\`: ${JSON.stringify(res).slice(0, 4096)}`);
    }
    return new RestExecution(this.transport, this.path, res.execution_id, tty === true);
  }

  /**
   * `PUT …/files?path=` with a tar: a file as one entry named by its basename, a directory as
   * `./` plus relative entries (the reference's shapes, §3.5). Up to UPLOAD_BUFFER_MAX bytes of
   * content the archive is sent with a Content-Length, as the reference does; beyond that it is
   * streamed (chunked) so memory stays bounded. `overwrite:false` is refused client-side with the
   * reference's text.
   */
  async copyIn(hostPath: string, containerDest: string, options?: CopyOptions | null): Promise<void> {
    if (options?.overwrite === false) throw new UnsupportedError(REJECT.overwrite);
    const st = await fs.promises.stat(hostPath).catch((err: Error) => {
      throw new InvalidArgumentError(`copyIn: ${hostPath}: ${err.message}`);
    });
    const entries: Array<{ header: TarHeaders; file?: string }> = [];
    let bytes = 0;
    if (st.isDirectory()) {
      if (options?.recursive === false) throw new InvalidArgumentError(`copyIn: ${hostPath} is a directory (recursive is false)`);
      entries.push({ header: { name: './', type: 'directory', mode: st.mode, mtime: st.mtime } });
      const walk = async (abs: string, rel: string, depth: number): Promise<void> => {
        if (depth > 256) throw new InvalidArgumentError(`copyIn: ${abs}: directories nested too deep (a symlink loop?)`);
        for (const child of (await fs.promises.readdir(abs)).sort()) {
          const a = path.join(abs, child);
          const r = rel ? `${rel}/${child}` : child;
          const s = options?.followSymlinks ? await fs.promises.stat(a) : await fs.promises.lstat(a);
          if (s.isDirectory()) {
            entries.push({ header: { name: r, type: 'directory', mode: s.mode, mtime: s.mtime } });
            await walk(a, r, depth + 1);
          } else if (s.isSymbolicLink()) {
            entries.push({ header: { name: r, type: 'symlink', linkname: await fs.promises.readlink(a), mode: s.mode, mtime: s.mtime } });
          } else if (s.isFile()) {
            entries.push({ header: { name: r, mode: s.mode, mtime: s.mtime, size: s.size }, file: a });
            bytes += s.size;
          }
        }
      };
      await walk(hostPath, '', 0);
    } else {
      entries.push({ header: { name: path.basename(hostPath), mode: st.mode, mtime: st.mtime, size: st.size }, file: hostPath });
      bytes += st.size;
    }
    const pack = tarStream.pack();
    const writing = (async () => {
      for (const e of entries) {
        await new Promise<void>((resolve, reject) => {
          const sink = pack.entry(e.header, (err?: Error | null) => (err ? reject(err) : resolve()));
          if (e.file) {
            const src = fs.createReadStream(e.file);
            src.on('error', (err) => {
              sink.destroy(err);
              reject(new InvalidArgumentError(`copyIn: ${e.file}: ${err.message}`));
            });
            src.pipe(sink as unknown as NodeJS.WritableStream);
          }
          // Directories and links have no content: tar-stream ends their entry itself.
        });
      }
      pack.finalize();
    })();
    writing.catch((err: Error) => pack.destroy(err));
    let body: Buffer | StreamBody = pack as unknown as StreamBody;
    if (bytes <= UPLOAD_BUFFER_MAX) {
      const chunks: Buffer[] = [];
      for await (const c of pack) chunks.push(c as Buffer);
      body = Buffer.concat(chunks);
    }
    await Promise.all([
      writing,
      this.transport.call('PUT', `${this.path}/files`, { query: { path: containerDest }, body, contentType: 'application/x-tar' }),
    ]);
  }

  /**
   * `GET …/files?path=`, streamed: exactly one regular entry → written to hostDest (parents
   * created; into it when hostDest is an existing directory); anything else → unpacked under
   * hostDest (`mkdir -p`). The server is not trusted: entries go through the local SDK's
   * SafeExtractor (nothing written through a symlink already at the destination, names kept
   * inside it, setuid/setgid dropped), the same checks as the local copyOut.
   */
  async copyOut(containerSrc: string, hostDest: string, _options?: CopyOptions | null): Promise<void> {
    const res = await this.transport.send('GET', `${this.path}/files`, { query: { path: containerSrc }, accept: 'application/x-tar' });
    const root = path.resolve(hostDest);
    // The first regular entry is staged next to hostDest until we know it is the only entry.
    let staged: { file: string; header: EntryHeader } | undefined;
    let tree: SafeExtractor | undefined;
    const toTree = async (): Promise<SafeExtractor> => {
      if (tree) return tree;
      await fs.promises.mkdir(root, { recursive: true });
      tree = new SafeExtractor(root, { overwrite: true, label: hostDest });
      if (staged) {
        const s = staged;
        staged = undefined;
        try {
          await tree.add(s.header, fs.createReadStream(s.file));
        } finally {
          await fs.promises.rm(s.file, { force: true });
        }
      }
      return tree;
    };
    const src = res.body.stream();
    const extract = tarStream.extract();
    const piped = pipeline(src, extract).then(
      () => undefined,
      (e: unknown) => e,
    );
    let count = 0;
    try {
      for await (const entry of extract) {
        try {
          count++;
          const h = entry.header;
          inside(root, h.name); // the client's own message for a name that leaves hostDest
          if (count === 1 && (h.type ?? 'file') === 'file') {
            await fs.promises.mkdir(path.dirname(root), { recursive: true });
            const file = path.join(path.dirname(root), `.${path.basename(root)}.boxlite-copy-${process.pid}-${Date.now()}`);
            staged = { file, header: h };
            const fh = await fs.promises.open(file, 'wx', 0o600); // O_EXCL: never through a planted link
            try {
              for await (const c of entry) await fh.write(c as Buffer);
            } finally {
              await fh.close();
            }
          } else await (await toTree()).add(h, entry);
        } finally {
          entry.resume();
        }
      }
      const err = await piped;
      if (err) throw err;
      const s = staged;
      if (s) {
        // Exactly one regular entry and nothing else: it is the file, or goes into a directory.
        if (await fs.promises.stat(root).then((st) => st.isDirectory(), () => false)) await toTree();
        else {
          await fs.promises.chmod(s.file, modeOf(s.header, 'file'));
          if (s.header.mtime) await fs.promises.utimes(s.file, s.header.mtime, s.header.mtime);
          await fs.promises.rename(s.file, root); // replaces a symlink at root, never follows it
          staged = undefined;
        }
      } else if (count === 0) await fs.promises.mkdir(root, { recursive: true });
    } catch (err) {
      src.destroy();
      extract.destroy();
      if (err instanceof BoxliteError) throw err;
      throw new InternalError(`copyOut: bad tar from the server: ${(err as Error).message}`);
    } finally {
      tree?.finish();
      if (staged) await fs.promises.rm(staged.file, { force: true });
    }
  }

  /** Runs `call` once the server's cached /v1/config advertises `flag` (the reference's gate and texts). */
  private async gated<T>(flag: string, what: string, call: () => Promise<T>): Promise<T> {
    checkCapability(await this.transport.serverConfig(), flag, what);
    return call();
  }

  /** `POST …/clone {"name"}` (or `{}`), behind `clone_enabled`. */
  async cloneBox(_options?: unknown, name?: string | null): Promise<RestBox> {
    const raw = await this.gated('clone_enabled', 'clone', () => this.transport.json('POST', `${this.path}/clone`, { json: name ? { name } : {} }));
    const info = parseBox(raw);
    return new RestBox(this.transport, info.id, info.name ?? null);
  }

  /** `POST …/export {}`, behind `export_enabled`; a directory `dest` gets `<name or "box">.boxlite`. */
  async export(dest: string, _options?: unknown): Promise<string> {
    const res = await this.gated('export_enabled', 'export', () => this.transport.send('POST', `${this.path}/export`, { json: {} }));
    const isDir = await fs.promises.stat(dest).then((s) => s.isDirectory(), () => false);
    const file = isDir ? path.join(dest, `${this.name ?? 'box'}.boxlite`) : dest;
    await fs.promises.writeFile(file, await res.body.arrayBuffer());
    return file;
  }

  async [Symbol.asyncDispose](): Promise<void> {
    await this.stop().catch(() => undefined);
  }
}

/** Content up to this size is uploaded with a Content-Length (the reference's wire); more is streamed. */
const UPLOAD_BUFFER_MAX = 8 * 1024 * 1024;

/** `root/rel`, refusing absolute names and `..` escapes. */
function inside(root: string, name: string): string {
  const target = path.resolve(root, name);
  if (path.isAbsolute(name) || (target !== root && !target.startsWith(root + path.sep))) {
    throw new InvalidArgumentError(`copyOut: archive entry ${JSON.stringify(name)} escapes the destination`);
  }
  return target;
}

/** A `Snapshot` answer (`guest_disk_bytes` ignored, as by the reference). */
function parseSnapshot(raw: unknown): SnapshotInfo {
  const s = raw as Record<string, unknown>;
  for (const f of ['id', 'box_id', 'name', 'created_at', 'container_disk_bytes', 'size_bytes']) {
    if (!s || s[f] === undefined) throw new InternalError(`failed to parse response: missing field \`${f}\`: ${JSON.stringify(raw).slice(0, 4096)}`);
  }
  return {
    id: String(s.id),
    boxId: String(s.box_id),
    name: String(s.name),
    createdAt: Number(s.created_at),
    containerDiskBytes: Number(s.container_disk_bytes),
    sizeBytes: Number(s.size_bytes),
  };
}
