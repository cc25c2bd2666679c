// Executions over REST (rest-contract §2.3, §5.1.7, §5.1.9, §5.1.10): POST …/exec starts a command
// through the SDK's Box.exec and registers it here; its output is pumped from t=0 into a bounded
// OutputLog (output-log.ts) that the attach WebSocket (attach.ts) drains. Status, kill, signal and
// resize work whether or not a socket is attached (the 0.10 client sends them before its upgrade).
import { randomUUID } from 'node:crypto';
import type { FastifyInstance } from 'fastify';
import * as S from '../schemas.js';
import {
  InvalidArgumentError,
  InvalidStateError,
  NotFoundError,
  ResourceExhaustedError,
  TimeoutError,
  toBoxliteError,
} from '../../errors/index.js';
import type { Execution, ExecResult } from '../../runtime/execution.js';
import type { RestBox, RestContext } from './app.js';
import { parse } from './boxes.js';
import { OutputLog, pump } from './output-log.js';

/** Signals a client may send (the reference's whitelist: HUP INT QUIT ABRT USR1 USR2 TERM WINCH); 9 goes through DELETE. */
export const ALLOWED_SIGNALS: readonly number[] = [1, 2, 3, 6, 10, 12, 15, 28];

export type ExecStatus = 'running' | 'completed' | 'killed' | 'timed_out';

export interface ExecutionTuning {
  /** Bytes of unacknowledged output held per execution before the process is slowed down. */
  bufferBytes: number;
  /** How long a finished execution stays queryable (and attachable for its replay). */
  retentionMs: number;
  /** Limit for delivering a signal or kill to the guest. */
  signalTimeoutMs: number;
  /**
   * Reaper (§2.5): an execution whose client went away and did not come back within this gets
   * SIGHUP (BOXLITE_RECONNECT_GRACE). Unlike the reference, the clock starts at the last detach,
   * not at creation: a never-attached execution is not reaped (except by maxLifetimeMs).
   */
  reconnectGraceMs: number;
  /** Then SIGTERM after this, then SIGKILL after this again (BOXLITE_SHUTDOWN_GRACE). */
  shutdownGraceMs: number;
  /** Any execution older than this is killed (BOXLITE_MAX_SESSION_LIFETIME). Main sessions are never reaped. */
  maxLifetimeMs: number;
  /** How often the reaper looks. */
  reapTickMs: number;
  /**
   * Executions running (or starting) at once per box and per server: past these an exec is 429
   * resource_exhausted, since each one holds output buffers on the server (up to ~9 MiB).
   */
  maxRunningPerBox: number;
  maxRunning: number;
  /** Finished executions kept for their replay and status: past this the oldest go first. */
  maxRetained: number;
}

/** `Ns`, `Nm`, `Nh` or plain seconds (the reference's env duration format) → ms; undefined when unset or bad. */
export function parseDuration(v: string | undefined): number | undefined {
  const m = /^\s*(\d+(?:\.\d+)?)\s*([smh]?)\s*$/.exec(v ?? '');
  if (!m) return undefined;
  return Number(m[1]) * (m[2] === 'h' ? 3_600_000 : m[2] === 'm' ? 60_000 : 1000);
}

export const DEFAULT_TUNING: ExecutionTuning = {
  bufferBytes: 1024 * 1024,
  retentionMs: 5 * 60_000,
  signalTimeoutMs: 10_000,
  reconnectGraceMs: 5 * 60_000,
  shutdownGraceMs: 30_000,
  maxLifetimeMs: 24 * 3_600_000,
  reapTickMs: 30_000,
  maxRunningPerBox: 64,
  maxRunning: 256,
  maxRetained: 1024,
};

/** DEFAULT_TUNING with the reference's environment knobs applied. */
export function tuningFromEnv(env: NodeJS.ProcessEnv = process.env): ExecutionTuning {
  const t = { ...DEFAULT_TUNING };
  t.reconnectGraceMs = parseDuration(env.BOXLITE_RECONNECT_GRACE) ?? t.reconnectGraceMs;
  t.shutdownGraceMs = parseDuration(env.BOXLITE_SHUTDOWN_GRACE) ?? t.shutdownGraceMs;
  t.maxLifetimeMs = parseDuration(env.BOXLITE_MAX_SESSION_LIFETIME) ?? t.maxLifetimeMs;
  return t;
}

/** What the attach module registers for the live socket of an execution. */
export interface Attachment {
  /** Resolves true when the peer answered within `ms` (a Pong or any frame). */
  probe(ms: number): Promise<boolean>;
  /** Ends the socket (taken over, server closing). */
  terminate(code?: number, reason?: string): void;
}

