// `.boxlite` archives: box.export(dest) and runtime.importBox(path, name?).
//
// An archive is a plain POSIX tar of exactly three regular files, in this order:
//   manifest.json  {format: "boxlite-archive", version, createdAt, box: {name, image},
//                   members: [{name, size, sha256}] for the two below}
//   config.json    {options: the box options (input shape, no host paths, no secrets),
//                   image: {reference, manifestDigest, config}}
//   disk.qcow2     the box's disk flattened by `qemu-img convert` (compressed, no backing file)
// The manifest comes first so an importer knows every size and checksum before it writes a
// byte of the rest. Export writes to a temp name next to the destination, fsyncs, then renames:
// a killed export never leaves a file under the final name.
//
// Import treats the file as hostile: bounded sizes, only the three names as regular files,
// checksums, a format version it knows (newer: Unsupported), the disk re-read by qemu-img
// (qcow2, no backing file, no external data file, a bounded virtual size, `qemu-img check`
// clean), options re-validated as create() does with everything that reaches the host
// (volumes, rootfsPath, non-loopback ports, unknown fields) refused. All of that happens in a
// staging directory; the box record exists only once it passed, and is removed if moving the
// disk in fails, so a failed import leaves nothing behind.
import { createHash, randomBytes } from 'node:crypto';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { pipeline } from 'node:stream/promises';
import { Transform } from 'node:stream';
import tar from 'tar-stream';
import { ulid } from 'ulid';
import { z } from 'zod';
import {
  BoxliteError,
  InvalidArgumentError,
  NotFoundError,
  ResourceExhaustedError,
  StorageError,
  toBoxliteError,
  UnsupportedError,
} from '../errors/index.js';
import { describeFailure, runTool } from '../images/tools.js';
import { boxPaths } from '../store/home.js';
import { isProcessAlive, removeQuietly, storageError } from '../util/fs.js';
import type { BoxRecordT } from './box.js';
import type { BoxImage, ImageRunConfig } from './image.js';
import { normalizeBoxOptions, RESOURCE_LIMIT_FIELDS, type BoxOptions, type NormalizedBoxOptions } from './options.js';
import { diskImageInfo, fsyncPath, isRunning, withDiskLock, withFrozenLiveDisk, type DiskContext, type Quiesce } from './snapshots.js';

export const ARCHIVE_FORMAT = 'boxlite-archive';
/** The archive version this build writes and the newest it reads. */
export const ARCHIVE_VERSION = 1;
export const ARCHIVE_EXTENSION = '.boxlite';

export const MANIFEST_MEMBER = 'manifest.json';
export const CONFIG_MEMBER = 'config.json';
export const DISK_MEMBER = 'disk.qcow2';

/** Bounds an import holds an archive to. */
export interface ArchiveLimits {
  /** The whole archive file. */
  archiveBytes: number;
  /** manifest.json and config.json, each. */
  metadataBytes: number;
  /** The disk's virtual size (what the guest sees). */
  diskVirtualBytes: number;
}

export const DEFAULT_LIMITS: ArchiveLimits = {
  archiveBytes: 64 * 1024 ** 3,
  metadataBytes: 1024 * 1024,
  // create()'s diskSizeGb maximum.
  diskVirtualBytes: 2048 * 1024 ** 3,
};

/** The limits, with BOXLITE_IMPORT_MAX_BYTES lowering (or raising) the archive size bound. */
export function importLimits(env: NodeJS.ProcessEnv = process.env): ArchiveLimits {
  const v = env.BOXLITE_IMPORT_MAX_BYTES;
  if (v === undefined || v === '') return DEFAULT_LIMITS;
  const n = Number(v);
  if (!Number.isSafeInteger(n) || n <= 0) throw new InvalidArgumentError(`BOXLITE_IMPORT_MAX_BYTES=${v}: expected a positive integer`);
  return { ...DEFAULT_LIMITS, archiveBytes: n };
}

