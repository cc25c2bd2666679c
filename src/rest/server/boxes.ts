// Box routes: create / list / get / head / delete / start / stop / metrics (snapshots, clone,
// export, import: snapshots.ts; volumes: volumes.ts).
import fs from 'node:fs';
import path from 'node:path';
import type { FastifyInstance } from 'fastify';
import type { z } from 'zod';
import { NotFoundError } from '../../errors/index.js';
import type { BoxInfo, BoxMetrics as SdkBoxMetrics, BoxOptions } from '../../index.js';
import { DEFAULT_IMAGE } from '../../runtime/options.js';
import * as S from '../schemas.js';
import type { RestBox, RestContext, RestRuntime } from './app.js';
import { HttpError, invalidArgument, unsupported, zodMessage } from './errors.js';

/**
 * One handle per box: SDK handles are spent by stop() (the reference's semantics), so the server
 * drops a handle when it stops or removes the box and asks the runtime for a fresh one next time.
 */
export class BoxHandles {
  private readonly cache = new Map<string, RestBox>();
  /** Boxes this server stopped (boxes_stopped_total of /v1/metrics). */
  stoppedTotal = 0;
  constructor(private readonly runtime: RestRuntime) {}

  /** The box's info by id or name; a 404 NotFound envelope when there is none. */
  async info(idOrName: string): Promise<BoxInfo> {
    const info = await this.runtime.getInfo(idOrName);
    if (!info) throw new NotFoundError('box', idOrName);
    return info;
  }

  /** A usable handle on the box (id or name); 404 when there is none. */
  async handle(idOrName: string): Promise<RestBox> {
    const info = await this.info(idOrName);
    const cached = this.cache.get(info.id);
    // A stopped box may have been stopped outside this server (the CLI, another runtime on the
    // home, a VM that died: the SDK stops the handle then), which spends the cached handle; a
    // stopped box always gets a fresh one (runtime.get returns the live handle if there is one).
    if (cached && info.state.status !== 'stopped') return cached;
    const box = await this.runtime.get(info.id);
    if (!box) throw new NotFoundError('box', idOrName);
    this.cache.set(box.id, box);
    return box;
  }

  remember(box: RestBox): void {
    this.cache.set(box.id, box);
  }

  forget(id: string): void {
    this.cache.delete(id);
  }

  /** Every cached handle (serve's shutdown stops the boxes they run). */
  all(): RestBox[] {
    return [...this.cache.values()];
  }
}

/** Parses `value` with `schema`, answering a 400 naming the field otherwise. */
export function parse<T extends z.ZodTypeAny>(schema: T, value: unknown, where = 'body'): z.infer<T> {
  const r = schema.safeParse(value);
  if (!r.success) throw invalidArgument(zodMessage(r.error, where));
  return r.data;
}

/**
 * What `image` shows for a box made from a local OCI layout (`oci:<absolute path>`): the server's
 * filesystem layout is none of the client's business, so it is `rootfs:<path under --rootfs-root>`,
 * or `rootfs:<basename>` for a layout outside it (a box made on this home by the CLI).
 */
export function imageLabel(image: string, rootfsRoot: string | undefined): string {
  if (!image.startsWith('oci:')) return image;
  const p = image.slice(4);
  let root: string | undefined;
  try {
    root = rootfsRoot ? fs.realpathSync(rootfsRoot) : undefined;
  } catch {
    root = undefined;
  }
  const rel = root ? path.relative(root, p) : '';
  const under = root !== undefined && rel !== '' && !rel.startsWith('..') && !path.isAbsolute(rel);
  return `rootfs:${under ? rel.split(path.sep).join('/') : path.basename(p)}`;
}

/** The wire `Box` of an SDK BoxInfo (§1.3, §5.1.5): auto_stop and its legacy alias auto_pause, exit_code once known. */
export function boxJson(info: BoxInfo, rootfsRoot?: string): z.infer<typeof S.Box> {
  const status = (S.BOX_STATUSES as readonly string[]).includes(info.state.status) ? info.state.status : 'unknown';
  return {
    box_id: info.id,
    name: info.name ?? null,
    status: status as z.infer<typeof S.Box>['status'],
    created_at: info.createdAt,
    updated_at: info.startedAt ?? info.createdAt,
    image: imageLabel(info.image, rootfsRoot),
    cpus: info.cpus,
    memory_mib: info.memoryMib,
    pid: info.state.pid ?? null,
    labels: {},
    auto_stop: info.autoStop,
    auto_pause: info.autoStop,
    auto_delete: info.autoDelete,
    auto_resume: info.autoResume,
    ...(info.state.exitCode !== undefined ? { exit_code: info.state.exitCode } : {}),
  };
}

