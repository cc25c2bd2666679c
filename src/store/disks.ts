import fs from 'node:fs';
import path from 'node:path';
import { openDatabase, sqlite, translateSqliteError, type Db } from './db.js';

// The registry of immutable disk bases (db/disks.db): which qcow2 file backs which, which
// snapshot names which base, and which box's disk sits on which base. A base's reference count
// is never stored: it is the number of rows that point at it (snapshots, box disks, child
// bases), so it cannot drift from what the rows say, and SQLite's foreign keys refuse to drop
// a base that is still pointed at. Files live in `bases/<id>.qcow2` (src/store/home.ts).

/** `pending` rows belong to an operation that has not finished (or died): see recover in src/runtime/snapshots.ts. */
export type DiskRowState = 'pending' | 'ready';

export interface BaseRow {
  id: string;
  /** The base this base's file is backed by; null when it is backed by the image's ext4. */
  parent: string | null;
  /** The box whose operation made it (pending rows are recovered under that box's lock). */
  owner: string;
  state: DiskRowState;
  createdAt: number;
}

export interface SnapshotRow {
  id: string;
  boxId: string;
  name: string;
  baseId: string;
  state: DiskRowState;
  /** Unix seconds, as the reference's JsSnapshotInfo.createdAt. */
  createdAt: number;
  containerDiskBytes: number;
  sizeBytes: number;
}

const MIGRATIONS = [
  `CREATE TABLE bases (
     id         TEXT PRIMARY KEY,
     parent     TEXT REFERENCES bases (id),
     owner      TEXT NOT NULL,
     state      TEXT NOT NULL,
     created_at INTEGER NOT NULL
   );
   CREATE TABLE snapshots (
     id                   TEXT PRIMARY KEY,
     box_id               TEXT NOT NULL,
     name                 TEXT NOT NULL,
     base_id              TEXT NOT NULL REFERENCES bases (id),
     state                TEXT NOT NULL,
     created_at           INTEGER NOT NULL,
     container_disk_bytes INTEGER NOT NULL,
     size_bytes           INTEGER NOT NULL,
     UNIQUE (box_id, name)
   );
   CREATE TABLE box_refs (
     box_id  TEXT NOT NULL,
     base_id TEXT NOT NULL REFERENCES bases (id),
     PRIMARY KEY (box_id, base_id)
   );`,
];

interface SnapshotDbRow {
  id: string;
  box_id: string;
  name: string;
  base_id: string;
  state: DiskRowState;
  created_at: number;
  container_disk_bytes: number;
  size_bytes: number;
}

function snapshotFrom(r: SnapshotDbRow): SnapshotRow {
  return {
    id: r.id,
    boxId: r.box_id,
    name: r.name,
    baseId: r.base_id,
    state: r.state,
    createdAt: r.created_at,
    containerDiskBytes: r.container_disk_bytes,
    sizeBytes: r.size_bytes,
  };
}

export class DiskStore {
  private dbHandle?: Db;

  constructor(private readonly dbDir: string) {}

  private get db(): Db {
    if (!this.dbHandle) {
      fs.mkdirSync(this.dbDir, { recursive: true });
      this.dbHandle = openDatabase(this.dbDir, 'disks', MIGRATIONS);
    }
    return this.dbHandle;
  }

  /** False in a home that never made a base: nothing to collect, and no database to create for it. */
  get inUse(): boolean {
    return this.dbHandle !== undefined || fs.existsSync(path.join(this.dbDir, 'disks.db'));
  }

  close(): void {
    this.dbHandle?.close();
    this.dbHandle = undefined;
  }

  /** The bases the box's disk holds (normally one; two only while a restore is cut short). */
  refsOf(boxId: string): string[] {
    return sqlite(`read the disk bases of box ${boxId}`, () =>
      (this.db.prepare('SELECT base_id FROM box_refs WHERE box_id = ? ORDER BY base_id').all(boxId) as Array<{ base_id: string }>).map(
        (r) => r.base_id,
      ),
    );
  }

  base(id: string): BaseRow | undefined {
    const r = sqlite(`read disk base ${id}`, () => this.db.prepare('SELECT * FROM bases WHERE id = ?').get(id)) as
      | { id: string; parent: string | null; owner: string; state: DiskRowState; created_at: number }
      | undefined;
    return r ? { id: r.id, parent: r.parent, owner: r.owner, state: r.state, createdAt: r.created_at } : undefined;
  }

