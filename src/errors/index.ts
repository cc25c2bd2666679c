// The one error module: every error BoxLite raises is a BoxliteError with a
// `code` from the closed set below. Foreign errors (errno, QEMU, agent) are
// translated where they enter, never passed through raw. docs/errors.md is
// generated from ERROR_TABLE and a unit test keeps the two equal.

export type ErrorCode =
  | 'UnsupportedEngine'
  | 'Engine'
  | 'Config'
  | 'Storage'
  | 'Image'
  | 'Portal'
  | 'Network'
  | 'Execution'
  | 'Internal'
  | 'NotFound'
  | 'AlreadyExists'
  | 'InvalidState'
  | 'Timeout'
  | 'Parse'
  | 'InvalidArgument'
  | 'Unsupported'
  | 'Stopped'
  | 'ResourceExhausted'
  | 'SessionReaped';

export interface ErrorTableRow {
  /** Message prefix, as in the spec (`configuration error: …`). */
  prefix: string;
  /** Exit code of `boxlite run` / `boxlite exec` when this error ends them. */
  cliExit: number;
  /** HTTP status the REST server answers with (the reference's table, rest-contract §1.4). */
  httpStatus: number;
  /** `error.code` of the REST envelope (rest-contract §1.4). */
  httpCode: string;
  meaning: string;
}

export const ERROR_TABLE: Readonly<Record<ErrorCode, ErrorTableRow>> = {
  UnsupportedEngine: { prefix: 'unsupported engine kind', cliExit: 125, httpStatus: 400, httpCode: 'unsupported', meaning: 'platform or hypervisor not supported, or QEMU missing' },
  Engine: { prefix: 'engine reported an error: ', cliExit: 125, httpStatus: 503, httpCode: 'engine_unavailable', meaning: 'QEMU, the accelerator or guest assets failed' },
  Config: { prefix: 'configuration error: ', cliExit: 125, httpStatus: 400, httpCode: 'invalid_argument', meaning: 'invalid option; raised before anything starts' },
  Storage: { prefix: 'storage error: ', cliExit: 125, httpStatus: 500, httpCode: 'storage_error', meaning: 'filesystem, database, disk image or qcow2 operation failed' },
  Image: { prefix: 'images error: ', cliExit: 125, httpStatus: 422, httpCode: 'image_pull_failed', meaning: 'image pull, parse or extraction failed' },
  Portal: { prefix: 'portal error: ', cliExit: 125, httpStatus: 503, httpCode: 'upstream_unavailable', meaning: 'host ⇄ guest agent communication failed' },
  Network: { prefix: 'network error: ', cliExit: 125, httpStatus: 503, httpCode: 'network_unavailable', meaning: 'network set-up failed (e.g. port in use)' },
  Execution: { prefix: 'Execution error: ', cliExit: 126, httpStatus: 422, httpCode: 'execution_failed', meaning: 'a command could not be run (127 when not found)' },
  Internal: { prefix: 'internal error: ', cliExit: 125, httpStatus: 500, httpCode: 'internal', meaning: 'bug or unexpected state' },
  NotFound: { prefix: 'not found: ', cliExit: 125, httpStatus: 404, httpCode: 'not_found', meaning: 'box or resource does not exist (box: `box not found: <id>`)' },
  AlreadyExists: { prefix: 'already exists: ', cliExit: 125, httpStatus: 409, httpCode: 'already_exists', meaning: 'duplicate box name or resource' },
  InvalidState: { prefix: 'invalid state: ', cliExit: 125, httpStatus: 409, httpCode: 'invalid_state', meaning: 'box is in the wrong state for the operation' },
  Timeout: { prefix: 'timeout: ', cliExit: 125, httpStatus: 504, httpCode: 'timeout', meaning: 'an operation exceeded its time limit' },
  Parse: { prefix: 'parse error: ', cliExit: 125, httpStatus: 500, httpCode: 'internal', meaning: 'command output could not be parsed' },
  InvalidArgument: { prefix: 'invalid argument: ', cliExit: 125, httpStatus: 400, httpCode: 'invalid_argument', meaning: 'an argument of a call is malformed' },
  Unsupported: { prefix: 'unsupported: ', cliExit: 125, httpStatus: 400, httpCode: 'unsupported', meaning: 'operation not supported by this runtime, backend or agent (yet)' },
  Stopped: { prefix: 'stopped: ', cliExit: 125, httpStatus: 409, httpCode: 'stopped', meaning: 'the handle was invalidated by stop(); get a new one with runtime.get()' },
  ResourceExhausted: { prefix: 'resource exhausted: ', cliExit: 125, httpStatus: 429, httpCode: 'resource_exhausted', meaning: 'a limit was reached (memory, buffers, quotas)' },
  SessionReaped: { prefix: 'session reaped: ', cliExit: 125, httpStatus: 410, httpCode: 'session_reaped', meaning: 'a remote session or execution was reaped by the server' },
};

