import fs from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { FrameError, FrameReader, MAX_FRAME, frameHeader, parseTunnelHeader } from '../../src/net/worker.js';
import { NetworkSupervisor } from '../../dist/shim/network.js';
import type { NetConfig } from '../../src/net/types.js';

// The worker's framing of QEMU's `-netdev stream` socket, its tunnel header, and the real worker
// thread driven by a fake QEMU over the NIC socket (no VM).

function framed(...frames: Buffer[]): Buffer {
  return Buffer.concat(frames.flatMap((f) => [frameHeader(f.length), f]));
}

function frame(n: number, fill: number): Buffer {
  return Buffer.alloc(n, fill);
}

describe('FrameReader', () => {
  const frames = [frame(14, 1), frame(1514, 2), frame(65534, 3), frame(60, 4)];
  const stream = framed(...frames);

  it('splits joined frames, zero-copy when a frame lies within one chunk', () => {
    const got: Buffer[] = [];
    const r = new FrameReader((f) => got.push(f));
    r.push(stream);
    expect(got.map((f) => [f.length, f[0]])).toEqual(frames.map((f) => [f.length, f[0]]));
    expect(got[1]!.buffer).toBe(stream.buffer);
    expect(r.buffered).toBe(0);
  });

  it('reassembles frames split at every position (header and body)', () => {
    const small = framed(frame(20, 7), frame(33, 8), frame(14, 9));
    for (let cut = 1; cut < small.length; cut++) {
      for (const step of [1, 3, cut]) {
        const got: Buffer[] = [];
        const r = new FrameReader((f) => got.push(Buffer.from(f)));
        let off = 0;
        r.push(small.subarray(0, cut));
        off = cut;
        while (off < small.length) {
          r.push(small.subarray(off, off + step));
          off += step;
        }
        expect(got.map((f) => [f.length, f[0]]), `cut ${cut} step ${step}`).toEqual([
          [20, 7],
          [33, 8],
          [14, 9],
        ]);
      }
    }
  });

  it('a bad length is fatal: too short, too long, and the reader stays failed', () => {
    for (const len of [0, 13, MAX_FRAME + 1, 0xffffffff]) {
      const r = new FrameReader(() => {});
      expect(() => r.push(frameHeader(len)), `len ${len}`).toThrow(FrameError);
      expect(() => r.push(framed(frame(20, 1)))).toThrow(FrameError);
    }
    const r = new FrameReader(() => {});
    expect(() => r.push(framed(frame(MAX_FRAME, 1)))).not.toThrow();
  });

  it('random chunkings of a long stream give the same frames (seeded)', () => {
    let seed = 42;
    const rnd = (n: number) => {
      seed = (seed * 1103515245 + 12345) & 0x7fffffff;
      return seed % n;
    };
    const many = Array.from({ length: 200 }, (_, i) => frame(14 + rnd(3000), i & 0xff));
    const s = framed(...many);
    const got: Buffer[] = [];
    const r = new FrameReader((f) => got.push(Buffer.from(f)));
    for (let off = 0; off < s.length; ) {
      const n = 1 + rnd(5000);
      r.push(s.subarray(off, off + n));
      off += n;
    }
    expect(got.length).toBe(200);
    expect(got.every((f, i) => f.equals(many[i]!))).toBe(true);
  });
});

describe('parseTunnelHeader', () => {
  it('accepts PORT 1..65535 and nothing else', () => {
    expect(parseTunnelHeader('PORT 80')).toBe(80);
    expect(parseTunnelHeader('PORT 65535')).toBe(65535);
    for (const bad of ['PORT 0', 'PORT 65536', 'PORT', 'PORT -1', 'port 80', 'PORT 80 ', 'PORT 0x50', 'PORT 123456', '']) {
      expect(parseTunnelHeader(bad), bad).toBeUndefined();
    }
  });
});

// ---- the real worker thread, with a fake QEMU ---------------------------------------------------

const GUEST_MAC = Buffer.from([0x52, 0x54, 0x00, 0x12, 0x34, 0x56]);
const ip4 = (s: string) => Buffer.from(s.split('.').map(Number));

/** An ARP request from the guest for `target`. */
function arpRequest(target: string): Buffer {
  const f = Buffer.alloc(42);
  Buffer.alloc(6, 0xff).copy(f, 0);
  GUEST_MAC.copy(f, 6);
  f.writeUInt16BE(0x0806, 12);
  f.writeUInt16BE(1, 14); // ethernet
  f.writeUInt16BE(0x0800, 16); // ipv4
  f[18] = 6;
  f[19] = 4;
  f.writeUInt16BE(1, 20); // request
  GUEST_MAC.copy(f, 22);
  ip4('192.168.127.2').copy(f, 28);
  ip4(target).copy(f, 38);
  return f;
}

const dirs: string[] = [];
afterEach(() => {
  for (const d of dirs.splice(0)) fs.rmSync(d, { recursive: true, force: true });
});

