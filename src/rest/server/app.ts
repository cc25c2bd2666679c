// The REST server's app (issue 10): built from an SDK runtime, never listening itself (only
// `boxlite serve` listens). Fastify 5 + @fastify/websocket. Every route module is a function
// `(app, ctx) => void` registered inside the `/v1{/prefix}` scope; hooks (request id, auth, log)
// and the error envelope are installed once here, so they cover every route, 404s and WS upgrades.
import Fastify, { type FastifyInstance, type FastifyReply } from 'fastify';
import websocket from '@fastify/websocket';
import { randomUUID } from 'node:crypto';
import type { Box, JsBoxlite } from '../../index.js';
import { checkBearer } from './auth.js';
import { envelope, installErrorHandling } from './errors.js';
import { BoxHandles, boxRoutes } from './boxes.js';
import { imageRoutes } from './images.js';
import { executionRoutes, type ExecutionTuning } from './executions.js';
import { attachRoutes, type AttachTiming } from './attach.js';
import { fileRoutes } from './files.js';
import { tunnelRoutes } from './tunnels.js';
import { volumeRoutes } from './volumes.js';
import { snapshotRoutes } from './snapshots.js';
import { metricsRoutes, rootRoutes } from './config.js';

/** The box handle API the server uses: the SDK's Box (a FakeRuntime's box in the unit tests). */
export type RestBox = Pick<Box, 'id' | 'name' | 'info' | 'start' | 'stop' | 'metrics' | 'exec' | 'attach' | 'copyIn' | 'copyOut'>;

/** The runtime API the server uses: the SDK's JsBoxlite, structurally (FakeRuntime implements it). */
export interface RestRuntime {
  create(options: Parameters<JsBoxlite['create']>[0], name?: string | null): Promise<RestBox>;
  get(idOrName: string): Promise<RestBox | null>;
  getInfo: JsBoxlite['getInfo'];
  listInfo: JsBoxlite['listInfo'];
  remove: JsBoxlite['remove'];
  metrics: JsBoxlite['metrics'];
  images: Pick<JsBoxlite['images'], 'pull' | 'list'>;
  /** Managed volumes (src/rest/server/volumes.ts); absent: the routes answer 400 unsupported. */
  volumes?: JsBoxlite['volumes'];
}

export interface RestAppOptions {
  /** Bearer key every request but `GET /v1/config` must carry; absent: no auth (loopback only, see serve). */
  apiKey?: string;
  /**
   * Fixed tenant prefix: box-scoped routes live at `/v1/{pathPrefix}/…` (the client's
   * BoxliteRestOptions.pathPrefix) and `/v1/me` reports it; absent: `/v1/boxes/…`.
   */
  pathPrefix?: string;
  /** Largest file transfer (upload body / download archive) in bytes, advertised in /v1/config. Default 1 GiB. */
  maxFileBytes?: number;
  /** Most entries in a download archive (files.ts DEFAULT_MAX_FILE_ENTRIES); past it 413. */
  maxFileEntries?: number;
  /** One line per request (and per server-side failure); never secrets, keys or stacks. */
  log?: (line: string) => void;
  /**
   * Without an apiKey, only requests naming a loopback host (`Host: 127.0.0.1:…`, `localhost:…`,
   * `[::1]:…`) are served, so a web page cannot reach the server through DNS rebinding. `serve
   * --insecure` on a non-loopback address sets this: that user chose an open server.
   */
  allowAnyHost?: boolean;
  /** Directory under which `rootfs_path` may name an OCI layout on the server; absent: rootfs_path refused. */
  rootfsRoot?: string;
  /**
   * Execution knobs (executions.ts DEFAULT_TUNING): output bound, retention, signal limit, reaper
   * timeline. Unset fields take the defaults, with the reference's env knobs applied first
   * (BOXLITE_RECONNECT_GRACE, BOXLITE_SHUTDOWN_GRACE, BOXLITE_MAX_SESSION_LIFETIME). For tests and
   * embedders; `boxlite serve` sets none of them (the env variables are its interface).
   */
  execTuning?: Partial<ExecutionTuning>;
  /**
   * Attach keepalive (attach.ts): Ping interval (15 s), dead-peer limit (45 s), takeover probe
   * (2 s). These follow the 0.10 client's own timers (first frame within 10 s, 45 s watchdog), so
   * only tests change them; `boxlite serve` never does.
   */
  attachTiming?: Partial<AttachTiming>;
}