// ---------- manifest and config ----------

const sha256Hex = z.string().regex(/^[0-9a-f]{64}$/, 'must be a sha256 in lower-case hex');

const memberSchema = z.object({ name: z.string(), size: z.number().int().min(0).max(Number.MAX_SAFE_INTEGER), sha256: sha256Hex }).strict();

export const manifestSchema = z
  .object({
    format: z.literal(ARCHIVE_FORMAT),
    version: z.literal(ARCHIVE_VERSION),
    createdAt: z.string().max(64),
    boxliteVersion: z.string().max(64).optional(),
    box: z.object({ name: z.string().max(256).nullable(), image: z.string().max(4096) }).strict(),
    members: z.array(memberSchema).length(2),
  })
  .strict()
  .superRefine((m, ctx) => {
    const names = m.members.map((x) => x.name).sort();
    if (names.join() !== [CONFIG_MEMBER, DISK_MEMBER].sort().join()) {
      ctx.addIssue({ code: z.ZodIssueCode.custom, message: `members must be ${CONFIG_MEMBER} and ${DISK_MEMBER}, got ${JSON.stringify(names)}` });
    }
  });

export type ArchiveManifest = z.infer<typeof manifestSchema>;

const text = (max: number) => z.string().max(max).refine((s) => !s.includes('\0'), 'must not contain NUL');
const argv = z.array(text(64 * 1024)).max(4096);

const imageConfigSchema = z
  .object({
    Env: z.array(text(64 * 1024)).max(4096).optional(),
    Entrypoint: argv.nullable().optional(),
    Cmd: argv.nullable().optional(),
    WorkingDir: text(4096).optional(),
    User: text(256).optional(),
  })
  .strict();

/**
 * The options an archive may carry: what shapes the box inside its VM. Everything that names
 * or reaches the host (volumes, rootfsPath, secrets) or is host-side behaviour (detach,
 * autoRemove) is not in the list, so `.strict()` refuses it.
 */
const archivedOptionsSchema = z
  .object({
    cpus: z.number().int().min(1).max(1024).optional(),
    memoryMib: z.number().optional(),
    diskSizeGb: z.number().optional(),
    workingDir: z.string().optional(),
    env: z.array(z.object({ key: z.string(), value: z.string() }).strict()).max(4096).optional(),
    network: z.object({ outbound: z.object({ mode: z.enum(['enabled', 'disabled']), allowNet: z.array(z.string()).max(4096).optional() }).strict() }).strict().optional(),
    ports: z
      .array(z.object({ hostPort: z.number().optional(), guestPort: z.number(), protocol: z.enum(['tcp', 'udp']).optional(), hostIp: z.string().optional() }).strict())
      .max(256)
      .optional(),
    entrypoint: argv.optional(),
    cmd: argv.optional(),
    user: z.string().optional(),
    advanced: z.object({ capabilities: z.object({ add: z.array(z.string()).optional(), drop: z.array(z.string()).optional() }).strict() }).strict().optional(),
    security: z
      .object({
        seccompEnabled: z.boolean().optional(),
        jailerEnabled: z.boolean().optional(),
        maxOpenFiles: z.number().optional(),
        maxFileSize: z.number().optional(),
        maxProcesses: z.number().optional(),
        maxMemory: z.number().optional(),
        maxCpuTime: z.number().optional(),
      })
      .strict()
      .optional(),
  })
  .strict();

export const archiveConfigSchema = z
  .object({
    options: archivedOptionsSchema,
    image: z.object({ reference: text(4096), manifestDigest: text(256), config: imageConfigSchema }).strict(),
  })
  .strict();

export type ArchiveConfig = z.infer<typeof archiveConfigSchema>;

