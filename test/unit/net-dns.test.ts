import dgram from 'node:dgram';
import dns from 'node:dns';
import net from 'node:net';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { afterEach, describe, expect, it, vi } from 'vitest';
import { ResolveError, createDialer } from '../../src/net/dialer.js';
import { DnsServer, PinSet, QTYPE, RCODE, buildQuery, buildResponse, encodeName, isLookupableName, parseQuery, parseResponse, readName } from '../../src/net/dns.js';
import { NetPolicy } from '../../src/net/policy.js';
import { COUNTER, COUNTER_SLOTS, type Dialer } from '../../src/net/types.js';

/** A deterministic PRNG (mulberry32) so the hostile-packet test is reproducible. */
function rng(seed: number) {
  return () => {
    seed = (seed + 0x6d2b79f5) | 0;
    let t = Math.imul(seed ^ (seed >>> 15), 1 | seed);
    t = (t + Math.imul(t ^ (t >>> 7), 61 | t)) ^ t;
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

/** A dialer whose resolver answers from a table and records what it was asked. */
function tableDialer(table: Record<string, Array<{ address: string; ttl: number }> | 'servfail'>, delayMs = 0) {
  const asked: string[] = [];
  const d: Dialer = {
    async resolve4(name) {
      asked.push(name);
      if (delayMs) await new Promise((r) => setTimeout(r, delayMs));
      const v = table[name];
      if (v === 'servfail') throw new ResolveError(name, 'servfail', 'ESERVFAIL');
      if (!v) throw new ResolveError(name, 'nxdomain', 'ENOTFOUND');
      if (!v.length) throw new ResolveError(name, 'nodata', 'ENODATA');
      return v;
    },
    connectTcp: () => Promise.reject(new Error('no dials in DNS tests')),
    udp: () => Promise.reject(new Error('no dials in DNS tests')),
  };
  return { dialer: d, asked };
}

function ask(server: DnsServer, q: Buffer): Promise<Buffer | undefined> {
  return new Promise((resolve) => {
    server.handle(q, resolve);
    setTimeout(() => resolve(undefined), 200);
  });
}

describe('DNS codec', () => {
  it('parses a dig-style query with EDNS0 and echoes the question', () => {
    const q = buildQuery(0x1234, 'Api.Allowed.Test', QTYPE.A, { edns: true });
    const r = parseQuery(q);
    expect('ok' in r).toBe(true);
    if (!('ok' in r)) return;
    expect(r.ok).toMatchObject({ id: 0x1234, rd: true, name: 'api.allowed.test', qtype: 1, qclass: 1 });
    // The question keeps the sender's case (0x20 randomization survives).
    expect(readName(r.ok.question, 0)?.name).toBe('Api.Allowed.Test');
    const resp = buildResponse(r.ok, RCODE.NOERROR, [{ address: '198.18.0.10', ttl: 60 }, { address: '198.18.0.11', ttl: 60 }]);
    expect(parseResponse(resp)).toEqual({
      id: 0x1234,
      rcode: 0,
      answers: [
        { address: '198.18.0.10', ttl: 60 },
        { address: '198.18.0.11', ttl: 60 },
      ],
    });
    // QR, RD, RA set.
    expect(resp.readUInt16BE(2) & 0x8180).toBe(0x8180);
  });

  it('follows backward compression pointers and refuses loops, forward pointers and overlong names', () => {
    // Header + "example.com" at 12, then a second name "www" + pointer to 12.
    const base = Buffer.concat([Buffer.alloc(12), encodeName('example.com')]);
    const withPtr = Buffer.concat([base, Buffer.from([3, 0x77, 0x77, 0x77, 0xc0, 12])]);
    expect(readName(withPtr, base.length)).toEqual({ name: 'www.example.com', end: withPtr.length });
    const loop = Buffer.concat([Buffer.alloc(12), Buffer.from([0xc0, 12])]);
    expect(readName(loop, 12)).toBeUndefined();
    const forward = Buffer.concat([Buffer.alloc(12), Buffer.from([0xc0, 20]), Buffer.alloc(10)]);
    expect(readName(forward, 12)).toBeUndefined();
    const long = Buffer.concat([...Array.from({ length: 5 }, () => Buffer.concat([Buffer.from([63]), Buffer.alloc(63, 0x61)])), Buffer.from([0])]);
    expect(readName(long, 0)).toBeUndefined();
    // A '.' inside a label would mean another name to the policy than to a resolver.
    expect(readName(Buffer.from([5, 0x61, 0x2e, 0x62, 0x63, 0x64, 0]), 0)).toBeUndefined();
    // A query whose question is a pointer to itself is a loop: FORMERR, not a hang.
    const q = Buffer.concat([buildQuery(1, 'x.test', 1).subarray(0, 12), Buffer.from([0xc0, 12, 0, 1, 0, 1])]);
    expect('error' in parseQuery(q)).toBe(true);
  });

  it('maps non-queries and bad headers: responses dropped, opcodes NOTIMP, counts FORMERR', () => {
    const q = buildQuery(7, 'a.test', 1);
    const resp = Buffer.from(q);
    resp[2]! |= 0x80;
    expect(parseQuery(resp)).toEqual({ drop: true });
    expect(parseQuery(q.subarray(0, 11))).toEqual({ drop: true });
    const notify = Buffer.from(q);
    notify[2] = (4 << 3) | 1;
    expect(parseQuery(notify)).toMatchObject({ error: RCODE.NOTIMP, id: 7 });
    const two = Buffer.from(q);
    two.writeUInt16BE(2, 4);
    expect(parseQuery(two)).toMatchObject({ error: RCODE.FORMERR });
    expect(parseQuery(q.subarray(0, q.length - 1))).toMatchObject({ error: RCODE.FORMERR });
  });

  it('never throws on 20000 hostile packets (random, truncated, bit-flipped)', () => {
    const rand = rng(9);
    const valid = [buildQuery(1, 'api.allowed.test', 1, { edns: true }), buildQuery(2, 'a.b.c.d.e', 28)];
    let parsed = 0;
    for (let i = 0; i < 20000; i++) {
      let b: Buffer;
      const mode = i % 3;
      if (mode === 0) b = Buffer.from(Array.from({ length: Math.floor(rand() * 80) }, () => Math.floor(rand() * 256)));
      else {
        b = Buffer.from(valid[i % 2]!);
        if (mode === 1) b = b.subarray(0, Math.floor(rand() * b.length));
        else for (let k = 0; k < 3; k++) b[Math.floor(rand() * b.length)]! ^= 1 << Math.floor(rand() * 8);
      }
      const r = parseQuery(b);
      if ('ok' in r) {
        parsed++;
        expect(r.ok.name.length).toBeLessThanOrEqual(255);
        parseResponse(buildResponse(r.ok, RCODE.NOERROR, [{ address: '1.2.3.4', ttl: 5 }]));
      }
      parseResponse(b);
    }
    expect(parsed).toBeGreaterThan(100);
  });
});

describe('PinSet', () => {
  it('clamps TTLs to 30 s..10 min, keeps held pins past expiry, evicts unheld ones when full', () => {
    let t = 0;
    const pins = new PinSet(2, () => t);
    pins.add('1.1.1.1', 'a.test', 1);
    t = 29_000;
    expect(pins.lookup('1.1.1.1')).toBe('a.test');
    t = 31_000;
    expect(pins.lookup('1.1.1.1')).toBeUndefined();
    pins.add('2.2.2.2', 'b.test', 99999);
    t += 599_000;
    expect(pins.lookup('2.2.2.2')).toBe('b.test');
    const release = pins.hold('2.2.2.2');
    t += 10_000;
    expect(pins.lookup('2.2.2.2')).toBe('b.test');
    release();
    release();
    expect(pins.lookup('2.2.2.2')).toBeUndefined();
    pins.add('3.3.3.3', 'c.test', 60);
    const hold = pins.hold('3.3.3.3');
    pins.add('4.4.4.4', 'd.test', 60);
    pins.add('5.5.5.5', 'e.test', 60);
    expect(pins.size).toBe(2);
    expect(pins.lookup('3.3.3.3')).toBe('c.test'); // held: never evicted
    expect(pins.lookup('5.5.5.5')).toBe('e.test');
    expect(pins.lookup('4.4.4.4')).toBeUndefined();
    hold();
  });
});

describe('DnsServer', () => {
  const servers: Array<dgram.Socket> = [];
  afterEach(() => {
    for (const s of servers.splice(0)) s.close();
  });

  const make = (allow: string[], table: Parameters<typeof tableDialer>[0] = {}, limits = {}, delayMs = 0) => {
    const { dialer, asked } = tableDialer(table, delayMs);
    const counters = new BigInt64Array(COUNTER_SLOTS);
    const pins = new PinSet();
    const server = new DnsServer({ policy: new NetPolicy(allow), dialer, pins, hostAlias: { name: 'host.boxlite.internal', ip: '192.168.127.254' }, counters, limits });
    return { server, asked, counters, pins };
  };

  it('answers allowed names from the host resolver and pins the answers; NXDOMAIN for the rest, never asking the host', async () => {
    const { server, asked, counters, pins } = make(['*.allowed.test'], { 'api.allowed.test': [{ address: '198.18.0.10', ttl: 5 }] });
    const ok = parseResponse((await ask(server, buildQuery(1, 'API.allowed.test', QTYPE.A)))!);
    expect(ok).toEqual({ id: 1, rcode: 0, answers: [{ address: '198.18.0.10', ttl: 30 }] });
    expect(pins.lookup('198.18.0.10')).toBe('api.allowed.test');
    const no = parseResponse((await ask(server, buildQuery(2, 'blocked.test', QTYPE.A)))!);
    expect(no).toMatchObject({ id: 2, rcode: RCODE.NXDOMAIN, answers: [] });
    const apex = parseResponse((await ask(server, buildQuery(3, 'allowed.test', QTYPE.A)))!);
    expect(apex?.rcode).toBe(RCODE.NXDOMAIN);
    expect(asked).toEqual(['api.allowed.test']);
    expect(counters[COUNTER.dnsQueries]).toBe(3n);
    expect(counters[COUNTER.dnsNxdomain]).toBe(2n);
    // Cached: a second query does not ask the host again.
    await ask(server, buildQuery(4, 'api.allowed.test', QTYPE.A));
    expect(asked).toHaveLength(1);
  });

  it('AAAA and other types of allowed names: empty NOERROR; host alias always; host failures map to rcodes', async () => {
    const { server, asked } = make(['a.test', 'gone.test', 'broken.test', 'empty.test'], { 'a.test': [{ address: '1.2.3.4', ttl: 60 }], 'broken.test': 'servfail', 'empty.test': [] });
    expect(parseResponse((await ask(server, buildQuery(1, 'a.test', QTYPE.AAAA)))!)).toEqual({ id: 1, rcode: 0, answers: [] });
    expect(parseResponse((await ask(server, buildQuery(2, 'a.test', QTYPE.TXT)))!)).toEqual({ id: 2, rcode: 0, answers: [] });
    expect(parseResponse((await ask(server, buildQuery(3, 'other.test', QTYPE.TXT)))!)?.rcode).toBe(RCODE.NXDOMAIN);
    expect(asked).toEqual([]);
    expect(parseResponse((await ask(server, buildQuery(4, 'host.boxlite.internal', QTYPE.A)))!)?.answers).toEqual([{ address: '192.168.127.254', ttl: 600 }]);
    expect(parseResponse((await ask(server, buildQuery(5, 'gone.test', QTYPE.A)))!)?.rcode).toBe(RCODE.NXDOMAIN);
    expect(parseResponse((await ask(server, buildQuery(6, 'broken.test', QTYPE.A)))!)?.rcode).toBe(RCODE.SERVFAIL);
    expect(parseResponse((await ask(server, buildQuery(7, 'empty.test', QTYPE.A)))!)).toEqual({ id: 7, rcode: 0, answers: [] });
    expect(asked).toEqual(['gone.test', 'broken.test', 'empty.test']);
  });

  it('a name with bytes other than [A-Za-z0-9_-] in a label is NXDOMAIN, never looked up on the host (any policy)', async () => {
    for (const allow of [['*.allowed.test'], []]) {
      const { server, asked } = make(allow, { 'api.allowed.test': [{ address: '198.18.0.10', ttl: 60 }] });
      // "evil\\.allowed.test": c-ares/glibc would read the backslash as an escape.
      for (const [i, name] of ['evil\\.allowed.test', 'a\\046b.allowed.test', '*.allowed.test', 'a"b.allowed.test', 'a+b.allowed.test', 'a~.allowed.test'].entries()) {
        const r = parseResponse((await ask(server, buildQuery(10 + i, name, QTYPE.A)))!);
        expect(r?.rcode, `${name} under ${JSON.stringify(allow)}`).toBe(RCODE.NXDOMAIN);
      }
      expect(await server.lookup('evil\\.allowed.test')).toEqual({ rcode: RCODE.NXDOMAIN });
      expect(asked).toEqual([]);
      expect(parseResponse((await ask(server, buildQuery(20, 'api.allowed.test', QTYPE.A)))!)?.rcode).toBe(RCODE.NOERROR);
      expect(asked).toEqual(['api.allowed.test']);
    }
    expect(isLookupableName('a..b')).toBe(false);
    expect(isLookupableName('.a')).toBe(false);
    expect(isLookupableName('_srv._tcp.A-1.test')).toBe(true);
    expect(isLookupableName('')).toBe(true);
  });

  it('an IPv4 literal as a name answers itself when an IP rule allows it, without asking the host', async () => {
    const { server, asked } = make(['10.0.0.0/8', 'a.test']);
    expect(parseResponse((await ask(server, buildQuery(1, '10.1.2.3', QTYPE.A)))!)?.answers).toEqual([{ address: '10.1.2.3', ttl: 600 }]);
    expect(parseResponse((await ask(server, buildQuery(2, '11.1.2.3', QTYPE.A)))!)?.rcode).toBe(RCODE.NXDOMAIN);
    expect(asked).toEqual([]);
  });

  it('rate-limits per box and caps host lookups in flight', async () => {
    const { server, asked } = make([], {}, { burst: 5, queriesPerSecond: 1, maxInflight: 2 }, 50);
    const answers = await Promise.all(Array.from({ length: 10 }, (_, i) => ask(server, buildQuery(i, `n${i}.test`, QTYPE.A))));
    expect(answers.filter(Boolean)).toHaveLength(5);
    expect(server.stats.rateLimited).toBe(5);
    expect(asked).toHaveLength(2);
    expect(answers.filter((a) => a && parseResponse(a)?.rcode === RCODE.SERVFAIL)).toHaveLength(3);
  });

  it('answers a real resolver (c-ares via node:dns) end to end, including NXDOMAIN', async () => {
    const { server } = make(['api.allowed.test'], { 'api.allowed.test': [{ address: '198.18.0.10', ttl: 120 }] });
    const sock = dgram.createSocket('udp4');
    servers.push(sock);
    const captured: Buffer[] = [];
    sock.on('message', (msg, rinfo) => {
      captured.push(msg);
      server.handle(msg, (ans) => sock.send(ans, rinfo.port, rinfo.address));
    });
    await new Promise<void>((r) => sock.bind(0, '127.0.0.1', () => r()));
    const resolver = new dns.promises.Resolver({ timeout: 1000, tries: 1 });
    resolver.setServers([`127.0.0.1:${sock.address().port}`]);
    expect(await resolver.resolve4('api.allowed.test', { ttl: true })).toEqual([{ address: '198.18.0.10', ttl: 120 }]);
    await expect(resolver.resolve4('blocked.test')).rejects.toMatchObject({ code: 'ENOTFOUND' });
    await expect(resolver.resolve6('api.allowed.test')).rejects.toMatchObject({ code: 'ENODATA' });
    // The captured queries are real c-ares packets; they parse.
    expect(captured.length).toBeGreaterThanOrEqual(3);
    for (const c of captured) expect('ok' in parseQuery(c)).toBe(true);
  });
});

describe('seam dialer', () => {
  it('resolves only from the table and dials only the table or loopback', async () => {
    const d = createDialer({ names: { 'a.test': ['198.18.0.10'] }, dial: { '198.18.0.10:80': '127.0.0.1:1' } });
    expect(await d.resolve4('A.test.')).toEqual([{ address: '198.18.0.10', ttl: 60 }]);
    await expect(d.resolve4('example.com')).rejects.toMatchObject({ kind: 'nxdomain' });
    await expect(d.connectTcp('8.8.8.8', 53, 500)).rejects.toThrow(/test seam: no dial entry for 8\.8\.8\.8:53/);
    await expect(d.connectTcp('198.18.0.10', 443, 500)).rejects.toThrow(/no dial entry/);
    await expect(d.udp('1.1.1.1', 53)).rejects.toThrow(/no dial entry/);
    // Mapped or loopback targets are dialed (nothing listens on port 1: refused, not "no entry").
    await expect(d.connectTcp('198.18.0.10', 80, 500)).rejects.toThrow(/ECONNREFUSED/);
    await expect(d.connectTcp('127.0.0.1', 1, 500)).rejects.toThrow(/ECONNREFUSED/);
    const bad = createDialer({ names: {}, dial: { '198.18.0.1': '10.0.0.1:80' } });
    await expect(bad.connectTcp('198.18.0.1', 80, 500)).rejects.toThrow(/not on 127\.0\.0\.0\/8/);
  });
});

describe('real dialer: the name is looked up fully qualified (no host search domains)', () => {
  afterEach(() => {
    vi.restoreAllMocks();
  });

  it('c-ares and the getaddrinfo fallback get "name." ; /etc/hosts still answers without getaddrinfo', async () => {
    const asked: string[] = [];
    vi.spyOn(dns.promises.Resolver.prototype, 'resolve4').mockImplementation((async (name: string) => {
      asked.push(`c-ares ${name}`);
      throw Object.assign(new Error(`queryA ENOTFOUND ${name}`), { code: 'ENOTFOUND' });
    }) as never);
    vi.spyOn(dns.promises, 'lookup').mockImplementation((async (name: string) => {
      asked.push(`getaddrinfo ${name}`);
      return [{ address: '203.0.113.9', family: 4 }];
    }) as never);
    const dir = mkdtempSync(path.join(tmpdir(), 'boxlite-hosts-'));
    try {
      const hostsPath = path.join(dir, 'hosts');
      writeFileSync(hostsPath, '# comment\n10.9.8.7\tdev.example.test  Alias.Example.Test # trailing\n::1 dev.example.test\n');
      const d = createDialer(undefined, { hostsPath });
      expect(await d.resolve4('nope.example.com')).toEqual([{ address: '203.0.113.9', ttl: 30 }]);
      expect(asked).toEqual(['c-ares nope.example.com.', 'getaddrinfo nope.example.com.']);
      asked.length = 0;
      expect(await d.resolve4('alias.example.test')).toEqual([{ address: '10.9.8.7', ttl: 30 }]);
      expect(asked).toEqual(['c-ares alias.example.test.']);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});

describe('real dialer (loopback only: nothing leaves the machine)', () => {
  it('connects TCP with half-open sockets, maps refusals and bad targets to NetworkErrors, opens connected UDP sockets', async () => {
    const d = createDialer();
    const server = net.createServer((s) => s.end('hi'));
    await new Promise<void>((r) => server.listen(0, '127.0.0.1', () => r()));
    const port = (server.address() as net.AddressInfo).port;
    const sock = await d.connectTcp('127.0.0.1', port, 2000);
    expect(sock.allowHalfOpen).toBe(true);
    const got = await new Promise<string>((r) => {
      let b = '';
      sock.on('data', (c) => (b += c));
      sock.on('end', () => r(b));
    });
    expect(got).toBe('hi');
    sock.destroy();
    await new Promise<void>((r) => server.close(() => r()));
    await expect(d.connectTcp('127.0.0.1', port, 2000)).rejects.toThrow(/^network error: connect to 127\.0\.0\.1:\d+ failed: ECONNREFUSED/);
    await expect(d.connectTcp('not-an-ip', 80, 2000)).rejects.toThrow(/not an IPv4 address/);
    await expect(d.connectTcp('127.0.0.1', 0, 2000)).rejects.toThrow(/bad port/);
    const echo = dgram.createSocket('udp4');
    echo.on('message', (m, r) => echo.send(m, r.port, r.address));
    await new Promise<void>((r) => echo.bind(0, '127.0.0.1', () => r()));
    const u = await d.udp('127.0.0.1', echo.address().port);
    const reply = new Promise<string>((r) => u.socket.once('message', (m) => r(m.toString())));
    u.socket.send(Buffer.from('dgram'));
    expect(await reply).toBe('dgram');
    u.socket.close();
    echo.close();
  });
});

