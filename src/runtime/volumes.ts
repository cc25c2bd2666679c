// Managed volumes (`runtime.volumes`, the reference's VolumeHandle): named host directories
// under the home that boxes mount by id or name ({ managedVolume, guestPath }). A volume is a
// plain directory, `volumes/<id>/data`, shared exactly like a host-path volume (virtio-9p,
// mapped-xattr): no image to size or fsck, the host can inspect and back it up, its size is what
// its files take, and data written by one box is there for the next one that mounts it.
// The registry is its own SQLite database (db/volumes.db), so names stay unique across
// processes that share a home, as box names do.
import fs from 'node:fs';
import path from 'node:path';
import { ulid } from 'ulid';
import { ConfigError, InvalidStateError, NotFoundError, StorageError } from '../errors/index.js';
import { openDatabase, sqlite, translateSqliteError, type Db } from '../store/db.js';
import { volumePaths } from '../store/home.js';
import { writeFileAtomic } from '../util/fs.js';
import type { VolumeHandle, VolumeInfo } from './handles.js';
import type { ManagedVolumeResolver, NormalizedVolume } from './options.js';

/** The REST contract's CreateVolumeRequest.name pattern; no '/' or ':' so `-v NAME:/path` is unambiguous. */
export const VOLUME_NAME = /^[a-zA-Z0-9][a-zA-Z0-9_.-]+$/;
export const MAX_VOLUME_NAME = 128;

const MIGRATIONS = [
  `CREATE TABLE volumes (
     id         TEXT PRIMARY KEY,
     name       TEXT NOT NULL UNIQUE,
     created_at TEXT NOT NULL
   );`,
];

/** A box that mounts a volume, for the in-use check (supplied by the runtime). */
export interface VolumeUser {
  boxId: string;
  boxName?: string;
  running: boolean;
}

interface Row {
  id: string;
  name: string;
  created_at: string;
}

export function validateVolumeName(name: unknown): string {
  if (typeof name !== 'string' || !VOLUME_NAME.test(name) || name.length > MAX_VOLUME_NAME) {
    throw new ConfigError(
      `volume name must be 2-${MAX_VOLUME_NAME} characters of letters, digits, '_', '.' and '-', starting with a letter or digit, got ${JSON.stringify(name)}`,
    );
  }
  return name;
}

export class Volumes implements VolumeHandle {
  private dbHandle?: Db;

  constructor(
    private readonly homeRoot: string,
    private readonly dbDir: string,
    /** The boxes whose config mounts volume `id` (running or not). */
    private readonly usersOf: (id: string) => VolumeUser[],
    private readonly assertOpen: () => void = () => {},
  ) {}

  private get db(): Db {
    if (!this.dbHandle) {
      fs.mkdirSync(this.dbDir, { recursive: true, mode: 0o700 });
      this.dbHandle = openDatabase(this.dbDir, 'volumes', MIGRATIONS);
    }
    return this.dbHandle;
  }

  close(): void {
    this.dbHandle?.close();
    this.dbHandle = undefined;
  }

  async create(name?: string | null): Promise<VolumeInfo> {
    this.assertOpen();
    const id = ulid().toLowerCase();
    // The reference: without a name the volume is named after its id, so it is still mountable by name.
    const volumeName = name === undefined || name === null ? id : validateVolumeName(name);
    const createdAt = new Date().toISOString();
    const paths = volumePaths(this.homeRoot, id);
    try {
      this.db.prepare('INSERT INTO volumes (id, name, created_at) VALUES (?, ?, ?)').run(id, volumeName, createdAt);
    } catch (err) {
      throw translateSqliteError(err, `record volume ${volumeName}`, `a volume named ${JSON.stringify(volumeName)} already exists`);
    }
    try {
      fs.mkdirSync(paths.data, { recursive: true, mode: 0o700 });
      writeFileAtomic(paths.record, JSON.stringify({ id, name: volumeName, createdAt }, null, 2));
    } catch (err) {
      sqlite(`forget volume ${id}`, () => this.db.prepare('DELETE FROM volumes WHERE id = ?').run(id));
      fs.rmSync(paths.dir, { recursive: true, force: true });
      throw new StorageError(`cannot create volume directory ${paths.dir}: ${(err as Error).message}`, { cause: err });
    }
    return { id, name: volumeName, createdAt, sizeBytes: 0 };
  }

