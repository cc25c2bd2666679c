// The reference's error envelope `{error:{message,type,code,request_id}}` and status table
// (rest-contract §1.4, carried by ERROR_TABLE.httpStatus/httpCode), for every failure the server
// answers: SDK errors, validation, malformed bodies, unknown routes (404) and methods (405).
// Never a stack trace; unexpected errors are logged by message and answered as a bare 500 `internal`.
import type { FastifyError, FastifyInstance, FastifyReply, FastifyRequest } from 'fastify';
import { ZodError } from 'zod';
import { BoxliteError, ERROR_TABLE, type ErrorCode } from '../../errors/index.js';
import type { RestContext } from './app.js';

export interface ErrorEnvelope {
  error: { message: string; type: string; code: string; request_id?: string };
}

export function envelope(requestId: string | undefined, message: string, type: string, code: string): ErrorEnvelope {
  return { error: { message, type, code, ...(requestId ? { request_id: requestId } : {}) } };
}

/** `type` per our error code: the reference's variant names (§1.4). */
const TYPE: Record<ErrorCode, string> = {
  UnsupportedEngine: 'UnsupportedError',
  Engine: 'EngineError',
  Config: 'InvalidArgumentError',
  Storage: 'StorageError',
  Image: 'ImageError',
  Portal: 'UpstreamUnavailableError',
  Network: 'NetworkError',
  Execution: 'ExecutionError',
  Internal: 'InternalError',
  NotFound: 'NotFoundError',
  AlreadyExists: 'AlreadyExistsError',
  InvalidState: 'InvalidStateError',
  Timeout: 'TimeoutError',
  Parse: 'InternalError',
  InvalidArgument: 'InvalidArgumentError',
  Unsupported: 'UnsupportedError',
  Stopped: 'StoppedError',
  ResourceExhausted: 'ResourceExhaustedError',
  SessionReaped: 'SessionReapedError',
};

/** An error already shaped for the wire (a status, type and code the SDK's table does not cover, e.g. 413). */
export class HttpError extends Error {
  constructor(
    readonly status: number,
    readonly type: string,
    readonly code: string,
    message: string,
  ) {
    super(message);
    this.name = 'HttpError';
  }
}

export const payloadTooLarge = (message: string) => new HttpError(413, 'PayloadTooLargeError', 'payload_too_large', message);
export const invalidArgument = (message: string) =>
  new HttpError(400, 'InvalidArgumentError', 'invalid_argument', message.startsWith('invalid argument: ') ? message : `invalid argument: ${message}`);
export const unsupported = (what: string) => new HttpError(400, 'UnsupportedError', 'unsupported', `unsupported: ${what}`);

/** `a.b[2].c: message` for the first few issues of a zod error. */
export function zodMessage(err: ZodError, where = 'body'): string {
  const parts = err.issues.slice(0, 5).map((i) => {
    const field = i.path.length ? i.path.map((p, k) => (typeof p === 'number' ? `[${p}]` : k ? `.${p}` : p)).join('') : where;
    if (i.code === 'unrecognized_keys') return `${field === where ? where : field}: unknown field(s) ${i.keys.map((k) => JSON.stringify(k)).join(', ')}`;
    return `${field}: ${i.message}`;
  });
  return parts.join('; ');
}

/** Status + envelope for any thrown value. `internal` carries the unexpected error for the log. */
export function toHttp(err: unknown, requestId?: string): { status: number; body: ErrorEnvelope; internal?: string } {
  if (err instanceof HttpError) return { status: err.status, body: envelope(requestId, err.message, err.type, err.code) };
  if (err instanceof ZodError) {
    return { status: 400, body: envelope(requestId, `invalid argument: ${zodMessage(err)}`, 'InvalidArgumentError', 'invalid_argument') };
  }
  if (err instanceof BoxliteError) {
    const row = ERROR_TABLE[err.code];
    let message = err.message;
    if (err.code === 'Config') message = `invalid argument: ${message.slice(ERROR_TABLE.Config.prefix.length)}`;
    // A 500's text is the server's business (it can name its paths and user): the client gets the
    // kind and the request id, the log gets the message.
    if (row.httpStatus === 500) message = `${row.prefix}server failure (see the server log for request ${requestId ?? '-'})`;
    return {
      status: row.httpStatus,
      body: envelope(requestId, message, TYPE[err.code], row.httpCode),
      ...(row.httpStatus >= 500 ? { internal: `${err.code}: ${err.message}` } : {}),
    };
  }
  const fe = err as Partial<FastifyError> & { type?: string };
  if (fe && typeof fe === 'object' && typeof fe.statusCode === 'number' && fe.statusCode >= 400 && fe.statusCode < 500) {
    if (fe.statusCode === 413 || fe.code === 'FST_ERR_CTP_BODY_TOO_LARGE') {
      return { status: 413, body: envelope(requestId, 'payload too large: request body exceeds the limit', 'PayloadTooLargeError', 'payload_too_large') };
    }
    const what =
      fe.code === 'FST_ERR_CTP_INVALID_MEDIA_TYPE' ? `unsupported Content-Type: ${fe.message}`
      : fe.code === 'FST_ERR_CTP_EMPTY_JSON_BODY' ? 'body: a JSON body was announced but is empty'
      : fe instanceof SyntaxError || fe.code === 'FST_ERR_CTP_INVALID_JSON_BODY' ? `body: malformed JSON (${fe.message})`
      : fe.message ?? 'bad request';
    return { status: 400, body: envelope(requestId, `invalid argument: ${what}`, 'InvalidArgumentError', 'invalid_argument') };
  }
  const detail = err instanceof Error ? `${err.name}: ${err.message}` : String(err);
  return { status: 500, body: envelope(requestId, 'internal error: unexpected server failure (see the server log for this request id)', 'InternalError', 'internal'), internal: detail };
}

/** Answers `reply` with the envelope of `err` (logging 5xx causes). */
export function sendError(ctx: Pick<RestContext, 'log'>, req: FastifyRequest, reply: FastifyReply, err: unknown): FastifyReply {
  const { status, body, internal } = toHttp(err, req.id);
  if (internal) ctx.log(`${req.id} error ${status}: ${internal}`);
  // HEAD answers carry no body (404 from boxExists is bare, as in the reference).
  if (req.method === 'HEAD') return reply.code(status).send();
  return reply.code(status).type('application/json').send(body);
}

export function installErrorHandling(app: FastifyInstance, ctx: RestContext, allowedOtherwise: (method: string, url: string) => boolean): void {
  app.setErrorHandler((err, req, reply) => sendError(ctx, req, reply, err));
  app.setNotFoundHandler((req, reply) => {
    if (allowedOtherwise(req.method, req.url)) {
      return sendError(ctx, req, reply, new HttpError(405, 'InvalidArgumentError', 'method_not_allowed', `invalid argument: method ${req.method} not allowed on ${req.url.split('?')[0]}`));
    }
    return sendError(ctx, req, reply, new HttpError(404, 'NotFoundError', 'not_found', `not found: no route ${req.method} ${req.url.split('?')[0]}`));
  });
}
