import crypto from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import { pipeline } from 'node:stream/promises';
import tar from 'tar-stream';
import { BoxliteError, ImageError } from '../errors/index.js';
import { isErrnoError, removeQuietly, storageError, writeFileAtomic } from '../util/fs.js';
import { imageBoundary } from './errors.js';
import { MediaTypes, parseJson, readOciLayout } from './oci-layout.js';

export interface ImportedImage {
  reference: string;
  manifestDigest: string;
  manifestMediaType: string;
  configDigest: string;
  layerCount: number;
  sizeBytes: number;
}

const REF_NAME = 'org.opencontainers.image.ref.name';
const CONTAINERD_NAME = 'io.containerd.image.name';

/**
 * Imports an image archive into the blob store: an OCI archive (a tar of an image
 * layout, as `skopeo copy … oci-archive:` and docker ≥ 25 `docker save` write) or a
 * legacy `docker save` tar (manifest.json + layer tars). Every blob is verified by
 * digest (readOciLayout does that) before it is published into `blobsDir`.
 */
export function importArchive(archivePath: string, opts: { blobsDir: string; tmpDir: string }): Promise<ImportedImage[]> {
  return imageBoundary(`cannot load image archive ${archivePath}`, () => importArchiveUnguarded(archivePath, opts));
}

async function importArchiveUnguarded(archivePath: string, opts: { blobsDir: string; tmpDir: string }): Promise<ImportedImage[]> {
  if (!fs.existsSync(archivePath)) throw new ImageError(`archive not found: ${archivePath}`);
  if (fs.statSync(archivePath).isDirectory()) {
    throw new ImageError(`${archivePath} is a directory, not an image archive (a tar of an OCI layout or a docker save)`);
  }
  let dir: string;
  try {
    fs.mkdirSync(opts.blobsDir, { recursive: true });
  } catch (err) {
    throw storageError(err, `cannot create blob directory ${opts.blobsDir} to load ${archivePath}`);
  }
  try {
    fs.mkdirSync(opts.tmpDir, { recursive: true });
    dir = fs.mkdtempSync(path.join(opts.tmpDir, 'load-'));
  } catch (err) {
    throw storageError(err, `cannot create a working directory in ${opts.tmpDir} to load ${archivePath}`);
  }
  try {
    await extract(archivePath, dir);
    const named = fs.existsSync(path.join(dir, 'index.json'))
      ? namesFromOciIndex(dir)
      : fs.existsSync(path.join(dir, 'manifest.json'))
        ? convertDockerSave(dir)
        : [];
    if (!fs.existsSync(path.join(dir, 'index.json')) && named.length === 0) {
      throw new ImageError(`${archivePath} is neither an OCI archive nor a docker save archive`);
    }
    const out: ImportedImage[] = [];
    for (const { reference, refName } of named) {
      const image = await readOciLayout(dir, { reference: refName });
      const blobs = [image.manifestDigest, image.configDigest, ...image.layers.map((l) => l.digest)];
      for (const digest of blobs) publish(dir, digest, opts.blobsDir);
      out.push({
        reference,
        manifestDigest: image.manifestDigest,
        manifestMediaType: image.manifestMediaType,
        configDigest: image.configDigest,
        layerCount: image.layers.length,
        sizeBytes: image.layers.reduce((n, l) => n + l.size, 0),
      });
    }
    return out;
  } finally {
    removeQuietly(dir);
  }
}

/** Names of the top-level index entries that say which image they are. */
function namesFromOciIndex(dir: string): Array<{ reference: string; refName: string }> {
  const index = parseJson(readArchiveFile(dir, 'index.json'), 'index.json of the archive') as {
    manifests?: unknown;
  } | null;
  const out: Array<{ reference: string; refName: string }> = [];
  const manifests = index?.manifests ?? [];
  if (!Array.isArray(manifests)) throw new ImageError('index.json of the archive is malformed: manifests is not a list');
  for (const d of manifests as Array<{ annotations?: Record<string, string> } | null>) {
    if (!d || typeof d !== 'object') continue;
    const refName = d.annotations?.[REF_NAME];
    const full = d.annotations?.[CONTAINERD_NAME] ?? refName;
    // A bare tag ("latest") names no repository: such an entry cannot be loaded by name.
    if (refName && full && /[/:]/.test(full)) out.push({ reference: full, refName });
  }
  return out;
}

