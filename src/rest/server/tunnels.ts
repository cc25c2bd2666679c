// Tunnels over REST (rest-contract §3.2 `box.network.tunnel`): `POST {scope}/boxes/{id}/network/tunnel?port=N`
// mints a one-shot tunnel and answers `{uri}`; the client then sends an HTTP/1.1 CONNECT to that
// uri, which this same server answers on its `connect` event and pipes to the SDK's
// `box.network.tunnel(port).connect()`.
//
// What the 0.10 client sends (observed, see docs/rest.md): the CONNECT goes to the uri's host:port,
// its request target and Host header are the uri's authority *with its userinfo*, and it carries
// no Authorization header (the Bearer key only goes with the POST). The path and query of the
// uri are dropped. So the only place a tunnel can be named is the userinfo: the uri is
// `http://<token>@<host the client used>/`, the token 256 random bits, bound to one box and port,
// valid once and for TOKEN_TTL_MS. Editing the authority cannot reach another box or port.
import { randomBytes, randomUUID } from 'node:crypto';
import type { IncomingMessage } from 'node:http';
import type { Duplex } from 'node:stream';
import type { FastifyInstance } from 'fastify';
import { z } from 'zod';
import { NotFoundError } from '../../errors/index.js';
import type { BoxConnection, BoxNetworkHandle } from '../../runtime/handles.js';
import type { RestContext } from './app.js';
import { checkBearer } from './auth.js';
import { HttpError, toHttp, unsupported } from './errors.js';
import { parse } from './boxes.js';

/** How long a minted tunnel uri may wait for its CONNECT (the 0.10 client connects at once). */
export const TOKEN_TTL_MS = 60_000;
/** Outstanding (minted, not yet connected) tunnels; more is a client minting without connecting. */
const MAX_PENDING = 1024;
/** Bytes read from the guest per read() (the SDK connection reads ahead up to 1 MiB itself). */
const CHUNK = 64 * 1024;

const TunnelQuery = z.object({ port: z.coerce.number().int().min(1).max(65535) }).strict();

interface Pending {
  boxId: string;
  port: number;
  expires: number;
}

/** The SDK box's `network` (the real Box has it; a fake runtime may not). */
type Networked = { network?: BoxNetworkHandle };

const REASON: Record<number, string> = {
  400: 'Bad Request',
  429: 'Too Many Requests',
  401: 'Unauthorized',
  404: 'Not Found',
  409: 'Conflict',
  500: 'Internal Server Error',
  502: 'Bad Gateway',
  503: 'Service Unavailable',
  504: 'Gateway Timeout',
};

/** `host[:port]` as the client wrote it, if it is a plain authority (it ends up in a uri we hand back). */
const HOST = /^(?:[A-Za-z0-9.-]+|\[[0-9A-Fa-f:.]+\])(?::\d{1,5})?$/;