/** The box's options as an archive carries them: create()'s input shape, nothing of the host. */
export function archivedOptions(o: NormalizedBoxOptions): ArchiveConfig['options'] {
  const security: NonNullable<ArchiveConfig['options']['security']> = {};
  for (const k of RESOURCE_LIMIT_FIELDS) if (o.limits?.[k] !== undefined) security[k] = o.limits[k];
  if (o.seccomp) security.seccompEnabled = true;
  if (o.jail) security.jailerEnabled = true;
  return {
    cpus: o.cpus,
    memoryMib: o.memoryMib,
    ...(o.diskSizeGb !== undefined ? { diskSizeGb: o.diskSizeGb } : {}),
    ...(o.workingDir !== undefined ? { workingDir: o.workingDir } : {}),
    env: o.env.map(([key, value]) => ({ key, value })),
    network: { outbound: { mode: o.network, allowNet: [...(o.allowNet ?? [])] } },
    ...(o.ports?.length ? { ports: o.ports.map((p) => ({ hostPort: p.hostPort, guestPort: p.guestPort, protocol: p.protocol, hostIp: p.hostIp })) } : {}),
    ...(o.entrypoint !== undefined ? { entrypoint: [...o.entrypoint] } : {}),
    ...(o.cmd !== undefined ? { cmd: [...o.cmd] } : {}),
    ...(o.user !== undefined ? { user: o.user } : {}),
    ...(o.capabilities ? { advanced: { capabilities: { add: [...o.capabilities.add], drop: [...o.capabilities.drop] } } } : {}),
    ...(Object.keys(security).length ? { security } : {}),
  };
}

/** The image config fields that shape how commands run (ImageRunConfig): the rest of the OCI config (labels, ports, volumes) is not carried. */
export function runConfig(c: ImageRunConfig): ArchiveConfig['image']['config'] {
  const out: ArchiveConfig['image']['config'] = {};
  if (c.Env !== undefined) out.Env = [...c.Env];
  if (c.Entrypoint !== undefined) out.Entrypoint = c.Entrypoint === null ? null : [...c.Entrypoint];
  if (c.Cmd !== undefined) out.Cmd = c.Cmd === null ? null : [...c.Cmd];
  if (c.WorkingDir !== undefined) out.WorkingDir = c.WorkingDir;
  if (c.User !== undefined) out.User = c.User;
  return out;
}

/** A local image layout's reference names a host path (`oci:/…`): the archive keeps only its digest. */
export function archivedImageReference(image: Pick<BoxImage, 'reference' | 'manifestDigest'>): string {
  return image.reference.startsWith('oci:') ? `oci-layout@${image.manifestDigest}` : image.reference;
}

function corrupt(what: string, cause?: unknown): BoxliteError {
  return new InvalidArgumentError(`not a valid ${ARCHIVE_EXTENSION} archive: ${what}`, cause === undefined ? undefined : { cause });
}

function zodProblem(err: z.ZodError): string {
  const i = err.issues[0]!;
  return `${i.path.length ? i.path.join('.') + ': ' : ''}${i.message}`;
}

/**
 * The manifest's JSON, checked. A version newer than this build's is Unsupported (an
 * upgrade reads it); anything else wrong is a corrupt archive.
 */
export function parseManifest(bytes: Buffer): ArchiveManifest {
  let raw: unknown;
  try {
    raw = JSON.parse(bytes.toString('utf8'));
  } catch (err) {
    throw corrupt(`${MANIFEST_MEMBER} is not JSON`, err);
  }
  const version = (raw as { version?: unknown } | null)?.version;
  if ((raw as { format?: unknown } | null)?.format === ARCHIVE_FORMAT && typeof version === 'number' && version > ARCHIVE_VERSION) {
    throw new UnsupportedError(
      `archive format version ${version} is newer than this BoxLite reads (up to ${ARCHIVE_VERSION}); upgrade BoxLite to import it`,
    );
  }
  const parsed = manifestSchema.safeParse(raw);
  if (!parsed.success) throw corrupt(`${MANIFEST_MEMBER}: ${zodProblem(parsed.error)}`);
  return parsed.data;
}

