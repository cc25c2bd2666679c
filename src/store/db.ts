import path from 'node:path';
import Database from 'better-sqlite3';
import { StorageError } from '../errors/index.js';

export type Db = Database.Database;

/**
 * Opens one of the home's SQLite databases (db/<name>.db) in WAL mode, so several
 * processes can read while one writes; writers wait up to `busyMs` for each other.
 * `migrations[i]` takes the schema from version i to i+1 (PRAGMA user_version).
 */
export function openDatabase(dbDir: string, name: string, migrations: string[], busyMs = 10_000): Db {
  const file = path.join(dbDir, `${name}.db`);
  let db: Db;
  try {
    db = new Database(file, { timeout: busyMs });
    // busy_timeout first: switching to WAL takes a lock another opener may hold.
    db.pragma(`busy_timeout = ${busyMs}`);
    db.pragma('journal_mode = WAL');
    db.pragma('foreign_keys = ON');
  } catch (err) {
    throw new StorageError(`cannot open database ${file}: ${(err as Error).message}`, { cause: err });
  }
  const migrate = db.transaction(() => {
    const version = db.pragma('user_version', { simple: true }) as number;
    for (let v = version; v < migrations.length; v++) db.exec(migrations[v]!);
    if (version < migrations.length) db.pragma(`user_version = ${migrations.length}`);
  });
  try {
    migrate.immediate();
  } catch (err) {
    db.close();
    throw new StorageError(`cannot migrate database ${file}: ${(err as Error).message}`, { cause: err });
  }
  return db;
}
