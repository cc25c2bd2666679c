// Tunnels over REST (src/rest/server/tunnels.ts, src/rest/client/tunnel.ts) on a FakeRuntime
// whose boxes' `network.tunnel(port)` reaches local TCP servers standing in for guest ports:
// the POST route (400/401/404/409, the uri), the CONNECT (one-shot token, 401/404 for a forged,
// reused or expired one, a wrong key, 502 for a closed guest port, 404 for a removed box), bytes
// both ways with sha256 and half-close in both directions, forward() with concurrent connections,
// the 0.10 reference client's tunnel (skipped without it), and close() with tunnels open.
import { createHash, randomBytes } from 'node:crypto';
import http from 'node:http';
import net from 'node:net';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { ApiKeyCredential, BoxliteRestOptions, JsBoxlite } from '../../src/index.js';
import { NetworkError } from '../../src/errors/index.js';
import { buildRestApp } from '../../src/rest/server/app.js';
import * as S from '../../src/rest/schemas.js';
import { JsBoxTunnel } from '../../src/sdk/network.js';
import { connectTunnel } from '../../src/rest/client/tunnel.js';
import { HAVE_REF, REF_PKG } from '../fixtures/ref-client.js';
import { FakeRuntime, type FakeBox } from './rest-fake-runtime.js';
import { call, KEY, valid } from './rest-server-helpers.js';
import { checkResponses } from './rest-server-helpers.js';

const sha = (b: Buffer) => createHash('sha256').update(b).digest('hex');

/** Guest port → a local server standing in for it. */
const guestPorts = new Map<number, number>();
const servers: net.Server[] = [];
/** Connections the stand-in guest servers accepted (to check they end). */
const guestSockets = new Set<net.Socket>();

async function serve(guestPort: number, onConn: (s: net.Socket) => void): Promise<void> {
  const srv = net.createServer({ allowHalfOpen: true }, (s) => {
    guestSockets.add(s);
    s.once('close', () => guestSockets.delete(s));
    onConn(s);
  });
  await new Promise<void>((r) => srv.listen(0, '127.0.0.1', r));
  servers.push(srv);
  guestPorts.set(guestPort, (srv.address() as net.AddressInfo).port);
}

/** A FakeRuntime whose boxes have the SDK's `network`, over local TCP instead of the tunnel socket. */
class NetRuntime extends FakeRuntime {
  private withNet<T extends FakeBox | null>(b: T): T {
    if (b) {
      Object.assign(b, {
        network: {
          tunnel: async (port: number) =>
            new JsBoxTunnel(undefined, port, {
              uri: '',
              open: () =>
                new Promise((resolve, reject) => {
                  const local = guestPorts.get(port);
                  if (local === undefined) return reject(new NetworkError(`tunnel to guest port ${port}: connection refused by the guest`));
                  const s = net.connect({ host: '127.0.0.1', port: local, allowHalfOpen: true });
                  s.once('connect', () => {
                    s.pause();
                    resolve({ socket: s, head: Buffer.alloc(0) });
                  });
                  s.once('error', reject);
                }),
            }),
        },
      });
    }
    return b;
  }
  override async create(...a: Parameters<FakeRuntime['create']>) {
    return this.withNet(await super.create(...a));
  }
  override async get(idOrName: string) {
    return this.withNet(await super.get(idOrName));
  }
}

let rt: NetRuntime;
let app: ReturnType<typeof buildRestApp>;
let url: string;
let port: number;
let client: JsBoxlite;
let boxId: string;
const lines: string[] = [];

async function runningBox(): Promise<string> {
  const b = await rt.create({ image: 'alpine:latest' });
  rt.records.get(b.id)!.status = 'running';
  return b.id;
}

/** A raw CONNECT; resolves with the status, the parsed error body (if any) and the socket. */
function rawConnect(target: string, headers: Record<string, string> = {}): Promise<{ status: number; body: any; socket: net.Socket }> {
  return new Promise((resolve, reject) => {
    const req = http.request({ host: '127.0.0.1', port, method: 'CONNECT', path: target, headers: { host: target, ...headers }, agent: false });
    req.on('error', reject);
    req.on('connect', (res, socket, head) => {
      const status = res.statusCode ?? 0;
      if (status === 200) return resolve({ status, body: undefined, socket });
      let b = head;
      socket.on('data', (c: Buffer) => (b = Buffer.concat([b, c])));
      socket.on('close', () => {
        const text = b.toString('utf8');
        resolve({ status, body: text ? JSON.parse(text) : undefined, socket });
      });
    });
    req.end();
  });
}

