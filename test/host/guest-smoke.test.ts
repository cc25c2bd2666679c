// The agent's own host-mode smoke test (guest/test/host_smoke.py): real frames over a unix
// socket against guest/build/boxlite-guest, no VM. Part of the host tier so `npm test` runs it.
import { spawnSync } from 'node:child_process';
import path from 'node:path';
import { expect, it } from 'vitest';
import { AGENT, ROOT } from './helpers.js';

it('guest/test/host_smoke.py passes against the host-mode agent', () => {
  const r = spawnSync('python3', [path.join(ROOT, 'guest/test/host_smoke.py'), AGENT], { encoding: 'utf8', timeout: 60_000 });
  const summary = /smoke \(.*\): (\d+) passed, (\d+) failed/.exec(r.stdout);
  expect(r.status, r.stdout + r.stderr).toBe(0);
  expect(summary, r.stdout).not.toBeNull();
  expect(Number(summary![1])).toBeGreaterThan(20);
  expect(Number(summary![2])).toBe(0);
}, 90_000);
