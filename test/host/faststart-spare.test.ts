// The spare shim of fast start (src/runtime/faststart.ts): a shim process started ahead of the
// next restored box. It must run a box exactly as a freshly spawned shim does, be handed over
// once, never to a detached box or after the SDK's environment changed, and go away with the
// SDK (its stdin ends without a config) or on discard.
import { once } from 'node:events';
import fs from 'node:fs';
import net from 'node:net';
import path from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { discardSpareShim, spawnSpareShim, takeSpareShim } from '../../dist/runtime/faststart.js';
import { launchShim, ShimClient } from '../../dist/shim/client.js';
import { discardPreloadedNetWorker, preloadNetWorker, takePreloadedNetWorker } from '../../dist/shim/net-preload.js';
import { NetworkSupervisor } from '../../dist/shim/network.js';
import type { NetConfig } from '../../src/net/types.js';
import type { ShimConfig } from '../../src/shim/config.js';
import { agentPeer, boxDir, run, shimConfig, waitGone } from './helpers.js';

const dirs: string[] = [];
afterEach(() => {
  discardSpareShim();
  delete process.env.BOXLITE_TEST_SPARE_ENV;
  for (const d of dirs.splice(0)) fs.rmSync(d, { recursive: true, force: true });
});
const dir = () => {
  const d = boxDir();
  dirs.push(d);
  return d;
};
const exitOf = async (child: NonNullable<ReturnType<typeof spawnSpareShim>>) =>
  child.exitCode !== null || child.signalCode !== null ? [child.exitCode, child.signalCode] : once(child, 'exit');

describe('spare shim', () => {
  it('runs a box like a fresh shim, with its start-up marks, and is handed over once', async () => {
    const home = dir();
    const spawned = spawnSpareShim(home);
    expect(spawned?.pid).toBeGreaterThan(0);
    expect(spawnSpareShim(home)).toBe(spawned); // one spare at a time
    await new Promise((r) => setTimeout(r, 300)); // let it load: it idles on its stdin
    const config = shimConfig(dir(), agentPeer());
    const child = takeSpareShim(config);
    expect(child).toBe(spawned);
    expect(takeSpareShim(config)).toBeUndefined();
    const launched = await launchShim(config, child);
    expect(launched.state.shimPid).toBe(spawned!.pid);
    // Loaded before the config came: every mark after `config` is of this box's start.
    const marks = launched.state.timings!.marks;
    expect(marks.loaded).toBeLessThan(marks.config!);
    expect(marks.ready).toBeGreaterThanOrEqual(marks.hello!);
    const client = await ShimClient.connect(path.join(config.boxDir, 'control.sock'));
    const ran = await run(client, ['echo', 'from-spare']);
    expect(ran.stdout.toString()).toBe('from-spare\n');
    expect(ran.exit).toMatchObject({ code: 0 });
    await client.request('stop').catch(() => undefined);
    client.close();
    launched.watchdog?.destroy();
    expect(await waitGone(launched.state.shimPid, 5_000)).toBe(true);
  });

  it('is not used for a detached box or after the environment changed: it is ended instead', async () => {
    const home = dir();
    const a = spawnSpareShim(home)!;
    expect(takeSpareShim({ ...shimConfig(dir(), agentPeer()), detach: true } as ShimConfig)).toBeUndefined();
    expect((await exitOf(a))[1]).toBe('SIGKILL');
    const b = spawnSpareShim(home)!;
    process.env.BOXLITE_TEST_SPARE_ENV = '1';
    expect(takeSpareShim(shimConfig(dir(), agentPeer()))).toBeUndefined();
    expect((await exitOf(b))[1]).toBe('SIGKILL');
    // The fast-start switches are the SDK's own: toggling them keeps the spare.
    delete process.env.BOXLITE_TEST_SPARE_ENV;
    const c = spawnSpareShim(home)!;
    const saved = process.env.BOXLITE_FAST_START;
    process.env.BOXLITE_FAST_START = saved ? '' : '1';
    try {
      expect(takeSpareShim(shimConfig(dir(), agentPeer()))).toBe(c);
    } finally {
      if (saved === undefined) delete process.env.BOXLITE_FAST_START;
      else process.env.BOXLITE_FAST_START = saved;
      c.kill('SIGKILL');
    }
  });

  it('exits by itself when its SDK goes away before it got a box, and on discard', async () => {
    const home = dir();
    const a = spawnSpareShim(home)!;
    const child = takeSpareShim(shimConfig(dir(), agentPeer()))!;
    child.stdin!.end(); // what the SDK process's exit does to the pipe
    expect(await exitOf(a)).toEqual([0, null]);
    const b = spawnSpareShim(home)!;
    discardSpareShim();
    expect((await exitOf(b))[1]).toBe('SIGKILL');
    expect(fs.readFileSync(path.join(home, 'templates', 'spare-shim.log'), 'utf8')).toBe('');
  });
});