/**
 * The archived config, checked and turned into the options a new box gets: validated by
 * create()'s own rules, with every option that reaches the host refused.
 */
export function parseArchiveConfig(bytes: Buffer, hostCpus = os.cpus().length): { options: NormalizedBoxOptions; image: ArchiveConfig['image'] } {
  let raw: unknown;
  try {
    raw = JSON.parse(bytes.toString('utf8'));
  } catch (err) {
    throw corrupt(`${CONFIG_MEMBER} is not JSON`, err);
  }
  const options = (raw as { options?: Record<string, unknown> } | null)?.options;
  if (options && typeof options === 'object') {
    for (const hostSide of ['volumes', 'rootfsPath', 'secrets', 'detach', 'autoRemove']) {
      if (hostSide in options) {
        throw new UnsupportedError(`an imported box cannot carry ${hostSide}: it would reach outside the sandbox (or the host's own settings)`);
      }
    }
  }
  const parsed = archiveConfigSchema.safeParse(raw);
  if (!parsed.success) throw corrupt(`${CONFIG_MEMBER}: ${zodProblem(parsed.error)}`);
  const o = parsed.data.options;
  for (const [i, p] of (o.ports ?? []).entries()) {
    if (p.hostIp !== undefined && !/^127\.\d{1,3}\.\d{1,3}\.\d{1,3}$/.test(p.hostIp)) {
      throw new UnsupportedError(`an imported box publishes ports on loopback only; ports[${i}].hostIp is ${p.hostIp}`);
    }
  }
  const input: BoxOptions = {
    ...(o as BoxOptions),
    image: parsed.data.image.reference || 'imported',
    // The exporting host may have had more CPUs than this one.
    ...(o.cpus !== undefined ? { cpus: Math.min(o.cpus, hostCpus) } : {}),
  };
  return { options: normalizeBoxOptions(input, hostCpus), image: parsed.data.image };
}

// ---------- export ----------

/** Where export(dest) writes: into a directory as `<name or "box">.boxlite`, else dest itself. */
export function exportTarget(dest: string, boxName: string | undefined): string {
  if (typeof dest !== 'string' || !dest) throw new InvalidArgumentError('export: dest must be a non-empty path');
  const resolved = path.resolve(dest);
  let isDir = false;
  try {
    isDir = fs.statSync(resolved).isDirectory();
  } catch {
    // a file to create
  }
  // A box name is free text: only its safe characters name a file (never a path out of dest).
  const stem = boxName ? boxName.replace(/[^A-Za-z0-9._-]/g, '_').replace(/^\.+/, '_') : 'box';
  if (isDir || dest.endsWith('/')) return path.join(resolved, `${stem || 'box'}${ARCHIVE_EXTENSION}`);
  if (!fs.existsSync(path.dirname(resolved))) throw new NotFoundError('directory', path.dirname(resolved));
  return resolved;
}

async function sha256File(file: string): Promise<{ sha256: string; size: number }> {
  const h = createHash('sha256');
  let size = 0;
  for await (const chunk of fs.createReadStream(file) as AsyncIterable<Buffer>) {
    h.update(chunk);
    size += chunk.length;
  }
  return { sha256: h.digest('hex'), size };
}

/** A staging directory in the home's tmp/, named by pid so a dead process's can be swept. */
function stagingDir(ctx: DiskContext, kind: 'import' | 'export'): string {
  fs.mkdirSync(ctx.home.tmp, { recursive: true, mode: 0o700 });
  for (const name of fs.readdirSync(ctx.home.tmp)) {
    const m = /^(?:import|export)-(\d+)-/.exec(name);
    if (m && !isProcessAlive(Number(m[1]))) removeQuietly(path.join(ctx.home.tmp, name));
  }
  return fs.mkdtempSync(path.join(ctx.home.tmp, `${kind}-${process.pid}-`));
}

