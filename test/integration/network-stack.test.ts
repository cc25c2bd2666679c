import dgram from 'node:dgram';
import fs from 'node:fs';
import net from 'node:net';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, inject, it } from 'vitest';
import { JsBoxlite, SimpleBox, type Box, type BoxMetrics } from '../../dist/index.js';
import { run, scratchHome } from './helpers.js';
import { patternSha256, seamFor, startNetServers, writeSeam, type NetServers, withSeamFile } from '../fixtures/netservers.js';

// The box's own network stack end to end, in a real VM (python image: one boot carries every
// client and server the tests need). All traffic stays on 127.0.0.1: the seam maps the test
// names to the fixture servers, and host.boxlite.internal is host loopback.

const python = path.join(inject('root'), '.cache', 'images', 'python');
const MiB = 1024 * 1024;

let runtime: JsBoxlite;
let servers: NetServers;
let seamFile: string;

/** Runs python3 -c in the box; the script's last stdout line is JSON. */
async function py(box: Box, script: string): Promise<any> {
  const r = await run(box, 'python3', ['-c', script]);
  expect(r.stderr, `python failed (exit ${r.exitCode})`).toBe('');
  expect(r.exitCode).toBe(0);
  return JSON.parse(r.stdout.trim().split('\n').pop()!);
}

/** Polls fn until it resolves (a server just started in the guest takes a moment). */
async function poll<T>(fn: () => Promise<T>, ms = 30_000): Promise<T> {
  const deadline = Date.now() + ms;
  for (;;) {
    try {
      return await fn();
    } catch (err) {
      if (Date.now() > deadline) throw err;
      await new Promise((r) => setTimeout(r, 300));
    }
  }
}

function tcpExchange(port: number, send: string): Promise<string> {
  return new Promise((resolve, reject) => {
    const s = net.connect(port, '127.0.0.1');
    let data = '';
    s.setTimeout(10_000, () => s.destroy(new Error('timeout')));
    s.on('connect', () => s.end(send));
    s.on('data', (c) => (data += c));
    s.on('error', reject);
    s.on('close', () => (data ? resolve(data) : reject(new Error('closed without data'))));
  });
}

function udpExchange(port: number, payload: string): Promise<string> {
  return new Promise((resolve, reject) => {
    const s = dgram.createSocket('udp4');
    const timer = setTimeout(() => {
      s.close();
      reject(new Error('no UDP answer'));
    }, 2000);
    s.on('message', (m) => {
      clearTimeout(timer);
      s.close();
      resolve(m.toString());
    });
    s.send(payload, port, '127.0.0.1');
  });
}

const delta = (a: BoxMetrics, b: BoxMetrics, k: keyof BoxMetrics) => (b[k] as number) - (a[k] as number);

beforeAll(async () => {
  runtime = new JsBoxlite({ homeDir: inject('home') });
  servers = await startNetServers({ label: 'stack' });
  seamFile = writeSeam(scratchHome('seam-'), seamFor(servers));
});

afterAll(async () => {
  await servers?.close();
});

/** Boots with the seam in the environment (read when the box starts). */
async function startWithSeam(box: Box): Promise<void> {
  await withSeamFile(seamFile, () => box.start());
}

