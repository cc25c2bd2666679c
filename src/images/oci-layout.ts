// Reads a local OCI image layout (what `skopeo copy … oci:DIR` and `umoci`
// write): oci-layout + index.json + blobs/<alg>/<hex>. Resolves the index to
// one image manifest for the wanted platform and returns its config and
// layers. Every blob is checked against its descriptor's digest and size as
// it is read; nothing from the layout is trusted before that check.

import { createHash } from 'node:crypto';
import { createReadStream } from 'node:fs';
import * as fsp from 'node:fs/promises';
import * as path from 'node:path';
import { spawn } from 'node:child_process';
import { Duplex, PassThrough, Readable, Transform, type TransformCallback } from 'node:stream';
import * as zlib from 'node:zlib';
import { z } from 'zod';
import { BoxliteError, ImageError } from '../errors/index.js';
import { storageError } from '../util/fs.js';

export const MediaTypes = {
  ociIndex: 'application/vnd.oci.image.index.v1+json',
  ociManifest: 'application/vnd.oci.image.manifest.v1+json',
  ociConfig: 'application/vnd.oci.image.config.v1+json',
  dockerManifestList: 'application/vnd.docker.distribution.manifest.list.v2+json',
  dockerManifest: 'application/vnd.docker.distribution.manifest.v2+json',
  dockerConfig: 'application/vnd.docker.container.image.v1+json',
} as const;

export const INDEX_TYPES: ReadonlySet<string> = new Set<string>([MediaTypes.ociIndex, MediaTypes.dockerManifestList]);
export const MANIFEST_TYPES: ReadonlySet<string> = new Set<string>([MediaTypes.ociManifest, MediaTypes.dockerManifest]);
export const CONFIG_TYPES: ReadonlySet<string> = new Set<string>([MediaTypes.ociConfig, MediaTypes.dockerConfig]);
export const SCHEMA1_TYPES: ReadonlySet<string> = new Set<string>([
  'application/vnd.docker.distribution.manifest.v1+json',
  'application/vnd.docker.distribution.manifest.v1+prettyjws',
]);

export type Compression = 'none' | 'gzip' | 'zstd';

const LAYER_TYPES: ReadonlyMap<string, Compression> = new Map<string, Compression>([
  ['application/vnd.oci.image.layer.v1.tar', 'none'],
  ['application/vnd.oci.image.layer.v1.tar+gzip', 'gzip'],
  ['application/vnd.oci.image.layer.v1.tar+zstd', 'zstd'],
  ['application/vnd.oci.image.layer.nondistributable.v1.tar', 'none'],
  ['application/vnd.oci.image.layer.nondistributable.v1.tar+gzip', 'gzip'],
  ['application/vnd.oci.image.layer.nondistributable.v1.tar+zstd', 'zstd'],
  ['application/vnd.docker.image.rootfs.diff.tar', 'none'],
  ['application/vnd.docker.image.rootfs.diff.tar.gzip', 'gzip'],
  ['application/vnd.docker.image.rootfs.foreign.diff.tar.gzip', 'gzip'],
]);

/** Manifests, indexes and configs larger than this are refused (containerd uses 4 MiB too). */
export const MAX_JSON_BLOB = 4 * 1024 * 1024;
export const MAX_INDEX_DEPTH = 4;
const REF_NAME = 'org.opencontainers.image.ref.name';

export interface Platform {
  os: string;
  architecture: string;
  variant?: string;
}

/**
 * The run-relevant part of the image config, in the OCI/Docker field names
 * (`config` object of the config blob), normalised: absent lists are [] or
 * null, an empty WorkingDir is "/" (Docker's default).
 */
export interface ImageConfig {
  Env: string[];
  Entrypoint: string[] | null;
  Cmd: string[] | null;
  WorkingDir: string;
  /** "" when unset (root). */
  User: string;
  ExposedPorts: Record<string, object>;
  Volumes: Record<string, object>;
  Labels: Record<string, string>;
  StopSignal?: string;
}

export interface LayerDescriptor {
  digest: string;
  mediaType: string;
  size: number;
  /** Absolute path of the blob inside the layout. */
  path: string;
  compression: Compression;
  /** Uncompressed digest from the config's rootfs.diff_ids, when present. */
  diffId: string | null;
}

