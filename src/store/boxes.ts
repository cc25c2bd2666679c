import fs from 'node:fs';
import { StorageError } from '../errors/index.js';
import { isProcessAlive, readJson, storageError, writeFileAtomic } from '../util/fs.js';
import { openDatabase, sqlite, translateSqliteError, type Db } from './db.js';
import { boxDir, boxPaths } from './home.js';

/**
 * Lifecycle states; the same names appear in info().state.status, the CLI and error messages.
 * `paused`: the VM is frozen by box.pause() (the shim says so in shim.json); resume() thaws it.
 */
export type BoxStatus = 'configured' | 'running' | 'stopping' | 'stopped' | 'paused' | 'failed' | 'unknown';

/** Immutable once written (boxes/<id>/config.json). */
export interface BoxRecord<Options = unknown, Image = unknown> {
  id: string;
  name?: string;
  createdAt: string;
  options: Options;
  image: Image;
}

/** Mutable (box_state in db/boxes.db). */
export interface BoxState {
  status: BoxStatus;
  startedAt?: string;
  stoppedAt?: string;
  lastError?: string;
}

export interface LiveShim {
  shimPid: number;
  shimStartTime?: string;
  /** Unknown while the VM is still booting. */
  qemuPid?: number;
  qemuStartTime?: string;
  /** Host ports the running box publishes (absent while booting). */
  publishedPorts?: Array<{ guestPort: number; hostIp: string; hostPort: number; protocol: 'tcp' | 'udp' }>;
  /** Set by the shim while box.pause() holds the VM frozen. */
  paused?: boolean;
}

const MIGRATIONS = [
  `CREATE TABLE boxes (
     id         TEXT PRIMARY KEY,
     name       TEXT UNIQUE,
     created_at TEXT NOT NULL,
     config     TEXT NOT NULL
   );
   CREATE TABLE box_state (
     id         TEXT PRIMARY KEY REFERENCES boxes (id) ON DELETE CASCADE,
     status     TEXT NOT NULL,
     started_at TEXT,
     stopped_at TEXT,
     last_error TEXT
   );`,
];

/**
 * The box registry: `db/boxes.db` (SQLite, WAL) holds the immutable config and the
 * mutable state of every box, so any number of processes can share a home and a
 * name stays unique even when two of them create boxes at once. Each box also has
 * its directory (`boxes/<id>/`: config.json for people, disk, sockets, logs). The
 * live state of a running box is proven by its shim process, never trusted from a row.
 */
export class BoxStore {
  private dbHandle?: Db;

  constructor(
    readonly boxesDir: string,
    private readonly dbDir: string,
  ) {}

  private get db(): Db {
    if (!this.dbHandle) {
      fs.mkdirSync(this.dbDir, { recursive: true });
      this.dbHandle = openDatabase(this.dbDir, 'boxes', MIGRATIONS);
    }
    return this.dbHandle;
  }

  close(): void {
    this.dbHandle?.close();
    this.dbHandle = undefined;
  }

  dir(id: string): string {
    return boxDir(this.boxesDir, id);
  }

  create<O, I>(record: BoxRecord<O, I>): void {
    try {
      this.db.transaction(() => {
        this.db
          .prepare('INSERT INTO boxes (id, name, created_at, config) VALUES (?, ?, ?, ?)')
          .run(record.id, record.name ?? null, record.createdAt, JSON.stringify(record));
        this.db.prepare("INSERT INTO box_state (id, status) VALUES (?, 'configured')").run(record.id);
      }).immediate();
    } catch (err) {
      throw translateSqliteError(
        err,
        `record box ${record.id}`,
        record.name ? `a box named ${JSON.stringify(record.name)} already exists` : `box with ID ${record.id} exists`,
      );
    }
    const dir = this.dir(record.id);
    try {
      fs.mkdirSync(boxPaths(dir).logsDir, { recursive: true, mode: 0o700 });
      writeFileAtomic(boxPaths(dir).config, JSON.stringify(record, null, 2));
    } catch (err) {
      sqlite(`forget box ${record.id}`, () => this.db.prepare('DELETE FROM boxes WHERE id = ?').run(record.id));
      fs.rmSync(dir, { recursive: true, force: true });
      throw storageError(err, `cannot create box directory ${dir}`);
    }
  }

