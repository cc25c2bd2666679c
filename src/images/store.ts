import crypto from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import { ImageError, InvalidStateError, NotFoundError } from '../errors/index.js';
import { openDatabase, sqlite, type Db } from '../store/db.js';
import { storageError, writeFileAtomic } from '../util/fs.js';
import { imageBoundary, imageBoundarySync } from './errors.js';
import { MediaTypes } from './oci-layout.js';
import { pullImage, type PullProgress } from './pull.js';
import { parseReference } from './reference.js';
import type { RegistrySettings } from './registry/index.js';
import { importArchive } from './archive.js';

/** `ImageInfo` of @boxlite-ai/boxlite. */
export interface ImageInfo {
  reference: string;
  repository: string;
  tag: string;
  /** Config digest (the image id, as docker shows it). */
  id: string;
  cachedAt: string;
  sizeBytes?: number;
}

/** `ImagePullResult` of @boxlite-ai/boxlite. */
export interface ImagePullResult {
  reference: string;
  configDigest: string;
  layerCount: number;
}

export interface ImageRecord {
  reference: string;
  registry: string;
  repository: string;
  tag: string;
  manifestDigest: string;
  manifestMediaType: string;
  configDigest: string;
  layerCount: number;
  sizeBytes: number;
  cachedAt: string;
}

const MIGRATIONS = [
  `CREATE TABLE images (
     reference       TEXT PRIMARY KEY,
     registry        TEXT NOT NULL,
     repository      TEXT NOT NULL,
     tag             TEXT NOT NULL,
     manifest_digest TEXT NOT NULL,
     manifest_media_type TEXT NOT NULL,
     config_digest   TEXT NOT NULL,
     layer_count     INTEGER NOT NULL,
     size_bytes      INTEGER NOT NULL,
     cached_at       TEXT NOT NULL
   );
   CREATE INDEX images_manifest ON images (manifest_digest);`,
];

interface Row {
  reference: string;
  registry: string;
  repository: string;
  tag: string;
  manifest_digest: string;
  manifest_media_type: string;
  config_digest: string;
  layer_count: number;
  size_bytes: number;
  cached_at: string;
}

const fromRow = (r: Row): ImageRecord => ({
  reference: r.reference,
  registry: r.registry,
  repository: r.repository,
  tag: r.tag,
  manifestDigest: r.manifest_digest,
  manifestMediaType: r.manifest_media_type,
  configDigest: r.config_digest,
  layerCount: r.layer_count,
  sizeBytes: r.size_bytes,
  cachedAt: r.cached_at,
});

/**
 * The local image store: `$BOXLITE_HOME/images` is an OCI image layout (blobs shared by
 * digest across images), `db/images.db` maps references to manifests. A reference is
 * recorded only after every blob it needs is present and verified, so an interrupted
 * pull never leaves an image that is later used; partial blobs are resumed.
 */
export class ImageStore {
  readonly blobsDir: string;
  readonly tmpDir: string;
  private dbHandle?: Db;

  constructor(
    readonly imagesDir: string,
    private readonly dbDir: string,
  ) {
    this.blobsDir = path.join(imagesDir, 'blobs', 'sha256');
    this.tmpDir = path.join(imagesDir, 'tmp');
  }

  private get db(): Db {
    if (!this.dbHandle) {
      for (const d of [this.blobsDir, this.tmpDir, this.dbDir]) {
        try {
          fs.mkdirSync(d, { recursive: true });
        } catch (err) {
          throw storageError(err, `cannot create image store directory ${d}`);
        }
      }
      const layoutFile = path.join(this.imagesDir, 'oci-layout');
      if (!fs.existsSync(layoutFile)) writeFileAtomic(layoutFile, JSON.stringify({ imageLayoutVersion: '1.0.0' }));
      this.dbHandle = openDatabase(this.dbDir, 'images', MIGRATIONS);
    }
    return this.dbHandle;
  }

  close(): void {
    this.dbHandle?.close();
    this.dbHandle = undefined;
  }

  /** The canonical form of a user's reference (`alpine` → `docker.io/library/alpine:latest`). */
  canonical(reference: string): string {
    return parseReference(reference).canonical;
  }