  async list(): Promise<VolumeInfo[]> {
    this.assertOpen();
    return this.rows().map((r) => this.info(r));
  }

  async get(idOrName: string): Promise<VolumeInfo> {
    this.assertOpen();
    return this.info(this.find(idOrName));
  }

  /**
   * Removes a volume and its files. Mounted by a box (running or not) it is refused with
   * InvalidState unless `force`; a running box's mount is never pulled from under it, force or
   * not. With `force` a missing volume is not an error (the reference's meaning of force).
   */
  async remove(idOrName: string, force?: boolean | null): Promise<void> {
    this.assertOpen();
    const row = this.lookup(idOrName);
    if (!row) {
      if (force) return;
      throw new NotFoundError('volume', idOrName);
    }
    const users = this.usersOf(row.id);
    const running = users.filter((u) => u.running);
    const label = (u: VolumeUser) => (u.boxName ? `${u.boxName} (${u.boxId})` : u.boxId);
    if (running.length) {
      throw new InvalidStateError(`volume ${row.name} is in use by running box ${running.map(label).join(', ')}; stop it first`);
    }
    if (users.length && !force) {
      throw new InvalidStateError(`volume ${row.name} is in use by box ${users.map(label).join(', ')}; remove the box first, or remove the volume with force`);
    }
    sqlite(`remove volume ${row.id}`, () => this.db.prepare('DELETE FROM volumes WHERE id = ?').run(row.id));
    const { dir } = volumePaths(this.homeRoot, row.id);
    try {
      fs.rmSync(dir, { recursive: true, force: true });
    } catch (err) {
      throw new StorageError(`cannot remove volume directory ${dir}: ${(err as Error).message}`, { cause: err });
    }
  }

  /** For box options: a managed volume (id or name) → its id and data directory, NotFound when missing. */
  readonly resolve: ManagedVolumeResolver = (idOrName) => {
    const row = this.find(idOrName);
    const { data } = volumePaths(this.homeRoot, row.id);
    // A data directory deleted behind our back is recreated empty rather than failing every box.
    fs.mkdirSync(data, { recursive: true, mode: 0o700 });
    return { id: row.id, hostPath: data };
  };

  private rows(): Row[] {
    return sqlite('list volumes', () => this.db.prepare('SELECT * FROM volumes ORDER BY created_at, id').all()) as Row[];
  }

  /** Exact id, then exact name (a name may look like an id: the id wins). */
  private lookup(idOrName: string): Row | undefined {
    if (typeof idOrName !== 'string' || !idOrName) return undefined;
    const byId = sqlite('read volume', () => this.db.prepare('SELECT * FROM volumes WHERE id = ?').get(idOrName)) as Row | undefined;
    return byId ?? (sqlite('read volume', () => this.db.prepare('SELECT * FROM volumes WHERE name = ?').get(idOrName)) as Row | undefined);
  }

  private find(idOrName: string): Row {
    const row = this.lookup(idOrName);
    if (!row) throw new NotFoundError('volume', String(idOrName));
    return row;
  }

  private info(r: Row): VolumeInfo {
    return { id: r.id, name: r.name, createdAt: r.created_at, sizeBytes: treeBytes(volumePaths(this.homeRoot, r.id).data) };
  }
}

/** Bytes the files under `dir` take (lstat sizes, symlinks not followed); 0 when it is missing. */
export function treeBytes(dir: string): number {
  let total = 0;
  const stack = [dir];
  while (stack.length) {
    const d = stack.pop()!;
    let entries: fs.Dirent[];
    try {
      entries = fs.readdirSync(d, { withFileTypes: true });
    } catch {
      continue;
    }
    for (const e of entries) {
      const p = path.join(d, e.name);
      if (e.isDirectory()) stack.push(p);
      else {
        try {
          total += fs.lstatSync(p).size;
        } catch {
          // removed meanwhile
        }
      }
    }
  }
  return total;
}

/** The managed volume ids a box's normalized volumes mount. */
export function managedVolumeIds(volumes: NormalizedVolume[] | undefined): string[] {
  return (volumes ?? []).flatMap((v) => (v.managedVolume ? [v.managedVolume] : []));
}
