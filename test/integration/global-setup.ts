import { execFileSync, execSync } from 'node:child_process';
import { randomUUID } from 'node:crypto';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import type { TestProject } from 'vitest/node';

const ROOT = path.resolve(import.meta.dirname, '../..');

/**
 * Marks every process this run starts (test workers, the shims they spawn, QEMU, CLI children
 * all inherit the environment), so the leak check sees only this run's VMs. Without it, a
 * second run on the same machine (another checkout, a developer's terminal) would call the
 * first run's booting VMs leaks and SIGKILL them: a box then fails with
 * "box shim exited during start (signal SIGKILL)".
 */
const RUN_MARKER = `BOXLITE_TEST_RUN=${randomUUID()}`;

function startedByThisRun(pid: number): boolean {
  try {
    return fs.readFileSync(`/proc/${pid}/environ`, 'utf8').split('\0').includes(RUN_MARKER);
  } catch {
    return false; // gone, or not ours to read
  }
}

/**
 * Live VM and shim processes this run started (the suite must leave none behind).
 * Zombies are dead already: their parent (a test worker on its way out) just has not reaped them.
 */
export function leftoverProcesses(): string[] {
  const out = execSync('ps -eo pid=,stat=,args=', { encoding: 'utf8' });
  return out
    .split('\n')
    .map((l) => l.trim())
    .filter((l) => /qemu-system|boxlite-shim/.test(l))
    .filter((l) => !/^\d+\s+Z/.test(l))
    .map((l) => l.replace(/^(\d+)\s+\S+\s+/, '$1 '))
    .filter((l) => startedByThisRun(Number(l.split(' ')[0])));
}

/**
 * Staged fixtures for the VM tests: the built package and the guest runtime must exist
 * (scripts/setup.sh makes them; the runtime is rebuilt here when the agent changed); each run
 * gets a fresh, empty BOXLITE_HOME: the runtime lives outside every home.
 */
export default function setup(project: TestProject) {
  for (const [what, p] of [
    ['built package (npm run build)', 'dist/index.js'],
    ['guest agent (make -C guest)', 'guest/build/boxlite-guest'],
    ['guest kernel (scripts/fetch-kernel.sh)', '.cache/kernel/kernel.json'],
  ] as const) {
    if (!fs.existsSync(path.join(ROOT, p))) throw new Error(`missing ${what}: run scripts/setup.sh first`);
  }
  execFileSync(process.execPath, [path.join(ROOT, 'scripts', 'build-runtime.mjs')], { stdio: 'inherit' });

  const image = path.join(ROOT, '.cache', 'images', 'busybox');
  execFileSync(process.execPath, [path.join(ROOT, 'scripts', 'make-test-image.mjs'), image, '--variant', 'busybox'], {
    stdio: 'inherit',
  });

  const [markerName, markerValue] = RUN_MARKER.split('=') as [string, string];
  process.env[markerName] = markerValue;
  const home = fs.mkdtempSync(path.join(os.tmpdir(), 'boxlite-it-'));
  project.provide('home', home);
  project.provide('image', image);
  project.provide('root', ROOT);

  return async () => {
    // A box stopped by the last test may still be exiting: give it a moment before calling it a leak.
    let left = leftoverProcesses();
    for (let i = 0; i < 50 && left.length; i++) {
      await new Promise((r) => setTimeout(r, 100));
      left = leftoverProcesses();
    }
    for (const line of left) {
      const pid = Number(line.split(' ')[0]);
      try {
        process.kill(pid, 'SIGKILL');
      } catch {
        // gone already
      }
    }
    fs.rmSync(home, { recursive: true, force: true });
    if (left.length) throw new Error(`the suite leaked VM/shim processes:\n${left.join('\n')}`);
  };
}

declare module 'vitest' {
  export interface ProvidedContext {
    home: string;
    image: string;
    root: string;
  }
}
