// pullImage: reference → registry → (index →) manifest → config + layers, all
// written content-addressed into an OCI layout's blobs/sha256 directory.
// Blobs already there are not fetched again; an interrupted pull leaves only
// reusable blobs and resumable partials. Recording the reference is the
// caller's job (the image store), after this resolves. See docs/images.md.

import { createHash } from 'node:crypto';
import * as fsp from 'node:fs/promises';
import * as path from 'node:path';
import { BoxliteError, ImageError } from './../errors/index.js';
import {
  checkConfigMediaType,
  checkDigests,
  hostPlatform,
  imageFromManifest,
  indexSchema,
  INDEX_TYPES,
  manifestSchema,
  MANIFEST_TYPES,
  MAX_INDEX_DEPTH,
  MAX_JSON_BLOB,
  MediaTypes,
  parseJson,
  parseWith,
  pickDescriptor,
  SCHEMA1_TYPES,
  type ImageManifest,
  type OciImage,
  type Platform,
} from './oci-layout.js';
import { isQualified, manifestReference, parseReference, withRegistry, type ImageReference } from './reference.js';
import { storageError, writeBlobAtomic } from './registry/blobfile.js';
import { RegistryClient, RegistryError } from './registry/client.js';
import type { HttpOptions } from './registry/http.js';
import { findRegistrySettings, parseRegistries, searchRegistries, type RegistrySettings } from './registry/settings.js';

export type PullStatus = 'waiting' | 'downloading' | 'verifying' | 'done' | 'cached';

/** One layer's progress, for progress bars. */
export interface PullProgress {
  /** Layer digest. */
  layer: string;
  /** Layer size in bytes. */
  total: number;
  /** Bytes present so far. */
  done: number;
  status: PullStatus;
}

export interface PullOptions {
  /** An OCI layout's `blobs/sha256` directory, shared by all images. */
  blobsDir: string;
  /** Working directory on the same filesystem (partials, temp files). */
  tmpDir: string;
  /** Per-registry settings; searched in order for unqualified references. */
  registries?: readonly RegistrySettings[];
  /** Platform to pick from multi-platform indexes. Default linux/<host arch>. */
  platform?: Platform;
  /** Layers downloaded at once. Default 3. */
  concurrency?: number;
  onProgress?: (p: PullProgress) => void;
  signal?: AbortSignal;
  /** Timeouts and retry policy. */
  http?: HttpOptions;
  /** Environment for docker config / credential helpers (default process.env). */
  env?: NodeJS.ProcessEnv;
}

export interface PullResult extends OciImage {
  /** Canonical reference the image was found under (`docker.io/library/alpine:latest`). */
  reference: string;
  /** Registry name as in the reference (`docker.io`, not registry-1.docker.io). */
  registry: string;
  repository: string;
  /** What the reference resolved to: the index digest for multi-platform images, else manifestDigest. */
  resolvedDigest: string;
  /** The index (or manifest list) the platform manifest was picked from, if any. */
  indexDigest?: string;
  manifestSize: number;
  /** Bytes of config and layers fetched from the network by this pull. */
  downloadedBytes: number;
}

interface Candidate {
  ref: ImageReference;
  settings: RegistrySettings | undefined;
}

interface Ctx {
  blobsDir: string;
  tmpDir: string;
  signal?: AbortSignal;
}

/** Downloads in flight in this process, by destination path: concurrent pulls share them. */
const inflight = new Map<string, Promise<number>>();

const DEFAULT_CONCURRENCY = 3;
const PROGRESS_INTERVAL_MS = 100;

/**
 * Pulls an image into `blobsDir` and describes it. Unqualified references are
 * searched in the configured registries (those with `search !== false`, in
 * order) and then docker.io; the first registry that has the manifest wins.
 */