export interface OciImage {
  layoutDir: string;
  manifestDigest: string;
  manifestMediaType: string;
  configDigest: string;
  /** From the config blob (falls back to the wanted platform when the config omits it). */
  platform: Platform;
  config: ImageConfig;
  layers: LayerDescriptor[];
}

export interface ReadLayoutOptions {
  /** Platform to pick from a multi-platform index. Default: linux/<host arch>. */
  platform?: Platform;
  /** Tag/ref name (annotation org.opencontainers.image.ref.name) when index.json lists several images. */
  reference?: string;
}

// ---------- schemas (only the fields we use; everything else passes) ----------

export const digestRe = /^(sha256:[a-f0-9]{64}|sha512:[a-f0-9]{128})$/;

export const descriptorSchema = z
  .object({
    mediaType: z.string().optional(),
    digest: z.string(),
    size: z.number().int().nonnegative().safe(),
    annotations: z.record(z.string()).nullish(),
    platform: z
      .object({ os: z.string(), architecture: z.string(), variant: z.string().optional() })
      .passthrough()
      .nullish(),
  })
  .passthrough();
export type Descriptor = z.infer<typeof descriptorSchema>;

export const indexSchema = z
  .object({
    schemaVersion: z.literal(2),
    mediaType: z.string().optional(),
    manifests: z.array(descriptorSchema),
  })
  .passthrough();

export const manifestSchema = z
  .object({
    schemaVersion: z.literal(2),
    mediaType: z.string().optional(),
    config: descriptorSchema,
    layers: z.array(descriptorSchema),
  })
  .passthrough();

const stringList = z.array(z.string()).nullish();
const configSchema = z
  .object({
    architecture: z.string().optional(),
    os: z.string().optional(),
    variant: z.string().optional(),
    config: z
      .object({
        Env: stringList,
        Entrypoint: stringList,
        Cmd: stringList,
        WorkingDir: z.string().nullish(),
        User: z.string().nullish(),
        ExposedPorts: z.record(z.object({}).passthrough()).nullish(),
        Volumes: z.record(z.object({}).passthrough()).nullish(),
        Labels: z.record(z.string()).nullish(),
        StopSignal: z.string().nullish(),
      })
      .passthrough()
      .nullish(),
    rootfs: z
      .object({ type: z.string().optional(), diff_ids: z.array(z.string()).optional() })
      .passthrough()
      .optional(),
  })
  .passthrough();

// ---------- public API ----------

/** linux/<arch> with Node's arch names mapped to OCI's (x64 → amd64). */
export function hostPlatform(): Platform {
  const map: Record<string, string> = {
    x64: 'amd64',
    arm64: 'arm64',
    arm: 'arm',
    ia32: '386',
    ppc64: 'ppc64le',
    s390x: 's390x',
    riscv64: 'riscv64',
    loong64: 'loong64',
  };
  const architecture = map[process.arch] ?? process.arch;
  return architecture === 'arm64' ? { os: 'linux', architecture, variant: 'v8' } : { os: 'linux', architecture };
}

