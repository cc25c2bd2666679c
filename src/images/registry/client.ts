// OCI distribution client for one registry: manifests (HEAD/GET, digest
// checked) and blobs (streamed to a partial file, size + sha256 verified while
// streaming, resumed with Range, published by rename). Auth: anonymous until
// challenged; Bearer token flow, Basic, or a static bearer token.

import { createHash, type Hash } from 'node:crypto';
import * as fsp from 'node:fs/promises';
import * as path from 'node:path';
import { BoxliteError, ImageError } from '../../errors/index.js';
import { MAX_JSON_BLOB, MediaTypes, SCHEMA1_TYPES } from '../oci-layout.js';
import { isDockerHub, registryApiHost } from '../reference.js';
import { basicAuth, parseChallenges, parseTokenResponse, pullScope, TokenCache, type Challenge } from './auth.js';
import {
  claimPartial,
  hashFile,
  ownPartialName,
  publishFile,
  releasePartial,
  storageError,
} from './blobfile.js';
import { resolveCredentials, type Credentials } from './credentials.js';
import {
  cancelled,
  discard,
  header,
  headerAll,
  HttpTransport,
  isAbort,
  isRetryableError,
  networkError,
  readBody,
  sleep,
  type HttpOptions,
  type HttpResponse,
} from './http.js';
import { readCa, type RegistrySettings } from './settings.js';

export type RegistryErrorReason = 'not-found' | 'unauthorized' | 'denied' | 'rate-limited' | 'digest' | 'other';

/** An ImageError from a registry, with the reason the puller branches on. */
export class RegistryError extends ImageError {
  readonly reason: RegistryErrorReason;
  readonly status?: number;
  constructor(message: string, reason: RegistryErrorReason, options?: { cause?: unknown; status?: number }) {
    super(message, options?.cause === undefined ? undefined : { cause: options.cause });
    this.name = 'ImageError';
    this.reason = reason;
    if (options?.status !== undefined) this.status = options.status;
  }
}

export const MANIFEST_ACCEPT = [
  MediaTypes.ociIndex,
  MediaTypes.ociManifest,
  MediaTypes.dockerManifestList,
  MediaTypes.dockerManifest,
].join(', ');

export interface RegistryClientOptions {
  /** Registry name as in references (`docker.io`, `localhost:5000`). */
  registry: string;
  settings?: RegistrySettings;
  http?: HttpOptions;
  /** Environment for docker config / credential helper lookup (default process.env). */
  env?: NodeJS.ProcessEnv;
}

export interface ManifestHead {
  digest?: string;
  mediaType?: string;
  size?: number;
}

export interface FetchedManifest {
  bytes: Buffer;
  /** From Content-Type (parameters stripped), or the body's mediaType. */
  mediaType: string | undefined;
  /** sha256 of the bytes. */
  digest: string;
}

export interface BlobDownload {
  /** Bytes received from the network by this call. */
  received: number;
  /** True when an earlier partial download was resumed. */
  resumed: boolean;
}

export interface DownloadBlobOptions {
  /** Final path of the blob (`<blobsDir>/<hex>`). */
  dest: string;
  /** Working directory for partial files (same filesystem as dest). */
  tmpDir: string;
  signal?: AbortSignal;
  /** Called with the bytes of the blob present so far. */
  onBytes?: (done: number) => void;
  /** Called once the last byte is in and the digest is being checked. */
  onVerifying?: () => void;
}

interface Problem {
  code?: string;
  message?: string;
}

export class RegistryClient {
  readonly registry: string;
  readonly settings: RegistrySettings | undefined;
  private readonly http: HttpTransport;
  private readonly origin: string;
  private readonly env: NodeJS.ProcessEnv;
  private readonly tokens = new TokenCache();
  private credsPromise?: Promise<Credentials | undefined>;
  /** How the registry wants to be authenticated, learnt from its first challenge. */
  private mode: 'anonymous' | 'basic' | 'bearer' = 'anonymous';
  private bearer?: { realm: string; service?: string };

