import path from 'node:path';
import Database from 'better-sqlite3';
import { AlreadyExistsError, BoxliteError, StorageError } from '../errors/index.js';

export type Db = Database.Database;

/**
 * Opens one of the home's SQLite databases (db/<name>.db) in WAL mode, so several
 * processes can read while one writes; writers wait up to `busyMs` for each other.
 * `migrations[i]` takes the schema from version i to i+1 (PRAGMA user_version).
 */
export function openDatabase(dbDir: string, name: string, migrations: string[], busyMs = 10_000): Db {
  const file = path.join(dbDir, `${name}.db`);
  let db: Db | undefined;
  try {
    db = new Database(file, { timeout: busyMs });
    // busy_timeout first: switching to WAL takes a lock another opener may hold.
    db.pragma(`busy_timeout = ${busyMs}`);
    switchToWal(db, busyMs);
    db.pragma('foreign_keys = ON');
  } catch (err) {
    // Opened but unusable (not a database, locked): do not keep its file descriptor.
    db?.close();
    throw new StorageError(`cannot open database ${file}: ${openFailure(err)}`, { cause: err });
  }
  const opened = db;
  const migrate = opened.transaction(() => {
    const version = opened.pragma('user_version', { simple: true }) as number;
    for (let v = version; v < migrations.length; v++) opened.exec(migrations[v]!);
    if (version < migrations.length) opened.pragma(`user_version = ${migrations.length}`);
  });
  try {
    migrate.immediate();
  } catch (err) {
    opened.close();
    throw new StorageError(`cannot migrate database ${file}: ${(err as Error).message}`, { cause: err });
  }
  return opened;
}

/**
 * Two processes opening a new database at once both switch it to WAL, which needs an exclusive
 * lock; SQLite then answers SQLITE_BUSY at once instead of calling the busy handler (waiting
 * could deadlock), so the wait is ours: retried with a little jitter up to `busyMs`.
 */
function switchToWal(db: Db, busyMs: number): void {
  const deadline = Date.now() + busyMs;
  for (;;) {
    try {
      db.pragma('journal_mode = WAL');
      return;
    } catch (err) {
      if ((err as { code?: string }).code !== 'SQLITE_BUSY' || Date.now() >= deadline) throw err;
      Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0, 5 + Math.floor(Math.random() * 20));
    }
  }
}

/**
 * better-sqlite3 loads its native module on the first open. When that module is missing
 * (an install that skipped its build) or was built for another Node.js (NODE_MODULE_VERSION),
 * the error is a loader's, not SQLite's: say so, and how to fix it.
 */
function openFailure(err: unknown): string {
  const message = err instanceof Error ? err.message : String(err);
  const code = (err as { code?: unknown } | null)?.code;
  if (message.startsWith('Could not locate the bindings file')) {
    // The rest of the message lists every path `bindings` tried: the cause keeps it.
    return `${message.split('\n')[0]} (better-sqlite3's native module is missing); run \`npm rebuild better-sqlite3\``;
  }
  if (code === 'ERR_DLOPEN_FAILED' || /NODE_MODULE_VERSION/.test(message)) {
    return (
      `${message.replace(/\s*\n\s*/g, ' ')} (better-sqlite3's native module does not load in Node.js ${process.version}); ` +
      'run `npm rebuild better-sqlite3`'
    );
  }
  return message;
}

/**
 * A foreign (better-sqlite3) error as a coded one, at the boundary where it enters: a UNIQUE
 * or PRIMARY KEY violation is AlreadyExists (`duplicate` names what is taken), everything
 * else (read-only file, corrupt database, disk full, busy past the timeout) is Storage.
 * The SQLite error stays as `cause`.
 */
export function translateSqliteError(err: unknown, what: string, duplicate?: string): BoxliteError {
  if (err instanceof BoxliteError) return err;
  const code = (err as { code?: unknown } | null)?.code;
  if (duplicate && (code === 'SQLITE_CONSTRAINT_UNIQUE' || code === 'SQLITE_CONSTRAINT_PRIMARYKEY')) {
    return new AlreadyExistsError(duplicate, { cause: err });
  }
  const detail = err instanceof Error ? err.message : String(err);
  return new StorageError(`cannot ${what}: ${detail}${typeof code === 'string' ? ` (${code})` : ''}`, { cause: err });
}

/** Runs one database operation; any error it throws leaves as translateSqliteError's. */
export function sqlite<T>(what: string, fn: () => T, duplicate?: string): T {
  try {
    return fn();
  } catch (err) {
    throw translateSqliteError(err, what, duplicate);
  }
}