async function mint(id = boxId, guestPort = 7000): Promise<string> {
  const r = await call(app, 'POST', `/v1/boxes/${id}/network/tunnel?port=${guestPort}`, { headers: { accept: 'application/json', host: `127.0.0.1:${port}` } });
  expect(r.status).toBe(200);
  return valid(S.TunnelDescriptor, r.json()).uri;
}

const authorityOf = (uri: string) => {
  const u = new URL(uri);
  return `${u.username}@${u.host}`;
};

async function readAll(c: { read(n: number): Promise<Buffer> }): Promise<Buffer> {
  const parts: Buffer[] = [];
  for (let b = await c.read(65536); b.length; b = await c.read(65536)) parts.push(b);
  return Buffer.concat(parts);
}

beforeAll(async () => {
  // 7000: echo (half-close passed through); 7001: sha256 of what it got, sent after the client's FIN;
  // 7002: a banner, then its own FIN, then it keeps reading (the reverse half-close).
  await serve(7000, (s) => s.pipe(s));
  await serve(7001, (s) => {
    const h = createHash('sha256');
    s.on('data', (c) => h.update(c));
    s.on('end', () => s.end(h.digest('hex')));
  });
  // 7003: writes 64 MiB as fast as the chain lets it (counting what was accepted).
  await serve(7003, (s) => {
    const chunk = Buffer.alloc(256 * 1024, 7);
    const pump = () => {
      while (flood.sent < 64 * 1024 * 1024) {
        flood.sent += chunk.length;
        if (!s.write(chunk)) return void s.once('drain', pump);
      }
      s.end();
    };
    pump();
  });
  await serve(7002, (s) => {
    let got = '';
    s.end('banner');
    s.on('data', (c) => (got += c));
    s.on('end', () => lastReverse.push(got));
  });
  rt = new NetRuntime();
  app = checkResponses(buildRestApp(rt, { apiKey: KEY, log: (l) => lines.push(l) }));
  await app.listen({ host: '127.0.0.1', port: 0 });
  port = (app.server.address() as net.AddressInfo).port;
  url = `http://127.0.0.1:${port}`;
  client = JsBoxlite.rest(new BoxliteRestOptions({ url, credential: new ApiKeyCredential(KEY) }));
  boxId = await runningBox();
});
const lastReverse: string[] = [];
const flood = { sent: 0 };

afterAll(async () => {
  await app?.close();
  for (const s of servers) s.close();
});

afterEach(() => {
  expect(lines.join('\n')).not.toMatch(/[A-Za-z0-9_-]{43}@/); // tokens never logged
});

describe('POST /boxes/{id}/network/tunnel', () => {
  it('answers a uri naming a one-shot tunnel on this server; 400 for a bad port, 404, 409, 401', async () => {
    const uri = await mint();
    expect(uri).toMatch(new RegExp(`^http://[A-Za-z0-9_-]{43}@127\\.0\\.0\\.1:${port}/$`));
    expect(await mint()).not.toBe(uri);
    for (const q of ['', '?port=0', '?port=65536', '?port=abc', '?port=80&x=1', '?port=1.5']) {
      const r = await call(app, 'POST', `/v1/boxes/${boxId}/network/tunnel${q}`);
      expect(r.status, q).toBe(400);
      expect(r.json().error.code).toBe('invalid_argument');
      expect(r.json().error.message).toMatch(/^invalid argument: /);
    }
    const nf = await call(app, 'POST', '/v1/boxes/no-such-box/network/tunnel?port=80');
    expect([nf.status, nf.json().error.code, nf.json().error.message]).toEqual([404, 'not_found', 'box not found: no-such-box']);
    const stopped = await rt.create({ image: 'alpine:latest' });
    const c = await call(app, 'POST', `/v1/boxes/${stopped.id}/network/tunnel?port=80`);
    expect([c.status, c.json().error.code]).toEqual([409, 'invalid_state']);
    expect(c.json().error.message).toMatch(/is not running/);
    const anon = await call(app, 'POST', `/v1/boxes/${boxId}/network/tunnel?port=80`, { auth: false });
    expect(anon.status).toBe(401);
    // No usable Host header: the address the request came in on.
    const noHost = await call(app, 'POST', `/v1/boxes/${boxId}/network/tunnel?port=80`, { headers: { host: 'evil/x?y' } });
    expect(noHost.json().uri).toMatch(/^http:\/\/[A-Za-z0-9_-]{43}@127\.0\.0\.1:80\/$/);
  });
});