  constructor(opts: RegistryClientOptions) {
    this.registry = opts.registry;
    this.settings = opts.settings;
    this.env = opts.env ?? process.env;
    const scheme = opts.settings?.transport ?? 'https';
    this.origin = `${scheme}://${registryApiHost(opts.registry)}`;
    const ca = opts.settings?.caFile ? readCa(opts.settings.caFile, opts.registry) : undefined;
    this.http = new HttpTransport({ skipVerify: opts.settings?.skipVerify, ca }, opts.http);
  }

  async close(): Promise<void> {
    await this.http.close();
  }

  url(p: string): URL {
    return new URL(p, this.origin);
  }

  // ---------- manifests ----------

  /**
   * HEAD of a manifest: its digest and type without the body. Throws
   * RegistryError for 404/401/403/429; returns undefined when the registry
   * does not answer HEAD usefully (then GET it).
   */
  async headManifest(repository: string, ref: string, signal?: AbortSignal): Promise<ManifestHead | undefined> {
    const url = this.url(`/v2/${repository}/manifests/${ref}`);
    const res = await this.send(repository, { method: 'HEAD', url, headers: { accept: MANIFEST_ACCEPT }, signal });
    await discard(res.body);
    if (res.status === 404) throw this.notFound('manifest', repository, ref, {});
    if (res.status === 429) throw this.rateLimited(res);
    if (res.status !== 200) return undefined;
    const digest = header(res, 'docker-content-digest');
    const len = Number(header(res, 'content-length'));
    return {
      ...(digest ? { digest } : {}),
      ...(header(res, 'content-type') ? { mediaType: stripParams(header(res, 'content-type')!) } : {}),
      ...(Number.isSafeInteger(len) && len >= 0 ? { size: len } : {}),
    };
  }

  /**
   * GET a manifest or index by tag or digest. The bytes are checked against
   * the requested digest (by digest) or the Docker-Content-Digest header.
   */
  async getManifest(repository: string, ref: string, signal?: AbortSignal): Promise<FetchedManifest> {
    const url = this.url(`/v2/${repository}/manifests/${ref}`);
    const res = await this.send(repository, { method: 'GET', url, headers: { accept: MANIFEST_ACCEPT }, signal });
    if (res.status !== 200) throw await this.statusError(res, repository, 'manifest', ref);
    let bytes: Buffer;
    try {
      bytes = await readBody(res.body, MAX_JSON_BLOB, `manifest ${this.registry}/${repository}:${ref}`);
    } catch (err) {
      if (err instanceof BoxliteError) throw err;
      if (isAbort(err, signal)) throw cancelled(signal);
      throw networkError(err, this.registry, url);
    }
    const ct = header(res, 'content-type');
    const digest = sha256(bytes);
    const where = `manifest ${this.registry}/${repository}${ref.includes(':') ? '@' : ':'}${ref}`;
    // Schema 1 before the digest checks: its digest covers the payload without the signatures.
    if ((ct && SCHEMA1_TYPES.has(stripParams(ct))) || isSchema1(bytes)) {
      throw new RegistryError(
        `${where} uses Docker image manifest schema 1, which is unsupported (re-push the image with a current docker or skopeo)`,
        'other',
      );
    }
    if (ref.includes(':')) {
      const got = digestWith(ref, bytes);
      if (got !== ref) throw new RegistryError(`digest mismatch for ${where}: content hashes to ${got}`, 'digest');
    }
    const claimed = header(res, 'docker-content-digest');
    if (claimed && /^sha(256|512):[a-f0-9]+$/.test(claimed)) {
      const got = digestWith(claimed, bytes);
      if (got !== claimed) {
        throw new RegistryError(`digest mismatch for ${where}: registry says ${claimed}, content hashes to ${got}`, 'digest');
      }
    }
    return { bytes, mediaType: ct ? stripParams(ct) : undefined, digest };
  }

  // ---------- blobs ----------

