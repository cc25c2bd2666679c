import { describe, expect, inject, it } from 'vitest';
import { InvalidStateError, JsBoxlite, type Box } from '../../dist/index.js';
import { boxlite, run } from './helpers.js';

// autoStop, autoDelete, healthCheck and pause/resume on real VMs (small values; one VM at a time).
const runtime = new JsBoxlite({ homeDir: inject('home') });
const image = () => inject('image');
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

async function waitFor<T>(what: string, probe: () => Promise<T>, ok: (v: T) => boolean, ms: number): Promise<T> {
  const deadline = Date.now() + ms;
  let last: T = await probe();
  while (!ok(last)) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}; last: ${JSON.stringify(last)}`);
    await sleep(200);
    last = await probe();
  }
  return last;
}

async function withBox(opts: Parameters<JsBoxlite['create']>[0], fn: (box: Box) => Promise<void>): Promise<void> {
  const box = await runtime.create({ rootfsPath: image(), memoryMib: 256, ...opts });
  try {
    await fn(box);
  } finally {
    await runtime.remove(box.id, true).catch(() => undefined);
  }
}

const status = async (box: Box) => (await runtime.getInfo(box.id))?.state.status;

describe('autoStop and autoDelete', () => {
  it('an idle box stops itself after autoStop seconds, not while an exec runs; the next exec boots it again', async () => {
    await withBox({ autoStop: 3 }, async (box) => {
      expect((await box.info()).autoStop).toBe(3);
      // An execution longer than the idle time keeps it up.
      const t0 = Date.now();
      expect(await run(box, 'sh', ['-c', 'sleep 5; echo done'])).toMatchObject({ exitCode: 0, stdout: 'done\n' });
      expect(Date.now() - t0).toBeGreaterThan(4_500);
      expect(await status(box)).toBe('running');
      // Then idle: stopped by its own shim within autoStop (+ the poll and the power-off).
      const idleFrom = Date.now();
      await waitFor('the idle box to stop', () => status(box), (s) => s === 'stopped', 20_000);
      const idleMs = Date.now() - idleFrom;
      expect(idleMs).toBeGreaterThan(2_500);
      // Access boots it again (autoResume), and it is the same disk.
      expect(await run(box, 'sh', ['-c', 'echo again'])).toMatchObject({ exitCode: 0, stdout: 'again\n' });
      expect(await status(box)).toBe('running');
    });
  });

  it('autoDelete > 0 removes the box when it stops, by stop() or by autoStop', async () => {
    const a = await runtime.create({ rootfsPath: image(), memoryMib: 256, autoDelete: 60 });
    expect((await a.info()).autoDelete).toBe(60);
    expect(await run(a, 'true')).toMatchObject({ exitCode: 0 });
    await a.stop();
    expect(await runtime.getInfo(a.id)).toBeNull();

    const b = await runtime.create({ rootfsPath: image(), memoryMib: 256, autoDelete: 1, autoStop: 2 });
    try {
      expect(await run(b, 'true')).toMatchObject({ exitCode: 0 });
      await waitFor('the auto-stopped box to be removed', () => runtime.getInfo(b.id), (i) => i === null, 25_000);
    } finally {
      await runtime.remove(b.id, true).catch(() => undefined);
    }
  });
});

describe('healthCheck', () => {
  it('goes Starting → Healthy, Unhealthy while the VM does not answer (QEMU SIGSTOPped), Healthy again; None once stopped', async () => {
    await withBox({ healthCheck: { interval: 1, timeout: 1, retries: 2, startPeriod: 0 } }, async (box) => {
      expect((await box.info()).healthStatus).toEqual({ state: 'None', failures: 0 });
      await box.start();
      const healthy = await waitFor('Healthy', async () => (await box.info()).healthStatus, (h) => h.state === 'Healthy', 20_000);
      expect(healthy.failures).toBe(0);
      expect(Date.now() - Date.parse(healthy.lastCheck!)).toBeLessThan(10_000);
      const pid = (await box.info()).state.pid!;
      process.kill(pid, 'SIGSTOP');
      try {
        const sick = await waitFor('Unhealthy', async () => (await box.info()).healthStatus, (h) => h.state === 'Unhealthy', 20_000);
        expect(sick.failures).toBeGreaterThanOrEqual(2);
      } finally {
        process.kill(pid, 'SIGCONT');
      }
      await waitFor('Healthy again', async () => (await box.info()).healthStatus, (h) => h.state === 'Healthy' && h.failures === 0, 20_000);
      expect(await run(box, 'echo', ['ok'])).toMatchObject({ exitCode: 0, stdout: 'ok\n' });
      await box.stop();
      expect((await (await runtime.get(box.id))!.info()).healthStatus).toEqual({ state: 'None', failures: 0 });
    });
  });
});

describe('pause and resume', () => {
  it('pause freezes the VM (guest time stands still), exec is refused with InvalidState, resume carries on', async () => {
    await withBox({}, async (box) => {
      await box.start();
      const uptime = async () => Number((await run(box, 'cut', ['-d', ' ', '-f', '1', '/proc/uptime'])).stdout);
      const before = await uptime();
      await box.pause();
      const pausedAt = Date.now();
      expect((await box.info()).state).toMatchObject({ status: 'paused', running: false });
      expect((await runtime.listInfo()).find((i) => i.id === box.id)?.state.status).toBe('paused');
      const refused = await box.exec('true').catch((e: unknown) => e);
      expect(refused).toBeInstanceOf(InvalidStateError);
      expect((refused as Error).message).toMatch(/is paused; resume\(\) it first/);
      await box.pause(); // idempotent
      await sleep(3_000);
      // The CLI resumes it (any process may).
      const resumed = await boxlite(['resume', box.id]);
      expect(resumed).toMatchObject({ code: 0, stdout: `${box.id}\n` });
      const wall = (Date.now() - pausedAt) / 1000;
      expect(await status(box)).toBe('running');
      const after = await uptime();
      // The guest clock did not run during the pause (QMP stop halts the virtual clock).
      expect(after - before).toBeLessThan(wall - 2);
      expect(await run(box, 'echo', ['alive'])).toMatchObject({ exitCode: 0, stdout: 'alive\n' });
    });
  });

  it('stop of a paused box thaws it and powers it off in time; pause of a stopped box is InvalidState', async () => {
    await withBox({}, async (box) => {
      await box.start();
      await box.pause();
      const t0 = Date.now();
      await box.stop();
      // Under the shim's 10 s graceful bound: the guest powered off, it was not killed after the wait.
      expect(Date.now() - t0).toBeLessThan(9_000);
      expect(await status(box)).toBe('stopped');
      const again = (await runtime.get(box.id))!;
      const err = await again.pause().catch((e: unknown) => e);
      expect(err).toBeInstanceOf(InvalidStateError);
      expect((err as Error).message).toMatch(/is stopped: only a running box can be paused/);
      const cli = await boxlite(['pause', box.id]);
      expect(cli.code).toBe(1);
      expect(cli.stderr).toMatch(/only a running box can be paused/);
    });
  });
});