describe('CONNECT', () => {
  it('a minted tunnel connects once; a reused, forged or unknown token gets 401 (404 without a key); a wrong key 401', async () => {
    const uri = await mint();
    const auth = authorityOf(uri);
    const wrongKey = await rawConnect(auth, { authorization: 'Bearer wrong-key-xxxxxxxx' });
    expect(wrongKey.status).toBe(401);
    expect(wrongKey.body.error.code).toBe('unauthenticated');
    // The wrong key did not spend the tunnel.
    const ok = await rawConnect(auth);
    expect(ok.status).toBe(200);
    ok.socket.write('ping');
    const echoed = await new Promise<string>((r) => ok.socket.once('data', (d) => r(d.toString())));
    expect(echoed).toBe('ping');
    ok.socket.destroy();
    // Bytes sent in the same packet as the CONNECT reach the guest too.
    const early = await new Promise<string>((resolve, reject) => {
      void mint().then((u2) => {
        const a2 = authorityOf(u2);
        const s = net.connect(port, '127.0.0.1', () => s.write(`CONNECT ${a2} HTTP/1.1\r\nHost: ${a2}\r\n\r\nearly-bytes`));
        let got = '';
        s.on('data', (d) => {
          got += d;
          if (got.includes('early-bytes')) {
            s.destroy();
            resolve(got);
          }
        });
        s.on('error', reject);
      }, reject);
    });
    expect(early).toMatch(/^HTTP\/1\.1 200 Connection Established\r\n\r\nearly-bytes$/);
    const again = await rawConnect(auth);
    expect(again.status).toBe(401);
    const token = new URL(uri).username;
    const forged = `${token.slice(0, -1)}${token.endsWith('A') ? 'B' : 'A'}@127.0.0.1:${port}`;
    expect((await rawConnect(forged)).status).toBe(401);
    expect((await rawConnect(`127.0.0.1:${port}`)).status).toBe(401);
    expect((await rawConnect('example.com:443')).status).toBe(401);

    // Without a key the token is still required: 404, and nothing is proxied.
    const open = checkResponses(buildRestApp(rt, {}));
    await open.listen({ host: '127.0.0.1', port: 0 });
    try {
      const p2 = (open.server.address() as net.AddressInfo).port;
      const r = await new Promise<number>((resolve, reject) => {
        const req = http.request({ host: '127.0.0.1', port: p2, method: 'CONNECT', path: 'example.com:80', agent: false });
        req.on('error', reject);
        req.on('connect', (res, s) => {
          s.destroy();
          resolve(res.statusCode ?? 0);
        });
        req.end();
      });
      expect(r).toBe(404);
    } finally {
      await open.close();
    }
  });

  it('a closed guest port is 502, a box removed after the POST 404, a stopped one 409: never a hang', async () => {
    const closed = await rawConnect(authorityOf(await mint(boxId, 7999)));
    expect(closed.status).toBe(502);
    expect(closed.body.error).toMatchObject({ code: 'network_unavailable', message: expect.stringMatching(/guest port 7999: connection refused/) });
    const doomed = await runningBox();
    const uri = await mint(doomed);
    rt.records.delete(doomed);
    const gone = await rawConnect(authorityOf(uri));
    expect([gone.status, gone.body.error.code]).toEqual([404, 'not_found']);
    const paused = await runningBox();
    const uri2 = await mint(paused);
    rt.records.get(paused)!.status = 'stopped';
    const st = await rawConnect(authorityOf(uri2));
    expect([st.status, st.body.error.code]).toEqual([409, 'invalid_state']);
    // Our client: the error of the CONNECT, with the server's message.
    const box = (await client.get(boxId))!;
    await expect(box.network.tunnel(7999)).rejects.toMatchObject({ code: 'Network', message: expect.stringMatching(/^network error: .*guest port 7999: connection refused/) });
  });

  it('an expired tunnel is refused', async () => {
    const { TOKEN_TTL_MS } = await import('../../src/rest/server/tunnels.js');
    const uri = await mint();
    const real = Date.now;
    Date.now = () => real() + TOKEN_TTL_MS + 1;
    try {
      expect((await rawConnect(authorityOf(uri))).status).toBe(401);
    } finally {
      Date.now = real;
    }
  });
});