export interface BoxliteErrorOptions {
  cause?: unknown;
  /** Message already carries its prefix (errors re-created from the wire). */
  prefixed?: boolean;
}

export class BoxliteError extends Error {
  readonly code: ErrorCode;

  constructor(message: string, options?: BoxliteErrorOptions & { code?: ErrorCode }) {
    const code = options?.code ?? 'Internal';
    const prefix = ERROR_TABLE[code].prefix;
    const full = options?.prefixed || code === 'Internal' && !options?.code ? message : prefixOnce(prefix, message);
    super(full, options?.cause === undefined ? undefined : { cause: options.cause });
    this.name = 'BoxliteError';
    this.code = code;
  }

  /** Plain object for the control socket and REST bodies. */
  toJSON(): { code: ErrorCode; message: string } {
    return { code: this.code, message: this.message };
  }
}

function prefixOnce(prefix: string, message: string): string {
  if (prefix === ERROR_TABLE.UnsupportedEngine.prefix) return message ? `${prefix}: ${message}` : prefix;
  return message.startsWith(prefix) ? message : prefix + message;
}

function variant(code: ErrorCode, name: string) {
  const cls = class extends BoxliteError {
    constructor(message: string, options?: BoxliteErrorOptions) {
      super(message, { ...options, code });
      this.name = name;
    }
  };
  Object.defineProperty(cls, 'name', { value: name });
  return cls;
}

export const UnsupportedEngineError = variant('UnsupportedEngine', 'UnsupportedEngineError');
export const EngineError = variant('Engine', 'EngineError');
export const ConfigError = variant('Config', 'ConfigError');
export const StorageError = variant('Storage', 'StorageError');
export const ImageError = variant('Image', 'ImageError');
export const PortalError = variant('Portal', 'PortalError');
export const NetworkError = variant('Network', 'NetworkError');
/** A command could not be run or its I/O failed. `exitCode` is the docker-style 126/127 when known. */
export class ExecutionError extends BoxliteError {
  readonly exitCode?: number;
  constructor(message: string, options?: BoxliteErrorOptions & { exitCode?: number }) {
    super(message, { ...options, code: 'Execution' });
    this.name = 'ExecutionError';
    this.exitCode = options?.exitCode;
  }
}
export const InternalError = variant('Internal', 'InternalError');
export const AlreadyExistsError = variant('AlreadyExists', 'AlreadyExistsError');
export const InvalidStateError = variant('InvalidState', 'InvalidStateError');
export const InvalidArgumentError = variant('InvalidArgument', 'InvalidArgumentError');
export const UnsupportedError = variant('Unsupported', 'UnsupportedError');
export const StoppedError = variant('Stopped', 'StoppedError');
export const ResourceExhaustedError = variant('ResourceExhausted', 'ResourceExhaustedError');
export const SessionReapedError = variant('SessionReaped', 'SessionReapedError');
export type UnsupportedEngineError = InstanceType<typeof UnsupportedEngineError>;
export type EngineError = InstanceType<typeof EngineError>;
export type ConfigError = InstanceType<typeof ConfigError>;
export type StorageError = InstanceType<typeof StorageError>;
export type ImageError = InstanceType<typeof ImageError>;
export type PortalError = InstanceType<typeof PortalError>;
export type NetworkError = InstanceType<typeof NetworkError>;
export type InternalError = InstanceType<typeof InternalError>;
export type AlreadyExistsError = InstanceType<typeof AlreadyExistsError>;
export type InvalidStateError = InstanceType<typeof InvalidStateError>;
export type InvalidArgumentError = InstanceType<typeof InvalidArgumentError>;
export type UnsupportedError = InstanceType<typeof UnsupportedError>;
export type StoppedError = InstanceType<typeof StoppedError>;
export type ResourceExhaustedError = InstanceType<typeof ResourceExhaustedError>;
export type SessionReapedError = InstanceType<typeof SessionReapedError>;