/** Writes the box (stopped or running) to one archive; resolves with its path. */
export async function exportArchive(ctx: DiskContext, record: BoxRecordT, dest: string, quiesce?: Quiesce): Promise<string> {
  const target = exportTarget(dest, record.name);
  const staging = stagingDir(ctx, 'export');
  const partial = path.join(path.dirname(target), `.${path.basename(target)}.${process.pid}.${randomBytes(4).toString('hex')}.partial`);
  // What a killed export to this name left: its process is gone, so nobody will finish it.
  for (const name of fs.readdirSync(path.dirname(target))) {
    const m = name.startsWith(`.${path.basename(target)}.`) ? /\.(\d+)\.[0-9a-f]{8}\.partial$/.exec(name) : null;
    if (m && !isProcessAlive(Number(m[1]))) fs.rmSync(path.join(path.dirname(target), name), { force: true });
  }
  try {
    const flat = path.join(staging, DISK_MEMBER);
    const convert = async (disk: string) => {
      const r = await runTool('qemu-img', ['convert', '-q', '-c', '-O', 'qcow2', disk, flat], { timeoutMs: 60 * 60_000 });
      if (r.code !== 0 || r.signal) throw new StorageError(`cannot flatten the disk of box ${record.id}: ${describeFailure('qemu-img', r)}`);
    };
    // A running box: its disk frozen by a live switch (paused meanwhile); the box runs on.
    if (isRunning(ctx, record.id)) await withFrozenLiveDisk(ctx, record.id, 'exporting it', quiesce, convert);
    else await withDiskLock(ctx, record.id, 'exporting it', () => convert(boxPaths(ctx.store.dir(record.id)).disk));
    const config = Buffer.from(
      JSON.stringify(
        {
          options: archivedOptions(record.options),
          image: { reference: archivedImageReference(record.image), manifestDigest: record.image.manifestDigest, config: runConfig(record.image.config) },
        } satisfies ArchiveConfig,
        null,
        2,
      ),
    );
    const disk = await sha256File(flat);
    const manifest: ArchiveManifest = {
      format: ARCHIVE_FORMAT,
      version: ARCHIVE_VERSION,
      createdAt: new Date().toISOString(),
      box: { name: record.name ?? null, image: archivedImageReference(record.image) },
      members: [
        { name: CONFIG_MEMBER, size: config.length, sha256: createHash('sha256').update(config).digest('hex') },
        { name: DISK_MEMBER, size: disk.size, sha256: disk.sha256 },
      ],
    };
    const manifestBytes = Buffer.from(JSON.stringify(manifest, null, 2));
    const pack = tar.pack();
    const out = fs.createWriteStream(partial, { flags: 'wx', mode: 0o600 });
    const written = pipeline(pack, out);
    const mtime = new Date();
    await new Promise<void>((resolve, reject) => pack.entry({ name: MANIFEST_MEMBER, mode: 0o644, mtime }, manifestBytes, (e) => (e ? reject(e) : resolve())));
    await new Promise<void>((resolve, reject) => pack.entry({ name: CONFIG_MEMBER, mode: 0o644, mtime }, config, (e) => (e ? reject(e) : resolve())));
    const entry = pack.entry({ name: DISK_MEMBER, mode: 0o644, mtime, size: disk.size });
    await pipeline(fs.createReadStream(flat), entry);
    pack.finalize();
    await written;
    fsyncPath(partial);
    fs.renameSync(partial, target);
    fsyncPath(path.dirname(target));
    return target;
  } catch (err) {
    throw toBoxliteError(err instanceof BoxliteError ? err : storageError(err, `cannot export box ${record.id} to ${target}`), 'Storage');
  } finally {
    fs.rmSync(partial, { force: true });
    removeQuietly(staging);
  }
}

// ---------- import ----------

interface Extracted {
  manifest: ArchiveManifest;
  config: Buffer;
  diskPath: string;
}

