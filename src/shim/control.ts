// Control commands (docs/protocol.md §6): CONTROL requests a client sends the shim itself,
// typed end to end. One handler per op on the shim side; the client side bounds each op by
// its own timeout, so a shim that stops answering is a Timeout, never a hung call.
import { BoxliteError, InvalidArgumentError, PortalError, toBoxliteError, type ErrorCode } from '../errors/index.js';
import type { ShimState } from './config.js';
import type { RoutedClient } from './router.js';

export type ControlRequest =
  | { op: 'info' }
  | { op: 'ping' }
  | { op: 'stop' }
  | { op: 'attach'; tty?: boolean }
  | { op: 'network' }
  | { op: 'pause' }
  | { op: 'resume' }
  /** Live disk snapshot (src/shim/disk-ops.ts): switch the root drive onto `overlay`, or only report (no overlay). */
  | { op: 'disk'; overlay?: string; state?: string; pause?: boolean };
export type ControlOp = ControlRequest['op'];

export interface ControlReplies {
  info: ShimState;
  ping: { rttMs: number };
  stop: Record<never, never>;
  /**
   * The main process as seen by an attaching client: its pid (its output, STDIN, SIGNAL, RESIZE
   * and EXIT then flow on the request's stream), or how it ended when it already has.
   */
  attach: { pid: number } | { exited: true; exitCode: number; message?: string };
  /** The box network's counters (COUNTER slot names) and the stack's live state (inspect). */
  network: { counters: Record<string, number>; snapshot: unknown };
  /** The VM's vCPUs are stopped (QMP `stop`) / running again (`cont`); idempotent. */
  pause: { paused: true };
  resume: { paused: false };
  /** The file QEMU writes the root drive to after the op. */
  /** With `state` (box.fork(): src/shim/fork.ts): the VM's memory saved there at the switch. */
  disk: { file: string; pausedMs?: number; stateBytes?: number };
}

/** Who sent a request, for ops that tie a stream to the client (attach). */
export interface ControlContext {
  client: RoutedClient;
  stream: number;
}

export type ControlReply<K extends ControlOp = ControlOp> =
  | ({ ok: true } & ControlReplies[K])
  | { ok: false; code: ErrorCode; message: string };

/** Client-side bound per op. `stop` covers the shim's graceful power-off bound (10 s) and cleanup. */
export const CONTROL_TIMEOUT_MS: Readonly<Record<ControlOp, number>> = {
  info: 10_000,
  ping: 15_000,
  stop: 30_000,
  // A held main process starts on the attach; the reply waits for it to have started.
  attach: 60_000,
  network: 10_000,
  pause: 15_000,
  resume: 15_000,
  disk: 70_000,
};

const OPS = new Set<string>(Object.keys(CONTROL_TIMEOUT_MS));

/**
 * Handlers, one per op. Each one answers through `reply` exactly once; `stop` replies
 * before the shim closes its sockets, so it cannot simply return its result.
 */
export type ControlHandlers = {
  [K in ControlOp]: (
    req: Extract<ControlRequest, { op: K }>,
    reply: (body: ControlReplies[K]) => void,
    ctx: ControlContext,
  ) => Promise<void>;
};

export function parseControlRequest(data: Buffer): ControlRequest {
  let req: unknown;
  try {
    req = JSON.parse(data.toString('utf8'));
  } catch (err) {
    throw new PortalError(`malformed CONTROL request: ${(err as Error).message}`, { cause: err });
  }
  const op = (req as { op?: unknown } | null)?.op;
  if (typeof op !== 'string' || !OPS.has(op)) {
    throw new InvalidArgumentError(`unknown control op ${JSON.stringify(op ?? null)}`);
  }
  if (op === 'attach') {
    const tty = (req as { tty?: unknown }).tty;
    return tty === true ? { op, tty } : { op };
  }
  if (op === 'disk') {
    const overlay = (req as { overlay?: unknown }).overlay;
    if (overlay !== undefined && typeof overlay !== 'string') throw new InvalidArgumentError('disk: overlay must be a string');
    const state = (req as { state?: unknown }).state;
    if (state !== undefined && (typeof state !== 'string' || overlay === undefined)) throw new InvalidArgumentError('disk: state must be a string, with an overlay');
    const pause = (req as { pause?: unknown }).pause;
    if (pause !== undefined && (typeof pause !== 'boolean' || overlay === undefined)) throw new InvalidArgumentError('disk: pause must be a boolean, with an overlay');
    return { op, ...(overlay !== undefined ? { overlay } : {}), ...(state !== undefined ? { state } : {}), ...(pause ? { pause } : {}) };
  }
  return { op } as ControlRequest;
}

/** Runs one request against the handlers; every failure becomes an `{ok:false}` reply. */
export async function serveControl(
  handlers: ControlHandlers,
  data: Buffer,
  send: (reply: ControlReply) => void,
  ctx: ControlContext,
): Promise<void> {
  let replied = false;
  const once = (body: ControlReply) => {
    if (replied) return;
    replied = true;
    send(body);
  };
  try {
    const req = parseControlRequest(data);
    const handler = handlers[req.op] as (r: ControlRequest, reply: (body: object) => void, ctx: ControlContext) => Promise<void>;
    await handler(req, (body) => once({ ok: true, ...body } as ControlReply), ctx);
  } catch (err) {
    const e: BoxliteError = toBoxliteError(err);
    once({ ok: false, code: e.code, message: e.message });
  }
}

/** Validates a REPLY body from the shim; anything but a JSON object with a boolean `ok` is a Portal error. */
export function parseControlReply(data: Buffer): ControlReply {
  let body: unknown;
  try {
    body = JSON.parse(data.toString('utf8'));
  } catch (err) {
    throw new PortalError(`malformed REPLY from the box shim: ${(err as Error).message}`, { cause: err });
  }
  if (typeof body !== 'object' || body === null || typeof (body as { ok?: unknown }).ok !== 'boolean') {
    throw new PortalError('malformed REPLY from the box shim: not an object with a boolean "ok"');
  }
  return body as ControlReply;
}