  /**
   * Downloads a blob to `dest`: streams into a partial file in tmpDir while
   * checking size and sha256, resumes a partial left by an earlier attempt
   * (Range: bytes=N-; restarts from 0 when the registry answers 200), retries
   * connection drops mid-body by resuming, and renames into place only when
   * the content matches. A digest mismatch deletes the partial.
   */
  async downloadBlob(repository: string, desc: { digest: string; size: number }, opts: DownloadBlobOptions): Promise<BlobDownload> {
    const { digest, size } = desc;
    const m = /^sha256:([a-f0-9]{64})$/.exec(digest);
    if (!m) throw new ImageError(`unsupported blob digest "${digest}" (only sha256 is supported)`);
    const hex = m[1]!;
    const own = path.join(opts.tmpDir, ownPartialName(hex));
    let offset: number;
    try {
      await fsp.mkdir(opts.tmpDir, { recursive: true });
      offset = await claimPartial(opts.tmpDir, hex, own);
    } catch (err) {
      throw storageError(err, `cannot prepare a download in ${opts.tmpDir}`);
    }
    let resumed = offset > 0;
    const result: BlobDownload = { received: 0, resumed };
    let failures = 0;
    let keepPartial = true;
    try {
      for (;;) {
        if (opts.signal?.aborted) throw cancelled(opts.signal);
        if (offset > size) {
          await fsp.truncate(own, 0);
          offset = 0;
        }
        const state = { hash: await hashFile(own, offset), offset, received: 0 };
        opts.onBytes?.(offset);
        try {
          await this.fetchInto(repository, digest, size, own, state, opts);
        } catch (err) {
          result.received += state.received;
          if (!(err instanceof Interrupted)) throw err;
          failures++;
          if (failures >= this.http.retry.attempts) {
            throw networkError(err.cause, this.registry, this.url(`/v2/${repository}/blobs/${digest}`));
          }
          await sleep(this.http.backoff(failures), opts.signal);
          offset = await fileSize(own);
          continue;
        }
        result.received += state.received;
        offset = state.offset;
        opts.onVerifying?.();
        const got = `sha256:${state.hash.digest('hex')}`;
        if (offset === size && got === digest) {
          await publishFile(own, opts.dest);
          keepPartial = false;
          return result;
        }
        await fsp.writeFile(own, Buffer.alloc(0));
        if (resumed) {
          // The old partial may have been the bad part: one clean retry from byte 0.
          resumed = false;
          offset = 0;
          continue;
        }
        keepPartial = false;
        const what = offset !== size ? `${offset} bytes, descriptor declares ${size}` : `content hashes to ${got}`;
        throw new RegistryError(`digest mismatch for blob ${digest} from ${this.registry}/${repository}: ${what}`, 'digest');
      }
    } catch (err) {
      if (keepPartial) await releasePartial(opts.tmpDir, hex, own);
      else await fsp.rm(own, { force: true }).catch(() => {});
      if (isAbort(err, opts.signal) && !(err instanceof BoxliteError)) throw cancelled(opts.signal);
      throw err;
    }
  }

  /**
   * One GET of the blob, appended to `file` from `state.offset` (or from 0
   * when the registry ignores the Range). Throws Interrupted on a connection
   * drop; `state` then tells how far it got.
   */
  private async fetchInto(
    repository: string,
    digest: string,
    size: number,
    file: string,
    state: { hash: Hash; offset: number; received: number },
    opts: DownloadBlobOptions,
  ): Promise<void> {
    if (state.offset > 0 && state.offset === size) return; // all here already: just verify
    const url = this.url(`/v2/${repository}/blobs/${digest}`);
    const headers: Record<string, string> = {};
    if (state.offset > 0) headers.range = `bytes=${state.offset}-`;
    const res = await this.send(repository, { method: 'GET', url, headers, signal: opts.signal });
    let append = false;
    if (res.status === 206 && state.offset > 0) {
      const cr = /^bytes (\d+)-/.exec(header(res, 'content-range') ?? '');
      if (!cr || Number(cr[1]) !== state.offset) {
        await discard(res.body);
        await fsp.truncate(file, 0);
        throw new Interrupted(new Error(`registry answered Content-Range ${header(res, 'content-range') ?? '(none)'}`));
      }
      append = true;
    } else if (res.status === 416 && state.offset > 0) {
      await discard(res.body);
      await fsp.truncate(file, 0);
      throw new Interrupted(new Error('registry refused the resume range'));
    } else if (res.status !== 200) {
      throw await this.statusError(res, repository, 'blob', digest);
    }
    if (!append) {
      // A fresh download (or a registry that ignored the Range): from byte 0.
      state.hash = createHash('sha256');
      state.offset = 0;
    }
    const fh = await fsp.open(file, append ? 'a' : 'w').catch((err) => {
      throw storageError(err, `cannot open ${file}`);
    });
    try {
      for await (const chunk of res.body as AsyncIterable<Buffer>) {
        if (state.offset + chunk.length > size) {
          res.body.destroy();
          throw new RegistryError(
            `size mismatch for blob ${digest} from ${this.registry}/${repository}: more than the ${size} bytes its descriptor declares`,
            'digest',
          );
        }
        try {
          await fh.write(chunk);
        } catch (err) {
          res.body.destroy();
          throw storageError(err, `cannot write ${file}`);
        }
        state.hash.update(chunk);
        state.offset += chunk.length;
        state.received += chunk.length;
        opts.onBytes?.(state.offset);
      }
    } catch (err) {
      if (err instanceof BoxliteError) throw err;
      if (isAbort(err, opts.signal)) throw cancelled(opts.signal);
      if (isRetryableError(err) || isPrematureClose(err)) throw new Interrupted(err);
      throw networkError(err, this.registry, url);
    } finally {
      await fh.close().catch(() => {});
    }
  }

