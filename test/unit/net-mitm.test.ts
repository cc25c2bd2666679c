// SecretInterceptor end to end in one process: a real TLS client (standing in for the guest)
// → a TCP socket used as the GuestStream → the interceptor (the per-boot CA's leaf) → the seam
// dialer → the HTTPS echo server of test/fixtures/netservers.ts (its own test CA, verified).
// The echo shows what upstream received; the client shows what the guest would see.
import https from 'node:https';
import net from 'node:net';
import tls from 'node:tls';
import zlib from 'node:zlib';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { WebSocket } from 'ws';
import { createBoxCa, type BoxCa } from '../../dist/net/ca.js';
import { createDialer } from '../../dist/net/dialer.js';
import { SecretInterceptor, hostMatches } from '../../dist/net/mitm.js';
import { NetPolicy } from '../../dist/net/policy.js';
import { COUNTER, COUNTER_SLOTS, type GuestStream, type SecretSpec } from '../../dist/net/types.js';
import { seamFor, startNetServers, type NetServers } from '../fixtures/netservers.js';

const VALUE = 'sk-live-REAL-9f8e7d6c5b4a';
const PH = '<BOXLITE_SECRET:API_KEY>';
const OTHER_VALUE = 'other-real-value-123';
const OTHER_PH = '<BOXLITE_SECRET:OTHER>';
const secrets: SecretSpec[] = [
  { name: 'API_KEY', value: VALUE, hosts: ['secret.test'], placeholder: PH },
  { name: 'OTHER', value: OTHER_VALUE, hosts: ['api.allowed.test'], placeholder: OTHER_PH },
];

let servers: NetServers;
let ca: BoxCa;
let interceptor: SecretInterceptor;
let front: net.Server;
let counters: BigInt64Array;
const logs: string[] = [];

beforeAll(async () => {
  servers = await startNetServers({ label: 'mitm' });
  ca = createBoxCa();
  counters = new BigInt64Array(new SharedArrayBuffer(8 * COUNTER_SLOTS));
  interceptor = new SecretInterceptor({ secrets, ca, dialer: createDialer(seamFor(servers)), counters, log: (l) => logs.push(l) });
  // The dispatcher's part: read the first bytes (the ClientHello), then hand the flow over.
  front = net.createServer({ allowHalfOpen: true }, (sock) => {
    sock.once('data', (head: Buffer) => {
      sock.pause();
      const guest = Object.assign(sock, {
        flow: { proto: 'tcp', srcIp: '192.168.127.2', srcPort: sock.remotePort!, dstIp: '198.18.0.30', dstPort: 443 },
        reset: () => sock.resetAndDestroy(),
      }) as unknown as GuestStream;
      interceptor.handle(guest, head, 'secret.test', 443);
    });
  });
  await new Promise<void>((r) => front.listen(0, '127.0.0.1', r));
});

afterAll(async () => {
  interceptor?.close();
  front?.close();
  await servers?.close();
});

const frontPort = () => (front.address() as net.AddressInfo).port;

function request(opts: { method?: string; path: string; headers?: Record<string, string>; body?: Buffer | string; servername?: string; agent?: https.Agent }): Promise<{ status: number; headers: Record<string, string | string[] | undefined>; body: Buffer }> {
  return new Promise((resolve, reject) => {
    const req = https.request(
      {
        host: '127.0.0.1',
        port: frontPort(),
        servername: opts.servername ?? 'secret.test',
        ca: ca.certPem,
        method: opts.method ?? 'GET',
        path: opts.path,
        headers: { host: opts.servername ?? 'secret.test', ...opts.headers },
        agent: opts.agent ?? false,
        checkServerIdentity: (_h, cert) => tls.checkServerIdentity(opts.servername ?? 'secret.test', cert),
      },
      (res) => {
        const parts: Buffer[] = [];
        res.on('data', (d: Buffer) => parts.push(d));
        res.on('end', () => resolve({ status: res.statusCode!, headers: res.headers, body: Buffer.concat(parts) }));
        res.on('error', reject);
      },
    );
    req.on('error', reject);
    req.end(opts.body);
  });
}

const lastRequest = () => servers.requests[servers.requests.length - 1]!;

