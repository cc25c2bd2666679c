// The flow dispatcher without a VM: fake PendingTcp/GuestStream/GuestDatagram objects stand for
// the stack, the seam dialer maps guest-visible addresses to servers on 127.0.0.1.
import { createHash } from 'node:crypto';
import dgram from 'node:dgram';
import net from 'node:net';
import { Duplex } from 'node:stream';
import tls from 'node:tls';
import { afterEach, describe, expect, it } from 'vitest';
import { createDialer } from '../../src/net/dialer.js';
import { createFlowHandler, type DispatchHandler, type FlowHandlerOptions } from '../../src/net/dispatch.js';
import { QTYPE, RCODE, buildQuery, parseResponse } from '../../src/net/dns.js';
import { NetPolicy } from '../../src/net/policy.js';
import { COUNTER, COUNTER_SLOTS, type Dialer, type FlowKey, type GuestDatagram, type GuestStream, type LinkAddressing, type NetTestSeam, type PendingTcp } from '../../src/net/types.js';

const link: LinkAddressing = {
  guestIp: '192.168.127.2',
  gatewayIp: '192.168.127.1',
  hostAliasIp: '192.168.127.254',
  prefixLength: 24,
  guestMac: '02:00:00:00:00:02',
  gatewayMac: '02:00:00:00:00:01',
  mtu: 65520,
};

/** The guest end of a connection: what dispatch writes is collected, the test pushes the guest's bytes. */
class FakeGuest extends Duplex implements GuestStream {
  readonly received: Buffer[] = [];
  finReceived = false;
  wasReset = false;
  constructor(readonly flow: FlowKey) {
    super({ allowHalfOpen: true });
  }
  override _read(): void {}
  override _write(chunk: Buffer, _e: BufferEncoding, cb: (err?: Error | null) => void): void {
    this.received.push(chunk);
    this.emit('got');
    cb();
  }
  override _final(cb: (err?: Error | null) => void): void {
    this.finReceived = true;
    this.emit('got');
    cb();
  }
  reset(): void {
    this.wasReset = true;
    this.destroy();
  }
  text(): string {
    return Buffer.concat(this.received).toString();
  }
  /** Resolves once the collected bytes satisfy `pred` (or the guest is reset / gets FIN). */
  until(pred: (g: FakeGuest) => boolean, ms = 3000): Promise<void> {
    return new Promise((resolve, reject) => {
      const t = setTimeout(() => reject(new Error(`timeout; got ${JSON.stringify(this.text().slice(0, 200))} reset=${this.wasReset}`)), ms);
      const check = () => {
        if (pred(this)) {
          clearTimeout(t);
          resolve();
        }
      };
      this.on('got', check);
      this.on('close', check);
      check();
    });
  }
}

class FakePending implements PendingTcp {
  verdict: 'pending' | 'accepted' | 'refused' | 'unreachable' = 'pending';
  readonly guest: FakeGuest;
  private settled: Promise<void>;
  private settle!: () => void;
  constructor(readonly flow: FlowKey) {
    this.guest = new FakeGuest(flow);
    this.settled = new Promise((r) => (this.settle = r));
  }
  accept(): GuestStream {
    if (this.verdict !== 'pending') throw new Error('already decided');
    this.verdict = 'accepted';
    this.settle();
    return this.guest;
  }
  reject(how: 'refused' | 'unreachable'): void {
    if (this.verdict !== 'pending') throw new Error('already decided');
    this.verdict = how;
    this.settle();
  }
  decided(): Promise<void> {
    return this.settled;
  }
}

const tcp = (dstIp: string, dstPort: number, srcPort = 40000 + Math.floor(Math.random() * 20000)): FlowKey => ({ proto: 'tcp', srcIp: link.guestIp, srcPort, dstIp, dstPort });

function datagram(dstIp: string, dstPort: number, payload: Buffer, srcPort = 5353) {
  const replies: Array<{ payload: Buffer; from?: { ip: string; port: number } }> = [];
  let unreachable = 0;
  const d: GuestDatagram = {
    flow: { proto: 'udp', srcIp: link.guestIp, srcPort, dstIp, dstPort },
    payload,
    reply: (p, from) => replies.push({ payload: p, from }),
    unreachable: () => void unreachable++,
  };
  return { d, replies, unreachableCount: () => unreachable };
}