/** Reads the archive into `staging`, holding it to the manifest (names, order, types, sizes, checksums). */
export async function extractArchive(file: string, staging: string, limits: ArchiveLimits): Promise<Extracted> {
  const extract = tar.extract();
  const source = fs.createReadStream(file);
  source.on('error', (err) => extract.destroy(err));
  source.pipe(extract);
  let manifest: ArchiveManifest | undefined;
  let config: Buffer | undefined;
  let diskPath: string | undefined;
  const seen = new Set<string>();
  try {
    for await (const entry of extract) {
      const h = entry.header;
      if (h.type !== 'file') throw corrupt(`member ${JSON.stringify(h.name)} is a ${h.type}; only regular files are allowed`);
      if (seen.has(h.name)) throw corrupt(`member ${JSON.stringify(h.name)} appears twice`);
      seen.add(h.name);
      const size = h.size ?? 0;
      if (!manifest) {
        if (h.name !== MANIFEST_MEMBER) throw corrupt(`the first member must be ${MANIFEST_MEMBER}, got ${JSON.stringify(h.name)}`);
        if (size > limits.metadataBytes) throw new ResourceExhaustedError(`${MANIFEST_MEMBER} is ${size} bytes, more than ${limits.metadataBytes}`);
        manifest = parseManifest(await readBounded(entry as unknown as AsyncIterable<Buffer>, limits.metadataBytes));
        continue;
      }
      const member = manifest.members.find((m) => m.name === h.name);
      if (!member) throw corrupt(`member ${JSON.stringify(h.name)} is not in the manifest`);
      if (size !== member.size) throw corrupt(`member ${h.name} is ${size} bytes, the manifest says ${member.size}`);
      if (h.name === CONFIG_MEMBER) {
        if (size > limits.metadataBytes) throw new ResourceExhaustedError(`${CONFIG_MEMBER} is ${size} bytes, more than ${limits.metadataBytes}`);
        config = await readBounded(entry as unknown as AsyncIterable<Buffer>, limits.metadataBytes);
        checkSum(h.name, createHash('sha256').update(config).digest('hex'), member.sha256);
      } else {
        diskPath = path.join(staging, DISK_MEMBER);
        const hash = createHash('sha256');
        const hasher = new Transform({
          transform(chunk: Buffer, _enc, cb) {
            hash.update(chunk);
            cb(null, chunk);
          },
        });
        await pipeline(entry, hasher, fs.createWriteStream(diskPath, { flags: 'wx', mode: 0o600 }));
        checkSum(h.name, hash.digest('hex'), member.sha256);
      }
    }
  } catch (err) {
    source.destroy();
    if (err instanceof BoxliteError) throw err;
    const message = (err as Error).message ?? String(err);
    if ((err as NodeJS.ErrnoException).code && (err as NodeJS.ErrnoException).syscall) throw storageError(err, `cannot read archive ${file}`);
    throw corrupt(/Unexpected end/.test(message) ? 'it is truncated' : message, err);
  }
  if (!manifest) throw corrupt('it is empty');
  if (!config || !diskPath) throw corrupt(`it lacks ${!config ? CONFIG_MEMBER : DISK_MEMBER} (truncated?)`);
  return { manifest, config, diskPath };
}

function checkSum(name: string, actual: string, expected: string): void {
  if (actual !== expected) throw corrupt(`member ${name} does not match its sha256 in the manifest (corrupted)`);
}

async function readBounded(stream: AsyncIterable<Buffer>, max: number): Promise<Buffer> {
  const parts: Buffer[] = [];
  let n = 0;
  for await (const chunk of stream) {
    n += chunk.length;
    if (n > max) throw new ResourceExhaustedError(`archive member is larger than ${max} bytes`);
    parts.push(chunk);
  }
  return Buffer.concat(parts);
}