export async function pullImage(reference: string, opts: PullOptions): Promise<PullResult> {
  const ref = parseReference(reference);
  if (ref.digest && !ref.digest.startsWith('sha256:')) {
    throw new ImageError(`cannot pull ${reference}: only sha256 digests are supported`);
  }
  const registries = parseRegistries(opts.registries ?? []);
  const want = opts.platform ?? hostPlatform();
  const ctx: Ctx = { blobsDir: path.resolve(opts.blobsDir), tmpDir: path.resolve(opts.tmpDir), signal: opts.signal };
  try {
    await fsp.mkdir(ctx.blobsDir, { recursive: true });
    await fsp.mkdir(ctx.tmpDir, { recursive: true });
  } catch (err) {
    throw storageError(err, `cannot create ${ctx.blobsDir} / ${ctx.tmpDir}`);
  }
  const candidates = searchCandidates(reference, ref, registries);

  // Pinned by digest and everything already here: no network at all.
  if (ref.digest) {
    const local = await resolveLocal(ctx, candidates[0]!, ref.digest, want, opts);
    if (local) return local;
  }

  const clients: RegistryClient[] = [];
  try {
    const attempts: string[] = [];
    let lastErr: unknown;
    const unreachable = new Set<string>();
    for (const cand of candidates) {
      if (unreachable.has(cand.ref.registry)) continue;
      const client = new RegistryClient({
        registry: cand.ref.registry,
        ...(cand.settings ? { settings: cand.settings } : {}),
        ...(opts.http ? { http: opts.http } : {}),
        ...(opts.env ? { env: opts.env } : {}),
      });
      clients.push(client);
      let top: TopManifest;
      try {
        top = await fetchTop(ctx, client, cand.ref);
      } catch (err) {
        if (candidates.length > 1 && fallsThrough(err)) {
          if (err instanceof BoxliteError && err.code === 'Network') unreachable.add(cand.ref.registry);
          attempts.push(`${cand.ref.canonical}: ${bare(err)}`);
          lastErr = err;
          continue;
        }
        throw err;
      }
      return await finishPull(ctx, client, cand.ref, top, want, opts);
    }
    throw new ImageError(`image ${JSON.stringify(reference)} not found in any registry; tried ${attempts.join('; ')}`, {
      cause: lastErr,
    });
  } finally {
    await Promise.all(clients.map((c) => c.close()));
  }
}

/** Where to look for a reference: its own registry, or each registry of the search list (settings.ts). */
export function searchCandidates(input: string, ref: ImageReference, registries: readonly RegistrySettings[]): Candidate[] {
  if (isQualified(input)) return [{ ref, settings: findRegistrySettings(registries, ref.registry) }];
  const out: Candidate[] = [];
  for (const host of searchRegistries(registries)) {
    const settings = findRegistrySettings(registries, host);
    if (host === 'docker.io') {
      out.push({ ref, settings });
      continue;
    }
    out.push({ ref: withRegistry(ref, host), settings });
    // `alpine` elsewhere may live at <host>/library/alpine (docker style) or <host>/alpine.
    if (!input.includes('/') && ref.repository.startsWith('library/')) {
      out.push({ ref: withRegistry(ref, host, ref.repository.slice('library/'.length)), settings });
    }
  }
  return out;
}

function fallsThrough(err: unknown): boolean {
  if (err instanceof RegistryError) return err.reason !== 'digest' && err.reason !== 'other';
  return err instanceof BoxliteError && err.code === 'Network';
}

function bare(err: unknown): string {
  const msg = err instanceof Error ? err.message : String(err);
  return msg.replace(/^(images error|network error): /, '');
}

// ---------- manifests ----------

interface TopManifest {
  bytes: Buffer;
  digest: string;
  mediaType: string | undefined;
}

/** The manifest (or index) the reference names: from blobsDir when known by digest, else the registry. */
async function fetchTop(ctx: Ctx, client: RegistryClient, ref: ImageReference): Promise<TopManifest> {
  const repo = ref.repository;
  if (ref.digest) {
    const local = await readLocalBlob(ctx, ref.digest);
    if (local) return { bytes: local, digest: ref.digest, mediaType: undefined };
    const got = await client.getManifest(repo, ref.digest, ctx.signal);
    await storeBlob(ctx, got.digest, got.bytes);
    return got;
  }
  const tag = manifestReference(ref);
  // HEAD first: cheap (and free of Docker Hub's pull limit); the body is only fetched when new.
  const head = await client.headManifest(repo, tag, ctx.signal);
  if (head?.digest?.startsWith('sha256:')) {
    const local = await readLocalBlob(ctx, head.digest, head.size);
    if (local) return { bytes: local, digest: head.digest, mediaType: head.mediaType };
  }
  const got = await client.getManifest(repo, tag, ctx.signal);
  await storeBlob(ctx, got.digest, got.bytes);
  return got;
}

