// Several processes opening one new SQLite database at the same instant (two CLIs pulling into a
// fresh home): every one must get it, none a "database is locked" (src/store/db.ts switchToWal).
import { spawn } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { describe, expect, it } from 'vitest';

const db = path.resolve(import.meta.dirname, '..', '..', 'dist', 'store', 'db.js');

function opener(dir: string, at: number): Promise<{ code: number | null; err: string }> {
  const script = `
    const { openDatabase } = await import(${JSON.stringify(db)});
    while (Date.now() < ${at}) {}
    const d = openDatabase(${JSON.stringify(dir)}, 'race', ['CREATE TABLE IF NOT EXISTS t (x INTEGER)', 'CREATE INDEX IF NOT EXISTS tx ON t (x)']);
    d.prepare('INSERT INTO t VALUES (1)').run();
    d.close();`;
  return new Promise((resolve) => {
    const c = spawn(process.execPath, ['--input-type=module', '-e', script], { stdio: ['ignore', 'ignore', 'pipe'] });
    let err = '';
    c.stderr.on('data', (d) => (err += d));
    c.on('close', (code) => resolve({ code, err }));
  });
}

describe('openDatabase from several processes at once', () => {
  it('opens a new database in 4 processes at the same instant, 10 times over', async () => {
    for (let round = 0; round < 10; round++) {
      const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'boxlite-dbrace-'));
      try {
        const at = Date.now() + 400;
        const results = await Promise.all([0, 1, 2, 3].map(() => opener(dir, at)));
        for (const r of results) expect(r, r.err).toMatchObject({ code: 0 });
        const count = await new Promise<string>((resolve) => {
          const c = spawn(process.execPath, ['--input-type=module', '-e', `const { openDatabase } = await import(${JSON.stringify(db)}); const d = openDatabase(${JSON.stringify(dir)}, 'race', ['CREATE TABLE IF NOT EXISTS t (x INTEGER)', 'CREATE INDEX IF NOT EXISTS tx ON t (x)']); console.log(d.prepare('SELECT count(*) AS n FROM t').get().n); d.close();`], { stdio: ['ignore', 'pipe', 'inherit'] });
          let out = '';
          c.stdout.on('data', (d) => (out += d));
          c.on('close', () => resolve(out.trim()));
        });
        expect(count).toBe('4');
      } finally {
        fs.rmSync(dir, { recursive: true, force: true });
      }
    }
  }, 60_000);
});