/** The extracted disk, re-read by qemu-img: a self-contained, sound qcow2 of bounded size. */
export async function checkImportedDisk(disk: string, limits: ArchiveLimits): Promise<number> {
  let info;
  try {
    info = await diskImageInfo(disk, 'qcow2');
  } catch (err) {
    throw corrupt(`${DISK_MEMBER} is not a qcow2 image`, err);
  }
  if (info.format !== 'qcow2') throw corrupt(`${DISK_MEMBER} is ${info.format}, not qcow2`);
  // A backing or data file would be read from this host: the escape an archive must never carry.
  if (info.backing) throw new UnsupportedError(`${DISK_MEMBER} names a backing file (${info.backing}); an imported disk must be self-contained`);
  if (info.dataFile) throw new UnsupportedError(`${DISK_MEMBER} names an external data file (${info.dataFile}); an imported disk must be self-contained`);
  if (!Number.isSafeInteger(info.virtualSize) || info.virtualSize <= 0) throw corrupt(`${DISK_MEMBER} has no valid virtual size`);
  if (info.virtualSize > limits.diskVirtualBytes) {
    throw new ResourceExhaustedError(`${DISK_MEMBER} is ${info.virtualSize} bytes virtual, more than ${limits.diskVirtualBytes}`);
  }
  if (info.corrupt) throw corrupt(`${DISK_MEMBER} is marked corrupt`);
  const r = await runTool('qemu-img', ['check', '-q', '-f', 'qcow2', disk], { timeoutMs: 30 * 60_000 });
  // 0: clean; 3: leaked clusters only (wasted space, not damage). 2: corruptions; 1: check failed.
  if (r.signal || (r.code !== 0 && r.code !== 3)) throw corrupt(`${DISK_MEMBER} fails qemu-img check: ${describeFailure('qemu-img', r)}`);
  return info.virtualSize;
}

/** Imports an archive as a new box; resolves with its record. */
export async function importArchive(ctx: DiskContext, archivePath: string, name?: string | null): Promise<BoxRecordT> {
  if (typeof archivePath !== 'string' || !archivePath) throw new InvalidArgumentError('importBox: archivePath must be a non-empty path');
  const file = path.resolve(archivePath);
  const limits = importLimits();
  let st: fs.Stats;
  try {
    st = fs.statSync(file);
  } catch {
    throw new NotFoundError('archive', file);
  }
  if (!st.isFile()) throw new InvalidArgumentError(`${file} is not a file`);
  if (st.size > limits.archiveBytes) {
    throw new ResourceExhaustedError(`archive ${file} is ${st.size} bytes, more than the import limit of ${limits.archiveBytes} (BOXLITE_IMPORT_MAX_BYTES)`);
  }
  const staging = stagingDir(ctx, 'import');
  try {
    const { config, diskPath } = await extractArchive(file, staging, limits);
    const { options, image } = parseArchiveConfig(config);
    await checkImportedDisk(diskPath, limits);
    const record: BoxRecordT = {
      id: ulid(),
      name: name ?? undefined,
      createdAt: new Date().toISOString(),
      options,
      image: { reference: image.reference, manifestDigest: image.manifestDigest, rootfsBase: '', config: image.config as ImageRunConfig },
    };
    ctx.store.create(record);
    try {
      const disk = boxPaths(ctx.store.dir(record.id)).disk;
      try {
        fs.renameSync(diskPath, disk);
      } catch (err) {
        if ((err as NodeJS.ErrnoException).code !== 'EXDEV') throw err;
        // BOXLITE_TMPDIR on another file system.
        fs.copyFileSync(diskPath, disk, fs.constants.COPYFILE_EXCL);
      }
      fs.chmodSync(disk, 0o600);
      fsyncPath(disk);
      fsyncPath(path.dirname(disk));
    } catch (err) {
      ctx.store.remove(record.id);
      throw storageError(err, `cannot move the imported disk into box ${record.id}`);
    }
    return record;
  } catch (err) {
    throw toBoxliteError(err, 'Storage');
  } finally {
    removeQuietly(staging);
  }
}
