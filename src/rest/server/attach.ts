// The attach WebSocket (rest-contract §2.4, §3.4, §5.1.8, §5.3): GET …/executions/{eid}/attach and
// the main-command session GET /boxes/{id}/attach (id in the 101's X-Boxlite-Execution-Id).
//
// - The slot is claimed before the 101: 404 for an unknown execution (or one of another box), 409
//   when a *live* client is attached. A silent one is probed (Ping, 2 s for an answer) and taken
//   over when dead, instead of the reference's 409 for up to 45 s.
// - A Ping right after the upgrade (the 0.10 client drops a socket that gets no frame in 10 s),
//   then every 15 s; a client silent for 45 s (no Pong, no frame) is dropped.
// - Output frames `[1|2]+bytes`, never splitting a UTF-8 sequence, replayed from the first frame
//   the previous client did not acknowledge (see output-log.ts); stdin as binary frames; text
//   control frames resize / signal / stdin_eof, an `error` frame for a bad one.
// - After the exit: every output frame, `{"type":"exit","exit_code":N}`, then Close 1000.
import type { IncomingMessage } from 'node:http';
import type { FastifyInstance, FastifyRequest } from 'fastify';
import type { WebSocket } from 'ws';
import { InvalidArgumentError, InvalidStateError, toBoxliteError } from '../../errors/index.js';
import type { RestContext } from './app.js';
import { type Attachment, type ExecRecord, type ExecutionRegistry, boxOf, checkSignal, registryOf } from './executions.js';

export const PING_INTERVAL_MS = 15_000;
export const DEAD_AFTER_MS = 45_000;
export const TAKEOVER_PROBE_MS = 2_000;
/** Stdin bytes queued towards the guest before the socket stops being read. */
const STDIN_HIGH_WATER = 1024 * 1024;

export interface AttachTiming {
  pingIntervalMs: number;
  deadAfterMs: number;
  probeMs: number;
}

const CLAIM = Symbol('boxlite-attach-claim');
type Claimed = FastifyRequest & { [CLAIM]?: { rec: ExecRecord; token: object } };

/** Claims `rec` for the request being upgraded (409 when a live client holds it). */
async function claim(rec: ExecRecord, req: Claimed, timing: AttachTiming): Promise<void> {
  const busy = () => new InvalidStateError(`execution ${rec.id} already has an attached client`);
  if (rec.claiming) throw busy();
  if (rec.attachment) {
    rec.claiming = true;
    let alive: boolean;
    try {
      alive = await rec.attachment.probe(timing.probeMs);
    } finally {
      rec.claiming = false;
    }
    if (alive && rec.attachment) throw busy();
    rec.attachment?.terminate(4001, 'taken over by a new attach');
    rec.attachment = null;
  }
  const token = {};
  rec.claiming = true;
  claimOwner.set(rec, token);
  req[CLAIM] = { rec, token };
  // A handshake that never completes must not keep the slot (released only by its own claim).
  req.raw.socket?.once('close', () => {
    if (claimOwner.get(rec) === token) {
      claimOwner.delete(rec);
      rec.claiming = false;
    }
  });
}

/** The request currently holding an execution's claim (between preValidation and the socket). */
const claimOwner = new WeakMap<ExecRecord, object>();

