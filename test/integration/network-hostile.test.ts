import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, inject, it } from 'vitest';
import { JsBoxlite, type Box } from '../../dist/index.js';
import { run } from './helpers.js';
import { seamFor, startNetServers, writeSeam, type NetServers } from '../fixtures/netservers.js';

// A hostile guest (root, python raw and packet sockets; test/fixtures/hostile-guest.py) floods
// the box's own network stack: raw SYNs to many ports and addresses, bogus and fragmented
// Ethernet frames, DNS queries to the gateway and to another resolver, silent connections held
// open. The box must stay usable, the shim (which hosts the network worker) must not grow
// without bound, and the counters must show what was dropped and refused. Only loopback and
// the test seam are reachable: the policy allows api.allowed.test, which the seam maps to the
// shared test servers.

const SCRIPT = fs.readFileSync(path.join(import.meta.dirname, '..', 'fixtures', 'hostile-guest.py'), 'utf8');

let runtime: JsBoxlite;
let servers: NetServers;
let seamDir: string;
let box: Box;

/** VmRSS and VmHWM (peak) of a process, in KiB. */
function memory(pid: number): { rss: number; hwm: number } {
  const status = fs.readFileSync(`/proc/${pid}/status`, 'utf8');
  const kib = (key: string) => Number(new RegExp(`^${key}:\\s+(\\d+) kB`, 'm').exec(status)?.[1] ?? NaN);
  return { rss: kib('VmRSS'), hwm: kib('VmHWM') };
}

/** Open descriptors of a process (each NAT'd flow or upstream connection is one). */
function fdCount(pid: number): number {
  return fs.readdirSync(`/proc/${pid}/fd`).length;
}

function shimPid(id: string): number {
  const state = JSON.parse(fs.readFileSync(path.join(inject('home'), 'boxes', id, 'shim.json'), 'utf8')) as { shimPid: number };
  return state.shimPid;
}

/** The worker's counters as inspect shows them (box.inspect().networkStats.counters) + metrics(). */
async function counters(b: Box): Promise<Record<string, number>> {
  const m = await b.metrics();
  const ins = (await b.inspect()) as unknown as { networkStats?: { counters?: Record<string, number>; snapshot?: unknown } };
  return {
    tcpErrors: m.networkTcpErrors ?? NaN,
    tcpConnections: m.networkTcpConnections ?? NaN,
    ...(ins.networkStats?.counters ?? {}),
  };
}

beforeAll(async () => {
  servers = await startNetServers({ label: 'hostile' });
  seamDir = fs.mkdtempSync(path.join(os.tmpdir(), 'boxlite-hostile-'));
  process.env.BOXLITE_INTERNAL_NET_SEAM = writeSeam(seamDir, seamFor(servers));
  runtime = new JsBoxlite({ homeDir: inject('home') });
  box = await newBox();
});

let boxes = 0;
async function newBox(): Promise<Box> {
  const b = await runtime.create(
    {
      rootfsPath: path.join(inject('root'), '.cache', 'images', 'python'),
      network: { outbound: { mode: 'enabled', allowNet: ['api.allowed.test'] } },
    },
    `hostile-${process.pid}-${boxes++}`,
  );
  await b.start();
  return b;
}

afterAll(async () => {
  if (box) await runtime.remove(box.id, true).catch(() => {});
  delete process.env.BOXLITE_INTERNAL_NET_SEAM;
  await servers?.close();
  if (seamDir) fs.rmSync(seamDir, { recursive: true, force: true });
});

const PROBE = 'import urllib.request as u; print(u.urlopen("http://api.allowed.test/ok", timeout=20).read().decode())';

interface Snapshot {
  stack: { tcpFlows: number; halfOpen: number; udpFlows: number };
  flows: { blocked: Record<string, number>; dns: { rateLimited: number; queries: number }; flows: { tcp: number; peeking: number; udp: number } };
  memory: { heapUsed: number };
}