describe('the box network stack (python image)', () => {
  let box: Box;

  beforeAll(async () => {
    box = await runtime.create(
      {
        rootfsPath: python,
        ports: [
          { hostPort: 0, guestPort: 8080, protocol: 'tcp' },
          { hostPort: 0, guestPort: 8081, protocol: 'udp' },
        ],
      },
      `netstack-${process.pid}`,
    );
    await startWithSeam(box);
  }, 180_000);

  afterAll(async () => {
    if (box) await runtime.remove(box.id, true);
  });

  it('gives the guest the large MTU and reaches host loopback via host.boxlite.internal and the gateway', async () => {
    const r = await run(box, 'cat', ['/sys/class/net/eth0/mtu']);
    expect(r.stdout.trim()).toBe('65520');
    const out = await py(
      box,
      `
import http.client, json
res = []
for host in ('host.boxlite.internal', '192.168.127.1'):
    c = http.client.HTTPConnection(host, ${servers.http.port}, timeout=20)
    c.request('GET', '/via/' + host)
    res.append(json.loads(c.getresponse().read())['url'])
print(json.dumps(res))`,
    );
    expect(out).toEqual(['/via/host.boxlite.internal', '/via/192.168.127.1']);
  }, 60_000);

  it('publishes tcp and udp ports bound by the stack, host port 0 resolved', async () => {
    const ports = (await box.info()).network!.publishedPorts!;
    expect(ports.map((p) => [p.guestPort, p.protocol])).toEqual([
      [8080, 'tcp'],
      [8081, 'udp'],
    ]);
    for (const p of ports) expect(p.hostPort).toBeGreaterThan(0);
    const server = await box.exec('python3', [
      '-c',
      `
import socket, threading
def tcp():
    s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1); s.bind(('0.0.0.0', 8080)); s.listen(16)
    while True:
        c, a = s.accept()
        data = b''
        while True:
            d = c.recv(65536)
            if not d: break
            data += d
        c.sendall(b'tcp:' + data + b' from ' + a[0].encode()); c.close()
threading.Thread(target=tcp, daemon=True).start()
u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); u.bind(('0.0.0.0', 8081))
while True:
    d, a = u.recvfrom(2048); u.sendto(b'udp:' + d, a)`,
    ]);
    try {
      const [tcp, udp] = ports;
      // The guest sees the connection come from the gateway; the host client's FIN reaches it.
      expect(await poll(() => tcpExchange(tcp!.hostPort, 'ping'))).toBe('tcp:ping from 192.168.127.1');
      expect(await poll(() => udpExchange(udp!.hostPort, 'ping'))).toBe('udp:ping');
      // Two host clients on one udp port each get their own answers.
      const [a, b] = await Promise.all([udpExchange(udp!.hostPort, 'a'), udpExchange(udp!.hostPort, 'b')]);
      expect([a, b]).toEqual(['udp:a', 'udp:b']);
    } finally {
      await server.kill();
    }
  }, 90_000);

  it('moves 100 MiB each way intact (sha256), and the counters move by at least that much', async () => {
    const n = 100 * MiB;
    const before = await box.metrics();
    const down = await py(
      box,
      `
import http.client, hashlib, json, time
t = time.time()
c = http.client.HTTPConnection('api.allowed.test', 80, timeout=120)
c.request('GET', '/bytes/${n}')
r = c.getresponse(); h = hashlib.sha256(); total = 0
while True:
    d = r.read(1 << 20)
    if not d: break
    h.update(d); total += len(d)
print(json.dumps({'bytes': total, 'sha256': h.hexdigest(), 's': time.time() - t}))`,
    );
    expect(down.bytes).toBe(n);
    expect(down.sha256).toBe(patternSha256(n));
    const up = await py(
      box,
      `
import http.client, hashlib, json, time, os
block = hashlib.sha256(b'seed').digest() * 32768  # 1 MiB
h = hashlib.sha256()
for i in range(100): h.update(block)
t = time.time()
c = http.client.HTTPConnection('host.boxlite.internal', ${servers.http.port}, timeout=120)
def body():
    for i in range(100): yield block
c.request('POST', '/upload', body=body(), headers={'content-length': str(len(block) * 100)})
res = json.loads(c.getresponse().read())
print(json.dumps({'local': h.hexdigest(), 'remote': res['sha256'], 'bytes': res['bytes'], 's': time.time() - t}))`,
    );
    expect(up.bytes).toBe(n);
    expect(up.remote).toBe(up.local);
    const after = await box.metrics();
    expect(delta(before, after, 'networkBytesReceived')).toBeGreaterThanOrEqual(n);
    expect(delta(before, after, 'networkBytesSent')).toBeGreaterThanOrEqual(n);
    expect(delta(before, after, 'networkTcpConnections')).toBe(2);
    console.log(`100 MiB through the stack: download ${(n / MiB / down.s).toFixed(1)} MiB/s, upload ${(n / MiB / up.s).toFixed(1)} MiB/s`);
  }, 240_000);

  it('carries 200 concurrent connections, counted; a refused one is a TCP error', async () => {
    const before = await box.metrics();
    const out = await py(
      box,
      `
import socket, json
socks = [socket.create_connection(('host.boxlite.internal', ${servers.tcpEcho.port}), timeout=60) for i in range(200)]
for i, s in enumerate(socks): s.sendall(b'conn-%d;' % i)
ok = 0
for i, s in enumerate(socks):
    want = b'conn-%d;' % i; got = b''
    while len(got) < len(want):
        d = s.recv(64)
        if not d: break
        got += d
    ok += got == want
for s in socks: s.close()
try:
    socket.create_connection(('host.boxlite.internal', 1), timeout=20); refused = False
except ConnectionRefusedError:
    refused = True
print(json.dumps({'ok': ok, 'refused': refused}))`,
    );
    expect(out).toEqual({ ok: 200, refused: true });
    const after = await box.metrics();
    expect(delta(before, after, 'networkTcpConnections')).toBe(200);
    expect(delta(before, after, 'networkTcpErrors')).toBeGreaterThanOrEqual(1);
    expect(delta(before, after, 'networkBytesSent')).toBeGreaterThanOrEqual(200 * 'conn-0;'.length);
  }, 120_000);

  it('tunnels: connect() is one byte stream with half-close; forward() serves a local port; errors are clear', async () => {
    const server = await box.exec('python3', [
      '-c',
      `
import socket, threading
s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1); s.bind(('0.0.0.0', 9000)); s.listen(8)
def serve(c):
    data = b''
    while True:
        d = c.recv(65536)
        if not d: break
        data += d
    c.sendall(data.upper()); c.close()
while True:
    c, a = s.accept(); threading.Thread(target=serve, args=(c,), daemon=True).start()`,
    ]);
    try {
      const simple = box.network;
      const conn = await poll(async () => {
        const t = await simple.tunnel(9000);
        expect(t.uri()).toBeNull();
        const c = await t.connect();
        await expect(t.connect()).rejects.toThrow(/already used/);
        return c;
      });
      expect(await conn.write(Buffer.from('hello tunnel'))).toBe(12);
      await conn.shutdownWrite();
      let got = '';
      for (;;) {
        const chunk = await conn.read(4);
        if (!chunk.length) break;
        expect(chunk.length).toBeLessThanOrEqual(4);
        got += chunk.toString();
      }
      expect(got).toBe('HELLO TUNNEL');
      await conn.close();

      const fwd = await (await box.network.tunnel(9000)).forward({ type: 'tcp', port: 0 });
      const addr = fwd.localAddr();
      expect(addr).toMatchObject({ type: 'tcp', host: '127.0.0.1' });
      const port = (addr as { port: number }).port;
      expect(await Promise.all([tcpExchange(port, 'one'), tcpExchange(port, 'two')])).toEqual(['ONE', 'TWO']);
      const waited = fwd.wait();
      await fwd.close();
      await waited;

      // Nothing listens on 9001: the guest's RST becomes the tunnel's error.
      await expect((await box.network.tunnel(9001)).connect()).rejects.toThrow(/^network error: tunnel to guest port 9001/);
    } finally {
      await server.kill();
    }
  }, 90_000);

  it('shows the stack in inspect (counters, live flows)', async () => {
    const ins = await box.inspect();
    expect(ins.networkStats?.counters.tcpConnections).toBeGreaterThanOrEqual(202);
    expect(ins.networkStats?.snapshot).toMatchObject({ stack: expect.any(Object) });
  }, 30_000);
});