export class ExecRecord {
  readonly startedAt = new Date();
  finishedAt?: Date;
  status: ExecStatus = 'running';
  exitCode: number | null = null;
  errorMessage: string | null = null;
  /** Set by DELETE (kill): the end is reported as `killed`. */
  killRequested = false;
  /** The exit frame reached a client (its close handshake or a Pong after it). */
  delivered = false;
  attachment: Attachment | null = null;
  /** A handshake is in progress (between the claim and the socket). */
  claiming = false;
  /** When the last client went away (null: attached now, or never attached). */
  detachedAt: number | null = null;
  /** Reaper escalation: 0 none, 1 HUP sent, 2 TERM sent, 3 KILL sent; `escalatedAt` is the last step's time. */
  reapStage = 0;
  escalatedAt = 0;
  readonly log: OutputLog;
  readonly done: Promise<void>;
  private doneListeners = new Set<() => void>();

  constructor(
    readonly id: string,
    readonly boxId: string,
    readonly execution: Execution,
    readonly tty: boolean,
    readonly timeoutSecs: number | null,
    bufferBytes: number,
    /** The box's main command (GET /boxes/{id}/attach): never reaped, one per box. */
    readonly main = false,
  ) {
    this.log = new OutputLog(bufferBytes);
    this.done = this.run();
  }

  private async run(): Promise<void> {
    // Claim both streams before wait(): the SDK discards output nobody asked for once wait() runs.
    const [out, err] = await Promise.all([this.execution.stdout(), this.execution.stderr()]);
    const pumps = Promise.all([pump(this.log, 1, out), pump(this.log, 2, err)]);
    let result: ExecResult | undefined;
    let failure: unknown;
    try {
      result = await this.execution.wait();
    } catch (e) {
      failure = e;
    }
    this.log.lift();
    await pumps;
    this.finishedAt = new Date();
    if (result) {
      this.exitCode = result.exitCode;
      this.errorMessage = result.errorMessage ?? null;
      if (this.killRequested) this.status = 'killed';
      else if (this.timeoutSecs && result.errorMessage && result.exitCode < 0) this.status = 'timed_out';
      else this.status = 'completed';
    } else {
      // The box went away under the command: no exit status, and the reason says so.
      this.status = this.killRequested ? 'killed' : 'completed';
      this.exitCode = -1;
      this.errorMessage = toBoxliteError(failure).message;
    }
    this.log.end();
    for (const f of [...this.doneListeners]) f();
  }

  get finished(): boolean {
    return this.finishedAt !== undefined;
  }

  onDone(fn: () => void): () => void {
    this.doneListeners.add(fn);
    return () => this.doneListeners.delete(fn);
  }

  /** ExecutionInfo of the OpenAPI. */
  info(): Record<string, unknown> {
    const end = this.finishedAt ?? new Date();
    return {
      execution_id: this.id,
      status: this.status,
      exit_code: this.exitCode,
      started_at: this.startedAt.toISOString(),
      duration_ms: this.finished ? end.getTime() - this.startedAt.getTime() : null,
      error_message: this.errorMessage,
    };
  }
}

/** Every execution the server started, by id; finished ones are kept `retentionMs`, then forgotten. */
export class ExecutionRegistry {
  private readonly map = new Map<string, ExecRecord>();
  private readonly timers = new Set<NodeJS.Timeout>();
  /** Executions being started, by box: counted against the limits before they are in `map`. */
  private readonly starting = new Map<string, number>();
  /** Ids of finished executions, oldest first (the retention cap evicts from the front). */
  private readonly finishedOrder: string[] = [];
  closing = false;

  private reaper?: NodeJS.Timeout;

  constructor(
    readonly tuning: ExecutionTuning = DEFAULT_TUNING,
    private readonly log: (line: string) => void = () => {},
  ) {
    this.reaper = setInterval(() => this.reap(), tuning.reapTickMs);
    this.reaper.unref();
  }

  /** A client attached (`true`) or went away (`false`). */
  attached(rec: ExecRecord, on: boolean): void {
    rec.detachedAt = on ? null : Date.now();
    if (on) rec.reapStage = 0;
  }

