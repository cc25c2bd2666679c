// HTTP for the registry client: one undici Agent per registry (TLS options,
// connect/idle timeouts), redirects followed by hand (Authorization is only
// ever sent to the registry's own origin), and retries with exponential
// backoff + jitter for connection errors, 5xx, 429 and 408 (Retry-After is
// honoured up to a cap). Other 4xx are never retried.

import * as tls from 'node:tls';
import { Agent, request, type Dispatcher } from 'undici';
import { BoxliteError, ImageError, NetworkError } from '../../errors/index.js';

export interface RetryOptions {
  /** Total tries per request, first included. */
  attempts: number;
  baseDelayMs: number;
  maxDelayMs: number;
  /** Longest Retry-After honoured; longer values are cut to this. */
  retryAfterCapMs: number;
}

export interface HttpOptions {
  connectTimeoutMs?: number;
  /** Time to wait for response headers. */
  headersTimeoutMs?: number;
  /** Longest silence while a body streams. */
  idleTimeoutMs?: number;
  retry?: Partial<RetryOptions>;
}

export const DEFAULT_RETRY: RetryOptions = { attempts: 4, baseDelayMs: 200, maxDelayMs: 5_000, retryAfterCapMs: 30_000 };
const DEFAULT_CONNECT_TIMEOUT = 30_000;
const DEFAULT_HEADERS_TIMEOUT = 60_000;
const DEFAULT_IDLE_TIMEOUT = 60_000;
const MAX_REDIRECTS = 10;

export type Body = Dispatcher.ResponseData['body'];

export interface HttpResponse {
  status: number;
  headers: Record<string, string | string[] | undefined>;
  body: Body;
  /** Final URL after redirects. */
  url: URL;
}

export interface HttpRequest {
  method: 'GET' | 'HEAD' | 'POST';
  url: URL;
  headers?: Record<string, string>;
  /** Sent only while the URL's origin is `authOrigin`. */
  authorization?: string;
  authOrigin?: string;
  body?: string;
  signal?: AbortSignal;
  /** Registry name for error messages. */
  registry: string;
}

export interface TlsSettings {
  skipVerify?: boolean;
  /** Extra trusted CA (PEM), added to Node's default roots. */
  ca?: string;
}

/** First value of a response header. */
export function header(res: { headers: HttpResponse['headers'] }, name: string): string | undefined {
  const v = res.headers[name.toLowerCase()];
  return Array.isArray(v) ? v[0] : v;
}

/** All values of a response header. */
export function headerAll(res: { headers: HttpResponse['headers'] }, name: string): string[] {
  const v = res.headers[name.toLowerCase()];
  return v === undefined ? [] : Array.isArray(v) ? v : [v];
}

export function isRetryableStatus(status: number): boolean {
  return status === 408 || status === 429 || status >= 500;
}

const RETRYABLE_CODES = new Set([
  'ECONNRESET',
  'ECONNREFUSED',
  'ECONNABORTED',
  'EPIPE',
  'ETIMEDOUT',
  'EHOSTUNREACH',
  'ENETUNREACH',
  'ENETDOWN',
  'EAI_AGAIN',
  'UND_ERR_SOCKET',
  'UND_ERR_CONNECT_TIMEOUT',
  'UND_ERR_HEADERS_TIMEOUT',
  'UND_ERR_BODY_TIMEOUT',
  'UND_ERR_CLOSED',
]);

function errCode(err: unknown): string | undefined {
  let e = err as { code?: unknown; cause?: unknown } | undefined;
  for (let i = 0; e && i < 4; i++) {
    if (typeof e.code === 'string' && e.code !== 'UND_ERR_ABORTED') return e.code;
    e = e.cause as typeof e;
  }
  return undefined;
}

/** Connection-level failure worth another try (reset, refused, timeouts). */
export function isRetryableError(err: unknown): boolean {
  if (err instanceof BoxliteError) return false;
  const code = errCode(err);
  return code !== undefined && RETRYABLE_CODES.has(code);
}

export function isAbort(err: unknown, signal?: AbortSignal): boolean {
  if (signal?.aborted) return true;
  const e = err as { name?: unknown; code?: unknown } | undefined;
  return e?.name === 'AbortError' || e?.code === 'UND_ERR_ABORTED' || e?.code === 'ABORT_ERR';
}

export function cancelled(signal?: AbortSignal): BoxliteError {
  return new ImageError('pull cancelled', { cause: signal?.reason });
}

/** Turns a foreign transport error into NetworkError with a hint. */
export function networkError(err: unknown, registry: string, url: URL): BoxliteError {
  if (err instanceof BoxliteError) return err;
  const code = errCode(err) ?? '';
  // OpenSSL messages are long and multi-line: keep the reason.
  const raw = ((err as Error)?.message ?? String(err))
    .split('\n')[0]!
    .replace(/^[0-9A-F]+:error:[0-9A-F]+:SSL routines:[^:]*:([^:]+):.*$/, 'TLS: $1')
    .trim();
  let hint = '';
  if (/CERT|SELF_SIGNED|UNABLE_TO_VERIFY|ERR_TLS_CERT_ALTNAME|UNABLE_TO_GET_ISSUER/.test(code)) {
    hint = ` (TLS certificate not trusted: add the CA with caFile, or set skipVerify for ${registry})`;
  } else if (code === 'EPROTO' || code === 'ERR_SSL_WRONG_VERSION_NUMBER' || /wrong version number|packet length too long/i.test(raw)) {
    hint = ` (does ${registry} speak plain http? then set transport: "http")`;
  } else if (code === 'ENOTFOUND') {
    hint = ' (host name does not resolve)';
  } else if (code === 'UND_ERR_CONNECT_TIMEOUT') {
    hint = ' (connect timed out)';
  } else if (code === 'UND_ERR_HEADERS_TIMEOUT' || code === 'UND_ERR_BODY_TIMEOUT') {
    hint = ' (registry stopped answering)';
  }
  const detail = code && !raw.includes(code) ? `${code}: ${raw}` : raw;
  return new NetworkError(`cannot reach registry ${registry} (${url.origin}): ${detail}${hint}`, { cause: err });
}