export class NotFoundError extends BoxliteError {
  /** `new NotFoundError('box', id)` → "box not found: <id>". */
  constructor(resource: string, id: string, options?: BoxliteErrorOptions) {
    super(`${resource} not found: ${id}`, { ...options, code: 'NotFound', prefixed: true });
    this.name = 'NotFoundError';
  }
}

/** A command exited non-zero where the caller required success (spec: ExecError). */
export class ExecError extends BoxliteError {
  readonly command: string;
  readonly exitCode: number;
  readonly stderr: string;
  constructor(command: string, exitCode: number, stderr: string) {
    super(`Command '${command}' failed with exit code ${exitCode}: ${stderr}`, { code: 'Execution', prefixed: true });
    this.name = 'ExecError';
    this.command = command;
    this.exitCode = exitCode;
    this.stderr = stderr;
  }
}

export class TimeoutError extends BoxliteError {
  constructor(message: string, options?: BoxliteErrorOptions) {
    super(message, { ...options, code: 'Timeout', prefixed: true });
    this.name = 'TimeoutError';
  }
}

export class ParseError extends BoxliteError {
  constructor(message: string, options?: BoxliteErrorOptions) {
    super(message, { ...options, code: 'Parse', prefixed: true });
    this.name = 'ParseError';
  }
}

const CLASS_BY_CODE: Record<ErrorCode, new (message: string, options?: BoxliteErrorOptions) => BoxliteError> = {
  UnsupportedEngine: UnsupportedEngineError,
  Engine: EngineError,
  Config: ConfigError,
  Storage: StorageError,
  Image: ImageError,
  Portal: PortalError,
  Network: NetworkError,
  Execution: ExecutionError,
  Internal: InternalError,
  NotFound: class extends BoxliteError {
    constructor(message: string, options?: BoxliteErrorOptions) {
      super(message, { ...options, code: 'NotFound', prefixed: true });
      this.name = 'NotFoundError';
    }
  },
  AlreadyExists: AlreadyExistsError,
  InvalidState: InvalidStateError,
  Timeout: TimeoutError,
  Parse: ParseError,
  InvalidArgument: InvalidArgumentError,
  Unsupported: UnsupportedError,
  Stopped: StoppedError,
  ResourceExhausted: ResourceExhaustedError,
  SessionReaped: SessionReapedError,
};

export function isErrorCode(code: unknown): code is ErrorCode {
  return typeof code === 'string' && Object.hasOwn(ERROR_TABLE, code);
}

/** Re-creates an error that crossed a process boundary as `{code, message}`. */
export function errorFromWire(wire: { code?: unknown; message?: unknown }): BoxliteError {
  const message = typeof wire.message === 'string' ? wire.message : 'unknown error';
  const code = isErrorCode(wire.code) ? wire.code : 'Internal';
  return new CLASS_BY_CODE[code](message, { prefixed: true });
}

/** Wraps anything thrown by foreign code so callers only ever see BoxliteError. */
export function toBoxliteError(err: unknown, fallback: ErrorCode = 'Internal'): BoxliteError {
  if (err instanceof BoxliteError) return err;
  const message = err instanceof Error ? err.message : String(err);
  // Lower layers may tag plain errors with a code instead of importing this module.
  const tagged = (err as { code?: unknown } | null)?.code;
  const code = isErrorCode(tagged) ? tagged : fallback;
  return new CLASS_BY_CODE[code](message, { cause: err });
}