/** The wire `BoxMetrics` of the SDK's (§1.3). */
export function boxMetricsJson(m: SdkBoxMetrics | undefined): z.infer<typeof S.BoxMetrics> {
  const n = (v: number | undefined) => (v === undefined ? null : Math.round(v));
  return {
    commands_executed_total: m?.commandsExecutedTotal ?? 0,
    exec_errors_total: m?.execErrorsTotal ?? 0,
    bytes_sent_total: m?.bytesSentTotal ?? 0,
    bytes_received_total: m?.bytesReceivedTotal ?? 0,
    cpu_percent: m?.cpuPercent ?? null,
    memory_bytes: n(m?.memoryBytes),
    network_bytes_sent: n(m?.networkBytesSent),
    network_bytes_received: n(m?.networkBytesReceived),
    network_tcp_connections: n(m?.networkTcpConnections),
    network_tcp_errors: n(m?.networkTcpErrors),
    boot_timing: m
      ? {
          total_create_ms: n(m.totalCreateDurationMs),
          guest_boot_ms: n(m.guestBootDurationMs),
          filesystem_setup_ms: n(m.stageFilesystemSetupMs),
          image_prepare_ms: n(m.stageImagePrepareMs),
          guest_rootfs_ms: n(m.stageGuestRootfsMs),
          box_config_ms: n(m.stageBoxConfigMs),
          box_spawn_ms: n(m.stageBoxSpawnMs),
          container_init_ms: n(m.stageContainerInitMs),
        }
      : null,
  };
}

/**
 * SDK BoxOptions from a validated CreateBoxRequest. Deliberate translations (docs/rest.md):
 * - `network.inbound.mode` is dropped: the 0.10 client always sends "enabled", and a box served
 *   over REST publishes no ports (the client refuses `ports`), so nothing is reachable inbound;
 * - `host_path` volumes and `rootfs_path` outside the allow-listed root are refused: both name the
 *   server's filesystem;
 * - `tty: true` (a terminal for the main process) is refused until the main-command attach lands.
 */
export function boxOptionsFrom(b: S.CreateBoxRequest, rootfsRoot: string | undefined): BoxOptions {
  const o: BoxOptions = {};
  if (b.rootfs_path !== undefined) o.rootfsPath = allowedRootfs(b.rootfs_path, rootfsRoot);
  else o.image = b.image ?? DEFAULT_IMAGE;
  if (b.cpus !== undefined) o.cpus = b.cpus;
  if (b.memory_mib !== undefined) o.memoryMib = b.memory_mib;
  if (b.disk_size_gb !== undefined) o.diskSizeGb = b.disk_size_gb;
  if (b.working_dir !== undefined) o.workingDir = b.working_dir;
  if (b.env) o.env = Object.entries(b.env).map(([key, value]) => ({ key, value }));
  if (b.entrypoint) o.entrypoint = b.entrypoint;
  if (b.cmd) o.cmd = b.cmd;
  if (b.user !== undefined) o.user = b.user;
  if (b.volumes?.length) {
    o.volumes = b.volumes.map((v, i) => {
      if ('host_path' in v) {
        throw unsupported(`volumes[${i}].host_path: host bind mounts name the server's filesystem and are not accepted over REST`);
      }
      return { managedVolume: v.managed_volume, guestPath: v.guest_path, readOnly: false as const };
    });
  }
  const net = b.network;
  if (net) {
    if (net.outbound) o.network = { outbound: { mode: net.outbound.mode, ...(net.outbound.allow_net ? { allowNet: net.outbound.allow_net } : {}) } };
    else if (net.mode !== undefined || net.allow_net !== undefined) {
      o.network = { mode: net.mode ?? 'enabled', ...(net.allow_net ? { allowNet: net.allow_net } : {}) };
    }
  }
  if (b.secrets) o.secrets = b.secrets.map((s) => ({ name: s.name, value: s.value, ...(s.hosts ? { hosts: s.hosts } : {}), ...(s.placeholder ? { placeholder: s.placeholder } : {}) }));
  if (b.detach !== undefined) o.detach = b.detach;
  if (b.tty) throw unsupported('tty on create (a terminal for the main process) is not implemented by this server yet');
  const autoStop = b.auto_stop ?? b.auto_pause;
  if (autoStop !== undefined) o.autoStop = autoStop;
  if (b.auto_delete !== undefined) o.autoDelete = b.auto_delete;
  if (b.auto_resume !== undefined) o.autoResume = b.auto_resume;
  if (b.advanced?.capabilities) o.advanced = { capabilities: b.advanced.capabilities };
  return o;
}

function allowedRootfs(p: string, root: string | undefined): string {
  if (!root) throw unsupported('rootfs_path names a path on the server; this server accepts none (start it with an allow-listed rootfs root)');
  let real: string;
  let realRoot: string;
  try {
    realRoot = fs.realpathSync(root);
    real = fs.realpathSync(path.resolve(realRoot, p));
  } catch {
    throw invalidArgument(`rootfs_path: no such OCI layout under the server's rootfs root: ${JSON.stringify(p)}`);
  }
  if (real !== realRoot && !real.startsWith(realRoot + path.sep)) {
    throw invalidArgument(`rootfs_path: must be under the server's rootfs root`);
  }
  return real;
}