  /** A locally stored image, by reference (canonical or as typed), or undefined. */
  find(reference: string): ImageRecord | undefined {
    const row = sqlite(`look up image ${reference}`, () =>
      this.db.prepare('SELECT * FROM images WHERE reference = ? OR reference = ?').get(reference, this.canonicalOrSelf(reference)),
    ) as Row | undefined;
    return row ? fromRow(row) : undefined;
  }

  private canonicalOrSelf(reference: string): string {
    try {
      return this.canonical(reference);
    } catch {
      return reference;
    }
  }

  /** Pulls an image (downloading only blobs not already stored) and records its reference. */
  async pull(
    reference: string,
    opts: { registries?: RegistrySettings[]; onProgress?: (p: PullProgress) => void; signal?: AbortSignal } = {},
  ): Promise<ImageRecord> {
    return imageBoundary(`cannot pull ${reference}`, () => this.pullUnguarded(reference, opts));
  }

  private async pullUnguarded(
    reference: string,
    opts: { registries?: RegistrySettings[]; onProgress?: (p: PullProgress) => void; signal?: AbortSignal },
  ): Promise<ImageRecord> {
    this.db; // creates the layout before downloading into it
    const pulled = await pullImage(reference, {
      blobsDir: this.blobsDir,
      tmpDir: this.tmpDir,
      registries: opts.registries ?? [],
      onProgress: opts.onProgress,
      signal: opts.signal,
    });
    // Recorded under the name the user asked for (docker's mirror semantics): `busybox`
    // pulled through a mirror is still docker.io/library/busybox, and later lookups of
    // `busybox` find it offline. `registry` says where it actually came from.
    const parsed = parseReference(reference);
    return this.record({
      reference: parsed.canonical,
      registry: pulled.registry,
      repository: pulled.repository,
      tag: parsed.tag ?? parsed.digest ?? 'latest',
      manifestDigest: pulled.manifestDigest,
      manifestMediaType: pulled.manifestMediaType,
      configDigest: pulled.configDigest,
      layerCount: pulled.layers.length,
      sizeBytes: pulled.layers.reduce((n, l) => n + l.size, 0),
      cachedAt: new Date().toISOString(),
    });
  }

  /** Loads `docker save` or OCI archives (a tar of an image layout); returns what was recorded. */
  load(archivePath: string): Promise<ImageRecord[]> {
    return imageBoundary(`cannot load ${archivePath}`, () => this.loadUnguarded(archivePath));
  }

  private async loadUnguarded(archivePath: string): Promise<ImageRecord[]> {
    this.db;
    const images = await importArchive(archivePath, { blobsDir: this.blobsDir, tmpDir: this.tmpDir });
    if (images.length === 0) throw new ImageError(`no tagged image found in ${archivePath}`);
    return images.map((img) => {
      const parsed = parseReference(img.reference);
      return this.record({
        reference: parsed.canonical,
        registry: parsed.registry,
        repository: parsed.repository,
        tag: parsed.tag ?? 'latest',
        manifestDigest: img.manifestDigest,
        manifestMediaType: img.manifestMediaType,
        configDigest: img.configDigest,
        layerCount: img.layerCount,
        sizeBytes: img.sizeBytes,
        cachedAt: new Date().toISOString(),
      });
    });
  }

  private record(rec: ImageRecord): ImageRecord {
    sqlite(`record image ${rec.reference}`, () => this.db
      .prepare(
        `INSERT INTO images (reference, registry, repository, tag, manifest_digest, manifest_media_type, config_digest, layer_count, size_bytes, cached_at)
         VALUES (@reference, @registry, @repository, @tag, @manifestDigest, @manifestMediaType, @configDigest, @layerCount, @sizeBytes, @cachedAt)
         ON CONFLICT (reference) DO UPDATE SET registry = excluded.registry, repository = excluded.repository,
           tag = excluded.tag, manifest_digest = excluded.manifest_digest, manifest_media_type = excluded.manifest_media_type,
           config_digest = excluded.config_digest,
           layer_count = excluded.layer_count, size_bytes = excluded.size_bytes, cached_at = excluded.cached_at`,
      )
      .run(rec));
    this.writeIndex();
    return rec;
  }

  list(): ImageRecord[] {
    return (sqlite('list images', () => this.db.prepare('SELECT * FROM images ORDER BY cached_at DESC, reference').all()) as Row[]).map(fromRow);
  }