  /** Pending bases an operation on `owner` left behind. */
  pendingOf(owner: string): BaseRow[] {
    const rows = sqlite(`read the pending disk bases of box ${owner}`, () =>
      this.db.prepare("SELECT id FROM bases WHERE owner = ? AND state = 'pending'").all(owner),
    ) as Array<{ id: string }>;
    return rows.map((r) => this.base(r.id)!).filter(Boolean);
  }

  /**
   * Records a base about to be made from `owner`'s disk (and the snapshot naming it, if any),
   * both pending. A snapshot name the box already has is AlreadyExists.
   */
  beginBase(base: Omit<BaseRow, 'state'>, snapshot?: Omit<SnapshotRow, 'state' | 'baseId' | 'boxId' | 'sizeBytes'>): void {
    try {
      this.db
        .transaction(() => {
          this.db
            .prepare("INSERT INTO bases (id, parent, owner, state, created_at) VALUES (?, ?, ?, 'pending', ?)")
            .run(base.id, base.parent, base.owner, base.createdAt);
          if (snapshot) {
            this.db
              .prepare(
                `INSERT INTO snapshots (id, box_id, name, base_id, state, created_at, container_disk_bytes, size_bytes)
                 VALUES (?, ?, ?, ?, 'pending', ?, ?, 0)`,
              )
              .run(snapshot.id, base.owner, snapshot.name, base.id, snapshot.createdAt, snapshot.containerDiskBytes);
          }
        })
        .immediate();
    } catch (err) {
      throw translateSqliteError(
        err,
        `record a disk base of box ${base.owner}`,
        snapshot ? `snapshot ${JSON.stringify(snapshot.name)} already exists for box ${base.owner}` : undefined,
      );
    }
  }

  /** The base's file is in place and the owner's disk now sits on it: make it real. */
  commitBase(id: string, sizeBytes: number): void {
    sqlite(`commit disk base ${id}`, () =>
      this.db
        .transaction(() => {
          const row = this.db.prepare('SELECT owner FROM bases WHERE id = ?').get(id) as { owner: string } | undefined;
          if (!row) return;
          this.db.prepare("UPDATE bases SET state = 'ready' WHERE id = ?").run(id);
          this.db.prepare("UPDATE snapshots SET state = 'ready', size_bytes = ? WHERE base_id = ?").run(sizeBytes, id);
          // The owner's disk moved from its old base (now this base's parent) onto this one.
          this.db.prepare('DELETE FROM box_refs WHERE box_id = ?').run(row.owner);
          this.db.prepare('INSERT INTO box_refs (box_id, base_id) VALUES (?, ?)').run(row.owner, id);
        })
        .immediate(),
    );
  }

  /** Forgets a base that never came to be (its file, if any, is the caller's to unlink). */
  abortBase(id: string): void {
    sqlite(`forget disk base ${id}`, () =>
      this.db
        .transaction(() => {
          this.db.prepare('DELETE FROM snapshots WHERE base_id = ?').run(id);
          this.db.prepare('DELETE FROM box_refs WHERE base_id = ?').run(id);
          this.db.prepare('DELETE FROM bases WHERE id = ?').run(id);
        })
        .immediate(),
    );
  }

  /** Adds a reference from the box's disk to a ready base; false when the base is gone. */
  addRef(boxId: string, baseId: string): boolean {
    return sqlite(`record that box ${boxId} uses disk base ${baseId}`, () =>
      this.db
        .transaction(() => {
          const ok = this.db.prepare("SELECT 1 FROM bases WHERE id = ? AND state = 'ready'").get(baseId);
          if (!ok) return false;
          this.db.prepare('INSERT OR IGNORE INTO box_refs (box_id, base_id) VALUES (?, ?)').run(boxId, baseId);
          return true;
        })
        .immediate(),
    );
  }

  /** The box's disk now sits on `baseId` only (after a restore's rename). */
  keepOnlyRef(boxId: string, baseId: string): void {
    sqlite(`record the disk base of box ${boxId}`, () =>
      this.db.prepare('DELETE FROM box_refs WHERE box_id = ? AND base_id != ?').run(boxId, baseId),
    );
  }