function netConfig(d: string, over: Partial<NetConfig> = {}): NetConfig {
  return {
    link: {
      guestIp: '192.168.127.2',
      gatewayIp: '192.168.127.1',
      hostAliasIp: '192.168.127.254',
      prefixLength: 24,
      guestMac: '52:54:00:12:34:56',
      gatewayMac: '52:55:c0:a8:7f:01',
      mtu: 65520,
    },
    socketPath: path.join(d, 'net.sock'),
    tunnelSocketPath: path.join(d, 'tunnel.sock'),
    allowNet: [],
    secrets: [],
    ports: [],
    testSeam: { names: {}, dial: {} },
    ...over,
  };
}

describe('preloaded network worker', () => {
  it('takes its config as its first message and then serves as a worker started with it', async () => {
    const d = dir();
    preloadNetWorker();
    await new Promise((r) => setTimeout(r, 200)); // loaded, waiting for its init
    const logs: string[] = [];
    const fatal: Error[] = [];
    let taken = 0;
    const sup = new NetworkSupervisor(
      netConfig(d, { ports: [{ hostIp: '127.0.0.1', hostPort: 0, guestPort: 80, protocol: 'tcp' }] }),
      (l: string) => logs.push(l),
      (e: Error) => fatal.push(e),
      (init: Parameters<typeof takePreloadedNetWorker>[0]) => {
        const w = takePreloadedNetWorker(init);
        if (w) taken++;
        return w;
      },
    );
    await sup.start();
    try {
      expect(taken).toBe(1);
      expect(sup.ports[0]?.hostPort).toBeGreaterThan(0);
      // The tunnel socket answers: the stack runs in the preloaded thread.
      const t = net.connect(path.join(d, 'tunnel.sock'));
      t.write('HELLO\n');
      const answer = await new Promise<string>((r) => {
        let s = '';
        t.on('data', (c) => (s += c));
        t.on('close', () => r(s));
      });
      expect(answer).toBe('ERR expected "PORT <1-65535>"\n');
    } finally {
      await sup.stop();
    }
    expect(fatal).toEqual([]);
    expect(fs.existsSync(path.join(d, 'tunnel.sock'))).toBe(false);
  }, 30_000);

  it('a bad config through it fails the start with the NetworkError a fresh worker gives', async () => {
    const d = dir();
    const busy = net.createServer();
    await new Promise<void>((r) => busy.listen(0, '127.0.0.1', r));
    const port = (busy.address() as net.AddressInfo).port;
    try {
      preloadNetWorker();
      const sup = new NetworkSupervisor(netConfig(d, { ports: [{ hostIp: '127.0.0.1', hostPort: port, guestPort: 80, protocol: 'tcp' }] }), () => {}, () => {}, takePreloadedNetWorker);
      await expect(sup.start()).rejects.toThrow(`network error: host port ${port} is already in use (tcp, 127.0.0.1)`);
      await sup.stop();
    } finally {
      busy.close();
      discardPreloadedNetWorker();
    }
  }, 30_000);
});
