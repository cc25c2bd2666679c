import fs from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { ConfigError, EngineError, TimeoutError } from '../../src/errors/index.js';
import { healthStatusOf, lifecycleConfig } from '../../src/runtime/lifecycle.js';
import { normalizeBoxOptions } from '../../src/runtime/options.js';
import { parseControlRequest } from '../../src/shim/control.js';
import { HealthMonitor, IdleWatch, type HealthStatus } from '../../src/shim/lifecycle.js';
import { QmpClient } from '../../src/shim/qmp.js';
import { vmPlan } from '../../src/runtime/box.js';
import { qemuArgs } from '../../src/vmm/qemu.js';

/** A manual clock: timers fire only when advance() passes them. */
class FakeClock {
  t = 1_000_000;
  private timers: Array<{ at: number; fn: () => void; id: number }> = [];
  private nextId = 1;
  now = () => this.t;
  setTimeout = (fn: () => void, ms: number) => {
    const id = this.nextId++;
    this.timers.push({ at: this.t + ms, fn, id });
    return id;
  };
  clearTimeout = (id: unknown) => {
    this.timers = this.timers.filter((x) => x.id !== id);
  };
  /** Moves time on, firing due timers in order (and the ones they schedule). */
  async advance(ms: number): Promise<void> {
    const end = this.t + ms;
    for (;;) {
      this.timers.sort((a, b) => a.at - b.at);
      const next = this.timers[0];
      if (!next || next.at > end) break;
      this.timers.shift();
      this.t = next.at;
      next.fn();
      // Let promise continuations of the fired timer run before the next one.
      for (let i = 0; i < 5; i++) await Promise.resolve();
    }
    this.t = end;
  }
}

describe('autoStop (IdleWatch)', () => {
  it('stops after the idle time without a break, and a busy period starts the count again', async () => {
    const clock = new FakeClock();
    let busy = false;
    let fired = 0;
    const w = new IdleWatch(10_000, () => busy, () => fired++, clock);
    w.start();
    await clock.advance(6_000);
    busy = true;
    await clock.advance(6_000);
    busy = false;
    // Never before idleMs after the busy period ended (it may have lasted up to a poll past the
    // last poll that saw it), at most a poll (1 s here) later.
    await clock.advance(10_500);
    expect(fired).toBe(0);
    await clock.advance(1_000);
    expect(fired).toBe(1);
    await clock.advance(60_000);
    expect(fired).toBe(1);
  });

  it('never fires once stopped', async () => {
    const clock = new FakeClock();
    let fired = 0;
    const w = new IdleWatch(1_000, () => false, () => fired++, clock);
    w.start();
    w.stop();
    await clock.advance(10_000);
    expect(fired).toBe(0);
  });
});

describe('healthCheck (HealthMonitor)', () => {
  const spec = { interval: 1, timeout: 0.5, retries: 2, startPeriod: 3 };

  function monitor(probe: () => Promise<unknown>, skip = () => false) {
    const clock = new FakeClock();
    const seen: HealthStatus[] = [];
    const m = new HealthMonitor(spec, probe, (s) => seen.push(s), skip, clock);
    return { clock, seen, m };
  }

  it('starts Starting, becomes Healthy on a pass, Unhealthy after `retries` failures, Healthy again on a pass', async () => {
    let ok = true;
    const { clock, seen, m } = monitor(() => (ok ? Promise.resolve() : Promise.reject(new Error('no'))));
    m.start();
    expect(seen[0]).toEqual({ state: 'Starting', failures: 0 });
    await clock.advance(1_000);
    expect(m.status).toMatchObject({ state: 'Healthy', failures: 0 });
    expect(m.status.lastCheck).toBe(new Date(clock.t).toISOString());
    ok = false;
    await clock.advance(1_000);
    expect(m.status).toMatchObject({ state: 'Healthy', failures: 1 });
    await clock.advance(1_000);
    expect(m.status).toMatchObject({ state: 'Unhealthy', failures: 2 });
    await clock.advance(1_000);
    expect(m.status).toMatchObject({ state: 'Unhealthy', failures: 3 });
    ok = true;
    await clock.advance(1_000);
    expect(m.status).toMatchObject({ state: 'Healthy', failures: 0 });
    m.stop();
  });

  it('does not count failures during the start period while Starting', async () => {
    const { clock, m } = monitor(() => Promise.reject(new Error('booting')));
    m.start();
    await clock.advance(2_000);
    expect(m.status).toMatchObject({ state: 'Starting', failures: 0 });
    await clock.advance(1_000);
    expect(m.status).toMatchObject({ state: 'Starting', failures: 1 });
    await clock.advance(1_000);
    expect(m.status).toMatchObject({ state: 'Unhealthy', failures: 2 });
    m.stop();
  });

  it('a probe that does not answer within the timeout is a failure', async () => {
    const { clock, m } = monitor(() => new Promise(() => {}));
    m.start();
    for (let i = 0; i < 12; i++) await clock.advance(500);
    expect(m.status.state).toBe('Unhealthy');
    m.stop();
  });

  it('skips checks while paused', async () => {
    let probes = 0;
    const { clock, m } = monitor(
      () => {
        probes++;
        return Promise.resolve();
      },
      () => true,
    );
    m.start();
    await clock.advance(5_000);
    expect(probes).toBe(0);
    expect(m.status.state).toBe('Starting');
    m.stop();
  });
});