async function snapshot(b: Box): Promise<Snapshot> {
  const ins = (await b.inspect()) as unknown as { networkStats?: { snapshot?: Snapshot } };
  return ins.networkStats!.snapshot!;
}

const N = { syn: 20_000, frames: 20_000, dns: 20_000, udp: 5_000, hold: 400 };

/**
 * Runs the flood in the guest under a time limit. `stalled`: the guest's own NIC stopped
 * transmitting (its virtio TX ring stays full). That is QEMU 7.2's virtio-net, not the stack: under
 * a flood of tiny frames its TX path can stop taking descriptors while the stack's socket is
 * empty and readable (docs/network.md, "Known limits"). It only cuts the flooding box off its own
 * network; the host-side bounds below must hold either way.
 */
async function hostile(b: Box, ...phases: Array<keyof typeof N>): Promise<Record<string, number> & { stalled?: boolean }> {
  const t0 = Date.now();
  const r = await run(b, 'timeout', ['45', 'python3', '-c', SCRIPT, ...phases.flatMap((p) => [p, String(N[p])])]);
  if (r.exitCode === 124 || r.exitCode === 143 || r.exitCode === -15) {
    console.log(`hostile guest: the guest NIC stalled during ${phases.join(',')} (QEMU virtio-net TX), after ${Date.now() - t0} ms`);
    return { stalled: true };
  }
  expect(r.exitCode, r.stderr).toBe(0);
  console.log(`hostile guest sent ${r.stdout.trim()} in ${Date.now() - t0} ms`);
  return JSON.parse(r.stdout) as Record<string, number>;
}

/** An exec answers and an allowed name still resolves and serves. */
async function usable(b: Box): Promise<void> {
  const t1 = Date.now();
  const echo = await run(b, 'echo', ['alive']);
  expect(echo.stdout).toBe('alive\n');
  const probe = await run(b, 'python3', ['-c', PROBE]);
  expect(probe.exitCode, probe.stderr).toBe(0);
  expect(JSON.parse(probe.stdout).url).toBe('/ok');
  console.log(`exec + allowed fetch: ${Date.now() - t1} ms`);
}

/** The allowed fetch, bounded: false when the guest's NIC no longer transmits. */
async function nicAlive(b: Box): Promise<boolean> {
  const r = await run(b, 'timeout', ['15', 'python3', '-c', PROBE]);
  return r.exitCode === 0;
}

/** What must hold even when the guest's NIC stalled: the shim is bounded and the box answers. */
async function assertHostBounded(b: Box, pid: number, before: { rss: number }): Promise<void> {
  const after = memory(pid);
  console.log(`shim RSS ${before.rss} → ${after.rss} KiB (peak ${after.hwm})`);
  expect(after.hwm - before.rss).toBeLessThan(160 * 1024);
  expect((await run(b, 'echo', ['still alive'])).stdout).toBe('still alive\n');
  const c = await counters(b);
  expect(c.droppedFrames + c.tcpErrors + c.dnsQueries).toBeGreaterThan(0);
}