/** Rewrites a legacy docker save archive as an OCI layout in place. */
function convertDockerSave(dir: string): Array<{ reference: string; refName: string }> {
  const entries = parseJson(readArchiveFile(dir, 'manifest.json'), 'manifest.json of the docker save archive') as Array<{
    Config: string;
    RepoTags?: string[] | null;
    Layers: string[];
  }>;
  const isStrings = (v: unknown) => Array.isArray(v) && v.every((x) => typeof x === 'string');
  if (
    !Array.isArray(entries) ||
    !entries.every((e) => e && typeof e.Config === 'string' && isStrings(e.Layers) && (e.RepoTags == null || isStrings(e.RepoTags)))
  ) {
    throw new ImageError('manifest.json of the docker save archive is malformed: want a list of {Config, RepoTags, Layers}');
  }
  const blobs = path.join(dir, 'blobs', 'sha256');
  const write = (file: string, data: string | Buffer) => {
    try {
      fs.mkdirSync(path.dirname(file), { recursive: true });
      fs.writeFileSync(file, data);
    } catch (err) {
      throw storageError(err, `cannot write ${file}`);
    }
  };
  const addBlob = (file: string) => {
    const data = readArchiveFile(dir, file);
    const hex = crypto.createHash('sha256').update(data).digest('hex');
    write(path.join(blobs, hex), data);
    return { digest: `sha256:${hex}`, size: data.length };
  };
  const manifests = [];
  const named: Array<{ reference: string; refName: string }> = [];
  for (const entry of entries) {
    const config = addBlob(entry.Config);
    const layers = entry.Layers.map((l) => ({ mediaType: 'application/vnd.oci.image.layer.v1.tar', ...addBlob(l) }));
    const manifest = Buffer.from(
      JSON.stringify({
        schemaVersion: 2,
        mediaType: MediaTypes.ociManifest,
        config: { mediaType: MediaTypes.ociConfig, ...config },
        layers,
      }),
    );
    const hex = crypto.createHash('sha256').update(manifest).digest('hex');
    write(path.join(blobs, hex), manifest);
    for (const tag of entry.RepoTags ?? []) {
      manifests.push({
        mediaType: MediaTypes.ociManifest,
        digest: `sha256:${hex}`,
        size: manifest.length,
        annotations: { [REF_NAME]: tag },
      });
      named.push({ reference: tag, refName: tag });
    }
  }
  write(path.join(dir, 'oci-layout'), JSON.stringify({ imageLayoutVersion: '1.0.0' }));
  write(path.join(dir, 'index.json'), JSON.stringify({ schemaVersion: 2, manifests }));
  return named;
}

/** A file the archive must contain; its absence is the archive's fault (ImageError), not the disk's. */
function readArchiveFile(dir: string, name: string): Buffer {
  const file = inside(dir, name);
  try {
    return fs.readFileSync(file);
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    if (code === 'ENOENT' || code === 'ENOTDIR' || code === 'EISDIR') {
      throw new ImageError(`the archive has no file ${name}`, { cause: err });
    }
    throw storageError(err, `cannot read ${file}`);
  }
}

function publish(dir: string, digest: string, blobsDir: string): void {
  const hex = digest.replace(/^sha256:/, '');
  const dest = path.join(blobsDir, hex);
  if (fs.existsSync(dest)) return;
  const tmp = `${dest}.${process.pid}.load`;
  try {
    fs.copyFileSync(path.join(dir, 'blobs', 'sha256', hex), tmp);
    fs.renameSync(tmp, dest);
  } catch (err) {
    removeQuietly(tmp);
    throw storageError(err, `cannot store blob ${digest} in ${blobsDir}`);
  }
}

/** A path from the archive, resolved inside `dir` (archives are untrusted input). */
function inside(dir: string, name: string): string {
  const clean = path.posix.normalize(name.replace(/^\.\//, ''));
  if (clean.startsWith('../') || clean === '..' || path.posix.isAbsolute(clean)) {
    throw new ImageError(`archive contains an unsafe path: ${name}`);
  }
  return path.join(dir, clean);
}

/** Regular files and directories only; links and devices have no place in an image archive. */
async function extract(archivePath: string, dir: string): Promise<void> {
  const ex = tar.extract();
  ex.on('entry', (header, stream, next) => {
    const done = (err?: unknown) => (err ? next(err as Error) : next());
    try {
      if (header.type === 'directory') {
        fs.mkdirSync(inside(dir, header.name), { recursive: true });
        stream.resume();
        stream.on('end', () => done());
        return;
      }
      if (header.type !== 'file') {
        stream.resume();
        stream.on('end', () => done());
        return;
      }
      const target = inside(dir, header.name);
      fs.mkdirSync(path.dirname(target), { recursive: true });
      const out = fs.createWriteStream(target, { flags: 'wx' });
      pipeline(stream, out).then(
        () => done(),
        (err: unknown) => {
          // The archive naming a file twice is its fault; any other write failure is the disk's.
          if (out.errored !== err) return done(err);
          const code = (err as NodeJS.ErrnoException).code;
          done(code === 'EEXIST' ? new ImageError(`archive contains ${header.name} twice`, { cause: err }) : storageError(err, `cannot write ${target}`));
        },
      );
    } catch (err) {
      stream.resume();
      done(err instanceof BoxliteError ? err : storageError(err, `cannot unpack ${header.name} into ${dir}`));
    }
  });
  try {
    await pipeline(fs.createReadStream(archivePath), ex);
  } catch (err) {
    if (err instanceof BoxliteError) throw err;
    const code = (err as NodeJS.ErrnoException).code;
    // tar-stream's own errors (not a tar, truncated) are the archive's; errno ones the disk's.
    if (isErrnoError(err) && code !== 'EISDIR') throw storageError(err, `cannot read archive ${archivePath}`);
    throw new ImageError(`cannot read archive ${archivePath}: ${(err as Error).message}`, { cause: err });
  }
  // A layout's own oci-layout file is optional in some writers; readOciLayout wants it.
  if (fs.existsSync(path.join(dir, 'index.json')) && !fs.existsSync(path.join(dir, 'oci-layout'))) {
    writeFileAtomic(path.join(dir, 'oci-layout'), JSON.stringify({ imageLayoutVersion: '1.0.0' }));
  }
}