export const DEFAULT_MAX_FILE_BYTES = 1024 * 1024 * 1024;

/** What every route module gets. */
export interface RestContext {
  runtime: RestRuntime;
  opts: Required<Pick<RestAppOptions, 'maxFileBytes'>> & RestAppOptions;
  log: (line: string) => void;
  /** Box handles, one per box, renewed after stop() spent one (see boxes.ts). */
  boxes: BoxHandles;
  /** The execution registry: owned by the executions module (S2), which sets it on registration. */
  executions: unknown;
  /** Called by `close()`: route modules push their teardown (kill attaches, timers) here. */
  onClose: Array<() => Promise<void> | void>;
}

export type RouteModule = (app: FastifyInstance, ctx: RestContext) => void;

/**
 * Box-scoped route modules (registered under `/v1{/prefix}`). Executions and files (S2) add one
 * line each here.
 */
const SCOPED_ROUTES: RouteModule[] = [boxRoutes, imageRoutes, executionRoutes, attachRoutes, fileRoutes, tunnelRoutes, volumeRoutes, snapshotRoutes];

const REQUEST_ID = /^[A-Za-z0-9._:-]{1,128}$/;

/** Builds the REST app on `runtime`. Call `app.ready()` (inject does) or `app.listen()` (serve). */
export function buildRestApp(runtime: RestRuntime, opts: RestAppOptions = {}, extraRoutes: RouteModule[] = []): FastifyInstance {
  const log = opts.log ?? (() => {});
  const prefix = normalizePrefix(opts.pathPrefix);
  const ctx: RestContext = {
    runtime,
    opts: { ...opts, pathPrefix: prefix, maxFileBytes: opts.maxFileBytes ?? DEFAULT_MAX_FILE_BYTES },
    log,
    boxes: new BoxHandles(runtime),
    executions: undefined,
    onClose: [],
  };
  const app = Fastify({
    logger: false,
    // Request ids: the caller's X-Request-Id when it is a sane token, else a fresh UUID.
    genReqId: (req) => {
      const given = req.headers['x-request-id'];
      return typeof given === 'string' && REQUEST_ID.test(given) ? given : randomUUID();
    },
    requestIdHeader: false,
    bodyLimit: 1024 * 1024,
    // Fastify's default is no limit at all: a client trickling a request (or a body) would hold its
    // socket forever. Five minutes is Node's own default, room for a 1 GiB upload at ~4 MiB/s.
    requestTimeout: 5 * 60_000,
    // A tenant prefix may contain '/'; box ids and names never do.
    routerOptions: { ignoreTrailingSlash: true, maxParamLength: 256 },
    return503OnClosing: false,
    // HEAD routes are declared explicitly (boxExists, imageExists), never derived from GETs.
    exposeHeadRoutes: false,
  });
  // JSON is the only body the JSON routes take (a text/plain body is refused, not parsed as a string).
  app.removeContentTypeParser('text/plain');
  // An empty JSON body (Content-Type set, nothing sent: some clients' start/stop) reads as no body;
  // anything else goes through fastify's own parser (prototype poisoning refused).
  const json = app.getDefaultJsonParser('error', 'error');
  app.removeContentTypeParser('application/json');
  app.addContentTypeParser('application/json', { parseAs: 'string' }, (req, body, done) => {
    if (body === '') return done(null, undefined);
    json(req, body as string, done);
  });
  void app.register(websocket, {
    options: { maxPayload: 16 * 1024 * 1024 },
    // Instead of the plugin's default (Close without a code): attached clients get an `error` frame
    // and Close 1001 from the execution registry (S2), any other socket Close 1001.
    preClose(this: FastifyInstance, done: () => void) {
      void (ctx.executions as { close?: () => Promise<void> } | undefined)?.close?.();
      for (const c of this.websocketServer.clients) if (c.readyState === 1) c.close(1001, 'server shutting down');
      this.websocketServer.close();
      done();
    },
  });

  const routes: Array<{ method: string; re: RegExp }> = [];
  const websocketRoutes = new Set<string>();
  app.addHook('onRoute', (r) => {
    if ((r as { websocket?: boolean }).websocket) websocketRoutes.add(r.url);
    const methods = Array.isArray(r.method) ? r.method : [r.method];
    const re = new RegExp('^' + r.url.replace(/[.+?^${}()|[\]\\]/g, '\\$&').replace(/:[A-Za-z_]+/g, '[^/]+').replace(/\*/g, '.*') + '/?$');
    for (const m of methods) routes.push({ method: m.toUpperCase(), re });
  });

  app.addHook('onRequest', async (req, reply) => {
    reply.header('x-request-id', req.id);
    (req as { startedAt?: number }).startedAt = performance.now();
    // Browsers send Origin on every cross-site request and WebSocket; API clients (ours, the 0.10
    // client, curl) never do. Refusing it shuts out drive-by pages, with a key or without.
    if (req.headers.origin !== undefined) {
      return refuse(reply, 403, req.id, 'browser (cross-origin) requests are refused', 'permission_denied');
    }
    if (!opts.apiKey && !opts.allowAnyHost && !isLoopbackHost(req.headers.host)) {
      return refuse(reply, 403, req.id, 'without an API key only requests to a loopback host name are served', 'permission_denied');
    }
    if (opts.apiKey) {
      const path = req.url.split('?')[0]!;
      const isPublic = (req.method === 'GET' || req.method === 'HEAD') && path.replace(/\/+$/, '') === '/v1/config';
      // Before any WebSocket upgrade too: the hook runs ahead of the 101.
      if (!isPublic && !checkBearer(req.headers.authorization, opts.apiKey)) {
        return refuse(reply, 401, req.id, 'invalid or missing API key', 'unauthenticated');
      }
    }
    // An upgrade to a route that takes none gets its answer as plain HTTP, never a 101.
    if (req.headers.upgrade !== undefined && !websocketRoutes.has(req.routeOptions.url ?? '')) {
      return refuse(reply, 400, req.id, 'invalid argument: this route does not take a WebSocket upgrade', 'invalid_argument', 'InvalidArgumentError');
    }
  });
  app.addHook('onResponse', async (req, reply) => {
    const t = (req as { startedAt?: number }).startedAt;
    const ms = t === undefined ? '-' : (performance.now() - t).toFixed(1);
    log(`${req.id} ${req.method} ${req.url.split('?')[0]} ${reply.statusCode} ${ms}ms`);
  });

  installErrorHandling(app, ctx, (method, url) => {
    const path = url.split('?')[0]!;
    return routes.some((r) => r.method !== method && r.re.test(path));
  });

  app.register(async (root) => {
    rootRoutes(root, ctx);
  }, { prefix: '/v1' });
  app.register(async (scoped) => {
    metricsRoutes(scoped, ctx);
    for (const mod of [...SCOPED_ROUTES, ...extraRoutes]) mod(scoped, ctx);
  }, { prefix: prefix ? `/v1/${prefix}` : '/v1' });

  app.addHook('onClose', async () => {
    for (const fn of ctx.onClose.splice(0)) await Promise.resolve(fn()).catch(() => undefined);
  });
  return app;
}