describe('hostMatches', () => {
  it('exact names and *.wildcards below the apex, case-insensitive', () => {
    expect(hostMatches('secret.test', 'SECRET.test.')).toBe(true);
    expect(hostMatches('secret.test', 'a.secret.test')).toBe(false);
    expect(hostMatches('*.secret.test', 'a.secret.test')).toBe(true);
    expect(hostMatches('*.secret.test', 'a.b.secret.test')).toBe(true);
    expect(hostMatches('*.secret.test', 'secret.test')).toBe(false);
    expect(hostMatches('*.secret.test', 'xsecret.test')).toBe(false);
  });
});

describe('SecretInterceptor', () => {
  it('substitutes in query and headers; the echoed value comes back as the placeholder', async () => {
    const r = await request({ path: `/echo?key=${encodeURIComponent(PH)}&raw=${PH}`, headers: { authorization: `Bearer ${PH}`, 'x-other': OTHER_PH } });
    expect(r.status).toBe(200);
    const seen = lastRequest();
    expect(seen.servername).toBe('secret.test');
    expect(seen.url).toBe(`/echo?key=${encodeURIComponent(VALUE)}&raw=${VALUE}`);
    expect(seen.headers.authorization).toBe(`Bearer ${VALUE}`);
    // Only secrets whose hosts match the SNI take part.
    expect(seen.headers['x-other']).toBe(OTHER_PH);
    expect(seen.headers['accept-encoding']).toBe('identity');
    const text = r.body.toString();
    expect(text).not.toContain(VALUE);
    expect(text).toContain(`Bearer ${PH}`);
    expect(JSON.parse(text).headers.authorization).toBe(`Bearer ${PH}`);
  });

  it('substitutes in a small body (exact content-length) and a large chunked one', async () => {
    const small = `{"k":"${PH}","n":1}`;
    const r1 = await request({ method: 'POST', path: '/echo', body: small, headers: { 'content-type': 'application/json' } });
    expect(r1.status).toBe(200);
    expect(lastRequest().body).toBe(`{"k":"${VALUE}","n":1}`);
    expect(lastRequest().headers['content-length']).toBe(String(Buffer.byteLength(`{"k":"${VALUE}","n":1}`)));
    expect(r1.body.toString()).not.toContain(VALUE);

    // > 1 MiB: streamed through the replacer, goes out chunked; placeholders straddle chunks.
    const filler = 'x'.repeat(70_000);
    const big = Array.from({ length: 20 }, (_, i) => `${filler}${i}:${PH};`).join('');
    const r2 = await request({ method: 'PUT', path: '/echo', body: big });
    expect(r2.status).toBe(200);
    const got = lastRequest();
    expect(got.headers['transfer-encoding']).toBe('chunked');
    expect(got.bodyBytes).toBe(Buffer.byteLength(big.split(PH).join(VALUE)));
    // The recorded body is capped at 1 MiB; what it holds has every placeholder substituted.
    expect(got.body).not.toContain(PH);
    expect(got.body.split(VALUE).length - 1).toBeGreaterThanOrEqual(14);
    // The echo of a >1 MiB body is streamed back through the reverse replacer.
    expect(r2.body.includes(Buffer.from(VALUE))).toBe(false);
  });

  it('keeps the guest connection alive across requests and counts upstream traffic', async () => {
    const agent = new https.Agent({ keepAlive: true, maxSockets: 1 });
    const before = Atomics.load(counters, COUNTER.bytesSent);
    const ports = new Set<number>();
    for (let i = 0; i < 3; i++) {
      const r = await request({ path: `/n/${i}?t=${PH}`, agent });
      expect(r.status).toBe(200);
      expect(lastRequest().url).toBe(`/n/${i}?t=${VALUE}`);
      ports.add(lastRequest().remotePort);
    }
    agent.destroy();
    // Upstream pooled too: one upstream connection served the three requests.
    expect(ports.size).toBe(1);
    // Counted per response, while the pooled upstream connection is still open.
    expect(Atomics.load(counters, COUNTER.bytesSent)).toBeGreaterThan(before);
    expect(Atomics.load(counters, COUNTER.bytesReceived)).toBeGreaterThan(0n);
    expect(Atomics.load(counters, COUNTER.tcpConnections)).toBeGreaterThan(0n);
  });

  it('refuses a Host header naming another site than the SNI (421)', async () => {
    const n = servers.requests.length;
    const r = await request({ path: `/?k=${PH}`, headers: { host: 'other.test' } });
    expect(r.status).toBe(421);
    expect(servers.requests.length).toBe(n);
  });

  it('decodes compressed responses so the value cannot slip through', async () => {
    // A stand-in upstream that ignores accept-encoding: identity and gzips a body carrying the value.
    const srv = https.createServer({ SNICallback: (_n, cb) => cb(null, ca.secureContextFor('gz.test')) }, (req, res) => {
      res.writeHead(200, { 'content-encoding': 'gzip', 'x-echo': req.headers.authorization ?? '' });
      res.end(zlib.gzipSync(`token=${VALUE}`));
    });
    await new Promise<void>((r) => srv.listen(0, '127.0.0.1', r));
    const port = (srv.address() as net.AddressInfo).port;
    const gz = new SecretInterceptor({
      secrets: [{ name: 'API_KEY', value: VALUE, hosts: ['gz.test'], placeholder: PH }],
      ca,
      dialer: createDialer({ names: { 'gz.test': ['198.18.0.40'] }, dial: { '198.18.0.40:443': `127.0.0.1:${port}` }, upstreamCa: [ca.certPem] }),
      counters,
      log: () => {},
    });
    const f = net.createServer((sock) => sock.once('data', (head: Buffer) => gz.handle(Object.assign(sock, { flow: {} as never, reset: () => sock.destroy() }) as unknown as GuestStream, head, 'gz.test', 443)));
    await new Promise<void>((r) => f.listen(0, '127.0.0.1', r));
    try {
      const body = await new Promise<{ headers: Record<string, unknown>; text: string }>((resolve, reject) => {
        https
          .get({ host: '127.0.0.1', port: (f.address() as net.AddressInfo).port, servername: 'gz.test', ca: ca.certPem, headers: { host: 'gz.test', authorization: PH }, checkServerIdentity: () => undefined }, (res) => {
            let t = '';
            res.setEncoding('latin1');
            res.on('data', (d) => (t += d));
            res.on('end', () => resolve({ headers: res.headers, text: t }));
          })
          .on('error', reject);
      });
      expect(body.headers['content-encoding']).toBeUndefined();
      expect(body.headers['x-echo']).toBe(PH);
      expect(body.text).toBe(`token=${PH}`);
    } finally {
      gz.close();
      f.close();
      srv.close();
    }
  });

  it('substitutes the WebSocket handshake, then carries frames', async () => {
    const ws = new WebSocket(`wss://127.0.0.1:${frontPort()}/ws?token=${encodeURIComponent(PH)}`, {
      servername: 'secret.test',
      ca: ca.certPem,
      headers: { host: 'secret.test', 'x-api-key': PH },
      checkServerIdentity: () => undefined,
    } as never);
    const echoed = await new Promise<string>((resolve, reject) => {
      ws.once('open', () => ws.send('hello through the interceptor'));
      ws.once('message', (d) => resolve(String(d)));
      ws.once('error', reject);
    });
    ws.close();
    expect(echoed).toBe('hello through the interceptor');
    const hs = servers.requests.filter((r) => r.proto === 'wss').at(-1)!;
    expect(hs.headers['x-api-key']).toBe(VALUE);
    expect(hs.url).toBe(`/ws?token=${encodeURIComponent(VALUE)}`);
  });

  it('answers 502 when the upstream is unreachable, counted as a TCP error', async () => {
    const broken = new SecretInterceptor({
      secrets,
      ca,
      dialer: createDialer({ names: { 'secret.test': ['198.18.0.30'] }, dial: {}, upstreamCa: [] }),
      counters,
      log: (l) => logs.push(l),
    });
    const f = net.createServer((sock) => sock.once('data', (head: Buffer) => broken.handle(Object.assign(sock, { flow: {} as never, reset: () => sock.destroy() }) as unknown as GuestStream, head, 'secret.test', 443)));
    await new Promise<void>((r) => f.listen(0, '127.0.0.1', r));
    const before = Atomics.load(counters, COUNTER.tcpErrors);
    try {
      const r = await new Promise<number>((resolve, reject) => {
        https
          .get({ host: '127.0.0.1', port: (f.address() as net.AddressInfo).port, servername: 'secret.test', ca: ca.certPem, headers: { host: 'secret.test' }, checkServerIdentity: () => undefined }, (res) => {
            res.resume();
            resolve(res.statusCode!);
          })
          .on('error', reject);
      });
      expect(r).toBe(502);
      expect(Atomics.load(counters, COUNTER.tcpErrors)).toBe(before + 1n);
    } finally {
      broken.close();
      f.close();
    }
  });

  it('verifies the upstream certificate (an upstream the dialer CA does not vouch for → 502)', async () => {
    const untrusted = new SecretInterceptor({
      secrets,
      ca,
      // The real https server but without its test CA: verification must fail.
      dialer: ((d) => ({ resolve4: (n: string) => d.resolve4(n), connectTcp: (ip: string, p: number, t: number) => d.connectTcp(ip, p, t), udp: (ip: string, p: number) => d.udp(ip, p), upstreamCa: [] }))(createDialer(seamFor(servers))),
      counters,
      log: (l) => logs.push(l),
    });
    const f = net.createServer((sock) => sock.once('data', (head: Buffer) => untrusted.handle(Object.assign(sock, { flow: {} as never, reset: () => sock.destroy() }) as unknown as GuestStream, head, 'secret.test', 443)));
    await new Promise<void>((r) => f.listen(0, '127.0.0.1', r));
    const n = servers.requests.length;
    try {
      const status = await new Promise<number>((resolve, reject) => {
        https
          .get({ host: '127.0.0.1', port: (f.address() as net.AddressInfo).port, servername: 'secret.test', ca: ca.certPem, path: `/?k=${PH}`, headers: { host: 'secret.test' }, checkServerIdentity: () => undefined }, (res) => {
            res.resume();
            resolve(res.statusCode!);
          })
          .on('error', reject);
      });
      expect(status).toBe(502);
      expect(servers.requests.length).toBe(n);
      expect(logs.some((l) => /certificate/i.test(l))).toBe(true);
    } finally {
      untrusted.close();
      f.close();
    }
  });

  it('survives hostile guests: garbage instead of a ClientHello, junk after TLS, a silent peer', async () => {
    const port = frontPort();
    // Not TLS at all: the TLS server fails, the flow is closed, nothing throws.
    await new Promise<void>((resolve) => {
      const s = net.connect(port, '127.0.0.1', () => s.write(Buffer.alloc(4096, 0x41)));
      s.on('error', () => resolve());
      s.on('close', () => resolve());
    });
    // TLS, then bytes that are not HTTP: 400 and close.
    const status = await new Promise<string>((resolve, reject) => {
      const s = tls.connect({ host: '127.0.0.1', port, servername: 'secret.test', ca: ca.certPem, checkServerIdentity: () => undefined }, () => s.write('\x00\x01 NOT HTTP\r\n\r\n'));
      let got = '';
      s.on('data', (d) => (got += d));
      s.on('end', () => resolve(got.split('\r\n')[0]!));
      s.on('close', () => resolve(got.split('\r\n')[0]!));
      s.on('error', reject);
    });
    expect(status).toBe('HTTP/1.1 400 Bad Request');
    // A request whose head exceeds node's 16 KiB limit: refused, upstream never contacted.
    const n = servers.requests.length;
    const big = await new Promise<string>((resolve, reject) => {
      const s = tls.connect({ host: '127.0.0.1', port, servername: 'secret.test', ca: ca.certPem, checkServerIdentity: () => undefined }, () =>
        s.write(`GET / HTTP/1.1\r\nHost: secret.test\r\nX-Big: ${'a'.repeat(64 * 1024)}\r\n\r\n`),
      );
      let got = '';
      s.on('data', (d) => (got += d));
      s.on('close', () => resolve(got.split('\r\n')[0]!));
      s.on('error', () => resolve(got.split('\r\n')[0]!));
      void reject;
    });
    // 431, unless the reset of the unread upload overtakes it (TCP discards it then).
    expect(['HTTP/1.1 431 Request Header Fields Too Large', '']).toContain(big);
    expect(servers.requests.length).toBe(n);
    // The interceptor still serves.
    expect((await request({ path: `/after?k=${PH}` })).status).toBe(200);
  });

  it('never logs a value', () => {
    expect(logs.join('\n')).not.toContain(VALUE);
  });
});