describe('our client: box.network.tunnel', () => {
  it('1 MiB both ways (sha256), half-close in both directions, one-shot', async () => {
    const box = (await client.get(boxId))!;
    const data = randomBytes(1024 * 1024 + 13);

    const t = await box.network.tunnel(7000);
    expect(t.uri()).toMatch(new RegExp(`^http://[A-Za-z0-9_-]{43}@127\\.0\\.0\\.1:${port}/$`));
    const c = await t.connect();
    await expect(t.connect()).rejects.toMatchObject({ code: 'InvalidState' });
    const reading = readAll(c);
    for (let i = 0; i < data.length; i += 100_000) await c.write(data.subarray(i, i + 100_000));
    await c.shutdownWrite();
    expect(sha(await reading)).toBe(sha(data));
    await c.close();

    // The guest answers only after our FIN: the FIN went through, the way back stayed open.
    const h = await (await box.network.tunnel(7001)).connect();
    await h.write(data);
    await h.shutdownWrite();
    expect((await readAll(h)).toString()).toBe(sha(data));
    await h.close();

    // The guest's FIN first: we read EOF and can still write.
    const r = await (await box.network.tunnel(7002)).connect();
    expect((await readAll(r)).toString()).toBe('banner');
    await r.write(Buffer.from('after your FIN'));
    await r.shutdownWrite();
    await expect.poll(() => lastReverse.at(-1)).toBe('after your FIN');
    await r.close();
    await expect.poll(() => guestSockets.size).toBe(0);
  });

  it('back-pressure: a client that does not read stalls the guest instead of filling the server', async () => {
    const box = (await client.get(boxId))!;
    const c = await (await box.network.tunnel(7003)).connect();
    await new Promise((r) => setTimeout(r, 800));
    // Kernel buffers on both legs plus the SDK connection's 1 MiB read-ahead on each side: far below 64 MiB.
    const stalledAt = flood.sent;
    expect(stalledAt).toBeLessThan(24 * 1024 * 1024);
    await new Promise((r) => setTimeout(r, 300));
    expect(flood.sent).toBe(stalledAt);
    const all = await readAll(c);
    expect(all.length).toBe(64 * 1024 * 1024);
    expect(all.every((b) => b === 7)).toBe(true);
    await c.close();
  });

  it('SimpleBox-style handle and forward(): two concurrent local connections, each its own tunnel', async () => {
    const box = (await client.get(boxId))!;
    const before = lines.filter((l) => l.includes('network/tunnel')).length;
    const t = await box.network.tunnel(7000);
    const f = await t.forward({ type: 'tcp', host: '127.0.0.1', port: 0 });
    const addr = f.localAddr() as { port: number };
    const one = (payload: Buffer) =>
      new Promise<Buffer>((resolve, reject) => {
        const s = net.connect({ host: '127.0.0.1', port: addr.port, allowHalfOpen: true });
        const parts: Buffer[] = [];
        s.on('data', (d) => parts.push(d));
        s.on('end', () => {
          resolve(Buffer.concat(parts));
          s.destroy();
        });
        s.on('error', reject);
        s.end(payload);
      });
    const a = randomBytes(300_000);
    const b = randomBytes(200_000);
    const [ra, rb] = await Promise.all([one(a), one(b)]);
    expect(sha(ra)).toBe(sha(a));
    expect(sha(rb)).toBe(sha(b));
    // The first local connection used the tunnel tunnel() made; the second minted another.
    expect(lines.filter((l) => l.includes('network/tunnel')).length - before).toBe(2);
    await f.close();
    await expect.poll(() => guestSockets.size).toBe(0);
    // A forwarder that never got a connection: closing it closes the CONNECT tunnel() made.
    const idle = await (await box.network.tunnel(7000)).forward({ type: 'tcp', host: '127.0.0.1', port: 0 });
    await expect.poll(() => guestSockets.size).toBe(1);
    await idle.close();
    await expect.poll(() => guestSockets.size).toBe(0);
  });

  it('a wrong key: tunnel() fails with the auth error, nothing connects', async () => {
    const bad = JsBoxlite.rest(new BoxliteRestOptions({ url, credential: new ApiKeyCredential('not-the-key-123') }));
    const handle = (await client.get(boxId))!;
    // A handle from the bad runtime (get() itself would 401): the same box id.
    const { RestBox } = await import('../../src/rest/client/box.js');
    const { RestTransport } = await import('../../src/rest/client/transport.js');
    const badBox = new RestBox(new RestTransport(url, new ApiKeyCredential('not-the-key-123')), handle.id, null);
    await expect(badBox.network.tunnel(7000)).rejects.toMatchObject({ code: 'Config', message: expect.stringMatching(/auth: invalid or missing API key/) });
    await expect(bad.get(boxId)).rejects.toMatchObject({ code: 'Config' });
    await expect(handle.network.tunnel(0)).rejects.toThrow(RangeError);
    await expect(connectTunnel('tcp://127.0.0.1:1')).rejects.toMatchObject({ code: 'Network', message: expect.stringMatching(/unsupported scheme tcp/) });
  });
});

