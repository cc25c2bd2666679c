// box.fork() of a box with a main process (docs/snapshots.md "Fork"): the fork's shim adopts the
// source's main process, which runs on in the copied memory: its output goes on into the FORK's
// main.log, attach() reaches it, stdin too, its exit stops the fork with its code; the source
// is not affected. Also `boxlite fork`.
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterAll, describe, expect, inject, it } from 'vitest';
import { JsBoxlite, type Box } from '../../dist/index.js';
import { boxlite, run } from './helpers.js';

const runtime = new JsBoxlite({ homeDir: inject('home') });
const made: string[] = [];

afterAll(async () => {
  for (const id of made) await runtime.remove(id, true).catch(() => undefined);
});

// TERM has a handler (a namespace's init gets no signal without one); a background reader
// echoes stdin lines (read from fd 3: a background list's own stdin is /dev/null), so writes to the
// main process's stdin show in its log.
const MAIN = 'trap "echo bye; exit 42" TERM; exec 3<&0; (while read l <&3; do echo in-$l; done) & i=0; while :; do i=$((i+1)); echo tick $i; sleep 0.2; done';

async function logText(box: Box): Promise<string> {
  const parts: Buffer[] = [];
  for await (const c of box.logs()) parts.push(c);
  return Buffer.concat(parts).toString('utf8');
}

async function waitFor<T>(what: string, f: () => Promise<T | undefined | false>, ms = 60_000): Promise<T> {
  const deadline = Date.now() + ms;
  for (;;) {
    const v = await f();
    if (v) return v;
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 150));
  }
}

const ticks = (log: string) => [...log.matchAll(/^tick (\d+)$/gm)].map((m) => Number(m[1]));

const isAlive = (pid: number) => {
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
};

const qemuPid = (id: string) =>
  (JSON.parse(fs.readFileSync(path.join(inject('home'), 'boxes', id, 'shim.json'), 'utf8')) as { qemuPid: number }).qemuPid;

