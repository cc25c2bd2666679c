// The HTTP side of the REST client (rest-contract §3.1): URLs ({url}/v1[/{prefix}]{path}, /config
// and /me without the prefix), the bearer token (cached until expiresAt − 60 s), the headers the
// reference's 0.10 client sends (Accept */*, JSON with a Content-Length, no User-Agent), and the
// error mapping of §1.4 (the envelope's `code` first, the status as a fallback).
import http from 'node:http';
import https from 'node:https';
import type { Readable } from 'node:stream';
import {
  AlreadyExistsError,
  BoxliteError,
  ConfigError,
  EngineError,
  ExecutionError,
  ImageError,
  InternalError,
  InvalidArgumentError,
  InvalidStateError,
  NetworkError,
  PortalError,
  ResourceExhaustedError,
  SessionReapedError,
  StorageError,
  StoppedError,
  TimeoutError,
  UnsupportedError,
  type BoxliteErrorOptions,
} from '../../errors/index.js';
import type { AccessToken, Credential } from '../../sdk/credential.js';

/** The reference client's HTTP timeout. */
const HTTP_TIMEOUT_MS = 300_000;
/** A token is refreshed this long before it expires. */
const TOKEN_SLACK_S = 60;

/** A streamed request body: a Node Readable or a streamx one (tar-stream's pack). */
export interface StreamBody {
  pipe(destination: NodeJS.WritableStream): unknown;
  on(event: 'error', listener: (err: Error) => void): unknown;
}

export interface RestRequest {
  query?: Record<string, string | undefined>;
  json?: unknown;
  body?: Buffer | StreamBody;
  contentType?: string;
  accept?: string;
  /** `/v1/config` and `/v1/me`: never under the prefix. */
  root?: boolean;
  timeoutMs?: number;
}

export type HttpMethod = 'GET' | 'HEAD' | 'POST' | 'PUT' | 'DELETE' | 'PATCH';

/** A response body read at most once: as text, as bytes, or thrown away. */
export interface RestBody {
  text(): Promise<string>;
  arrayBuffer(): Promise<Buffer>;
  dump(): Promise<void>;
  /** The body as a stream (read it only this way then). */
  stream(): Readable;
}

export interface RestResponse {
  status: number;
  headers: http.IncomingHttpHeaders;
  body: RestBody;
}

function bodyOf(res: http.IncomingMessage): RestBody {
  const bytes = () =>
    new Promise<Buffer>((resolve, reject) => {
      const chunks: Buffer[] = [];
      res.on('data', (c: Buffer) => chunks.push(c));
      res.on('end', () => resolve(Buffer.concat(chunks)));
      res.on('error', reject);
    });
  return {
    text: async () => (await bytes()).toString('utf8'),
    arrayBuffer: bytes,
    dump: async () => {
      res.resume();
    },
    stream: () => res,
  };
}

export class RestTransport {
  readonly base: string;
  readonly prefix: string;
  private cached?: { token: string; until: number };
  private config?: Promise<Record<string, unknown>>;

  constructor(
    url: string,
    private readonly credential?: Credential | null,
    pathPrefix?: string | null,
  ) {
    this.base = url.replace(/\/+$/, '');
    this.prefix = pathPrefix ?? '';
  }

  /** `{url}/v1/{prefix}{path}`, or `{url}/v1{path}` without a prefix (or for root endpoints). */
  url(path: string, root = false): string {
    return `${this.base}/v1${!root && this.prefix ? `/${this.prefix}` : ''}${path}`;
  }

  /** The WebSocket URL of a box-scoped path (ws:// for http://, wss:// for https://). */
  wsUrl(path: string): string {
    return this.url(path).replace(/^http/, 'ws');
  }

  /** `Authorization: Bearer …` when a credential is set; the token cached until expiresAt − 60 s. */
  async authHeaders(): Promise<Record<string, string>> {
    if (!this.credential) return {};
    const now = Date.now() / 1000;
    if (!this.cached || this.cached.until <= now) {
      let t: AccessToken;
      try {
        t = await this.credential.getToken();
      } catch (err) {
        throw new ConfigError(`auth: the credential failed to produce a token: ${(err as Error).message}`, { cause: err });
      }
      if (!t || typeof t.token !== 'string') throw new ConfigError('auth: the credential returned no token');
      const until = t.expiresAt === null || t.expiresAt === undefined ? Infinity : t.expiresAt - TOKEN_SLACK_S;
      this.cached = { token: t.token, until };
      if (until <= now) this.cached.until = 0; // already (nearly) expired: use once, ask again next time
    }
    return { authorization: `Bearer ${this.cached.token}` };
  }

  /** `GET /v1/config`, cached per runtime unless `fresh` (the Linux-capabilities check is uncached). */
  serverConfig(fresh = false): Promise<Record<string, unknown>> {
    if (fresh) return this.json('GET', '/config', { root: true });
    this.config ??= this.json<Record<string, unknown>>('GET', '/config', { root: true }).catch((err: unknown) => {
      this.config = undefined;
      throw err;
    });
    return this.config;
  }

  /** One request; a non-2xx answer becomes the mapped error. */
  async send(method: HttpMethod, path: string, req: RestRequest = {}): Promise<RestResponse> {
    const res = await this.raw(method, path, req);
    if (res.status >= 200 && res.status < 300) return res;
    throw await errorFromResponse(res.status, await res.body.text().catch(() => ''));
  }