// ---- review findings: each test below failed before its fix ------------------------------------

interface Seen {
  method: string;
  url: string;
  rawHeaders: string[];
  body: Buffer;
}

/**
 * A stand-in upstream for `host` (its leaf from the box CA, trusted through the seam dialer)
 * behind an interceptor of its own. `handler` answers; `seen` records what upstream received,
 * raw header lines included (the shared echo server folds repeated headers).
 */
async function rig(opts: {
  handler?: (req: import('node:http').IncomingMessage, res: import('node:http').ServerResponse, body: Buffer) => void;
  secrets?: SecretSpec[];
  host?: string;
  resolveTo?: string;
  limits?: Record<string, number>;
  onUpgrade?: boolean;
  extra?: Record<string, unknown>;
}) {
  const host = opts.host ?? 'secret.test';
  const seen: Seen[] = [];
  let conns = 0;
  const srv = https.createServer({ SNICallback: (_n, cb) => cb(null, ca.secureContextFor(host)) }, (req, res) => {
    const parts: Buffer[] = [];
    req.on('data', (d: Buffer) => parts.push(d));
    req.on('end', () => {
      const body = Buffer.concat(parts);
      seen.push({ method: req.method!, url: req.url!, rawHeaders: req.rawHeaders, body });
      if (opts.handler) opts.handler(req, res, body);
      else res.end('ok');
    });
  });
  srv.on('connection', () => conns++);
  if (opts.onUpgrade) {
    srv.on('upgrade', (req, socket) => {
      seen.push({ method: req.method!, url: req.url!, rawHeaders: req.rawHeaders, body: Buffer.alloc(0) });
      socket.end('HTTP/1.1 403 Forbidden\r\ncontent-length: 0\r\n\r\n');
    });
  }
  await new Promise<void>((r) => srv.listen(0, '127.0.0.1', r));
  const ip = opts.resolveTo ?? '198.18.0.50';
  const port = (srv.address() as net.AddressInfo).port;
  const sec = new SecretInterceptor({
    secrets: opts.secrets ?? [{ name: 'API_KEY', value: VALUE, hosts: [host], placeholder: PH }],
    ca,
    dialer: createDialer({ names: { [host]: [ip] }, dial: { [`${ip}:443`]: `127.0.0.1:${port}` }, upstreamCa: [ca.certPem] }),
    counters,
    log: (l) => logs.push(l),
    ...(opts.limits ? { limits: opts.limits } : {}),
    ...opts.extra,
  } as ConstructorParameters<typeof SecretInterceptor>[0]);
  const guests: net.Socket[] = [];
  const f = net.createServer({ allowHalfOpen: true }, (sock) =>
    sock.once('data', (head: Buffer) => {
      sock.pause();
      guests.push(sock);
      sec.handle(Object.assign(sock, { flow: {} as never, reset: () => sock.destroy() }) as unknown as GuestStream, head, host, 443);
    }),
  );
  await new Promise<void>((r) => f.listen(0, '127.0.0.1', r));
  return {
    seen,
    conns: () => conns,
    /** Bytes the interceptor has taken from each guest connection so far. */
    guestBytesRead: () => guests.map((g) => g.bytesRead),
    port: (f.address() as net.AddressInfo).port,
    close: () => {
      sec.close();
      f.close();
      srv.closeAllConnections();
      srv.close();
    },
  };
}