  /** One reaper pass (§2.5, with the clock starting at the last detach). */
  reap(now = Date.now()): void {
    const t = this.tuning;
    for (const rec of this.map.values()) {
      if (rec.finished || rec.main) continue;
      const send = (sig: number, stage: number, why: string) => {
        rec.reapStage = stage;
        rec.escalatedAt = now;
        if (sig === 9) rec.killRequested = true;
        this.log(`reaper: execution ${rec.id} ${why}: signal ${sig}`);
        void rec.execution.signal(sig).catch(() => undefined);
      };
      if (now - rec.startedAt.getTime() > t.maxLifetimeMs && rec.reapStage < 3) {
        send(9, 3, `older than ${t.maxLifetimeMs / 1000}s`);
        continue;
      }
      if (rec.attachment || rec.claiming || rec.detachedAt === null) continue;
      if (rec.reapStage === 0 && now - rec.detachedAt > t.reconnectGraceMs) send(1, 1, `no client for ${t.reconnectGraceMs / 1000}s`);
      else if (rec.reapStage === 1 && now - rec.escalatedAt > t.shutdownGraceMs) send(15, 2, 'still running after SIGHUP');
      else if (rec.reapStage === 2 && now - rec.escalatedAt > t.shutdownGraceMs) send(9, 3, 'still running after SIGTERM');
    }
  }

  /**
   * Claims a slot for an execution about to start in `boxId` (counted until `release`), or throws
   * ResourceExhausted when the box or the server runs as many as the tuning allows.
   */
  reserve(boxId: string): () => void {
    let box = this.starting.get(boxId) ?? 0;
    let all = [...this.starting.values()].reduce((a, b) => a + b, 0);
    for (const r of this.map.values()) {
      if (r.finished) continue;
      all++;
      if (r.boxId === boxId) box++;
    }
    if (box >= this.tuning.maxRunningPerBox) {
      throw new ResourceExhaustedError(`box ${boxId} already runs ${box} executions (the limit is ${this.tuning.maxRunningPerBox})`);
    }
    if (all >= this.tuning.maxRunning) throw new ResourceExhaustedError(`the server already runs ${all} executions (the limit is ${this.tuning.maxRunning})`);
    this.starting.set(boxId, (this.starting.get(boxId) ?? 0) + 1);
    let released = false;
    return () => {
      if (released) return;
      released = true;
      const n = (this.starting.get(boxId) ?? 1) - 1;
      if (n > 0) this.starting.set(boxId, n);
      else this.starting.delete(boxId);
    };
  }

  add(box: RestBox, execution: Execution, tty: boolean, timeoutSecs: number | null, main = false): ExecRecord {
    const rec = new ExecRecord(randomUUID(), box.id, execution, tty, timeoutSecs, this.tuning.bufferBytes, main);
    this.map.set(rec.id, rec);
    void rec.done.then(() => {
      this.finishedOrder.push(rec.id);
      // Over the cap the oldest finished ones go before their retention ends (Map order: oldest first).
      while (this.finishedOrder.length > this.tuning.maxRetained) {
        const old = this.finishedOrder.shift()!;
        const r = this.map.get(old);
        if (r?.finished && !r.attachment) this.map.delete(old);
      }
      const t = setTimeout(() => {
        this.timers.delete(t);
        if (this.map.get(rec.id) === rec) this.map.delete(rec.id);
      }, this.tuning.retentionMs);
      t.unref();
      this.timers.add(t);
    });
    return rec;
  }

  /** The execution `eid` of box `boxId` (an id of another box is not found, as in the reference). */
  find(boxId: string, eid: string): ExecRecord {
    const rec = this.map.get(eid);
    if (!rec || rec.boxId !== boxId) throw new NotFoundError('execution', eid);
    return rec;
  }

  /** The live main-command session of a box, if any. */
  mainOf(boxId: string): ExecRecord | undefined {
    for (const r of this.map.values()) if (r.main && r.boxId === boxId && !r.finished) return r;
    return undefined;
  }

  all(): ExecRecord[] {
    return [...this.map.values()];
  }

  /** Server shutdown: attached sockets are closed with 1001 (the executions themselves are the boxes' to end). */
  async close(): Promise<void> {
    this.closing = true;
    if (this.reaper) clearInterval(this.reaper);
    for (const t of this.timers) clearTimeout(t);
    this.timers.clear();
    for (const r of this.map.values()) r.attachment?.terminate(1001, 'server shutting down');
  }
}

/** The registry of ctx (created on first use: app.ts leaves the slot to this module). */
export function registryOf(ctx: RestContext): ExecutionRegistry {
  if (!(ctx.executions instanceof ExecutionRegistry)) {
    // Tuning knobs: RestAppOptions.execTuning (tests, embedders) over the env knobs and defaults.
    const t = ctx.opts.execTuning;
    const reg = new ExecutionRegistry({ ...tuningFromEnv(), ...t }, ctx.log);
    ctx.executions = reg;
    ctx.onClose.push(() => reg.close());
  }
  return ctx.executions as ExecutionRegistry;
}