export function sleep(ms: number, signal?: AbortSignal): Promise<void> {
  if (ms <= 0) return Promise.resolve();
  return new Promise((resolve, reject) => {
    if (signal?.aborted) return reject(cancelled(signal));
    const t = setTimeout(() => {
      signal?.removeEventListener('abort', onAbort);
      resolve();
    }, ms);
    const onAbort = () => {
      clearTimeout(t);
      reject(cancelled(signal));
    };
    signal?.addEventListener('abort', onAbort, { once: true });
  });
}

/** Retry-After (seconds or HTTP date) in ms, or undefined. */
export function retryAfterMs(value: string | undefined, now = Date.now()): number | undefined {
  if (!value) return undefined;
  const v = value.trim();
  if (/^\d+$/.test(v)) return Number(v) * 1000;
  const t = Date.parse(v);
  return Number.isNaN(t) ? undefined : Math.max(0, t - now);
}

export class HttpTransport {
  readonly retry: RetryOptions;
  private readonly agent: Agent;

  constructor(tlsSettings: TlsSettings = {}, opts: HttpOptions = {}) {
    this.retry = { ...DEFAULT_RETRY, ...opts.retry };
    const connect: Record<string, unknown> = {
      timeout: opts.connectTimeoutMs ?? DEFAULT_CONNECT_TIMEOUT,
      rejectUnauthorized: !tlsSettings.skipVerify,
    };
    if (tlsSettings.ca) connect.ca = [...tls.rootCertificates, tlsSettings.ca];
    this.agent = new Agent({
      connect,
      headersTimeout: opts.headersTimeoutMs ?? DEFAULT_HEADERS_TIMEOUT,
      bodyTimeout: opts.idleTimeoutMs ?? DEFAULT_IDLE_TIMEOUT,
    });
  }

  /** Backoff before try number `attempt + 1` (attempt counts from 1). */
  backoff(attempt: number, retryAfter?: number): number {
    if (retryAfter !== undefined) return Math.min(retryAfter, this.retry.retryAfterCapMs);
    const base = Math.min(this.retry.maxDelayMs, this.retry.baseDelayMs * 2 ** (attempt - 1));
    return Math.round(base * (0.5 + Math.random()));
  }

  /**
   * Sends a request, following redirects, retrying connection errors and
   * retryable statuses. Returns the last response (its body unread), whatever
   * its status; throws NetworkError when the registry could not be reached.
   */
  async send(req: HttpRequest): Promise<HttpResponse> {
    for (let attempt = 1; ; attempt++) {
      if (req.signal?.aborted) throw cancelled(req.signal);
      let res: HttpResponse;
      try {
        res = await this.follow(req);
      } catch (err) {
        if (isAbort(err, req.signal)) throw cancelled(req.signal);
        if (attempt < this.retry.attempts && isRetryableError(err)) {
          await sleep(this.backoff(attempt), req.signal);
          continue;
        }
        throw networkError(err, req.registry, req.url);
      }
      if (attempt < this.retry.attempts && isRetryableStatus(res.status)) {
        const wait = this.backoff(attempt, retryAfterMs(header(res, 'retry-after')));
        await discard(res.body);
        await sleep(wait, req.signal);
        continue;
      }
      return res;
    }
  }

  private async follow(req: HttpRequest): Promise<HttpResponse> {
    let url = req.url;
    let method = req.method;
    let body = req.body;
    for (let hops = 0; ; hops++) {
      const headers: Record<string, string> = { 'user-agent': 'boxlite', ...req.headers };
      if (req.authorization && url.origin === (req.authOrigin ?? req.url.origin)) headers.authorization = req.authorization;
      const res = await request(url, {
        dispatcher: this.agent,
        method,
        headers,
        body,
        signal: req.signal,
        maxRedirections: 0,
      });
      const location = header(res, 'location');
      if ([301, 302, 303, 307, 308].includes(res.statusCode) && location) {
        await discard(res.body);
        if (hops >= MAX_REDIRECTS) throw new ImageError(`too many redirects from ${req.registry} (${req.url.href})`);
        try {
          url = new URL(location, url);
        } catch (err) {
          throw new ImageError(`${req.registry} redirected ${url.href} to an invalid location ${JSON.stringify(location)}`, { cause: err });
        }
        if (res.statusCode === 303 || ((res.statusCode === 301 || res.statusCode === 302) && method === 'POST')) {
          if (method !== 'HEAD') method = 'GET';
          body = undefined;
        }
        continue;
      }
      return { status: res.statusCode, headers: res.headers, body: res.body, url };
    }
  }

  async close(): Promise<void> {
    await this.agent.close().catch(() => {});
  }
}

/** Drops a body we do not need (frees the connection for reuse). */
export async function discard(body: Body): Promise<void> {
  try {
    await body.dump({ limit: 256 * 1024 });
  } catch {
    body.destroy();
  }
}

/** Reads a whole body, refusing more than `max` bytes. */
export async function readBody(body: Body, max: number, what: string): Promise<Buffer> {
  const chunks: Buffer[] = [];
  let n = 0;
  for await (const chunk of body as AsyncIterable<Buffer>) {
    n += chunk.length;
    if (n > max) {
      body.destroy();
      throw new ImageError(`${what} is too large (more than ${max} bytes)`);
    }
    chunks.push(chunk);
  }
  return Buffer.concat(chunks);
}