  // ---------- requests with auth ----------

  private credentials(): Promise<Credentials | undefined> {
    this.credsPromise ??= resolveCredentials(this.registry, this.settings, this.env);
    return this.credsPromise;
  }

  /** Authorization for a request to `repository`, from what the registry asked for so far. */
  private async authorization(repository: string, signal?: AbortSignal): Promise<{ value?: string; fresh: boolean }> {
    const creds = await this.credentials();
    if (creds?.registryToken) return { value: `Bearer ${creds.registryToken}`, fresh: false };
    if (this.mode === 'basic' && creds?.username !== undefined) {
      return { value: basicAuth(creds.username, creds.password ?? ''), fresh: false };
    }
    if (this.mode === 'bearer' && this.bearer) {
      const scope = pullScope(repository);
      const key = TokenCache.key(this.bearer.realm, this.bearer.service, scope);
      const cached = this.tokens.get(key);
      if (cached) return { value: `Bearer ${cached}`, fresh: false };
      return { value: `Bearer ${await this.fetchToken(this.bearer.realm, this.bearer.service, scope, key, signal)}`, fresh: true };
    }
    return { fresh: false };
  }

  /** A request to the registry; answers auth challenges; 401/403 end as RegistryError. */
  private async send(
    repository: string,
    req: { method: 'GET' | 'HEAD'; url: URL; headers: Record<string, string>; signal?: AbortSignal },
  ): Promise<HttpResponse> {
    for (let round = 0; ; round++) {
      const auth = await this.authorization(repository, req.signal);
      const res = await this.http.send({
        ...req,
        ...(auth.value ? { authorization: auth.value } : {}),
        authOrigin: this.origin,
        registry: this.registry,
      });
      if (res.status === 401) {
        const challenges = parseChallenges(headerAll(res, 'www-authenticate'));
        await discard(res.body);
        if (round < 2 && (await this.answerChallenge(repository, challenges, auth))) continue;
        throw await this.authError(401, repository, challenges);
      }
      if (res.status === 403) {
        await discard(res.body);
        throw await this.authError(403, repository, []);
      }
      return res;
    }
  }

  /** Learns the auth scheme from a 401; true when a retry with other credentials makes sense. */
  private async answerChallenge(
    repository: string,
    challenges: Challenge[],
    used: { value?: string; fresh: boolean },
  ): Promise<boolean> {
    const creds = await this.credentials();
    if (creds?.registryToken) return false; // a static token was refused: nothing else to try
    const bearer = challenges.find((c) => c.scheme === 'bearer' && c.params.realm);
    if (bearer) {
      const realm = bearer.params.realm!;
      const service = bearer.params.service;
      const sentBearer = used.value?.startsWith('Bearer ') ?? false;
      const changed = !this.bearer || this.bearer.realm !== realm || this.bearer.service !== service;
      this.mode = 'bearer';
      this.bearer = { realm, ...(service !== undefined ? { service } : {}) };
      if (!sentBearer || changed) return true;
      // Our token was refused: a cached one may be stale (refetch once); a fresh one means no access.
      if (used.fresh) return false;
      this.tokens.delete(TokenCache.key(realm, service, pullScope(repository)));
      return true;
    }
    if (challenges.some((c) => c.scheme === 'basic')) {
      if (creds?.username === undefined) return false;
      if (used.value?.startsWith('Basic ')) return false; // sent them already: refused
      this.mode = 'basic';
      return true;
    }
    return false;
  }