const bool = (v: string | undefined) => v === 'true' || v === '1';

/** Opaque page tokens: the base64url of the offset, checked on the way back in. */
export function pageOf<T>(items: T[], pageSize: number | undefined, pageToken: string | undefined): { page: T[]; next?: string } {
  let start = 0;
  if (pageToken !== undefined) {
    const n = /^o([0-9]{1,9})$/.exec(Buffer.from(pageToken, 'base64url').toString('utf8'));
    if (!n) throw invalidArgument('pageToken: not a token this server issued');
    start = Number(n[1]);
  }
  if (pageSize === undefined && pageToken === undefined) return { page: items };
  const size = pageSize ?? 100;
  const page = items.slice(start, start + size);
  const end = start + page.length;
  return end < items.length ? { page, next: Buffer.from(`o${end}`).toString('base64url') } : { page };
}

type IdParams = { box_id: string };

export function boxRoutes(app: FastifyInstance, ctx: RestContext): void {
  const { runtime, boxes } = ctx;
  const scope = `/v1${ctx.opts.pathPrefix ? `/${ctx.opts.pathPrefix}` : ''}`;
  const root = ctx.opts.rootfsRoot;

  app.post('/boxes', async (req, reply) => {
    const body = parse(S.CreateBoxRequest, req.body ?? {});
    const options = boxOptionsFrom(body, ctx.opts.rootfsRoot);
    // A duplicate name is refused before any pull (the store refuses it again, atomically).
    if (body.name && (await runtime.getInfo(body.name))?.name === body.name) {
      throw new HttpError(409, 'AlreadyExistsError', 'already_exists', `already exists: a box named ${JSON.stringify(body.name)} already exists`);
    }
    // create() resolves or pulls the image first: a bad one is 422 image_pull_failed.
    const box = await runtime.create(options, body.name ?? null);
    boxes.remember(box);
    const info = await box.info();
    return reply.code(201).header('location', `${scope}/boxes/${encodeURIComponent(box.id)}`).send(boxJson(info, root));
  });

  app.get('/boxes', async (req) => {
    // `GET …/boxes/` is getBox with an empty id, not listBoxes (ignoreTrailingSlash would make it a
    // list): the 0.10 client sends it for rt.get('') and expects 404 → null, like the local SDK's
    // get(''); a list body there would be an "internal error: failed to parse response".
    if (req.url.split('?')[0]!.endsWith('/')) throw new NotFoundError('box', '');
    const q = parse(S.ListQuery, req.query, 'query');
    let infos = await runtime.listInfo();
    if (q.status) infos = infos.filter((i) => i.state.status === q.status);
    const { page, next } = pageOf(infos, q.pageSize, q.pageToken);
    return { boxes: page.map((i) => boxJson(i, root)), ...(next ? { next_page_token: next } : {}) };
  });

  app.get<{ Params: IdParams }>('/boxes/:box_id', async (req) => boxJson(await boxes.info(req.params.box_id), root));

  app.head<{ Params: IdParams }>('/boxes/:box_id', async (req, reply) => {
    await boxes.info(req.params.box_id);
    return reply.code(204).send();
  });

  app.delete<{ Params: IdParams; Querystring: Record<string, string> }>('/boxes/:box_id', async (req, reply) => {
    const q = parse(S.RemoveQuery, req.query, 'query');
    // OpenAPI's default (force=false): a running box is 409 invalid_state, as in the local SDK.
    const info = await boxes.info(req.params.box_id);
    await runtime.remove(info.id, bool(q.force));
    boxes.forget(info.id);
    return reply.code(204).send();
  });

  app.post<{ Params: IdParams }>('/boxes/:box_id/start', async (req) => {
    const box = await boxes.handle(req.params.box_id);
    await box.start();
    return boxJson(await box.info(), root);
  });

  app.post<{ Params: IdParams }>('/boxes/:box_id/stop', async (req) => {
    // {timeout_seconds} is accepted; the SDK's stop() bounds itself (graceful, then forced).
    parse(S.StopBoxRequest, req.body ?? {});
    const box = await boxes.handle(req.params.box_id);
    try {
      await box.stop();
      boxes.stoppedTotal++;
    } finally {
      boxes.forget(box.id);
    }
    return boxJson(await box.info(), root);
  });

  app.get<{ Params: IdParams }>('/boxes/:box_id/metrics', async (req) => {
    // Never boots a box: a box that is not running reports zero counters and no live figures.
    const info = await boxes.info(req.params.box_id);
    if (!info.state.running) return boxMetricsJson(undefined);
    const box = await boxes.handle(info.id);
    return boxMetricsJson(await box.metrics());
  });
}