/** Raw bytes over TLS; resolves with what came back once `done(text)` holds, at close, or after waitMs. */
function raw(port: number, text: string | Buffer[], opts: { waitMs?: number; done?: (got: string) => boolean; servername?: string } = {}): Promise<string> {
  return new Promise((resolve) => {
    let got = '';
    const s = tls.connect({ host: '127.0.0.1', port, servername: opts.servername ?? 'secret.test', ca: ca.certPem, checkServerIdentity: () => undefined }, async () => {
      for (const part of typeof text === 'string' ? [text] : text) if (!s.write(part)) await new Promise((r) => s.once('drain', r));
    });
    const finish = () => {
      clearTimeout(timer);
      s.destroy();
      resolve(got);
    };
    const timer = setTimeout(finish, opts.waitMs ?? 3000);
    s.on('data', (d: Buffer) => {
      got += d.toString('latin1');
      if (opts.done?.(got)) finish();
    });
    s.on('close', finish);
    s.on('error', finish);
  });
}

const statusOf = (r: string) => r.split('\r\n')[0];
/** The values of every header line named `name` (any case), in order. */
const headerValues = (rawHeaders: string[], name: string) => rawHeaders.flatMap((h, i) => (i % 2 === 0 && h.toLowerCase() === name ? [rawHeaders[i + 1]!] : []));
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