/** Sends an error envelope and closes the connection: a refused client gets no kept-alive socket. */
async function refuse(
  reply: FastifyReply,
  status: number,
  requestId: string,
  message: string,
  code: string,
  type = 'AuthError',
): Promise<void> {
  await reply.code(status).header('connection', 'close').type('application/json').send(envelope(requestId, message, type, code));
}

/** An address or name of this machine's loopback: 127/8, localhost, ::1 (bracketed or not). */
export function isLoopback(host: string): boolean {
  const h = host.replace(/^\[|\]$/g, '').toLowerCase();
  return h === 'localhost' || h === '::1' || /^127(\.\d{1,3}){3}$/.test(h) || h === '::ffff:127.0.0.1';
}

/** A `Host` header (name and optional port) that names the loopback. */
function isLoopbackHost(host: string | undefined): boolean {
  if (!host) return false;
  return isLoopback(host.startsWith('[') ? host.slice(0, host.indexOf(']') + 1) : host.replace(/:\d*$/, ''));
}

function normalizePrefix(p: string | undefined): string {
  if (!p) return '';
  const trimmed = p.replace(/^\/+|\/+$/g, '');
  if (trimmed.length > 128 || !/^[A-Za-z0-9._~\-/]*$/.test(trimmed) || trimmed.split('/').some((s) => s === '..' || s === '.')) {
    throw new Error(`invalid pathPrefix ${JSON.stringify(p)}: at most 128 URL-safe characters`);
  }
  return trimmed;
}