describe('box options → shim config and info()', () => {
  it('carries autoStop and healthCheck to the shim only when set', () => {
    const o = normalizeBoxOptions({ rootfsPath: '/', autoStop: 30, healthCheck: { interval: 5, timeout: 2, retries: 3, startPeriod: 0 } }, 4);
    expect(lifecycleConfig(o)).toEqual({ lifecycle: { autoStopSecs: 30, healthCheck: { interval: 5, timeout: 2, retries: 3, startPeriod: 0 } } });
    expect(lifecycleConfig(normalizeBoxOptions({ rootfsPath: '/', autoStop: 0 }, 4))).toEqual({});
    expect(() => normalizeBoxOptions({ rootfsPath: '/', healthCheck: { interval: 0, timeout: 1, retries: 1, startPeriod: 0 } }, 4)).toThrow(
      /^configuration error: healthCheck\.interval must be > 0 seconds/,
    );
    expect(() => normalizeBoxOptions({ rootfsPath: '/', healthCheck: { interval: 1, timeout: 1, retries: 1 } as never }, 4)).toThrow(ConfigError);
  });

  it('autoDelete > 0 removes on stop as the reference local runtime does, and refuses detach', () => {
    expect(normalizeBoxOptions({ rootfsPath: '/', autoDelete: 30 }, 4)).toMatchObject({ autoDelete: 30, autoRemove: true });
    expect(normalizeBoxOptions({ rootfsPath: '/', autoDelete: 0, autoRemove: true }, 4)).toMatchObject({ autoDelete: 0, autoRemove: false });
    expect(() => normalizeBoxOptions({ rootfsPath: '/', autoDelete: 30, detach: true }, 4)).toThrow(
      /detach: true cannot be combined with auto-remove \(autoDelete: 30\).*set autoDelete: 0/,
    );
  });

  it('healthStatus is None without a check or a running box, the shim file otherwise', () => {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'boxlite-health-'));
    const healthFile = path.join(dir, 'health.json');
    const hc = { healthCheck: { interval: 1, timeout: 1, retries: 1, startPeriod: 0 } };
    try {
      expect(healthStatusOf({}, { healthFile }, true)).toEqual({ state: 'None', failures: 0 });
      expect(healthStatusOf(hc, { healthFile }, false)).toEqual({ state: 'None', failures: 0 });
      expect(healthStatusOf(hc, { healthFile }, true)).toEqual({ state: 'Starting', failures: 0 });
      fs.writeFileSync(healthFile, JSON.stringify({ state: 'Unhealthy', failures: 4, lastCheck: '2026-01-01T00:00:00.000Z' }));
      expect(healthStatusOf(hc, { healthFile }, true)).toEqual({ state: 'Unhealthy', failures: 4, lastCheck: '2026-01-01T00:00:00.000Z' });
      fs.writeFileSync(healthFile, JSON.stringify({ state: 'Bogus', failures: 1 }));
      expect(healthStatusOf(hc, { healthFile }, true).state).toBe('Starting');
    } finally {
      fs.rmSync(dir, { recursive: true, force: true });
    }
  });

  it('the VM plan gets a QMP socket, and QEMU a QMP monitor on it', () => {
    const o = normalizeBoxOptions({ rootfsPath: '/' }, 4);
    const plan = vmPlan(o, { disk: '/b/disk.qcow2', agentSocket: '/b/agent.sock', consoleLog: '/b/c.log', qmpSocket: '/b/qmp.sock' }, { kernelPath: '/k', initrdPath: '/i' }, 'tcg');
    expect(plan.controlSocketPath).toBe('/b/qmp.sock');
    const args = qemuArgs({ ...plan, boot: { ...plan.boot, tscKhz: null } }).args;
    expect(args.join(' ')).toContain('-chardev socket,id=qmp,path=/b/qmp.sock,server=on,wait=off -mon chardev=qmp,mode=control');
    expect(vmPlan(o, { disk: '/d', agentSocket: '/a', consoleLog: '/c' }, { kernelPath: '/k', initrdPath: '/i' }, 'tcg').controlSocketPath).toBeUndefined();
  });

  it('pause and resume are control ops', () => {
    expect(parseControlRequest(Buffer.from('{"op":"pause"}'))).toEqual({ op: 'pause' });
    expect(parseControlRequest(Buffer.from('{"op":"resume"}'))).toEqual({ op: 'resume' });
  });
});