interface Resolved {
  manifestDigest: string;
  mediaType: string;
  manifest: ImageManifest;
  manifestSize: number;
  indexDigest?: string;
}

type ManifestSource = (desc: { digest: string; size: number }) => Promise<Buffer | undefined>;

/** Follows indexes down to the image manifest for `want`. undefined when `source` lacks a blob. */
async function resolveManifest(
  top: TopManifest,
  want: Platform,
  source: ManifestSource,
  where: string,
): Promise<Resolved | undefined> {
  let bytes = top.bytes;
  let digest = top.digest;
  let declared = top.mediaType;
  let indexDigest: string | undefined;
  for (let depth = 0; ; depth++) {
    if (depth > MAX_INDEX_DEPTH) throw new ImageError(`image indexes of ${where} nest deeper than ${MAX_INDEX_DEPTH}`);
    const what = `manifest ${digest} of ${where}`;
    const raw = parseJson(bytes, what) as { mediaType?: unknown; schemaVersion?: unknown; manifests?: unknown } | null;
    if ((declared && SCHEMA1_TYPES.has(declared)) || raw?.schemaVersion === 1) {
      throw new ImageError(
        `${what} uses Docker image manifest schema 1, which is unsupported (re-push the image with a current docker or skopeo)`,
      );
    }
    const inner = typeof raw?.mediaType === 'string' ? raw.mediaType : undefined;
    // Content-Type is only trusted when it names a manifest type (some servers say application/json).
    const known = (t: string | undefined) => t !== undefined && (INDEX_TYPES.has(t) || MANIFEST_TYPES.has(t));
    const type = known(declared) ? declared! : inner ?? (Array.isArray(raw?.manifests) ? MediaTypes.ociIndex : MediaTypes.ociManifest);
    if (known(declared) && inner && known(inner) && inner !== declared) {
      throw new ImageError(`${what}: the registry says ${declared} but the content says ${inner}`);
    }
    if (INDEX_TYPES.has(type)) {
      const index = parseWith(indexSchema, raw, `image index ${digest} of ${where}`);
      checkDigests(index.manifests, `image index ${digest} of ${where}`);
      const desc = pickDescriptor(index.manifests, want, `image index ${digest} of ${where}`);
      if (!desc.digest.startsWith('sha256:')) throw new ImageError(`${what}: only sha256 digests are supported (${desc.digest})`);
      indexDigest ??= digest;
      const child = await source(desc);
      if (!child) return undefined;
      bytes = child;
      digest = desc.digest;
      declared = desc.mediaType;
      continue;
    }
    if (!MANIFEST_TYPES.has(type)) throw new ImageError(`${what} has unsupported media type ${type} (not a container image?)`);
    const manifest = parseWith(manifestSchema, raw, what);
    checkDigests([manifest.config, ...manifest.layers], what);
    for (const d of [manifest.config, ...manifest.layers]) {
      if (!d.digest.startsWith('sha256:')) throw new ImageError(`${what}: only sha256 digests are supported (${d.digest})`);
    }
    checkConfigMediaType(digest, manifest);
    if (manifest.config.size > MAX_JSON_BLOB) {
      throw new ImageError(`config ${manifest.config.digest} of ${where} is too large (${manifest.config.size} bytes)`);
    }
    return { manifestDigest: digest, mediaType: type, manifest, manifestSize: bytes.length, ...(indexDigest ? { indexDigest } : {}) };
  }
}

// ---------- the rest of a pull ----------

