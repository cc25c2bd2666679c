// Regression: "8 boxes at once" failed once with only "box shim exited during start (code 1)".
// The cause (a shim whose modules failed to load while dist/ was being rebuilt) was in
// shim.log, which went away with the test's temp home. A shim that dies before its readiness
// line must be reported with how it ended and the last lines it logged.
import fs from 'node:fs';
import path from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { launchShim } from '../../dist/shim/client.js';
import { boxDir, shimConfig } from './helpers.js';

const dirs: string[] = [];
afterEach(() => {
  for (const d of dirs.splice(0)) fs.rmSync(d, { recursive: true, force: true });
});

function dir(): string {
  const d = boxDir();
  dirs.push(d);
  return d;
}

describe('a shim that dies during start', () => {
  it('that cannot load its code is reported with its exit code and the error it printed', async () => {
    const d = dir();
    // The way a half-written dist/ module fails: Node prints the error on fd 2 (shim.log), exits 1.
    const crash = path.join(d, 'crash.cjs');
    fs.writeFileSync(crash, "throw new SyntaxError(\"The requested module './router.js' does not provide an export named 'StreamRouter'\");\n");
    const saved = process.env.NODE_OPTIONS;
    process.env.NODE_OPTIONS = `--require ${crash}`;
    const started = launchShim(shimConfig(d, { command: 'sleep', args: ['30'] }));
    if (saved === undefined) delete process.env.NODE_OPTIONS;
    else process.env.NODE_OPTIONS = saved;
    const err = (await started.then(
      () => {
        throw new Error('the shim started');
      },
      (e: Error & { code?: string }) => e,
    )) as Error & { code?: string };
    expect(err.code).toBe('Engine');
    expect(err.message).toContain('box shim exited during start (code 1)');
    expect(err.message).toContain(`last lines of ${path.join(d, 'logs', 'shim.log')}`);
    expect(err.message).toContain("does not provide an export named 'StreamRouter'");
  });

  it('that is SIGKILLed while waiting for its agent is reported with the signal and its log', async () => {
    const d = dir();
    const started = launchShim(shimConfig(d, { command: 'sleep', args: ['30'] }, 20_000));
    const outcome = started.then(
      () => new Error('the shim started'),
      (e: Error & { code?: string }) => e,
    );
    // shim.lock names the shim once it owns the box; its log then says what it spawned.
    const lock = path.join(d, 'shim.lock');
    const shimLog = path.join(d, 'logs', 'shim.log');
    const deadline = Date.now() + 10_000;
    while (!(fs.existsSync(lock) && fs.existsSync(shimLog) && fs.readFileSync(shimLog, 'utf8').includes('spawn sleep'))) {
      if (Date.now() > deadline) throw new Error('the shim did not spawn its agent peer');
      await new Promise((r) => setTimeout(r, 20));
    }
    const { pid } = JSON.parse(fs.readFileSync(lock, 'utf8')) as { pid: number };
    process.kill(pid, 'SIGKILL');
    const err = (await outcome) as Error & { code?: string };
    expect(err.code).toBe('Engine');
    expect(err.message).toContain('box shim exited during start (signal SIGKILL)');
    expect(err.message).toMatch(/spawn sleep 30/);
  });
});