describe('a hostile guest', () => {
  it('floods SYNs, bogus frames, DNS and held connections: the box stays usable, memory bounded, drops counted', async () => {
    // Warm the path first so the baseline includes a used stack.
    await usable(box);
    const pid = shimPid(box.id);
    const before = memory(pid);
    const c0 = await counters(box);

    const sent = await hostile(box, 'syn', 'frames', 'dns', 'hold');
    if (sent.stalled) return assertHostBounded(box, pid, before);
    expect(sent.syn).toBeGreaterThan(N.syn * 0.9);
    expect(sent.frames).toBeGreaterThan(N.frames * 0.9);
    expect(sent.dns).toBeGreaterThan(N.dns * 0.9);
    // The held connections ran into the cap on connections being peeked (256), not into memory.
    expect(sent.held).toBe(N.hold);
    expect(sent.connected).toBeLessThanOrEqual(256);
    const snap = await snapshot(box);
    console.log(`after the flood: sent ${JSON.stringify(sent)}; stack ${JSON.stringify(snap.stack)}; blocked ${JSON.stringify(snap.flows.blocked)}`);
    // A NIC that stalled during the last phase (see hostile()) lets non-blocking connects "start"
    // without a SYN ever leaving the guest: nothing reached the stack, so only the host bounds hold.
    if (sent.connected === 0 && !(await nicAlive(box))) {
      console.log('hostile guest: the guest NIC stalled during the flood (no held connection reached the stack)');
      return assertHostBounded(box, pid, before);
    }
    expect(snap.flows.blocked.limit ?? 0).toBeGreaterThanOrEqual(N.hold - 256);
    expect(snap.flows.dns.rateLimited).toBeGreaterThan(N.dns / 2);
    expect(snap.stack.halfOpen).toBeLessThanOrEqual(256);

    await usable(box);

    const mid = memory(pid);
    const c1 = await counters(box);
    const delta = Object.fromEntries(Object.keys(c1).map((k) => [k, (c1[k] ?? 0) - (c0[k] ?? 0)]));
    console.log(`counter deltas ${JSON.stringify(delta)}; snapshot ${JSON.stringify({ stack: snap.stack, flows: snap.flows.flows, blocked: snap.flows.blocked, dns: snap.flows.dns })}`);
    // What the stack refused shows: bogus frames dropped, SYNs refused or blocked, DNS counted.
    expect(delta.droppedFrames).toBeGreaterThan(N.frames * 0.8);
    expect(delta.tcpErrors).toBeGreaterThan(N.syn * 0.5);
    expect(delta.blockedFlows).toBeGreaterThan(N.syn * 0.2);
    expect(delta.dnsQueries).toBeGreaterThan(N.dns * 0.9);

    // Bounded: a second, identical flood must not grow the shim again the way an unbounded table
    // would (the first one may still have grown the heap to its working size).
    const again = await hostile(box, 'syn', 'frames', 'dns', 'hold');
    if (again.stalled) return assertHostBounded(box, pid, before);
    const after = memory(pid);
    console.log(`shim RSS ${before.rss} → ${mid.rss} → ${after.rss} KiB (peak ${after.hwm}), worker heap ${Math.round((await snapshot(box)).memory.heapUsed / 1024)} KiB`);
    expect(after.hwm - before.rss).toBeLessThan(160 * 1024);
    expect(after.rss - mid.rss).toBeLessThan(32 * 1024);
    expect((await run(box, 'echo', ['still alive'])).stdout).toBe('still alive\n');
  });

  it('floods UDP to thousands of destinations: host sockets stay capped and DNS keeps working', async () => {
    // Always a fresh box: the floods above may have stalled the first box's NIC after their last
    // check (QEMU's virtio-net TX, see hostile()), which only an allowed fetch would notice.
    await runtime.remove(box.id, true);
    box = await newBox();
    // Resolves api.allowed.test in this box, so its address is pinned for the UDP echo below.
    await usable(box);
    const pid = shimPid(box.id);
    const fds0 = fdCount(pid);
    const sent = await hostile(box, 'udp');
    if (sent.stalled) return assertHostBounded(box, pid, memory(pid));
    expect(sent.udp).toBeGreaterThan(N.udp * 0.9);
    // Every tenth datagram went to the pinned echo (198.18.0.10:7): some came back.
    expect(sent.udpEchoed).toBeGreaterThan(0);
    const snap = await snapshot(box);
    const fds1 = fdCount(pid);
    console.log(`udp flood: fds ${fds0} → ${fds1}; flows ${JSON.stringify(snap.flows.flows)}, stack ${JSON.stringify(snap.stack)}`);
    // 4 500 distinct destinations, each a NAT'd flow with a host socket: at most 256 at once.
    expect(snap.flows.flows.udp).toBeLessThanOrEqual(256);
    expect(snap.stack.udpFlows).toBeLessThanOrEqual(1024);
    expect(fds1 - fds0).toBeLessThan(300);
    // The box's own DNS (a new UDP flow per query) must not be locked out by the flood.
    await usable(box);
  });
});
