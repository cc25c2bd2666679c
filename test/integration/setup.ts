// Runs in every integration test file (vitest setupFiles). When a test fails, every box it
// touched is named with the paths and last lines of its shim, console and QEMU logs, and its
// logs are copied to .cache/failed-boxes/ (CI keeps .cache): the box's home is a temp dir that
// the suite removes, and a flake seen once must still be explainable (STYLE.md #11).
import fs from 'node:fs';
import path from 'node:path';
import { beforeEach, inject } from 'vitest';
import { testHomes } from './helpers.js';

const LOGS = ['shim.log', 'console.log', 'qemu.log'] as const;
const TAIL_LINES = { 'shim.log': 20, 'console.log': 20, 'qemu.log': 10 } as const;

function tail(file: string, lines: number): string {
  try {
    return fs.readFileSync(file, 'utf8').replace(/\r/g, '').trimEnd().split('\n').slice(-lines).join('\n');
  } catch {
    return '';
  }
}

/** Boxes of `home` whose logs changed since `since` (ms): the ones this test touched. */
function touchedBoxes(home: string, since: number): string[] {
  const boxes = path.join(home, 'boxes');
  let ids: string[];
  try {
    ids = fs.readdirSync(boxes);
  } catch {
    return [];
  }
  return ids.filter((id) =>
    LOGS.some((name) => {
      try {
        return fs.statSync(path.join(boxes, id, 'logs', name)).mtimeMs >= since;
      } catch {
        return false;
      }
    }),
  );
}

function report(testName: string, since: number): void {
  const keep = path.join(inject('root'), '.cache', 'failed-boxes', testName.replace(/[^\w.-]+/g, '_').slice(0, 100));
  const out: string[] = [];
  for (const home of [inject('home'), ...testHomes]) {
    for (const id of touchedBoxes(home, since)) {
      const logs = path.join(home, 'boxes', id, 'logs');
      out.push(`box ${id} (home ${home}): logs in ${logs}, kept in ${path.join(keep, id)}`);
      for (const name of LOGS) {
        const text = tail(path.join(logs, name), TAIL_LINES[name]);
        if (text) out.push(`--- ${name} (last ${TAIL_LINES[name]} lines) ---`, text);
      }
      try {
        fs.cpSync(logs, path.join(keep, id), { recursive: true });
      } catch {
        // the box was removed meanwhile: what was printed is what there is
      }
    }
  }
  if (out.length) console.error(`[${testName}] failed; the boxes it touched:\n${out.join('\n')}`);
}

beforeEach((ctx) => {
  // 1 s of slack: mtime granularity, and a box booted just before the test's own clock read.
  const since = Date.now() - 1_000;
  ctx.onTestFailed(() => report(ctx.task.name, since));
});
