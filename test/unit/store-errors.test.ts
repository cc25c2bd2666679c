// SQLite errors are translated where they enter (src/store/db.ts): coded BoxliteErrors with
// the SQLite error as `cause`, never a raw SqliteError.
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import Database from 'better-sqlite3';
import { afterEach, describe, expect, it } from 'vitest';
import { BoxStore } from '../../src/store/boxes.js';
import { ImageStore } from '../../src/images/store.js';
import { translateSqliteError } from '../../src/store/db.js';

const dirs: string[] = [];
function home(): { boxes: string; db: string; images: string } {
  const root = fs.mkdtempSync(path.join(os.tmpdir(), 'boxlite-store-'));
  dirs.push(root);
  return { boxes: path.join(root, 'boxes'), db: path.join(root, 'db'), images: path.join(root, 'images') };
}
afterEach(() => {
  for (const d of dirs.splice(0)) fs.rmSync(d, { recursive: true, force: true });
});

const record = (id: string, name?: string) => ({ id, name, createdAt: new Date().toISOString(), options: {}, image: {} });

function caught(fn: () => unknown): Error & { code?: string; cause?: { code?: string } } {
  try {
    fn();
  } catch (err) {
    return err as Error & { code?: string; cause?: { code?: string } };
  }
  throw new Error('expected an error');
}

describe('SQLite errors at the store boundary', () => {
  it('a corrupted boxes.db is a Storage error with the SQLite error as cause', () => {
    const h = home();
    fs.mkdirSync(h.db, { recursive: true });
    fs.writeFileSync(path.join(h.db, 'boxes.db'), Buffer.alloc(8192, 0x5a));
    const err = caught(() => new BoxStore(h.boxes, h.db).list());
    expect(err.code).toBe('Storage');
    expect(err.name).toBe('StorageError');
    expect(err.message).toMatch(/^storage error: cannot open database .*boxes\.db: file is not a database/);
    expect(err.cause?.code).toBe('SQLITE_NOTADB');
  });

  it('a corrupted images.db is a Storage error too', () => {
    const h = home();
    fs.mkdirSync(h.db, { recursive: true });
    fs.writeFileSync(path.join(h.db, 'images.db'), 'not sqlite at all, just text '.repeat(200));
    const err = caught(() => new ImageStore(h.images, h.db).list());
    expect(err.code).toBe('Storage');
    expect(err.cause?.code).toBe('SQLITE_NOTADB');
  });

  it('a write SQLite refuses is a Storage error naming the operation', () => {
    const h = home();
    const store = new BoxStore(h.boxes, h.db);
    store.create(record('01BOX'));
    // A read-only file would do, but root (this test's usual user) ignores file modes:
    // a trigger makes SQLite itself refuse the write, with an error code of its own.
    const other = new Database(path.join(h.db, 'boxes.db'));
    other.exec(`CREATE TRIGGER ro BEFORE UPDATE ON box_state BEGIN SELECT RAISE(ABORT, 'attempt to write a readonly database'); END;`);
    other.close();
    const err = caught(() => store.writeState('01BOX', { status: 'running' }));
    expect(err.code).toBe('Storage');
    expect(err.message).toMatch(/^storage error: cannot record the state of box 01BOX: attempt to write a readonly database \(SQLITE_CONSTRAINT_TRIGGER\)/);
    expect(err.cause?.code).toBe('SQLITE_CONSTRAINT_TRIGGER');
    store.close();
  });

  it('a UNIQUE name is AlreadyExists with the constraint error as cause', () => {
    const h = home();
    const store = new BoxStore(h.boxes, h.db);
    store.create(record('01AAA', 'web'));
    const err = caught(() => store.create(record('01BBB', 'web')));
    expect(err.code).toBe('AlreadyExists');
    expect(err.message).toBe('already exists: a box named "web" already exists');
    expect(err.cause?.code).toBe('SQLITE_CONSTRAINT_UNIQUE');
    store.close();
  });

  it('a damaged config row is a Storage error, not a SyntaxError', () => {
    const h = home();
    const store = new BoxStore(h.boxes, h.db);
    store.create(record('01CCC'));
    const other = new Database(path.join(h.db, 'boxes.db'));
    other.prepare("UPDATE boxes SET config = '{broken' WHERE id = '01CCC'").run();
    other.close();
    const err = caught(() => store.get('01CCC'));
    expect(err.code).toBe('Storage');
    expect(err.cause).toBeInstanceOf(SyntaxError);
    store.close();
  });

  it('translateSqliteError keeps coded errors and codes everything else', () => {
    const plain = translateSqliteError(new Error('disk I/O error'), 'do a thing');
    expect(plain).toMatchObject({ code: 'Storage', message: 'storage error: cannot do a thing: disk I/O error' });
    expect(translateSqliteError(plain, 'again')).toBe(plain);
  });
});