  /** A request whose status the caller interprets (404 → null, and the like). */
  async raw(method: HttpMethod, path: string, req: RestRequest = {}): Promise<RestResponse> {
    let target = this.url(path, req.root);
    const q = Object.entries(req.query ?? {}).filter(([, v]) => v !== undefined) as Array<[string, string]>;
    if (q.length) target += `?${new URLSearchParams(q).toString()}`;
    const headers: Record<string, string> = {};
    let body: string | Buffer | StreamBody | undefined;
    if (req.json !== undefined) {
      headers['content-type'] = 'application/json';
      body = JSON.stringify(req.json);
    } else if (req.body !== undefined) {
      headers['content-type'] = req.contentType ?? 'application/octet-stream';
      body = req.body;
    }
    Object.assign(headers, await this.authHeaders());
    headers.accept = req.accept ?? '*/*';
    const timeout = req.timeoutMs ?? HTTP_TIMEOUT_MS;
    if (typeof body === 'string' || Buffer.isBuffer(body)) headers['content-length'] = String(Buffer.byteLength(body));
    const u = new URL(target);
    const lib = u.protocol === 'https:' ? https : http;
    try {
      return await new Promise<RestResponse>((resolve, reject) => {
        const r = lib.request(u, { method, headers }, (res) => resolve({ status: res.statusCode ?? 0, headers: res.headers, body: bodyOf(res) }));
        // As the reference: no Content-Length (and no chunked encoding) on a request without a body.
        if (body === undefined) r.useChunkedEncodingByDefault = false; // a streamed body is chunked
        r.setTimeout(timeout, () => r.destroy(new Error(`no answer within ${Math.round(timeout / 1000)} s`)));
        r.on('error', reject);
        if (body === undefined) r.end();
        else if (typeof body === 'string' || Buffer.isBuffer(body)) r.end(body);
        else {
          body.on('error', (e) => r.destroy(e));
          body.pipe(r);
        }
      });
    } catch (err) {
      if (err instanceof BoxliteError) throw err;
      throw new NetworkError(`request ${method} ${target} failed: ${(err as Error).message}`, { cause: err });
    }
  }

  /** JSON of a 2xx answer. */
  async json<T>(method: HttpMethod, path: string, req: RestRequest = {}): Promise<T> {
    const res = await this.send(method, path, req);
    const text = await res.body.text();
    try {
      return JSON.parse(text) as T;
    } catch {
      throw new InternalError(`failed to parse response: ${text.slice(0, 4096)}`);
    }
  }

  /** A 2xx answer whose body does not matter. */
  async call(method: HttpMethod, path: string, req: RestRequest = {}): Promise<void> {
    const res = await this.send(method, path, req);
    await res.body.dump();
  }
}

type ErrorClass = new (message: string, options?: BoxliteErrorOptions) => BoxliteError;

/** `error.code` → our class (rest-contract §1.4). */
const BY_CODE: Record<string, ErrorClass> = {
  invalid_argument: InvalidArgumentError,
  unsupported: UnsupportedError,
  session_reaped: SessionReapedError,
  already_exists: AlreadyExistsError,
  invalid_state: InvalidStateError,
  stopped: StoppedError,
  image_pull_failed: ImageError,
  execution_failed: ExecutionError,
  resource_exhausted: ResourceExhaustedError,
  payload_too_large: ResourceExhaustedError,
  network_unavailable: NetworkError,
  runner_non_json_error: NetworkError,
  upstream_unavailable: PortalError,
  engine_unavailable: EngineError,
  storage_error: StorageError,
  config_error: ConfigError,
  database_error: InternalError,
  metadata_error: InternalError,
  internal: InternalError,
};

class RemoteNotFoundError extends BoxliteError {
  constructor(message: string) {
    // The server's message is already `box not found: X` (or `not found: …`).
    super(/not found/.test(message) ? message : `not found: ${message}`, { code: 'NotFound', prefixed: true });
    this.name = 'NotFoundError';
  }
}

/** Maps an error answer: the envelope (or the flat NestJS `{message, code}`), else the status. */
export function errorFromResponse(status: number, text: string): BoxliteError {
  let parsed: { error?: { message?: unknown; code?: unknown }; message?: unknown; code?: unknown } | undefined;
  try {
    parsed = JSON.parse(text);
  } catch {
    parsed = undefined;
  }
  const model = parsed && typeof parsed === 'object' ? (parsed.error && typeof parsed.error === 'object' ? parsed.error : parsed) : undefined;
  const code = typeof model?.code === 'string' ? model.code : undefined;
  const message = typeof model?.message === 'string' ? model.message : undefined;
  if (code && message !== undefined) {
    if (code === 'unauthenticated' || code === 'permission_denied') return new ConfigError(`auth: ${message}`);
    if (code === 'timeout') return new TimeoutError(`server timed out: ${message}`);
    if (code === 'not_found') return new RemoteNotFoundError(message);
    const cls = BY_CODE[code];
    if (cls) return new cls(message);
  }
  const preview = text.slice(0, 4096);
  if (status === 404) return new RemoteNotFoundError(message ?? (preview || 'HTTP 404'));
  if (status === 401 || status === 403) return new ConfigError(`auth: unauthorized (HTTP ${status}): ${preview}`);
  if (status >= 502 && status <= 504) return new NetworkError(`upstream returned HTTP ${status}: ${preview}`);
  return new InternalError(`HTTP ${status}: ${preview}`);
}