describe('fork of a box with a main process', () => {
  it('the fork adopts the main process: logs, attach, stdin, its exit stops the fork; the source runs on', async () => {
    const src = await runtime.create({
      rootfsPath: inject('image'),
      entrypoint: ['sh', '-c'],
      cmd: [MAIN],
      network: { outbound: { mode: 'disabled' } },
      memoryMib: 256,
    });
    made.push(src.id);
    await src.start();
    await waitFor('the source ticking', async () => ticks(await logText(src)).length >= 3);
    const srcQemu = qemuPid(src.id);

    const t0 = performance.now();
    const fork = await src.fork();
    const forkMs = performance.now() - t0;
    made.push(fork.id);
    const forkQemu = qemuPid(fork.id);
    const atFork = Math.max(...ticks(await logText(src)));

    // The fork's own log: the same counter carrying on (not restarted at 1), and growing.
    const first = await waitFor('the fork logging', async () => {
      const t = ticks(await logText(fork));
      return t.length >= 2 && t;
    });
    console.log(`[timing] fork() ${forkMs.toFixed(0)} ms, first 2 ticks in the fork's log ${(performance.now() - t0).toFixed(0)} ms (load ${os.loadavg()[0]!.toFixed(2)})`);
    expect(first[0]).toBeGreaterThan(1);
    const later = await waitFor('the fork log growing', async () => {
      const t = ticks(await logText(fork));
      return t.length >= first.length + 3 && t;
    });
    expect(later.slice(0, first.length)).toEqual(first);
    // Nothing lost or doubled from the adoption on: consecutive, and it started before fork() returned.
    expect(later).toEqual(later.map((_, i) => later[0]! + i));
    expect(first[0]).toBeLessThanOrEqual(atFork);
    expect((await fork.info()).state).toMatchObject({ status: 'running', running: true });
    expect((await fork.info()).state.exitCode).toBeUndefined();

    // attach() to the fork's main process: new output arrives, stdin reaches it.
    const att = await fork.attach();
    const out = await att.stdout();
    const seen = await waitFor('attached output', async () => {
      const line = await out.next();
      return line !== null && /tick \d+/.test(line) && line;
    }, 30_000);
    expect(Number(/tick (\d+)/.exec(seen)![1])).toBeGreaterThan(first[0]!);
    await (await att.stdin()).writeString('to-fork\n');
    await waitFor('stdin in the fork log', async () => (await logText(fork)).includes('in-to-fork\n'));

    // The source's stdin is its own.
    const srcAtt = await src.attach();
    await (await srcAtt.stdin()).writeString('to-src\n');
    await waitFor('stdin in the source log', async () => (await logText(src)).includes('in-to-src\n'));
    expect(await logText(fork)).not.toContain('in-to-src');
    expect(await logText(src)).not.toContain('in-to-fork');

    // kill 1 in the fork: its main process ends (TERM trap), the fork stops with its exit code.
    const k = await run(fork, 'kill', ['1']);
    expect(k.exitCode).toBe(0);
    expect((await att.wait()).exitCode).toBe(42);
    await waitFor('the fork stopped', async () => (await fork.info()).state.status === 'stopped');
    expect((await fork.info()).state).toMatchObject({ status: 'stopped', running: false, exitCode: 42 });
    expect(await logText(fork)).toMatch(/bye\n$/);
    expect(isAlive(forkQemu)).toBe(false);

    // The source runs on, ticking, its main process untouched.
    const before = Math.max(...ticks(await logText(src)));
    await waitFor('the source ticking on', async () => Math.max(...ticks(await logText(src))) > before + 2);
    expect((await src.info()).state).toMatchObject({ status: 'running' });
    expect(await logText(src)).not.toContain('bye');
    expect(qemuPid(src.id)).toBe(srcQemu);

    await srcAtt.kill().catch(() => undefined);
    await runtime.remove(fork.id, true);
    await src.stop();
    expect((await src.info()).state.exitCode).toBe(137);
    await runtime.remove(src.id, true);
    expect(isAlive(srcQemu)).toBe(false);
  });

  it('with autoRemove, a fork whose main process ended is removed; the source is not', async () => {
    const src = await runtime.create({
      rootfsPath: inject('image'),
      entrypoint: ['sh', '-c'],
      cmd: [MAIN],
      network: { outbound: { mode: 'disabled' } },
      memoryMib: 256,
      autoRemove: true,
    });
    made.push(src.id);
    await src.start();
    await waitFor('the source ticking', async () => ticks(await logText(src)).length >= 2);
    const fork = await src.fork();
    made.push(fork.id);
    const qf = qemuPid(fork.id);
    expect((await run(fork, 'kill', ['1'])).exitCode).toBe(0);
    await waitFor('the fork removed', async () => (await runtime.get(fork.id)) === null);
    expect((await fork.info()).state).toMatchObject({ status: 'stopped', exitCode: 42 });
    expect(isAlive(qf)).toBe(false);
    expect((await src.info()).state.status).toBe('running');
    await runtime.remove(src.id, true);
  });

  it('boxlite fork BOX --name NAME prints the new id; the fork runs the main process on after the CLI exits; stop() gives 137', async () => {
    const src = await runtime.create({
      rootfsPath: inject('image'),
      entrypoint: ['sh', '-c'],
      cmd: [MAIN],
      network: { outbound: { mode: 'disabled' } },
      memoryMib: 256,
    });
    made.push(src.id);
    await src.start();
    await waitFor('the source ticking', async () => ticks(await logText(src)).length >= 2);
    const name = `fork-cli-${Date.now()}`;
    const r = await boxlite(['fork', src.id, '--name', name]);
    expect(r.code, r.stderr).toBe(0);
    const id = r.stdout.trim();
    expect(id).toMatch(/^[0-9A-Z]{26}$/);
    made.push(id);
    const fork = (await runtime.get(name))!;
    expect(fork.id).toBe(id);
    const n = ticks(await logText(fork)).length;
    await waitFor('the CLI fork logging on', async () => ticks(await logText(fork)).length > n + 2);
    const logs = await boxlite(['logs', name]);
    expect(logs.stdout).toMatch(/tick \d+\n/);
    const qf = qemuPid(id);
    // stop() kills the adopted main process as any box's: 137.
    await fork.stop();
    expect((await fork.info()).state).toMatchObject({ status: 'stopped', exitCode: 137 });
    expect(isAlive(qf)).toBe(false);
    expect((await boxlite(['rm', '-f', name])).code).toBe(0);
    // A stopped box is not forked: a typed error, no stack trace.
    const qs = qemuPid(src.id);
    await src.stop();
    const bad = await boxlite(['fork', src.id]);
    expect(bad.code).not.toBe(0);
    expect(bad.stderr).toMatch(/InvalidState|not running/);
    expect(bad.stderr).not.toMatch(/\n\s+at /);
    await runtime.remove(src.id, true);
    expect(isAlive(qs)).toBe(false);
  });
});