  get<O, I>(id: string): BoxRecord<O, I> | undefined {
    const row = sqlite(`read box ${id}`, () => this.db.prepare('SELECT config FROM boxes WHERE id = ?').get(id)) as
      | { config: string }
      | undefined;
    return row ? parseRecord<O, I>(row.config) : undefined;
  }

  list<O, I>(): Array<BoxRecord<O, I>> {
    const rows = sqlite('list boxes', () => this.db.prepare('SELECT config FROM boxes ORDER BY id').all()) as Array<{ config: string }>;
    return rows.map((r) => parseRecord<O, I>(r.config));
  }

  /** Exact id, exact name, then a unique id prefix of at least 4 characters. */
  find<O, I>(idOrName: string): BoxRecord<O, I> | undefined {
    const all = this.list<O, I>();
    const exact = all.find((r) => r.id === idOrName) ?? all.find((r) => r.name === idOrName);
    if (exact) return exact;
    if (idOrName.length < 4) return undefined;
    const prefixed = all.filter((r) => r.id.startsWith(idOrName.toUpperCase()));
    return prefixed.length === 1 ? prefixed[0] : undefined;
  }

  readState(id: string): BoxState {
    const row = sqlite(`read the state of box ${id}`, () => this.db.prepare('SELECT * FROM box_state WHERE id = ?').get(id)) as
      | { status: BoxStatus; started_at: string | null; stopped_at: string | null; last_error: string | null }
      | undefined;
    if (!row) return { status: 'unknown' };
    const state: BoxState = { status: row.status };
    if (row.started_at) state.startedAt = row.started_at;
    if (row.stopped_at) state.stoppedAt = row.stopped_at;
    if (row.last_error) state.lastError = row.last_error;
    return state;
  }

  /** A box removed meanwhile (by another process) has no state to write: that is not an error. */
  writeState(id: string, state: BoxState): void {
    sqlite(`record the state of box ${id}`, () =>
      this.db
        .prepare('UPDATE box_state SET status = ?, started_at = ?, stopped_at = ?, last_error = ? WHERE id = ?')
        .run(state.status, state.startedAt ?? null, state.stoppedAt ?? null, state.lastError ?? null, id),
    );
  }

  /**
   * The shim of a running (or booting) box, if its process is alive: shim.json once the VM
   * is ready, the shim's lock file while it boots.
   */
  liveShim(id: string): LiveShim | undefined {
    const ready = readJson<LiveShim>(boxPaths(this.dir(id)).shimState);
    if (ready && isProcessAlive(ready.shimPid, ready.shimStartTime)) return ready;
    const lock = readJson<{ pid: number; startTime?: string; op?: string }>(boxPaths(this.dir(id)).shimLock);
    // A lock with `op` is a disk operation's (snapshot, clone, export: src/runtime/snapshots.ts), not a shim's.
    if (lock && !lock.op && isProcessAlive(lock.pid, lock.startTime)) return { shimPid: lock.pid, shimStartTime: lock.startTime };
    return undefined;
  }

  /** Stored state reconciled with reality: a box whose shim died is stopped, not running. */
  status(id: string): { state: BoxState; shim?: LiveShim } {
    const state = this.readState(id);
    const shim = this.liveShim(id);
    if (shim) return { state: { ...state, status: state.status === 'stopping' ? 'stopping' : shim.paused ? 'paused' : 'running' }, shim };
    if (state.status === 'running' || state.status === 'stopping') {
      const reconciled: BoxState = { ...state, status: 'stopped', stoppedAt: state.stoppedAt ?? new Date().toISOString() };
      try {
        this.writeState(id, reconciled);
      } catch {
        // Another process may have removed the box meanwhile.
      }
      return { state: reconciled };
    }
    return { state };
  }

  remove(id: string): void {
    sqlite(`remove box ${id}`, () => this.db.prepare('DELETE FROM boxes WHERE id = ?').run(id));
    try {
      fs.rmSync(this.dir(id), { recursive: true, force: true });
    } catch (err) {
      throw new StorageError(`cannot remove box directory ${this.dir(id)}: ${(err as Error).message}`, { cause: err });
    }
  }
}

/** A config row that is not the JSON we wrote is a damaged database, not a bug. */
function parseRecord<O, I>(json: string): BoxRecord<O, I> {
  try {
    return JSON.parse(json) as BoxRecord<O, I>;
  } catch (err) {
    throw new StorageError(`box registry holds a damaged record: ${(err as Error).message}`, { cause: err });
  }
}