async function finishPull(
  ctx: Ctx,
  client: RegistryClient,
  ref: ImageReference,
  top: TopManifest,
  want: Platform,
  opts: PullOptions,
): Promise<PullResult> {
  const where = ref.canonical;
  const repo = ref.repository;
  const resolved = (await resolveManifest(top, want, async (desc) => {
    const local = await readLocalBlob(ctx, desc.digest, desc.size);
    if (local) return local;
    const got = await client.getManifest(repo, desc.digest, ctx.signal);
    if (got.bytes.length !== desc.size) {
      throw new ImageError(`size mismatch for manifest ${desc.digest} of ${where}: ${got.bytes.length} bytes, index declares ${desc.size}`);
    }
    await storeBlob(ctx, desc.digest, got.bytes);
    return got.bytes;
  }, where))!;

  let downloaded = 0;
  const cfg = resolved.manifest.config;
  let cfgBytes = await readLocalBlob(ctx, cfg.digest, cfg.size);
  if (!cfgBytes) {
    downloaded += await fetchBlob(ctx, client, repo, cfg);
    cfgBytes = await readLocalBlob(ctx, cfg.digest, cfg.size);
    if (!cfgBytes) throw new ImageError(`config ${cfg.digest} of ${where} vanished after download`);
  }
  const image = describe(ctx, resolved, cfgBytes, want, opts);

  downloaded += await fetchLayers(ctx, client, repo, image, opts);
  return result(ref, top.digest, resolved, image, downloaded);
}

/** All from blobsDir (reference pinned by digest); undefined when anything is missing. */
async function resolveLocal(ctx: Ctx, cand: Candidate, digest: string, want: Platform, opts: PullOptions): Promise<PullResult | undefined> {
  const bytes = await readLocalBlob(ctx, digest);
  if (!bytes) return undefined;
  const resolved = await resolveManifest({ bytes, digest, mediaType: undefined }, want, (d) => readLocalBlob(ctx, d.digest, d.size), cand.ref.canonical);
  if (!resolved) return undefined;
  const cfg = resolved.manifest.config;
  const cfgBytes = await readLocalBlob(ctx, cfg.digest, cfg.size);
  if (!cfgBytes) return undefined;
  const image = describe(ctx, resolved, cfgBytes, want, opts);
  for (const l of image.layers) if (!(await hasBlob(l.path, l.size))) return undefined;
  for (const l of uniqueLayers(image)) opts.onProgress?.({ layer: l.digest, total: l.size, done: l.size, status: 'cached' });
  return result(cand.ref, digest, resolved, image, 0);
}

function describe(ctx: Ctx, resolved: Resolved, cfgBytes: Buffer, want: Platform, opts: PullOptions): OciImage {
  const rawConfig = parseJson(cfgBytes, `config ${resolved.manifest.config.digest}`);
  const image = imageFromManifest({
    layoutDir: path.resolve(ctx.blobsDir, '..', '..'),
    manifestDigest: resolved.manifestDigest,
    mediaType: resolved.mediaType,
    manifest: resolved.manifest,
    rawConfig,
    want,
    explicitPlatform: opts.platform !== undefined,
  });
  // Blobs live in blobsDir whatever its parent is.
  image.layers = image.layers.map((l) => ({ ...l, path: blobFile(ctx, l.digest) }));
  return image;
}

function result(ref: ImageReference, resolvedDigest: string, resolved: Resolved, image: OciImage, downloaded: number): PullResult {
  return {
    ...image,
    reference: ref.canonical,
    registry: ref.registry,
    repository: ref.repository,
    resolvedDigest,
    ...(resolved.indexDigest ? { indexDigest: resolved.indexDigest } : {}),
    manifestSize: resolved.manifestSize,
    downloadedBytes: downloaded,
  };
}

function uniqueLayers(image: OciImage): OciImage['layers'] {
  const seen = new Set<string>();
  return image.layers.filter((l) => (seen.has(l.digest) ? false : (seen.add(l.digest), true)));
}

