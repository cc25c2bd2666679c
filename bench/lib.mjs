// What every benchmark here shares: the repo root, the built package, test images built (or found
// cached) by scripts/make-test-image.mjs, a scratch home, and the statistics the figures use.
import { execFileSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

export const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');

/** The built package (dist/), as a user's program imports it. */
export const loadBoxlite = () => import(path.join(ROOT, 'dist', 'index.js'));

/** .cache/images/<variant>, built once and reused while its inputs are unchanged. */
export function ensureImage(variant) {
  const dir = path.join(ROOT, '.cache', 'images', variant);
  execFileSync(process.execPath, [path.join(ROOT, 'scripts', 'make-test-image.mjs'), dir, '--variant', variant], { stdio: 'ignore' });
  return dir;
}

export const scratchHome = (name) => fs.mkdtempSync(path.join(os.tmpdir(), `boxlite-bench-${name}-`));

/** `--runs N` from argv, else `fallback`. */
export function runsArg(fallback) {
  const i = process.argv.indexOf('--runs');
  return i > 0 ? Number(process.argv[i + 1]) : fallback;
}

export const median = (xs) => {
  const s = [...xs].sort((a, b) => a - b);
  return s.length % 2 ? s[(s.length - 1) / 2] : (s[s.length / 2 - 1] + s[s.length / 2]) / 2;
};
export const fmt = (ms) => `${ms.toFixed(ms < 10 ? 2 : 0)} ms`;
export const time = async (fn) => {
  const t0 = performance.now();
  await fn();
  return performance.now() - t0;
};