function config(dir: string, over: Partial<NetConfig> = {}): NetConfig {
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
    socketPath: path.join(dir, 'net.sock'),
    tunnelSocketPath: path.join(dir, 'tunnel.sock'),
    allowNet: [],
    secrets: [],
    ports: [],
    testSeam: { names: {}, dial: {} },
    ...over,
  };
}

describe('the network worker thread (fake QEMU on the NIC socket)', () => {
  it('answers ARP through the stack, binds ports (port 0 resolved), serves the tunnel socket 0600, and stops', async () => {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'netw-'));
    dirs.push(dir);
    // A stale socket from a crashed shim is replaced.
    fs.writeFileSync(path.join(dir, 'net.sock'), '');
    const logs: string[] = [];
    const fatal: Error[] = [];
    const sup = new NetworkSupervisor(
      config(dir, { ports: [{ hostIp: '127.0.0.1', hostPort: 0, guestPort: 80, protocol: 'tcp' }, { hostIp: '127.0.0.1', hostPort: 0, guestPort: 53, protocol: 'udp' }] }),
      (l: string) => logs.push(l),
      (e: Error) => fatal.push(e),
    );
    await sup.start();
    try {
      expect(sup.ports.map((p) => [p.guestPort, p.protocol, p.hostPort > 0])).toEqual([
        [80, 'tcp', true],
        [53, 'udp', true],
      ]);
      expect(fs.statSync(path.join(dir, 'tunnel.sock')).mode & 0o777).toBe(0o600);

      const qemu = net.connect(path.join(dir, 'net.sock'));
      const replies: Buffer[] = [];
      const reader = new FrameReader((f) => replies.push(Buffer.from(f)));
      qemu.on('data', (c: Buffer) => reader.push(c));
      await new Promise((r) => qemu.once('connect', r));
      // Split across writes: the worker reassembles.
      const req = framed(arpRequest('192.168.127.1'));
      qemu.write(req.subarray(0, 3));
      await new Promise((r) => setTimeout(r, 20));
      qemu.write(req.subarray(3));
      for (let i = 0; i < 100 && !replies.length; i++) await new Promise((r) => setTimeout(r, 20));
      expect(replies.length).toBe(1);
      const reply = replies[0]!;
      expect(reply.readUInt16BE(12)).toBe(0x0806);
      expect(reply.readUInt16BE(20)).toBe(2); // ARP reply
      expect(reply.subarray(22, 28).toString('hex')).toBe('5255c0a87f01');
      expect([...reply.subarray(28, 32)].join('.')).toBe('192.168.127.1');

      // A tunnel to a port when the guest never answers: a clear ERR, not a hang (bounded by the stack's SYN timeout).
      const bad = net.connect(path.join(dir, 'tunnel.sock'));
      bad.write('HELLO\n');
      const answer = await new Promise<string>((r) => {
        let d = '';
        bad.on('data', (c) => (d += c));
        bad.on('close', () => r(d));
      });
      expect(answer).toBe('ERR expected "PORT <1-65535>"\n');

      const counters = sup.counters();
      expect(Object.keys(counters)).toEqual(expect.arrayContaining(['bytesSent', 'bytesReceived', 'tcpConnections', 'tcpErrors', 'droppedFrames']));
      expect(await sup.snapshot()).toMatchObject({ stack: expect.any(Object) });
      qemu.destroy();
    } finally {
      await sup.stop();
    }
    expect(fatal).toEqual([]);
    expect(fs.existsSync(path.join(dir, 'net.sock'))).toBe(false);
    expect(fs.existsSync(path.join(dir, 'tunnel.sock'))).toBe(false);
  }, 30_000);

  it('a bad frame length from QEMU is fatal: the shim hears a NetworkError', async () => {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'netw-'));
    dirs.push(dir);
    const fatal = new Promise<Error>((resolve) => {
      const sup = new NetworkSupervisor(config(dir), () => {}, resolve);
      void sup.start().then(() => {
        const qemu = net.connect(path.join(dir, 'net.sock'));
        qemu.on('error', () => {});
        qemu.write(frameHeader(5));
      });
    });
    const err = await fatal;
    expect(err.message).toMatch(/^network error: bad frame length 5 from the VM's NIC/);
  }, 30_000);

  it('a port it cannot bind fails the start with a NetworkError naming it', async () => {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'netw-'));
    dirs.push(dir);
    const busy = net.createServer();
    await new Promise<void>((r) => busy.listen(0, '127.0.0.1', r));
    const port = (busy.address() as net.AddressInfo).port;
    try {
      const sup = new NetworkSupervisor(config(dir, { ports: [{ hostIp: '127.0.0.1', hostPort: port, guestPort: 80, protocol: 'tcp' }] }), () => {}, () => {});
      await expect(sup.start()).rejects.toThrow(`network error: host port ${port} is already in use (tcp, 127.0.0.1)`);
      await sup.stop();
    } finally {
      busy.close();
    }
  }, 30_000);
});