async function fetchLayers(ctx: Ctx, client: RegistryClient, repo: string, image: OciImage, opts: PullOptions): Promise<number> {
  const emit = opts.onProgress ?? (() => {});
  const todo: OciImage['layers'] = [];
  for (const l of uniqueLayers(image)) {
    if (await hasBlob(l.path, l.size)) emit({ layer: l.digest, total: l.size, done: l.size, status: 'cached' });
    else {
      todo.push(l);
      emit({ layer: l.digest, total: l.size, done: 0, status: 'waiting' });
    }
  }
  if (todo.length === 0) return 0;

  // The first failure stops the other downloads (their partials stay for a later pull).
  const stop = new AbortController();
  const onOuterAbort = () => stop.abort(ctx.signal?.reason);
  ctx.signal?.addEventListener('abort', onOuterAbort, { once: true });
  const inner: Ctx = { ...ctx, signal: stop.signal };
  let total = 0;
  let firstErr: unknown;
  const queue = [...todo];
  const worker = async () => {
    for (let l = queue.shift(); l && firstErr === undefined; l = queue.shift()) {
      const layer = l;
      let last = 0;
      try {
        const got = await fetchBlob(inner, client, repo, layer, {
          onBytes: (done) => {
            const now = Date.now();
            if (now - last < PROGRESS_INTERVAL_MS && done !== layer.size) return;
            last = now;
            emit({ layer: layer.digest, total: layer.size, done, status: 'downloading' });
          },
          onVerifying: () => emit({ layer: layer.digest, total: layer.size, done: layer.size, status: 'verifying' }),
        });
        total += got;
        emit({ layer: layer.digest, total: layer.size, done: layer.size, status: 'done' });
      } catch (err) {
        if (firstErr === undefined) {
          firstErr = err;
          stop.abort();
        }
      }
    }
  };
  const n = Math.max(1, Math.min(opts.concurrency ?? DEFAULT_CONCURRENCY, todo.length));
  try {
    await Promise.all(Array.from({ length: n }, worker));
  } finally {
    ctx.signal?.removeEventListener('abort', onOuterAbort);
  }
  if (firstErr !== undefined) {
    if (ctx.signal?.aborted) throw new ImageError('pull cancelled', { cause: ctx.signal.reason });
    throw firstErr;
  }
  return total;
}

/** Downloads one blob into blobsDir (shared with concurrent pulls in this process). Returns bytes received. */
async function fetchBlob(
  ctx: Ctx,
  client: RegistryClient,
  repo: string,
  desc: { digest: string; size: number },
  hooks: { onBytes?: (done: number) => void; onVerifying?: () => void } = {},
): Promise<number> {
  const dest = blobFile(ctx, desc.digest);
  for (;;) {
    const running = inflight.get(dest);
    if (!running) break;
    await running.catch(() => {}); // its failure is its caller's; we try ourselves below
    if (await hasBlob(dest, desc.size)) return 0;
  }
  // No await between the check above and the set below: one download per blob.
  const p = (async () => {
    if (await hasBlob(dest, desc.size)) return 0;
    const r = await client.downloadBlob(repo, desc, {
      dest,
      tmpDir: ctx.tmpDir,
      ...(ctx.signal ? { signal: ctx.signal } : {}),
      ...hooks,
    });
    return r.received;
  })();
  inflight.set(dest, p);
  try {
    return await p;
  } finally {
    if (inflight.get(dest) === p) inflight.delete(dest);
  }
}

// ---------- the blob directory ----------

function blobFile(ctx: Ctx, digest: string): string {
  return path.join(ctx.blobsDir, digest.slice('sha256:'.length));
}

async function hasBlob(file: string, size: number): Promise<boolean> {
  try {
    const st = await fsp.stat(file);
    return st.isFile() && st.size === size;
  } catch {
    return false;
  }
}

/**
 * A small blob (manifest, index, config) from blobsDir, checked by size and
 * sha256; a corrupt copy is deleted (it will be fetched again).
 */
async function readLocalBlob(ctx: Ctx, digest: string, size?: number): Promise<Buffer | undefined> {
  if (!/^sha256:[a-f0-9]{64}$/.test(digest)) return undefined;
  const file = blobFile(ctx, digest);
  let buf: Buffer;
  try {
    const st = await fsp.stat(file);
    if (size !== undefined && st.size !== size) return undefined;
    if (st.size > MAX_JSON_BLOB) return undefined;
    buf = await fsp.readFile(file);
  } catch {
    return undefined;
  }
  if (`sha256:${createHash('sha256').update(buf).digest('hex')}` !== digest) {
    await fsp.rm(file, { force: true }).catch(() => {});
    return undefined;
  }
  return buf;
}

async function storeBlob(ctx: Ctx, digest: string, bytes: Buffer): Promise<void> {
  const file = blobFile(ctx, digest);
  if (await hasBlob(file, bytes.length)) return;
  await writeBlobAtomic(ctx.tmpDir, file, bytes);
}