describe('a network worker crash (busybox)', () => {
  it('ends the box with a network error instead of leaving it hanging', async () => {
    const box = await runtime.create({ rootfsPath: inject('image') }, `netcrash-${process.pid}`);
    try {
      await startWithSeam(box);
      const sleeper = await box.exec('sleep', ['120']);
      const tunnelSock = path.join((await box.inspect()).paths.dir, 'tunnel.sock');
      expect(fs.existsSync(tunnelSock)).toBe(true);
      // Test seam only: the worker throws an uncaught error, as a stack bug would.
      const s = net.connect(tunnelSock);
      s.on('error', () => {});
      s.write('CRASH\n');
      const end = await sleeper.wait().then(
        (r) => r.errorMessage ?? `exit ${r.exitCode}`,
        (err: Error) => err.message,
      );
      expect(end).toMatch(/network error: the box's network stack crashed/);
      s.destroy();
      await poll(async () => {
        const st = (await box.info()).state.status;
        if (st === 'running') throw new Error('still running');
      }, 20_000);
    } finally {
      await runtime.remove(box.id, true);
    }
  }, 120_000);
});

describe('SimpleBox.network', () => {
  it('tunnel(port) validates the port as the reference does', async () => {
    const sb = new SimpleBox({ rootfsPath: inject('image'), runtime });
    await expect(sb.tunnel(0)).rejects.toThrow(RangeError);
    await expect(sb.network.tunnel(65536)).rejects.toThrow('port must be an integer between 1 and 65535');
  });
});
