// Box handle lifecycle without a VM: a real box store, a stand-in shim process, and the runtime
// context faked only where a boot would start QEMU. What is checked: stop() is one operation per
// handle (a second call waits for the first), a stop during a boot waits for that boot, and
// SimpleBox.exec parses its variadic arguments as the reference does.
import { spawn } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { Box, SimpleBox } from '../../src/index.js';
import type { BoxRecordT as Rec } from '../../src/runtime/box.js';
import type { RuntimeContext } from '../../src/runtime/context.js';
import { normalizeBoxOptions } from '../../src/runtime/options.js';
import { BoxStore } from '../../src/store/boxes.js';
import { boxPaths } from '../../src/store/home.js';
import { isProcessAlive } from '../../src/util/fs.js';
import { EngineError } from '../../src/errors/index.js';

const dirs: string[] = [];
afterAll(() => {
  for (const d of dirs) fs.rmSync(d, { recursive: true, force: true });
});

function setup(options: Parameters<typeof normalizeBoxOptions>[0], guestAssets: RuntimeContext['guestAssets']) {
  const root = fs.mkdtempSync(path.join(os.tmpdir(), 'bl-handle-'));
  dirs.push(root);
  const store = new BoxStore(path.join(root, 'boxes'), path.join(root, 'db'));
  const record: Rec = {
    id: `01HANDLE${String(dirs.length).padStart(18, '0')}`,
    createdAt: new Date().toISOString(),
    options: normalizeBoxOptions(options),
    image: { config: {} } as Rec['image'],
  };
  store.create(record);
  const events: string[] = [];
  const ctx = {
    home: {} as RuntimeContext['home'],
    store,
    metrics: { boxesCreatedTotal: 0, boxesFailedTotal: 0, numRunningBoxes: 0, totalCommandsExecuted: 0, totalExecErrors: 0 },
    guestAssets,
    accelerator: () => ({ kind: 'tcg', reason: 'unit test' }),
    agentTimeoutMs: () => 1_000,
    onBoxStarted: () => events.push('started'),
    onBoxStopped: () => events.push('stopped'),
    onBoxFailed: () => events.push('failed'),
  } as unknown as RuntimeContext;
  return { store, record, box: new Box(ctx, record), events };
}

describe('Box.stop()', () => {
  it('a second stop() while the first runs resolves only once the VM is down', async () => {
    const { store, record, box } = setup({ rootfsPath: '/', autoRemove: true }, () => Promise.reject(new Error('no boot here')));
    // Stands in for the box's shim: stop() finds no control socket and waits for the pid to exit.
    const shim = spawn('sleep', ['0.7'], { stdio: 'ignore' });
    fs.writeFileSync(boxPaths(store.dir(record.id)).shimState, JSON.stringify({ shimPid: shim.pid }));
    expect(store.status(record.id).state.status).toBe('running');

    const first = box.stop();
    await box.stop();
    expect(isProcessAlive(shim.pid!)).toBe(false);
    await first;
    expect(store.get(record.id)).toBeUndefined(); // autoRemove
    // The reference's handle still reports its box stopped once removed (not 'unknown').
    expect((await box.info()).state).toMatchObject({ status: 'stopped', running: false });
    await expect(box.exec('true')).rejects.toMatchObject({ code: 'Stopped' });
  });

  it('a stop() during a boot waits for the boot, then removes an autoRemove box', async () => {
    let failBoot!: (err: Error) => void;
    const assets = new Promise<never>((_, reject) => (failBoot = reject));
    const { store, record, box, events } = setup({ rootfsPath: '/', autoRemove: true }, () => assets);
    const booting = box.start();
    let stopped = false;
    const stopping = box.stop().then(() => (stopped = true));
    await new Promise((r) => setTimeout(r, 50));
    expect(stopped).toBe(false); // the boot is still in flight: nothing is removed under it
    expect(store.get(record.id)).toBeDefined();
    await expect(box.exec('true')).rejects.toMatchObject({ code: 'Stopped' }); // no new work on a handle being stopped

    failBoot(new EngineError('no QEMU in a unit test'));
    await expect(booting).rejects.toMatchObject({ code: 'Engine' });
    await stopping;
    expect(store.get(record.id)).toBeUndefined();
    expect(fs.existsSync(store.dir(record.id))).toBe(false);
    expect((await box.info()).state.status).toBe('configured'); // never booted, as the reference reports it; not 'unknown'
    expect(events).toEqual(['stopped']); // a boot that never reached the shim is not a failed box
    await expect(box.start()).rejects.toMatchObject({ code: 'Stopped' });
  });

  it('stop() of a stopped box is a no-op that leaves the handle usable, as in the reference', async () => {
    const { store, record, box } = setup({ rootfsPath: '/' }, () => Promise.reject(new EngineError('no QEMU in a unit test')));
    store.writeState(record.id, { status: 'stopped' });
    await box.stop();
    // Not Stopped: the handle still boots the box (here the boot itself fails, with its own code).
    await expect(box.exec('true')).rejects.toMatchObject({ code: 'Engine' });
  });
});

describe('SimpleBox.exec argument parsing', () => {
  class Probe extends SimpleBox {
    calls: unknown[][] = [];
    protected override async _ensureBox(): Promise<Box> {
      const none = { next: async () => null };
      return {
        exec: async (...a: unknown[]) => {
          this.calls.push(a);
          return { stdout: async () => none, stderr: async () => none, wait: async () => ({ exitCode: 0 }) };
        },
      } as unknown as Box;
    }
  }
  const sent = async (run: (b: Probe) => Promise<unknown>) => {
    const b = new Probe({ runtime: {} as never });
    await run(b);
    const [cmd, args, env, tty, user, timeoutSecs, cwd] = b.calls[0]!;
    return { cmd, args, env, tty, user, timeoutSecs, cwd };
  };

  it('drops undefined arguments before taking a trailing object as the env', async () => {
    expect(await sent((b) => b.exec('echo', 'a', { K: 'v' } as never, undefined as never))).toMatchObject({
      args: ['a'],
      env: [['K', 'v']],
    });
    expect(await sent((b) => b.exec('echo', 'a', undefined as never, 'b'))).toMatchObject({ args: ['a', 'b'], env: undefined });
  });

  it('takes args, env and options in the array form', async () => {
    expect(await sent((b) => b.exec('ls', ['-l'], { A: '1' }, { cwd: '/tmp', user: 'u', timeoutSecs: 3 }))).toEqual({
      cmd: 'ls',
      args: ['-l'],
      env: [['A', '1']],
      tty: false,
      user: 'u',
      timeoutSecs: 3,
      cwd: '/tmp',
    });
  });
});