/** The box of a route (404 `box not found: X`). */
export async function boxOf(ctx: RestContext, idOrName: string): Promise<RestBox> {
  return ctx.boxes.handle(idOrName);
}

function withTimeout<T>(p: Promise<T>, ms: number, what: string): Promise<T> {
  return new Promise<T>((resolve, reject) => {
    const t = setTimeout(() => reject(new TimeoutError(`${what} did not complete within ${ms / 1000}s`)), ms);
    p.then(
      (v) => {
        clearTimeout(t);
        resolve(v);
      },
      (e: unknown) => {
        clearTimeout(t);
        reject(toBoxliteError(e));
      },
    );
  });
}

/** Checks a control signal (HTTP signal route and the socket's `signal` frame). */
export function checkSignal(sig: unknown): number {
  if (typeof sig !== 'number' || !Number.isInteger(sig) || !ALLOWED_SIGNALS.includes(sig)) {
    throw new InvalidArgumentError(
      `signal ${String(sig)} is not allowed (allowed: ${ALLOWED_SIGNALS.join(', ')}); use DELETE on the execution for kill`,
    );
  }
  return sig;
}

type Params = { box_id: string; eid: string };

export function executionRoutes(app: FastifyInstance, ctx: RestContext): void {
  const reg = registryOf(ctx);

  app.post<{ Params: { box_id: string } }>('/boxes/:box_id/exec', async (req, reply) => {
    const body = parse(S.ExecRequest, req.body ?? {});
    const box = await boxOf(ctx, req.params.box_id);
    const env = body.env ? (Object.entries(body.env) as Array<[string, string]>) : null;
    const tty = body.tty ?? false;
    const timeout = body.timeout_seconds || null; // 0 → none
    const release = reg.reserve(box.id);
    let rec: ExecRecord;
    try {
      const execution = await box.exec(body.command, body.args ?? null, env, tty, body.user ?? null, timeout, body.working_dir ?? null);
      rec = reg.add(box, execution, tty, timeout);
    } finally {
      release();
    }
    const execution = rec.execution;
    if (typeof body.stdin === 'string') {
      const input = await execution.stdin();
      void input.writeString(body.stdin).then(() => input.close()).catch(() => undefined);
    }
    const location = `${req.url.split('?')[0]!.replace(/\/exec\/?$/, '')}/executions/${rec.id}`;
    return reply.code(201).header('location', location).send({ execution_id: rec.id });
  });

  app.get<{ Params: Params }>('/boxes/:box_id/executions/:eid', async (req) => {
    const box = await boxOf(ctx, req.params.box_id);
    return reg.find(box.id, req.params.eid).info();
  });

  app.delete<{ Params: Params }>('/boxes/:box_id/executions/:eid', async (req, reply) => {
    const box = await boxOf(ctx, req.params.box_id);
    const rec = reg.find(box.id, req.params.eid);
    if (!rec.finished) {
      rec.killRequested = true;
      await withTimeout(rec.execution.kill(), reg.tuning.signalTimeoutMs, `kill of execution ${rec.id}`);
    }
    return reply.code(204).send();
  });

  app.post<{ Params: Params }>('/boxes/:box_id/executions/:eid/signal', async (req, reply) => {
    const body = parse(S.SignalRequest, req.body ?? {});
    const sig = checkSignal(body.signal);
    const box = await boxOf(ctx, req.params.box_id);
    const rec = reg.find(box.id, req.params.eid);
    if (rec.finished) throw new InvalidStateError(`execution ${rec.id} has already finished`);
    await withTimeout(rec.execution.signal(sig), reg.tuning.signalTimeoutMs, `signal ${sig} to execution ${rec.id}`);
    return reply.code(204).send();
  });

  app.post<{ Params: Params }>('/boxes/:box_id/executions/:eid/resize', async (req, reply) => {
    const body = parse(S.ResizeRequest, req.body ?? {});
    const box = await boxOf(ctx, req.params.box_id);
    const rec = reg.find(box.id, req.params.eid);
    if (!rec.tty) throw new InvalidStateError(`execution ${rec.id} has no TTY (started without tty: true); cannot resize it`);
    if (rec.finished) throw new InvalidStateError(`execution ${rec.id} has already finished`);
    await rec.execution.resizeTty(body.rows, body.cols);
    return reply.code(204).send();
  });
}
