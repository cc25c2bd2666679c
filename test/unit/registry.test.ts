// The OCI registry client and pullImage against an in-process fake registry
// (distribution-like: Docker-Content-Digest, HEAD, Range, JSON errors, token
// and basic auth, fault injection). No external network.

import { execFileSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import * as fs from 'node:fs';
import * as http from 'node:http';
import * as https from 'node:https';
import type { AddressInfo } from 'node:net';
import * as os from 'node:os';
import * as path from 'node:path';
import { afterAll, afterEach, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import { BoxliteError } from '../../src/errors/index.js';
import { hostPlatform, MediaTypes } from '../../src/images/oci-layout.js';
import { pullImage, searchCandidates, type PullOptions, type PullProgress } from '../../src/images/pull.js';
import { parseReference } from '../../src/images/reference.js';
import { searchRegistries } from '../../src/images/registry/settings.js';
import { parseChallenges, parseRegistries, RegistryClient, type RegistrySettings } from '../../src/images/registry/index.js';

// ---------- helpers ----------

const sha256 = (b: Buffer | string) => 'sha256:' + createHash('sha256').update(b).digest('hex');
const hexOf = (d: string) => d.slice('sha256:'.length);
const HOST_ARCH = hostPlatform().architecture;
const FAST = { retry: { baseDelayMs: 5, maxDelayMs: 20, retryAfterCapMs: 3_000 } };
const LAYER_TYPE = 'application/vnd.oci.image.layer.v1.tar';

function randomBytes(n: number, seed: number): Buffer {
  const b = Buffer.alloc(n);
  let x = seed * 2654435761 || 1;
  for (let i = 0; i < n; i++) {
    x ^= x << 13;
    x ^= x >>> 17;
    x ^= x << 5;
    b[i] = x & 0xff;
  }
  return b;
}

interface Built {
  manifest: Buffer;
  manifestDigest: string;
  config: Buffer;
  configDigest: string;
  layers: Buffer[];
  layerDigests: string[];
  blobs: Map<string, Buffer>;
}

function buildImage(opts: { arch?: string; layers: Buffer[]; docker?: boolean; env?: string[] }): Built {
  const arch = opts.arch ?? HOST_ARCH;
  const layerDigests = opts.layers.map(sha256);
  const config = Buffer.from(
    JSON.stringify({
      architecture: arch,
      os: 'linux',
      config: { Env: opts.env ?? ['PATH=/bin', `ARCH=${arch}`], Cmd: ['sh'] },
      rootfs: { type: 'layers', diff_ids: layerDigests },
    }),
  );
  const configDigest = sha256(config);
  const manifest = Buffer.from(
    JSON.stringify({
      schemaVersion: 2,
      mediaType: opts.docker ? MediaTypes.dockerManifest : MediaTypes.ociManifest,
      config: { mediaType: opts.docker ? MediaTypes.dockerConfig : MediaTypes.ociConfig, digest: configDigest, size: config.length },
      layers: opts.layers.map((l, i) => ({
        mediaType: opts.docker ? 'application/vnd.docker.image.rootfs.diff.tar.gzip' : LAYER_TYPE,
        digest: layerDigests[i],
        size: l.length,
      })),
    }),
  );
  const blobs = new Map<string, Buffer>([[configDigest, config]]);
  opts.layers.forEach((l, i) => blobs.set(layerDigests[i]!, l));
  return { manifest, manifestDigest: sha256(manifest), config, configDigest, layers: opts.layers, layerDigests, blobs };
}

function buildIndex(images: Array<{ built: Built; arch: string; variant?: string }>): Buffer {
  return Buffer.from(
    JSON.stringify({
      schemaVersion: 2,
      mediaType: MediaTypes.ociIndex,
      manifests: images.map(({ built, arch, variant }) => ({
        mediaType: MediaTypes.ociManifest,
        digest: built.manifestDigest,
        size: built.manifest.length,
        platform: { os: 'linux', architecture: arch, ...(variant ? { variant } : {}) },
      })),
    }),
  );
}

interface LogEntry {
  method: string;
  path: string;
  range?: string;
  authorization?: string;
}

type Fault = (req: http.IncomingMessage, res: http.ServerResponse, info: { repo?: string; kind?: string; ref?: string }) => boolean;

interface FakeOptions {
  auth?: 'none' | 'basic' | 'token' | 'static';
  users?: Record<string, string>;
  /** Token server refuses anonymous requests. */
  tokenNeedsLogin?: boolean;
  staticToken?: string;
  /** Repos that answer 403. */
  denied?: string[];
  /** Send blob GETs to this origin with a 307. */
  redirectTo?: () => string;
  tls?: { key: string; cert: string };
  /** Refresh token the token server accepts on POST (docker's identitytoken). */
  identityToken?: string;
}

class FakeRegistry {
  server!: http.Server;
  port = 0;
  readonly manifests = new Map<string, { body: Buffer; mediaType: string }>(); // key repo@ref
  readonly blobs = new Map<string, Buffer>();
  readonly log: LogEntry[] = [];
  readonly served = new Map<string, number>(); // blob digest → bytes written
  readonly faults: Fault[] = [];
  tokensIssued = 0;
  private readonly issued = new Set<string>();

  constructor(readonly opts: FakeOptions = {}) {}

  get host(): string {
    return `127.0.0.1:${this.port}`;
  }

  get origin(): string {
    return `${this.opts.tls ? 'https' : 'http'}://${this.host}`;
  }

  settings(extra: Partial<RegistrySettings> = {}): RegistrySettings {
    return { host: this.host, transport: this.opts.tls ? 'https' : 'http', ...extra };
  }

  async start(): Promise<this> {
    const handler = (req: http.IncomingMessage, res: http.ServerResponse) => this.handle(req, res);
    this.server = this.opts.tls ? https.createServer({ key: this.opts.tls.key, cert: this.opts.tls.cert }, handler) : http.createServer(handler);
    await new Promise<void>((r) => this.server.listen(0, '127.0.0.1', r));
    this.port = (this.server.address() as AddressInfo).port;
    return this;
  }

  async stop(): Promise<void> {
    this.server.closeAllConnections();
    await new Promise<void>((r) => this.server.close(() => r()));
  }

  putImage(repo: string, tag: string, built: Built): void {
    for (const [d, b] of built.blobs) this.blobs.set(d, b);
    this.putManifest(repo, tag, built.manifest, JSON.parse(built.manifest.toString()).mediaType);
  }

  putManifest(repo: string, tag: string | undefined, body: Buffer, mediaType: string): void {
    if (tag) this.manifests.set(`${repo}@${tag}`, { body, mediaType });
    this.manifests.set(`${repo}@${sha256(body)}`, { body, mediaType });
  }

  blobRequests(digest?: string): LogEntry[] {
    return this.log.filter((l) => l.path.includes('/blobs/') && (!digest || l.path.endsWith(digest)));
  }

  reset(): void {
    this.log.length = 0;
    this.served.clear();
    this.faults.length = 0;
  }

  private error(res: http.ServerResponse, status: number, code: string, message: string, headers: Record<string, string> = {}): void {
    const body = JSON.stringify({ errors: [{ code, message }] });
    res.writeHead(status, { 'content-type': 'application/json', 'content-length': Buffer.byteLength(body), ...headers });
    res.end(body);
  }

  private authorized(req: http.IncomingMessage, res: http.ServerResponse, repo: string): boolean {
    const a = req.headers.authorization ?? '';
    const mode = this.opts.auth ?? 'none';
    if (mode === 'basic') {
      const m = /^Basic (.+)$/.exec(a);
      const [u, p] = m ? Buffer.from(m[1]!, 'base64').toString().split(':') : [];
      if (u !== undefined && this.opts.users?.[u] === p) return true;
      this.error(res, 401, 'UNAUTHORIZED', 'authentication required', { 'www-authenticate': 'Basic realm="fake-registry"' });
      return false;
    }
    if (mode === 'token') {
      const m = /^Bearer (.+)$/.exec(a);
      if (m && this.issued.has(`${m[1]}|${repo}`)) return true;
      this.error(res, 401, 'UNAUTHORIZED', 'authentication required', {
        'www-authenticate': `Bearer realm="${this.origin}/token",service="fake",scope="repository:${repo}:pull"`,
      });
      return false;
    }
    if (mode === 'static') {
      if (a === `Bearer ${this.opts.staticToken}`) return true;
      this.error(res, 401, 'UNAUTHORIZED', 'authentication required', { 'www-authenticate': `Bearer realm="${this.origin}/token"` });
      return false;
    }
    return true;
  }

  private handle(req: http.IncomingMessage, res: http.ServerResponse): void {
    const url = new URL(req.url!, this.origin);
    this.log.push({
      method: req.method!,
      path: url.pathname + url.search,
      ...(req.headers.range ? { range: req.headers.range } : {}),
      ...(req.headers.authorization ? { authorization: req.headers.authorization } : {}),
    });

    if (url.pathname === '/token' && req.method === 'POST') {
      let body = '';
      req.on('data', (c: Buffer) => (body += c.toString()));
      req.on('end', () => {
        const form = new URLSearchParams(body);
        this.log.at(-1)!.path += `#${form.get('grant_type')}`;
        if (form.get('grant_type') !== 'refresh_token' || form.get('refresh_token') !== this.opts.identityToken) {
          this.error(res, 401, 'UNAUTHORIZED', 'bad refresh token');
          return;
        }
        const repo = /^repository:(.+):pull$/.exec(form.get('scope') ?? '')?.[1] ?? '';
        const token = `tok-${++this.tokensIssued}`;
        this.issued.add(`${token}|${repo}`);
        res.writeHead(200, { 'content-type': 'application/json' });
        res.end(JSON.stringify({ access_token: token, expires_in: 300, refresh_token: 'unused' }));
      });
      return;
    }
    if (url.pathname === '/token') {
      const a = req.headers.authorization ?? '';
      const m = /^Basic (.+)$/.exec(a);
      const [u, p] = m ? Buffer.from(m[1]!, 'base64').toString().split(':') : [];
      const loggedIn = u !== undefined && this.opts.users?.[u] === p;
      if ((m && !loggedIn) || (this.opts.tokenNeedsLogin && !loggedIn)) {
        this.error(res, 401, 'UNAUTHORIZED', 'bad credentials');
        return;
      }
      const scope = url.searchParams.get('scope') ?? '';
      const repo = /^repository:(.+):pull$/.exec(scope)?.[1] ?? '';
      const token = `tok-${++this.tokensIssued}`;
      this.issued.add(`${token}|${repo}`);
      const body = JSON.stringify(this.tokensIssued % 2 ? { token, expires_in: 300 } : { access_token: token, expires_in: 300 });
      res.writeHead(200, { 'content-type': 'application/json' });
      res.end(body);
      return;
    }

    if (url.pathname.startsWith('/_storage/')) {
      const digest = 'sha256:' + url.pathname.slice('/_storage/'.length);
      this.serveBlob(req, res, digest);
      return;
    }

    const m = /^\/v2\/(.+)\/(manifests|blobs)\/([^/]+)$/.exec(url.pathname);
    if (url.pathname === '/v2/' || url.pathname === '/v2') {
      res.writeHead(200, { 'docker-distribution-api-version': 'registry/2.0' });
      res.end('{}');
      return;
    }
    if (!m) {
      this.error(res, 404, 'NOT_FOUND', 'not found');
      return;
    }
    const [, repo, kind, ref] = m as unknown as [string, string, string, string];
    for (let i = 0; i < this.faults.length; i++) {
      if (this.faults[i]!(req, res, { repo, kind, ref })) {
        this.faults.splice(i, 1);
        return;
      }
    }
    if (this.opts.denied?.includes(repo)) {
      this.error(res, 403, 'DENIED', 'requested access to the resource is denied');
      return;
    }
    if (!this.authorized(req, res, repo)) return;

    if (kind === 'manifests') {
      const entry = this.manifests.get(`${repo}@${ref}`);
      if (!entry) {
        this.error(res, 404, 'MANIFEST_UNKNOWN', 'manifest unknown');
        return;
      }
      res.writeHead(200, {
        'content-type': entry.mediaType,
        'content-length': entry.body.length,
        'docker-content-digest': sha256(entry.body),
      });
      res.end(req.method === 'HEAD' ? undefined : entry.body);
      return;
    }
    if (!this.blobs.has(ref)) {
      this.error(res, 404, 'BLOB_UNKNOWN', 'blob unknown to registry');
      return;
    }
    if (this.opts.redirectTo && req.method === 'GET') {
      res.writeHead(307, { location: `${this.opts.redirectTo()}/_storage/${hexOf(ref)}` });
      res.end();
      return;
    }
    this.serveBlob(req, res, ref);
  }

  serveBlob(req: http.IncomingMessage, res: http.ServerResponse, digest: string, data = this.blobs.get(digest)): void {
    if (!data) {
      this.error(res, 404, 'BLOB_UNKNOWN', 'blob unknown to registry');
      return;
    }
    const r = /^bytes=(\d+)-$/.exec(req.headers.range ?? '');
    let start = 0;
    if (r) {
      start = Number(r[1]);
      if (start >= data.length) {
        res.writeHead(416, { 'content-range': `bytes */${data.length}` });
        res.end();
        return;
      }
      res.writeHead(206, {
        'content-type': 'application/octet-stream',
        'content-length': data.length - start,
        'content-range': `bytes ${start}-${data.length - 1}/${data.length}`,
      });
    } else {
      res.writeHead(200, { 'content-type': 'application/octet-stream', 'content-length': data.length, 'docker-content-digest': digest });
    }
    const part = data.subarray(start);
    this.served.set(digest, (this.served.get(digest) ?? 0) + (req.method === 'HEAD' ? 0 : part.length));
    res.end(req.method === 'HEAD' ? undefined : part);
  }
}

/** A fault that answers the first matching request with `status` (once). */
function failOnce(match: (info: { kind?: string; ref?: string }) => boolean, status: number, headers: Record<string, string> = {}): Fault {
  return (_req, res, info) => {
    if (!match(info)) return false;
    res.writeHead(status, { 'content-type': 'application/json', ...headers });
    res.end(JSON.stringify({ errors: [{ code: 'TOOMANYREQUESTS', message: `status ${status}` }] }));
    return true;
  };
}

let scratch: string;
let emptyDockerConfig: string;
beforeAll(() => {
  scratch = fs.mkdtempSync(path.join(os.tmpdir(), 'boxlite-registry-'));
  emptyDockerConfig = path.join(scratch, 'no-docker-config');
  fs.mkdirSync(emptyDockerConfig);
});
afterAll(() => fs.rmSync(scratch, { recursive: true, force: true }));

let n = 0;
function freshStore(): { blobsDir: string; tmpDir: string } {
  const root = path.join(scratch, `store-${++n}`);
  return { blobsDir: path.join(root, 'blobs', 'sha256'), tmpDir: path.join(root, 'tmp') };
}

function opts(store: { blobsDir: string; tmpDir: string }, extra: Partial<PullOptions> = {}): PullOptions {
  return { ...store, http: FAST, env: { ...process.env, DOCKER_CONFIG: emptyDockerConfig }, ...extra };
}

async function rejection(p: Promise<unknown>): Promise<BoxliteError> {
  const err = await p.then(
    () => undefined,
    (e: unknown) => e,
  );
  expect(err).toBeInstanceOf(BoxliteError);
  return err as BoxliteError;
}

// ---------- tests ----------

describe('registry settings', () => {
  it('validates and names the bad field', () => {
    expect(parseRegistries([{ host: 'Ghcr.io', search: true }])).toEqual([{ host: 'ghcr.io', search: true }]);
    const cases: Array<[unknown, RegExp]> = [
      [[{ host: 'https://ghcr.io' }], /imageRegistries\[0\]\.host: must be a registry host/],
      [[{ host: 'ghcr.io' }, { host: 'x.io', transport: 'ftp' }], /imageRegistries\[1\]\.transport: must be "https" or "http"/],
      [[{ host: 'x.io', skip_verify: true }], /imageRegistries\[0\]: unknown field "skip_verify"/],
      [[{ host: 'x.io', auth: { username: 'u' } }], /imageRegistries\[0\]\.auth\.password: password is required/],
      [[{ host: 'x.io', auth: { username: 'u', password: 'p', bearerToken: 't' } }], /imageRegistries\[0\]\.auth: use either/],
      [[{ host: 'x.io', caFile: '/nonexistent/ca.pem' }], /imageRegistries\[0\]\.caFile: cannot read/],
      [[{}], /imageRegistries\[0\]\.host: is required/],
      [{ host: 'x.io' }, /imageRegistries must be an array/],
    ];
    for (const [value, match] of cases) {
      let err: unknown;
      try {
        parseRegistries(value);
      } catch (e) {
        err = e;
      }
      expect(err, JSON.stringify(value)).toBeInstanceOf(BoxliteError);
      expect((err as BoxliteError).code).toBe('Config');
      expect((err as Error).message).toMatch(/^configuration error: /);
      expect((err as Error).message).toMatch(match);
    }
  });

  it('talks to Docker Hub at registry-1.docker.io over https; other hosts as given', async () => {
    const hub = new RegistryClient({ registry: 'docker.io' });
    const local = new RegistryClient({ registry: 'localhost:5000', settings: { host: 'localhost:5000', transport: 'http' } });
    expect(hub.url('/v2/').href).toBe('https://registry-1.docker.io/v2/');
    expect(local.url('/v2/').href).toBe('http://localhost:5000/v2/');
    await hub.close();
    await local.close();
  });

  it('parses WWW-Authenticate challenges', () => {
    expect(
      parseChallenges(['Bearer realm="https://auth.docker.io/token",service="registry.docker.io",scope="repository:library/alpine:pull"']),
    ).toEqual([
      {
        scheme: 'bearer',
        params: { realm: 'https://auth.docker.io/token', service: 'registry.docker.io', scope: 'repository:library/alpine:pull' },
      },
    ]);
    expect(parseChallenges(['Basic realm="Registry Realm", Bearer realm="x",error="insufficient_scope"'])).toEqual([
      { scheme: 'basic', params: { realm: 'Registry Realm' } },
      { scheme: 'bearer', params: { realm: 'x', error: 'insufficient_scope' } },
    ]);
    expect(parseChallenges(['Bearer realm="a\\"b", service=plain'])).toEqual([{ scheme: 'bearer', params: { realm: 'a"b', service: 'plain' } }]);
  });
});

describe('pullImage against a fake registry', () => {
  let reg: FakeRegistry;
  const small = buildImage({ layers: [randomBytes(3000, 1), randomBytes(70_000, 2), randomBytes(10, 3)] });
  const big = buildImage({ layers: [randomBytes(600_000, 4)] });

  beforeEach(async () => {
    reg = await new FakeRegistry().start();
    reg.putImage('test/app', 'v1', small);
    reg.putImage('test/big', 'v1', big);
  });
  afterEach(async () => reg.stop());

  it('pulls an image: manifest, config and layers land in blobsDir, verified', async () => {
    const store = freshStore();
    const events: PullProgress[] = [];
    const r = await pullImage(`${reg.host}/test/app:v1`, opts(store, { registries: [reg.settings()], onProgress: (p) => events.push(p) }));
    expect(r.reference).toBe(`${reg.host}/test/app:v1`);
    expect(r.registry).toBe(reg.host);
    expect(r.repository).toBe('test/app');
    expect(r.manifestDigest).toBe(small.manifestDigest);
    expect(r.resolvedDigest).toBe(small.manifestDigest);
    expect(r.manifestMediaType).toBe(MediaTypes.ociManifest);
    expect(r.configDigest).toBe(small.configDigest);
    expect(r.config.Env).toContain(`ARCH=${HOST_ARCH}`);
    expect(r.config.Cmd).toEqual(['sh']);
    expect(r.layers.map((l) => [l.digest, l.size, l.mediaType])).toEqual(small.layers.map((l, i) => [small.layerDigests[i], l.length, LAYER_TYPE]));
    expect(r.downloadedBytes).toBe(small.config.length + small.layers.reduce((a, l) => a + l.length, 0));
    for (const d of [small.manifestDigest, small.configDigest, ...small.layerDigests]) {
      expect(sha256(fs.readFileSync(path.join(store.blobsDir, hexOf(d))))).toBe(d);
    }
    for (const l of r.layers) expect(l.path).toBe(path.join(store.blobsDir, hexOf(l.digest)));
    expect(fs.readdirSync(store.tmpDir)).toEqual([]);
    // HEAD then GET for the tag; every blob fetched once.
    expect(reg.log.filter((l) => l.path.includes('/manifests/')).map((l) => l.method)).toEqual(['HEAD', 'GET']);
    for (const d of [small.configDigest, ...small.layerDigests]) expect(reg.blobRequests(d)).toHaveLength(1);
    // Progress: every layer waits, then ends done; the big one reports bytes.
    for (const d of small.layerDigests) {
      const mine = events.filter((e) => e.layer === d);
      expect(mine[0]!.status).toBe('waiting');
      expect(mine.at(-1)).toMatchObject({ status: 'done', done: mine[0]!.total });
      expect(mine.some((e) => e.status === 'verifying')).toBe(true);
    }
  });

  it('a second pull downloads no blob, only the manifest head; by digest not even that', async () => {
    const store = freshStore();
    const ref = `${reg.host}/test/app:v1`;
    await pullImage(ref, opts(store, { registries: [reg.settings()] }));
    reg.reset();
    const events: PullProgress[] = [];
    const again = await pullImage(ref, opts(store, { registries: [reg.settings()], onProgress: (p) => events.push(p) }));
    expect(again.downloadedBytes).toBe(0);
    expect(reg.blobRequests()).toEqual([]);
    expect(reg.log.map((l) => l.method)).toEqual(['HEAD']);
    expect(new Set(events.map((e) => e.status))).toEqual(new Set(['cached']));

    reg.reset();
    const byDigest = await pullImage(`${reg.host}/test/app@${small.manifestDigest}`, opts(store, { registries: [reg.settings()] }));
    expect(reg.log).toEqual([]);
    expect(byDigest.manifestDigest).toBe(small.manifestDigest);
    expect(byDigest.reference).toBe(`${reg.host}/test/app@${small.manifestDigest}`);
  });

  it('picks the host architecture from an index (amd64 + arm64)', async () => {
    if (HOST_ARCH !== 'amd64' && HOST_ARCH !== 'arm64') return;
    const amd = buildImage({ arch: 'amd64', layers: [randomBytes(100, 10)] });
    const arm = buildImage({ arch: 'arm64', layers: [randomBytes(100, 11)] });
    reg.putImage('multi/app', 'amd-only', amd);
    reg.putImage('multi/app', 'arm-only', arm);
    const index = buildIndex([
      { built: amd, arch: 'amd64' },
      { built: arm, arch: 'arm64', variant: 'v8' },
    ]);
    reg.putManifest('multi/app', 'latest', index, MediaTypes.ociIndex);
    const store = freshStore();
    const r = await pullImage(`${reg.host}/multi/app`, opts(store, { registries: [reg.settings()] }));
    const mine = HOST_ARCH === 'amd64' ? amd : arm;
    const other = HOST_ARCH === 'amd64' ? arm : amd;
    expect(r.reference).toBe(`${reg.host}/multi/app:latest`);
    expect(r.manifestDigest).toBe(mine.manifestDigest);
    expect(r.indexDigest).toBe(sha256(index));
    expect(r.resolvedDigest).toBe(sha256(index));
    expect(r.platform.architecture).toBe(HOST_ARCH);
    expect(fs.existsSync(path.join(store.blobsDir, hexOf(sha256(index))))).toBe(true);
    expect(reg.blobRequests(other.layerDigests[0])).toEqual([]);
    // An explicit platform picks the other one.
    const r2 = await pullImage(`${reg.host}/multi/app`, opts(store, {
      registries: [reg.settings()],
      platform: { os: 'linux', architecture: other === amd ? 'amd64' : 'arm64' },
    }));
    expect(r2.manifestDigest).toBe(other.manifestDigest);
  });

  it('resumes an interrupted blob with Range (server counts the bytes)', async () => {
    const layer = big.layerDigests[0]!;
    const size = big.layers[0]!.length;
    const cut = 200_000;
    reg.faults.push((req, res, info) => {
      if (info.kind !== 'blobs' || info.ref !== layer || req.headers.range) return false;
      res.writeHead(200, { 'content-length': size, 'content-type': 'application/octet-stream' });
      res.write(big.layers[0]!.subarray(0, cut));
      reg.served.set(layer, cut);
      setTimeout(() => res.socket?.destroy(), 30);
      return true;
    });
    const store = freshStore();
    const r = await pullImage(`${reg.host}/test/big:v1`, opts(store, { registries: [reg.settings()] }));
    expect(r.layers[0]!.digest).toBe(layer);
    const reqs = reg.blobRequests(layer);
    expect(reqs).toHaveLength(2);
    expect(reqs[1]!.range).toBe(`bytes=${cut}-`);
    expect(reg.served.get(layer)).toBe(size); // cut + the rest: nothing twice
    expect(sha256(fs.readFileSync(path.join(store.blobsDir, hexOf(layer))))).toBe(layer);
    expect(fs.readdirSync(store.tmpDir)).toEqual([]);
  });

  it('an idle body times out and the download resumes where it stopped', async () => {
    const layer = big.layerDigests[0]!;
    const size = big.layers[0]!.length;
    reg.faults.push((req, res, info) => {
      if (info.kind !== 'blobs' || info.ref !== layer) return false;
      res.writeHead(200, { 'content-length': size });
      res.write(big.layers[0]!.subarray(0, 65_536)); // then silence
      return true;
    });
    const store = freshStore();
    const t0 = Date.now();
    await pullImage(`${reg.host}/test/big:v1`, opts(store, { registries: [reg.settings()], http: { ...FAST, idleTimeoutMs: 300 } }));
    expect(Date.now() - t0).toBeLessThan(3000);
    expect(reg.blobRequests(layer).map((l) => l.range)).toEqual([undefined, 'bytes=65536-']);
  });

  it('resumes a partial left by an earlier pull; restarts from 0 when the server ignores Range', async () => {
    const layer = big.layerDigests[0]!;
    const size = big.layers[0]!.length;
    const store = freshStore();
    fs.mkdirSync(store.tmpDir, { recursive: true });
    fs.writeFileSync(path.join(store.tmpDir, `${hexOf(layer)}.partial`), big.layers[0]!.subarray(0, 123_456));
    await pullImage(`${reg.host}/test/big:v1`, opts(store, { registries: [reg.settings()] }));
    expect(reg.blobRequests(layer).map((l) => l.range)).toEqual(['bytes=123456-']);
    expect(reg.served.get(layer)).toBe(size - 123_456);
    expect(fs.readdirSync(store.tmpDir)).toEqual([]);

    // A registry that answers 200 to a Range request: the partial is discarded.
    const store2 = freshStore();
    fs.mkdirSync(store2.tmpDir, { recursive: true });
    fs.writeFileSync(path.join(store2.tmpDir, `${hexOf(layer)}.partial`), Buffer.alloc(5000, 7)); // garbage
    reg.reset();
    reg.faults.push((req, res, info) => {
      if (info.kind !== 'blobs' || info.ref !== layer) return false;
      delete req.headers.range;
      reg.serveBlob(req, res, layer);
      return true;
    });
    await pullImage(`${reg.host}/test/big:v1`, opts(store2, { registries: [reg.settings()] }));
    expect(reg.served.get(layer)).toBe(size);
    expect(sha256(fs.readFileSync(path.join(store2.blobsDir, hexOf(layer))))).toBe(layer);
  });

  it('concurrent pulls in one process share downloads; a dead process\'s partial is resumed', async () => {
    const store = freshStore();
    const ref = `${reg.host}/test/app:v1`;
    const [r1, r2] = await Promise.all([
      pullImage(ref, opts(store, { registries: [reg.settings()] })),
      pullImage(ref, opts(store, { registries: [reg.settings()] })),
    ]);
    expect(r1.manifestDigest).toBe(r2.manifestDigest);
    for (const d of small.layerDigests) expect(reg.blobRequests(d)).toHaveLength(1);

    const layer = big.layerDigests[0]!;
    const store2 = freshStore();
    fs.mkdirSync(store2.tmpDir, { recursive: true });
    fs.writeFileSync(path.join(store2.tmpDir, `${hexOf(layer)}.999999999-1.partial`), big.layers[0]!.subarray(0, 1000));
    reg.reset();
    await pullImage(`${reg.host}/test/big:v1`, opts(store2, { registries: [reg.settings()] }));
    expect(reg.blobRequests(layer).map((l) => l.range)).toEqual(['bytes=1000-']);
    expect(fs.readdirSync(store2.tmpDir)).toEqual([]);
  });

  it('rejects a blob whose content does not match its digest and leaves nothing behind', async () => {
    const layer = small.layerDigests[1]!;
    const bad = Buffer.from(small.layers[1]!);
    bad[100] ^= 0xff;
    reg.faults.push((req, res, info) => {
      if (info.kind !== 'blobs' || info.ref !== layer) return false;
      reg.serveBlob(req, res, layer, bad);
      return true;
    });
    const store = freshStore();
    const err = await rejection(pullImage(`${reg.host}/test/app:v1`, opts(store, { registries: [reg.settings()], concurrency: 1 })));
    expect(err.code).toBe('Image');
    expect(err.message).toMatch(new RegExp(`^images error: digest mismatch for blob ${layer}`));
    expect(fs.existsSync(path.join(store.blobsDir, hexOf(layer)))).toBe(false);
    expect(fs.readdirSync(store.tmpDir)).toEqual([]);
  });

  it('rejects a manifest whose bytes do not match Docker-Content-Digest', async () => {
    reg.faults.push((req, res, info) => {
      if (info.kind !== 'manifests' || req.method !== 'GET') return false;
      res.writeHead(200, { 'content-type': MediaTypes.ociManifest, 'docker-content-digest': 'sha256:' + '0'.repeat(64) });
      res.end(small.manifest);
      return true;
    });
    const err = await rejection(pullImage(`${reg.host}/test/app:v1`, opts(freshStore(), { registries: [reg.settings()] })));
    expect(err.message).toMatch(/digest mismatch for manifest .*registry says sha256:0000/);
  });

  it('clear errors: manifest unknown, blob unknown, access denied, schema 1', async () => {
    const s = [reg.settings()];
    let err = await rejection(pullImage(`${reg.host}/test/app:nope`, opts(freshStore(), { registries: s })));
    expect(err.message).toBe(`images error: manifest unknown: ${reg.host}/test/app:nope`);

    const broken = buildImage({ layers: [randomBytes(50, 20)] });
    reg.putManifest('test/broken', 'v1', broken.manifest, MediaTypes.ociManifest);
    reg.blobs.set(broken.configDigest, broken.config);
    err = await rejection(pullImage(`${reg.host}/test/broken:v1`, opts(freshStore(), { registries: s })));
    expect(err.message).toBe(`images error: blob unknown: ${broken.layerDigests[0]} in ${reg.host}/test/broken`);

    reg.opts.denied = ['secret/app'];
    err = await rejection(pullImage(`${reg.host}/secret/app:v1`, opts(freshStore(), { registries: s })));
    expect(err.message).toMatch(new RegExp(`^images error: access denied for secret/app at ${reg.host.replace('.', '\\.')}`));
    expect(err.message).toMatch(/docker login/);

    const schema1 = Buffer.from(JSON.stringify({ schemaVersion: 1, name: 'test/old', tag: 'v1', fsLayers: [] }));
    reg.putManifest('test/old', 'v1', schema1, 'application/vnd.docker.distribution.manifest.v1+prettyjws');
    err = await rejection(pullImage(`${reg.host}/test/old:v1`, opts(freshStore(), { registries: s })));
    expect(err.message).toMatch(/schema 1, which is unsupported/);
  });

  it('retries 500s; honours Retry-After on 429; gives up with "rate limited"', async () => {
    const s = [reg.settings()];
    reg.faults.push(failOnce((i) => i.kind === 'manifests', 500), failOnce((i) => i.kind === 'manifests', 503));
    await pullImage(`${reg.host}/test/app:v1`, opts(freshStore(), { registries: s }));
    expect(reg.log.filter((l) => l.path.includes('/manifests/')).length).toBe(4); // 500, 503, HEAD ok, GET

    reg.reset();
    reg.faults.push(failOnce((i) => i.kind === 'blobs', 429, { 'retry-after': '1' }));
    const t0 = Date.now();
    await pullImage(`${reg.host}/test/app:v1`, opts(freshStore(), { registries: s, concurrency: 1 }));
    expect(Date.now() - t0).toBeGreaterThanOrEqual(900);

    reg.reset();
    for (let i = 0; i < 4; i++) reg.faults.push(failOnce((x) => x.kind === 'manifests', 429, { 'retry-after': '0' }));
    const err = await rejection(pullImage(`${reg.host}/test/app:v1`, opts(freshStore(), { registries: s })));
    expect(err.message).toMatch(new RegExp(`^images error: rate limited by ${reg.host.replace('.', '\\.')}`));
    expect(reg.log.length).toBe(4);

    // Other 4xx are never retried.
    reg.reset();
    reg.faults.push((req, res, info) => failOnce(() => info.kind === 'manifests' && req.method === 'GET', 400)(req, res, info));
    const err400 = await rejection(pullImage(`${reg.host}/test/app:v1`, opts(freshStore(), { registries: s })));
    expect(err400.message).toMatch(/answered 400 for manifest test\/app:v1/);
    expect(reg.log.map((l) => l.method)).toEqual(['HEAD', 'GET']);
  });

  it('cancels with the signal and keeps the partial for later', async () => {
    const layer = big.layerDigests[0]!;
    const controller = new AbortController();
    reg.faults.push((req, res, info) => {
      if (info.kind !== 'blobs' || info.ref !== layer) return false;
      res.writeHead(200, { 'content-length': big.layers[0]!.length });
      res.write(big.layers[0]!.subarray(0, 100_000), () => setTimeout(() => controller.abort(), 50));
      return true; // never finishes
    });
    const store = freshStore();
    const err = await rejection(pullImage(`${reg.host}/test/big:v1`, opts(store, { registries: [reg.settings()], signal: controller.signal })));
    expect(err.message).toMatch(/pull cancelled/);
    const partial = path.join(store.tmpDir, `${hexOf(layer)}.partial`);
    expect(fs.existsSync(partial)).toBe(true);
    expect(fs.statSync(partial).size).toBeGreaterThan(0);
    expect(fs.existsSync(path.join(store.blobsDir, hexOf(layer)))).toBe(false);
  });

  it('follows blob redirects to another origin without sending Authorization there', async () => {
    const storage = await new FakeRegistry().start();
    const authed = await new FakeRegistry({ auth: 'basic', users: { alice: 's3cret' }, redirectTo: () => storage.origin }).start();
    try {
      authed.putImage('test/app', 'v1', small);
      for (const [d, b] of small.blobs) storage.blobs.set(d, b);
      const r = await pullImage(`${authed.host}/test/app:v1`, opts(freshStore(), {
        registries: [authed.settings({ auth: { username: 'alice', password: 's3cret' } })],
      }));
      expect(r.layers).toHaveLength(3);
      expect(storage.log.length).toBe(4); // config + 3 layers
      expect(storage.log.every((l) => l.authorization === undefined)).toBe(true);
    } finally {
      await storage.stop();
      await authed.stop();
    }
  });
});

describe('authentication', () => {
  const img = buildImage({ layers: [randomBytes(2000, 30), randomBytes(3000, 31)] });
  const servers: FakeRegistry[] = [];
  async function start(o: FakeOptions): Promise<FakeRegistry> {
    const r = await new FakeRegistry(o).start();
    r.putImage('team/app', 'v1', img);
    servers.push(r);
    return r;
  }
  afterEach(async () => {
    await Promise.all(servers.splice(0).map((s) => s.stop()));
  });

  it('token flow: 401 → realm → token → retry; one token per scope, cached', async () => {
    const reg = await start({ auth: 'token', users: { bob: 'pw' }, tokenNeedsLogin: true });
    await pullImage(`${reg.host}/team/app:v1`, opts(freshStore(), {
      registries: [reg.settings({ auth: { username: 'bob', password: 'pw' } })],
    }));
    const tokenReqs = reg.log.filter((l) => l.path.startsWith('/token'));
    expect(tokenReqs).toHaveLength(1);
    expect(tokenReqs[0]!.path).toBe('/token?service=fake&scope=repository%3Ateam%2Fapp%3Apull');
    expect(tokenReqs[0]!.authorization).toBe('Basic ' + Buffer.from('bob:pw').toString('base64'));
    expect(reg.log[0]).toMatchObject({ method: 'HEAD' });
    expect(reg.log[0]!.authorization).toBeUndefined();
    // Everything after the token request carries it.
    const after = reg.log.slice(reg.log.indexOf(tokenReqs[0]!) + 1);
    expect(after.length).toBe(2 + 3);
    expect(after.every((l) => l.authorization === 'Bearer tok-1')).toBe(true);

    // Wrong password: the token server refuses.
    const err = await rejection(pullImage(`${reg.host}/team/app:v1`, opts(freshStore(), {
      registries: [reg.settings({ auth: { username: 'bob', password: 'nope' } })],
    })));
    expect(err.message).toMatch(new RegExp(`^images error: authentication required for team/app at ${reg.host.replace('.', '\\.')}`));
    expect(err.message).toMatch(/docker login/);
    expect(err.message).toMatch(/imageRegistries/);
  });

  it('anonymous token flow (access_token answers too)', async () => {
    const reg = await start({ auth: 'token' });
    reg.tokensIssued = 1; // next answer uses access_token
    const r = await pullImage(`${reg.host}/team/app:v1`, opts(freshStore(), { registries: [reg.settings()] }));
    expect(r.layers).toHaveLength(2);
    expect(reg.log.filter((l) => l.path.startsWith('/token'))[0]!.authorization).toBeUndefined();
  });

  it('basic auth; missing or wrong credentials are a clear error', async () => {
    const reg = await start({ auth: 'basic', users: { alice: 's3cret' } });
    await pullImage(`${reg.host}/team/app:v1`, opts(freshStore(), {
      registries: [reg.settings({ auth: { username: 'alice', password: 's3cret' } })],
    }));
    let err = await rejection(pullImage(`${reg.host}/team/app:v1`, opts(freshStore(), { registries: [reg.settings()] })));
    expect(err.message).toMatch(/authentication required for team\/app at .*no credentials.*docker login/);
    err = await rejection(pullImage(`${reg.host}/team/app:v1`, opts(freshStore(), {
      registries: [reg.settings({ auth: { username: 'alice', password: 'wrong' } })],
    })));
    expect(err.message).toMatch(/credentials from imageRegistries auth were not accepted/);
  });

  it('static bearer token', async () => {
    const reg = await start({ auth: 'static', staticToken: 'abc123' });
    await pullImage(`${reg.host}/team/app:v1`, opts(freshStore(), { registries: [reg.settings({ auth: { bearerToken: 'abc123' } })] }));
    expect(reg.log.every((l) => l.authorization === 'Bearer abc123')).toBe(true);
  });

  it('identity token from docker config is exchanged with the refresh_token grant', async () => {
    const reg = await start({ auth: 'token', tokenNeedsLogin: true, identityToken: 'refresh-me' });
    const dir = path.join(scratch, `docker-config-${++n}`);
    fs.mkdirSync(dir);
    fs.writeFileSync(path.join(dir, 'config.json'), JSON.stringify({ auths: { [reg.host]: { identitytoken: 'refresh-me' } } }));
    await pullImage(`${reg.host}/team/app:v1`, opts(freshStore(), { registries: [reg.settings()], env: { ...process.env, DOCKER_CONFIG: dir } }));
    expect(reg.log.filter((l) => l.path.startsWith('/token')).map((l) => `${l.method} ${l.path}`)).toEqual(['POST /token#refresh_token']);
  });

  it('docker config.json: auths[host].auth, then a credential helper on PATH', async () => {
    const reg = await start({ auth: 'basic', users: { carol: 'from-config', dave: 'from-helper' } });
    const dir = path.join(scratch, `docker-config-${++n}`);
    fs.mkdirSync(dir);
    fs.writeFileSync(
      path.join(dir, 'config.json'),
      JSON.stringify({ auths: { [`http://${reg.host}`]: { auth: Buffer.from('carol:from-config').toString('base64') } } }),
    );
    await pullImage(`${reg.host}/team/app:v1`, opts(freshStore(), { registries: [reg.settings()], env: { ...process.env, DOCKER_CONFIG: dir } }));
    expect(reg.log.at(-1)!.authorization).toBe('Basic ' + Buffer.from('carol:from-config').toString('base64'));

    // credHelpers → docker-credential-test on PATH, server URL on stdin.
    const bin = path.join(scratch, `bin-${n}`);
    fs.mkdirSync(bin);
    const seen = path.join(bin, 'stdin.txt');
    fs.writeFileSync(
      path.join(bin, 'docker-credential-test'),
      `#!/bin/sh\n[ "$1" = get ] || exit 1\ncat > ${JSON.stringify(seen)}\necho '{"ServerURL":"x","Username":"dave","Secret":"from-helper"}'\n`,
      { mode: 0o755 },
    );
    fs.writeFileSync(path.join(dir, 'config.json'), JSON.stringify({ auths: {}, credHelpers: { [reg.host]: 'test' } }));
    reg.reset();
    const env = { ...process.env, DOCKER_CONFIG: dir, PATH: `${bin}${path.delimiter}${process.env.PATH}` };
    await pullImage(`${reg.host}/team/app:v1`, opts(freshStore(), { registries: [reg.settings()], env }));
    expect(fs.readFileSync(seen, 'utf8')).toBe(reg.host);
    expect(reg.log.at(-1)!.authorization).toBe('Basic ' + Buffer.from('dave:from-helper').toString('base64'));

    // Explicit settings win over docker's config.
    reg.reset();
    await pullImage(`${reg.host}/team/app:v1`, opts(freshStore(), {
      registries: [reg.settings({ auth: { username: 'carol', password: 'from-config' } })],
      env,
    }));
    expect(reg.log.at(-1)!.authorization).toBe('Basic ' + Buffer.from('carol:from-config').toString('base64'));

    // credsStore whose helper is not on PATH: anonymous, so a clear auth error.
    fs.writeFileSync(path.join(dir, 'config.json'), JSON.stringify({ credsStore: 'absent-helper' }));
    const err = await rejection(pullImage(`${reg.host}/team/app:v1`, opts(freshStore(), { registries: [reg.settings()], env })));
    expect(err.message).toMatch(/authentication required/);
  });
});

describe('unqualified references', () => {
  const img = buildImage({ layers: [randomBytes(500, 40)] });
  let a: FakeRegistry;
  let b: FakeRegistry;
  beforeEach(async () => {
    a = await new FakeRegistry({ auth: 'basic', users: {} }).start();
    b = await new FakeRegistry().start();
  });
  afterEach(async () => {
    await a.stop();
    await b.stop();
  });

  it('searches the configured registries in order; first that has it wins', async () => {
    b.putImage('tools', 'v2', img);
    const registries = [a.settings({ search: true }), b.settings({ search: true })];
    const r = await pullImage('tools:v2', opts(freshStore(), { registries }));
    expect(r.reference).toBe(`${b.host}/tools:v2`);
    expect(r.registry).toBe(b.host);
    expect(r.repository).toBe('tools');
    // a answered 401 (twice: library/tools and tools); b had no library/tools.
    expect(a.log.length).toBe(2);
    expect(b.log.map((l) => l.path)).toEqual(
      expect.arrayContaining([`/v2/library/tools/manifests/v2`, `/v2/tools/manifests/v2`]),
    );

    b.putImage('library/tools', 'v2', img);
    const r2 = await pullImage('tools:v2', opts(freshStore(), { registries }));
    expect(r2.reference).toBe(`${b.host}/library/tools:v2`);
  });

  it('reports every attempt when no registry has the image; qualified names do not search', async () => {
    const registries = [a.settings({ search: true }), b.settings({ search: true })];
    const err = await rejection(pullImage('ghost', opts(freshStore(), { registries })));
    expect(err.code).toBe('Image');
    expect(err.message).toContain('not found in any registry');
    expect(err.message).toContain(`${a.host}/library/ghost:latest: authentication required`);
    expect(err.message).toContain(`${b.host}/ghost:latest: manifest unknown`);

    a.reset();
    b.reset();
    const err2 = await rejection(pullImage(`${b.host}/ghost`, opts(freshStore(), { registries })));
    expect(err2.message).toBe(`images error: manifest unknown: ${b.host}/ghost:latest`);
    expect(a.log).toEqual([]);
  });

  it('searches only registries with search: true (the default is false), and not docker.io after them', async () => {
    a.putImage('tools', 'v1', img);
    b.putImage('tools', 'v1', img);
    const r = await pullImage('tools:v1', opts(freshStore(), {
      registries: [a.settings({ search: false }), a.settings(), b.settings({ search: true })],
    }));
    expect(r.registry).toBe(b.host);
    expect(a.log).toEqual([]);
    const ref = parseReference('tools:v1');
    const only = (list: RegistrySettings[]) => searchCandidates('tools:v1', ref, list).map((c) => c.ref.canonical);
    expect(only([b.settings({ search: true })])).toEqual([`${b.host}/library/tools:v1`, `${b.host}/tools:v1`]);
    expect(only([a.settings(), { host: 'index.docker.io', search: true }])).toEqual(['docker.io/library/tools:v1']);
    expect(only([])).toEqual(['docker.io/library/tools:v1']);
    expect(only([a.settings()])).toEqual(['docker.io/library/tools:v1']);
    expect(searchRegistries([a.settings({ search: true }), b.settings({ search: true }), a.settings({ search: true })])).toEqual([a.host, b.host]);
  });
});

describe('TLS', () => {
  let tlsFiles: { key: string; cert: string; certFile: string } | undefined;
  beforeAll(() => {
    try {
      const dir = fs.mkdtempSync(path.join(scratch, 'tls-'));
      execFileSync(
        'openssl',
        ['req', '-x509', '-newkey', 'rsa:2048', '-nodes', '-keyout', 'key.pem', '-out', 'cert.pem', '-days', '1', '-subj', '/CN=127.0.0.1', '-addext', 'subjectAltName=IP:127.0.0.1'],
        { cwd: dir, stdio: 'ignore' },
      );
      tlsFiles = {
        key: fs.readFileSync(path.join(dir, 'key.pem'), 'utf8'),
        cert: fs.readFileSync(path.join(dir, 'cert.pem'), 'utf8'),
        certFile: path.join(dir, 'cert.pem'),
      };
    } catch {
      tlsFiles = undefined; // no openssl: skip
    }
  });

  it('https by default; self-signed needs caFile or skipVerify; plain http to https is explained', async () => {
    if (!tlsFiles) return;
    const reg = await new FakeRegistry({ tls: { key: tlsFiles.key, cert: tlsFiles.cert } }).start();
    try {
      const img = buildImage({ layers: [randomBytes(100, 50)] });
      reg.putImage('secure/app', 'v1', img);
      const ref = `${reg.host}/secure/app:v1`;
      const err = await rejection(pullImage(ref, opts(freshStore(), { registries: [{ host: reg.host }] })));
      expect(err.code).toBe('Network');
      expect(err.message).toMatch(/caFile|skipVerify/);

      await pullImage(ref, opts(freshStore(), { registries: [{ host: reg.host, caFile: tlsFiles.certFile }] }));
      await pullImage(ref, opts(freshStore(), { registries: [{ host: reg.host, skipVerify: true }] }));

      const err2 = await rejection(pullImage(ref, opts(freshStore(), { registries: [{ host: reg.host, transport: 'http' }] })));
      expect(err2.message).toMatch(new RegExp(reg.host.replace('.', '\\.')));
    } finally {
      await reg.stop();
    }
  });
});