function serve(rec: ExecRecord, socket: WebSocket, reg: ExecutionRegistry, timing: AttachTiming, log: (l: string) => void, requestId: string): void {
  claimOwner.delete(rec);
  rec.claiming = false;
  reg.attached(rec, true);
  log(`${requestId} attach ${rec.id} open (replay from frame ${rec.log.firstUnacked})`);
  let cursor = rec.log.firstUnacked;
  let lastSeen = Date.now();
  let ackInFlight = false;
  let exitSent = false;
  let closed = false;
  let stdinQueued = 0;
  let stdinChain: Promise<void> = Promise.resolve();
  const probes = new Set<() => void>();
  const input = rec.execution.stdin();

  const seen = () => {
    lastSeen = Date.now();
    for (const p of [...probes]) p();
  };
  const errorFrame = (message: string) => {
    if (!closed) socket.send(JSON.stringify({ type: 'error', message }));
  };
  const ping = (payload: string) => {
    if (!closed) socket.ping(Buffer.from(payload));
  };

  const flush = () => {
    if (closed || exitSent) return;
    const frames = rec.log.from(cursor);
    for (const f of frames) {
      socket.send(Buffer.concat([Buffer.from([f.ch]), f.data]), { binary: true });
      cursor = f.seq + 1;
    }
    // A Pong to this Ping proves the peer read everything before it: the log may then let go.
    if (frames.length && !ackInFlight) {
      ackInFlight = true;
      ping(String(cursor - 1));
    }
    if (rec.finished && rec.log.ended && cursor >= rec.log.nextSeq) {
      exitSent = true;
      socket.send(JSON.stringify({ type: 'exit', exit_code: rec.exitCode ?? -1 }));
      ping('exit');
      socket.close(1000);
    }
  };

  const attachment: Attachment = {
    probe(ms) {
      if (closed) return Promise.resolve(false);
      return new Promise<boolean>((resolve) => {
        const done = (v: boolean) => {
          clearTimeout(t);
          probes.delete(ok);
          resolve(v);
        };
        const ok = () => done(true);
        const t = setTimeout(() => done(false), ms);
        probes.add(ok);
        ping('probe');
      });
    },
    terminate(code = 1001, reason = '') {
      if (closed) return;
      if (code === 1001) {
        errorFrame(reason || 'server shutting down');
        // Shutdown ends every execution this server runs: an exit frame lets a client's wait() end
        // now (the 0.10 client would otherwise retry its attach against the next server for minutes).
        if (!exitSent) socket.send(JSON.stringify({ type: 'exit', exit_code: rec.exitCode ?? -1 }));
      }
      if (code >= 4000 || code === 1001) {
        try {
          socket.close(code, reason);
        } catch {
          socket.terminate();
        }
        setTimeout(() => socket.terminate(), 1000).unref();
      } else {
        socket.terminate();
      }
      cleanup(1006);
    },
  };
  rec.attachment = attachment;

  const unsubscribe = rec.log.subscribe(flush);
  const keepalive = setInterval(() => {
    if (Date.now() - lastSeen > timing.deadAfterMs) {
      log(`attach ${rec.id}: no answer for ${timing.deadAfterMs / 1000}s, dropping the client`);
      socket.terminate();
      cleanup(1006);
      return;
    }
    ping(String(cursor - 1));
  }, timing.pingIntervalMs);
  keepalive.unref();

  function cleanup(code: number) {
    if (closed) return;
    closed = true;
    clearInterval(keepalive);
    unsubscribe();
    for (const p of [...probes]) probes.delete(p);
    if (rec.attachment === attachment) {
      rec.attachment = null;
      reg.attached(rec, false);
    }
    // The peer answered our Close: it read the exit frame before it.
    if (exitSent && code !== 1006) rec.delivered = true;
    log(`${requestId} attach ${rec.id} closed (${code}${exitSent ? ', exit sent' : ''})`);
  }

  socket.on('pong', (data: Buffer) => {
    seen();
    const text = data.toString('utf8');
    if (text === 'exit') {
      rec.delivered = true;
      return;
    }
    const n = Number(text);
    if (text !== '' && Number.isInteger(n)) {
      rec.log.ack(n);
      ackInFlight = false;
      if (cursor - 1 > n) {
        ackInFlight = true;
        ping(String(cursor - 1));
      }
    }
  });
  socket.on('ping', seen);
  socket.on('message', (data: Buffer | ArrayBuffer | Buffer[], isBinary: boolean) => {
    seen();
    const buf = Array.isArray(data) ? Buffer.concat(data) : Buffer.from(data as ArrayBuffer);
    if (isBinary) {
      if (!buf.length) return;
      stdinQueued += buf.length;
      if (stdinQueued > STDIN_HIGH_WATER) socket.pause();
      stdinChain = stdinChain
        .then(async () => (await input).write(buf))
        .catch((e: unknown) => errorFrame(`stdin write failed: ${toBoxliteError(e).message}`))
        .finally(() => {
          stdinQueued -= buf.length;
          if (stdinQueued <= STDIN_HIGH_WATER && !closed) socket.resume();
        });
      return;
    }
    let msg: unknown;
    try {
      msg = JSON.parse(buf.toString('utf8'));
    } catch {
      errorFrame('invalid control message: not JSON');
      return;
    }
    const m = (msg && typeof msg === 'object' ? msg : {}) as Record<string, unknown>;
    switch (m.type) {
      case 'stdin_eof':
        stdinChain = stdinChain.then(async () => (await input).close()).catch(() => undefined);
        return;
      case 'resize': {
        const { rows, cols } = m;
        if (!Number.isInteger(rows) || !Number.isInteger(cols) || (rows as number) < 1 || (cols as number) < 1) {
          errorFrame('invalid resize: rows and cols must be integers > 0');
          return;
        }
        if (!rec.tty) {
          errorFrame(`resize failed: execution ${rec.id} has no TTY`);
          return;
        }
        rec.execution.resizeTty(rows as number, cols as number).catch((e: unknown) => errorFrame(`resize failed: ${toBoxliteError(e).message}`));
        return;
      }
      case 'signal': {
        let sig: number;
        try {
          sig = checkSignal(m.sig ?? m.signal);
        } catch (e) {
          errorFrame(toBoxliteError(e).message);
          return;
        }
        rec.execution.signal(sig).catch((e: unknown) => errorFrame(`signal failed: ${toBoxliteError(e).message}`));
        return;
      }
      case undefined:
        errorFrame('invalid control message: missing "type"');
        return;
      default:
        errorFrame(`unknown control message type ${JSON.stringify(m.type)}`);
    }
  });
  socket.on('close', (code: number) => cleanup(code));
  socket.on('error', () => cleanup(1006));

  if (reg.closing) {
    attachment.terminate(1001, 'server shutting down');
    return;
  }
  ping(String(cursor - 1)); // at once: the 0.10 client wants a frame within 10 s
  flush();
}