  listSnapshots(boxId: string): SnapshotRow[] {
    const rows = sqlite(`list the snapshots of box ${boxId}`, () =>
      this.db.prepare("SELECT * FROM snapshots WHERE box_id = ? AND state = 'ready' ORDER BY created_at DESC, id DESC").all(boxId),
    ) as SnapshotDbRow[];
    return rows.map(snapshotFrom);
  }

  getSnapshot(boxId: string, name: string): SnapshotRow | undefined {
    const r = sqlite(`read snapshot ${name} of box ${boxId}`, () =>
      this.db.prepare("SELECT * FROM snapshots WHERE box_id = ? AND name = ? AND state = 'ready'").get(boxId, name),
    ) as SnapshotDbRow | undefined;
    return r ? snapshotFrom(r) : undefined;
  }

  /** Drops the snapshot's row; false when there was none. Its base goes with collect() once unreferenced. */
  removeSnapshot(boxId: string, name: string): boolean {
    return sqlite(`remove snapshot ${name} of box ${boxId}`, () =>
      this.db.prepare("DELETE FROM snapshots WHERE box_id = ? AND name = ? AND state = 'ready'").run(boxId, name).changes > 0,
    );
  }

  /**
   * Garbage collection, in one write transaction: rows of boxes that no longer exist (read by
   * `liveBoxes` inside the transaction, so a box created and referenced meanwhile is seen), then
   * every ready base nothing points at, repeatedly (a freed child may free its parent). Returns
   * the ids whose files the caller unlinks — after the commit, so no row ever names a missing file.
   */
  collect(liveBoxes: () => Set<string>): string[] {
    return sqlite('collect unused disk bases', () =>
      this.db
        .transaction(() => {
          const live = liveBoxes();
          const dead = (table: string, column: string) =>
            (this.db.prepare(`SELECT DISTINCT ${column} AS id FROM ${table}`).all() as Array<{ id: string }>)
              .map((r) => r.id)
              .filter((id) => !live.has(id));
          for (const box of dead('snapshots', 'box_id')) this.db.prepare('DELETE FROM snapshots WHERE box_id = ?').run(box);
          for (const box of dead('box_refs', 'box_id')) this.db.prepare('DELETE FROM box_refs WHERE box_id = ?').run(box);
          // An operation that died with its box: nothing else can finish it.
          for (const owner of dead("bases WHERE state = 'pending'", 'owner')) {
            this.db.prepare("UPDATE bases SET state = 'ready' WHERE owner = ? AND state = 'pending'").run(owner);
          }
          const freed: string[] = [];
          for (;;) {
            const unused = this.db
              .prepare(
                `SELECT id FROM bases b WHERE state = 'ready'
                   AND NOT EXISTS (SELECT 1 FROM snapshots s WHERE s.base_id = b.id)
                   AND NOT EXISTS (SELECT 1 FROM box_refs r WHERE r.base_id = b.id)
                   AND NOT EXISTS (SELECT 1 FROM bases c WHERE c.parent = b.id)`,
              )
              .all() as Array<{ id: string }>;
            if (!unused.length) break;
            for (const { id } of unused) {
              this.db.prepare('DELETE FROM bases WHERE id = ?').run(id);
              freed.push(id);
            }
          }
          return freed;
        })
        .immediate(),
    );
  }

  /** How many rows point at the base (snapshots, box disks, child bases): its reference count. */
  references(id: string): number {
    return sqlite(`count the users of disk base ${id}`, () => {
      const q = (sql: string) => (this.db.prepare(sql).get(id) as { n: number }).n;
      return (
        q('SELECT COUNT(*) AS n FROM snapshots WHERE base_id = ?') +
        q('SELECT COUNT(*) AS n FROM box_refs WHERE base_id = ?') +
        q('SELECT COUNT(*) AS n FROM bases WHERE parent = ?')
      );
    });
  }

  allBases(): BaseRow[] {
    const rows = sqlite('list disk bases', () => this.db.prepare('SELECT id FROM bases ORDER BY id').all()) as Array<{ id: string }>;
    return rows.map((r) => this.base(r.id)!);
  }
}