export function tunnelRoutes(app: FastifyInstance, ctx: RestContext): void {
  const pending = new Map<string, Pending>();
  const live = new Set<Duplex>();
  let closing = false;
  const sweep = () => {
    const now = Date.now();
    for (const [k, p] of pending) if (p.expires <= now) pending.delete(k);
  };
  const sweeper = setInterval(sweep, TOKEN_TTL_MS);
  sweeper.unref();
  // preClose, not onClose: the server's close() waits for every socket, and a tunnel is one.
  app.addHook('preClose', (done) => {
    closing = true;
    clearInterval(sweeper);
    pending.clear();
    for (const s of live) s.destroy();
    done();
  });

  app.post<{ Params: { box_id: string } }>('/boxes/:box_id/network/tunnel', async (req) => {
    const { port } = parse(TunnelQuery, req.query, 'query');
    const info = await ctx.boxes.info(req.params.box_id);
    if (!info.state.running) {
      throw new HttpError(409, 'InvalidStateError', 'invalid_state', `invalid state: box ${info.id} is not running (start it or exec in it first)`);
    }
    sweep();
    if (pending.size >= MAX_PENDING) {
      throw new HttpError(429, 'ResourceExhaustedError', 'resource_exhausted', `resource exhausted: ${MAX_PENDING} tunnels are waiting for their CONNECT`);
    }
    const token = randomBytes(32).toString('base64url');
    pending.set(token, { boxId: info.id, port, expires: Date.now() + TOKEN_TTL_MS });
    const given = req.headers.host;
    const host = typeof given === 'string' && HOST.test(given) ? given : localAuthority(req.socket.localAddress, req.socket.localPort);
    return { uri: `${req.protocol}://${token}@${host}/` };
  });

  app.server.on('connect', (req: IncomingMessage, socket: Duplex, head: Buffer) => {
    const t0 = performance.now();
    // Fastify never sees a CONNECT: it gets a request id of its own for the log.
    const rid = randomUUID();
    live.add(socket);
    socket.once('close', () => live.delete(socket));
    socket.on('error', () => socket.destroy());
    const refuse = (status: number, type: string, code: string, message: string) => {
      const body = JSON.stringify({ error: { message, type, code } });
      socket.end(
        `HTTP/1.1 ${status} ${REASON[status] ?? 'Error'}\r\ncontent-type: application/json\r\ncontent-length: ${Buffer.byteLength(body)}\r\nconnection: close\r\n\r\n${body}`,
      );
      // A client that never reads must not hold the socket.
      setTimeout(() => socket.destroy(), 2000).unref();
      ctx.log(`${rid} CONNECT tunnel ${status} ${(performance.now() - t0).toFixed(1)}ms`);
    };
    if (closing) return refuse(503, 'UnavailableError', 'unavailable', 'server shutting down');
    // A Bearer key is not needed (the token is minted for an authenticated POST; the 0.10 client
    // sends none), but one that is given must be right.
    const bearer = req.headers['proxy-authorization'] ?? req.headers.authorization;
    if (ctx.opts.apiKey && bearer !== undefined && !checkBearer(bearer, ctx.opts.apiKey)) {
      return refuse(401, 'AuthError', 'unauthenticated', 'invalid or missing API key');
    }
    const target = req.url ?? '';
    const at = target.lastIndexOf('@');
    const token = at > 0 ? target.slice(0, at) : '';
    const p = token ? pending.get(token) : undefined;
    if (!p || p.expires <= Date.now()) {
      if (p) pending.delete(token);
      // Nothing is proxied anywhere but to a minted tunnel: no open proxy, whatever the target says.
      if (ctx.opts.apiKey) return refuse(401, 'AuthError', 'unauthenticated', 'invalid or missing API key (or an unknown, used or expired tunnel)');
      return refuse(404, 'NotFoundError', 'not_found', 'not found: tunnel (unknown, already used or expired; POST …/network/tunnel for another)');
    }
    pending.delete(token);
    socket.pause();
    void open(p).then(
      (conn) => {
        if (socket.destroyed) return void conn.close().catch(() => undefined);
        socket.write('HTTP/1.1 200 Connection Established\r\n\r\n');
        ctx.log(`${rid} CONNECT tunnel box ${p.boxId} port ${p.port} 200 ${(performance.now() - t0).toFixed(1)}ms`);
        splice(socket, conn, head);
      },
      (err: unknown) => {
        const { status, body, internal } = toHttp(err);
        if (internal) ctx.log(`${rid} CONNECT tunnel box ${p.boxId} port ${p.port} error ${status}: ${internal}`);
        // The guest port refused, or the box's network answered nothing: a gateway failure.
        const s = status === 503 && body.error.code === 'network_unavailable' ? 502 : status;
        refuse(s, body.error.type, body.error.code, body.error.message);
      },
    );
  });

  async function open(p: Pending): Promise<BoxConnection> {
    const info = await ctx.runtime.getInfo(p.boxId);
    if (!info) throw new NotFoundError('box', p.boxId);
    if (!info.state.running) throw new HttpError(409, 'InvalidStateError', 'invalid_state', `invalid state: box ${p.boxId} is not running`);
    const box = (await ctx.boxes.handle(p.boxId)) as unknown as Networked;
    if (!box.network) throw unsupported('tunnels: this runtime has no box.network');
    const tunnel = await box.network.tunnel(p.port);
    return tunnel.connect();
  }
}

/** The address the request came in on, for a client that sent no usable Host header. */
function localAuthority(addr: string | undefined, port: number | undefined): string {
  const a = (addr ?? '127.0.0.1').replace(/^::ffff:(?=\d+\.)/, '');
  return `${a.includes(':') ? `[${a}]` : a}:${port ?? 80}`;
}

/**
 * Pipes the client socket and the guest connection both ways. Back-pressure: the client socket is
 * paused while a write to the guest is in flight, and the guest is not read while the client
 * socket's buffer is full. Half-close: the client's FIN becomes shutdownWrite(), the guest's EOF
 * the socket's end(). Either side failing or closing tears both down.
 */
function splice(socket: Duplex, conn: BoxConnection, head: Buffer): void {
  let done = false;
  let upDone = false;
  let downDone = false;
  const teardown = () => {
    if (done) return;
    done = true;
    socket.destroy();
    void conn.close().catch(() => undefined);
  };
  const settle = () => {
    if (upDone && downDone) {
      // Both directions ended cleanly: let the socket flush its last bytes, then close.
      done = true;
      void conn.close().catch(() => undefined);
      if (!socket.writableFinished) socket.once('finish', () => socket.destroy());
      else socket.destroy();
    }
  };
  socket.once('close', teardown);

  const up = async (chunk: Buffer) => {
    socket.pause();
    try {
      await conn.write(chunk);
    } catch {
      return teardown();
    }
    if (!done) socket.resume();
  };
  // Bytes sent after the CONNECT line in the same packet.
  if (head.length) void up(head);
  socket.on('data', (c: Buffer) => void up(c));
  socket.once('end', () => {
    void conn.shutdownWrite().then(
      () => {
        upDone = true;
        settle();
      },
      teardown,
    );
  });
  socket.resume();

  void (async () => {
    try {
      for (;;) {
        const b = await conn.read(CHUNK);
        if (done) return;
        if (!b.length) break;
        if (!socket.write(b)) {
          await new Promise<void>((r) => {
            const go = () => {
              socket.off('drain', go);
              socket.off('close', go);
              r();
            };
            socket.on('drain', go);
            socket.on('close', go);
          });
          if (done) return;
        }
      }
      socket.end();
      downDone = true;
      settle();
    } catch {
      teardown();
    }
  })();
}