  private async fetchToken(
    realm: string,
    service: string | undefined,
    scope: string,
    key: string,
    signal?: AbortSignal,
  ): Promise<string> {
    let url: URL;
    try {
      url = new URL(realm);
    } catch {
      throw new RegistryError(`registry ${this.registry} sent an invalid token realm ${JSON.stringify(realm)}`, 'other');
    }
    const creds = await this.credentials();
    let res: HttpResponse;
    if (creds?.identityToken) {
      const form = new URLSearchParams({ grant_type: 'refresh_token', refresh_token: creds.identityToken, client_id: 'boxlite' });
      if (service) form.set('service', service);
      form.set('scope', scope);
      res = await this.http.send({
        method: 'POST',
        url,
        headers: { 'content-type': 'application/x-www-form-urlencoded' },
        body: form.toString(),
        signal,
        registry: this.registry,
      });
    } else {
      if (service) url.searchParams.set('service', service);
      url.searchParams.append('scope', scope);
      const authorization = creds?.username !== undefined ? basicAuth(creds.username, creds.password ?? '') : undefined;
      res = await this.http.send({ method: 'GET', url, authorization, authOrigin: url.origin, signal, registry: this.registry });
    }
    if (res.status === 401 || res.status === 403) {
      await discard(res.body);
      const who = creds ? `the credentials from ${creds.source} were rejected` : 'anonymous access was refused';
      throw new RegistryError(
        `authentication required for ${scopeRepo(scope)} at ${this.registry}: ${who} by the token server ${url.origin}${url.pathname}; ` +
          `log in with \`docker login ${this.registry}\` or set auth for ${this.registry} in imageRegistries`,
        'unauthorized',
        { status: res.status },
      );
    }
    if (res.status !== 200) {
      if (res.status === 429) throw this.rateLimited(res);
      const text = (await readBody(res.body, 64 * 1024, 'token response').catch(() => Buffer.alloc(0))).toString('utf8');
      throw new RegistryError(
        `token server ${url.origin}${url.pathname} of ${this.registry} answered ${res.status}${text ? `: ${text.slice(0, 200)}` : ''}`,
        'other',
        { status: res.status },
      );
    }
    let parsed: ReturnType<typeof parseTokenResponse>;
    let unreadable: unknown;
    try {
      parsed = parseTokenResponse(JSON.parse((await readBody(res.body, 1024 * 1024, 'token response')).toString('utf8')));
    } catch (err) {
      if (err instanceof BoxliteError) throw err;
      if (isAbort(err, signal)) throw cancelled(signal);
      // A body cut off mid-way is the transport's failure; anything else (not JSON) the server's.
      if (!(err instanceof SyntaxError)) throw networkError(err, this.registry, url);
      parsed = undefined;
      unreadable = err;
    }
    if (!parsed) {
      const why = unreadable ? `an answer that is not JSON (${(unreadable as Error).message})` : 'no token';
      throw new RegistryError(`token server ${url.origin}${url.pathname} of ${this.registry} returned ${why}`, 'other', {
        ...(unreadable ? { cause: unreadable } : {}),
      });
    }
    this.tokens.set(key, parsed.token, parsed.expiresIn);
    return parsed.token;
  }

  // ---------- errors ----------

  private async authError(status: 401 | 403, repository: string, challenges: Challenge[]): Promise<RegistryError> {
    const creds = await this.credentials().catch(() => undefined);
    const how = `log in with \`docker login ${this.registry}\` or set auth for ${this.registry} in imageRegistries`;
    if (status === 403) {
      return new RegistryError(
        `access denied for ${repository} at ${this.registry}${creds ? ` (credentials from ${creds.source})` : ''}; ${how}`,
        'denied',
        { status },
      );
    }
    const insufficient = challenges.some((c) => c.params.error === 'insufficient_scope');
    const detail = creds
      ? `the credentials from ${creds.source} were not accepted`
      : `no credentials${insufficient || isDockerHub(this.registry) ? ' (or the repository does not exist)' : ''}`;
    return new RegistryError(`authentication required for ${repository} at ${this.registry}: ${detail}; ${how}`, 'unauthorized', {
      status,
    });
  }