/** Reads and verifies index, manifest and config of the image in `layoutDir`. Layers are verified when opened. */
export async function readOciLayout(layoutDir: string, opts: ReadLayoutOptions = {}): Promise<OciImage> {
  const dir = path.resolve(layoutDir);
  const platform = opts.platform ?? hostPlatform();

  let st;
  try {
    st = await fsp.stat(dir);
  } catch (err) {
    throw new ImageError(`OCI layout directory not found: ${dir}`, { cause: err });
  }
  if (!st.isDirectory()) throw new ImageError(`OCI layout path is not a directory: ${dir}`);

  const layoutFile = await readJsonFile(path.join(dir, 'oci-layout'), 'oci-layout file', 64 * 1024);
  const version = (layoutFile as { imageLayoutVersion?: unknown } | null)?.imageLayoutVersion;
  if (typeof version !== 'string' || !/^1\./.test(version)) {
    throw new ImageError(`unsupported OCI layout in ${dir}: imageLayoutVersion ${JSON.stringify(version)} (want 1.x)`);
  }

  const indexRaw = await readJsonFile(path.join(dir, 'index.json'), 'index.json', MAX_JSON_BLOB);
  const index = parseWith(indexSchema, indexRaw, `index.json in ${dir}`);
  checkDigests(index.manifests, `index.json in ${dir}`);

  // Top level: narrow by reference first (tags live only here).
  let candidates = index.manifests;
  if (opts.reference !== undefined) {
    candidates = candidates.filter((d) => d.annotations?.[REF_NAME] === opts.reference);
    if (candidates.length === 0) {
      const refs = index.manifests.map((d) => d.annotations?.[REF_NAME]).filter((r): r is string => !!r);
      throw new ImageError(
        `reference "${opts.reference}" not found in ${dir}/index.json (available: ${refs.length ? refs.join(', ') : 'none'})`,
      );
    }
  }

  let desc = pickDescriptor(candidates, platform, `${dir}/index.json`);
  for (let depth = 0; ; depth++) {
    if (depth > MAX_INDEX_DEPTH) throw new ImageError(`image indexes in ${dir} nest deeper than ${MAX_INDEX_DEPTH}`);
    const what = `manifest ${desc.digest}`;
    if (desc.mediaType && SCHEMA1_TYPES.has(desc.mediaType)) {
      throw new ImageError(`${what} uses Docker schema 1 (${desc.mediaType}), which is not supported`);
    }
    const raw = await readJsonBlob(dir, desc, what);
    const declared = desc.mediaType ?? (raw as { mediaType?: string } | null)?.mediaType;
    const inner = (raw as { mediaType?: unknown } | null)?.mediaType;
    if (desc.mediaType && typeof inner === 'string' && inner !== desc.mediaType) {
      throw new ImageError(`${what}: descriptor says ${desc.mediaType} but the blob says ${inner}`);
    }
    const isIndex = declared ? INDEX_TYPES.has(declared) : Array.isArray((raw as { manifests?: unknown }).manifests);
    if (isIndex) {
      const sub = parseWith(indexSchema, raw, `image index ${desc.digest}`);
      checkDigests(sub.manifests, `image index ${desc.digest}`);
      desc = pickDescriptor(sub.manifests, platform, `image index ${desc.digest}`);
      continue;
    }
    if (declared && !MANIFEST_TYPES.has(declared)) {
      throw new ImageError(`${what} has unsupported media type ${declared}`);
    }
    const manifest = parseWith(manifestSchema, raw, what);
    checkDigests([manifest.config, ...manifest.layers], what);
    return await loadImage(dir, desc, declared ?? MediaTypes.ociManifest, manifest, platform, opts.platform !== undefined);
  }
}

/**
 * Opens a blob as a stream that fails (ImageError) if the bytes do not match
 * `digest` and `size`. The check is streaming: too many bytes fail at once,
 * a wrong digest or too few bytes fail at end of stream.
 */
export function openBlob(layoutDir: string, digest: string, size: number): Readable {
  return openVerifiedFile(blobPath(layoutDir, digest), digest, size);
}

function openVerifiedFile(file: string, digest: string, size: number): Readable {
  const verifier = new DigestVerifier(digest, size, `blob ${digest}`);
  const src = createReadStream(file);
  src.on('error', (err: NodeJS.ErrnoException) => {
    const msg = err.code === 'ENOENT' ? `blob ${digest} is missing (${file})` : `failed to read blob ${digest}: ${err.message}`;
    verifier.destroy(new ImageError(msg, { cause: err }));
  });
  verifier.on('close', () => src.destroy());
  return src.pipe(verifier);
}

/**
 * Opens a layer as its uncompressed tar stream. The compressed bytes are
 * digest-checked; the compression is taken from the first bytes of the blob
 * (magic) so mislabelled layers still work. zstd needs zlib zstd support
 * (Node >= 22.15); on older Node it is a clear ImageError.
 */
/**
 * Node 20's zlib has no zstd (it arrived in 22.15), and no npm decoder is both
 * streaming and well kept, so older Nodes decompress through Debian's `zstd` tool.
 */
function zstdProcess(digest: string, blob: Readable): Transform {
  const child = spawn('zstd', ['-dcq'], { stdio: ['pipe', 'pipe', 'pipe'] });
  let stderr = '';
  child.stderr.on('data', (c: Buffer) => (stderr += c.toString()));
  // The output ends only once zstd exited 0: a damaged frame must fail, not look short.
  const output = new PassThrough();
  child.stdout.pipe(output, { end: false });
  const duplex = Duplex.from({ writable: child.stdin, readable: output }) as unknown as Transform;
  child.on('error', (err) => {
    blob.destroy();
    duplex.destroy(new ImageError(`layer ${digest} is zstd-compressed and the zstd tool is not available: ${err.message}`, { cause: err }));
  });
  child.on('close', (code) => {
    if (code) duplex.destroy(new Error(`zstd exited ${code}: ${stderr.trim()}`));
    else output.end();
  });
  duplex.on('close', () => child.kill());
  return duplex;
}