/** A TCP server on 127.0.0.1 that records what it receives and answers with its label. */
async function labelServer(label: string, opts: { echo?: boolean; byeOnEnd?: boolean } = {}) {
  const got: Buffer[] = [];
  let connections = 0;
  const server = net.createServer({ allowHalfOpen: true }, (s) => {
    connections++;
    s.on('data', (c) => {
      got.push(c);
      if (opts.echo) s.write(c);
    });
    s.on('end', () => {
      if (opts.byeOnEnd) s.end('bye');
      else s.end();
    });
    s.on('error', () => {});
    if (!opts.echo && !opts.byeOnEnd) s.write(`${label}\n`);
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', () => r()));
  return {
    port: (server.address() as net.AddressInfo).port,
    got: () => Buffer.concat(got),
    connections: () => connections,
    close: () => new Promise<void>((r) => server.close(() => r())),
  };
}

async function clientHello(servername: string): Promise<Buffer> {
  const server = net.createServer();
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', () => r()));
  const hello = new Promise<Buffer>((resolve) =>
    server.once('connection', (s) => {
      const chunks: Buffer[] = [];
      s.on('data', (c) => {
        chunks.push(c);
        const b = Buffer.concat(chunks);
        if (b.length >= 5 && b.length >= 5 + b.readUInt16BE(3)) {
          resolve(b);
          s.destroy();
        }
      });
    }),
  );
  const c = tls.connect({ host: '127.0.0.1', port: (server.address() as net.AddressInfo).port, servername, rejectUnauthorized: false });
  c.on('error', () => {});
  const b = await hello;
  c.destroy();
  server.close();
  return b;
}

/** A dialer that records every dial before delegating (to prove "no upstream contact"). */
function recording(d: Dialer) {
  const dials: string[] = [];
  const r: Dialer = {
    resolve4: (n) => d.resolve4(n),
    connectTcp: (ip, port, t) => {
      dials.push(`${ip}:${port}`);
      return d.connectTcp(ip, port, t);
    },
    udp: (ip, port) => {
      dials.push(`udp ${ip}:${port}`);
      return d.udp(ip, port);
    },
    upstreamCa: d.upstreamCa,
    // The seam's own 198.18.0.0/15 addresses stand for public servers (not refused as private).
    ...(d.isSeamAddress ? { isSeamAddress: (ip: string) => d.isSeamAddress!(ip) } : {}),
  };
  return { dialer: r, dials };
}

async function waitFor(pred: () => boolean, ms = 3000): Promise<void> {
  const end = Date.now() + ms;
  while (!pred()) {
    if (Date.now() > end) throw new Error('waitFor: timed out');
    await new Promise((r) => setTimeout(r, 5));
  }
}

const cleanups: Array<() => unknown> = [];
afterEach(async () => {
  for (const c of cleanups.splice(0).reverse()) await c();
});

function setup(allowNet: string[], seam: NetTestSeam, extra: Partial<FlowHandlerOptions> = {}) {
  const { dialer, dials } = recording(createDialer(seam));
  const counters = new BigInt64Array(COUNTER_SLOTS);
  const logs: string[] = [];
  const h: DispatchHandler = createFlowHandler({ link, policy: new NetPolicy(allowNet), dialer, counters, log: (l) => logs.push(l), ...extra });
  cleanups.push(() => h.close());
  return { h, dials, counters, logs, c: (slot: keyof typeof COUNTER) => counters[COUNTER[slot]] };
}

async function resolveVia(h: DispatchHandler, name: string, dst = '8.8.8.8') {
  const { d, replies } = datagram(dst, 53, buildQuery(77, name, QTYPE.A));
  h.onUdp(d);
  for (let i = 0; i < 100 && !replies.length; i++) await new Promise((r) => setTimeout(r, 5));
  return parseResponse(replies[0]!.payload)!;
}

describe('dispatch: direct dials', () => {
  it('open policy: connects upstream first, then accepts; bytes both ways counted; half-close forwarded', async () => {
    const up = await labelServer('echo', { byeOnEnd: true });
    cleanups.push(up.close);
    const { h, c } = setup([], { names: {}, dial: { '198.18.0.10:7': `127.0.0.1:${up.port}` } });
    const p = new FakePending(tcp('198.18.0.10', 7));
    h.onTcp(p);
    expect(p.verdict).toBe('pending'); // no SYN-ACK before the upstream connected
    await p.decided();
    expect(p.verdict).toBe('accepted');
    p.guest.push(Buffer.from('hello'));
    p.guest.push(null); // guest FIN: upstream sees 'end', answers, closes
    await p.guest.until((g) => g.finReceived);
    expect(p.guest.text()).toBe('bye');
    expect(up.got().toString()).toBe('hello');
    expect(c('tcpConnections')).toBe(1n);
    expect(c('bytesSent')).toBe(5n);
    expect(c('bytesReceived')).toBe(3n);
    expect(c('tcpErrors')).toBe(0n);
  });

  it('a refused upstream is a refused SYN (RST), counted in tcpErrors, never accepted', async () => {
    const dead = await labelServer('dead');
    await dead.close();
    const { h, c, logs } = setup([], { names: {}, dial: { '198.18.0.10:7': `127.0.0.1:${dead.port}` } });
    const p = new FakePending(tcp('198.18.0.10', 7));
    h.onTcp(p);
    await p.decided();
    expect(p.verdict).toBe('refused');
    expect(c('tcpErrors')).toBe(1n);
    expect(c('tcpConnections')).toBe(0n);
    expect(logs.join('\n')).toMatch(/ECONNREFUSED/);
  });

  it('host.boxlite.internal and the gateway reach host loopback on the same port, under any policy', async () => {
    const up = await labelServer('loopback');
    cleanups.push(up.close);
    const { h } = setup(['only.allowed.test'], { names: {}, dial: {} });
    for (const ip of [link.hostAliasIp, link.gatewayIp]) {
      const p = new FakePending(tcp(ip, up.port));
      h.onTcp(p);
      await p.decided();
      expect(p.verdict).toBe('accepted');
      await p.guest.until((g) => g.text() === 'loopback\n');
    }
  });

  it('a 4 MiB transfer each way keeps its sha256 (back-pressure through pipe)', async () => {
    const up = await labelServer('echo', { echo: true });
    cleanups.push(up.close);
    const { h, c } = setup(['198.18.0.0/15'], { names: {}, dial: { '198.18.0.10': `127.0.0.1` } });
    const p = new FakePending(tcp('198.18.0.10', up.port));
    h.onTcp(p);
    await p.decided();
    const data = Buffer.alloc(4 << 20);
    for (let i = 0; i < data.length; i++) data[i] = (i * 31 + (i >> 11)) & 255;
    for (let o = 0; o < data.length; o += 65536) p.guest.push(data.subarray(o, o + 65536));
    await p.guest.until((g) => g.received.reduce((n, b) => n + b.length, 0) >= data.length, 10000);
    expect(createHash('sha256').update(Buffer.concat(p.guest.received)).digest('hex')).toBe(createHash('sha256').update(data).digest('hex'));
    expect(c('bytesSent')).toBe(BigInt(data.length));
    expect(c('bytesReceived')).toBe(BigInt(data.length));
  });
});

describe('dispatch: policy', () => {
  it('refuses before any upstream contact: unlisted IPs, other ports of unpinned IPs, metadata, loopback/multicast dsts', async () => {
    const { h, dials, c, logs } = setup(['api.allowed.test', '10.9.0.0/16'], { names: { 'api.allowed.test': ['198.18.0.10'] }, dial: { '198.18.0.10': '127.0.0.1', '198.18.0.20': '127.0.0.1', '169.254.169.254': '127.0.0.1' } });
    const cases: Array<[string, number]> = [
      ['198.18.0.20', 22],
      ['198.18.0.10', 22], // the allowed name's IP, but never answered by this box's DNS: not pinned
      ['169.254.169.254', 80],
      ['127.0.0.1', 22],
      ['224.0.0.1', 9],
      ['0.0.0.0', 80],
      ['192.168.127.9', 80], // the virtual link's own subnet: nobody lives there
    ];
    for (const [ip, port] of cases) {
      const p = new FakePending(tcp(ip, port));
      h.onTcp(p);
      expect(p.verdict, `${ip}:${port}`).toBe('refused'); // synchronously: nothing was dialed
    }
    expect(dials).toEqual([]);
    expect(c('blockedFlows')).toBe(BigInt(cases.length));
    expect(c('tcpErrors')).toBe(BigInt(cases.length));
    expect(h.snapshot().blocked).toEqual({ 'not-allowed': 2, metadata: 1, 'never-dialed': 4 });
    expect(logs.some((l) => /blocked tcp .* -> 169\.254\.169\.254:80 \(metadata\)/.test(l))).toBe(true);
  });

  it('169.254.0.0/16 is refused under the open policy too, reachable when listed', async () => {
    const up = await labelServer('metadata');
    cleanups.push(up.close);
    const seam = { names: {}, dial: { '169.254.169.254': '127.0.0.1' } };
    const open = setup([], seam);
    const p1 = new FakePending(tcp('169.254.169.254', up.port));
    open.h.onTcp(p1);
    expect(p1.verdict).toBe('refused');
    const listed = setup(['169.254.169.254'], seam);
    const p2 = new FakePending(tcp('169.254.169.254', up.port));
    listed.h.onTcp(p2);
    await p2.decided();
    expect(p2.verdict).toBe('accepted');
  });

  it('other ports reach only IPs this box DNS answered for allowed names (pins), whatever resolver the guest asked', async () => {
    const up = await labelServer('pinned');
    cleanups.push(up.close);
    const { h, dials } = setup(['*.allowed.test'], { names: { 'api.allowed.test': ['198.18.0.10'] }, dial: { '198.18.0.10': '127.0.0.1' } });
    const before = new FakePending(tcp('198.18.0.10', up.port));
    h.onTcp(before);
    expect(before.verdict).toBe('refused');
    const nx = await resolveVia(h, 'blocked.test', '1.1.1.1');
    expect(nx.rcode).toBe(RCODE.NXDOMAIN);
    const ans = await resolveVia(h, 'api.allowed.test', '9.9.9.9');
    expect(ans.answers.map((a) => a.address)).toEqual(['198.18.0.10']);
    const after = new FakePending(tcp('198.18.0.10', up.port));
    h.onTcp(after);
    await after.decided();
    expect(after.verdict).toBe('accepted');
    await after.guest.until((g) => g.text() === 'pinned\n');
    expect(dials).toEqual([`198.18.0.10:${up.port}`]);
    expect(h.snapshot().pins).toEqual([{ ip: '198.18.0.10', name: 'api.allowed.test', ttl: 60, flows: 1 }]);
  });
});

describe('dispatch: SNI/Host peeking', () => {
  it('a forged SNI to an unlisted IP lands on the allowed NAME as resolved on the host, not on the IP', async () => {
    const named = await labelServer('named');
    const other = await labelServer('other');
    cleanups.push(named.close, other.close);
    const { h, dials } = setup(['api.allowed.test'], {
      names: { 'api.allowed.test': ['198.18.0.10'] },
      dial: { '198.18.0.10:443': `127.0.0.1:${named.port}`, '198.18.0.20:443': `127.0.0.1:${other.port}` },
    });
    const hello = await clientHello('api.allowed.test');
    const p = new FakePending(tcp('198.18.0.20', 443));
    h.onTcp(p);
    expect(p.verdict).toBe('accepted'); // accepted to read the ClientHello
    // Split into two chunks: the peek waits for the whole ClientHello.
    p.guest.push(hello.subarray(0, 20));
    p.guest.push(hello.subarray(20));
    await p.guest.until((g) => g.text() === 'named\n');
    await waitFor(() => named.got().length >= hello.length);
    expect(named.got().equals(hello)).toBe(true); // the ClientHello was replayed upstream
    expect(other.connections()).toBe(0);
    expect(dials).toEqual(['198.18.0.10:443']);
  });

  it('an SNI outside the list is reset without any dial; a ClientHello without SNI too', async () => {
    const { h, dials, c } = setup(['api.allowed.test'], { names: { 'other.test': ['198.18.0.20'] }, dial: { '198.18.0.20': '127.0.0.1' } });
    for (const name of ['other.test', '']) {
      const p = new FakePending(tcp('198.18.0.20', 443));
      h.onTcp(p);
      p.guest.push(await clientHello(name));
      await p.guest.until((g) => g.wasReset);
    }
    expect(dials).toEqual([]);
    expect(h.snapshot().blocked).toEqual({ 'name-not-allowed': 1, 'no-name': 1 });
    expect(c('blockedFlows')).toBe(2n);
  });

  it('HTTP Host on port 80, split across chunks, dials the name; a wildcard does not allow its apex', async () => {
    const named = await labelServer('deep');
    cleanups.push(named.close);
    const { h, dials } = setup(['*.allowed.test'], { names: { 'deep.sub.allowed.test': ['198.18.0.11'], 'allowed.test': ['198.18.0.12'] }, dial: { '198.18.0.11:80': `127.0.0.1:${named.port}`, '198.18.0.12:80': `127.0.0.1:${named.port}` } });
    const p = new FakePending(tcp('203.0.113.99', 80));
    h.onTcp(p);
    const req = 'GET / HTTP/1.1\r\nHost: deep.sub.allowed.test\r\n\r\n';
    for (const ch of req.match(/.{1,7}/gs)!) p.guest.push(Buffer.from(ch));
    await p.guest.until((g) => g.text() === 'deep\n');
    await waitFor(() => named.got().length >= req.length);
    expect(named.got().toString()).toBe(req);
    const apex = new FakePending(tcp('198.18.0.12', 80));
    h.onTcp(apex);
    apex.guest.push(Buffer.from('GET / HTTP/1.1\r\nHost: allowed.test\r\n\r\n'));
    await apex.guest.until((g) => g.wasReset);
    expect(dials).toEqual(['198.18.0.11:80']);
  });

  it('a Host that is an allowed IPv4 literal dials that IP, not the guest dst', async () => {
    const ipServer = await labelServer('by-ip');
    const dst = await labelServer('dst');
    cleanups.push(ipServer.close, dst.close);
    const { h, dials } = setup(['api.allowed.test', '198.18.0.20'], { names: {}, dial: { '198.18.0.20:80': `127.0.0.1:${ipServer.port}`, '198.18.0.21:80': `127.0.0.1:${dst.port}` } });
    const p = new FakePending(tcp('198.18.0.21', 80));
    h.onTcp(p);
    p.guest.push(Buffer.from('GET / HTTP/1.1\r\nHost: 198.18.0.20\r\n\r\n'));
    await p.guest.until((g) => g.text() === 'by-ip\n');
    expect(dials).toEqual(['198.18.0.20:80']);
  });

  it('falls back to the name\'s next address; an allowed name resolving to loopback/metadata is never dialed', async () => {
    const live = await labelServer('second');
    const dead = await labelServer('dead');
    await dead.close();
    cleanups.push(live.close);
    const { h, dials } = setup(['*.allowed.test'], {
      names: { 'multi.allowed.test': ['198.18.0.50', '198.18.0.51'], 'rebind.allowed.test': ['127.0.0.1', '169.254.169.254'] },
      dial: { '198.18.0.50:80': `127.0.0.1:${dead.port}`, '198.18.0.51:80': `127.0.0.1:${live.port}` },
    });
    const p = new FakePending(tcp('198.18.0.99', 80));
    h.onTcp(p);
    p.guest.push(Buffer.from('GET / HTTP/1.1\r\nHost: multi.allowed.test\r\n\r\n'));
    await p.guest.until((g) => g.text() === 'second\n');
    expect(dials).toEqual(['198.18.0.50:80', '198.18.0.51:80']);
    const r = new FakePending(tcp('198.18.0.99', 80));
    h.onTcp(r);
    r.guest.push(Buffer.from('GET / HTTP/1.1\r\nHost: rebind.allowed.test\r\n\r\n'));
    await r.guest.until((g) => g.wasReset);
    expect(dials).toHaveLength(2);
    expect(h.snapshot().blocked).toEqual({ 'never-dialed': 1 });
  });

  it('a guest that sends no name within the time limit is reset', async () => {
    const { h } = setup(['api.allowed.test'], { names: {}, dial: {} }, { limits: { peekTimeoutMs: 50 } });
    const p = new FakePending(tcp('198.18.0.10', 443));
    h.onTcp(p);
    p.guest.push(Buffer.from([0x16, 3, 1]));
    await p.guest.until((g) => g.wasReset);
    expect(h.snapshot().blocked).toEqual({ 'peek-timeout': 1 });
    expect(h.snapshot().flows.peeking).toBe(0);
  });

  it('TLS on 443 to a secret host goes to the interceptor with the peeked bytes, the guest paused', async () => {
    const handed: Array<{ sni: string; head: Buffer; port: number; paused: boolean }> = [];
    const interceptor = {
      matches: (sni: string) => sni === 'secret.test',
      handle: (g: GuestStream, head: Buffer, sni: string, port: number) => handed.push({ sni, head, port, paused: g.isPaused() }),
    };
    const { h, dials } = setup(['secret.test', 'api.allowed.test'], { names: {}, dial: {} }, { interceptor });
    const hello = await clientHello('secret.test');
    const p = new FakePending(tcp('198.18.0.30', 443));
    h.onTcp(p);
    p.guest.push(hello);
    for (let i = 0; i < 100 && !handed.length; i++) await new Promise((r) => setTimeout(r, 5));
    expect(handed).toHaveLength(1);
    expect(handed[0]).toMatchObject({ sni: 'secret.test', port: 443, paused: true });
    expect(handed[0]!.head.equals(hello)).toBe(true);
    expect(dials).toEqual([]);
  });
});

describe('dispatch: UDP and DNS transports', () => {
  it('NATs UDP to allowed IPs (replies come back), unreachable otherwise; DNS over TCP is answered', async () => {
    const echo = dgram.createSocket('udp4');
    echo.on('message', (m, r) => echo.send(Buffer.concat([Buffer.from('echo:'), m]), r.port, r.address));
    await new Promise<void>((r) => echo.bind(0, '127.0.0.1', () => r()));
    cleanups.push(() => new Promise<void>((r) => echo.close(() => r())));
    const { h, c } = setup(['198.18.0.40', 'api.allowed.test'], { names: { 'api.allowed.test': ['198.18.0.10'] }, dial: { '198.18.0.40': '127.0.0.1' } });
    const ok = datagram('198.18.0.40', echo.address().port, Buffer.from('ping'));
    h.onUdp(ok.d);
    for (let i = 0; i < 100 && !ok.replies.length; i++) await new Promise((r) => setTimeout(r, 5));
    expect(ok.replies.map((r) => r.payload.toString())).toEqual(['echo:ping']);
    expect(h.snapshot().flows.udp).toBe(1);
    const no = datagram('198.18.0.41', 9, Buffer.from('x'));
    h.onUdp(no.d);
    expect(no.unreachableCount()).toBe(1);
    expect(c('bytesSent')).toBe(4n);
    expect(c('bytesReceived')).toBe(9n);

    const p = new FakePending(tcp('8.8.4.4', 53));
    h.onTcp(p);
    expect(p.verdict).toBe('accepted');
    const q = buildQuery(5, 'api.allowed.test', QTYPE.A);
    const msg = Buffer.concat([Buffer.from([0, q.length]), q]);
    p.guest.push(msg.subarray(0, 3));
    p.guest.push(msg.subarray(3));
    p.guest.push(null); // FIN right after the query: the answer still comes, then our FIN
    await p.guest.until((g) => g.finReceived);
    const ans = parseResponse(Buffer.concat(p.guest.received).subarray(2))!;
    expect(ans.answers.map((a) => a.address)).toEqual(['198.18.0.10']);
  });
});

describe('dispatch: per-box limits against a hostile guest', () => {
  it('caps peeks, UDP flows and log lines; close() resets what is left', async () => {
    const echo = dgram.createSocket('udp4');
    await new Promise<void>((r) => echo.bind(0, '127.0.0.1', () => r()));
    cleanups.push(() => new Promise<void>((r) => echo.close(() => r())));
    const { h, logs } = setup(['198.18.0.40', 'api.allowed.test'], { names: {}, dial: { '198.18.0.40': '127.0.0.1' } }, { limits: { maxPeeking: 1, maxUdpFlows: 2 } });
    const first = new FakePending(tcp('198.18.0.10', 443));
    h.onTcp(first);
    expect(first.verdict).toBe('accepted');
    const second = new FakePending(tcp('198.18.0.10', 443));
    h.onTcp(second);
    expect(second.verdict).toBe('refused');
    const udps = [1, 2, 3].map((i) => datagram('198.18.0.40', echo.address().port, Buffer.from('x'), 6000 + i));
    for (const u of udps) {
      h.onUdp(u.d);
      await new Promise((r) => setTimeout(r, 5));
    }
    // The cap holds: the least recently used flow made room for the third.
    expect(udps.map((u) => u.unreachableCount())).toEqual([0, 0, 0]);
    expect(h.snapshot().flows).toMatchObject({ udp: 2, udpEvicted: 1 });
    // 500 refused SYNs: every one counted, the log holds at most the rate limit's worth.
    for (let i = 0; i < 500; i++) h.onTcp(new FakePending(tcp('198.18.9.9', 22)));
    expect(h.snapshot().blocked).toEqual({ limit: 1, 'not-allowed': 500 });
    expect(logs.length).toBeLessThanOrEqual(21);
    h.close();
    await first.guest.until((g) => g.wasReset);
    expect(h.snapshot().flows).toEqual({ tcp: 0, peeking: 0, udp: 0, udpEvicted: 1 });
    const late = new FakePending(tcp('198.18.0.40', 7));
    h.onTcp(late);
    expect(late.verdict).toBe('refused');
  });
});

describe('dispatch: private addresses from DNS answers (rebinding onto the host LAN)', () => {
  const seamFor = (port: number): NetTestSeam => ({
    names: { 'lan.nip.test': ['10.0.0.5'], 'mixed.nip.test': ['192.168.1.20', '198.18.0.10'] },
    dial: { '10.0.0.5:80': `127.0.0.1:${port}`, '10.0.0.5': '127.0.0.1', '192.168.1.20:80': `127.0.0.1:${port}`, '198.18.0.10:80': `127.0.0.1:${port}` },
  });

  it('a wildcard name answering 10.0.0.5 is never dialed: not by Host on 80, not as a pin on other ports or UDP', async () => {
    const up = await labelServer('lan');
    cleanups.push(up.close);
    const { h, dials, c, logs } = setup(['*.nip.test'], seamFor(up.port));
    const p = new FakePending(tcp('203.0.113.99', 80));
    h.onTcp(p);
    p.guest.push(Buffer.from('GET / HTTP/1.1\r\nHost: lan.nip.test\r\n\r\n'));
    await p.guest.until((g) => g.wasReset);
    // The guest's own DNS sees the answer (it is the name's), but the pin does not open it.
    const ans = await resolveVia(h, 'lan.nip.test');
    expect(ans.answers.map((a) => a.address)).toEqual(['10.0.0.5']);
    const pinned = new FakePending(tcp('10.0.0.5', up.port));
    h.onTcp(pinned);
    expect(pinned.verdict).toBe('refused');
    const { d, unreachableCount } = datagram('10.0.0.5', 7, Buffer.from('x'));
    h.onUdp(d);
    expect(unreachableCount()).toBe(1);
    expect(dials).toEqual([]);
    expect(h.snapshot().blocked).toEqual({ private: 3 });
    expect(c('blockedFlows')).toBe(3n);
    expect(logs.some((l) => /\(private: lan\.nip\.test resolves to 10\.0\.0\.5\)/.test(l))).toBe(true);
    // A name with a private and a public (seam) answer goes to the public one only.
    const m = new FakePending(tcp('192.168.1.20', 80));
    h.onTcp(m);
    m.guest.push(Buffer.from('GET / HTTP/1.1\r\nHost: mixed.nip.test\r\n\r\n'));
    await m.guest.until((g) => g.text() === 'lan\n');
    expect(dials).toEqual(['198.18.0.10:80']);
  });

  it('listed by an IP/CIDR rule, the private answer is dialed; the open policy dials private addresses as before', async () => {
    const up = await labelServer('lan');
    cleanups.push(up.close);
    const listed = setup(['*.nip.test', '10.0.0.0/24'], seamFor(up.port));
    const p = new FakePending(tcp('203.0.113.99', 80));
    listed.h.onTcp(p);
    p.guest.push(Buffer.from('GET / HTTP/1.1\r\nHost: lan.nip.test\r\n\r\n'));
    await p.guest.until((g) => g.text() === 'lan\n');
    expect(listed.dials).toEqual(['10.0.0.5:80']);
    const open = setup([], seamFor(up.port));
    const q = new FakePending(tcp('10.0.0.5', up.port));
    open.h.onTcp(q);
    await q.decided();
    expect(q.verdict).toBe('accepted');
  });
});

describe('dispatch: HTTP request target vs Host', () => {
  it('an absolute-form target naming another host than Host, or two Host headers, is reset without any dial', async () => {
    const up = await labelServer('allowed');
    cleanups.push(up.close);
    const { h, dials, c, logs } = setup(['api.allowed.test'], { names: { 'api.allowed.test': ['198.18.0.10'] }, dial: { '198.18.0.10:80': `127.0.0.1:${up.port}` } });
    for (const req of ['GET http://evil.test/ HTTP/1.1\r\nHost: api.allowed.test\r\n\r\n', 'GET / HTTP/1.1\r\nHost: api.allowed.test\r\nHost: evil.test\r\n\r\n']) {
      const p = new FakePending(tcp('198.18.0.10', 80));
      h.onTcp(p);
      p.guest.push(Buffer.from(req));
      await p.guest.until((g) => g.wasReset);
    }
    expect(dials).toEqual([]);
    expect(h.snapshot().blocked).toEqual({ 'bad-request': 2 });
    expect(c('blockedFlows')).toBe(2n);
    expect(logs.filter((l) => /\(bad-request: /.test(l))).toHaveLength(2);
    // The same absolute form naming the Host's own name passes.
    const ok = new FakePending(tcp('198.18.0.10', 80));
    h.onTcp(ok);
    ok.guest.push(Buffer.from('GET http://API.allowed.test:80/x HTTP/1.1\r\nHost: api.allowed.test\r\n\r\n'));
    await ok.guest.until((g) => g.text() === 'allowed\n');
    expect(dials).toEqual(['198.18.0.10:80']);
  });
});

describe('dispatch: hostile bytes', () => {
  it('random streams into the peek and TCP DNS paths end in a reset or an answer, never a throw', async () => {
    const { h } = setup(['*.allowed.test'], { names: {}, dial: {} }, { limits: { peekTimeoutMs: 200, tcpDnsIdleMs: 200 } });
    let seed = 42;
    const rand = () => ((seed = (Math.imul(seed, 1103515245) + 12345) >>> 0) / 2 ** 32);
    const hello = await clientHello('x.allowed.test');
    const guests: FakeGuest[] = [];
    for (let i = 0; i < 300; i++) {
      const port = [80, 443, 53][i % 3]!;
      const p = new FakePending(tcp('198.18.5.5', port));
      h.onTcp(p);
      expect(p.verdict).toBe('accepted');
      const base = i % 2 ? Buffer.from(hello) : Buffer.from(Array.from({ length: 1 + Math.floor(rand() * 600) }, () => Math.floor(rand() * 256)));
      for (let k = 0; k < 4; k++) base[Math.floor(rand() * base.length)] = Math.floor(rand() * 256);
      let off = 0;
      while (off < base.length) {
        const n = 1 + Math.floor(rand() * 200);
        p.guest.push(base.subarray(off, off + n));
        off += n;
      }
      if (rand() < 0.5) p.guest.push(null);
      guests.push(p.guest);
    }
    // Every flow ends: reset (no name / not allowed / no dial entry) or closed by us.
    for (const g of guests) await g.until((x) => x.destroyed || x.finReceived, 5000);
    expect(h.snapshot().flows.peeking).toBe(0);
  }, 30_000);
});