describe('SecretInterceptor: review findings', () => {
  it('refuses a second Host header in another case (400) and sends the SNI name as the one Host', async () => {
    const r = await rig({ onUpgrade: true });
    try {
      const two = await raw(r.port, `GET /x HTTP/1.1\r\nHost: secret.test\r\nhost: evil.example\r\nAuthorization: Bearer ${PH}\r\n\r\n`);
      expect(statusOf(two)).toBe('HTTP/1.1 400 Bad Request');
      const ws = await raw(r.port, `GET /ws HTTP/1.1\r\nHost: secret.test\r\nHOST: evil.example\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\nX-Key: ${PH}\r\n\r\n`);
      expect(statusOf(ws)).toBe('HTTP/1.1 400 Bad Request');
      expect(r.seen).toHaveLength(0);
      // One Host (another spelling of the SNI name): upstream gets exactly one, the SNI's.
      const ok = await raw(r.port, `GET /y HTTP/1.1\r\nHost: SECRET.test.\r\nX-A: 1\r\nx-a: ${PH}\r\n\r\n`, { done: (g) => g.endsWith('ok') });
      expect(statusOf(ok)).toBe('HTTP/1.1 200 OK');
      expect(headerValues(r.seen[0]!.rawHeaders, 'host')).toEqual(['secret.test']);
      expect(headerValues(r.seen[0]!.rawHeaders, 'x-a')).toEqual(['1', VALUE]);
      // The WebSocket path as well.
      await raw(r.port, `GET /ws HTTP/1.1\r\nHost: Secret.Test\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n`);
      expect(headerValues(r.seen[1]!.rawHeaders, 'host')).toEqual(['secret.test']);
    } finally {
      r.close();
    }
  });

  it('refuses absolute-form request targets (400); OPTIONS * still passes', async () => {
    const r = await rig({ onUpgrade: true });
    try {
      const abs = await raw(r.port, `GET https://evil.example/x?k=${PH} HTTP/1.1\r\nHost: secret.test\r\n\r\n`);
      expect(statusOf(abs)).toBe('HTTP/1.1 400 Bad Request');
      const absWs = await raw(r.port, `GET wss://evil.example/ws HTTP/1.1\r\nHost: secret.test\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n`);
      expect(statusOf(absWs)).toBe('HTTP/1.1 400 Bad Request');
      expect(r.seen).toHaveLength(0);
      const star = await raw(r.port, `OPTIONS * HTTP/1.1\r\nHost: secret.test\r\n\r\n`, { done: (g) => g.endsWith('ok') });
      expect(statusOf(star)).toBe('HTTP/1.1 200 OK');
      expect(r.seen[0]!.url).toBe('*');
    } finally {
      r.close();
    }
  });

  it('drops Range and If-Range, and redacts base64, JSON-escaped and mixed-case percent forms of the value', async () => {
    const value = 'sk/live+K3y<&>=:?~_.9f8e7d6c';
    const ph = '<BOXLITE_SECRET:WEIRD>';
    const b64 = (s: string) => Buffer.from(s).toString('base64');
    const b64url = (s: string) => Buffer.from(s).toString('base64url');
    const pct = encodeURIComponent(value).replace(/%[0-9A-F]{2}/g, (m, i: number) => (i % 2 ? m.toLowerCase() : m));
    const pctAll = [...Buffer.from(value)].map((b) => `%${b.toString(16).padStart(2, '0')}`).join('');
    const forms: Record<string, string> = {
      b64: b64(value),
      b64url: b64url(value),
      b64in1: b64(`x${value}`),
      b64in2: b64(`xy${value}tail`),
      b64urlIn1: b64url(`z${value}!`),
      jsonSlash: JSON.stringify(value).slice(1, -1).replace(/\//g, '\\/'),
      jsonU: [...value].map((c) => (/[A-Za-z0-9]/.test(c) ? c : `\\u${c.charCodeAt(0).toString(16).padStart(4, '0')}`)).join(''),
      jsonUUpper: [...value].map((c) => (/[A-Za-z0-9]/.test(c) ? c : `\\u${c.charCodeAt(0).toString(16).toUpperCase().padStart(4, '0')}`)).join(''),
      jsonGo: JSON.stringify(value).slice(1, -1).replace(/[<>&]/g, (c) => `\\u00${c.charCodeAt(0).toString(16)}`),
      pctMixed: pct,
      pctAll,
    };
    const decoders: Record<string, (s: string) => string> = {
      b64: (s) => Buffer.from(s, 'base64').toString('latin1'),
      b64url: (s) => Buffer.from(s, 'base64url').toString('latin1'),
      json: (s) => JSON.parse(`"${s}"`) as string,
      pct: (s) => decodeURIComponent(s),
    };
    const r = await rig({
      secrets: [{ name: 'WEIRD', value, hosts: ['secret.test'], placeholder: ph }],
      handler: (_req, res) => {
        const body = JSON.stringify(forms).replace(/\\\\/g, '\\');
        res.writeHead(200, { 'content-type': 'application/json', 'x-b64': forms.b64!, 'x-pct': forms.pctMixed! });
        res.end(body);
      },
    });
    try {
      const res = await new Promise<{ headers: Record<string, unknown>; text: string }>((resolve, reject) => {
        https
          .get({ host: '127.0.0.1', port: r.port, servername: 'secret.test', ca: ca.certPem, path: '/f', headers: { host: 'secret.test', range: 'bytes=0-3', 'if-range': '"x"' }, checkServerIdentity: () => undefined }, (m) => {
            let t = '';
            m.setEncoding('latin1');
            m.on('data', (d) => (t += d));
            m.on('end', () => resolve({ headers: m.headers, text: t }));
          })
          .on('error', reject);
      });
      const up = r.seen.at(-1)!;
      expect(headerValues(up.rawHeaders, 'range')).toEqual([]);
      expect(headerValues(up.rawHeaders, 'if-range')).toEqual([]);
      expect(res.text).not.toContain(value);
      // The body is {"name":"<form, JSON-escaped once more>"}: undo our own escaping first.
      const received = JSON.parse(res.text.replace(/\\/g, '\\\\')) as Record<string, string>;
      for (const [k, v] of Object.entries(received)) {
        const dec = k.startsWith('b64url') ? decoders.b64url! : k.startsWith('b64') ? decoders.b64! : k.startsWith('json') ? decoders.json! : decoders.pct!;
        let plain = '';
        try {
          plain = dec(v);
        } catch {
          plain = '';
        }
        expect(plain, `${k}: ${v}`).not.toContain(value);
        // In the exact (unembedded) forms the guest reads the placeholder back.
        if (['b64', 'b64url', 'jsonSlash', 'jsonU', 'jsonGo', 'pctMixed', 'pctAll'].includes(k)) expect(plain, k).toBe(ph);
      }
      expect(decoders.b64!(res.headers['x-b64'] as string)).toBe(ph);
      expect(decoders.pct!(res.headers['x-pct'] as string)).toBe(ph);
    } finally {
      r.close();
    }
  });

  it('handles one request at a time per guest connection (pipelined bodies are not read ahead)', async () => {
    const held: Array<import('node:http').ServerResponse> = [];
    let answer = false;
    const r = await rig({
      handler: (req, res) => {
        if (answer) res.end(`done ${req.url}`);
        else held.push(res);
      },
    });
    try {
      const body = Buffer.alloc(1 << 20, 0x61);
      const parts: Buffer[] = [];
      for (let i = 0; i < 4; i++) parts.push(Buffer.from(`POST /p${i} HTTP/1.1\r\nHost: secret.test\r\nContent-Length: ${body.length}\r\n\r\n`), body);
      const pending = raw(r.port, parts, { waitMs: 10000, done: (g) => g.includes('done /p3') });
      await sleep(1000);
      // Upstream has the first only; the others wait unread in the guest's TCP window: of the
      // 4 MiB sent, the first body and some stream buffers were read, not the rest.
      expect(r.seen.map((s) => s.url)).toEqual(['/p0']);
      expect(r.guestBytesRead()[0]).toBeGreaterThan(1 << 20);
      expect(r.guestBytesRead()[0]).toBeLessThan((1 << 20) + 512 * 1024);
      answer = true;
      for (const res of held.splice(0)) res.end('done /p0');
      const out = await pending;
      expect(out.match(/done \/p\d/g)).toEqual(['done /p0', 'done /p1', 'done /p2', 'done /p3']);
    } finally {
      r.close();
    }
  });

  it('never opens more upstream connections than maxSockets (32), whatever the guest opens', async () => {
    const held: Array<import('node:http').ServerResponse> = [];
    const r = await rig({ handler: (_req, res) => held.push(res) });
    try {
      const guests = Array.from({ length: 40 }, () => raw(r.port, `GET / HTTP/1.1\r\nHost: secret.test\r\n\r\n`, { waitMs: 2500 }));
      await sleep(1500);
      expect(r.conns()).toBeLessThanOrEqual(32);
      expect(r.seen.length).toBeLessThanOrEqual(32);
      for (const res of held.splice(0)) res.end('x');
      await Promise.all(guests);
    } finally {
      r.close();
    }
  });

  it('bounds the requests waiting for an upstream connection (503) and the in-memory bodies', async () => {
    const held: Array<import('node:http').ServerResponse> = [];
    const r = await rig({ handler: (_req, res) => held.push(res), limits: { maxInFlight: 3, maxWaiting: 2, bodyBudget: 1 << 20 } });
    try {
      const body = Buffer.alloc(600 * 1024, 0x62);
      const guests = Array.from({ length: 7 }, (_, i) =>
        raw(r.port, [Buffer.from(`POST /b${i} HTTP/1.1\r\nHost: secret.test\r\nContent-Length: ${body.length}\r\n\r\n`), body], { waitMs: 4000, done: (g) => g.startsWith('HTTP/1.1 503') && g.includes('\r\n\r\n') }),
      );
      await sleep(2000);
      expect(r.conns()).toBe(3);
      expect(r.seen).toHaveLength(3);
      // 1 MiB of buffered bodies: one 600 KiB body kept its length, the others were streamed.
      const cl = r.seen.filter((s) => headerValues(s.rawHeaders, 'content-length').length === 1);
      const chunked = r.seen.filter((s) => headerValues(s.rawHeaders, 'transfer-encoding')[0] === 'chunked');
      expect([cl.length, chunked.length]).toEqual([1, 2]);
      for (const res of held.splice(0)) res.end('x');
      const results = await Promise.all(guests);
      expect(results.filter((g) => statusOf(g) === 'HTTP/1.1 503 Service Unavailable')).toHaveLength(2);
    } finally {
      r.close();
    }
  });

  it('a placeholder that cannot be a header value is a 502, not a crash', async () => {
    const r = await rig({
      secrets: [{ name: 'U', value: VALUE, hosts: ['secret.test'], placeholder: 'PLACE-\u00fc\u4e2d-HOLDER' }],
      handler: (_req, res) => {
        res.writeHead(200, { 'x-echo': VALUE });
        res.end('ok');
      },
    });
    try {
      const got = await raw(r.port, `GET / HTTP/1.1\r\nHost: secret.test\r\n\r\n`, { done: (g) => g.includes('\r\n\r\n') });
      expect(statusOf(got)).toBe('HTTP/1.1 502 Bad Gateway');
      expect(got).not.toContain(VALUE);
    } finally {
      r.close();
    }
  });

  it('never dials an address the dispatcher would refuse (loopback, metadata, private, the link subnet)', async () => {
    const link = { guestIp: '192.168.127.2', gatewayIp: '192.168.127.1', hostAliasIp: '192.168.127.254', prefixLength: 24 } as never;
    const cases: Array<[string, Record<string, unknown>]> = [
      ['127.0.0.1', {}],
      ['169.254.169.254', {}],
      ['0.0.0.0', {}],
      ['192.168.127.9', { link, policy: new NetPolicy([]) }],
      ['10.1.2.3', { link, policy: new NetPolicy(['secret.test']) }],
    ];
    for (const [ip, extra] of cases) {
      const r = await rig({ resolveTo: ip, extra });
      try {
        const got = await raw(r.port, `GET /?k=${PH} HTTP/1.1\r\nHost: secret.test\r\n\r\n`, { done: (g) => g.includes('\r\n\r\n') });
        expect(statusOf(got), ip).toBe('HTTP/1.1 502 Bad Gateway');
        expect(r.conns(), ip).toBe(0);
      } finally {
        r.close();
      }
    }
    expect(logs.some((l) => /secret\.test resolves to no address a flow may reach/.test(l))).toBe(true);
  });
});