describe('QmpClient', () => {
  let server: net.Server | undefined;
  let dir: string | undefined;
  afterEach(() => {
    server?.close();
    if (dir) fs.rmSync(dir, { recursive: true, force: true });
  });

  /** A QMP server that answers like QEMU: greeting, capabilities, then per-command replies (with events mixed in). */
  async function fakeQemu(answer: (cmd: string) => object | null): Promise<{ socketPath: string; received: string[] }> {
    dir = fs.mkdtempSync(path.join(os.tmpdir(), 'boxlite-qmp-'));
    const socketPath = path.join(dir, 'qmp.sock');
    const received: string[] = [];
    server = net.createServer((s) => {
      s.write(JSON.stringify({ QMP: { version: { qemu: { major: 7 } }, capabilities: [] } }) + '\r\n');
      let buf = '';
      s.on('data', (d) => {
        buf += d.toString();
        let nl: number;
        while ((nl = buf.indexOf('\n')) >= 0) {
          const msg = JSON.parse(buf.slice(0, nl)) as { execute: string };
          buf = buf.slice(nl + 1);
          received.push(msg.execute);
          if (msg.execute === 'qmp_capabilities') {
            s.write('{"return": {}}\r\n');
            continue;
          }
          const reply = answer(msg.execute);
          if (reply) s.write(JSON.stringify({ event: 'STOP', timestamp: {} }) + '\r\n' + JSON.stringify(reply) + '\r\n');
        }
      });
    });
    await new Promise<void>((r) => server!.listen(socketPath, r));
    return { socketPath, received };
  }

  it('negotiates, runs commands in order, skips events and types errors', async () => {
    const { socketPath, received } = await fakeQemu((cmd) =>
      cmd === 'bogus' ? { error: { class: 'CommandNotFound', desc: 'The command bogus has not been found' } } : { return: { cmd } },
    );
    const c = await QmpClient.connect(socketPath);
    const [a, b] = await Promise.all([c.execute('stop'), c.execute('cont')]);
    expect([a, b]).toEqual([{ cmd: 'stop' }, { cmd: 'cont' }]);
    const err = await c.execute('bogus').catch((e: unknown) => e);
    expect(err).toBeInstanceOf(EngineError);
    expect((err as Error).message).toMatch(/QMP bogus failed: The command bogus has not been found \(CommandNotFound\)/);
    expect(received).toEqual(['qmp_capabilities', 'stop', 'cont', 'bogus']);
    c.close();
  });

  it('a command QEMU does not answer is a Timeout, and the link is closed after it', async () => {
    const { socketPath } = await fakeQemu(() => null);
    const c = await QmpClient.connect(socketPath);
    const err = await c.execute('stop', undefined, 100).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(TimeoutError);
    await new Promise((r) => setTimeout(r, 20));
    expect(c.isClosed).toBe(true);
    await expect(c.execute('cont')).rejects.toThrow(/QMP connection closed/);
  });

  it('no socket: an Engine error naming it', async () => {
    await expect(QmpClient.connect('/nonexistent/qmp.sock')).rejects.toThrow(/cannot connect to QMP socket \/nonexistent\/qmp.sock/);
  });
});