  /**
   * Forgets a reference. Refused while a box uses the image (`inUse`), unless forced;
   * blobs stay until prune() (other images may share them).
   */
  remove(reference: string, opts: { force?: boolean; inUse: (manifestDigest: string) => string[] }): ImageRecord {
    const rec = this.find(reference);
    if (!rec) throw new NotFoundError('image', reference);
    const users = opts.inUse(rec.manifestDigest);
    if (users.length && !opts.force) {
      throw new InvalidStateError(`image ${rec.reference} is used by box ${users.join(', ')}; remove the box first or pass force`);
    }
    sqlite(`remove image ${rec.reference}`, () => this.db.prepare('DELETE FROM images WHERE reference = ?').run(rec.reference));
    this.writeIndex();
    return rec;
  }

  /**
   * Deletes blobs and root filesystem bases that no recorded image and no box needs.
   * `keepManifests` are the manifest digests boxes still use.
   */
  prune(keepManifests: Set<string>): { blobs: number; bases: number; bytes: number } {
    return imageBoundarySync(`cannot prune the image store ${this.imagesDir}`, () => this.pruneUnguarded(keepManifests));
  }

  private pruneUnguarded(keepManifests: Set<string>): { blobs: number; bases: number; bytes: number } {
    const wanted = new Set<string>();
    const manifests = new Set([...this.list().map((r) => r.manifestDigest), ...keepManifests]);
    for (const digest of manifests) {
      wanted.add(digest);
      const manifest = this.readManifest(digest);
      if (!manifest) continue;
      wanted.add(manifest.config.digest);
      for (const l of manifest.layers) wanted.add(l.digest);
    }
    let blobs = 0;
    let bases = 0;
    let bytes = 0;
    for (const hex of safeReaddir(this.blobsDir)) {
      if (wanted.has(`sha256:${hex}`)) continue;
      bytes += fs.statSync(path.join(this.blobsDir, hex)).size;
      fs.rmSync(path.join(this.blobsDir, hex), { force: true });
      blobs++;
    }
    const rootfsDir = path.join(this.imagesDir, 'rootfs');
    for (const file of safeReaddir(rootfsDir)) {
      const hex = file.replace(/\.(ext4|json)$/, '');
      if (manifests.has(`sha256:${hex}`) || file.endsWith('.lock')) continue;
      const p = path.join(rootfsDir, file);
      if (file.endsWith('.ext4')) {
        bytes += fs.statSync(p).blocks * 512;
        bases++;
      }
      fs.rmSync(p, { force: true });
    }
    for (const partial of safeReaddir(this.tmpDir)) fs.rmSync(path.join(this.tmpDir, partial), { force: true, recursive: true });
    return { blobs, bases, bytes };
  }

  readManifest(digest: string): { config: { digest: string }; layers: Array<{ digest: string; size: number }> } | undefined {
    try {
      return JSON.parse(fs.readFileSync(path.join(this.blobsDir, digest.replace(/^sha256:/, '')), 'utf8'));
    } catch {
      return undefined;
    }
  }

  /**
   * Keeps `images/index.json` a true OCI image layout index (one entry per reference,
   * named by the ref.name annotation), so the store is readable by OCI tools and by
   * the root filesystem builder.
   */
  private writeIndex(): void {
    const manifests = this.list().map((r) => {
      const file = path.join(this.blobsDir, r.manifestDigest.replace(/^sha256:/, ''));
      let size: number;
      try {
        size = fs.statSync(file).size;
      } catch (err) {
        throw storageError(err, `manifest ${r.manifestDigest} of ${r.reference} is gone from the image store`);
      }
      return { mediaType: r.manifestMediaType, digest: r.manifestDigest, size, annotations: { 'org.opencontainers.image.ref.name': r.reference } };
    });
    writeFileAtomic(
      path.join(this.imagesDir, 'index.json'),
      JSON.stringify({ schemaVersion: 2, mediaType: MediaTypes.ociIndex, manifests }, null, 2),
    );
  }
}

function safeReaddir(dir: string): string[] {
  try {
    return fs.readdirSync(dir);
  } catch {
    return [];
  }
}

/** sha256 digest of a buffer, as `sha256:<hex>`. */
export function digestOf(data: Buffer): string {
  return `sha256:${crypto.createHash('sha256').update(data).digest('hex')}`;
}