export function attachRoutes(app: FastifyInstance, ctx: RestContext): void {
  const reg = registryOf(ctx);
  const timing: AttachTiming = {
    pingIntervalMs: PING_INTERVAL_MS,
    deadAfterMs: DEAD_AFTER_MS,
    probeMs: TAKEOVER_PROBE_MS,
    ...ctx.opts.attachTiming,
  };
  const mainIds = new WeakMap<IncomingMessage, string>();
  // One box.attach() per box at a time: two simultaneous first attaches share it (a second main
  // session would be left running, never registered).
  const mainStarting = new Map<string, Promise<ExecRecord>>();
  let headersHooked = false;
  const hookHeaders = () => {
    if (headersHooked) return;
    headersHooked = true;
    const wss = (app as unknown as { websocketServer: { on(ev: 'headers', fn: (h: string[], r: IncomingMessage) => void): void } }).websocketServer;
    wss.on('headers', (headers, raw) => {
      const id = mainIds.get(raw);
      if (id) headers.push(`X-Boxlite-Execution-Id: ${id}`);
    });
  };
  const needsUpgrade = (req: FastifyRequest) => {
    if (!(req as unknown as { ws?: boolean }).ws) throw new InvalidArgumentError('this route needs a WebSocket upgrade');
  };

  app.get<{ Params: { box_id: string; eid: string } }>(
    '/boxes/:box_id/executions/:eid/attach',
    {
      websocket: true,
      preValidation: async (req) => {
        needsUpgrade(req);
        const box = await boxOf(ctx, req.params.box_id);
        const rec = reg.find(box.id, req.params.eid);
        if (rec.finished && rec.delivered && !rec.attachment) {
          throw new InvalidStateError(`execution ${rec.id} has finished and its output and exit status were delivered`);
        }
        await claim(rec, req as Claimed, timing);
      },
    },
    (socket, req) => {
      const c = (req as Claimed)[CLAIM];
      if (!c) return void socket.close(1011, 'no claim');
      serve(c.rec, socket as unknown as WebSocket, reg, timing, ctx.log, req.id);
    },
  );

  app.get<{ Params: { box_id: string }; Querystring: { tty?: string } }>(
    '/boxes/:box_id/attach',
    {
      websocket: true,
      preValidation: async (req) => {
        needsUpgrade(req);
        hookHeaders();
        const box = await boxOf(ctx, req.params.box_id);
        let rec = reg.mainOf(box.id);
        if (!rec) {
          let starting = mainStarting.get(box.id);
          if (!starting) {
            const tty = req.query.tty === 'true' || req.query.tty === '1';
            starting = box
              .attach({ tty })
              .then((execution) => reg.mainOf(box.id) ?? reg.add(box, execution, tty, null, true))
              .finally(() => mainStarting.delete(box.id));
            mainStarting.set(box.id, starting);
          }
          rec = await starting;
        }
        await claim(rec, req as Claimed, timing);
        mainIds.set(req.raw, rec.id);
      },
    },
    (socket, req) => {
      const c = (req as Claimed)[CLAIM];
      if (!c) return void socket.close(1011, 'no claim');
      serve(c.rec, socket as unknown as WebSocket, reg, timing, ctx.log, req.id);
    },
  );
}
