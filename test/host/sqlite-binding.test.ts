// better-sqlite3 loads its native module on the first open. A missing module (an install that
// skipped the build) or one built for another Node.js must be a StorageError that says how to
// fix it, not a loader's stack trace. The loader's errors are played by a mocked constructor.
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { beforeEach, describe, expect, it, vi } from 'vitest';

const loader = vi.hoisted(() => ({ error: undefined as Error | undefined }));
vi.mock('better-sqlite3', () => ({
  default: class {
    constructor() {
      throw loader.error;
    }
  },
}));

const { openDatabase } = await import('../../dist/store/db.js');

const MISSING =
  'Could not locate the bindings file. Tried:\n' +
  ' → /app/node_modules/better-sqlite3/build/better_sqlite3.node\n' +
  ' → /app/node_modules/better-sqlite3/build/Release/better_sqlite3.node';
const MISMATCH =
  "The module '/app/node_modules/better-sqlite3/build/Release/better_sqlite3.node'\n" +
  'was compiled against a different Node.js version using\n' +
  'NODE_MODULE_VERSION 108. This version of Node.js requires\n' +
  'NODE_MODULE_VERSION 115. Please try re-compiling or re-installing\n' +
  'the module (for instance, using `npm rebuild` or `npm install`).';

function openError(): Error & { code?: string; cause?: unknown } {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'boxlite-db-'));
  try {
    openDatabase(dir, 'boxes', []);
  } catch (err) {
    return err as Error & { code?: string; cause?: unknown };
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
  throw new Error('expected openDatabase to fail');
}

describe("better-sqlite3's native binding cannot load", () => {
  beforeEach(() => {
    loader.error = undefined;
  });

  it('a missing bindings file is a StorageError ending with the npm rebuild hint', () => {
    loader.error = new Error(MISSING);
    const err = openError();
    expect(err).toMatchObject({ code: 'Storage', name: 'StorageError' });
    expect(err.message).toMatch(/^storage error: cannot open database .*boxes\.db: Could not locate the bindings file\. Tried: \(/);
    expect(err.message.endsWith('run `npm rebuild better-sqlite3`')).toBe(true);
    // The list of paths tried stays in the cause, not in the one-line message.
    expect(err.message).not.toContain('\n');
    expect(err.cause).toBe(loader.error);
  });

  it('a NODE_MODULE_VERSION mismatch is a StorageError ending with the npm rebuild hint', () => {
    loader.error = Object.assign(new Error(MISMATCH), { code: 'ERR_DLOPEN_FAILED' });
    const err = openError();
    expect(err).toMatchObject({ code: 'Storage' });
    expect(err.message).toContain('NODE_MODULE_VERSION 108. This version of Node.js requires NODE_MODULE_VERSION 115.');
    expect(err.message).toContain(`does not load in Node.js ${process.version}`);
    expect(err.message.endsWith('run `npm rebuild better-sqlite3`')).toBe(true);
  });

  it('an ordinary open failure gets no rebuild hint', () => {
    loader.error = Object.assign(new Error('unable to open database file'), { code: 'SQLITE_CANTOPEN' });
    const err = openError();
    expect(err.message).toMatch(/: unable to open database file$/);
  });
});