export async function openLayer(layer: LayerDescriptor): Promise<Readable> {
  const magic = await readHead(layer.path, 4, layer.digest);
  let compression: Compression = layer.compression;
  if (magic.length >= 2 && magic[0] === 0x1f && magic[1] === 0x8b) compression = 'gzip';
  else if (magic.length >= 4 && magic.readUInt32LE(0) === 0xfd2fb528) compression = 'zstd';
  else compression = 'none';

  const blob = openVerifiedFile(layer.path, layer.digest, layer.size);
  if (compression === 'none') return blob;

  let decoder: Transform;
  if (compression === 'gzip') {
    decoder = zlib.createGunzip();
  } else {
    const factory = (zlib as unknown as { createZstdDecompress?: () => Transform }).createZstdDecompress;
    decoder = typeof factory === 'function' ? factory() : zstdProcess(layer.digest, blob);
  }
  // .pipe() instead of pipeline(): the consumer must see our ImageError, not
  // whichever raw error destroyed the chain first.
  const out = new PassThrough();
  const fail = (err: Error) => {
    out.destroy(
      err instanceof ImageError ? err : new ImageError(`layer ${layer.digest} failed to decompress (${compression}): ${err.message}`, { cause: err }),
    );
  };
  blob.on('error', fail);
  decoder.on('error', fail);
  out.on('close', () => {
    blob.destroy();
    decoder.destroy();
  });
  return blob.pipe(decoder).pipe(out);
}

/** `blobs/<alg>/<hex>` for a validated digest; throws ImageError for anything else. */
export function blobPath(layoutDir: string, digest: string): string {
  if (!digestRe.test(digest)) throw new ImageError(`invalid or unsupported digest "${digest}"`);
  const [alg, hex] = digest.split(':') as [string, string];
  return path.join(path.resolve(layoutDir), 'blobs', alg, hex);
}

// ---------- internals ----------

class DigestVerifier extends Transform {
  private readonly hash;
  private seen = 0;

  constructor(
    private readonly digest: string,
    private readonly size: number,
    private readonly what: string,
  ) {
    super();
    this.hash = createHash(digest.startsWith('sha512:') ? 'sha512' : 'sha256');
  }

  override _transform(chunk: Buffer, _enc: BufferEncoding, cb: TransformCallback): void {
    this.seen += chunk.length;
    if (this.seen > this.size) {
      cb(new ImageError(`size mismatch for ${this.what}: more than the ${this.size} bytes its descriptor declares`));
      return;
    }
    this.hash.update(chunk);
    cb(null, chunk);
  }

  override _flush(cb: TransformCallback): void {
    if (this.seen !== this.size) {
      cb(new ImageError(`size mismatch for ${this.what}: ${this.seen} bytes, descriptor declares ${this.size}`));
      return;
    }
    const got = `${this.digest.split(':')[0]}:${this.hash.digest('hex')}`;
    if (got !== this.digest) {
      cb(new ImageError(`digest mismatch for ${this.what}: content hashes to ${got}`));
      return;
    }
    cb();
  }
}

async function readHead(file: string, n: number, digest: string): Promise<Buffer> {
  let fh;
  try {
    fh = await fsp.open(file, 'r');
  } catch (err) {
    throw layoutReadError(err, `blob ${digest}`, file);
  }
  try {
    const buf = Buffer.alloc(n);
    const { bytesRead } = await fh.read(buf, 0, n, 0);
    return buf.subarray(0, bytesRead);
  } catch (err) {
    throw layoutReadError(err, `blob ${digest}`, file);
  } finally {
    await fh.close().catch(() => undefined);
  }
}

/**
 * A failed read in an image layout. A file that is not there, or is a directory, means the
 * layout is incomplete or malformed (ImageError); anything else (EACCES, EIO) is the disk's.
 */
