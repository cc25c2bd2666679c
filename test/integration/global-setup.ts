import { execFileSync, execSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import type { TestProject } from 'vitest/node';

const ROOT = path.resolve(import.meta.dirname, '../..');

/**
 * Live VM and shim processes on this machine (the suite must leave none behind).
 * Zombies are dead already: their parent (a test worker on its way out) just has not reaped them.
 */
export function leftoverProcesses(): string[] {
  const out = execSync('ps -eo pid=,stat=,args=', { encoding: 'utf8' });
  return out
    .split('\n')
    .map((l) => l.trim())
    .filter((l) => /qemu-system|boxlite-shim/.test(l))
    .filter((l) => !/^\d+\s+Z/.test(l))
    .map((l) => l.replace(/^(\d+)\s+\S+\s+/, '$1 '));
}

/**
 * Staged fixtures for the VM tests: the built package, the guest agent, the
 * kernel and a test image must exist (scripts/setup.sh makes them); each run
 * gets a fresh BOXLITE_HOME that shares only the downloaded kernel.
 */
export default function setup(project: TestProject) {
  for (const [what, p] of [
    ['built package (npm run build)', 'dist/index.js'],
    ['guest agent (make -C guest)', 'guest/build/boxlite-guest'],
  ] as const) {
    if (!fs.existsSync(path.join(ROOT, p))) throw new Error(`missing ${what}: run scripts/setup.sh first`);
  }
  const kernelDir = path.join(process.env.BOXLITE_HOME ?? path.join(os.homedir(), '.boxlite'), 'init', 'kernel');
  if (!fs.existsSync(kernelDir)) throw new Error(`missing guest kernel in ${kernelDir}: run scripts/setup.sh first`);

  const image = path.join(ROOT, '.cache', 'images', 'busybox');
  execFileSync(process.execPath, [path.join(ROOT, 'scripts', 'make-test-image.mjs'), image, '--variant', 'busybox'], {
    stdio: 'inherit',
  });

  const before = leftoverProcesses();
  const home = fs.mkdtempSync(path.join(os.tmpdir(), 'boxlite-it-'));
  fs.mkdirSync(path.join(home, 'init'), { recursive: true });
  fs.symlinkSync(kernelDir, path.join(home, 'init', 'kernel'));
  project.provide('home', home);
  project.provide('image', image);
  project.provide('root', ROOT);

  return async () => {
    // A box stopped by the last test may still be exiting: give it a moment before calling it a leak.
    let left = leftoverProcesses().filter((l) => !before.includes(l));
    for (let i = 0; i < 50 && left.length; i++) {
      await new Promise((r) => setTimeout(r, 100));
      left = leftoverProcesses().filter((l) => !before.includes(l));
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