describe.skipIf(!HAVE_REF)('the 0.10 reference client', () => {
  it('tunnel().connect(): 1 MiB echoed (sha256), half-close; forward() with two concurrent connections', async () => {
    const ref = await import(`${REF_PKG}/dist/index.js`);
    const rc = ref.JsBoxlite.rest(new ref.BoxliteRestOptions({ url, credential: new ref.ApiKeyCredential(KEY) }));
    const box = await rc.get(boxId);
    const t = await box.network.tunnel(7000);
    expect(t.uri()).toMatch(/^http:\/\/[A-Za-z0-9_-]{43}@127\.0\.0\.1:\d+\/$/);
    const c = await t.connect();
    const data = randomBytes(1024 * 1024);
    const reading = readAll(c);
    for (let i = 0; i < data.length; i += 65536) await c.write(data.subarray(i, i + 65536));
    await c.shutdownWrite();
    expect(sha(await reading)).toBe(sha(data));
    await c.close();

    const h = await (await box.network.tunnel(7001)).connect();
    await h.write(Buffer.from('abc'));
    await h.shutdownWrite();
    expect((await readAll(h)).toString()).toBe(sha(Buffer.from('abc')));
    await h.close();

    const f = await (await box.network.tunnel(7000)).forward({ type: 'tcp', host: '127.0.0.1', port: 0 });
    const { port: lp } = f.localAddr();
    const one = (s: string) =>
      new Promise<string>((resolve, reject) => {
        const sock = net.connect({ host: '127.0.0.1', port: lp, allowHalfOpen: true });
        let got = '';
        sock.on('data', (d) => (got += d));
        sock.on('end', () => {
          resolve(got);
          sock.destroy();
        });
        sock.on('error', reject);
        sock.end(s);
      });
    expect(await Promise.all([one('first'), one('second')])).toEqual(['first', 'second']);
    await f.close();

    await expect(box.network.tunnel(7999)).rejects.toThrow(/CONNECT proxy rejected tunnel/);
  });
});

describe('close()', () => {
  it('app.close() with a tunnel open ends it and returns promptly', async () => {
    const extra = checkResponses(buildRestApp(rt, { apiKey: KEY }));
    await extra.listen({ host: '127.0.0.1', port: 0 });
    const u = `http://127.0.0.1:${(extra.server.address() as net.AddressInfo).port}`;
    const c2 = JsBoxlite.rest(new BoxliteRestOptions({ url: u, credential: new ApiKeyCredential(KEY) }));
    const conn = await (await (await c2.get(boxId))!.network.tunnel(7000)).connect();
    await conn.write(Buffer.from('x'));
    expect((await conn.read(10)).toString()).toBe('x');
    const t0 = Date.now();
    await extra.close();
    expect(Date.now() - t0).toBeLessThan(3000);
    expect((await conn.read(10)).length).toBe(0);
    await conn.close();
  });
});