function layoutReadError(err: unknown, what: string, file: string, missing = `${what} is missing (${file})`): BoxliteError {
  const code = (err as NodeJS.ErrnoException | null)?.code;
  if (code === 'ENOENT' || code === 'ENOTDIR') return new ImageError(missing, { cause: err });
  if (code === 'EISDIR') return new ImageError(`${what} is a directory, not a file (${file})`, { cause: err });
  return storageError(err, `cannot read ${what} (${file})`);
}

async function readJsonFile(file: string, what: string, max: number): Promise<unknown> {
  let buf: Buffer;
  try {
    const st = await fsp.stat(file);
    if (st.size > max) throw new ImageError(`${what} is too large (${st.size} bytes, limit ${max})`);
    buf = await fsp.readFile(file);
  } catch (err) {
    if (err instanceof ImageError) throw err;
    throw layoutReadError(err, what, file, `${what} not found: ${file}`);
  }
  return parseJson(buf, `${what} (${file})`);
}

async function readJsonBlob(dir: string, desc: Descriptor, what: string): Promise<unknown> {
  if (desc.size > MAX_JSON_BLOB) throw new ImageError(`${what} is too large (${desc.size} bytes, limit ${MAX_JSON_BLOB})`);
  const file = blobPath(dir, desc.digest);
  let buf: Buffer;
  try {
    buf = await fsp.readFile(file);
  } catch (err) {
    throw layoutReadError(err, `${what}: blob`, file);
  }
  if (buf.length !== desc.size) {
    throw new ImageError(`size mismatch for ${what}: ${buf.length} bytes, descriptor declares ${desc.size}`);
  }
  const alg = desc.digest.startsWith('sha512:') ? 'sha512' : 'sha256';
  const got = `${alg}:${createHash(alg).update(buf).digest('hex')}`;
  if (got !== desc.digest) throw new ImageError(`digest mismatch for ${what}: content hashes to ${got}`);
  return parseJson(buf, what);
}

export function parseJson(buf: Buffer, what: string): unknown {
  try {
    return JSON.parse(buf.toString('utf8'));
  } catch (err) {
    throw new ImageError(`${what} is not valid JSON: ${(err as Error).message}`, { cause: err });
  }
}

export function parseWith<T extends z.ZodTypeAny>(schema: T, value: unknown, what: string): z.infer<T> {
  const res = schema.safeParse(value);
  if (!res.success) {
    const issue = res.error.issues[0];
    const where = issue && issue.path.length ? ` at ${issue.path.join('.')}` : '';
    throw new ImageError(`${what} is malformed${where}: ${issue?.message ?? 'invalid'}`);
  }
  return res.data;
}

export function checkDigests(descs: Descriptor[], what: string): void {
  for (const d of descs) {
    if (!digestRe.test(d.digest)) throw new ImageError(`${what} has an invalid digest "${d.digest}"`);
  }
}

function isAttestation(d: Descriptor): boolean {
  return d.annotations?.['vnd.docker.reference.type'] === 'attestation-manifest' || d.platform?.os === 'unknown';
}

export function pickDescriptor(all: Descriptor[], want: Platform, where: string): Descriptor {
  const usable = all.filter((d) => !isAttestation(d));
  if (usable.length === 0) throw new ImageError(`${where} lists no usable manifests`);
  const withPlatform = usable.filter((d) => d.platform);
  if (withPlatform.length === 0) {
    if (usable.length === 1) return usable[0]!;
    const refs = usable.map((d) => d.annotations?.[REF_NAME] ?? d.digest);
    throw new ImageError(`${where} lists ${usable.length} images; choose one by reference (${refs.join(', ')})`);
  }
  const matching = withPlatform.filter(
    (d) => d.platform!.os === want.os && d.platform!.architecture === want.architecture,
  );
  if (matching.length === 0) {
    const have = withPlatform.map((d) => platformString(d.platform!)).join(', ');
    throw new ImageError(`${where} has no manifest for ${platformString(want)} (available: ${have})`);
  }
  const exact = matching.find((d) => (d.platform!.variant ?? '') === (want.variant ?? ''));
  return exact ?? matching[0]!;
}

export function platformString(p: { os: string; architecture: string; variant?: string | undefined }): string {
  return `${p.os}/${p.architecture}${p.variant ? `/${p.variant}` : ''}`;
}