  private rateLimited(res: HttpResponse): RegistryError {
    void discard(res.body);
    const after = header(res, 'retry-after');
    const hint = isDockerHub(this.registry) ? '; logging in to Docker Hub raises the limit' : '';
    return new RegistryError(
      `rate limited by ${this.registry}: too many requests${after ? ` (retry after ${after})` : ''}, gave up after ${this.http.retry.attempts} attempts${hint}`,
      'rate-limited',
      { status: 429 },
    );
  }

  private notFound(kind: 'manifest' | 'blob', repository: string, ref: string, problem: Problem): RegistryError {
    const sep = ref.includes(':') ? '@' : ':';
    const code = problem.code === 'NAME_UNKNOWN' ? ' (repository not known to the registry)' : '';
    return kind === 'manifest'
      ? new RegistryError(`manifest unknown: ${this.registry}/${repository}${sep}${ref}${code}`, 'not-found', { status: 404 })
      : new RegistryError(`blob unknown: ${ref} in ${this.registry}/${repository}${code}`, 'not-found', { status: 404 });
  }

  private async statusError(res: HttpResponse, repository: string, kind: 'manifest' | 'blob', ref: string): Promise<RegistryError> {
    if (res.status === 429) return this.rateLimited(res);
    let problem: Problem = {};
    let text = '';
    try {
      text = (await readBody(res.body, 64 * 1024, 'error body')).toString('utf8');
      const j = JSON.parse(text) as { errors?: Array<{ code?: unknown; message?: unknown }> };
      const e = j.errors?.[0];
      if (e) problem = { code: String(e.code ?? ''), message: String(e.message ?? '') };
    } catch {
      // not JSON
    }
    if (res.status === 404) return this.notFound(kind, repository, ref, problem);
    let detail = problem.code ? `${problem.code}${problem.message ? `: ${problem.message}` : ''}` : text.trim().slice(0, 200);
    if (res.status === 400 && /HTTP request to an HTTPS server/i.test(text)) {
      detail += ` (the registry speaks https: remove transport: "http" for ${this.registry})`;
    }
    const sep = kind === 'manifest' ? (ref.includes(':') ? '@' : ':') : '@';
    return new RegistryError(
      `registry ${this.registry} answered ${res.status} for ${kind} ${repository}${sep}${ref}${detail ? `: ${detail}` : ''}`,
      'other',
      { status: res.status },
    );
  }
}

/** A body stream that broke off: resume from what is on disk. */
class Interrupted extends Error {
  constructor(override readonly cause: unknown) {
    super((cause as Error)?.message ?? 'interrupted');
  }
}

function isPrematureClose(err: unknown): boolean {
  const e = err as { code?: unknown; message?: unknown };
  return e?.code === 'ERR_STREAM_PREMATURE_CLOSE' || /terminated|other side closed|premature close/i.test(String(e?.message ?? ''));
}

async function fileSize(file: string): Promise<number> {
  try {
    return (await fsp.stat(file)).size;
  } catch {
    return 0;
  }
}

function isSchema1(bytes: Buffer): boolean {
  try {
    return (JSON.parse(bytes.toString('utf8')) as { schemaVersion?: unknown } | null)?.schemaVersion === 1;
  } catch {
    return false;
  }
}

function stripParams(ct: string): string {
  return ct.split(';')[0]!.trim().toLowerCase();
}

function scopeRepo(scope: string): string {
  const m = /^repository:(.+):[^:]+$/.exec(scope);
  return m ? m[1]! : scope;
}

export function sha256(buf: Buffer): string {
  return `sha256:${createHash('sha256').update(buf).digest('hex')}`;
}

function digestWith(digest: string, buf: Buffer): string {
  const alg = digest.startsWith('sha512:') ? 'sha512' : 'sha256';
  return `${alg}:${createHash(alg).update(buf).digest('hex')}`;
}