async function loadImage(
  dir: string,
  desc: Descriptor,
  mediaType: string,
  manifest: z.infer<typeof manifestSchema>,
  want: Platform,
  explicitPlatform: boolean,
): Promise<OciImage> {
  checkConfigMediaType(desc.digest, manifest);
  const rawCfg = await readJsonBlob(dir, manifest.config, `config ${manifest.config.digest}`);
  return imageFromManifest({ layoutDir: dir, manifestDigest: desc.digest, mediaType, manifest, rawConfig: rawCfg, want, explicitPlatform });
}

export type ImageManifest = z.infer<typeof manifestSchema>;

/** Refuses manifests whose config is not a container image config (helm charts, artifacts). */
export function checkConfigMediaType(manifestDigest: string, manifest: ImageManifest): void {
  const cfgDesc = manifest.config;
  if (cfgDesc.mediaType && !CONFIG_TYPES.has(cfgDesc.mediaType)) {
    throw new ImageError(`manifest ${manifestDigest}: config has unsupported media type ${cfgDesc.mediaType} (not a container image?)`);
  }
}

export interface ImageParts {
  /** Layout whose blobs/<alg>/<hex> hold the layers (they need not be there yet). */
  layoutDir: string;
  manifestDigest: string;
  mediaType: string;
  manifest: ImageManifest;
  /** The config blob, already digest-verified and JSON-parsed. */
  rawConfig: unknown;
  want: Platform;
  explicitPlatform: boolean;
}

/** Validates a manifest + config pair against the wanted platform and describes the image. */
export function imageFromManifest(parts: ImageParts): OciImage {
  const { layoutDir: dir, manifestDigest, mediaType, manifest, want, explicitPlatform } = parts;
  checkConfigMediaType(manifestDigest, manifest);
  const cfgDesc = manifest.config;
  const cfg = parseWith(configSchema, parts.rawConfig, `config ${cfgDesc.digest}`);
  const desc = { digest: manifestDigest };

  if (cfg.os && cfg.os !== want.os) {
    throw new ImageError(`image ${desc.digest} is for os "${cfg.os}", need "${want.os}"`);
  }
  if (cfg.architecture && cfg.architecture !== want.architecture) {
    const hint = explicitPlatform ? '' : ' (pass a platform to override)';
    throw new ImageError(
      `image ${desc.digest} is for ${cfg.os ?? 'linux'}/${cfg.architecture}, this host runs ${platformString(want)}${hint}`,
    );
  }

  const diffIds = cfg.rootfs?.diff_ids;
  if (diffIds && diffIds.length !== manifest.layers.length) {
    throw new ImageError(
      `image ${desc.digest}: manifest has ${manifest.layers.length} layers but config lists ${diffIds.length} diff_ids`,
    );
  }

  const layers: LayerDescriptor[] = manifest.layers.map((l, i) => {
    const mt = l.mediaType ?? '';
    const compression = LAYER_TYPES.get(mt);
    if (compression === undefined) {
      throw new ImageError(`layer ${l.digest} has unsupported media type "${mt}"`);
    }
    const diffId = diffIds?.[i] ?? null;
    if (diffId !== null && !digestRe.test(diffId)) {
      throw new ImageError(`config ${cfgDesc.digest}: invalid diff_id "${diffId}"`);
    }
    return { digest: l.digest, mediaType: mt, size: l.size, path: blobPath(dir, l.digest), compression, diffId };
  });

  const c = cfg.config ?? {};
  const config: ImageConfig = {
    Env: c.Env ?? [],
    Entrypoint: c.Entrypoint && c.Entrypoint.length ? c.Entrypoint : null,
    Cmd: c.Cmd && c.Cmd.length ? c.Cmd : null,
    WorkingDir: c.WorkingDir ? c.WorkingDir : '/',
    User: c.User ?? '',
    ExposedPorts: c.ExposedPorts ?? {},
    Volumes: c.Volumes ?? {},
    Labels: c.Labels ?? {},
    ...(c.StopSignal ? { StopSignal: c.StopSignal } : {}),
  };
  const platform: Platform = {
    os: cfg.os ?? want.os,
    architecture: cfg.architecture ?? want.architecture,
    ...(cfg.variant ? { variant: cfg.variant } : {}),
  };

  return {
    layoutDir: dir,
    manifestDigest,
    manifestMediaType: mediaType,
    configDigest: cfgDesc.digest,
    platform,
    config,
    layers,
  };
}
