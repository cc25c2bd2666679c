// Tunnels over REST on a real VM: our server (buildRestApp on a real JsBoxlite) and, through it,
// busybox `nc -ll -e` servers in the guest, reached by OUR client (SimpleBox.network.tunnel,
// connect and forward) and by the reference's 0.10 client (skipped without it): 1 MiB each way
// with sha256, half-close (the guest answers only after our FIN), two concurrent connections,
// a closed guest port, and a wrong key / forged tunnel refused.
// Everything is imported from dist: the shim is spawned from dist/shim (see global-setup.ts).
import { createHash, randomBytes } from 'node:crypto';
import http from 'node:http';
import net, { type AddressInfo } from 'node:net';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, inject, it } from 'vitest';
import { ApiKeyCredential, BoxliteRestOptions, JsBoxlite, SimpleBox, type Box } from '../../dist/index.js';
import { buildRestApp, type RestRuntime } from '../../dist/rest/server/app.js';
import { HAVE_REF, REF_PKG } from '../fixtures/ref-client.js';

const KEY = 'rest-tunnel-key-0123';
const MIB = 1024 * 1024;
const sha = (b: Buffer) => createHash('sha256').update(b).digest('hex');

let local: JsBoxlite;
let app: ReturnType<typeof buildRestApp>;
let url: string;
let port: number;
let client: JsBoxlite;
let sb: SimpleBox;
let boxId: string;

type Conn = { read(n: number): Promise<Buffer>; write(b: Buffer): Promise<number>; shutdownWrite(): Promise<void>; close(): Promise<void> };

async function readAll(c: Conn): Promise<Buffer> {
  const parts: Buffer[] = [];
  for (let b = await c.read(65536); b.length; b = await c.read(65536)) parts.push(b);
  return Buffer.concat(parts);
}

/** Sends `data` in pieces, then FIN; resolves with everything read back until the guest's FIN. */
async function roundTrip(c: Conn, data: Buffer): Promise<Buffer> {
  const reading = readAll(c);
  for (let i = 0; i < data.length; i += 64 * 1024) await c.write(data.subarray(i, i + 64 * 1024));
  await c.shutdownWrite();
  const got = await reading;
  await c.close();
  return got;
}

beforeAll(async () => {
  local = new JsBoxlite({ homeDir: inject('home') });
  app = buildRestApp(local as unknown as RestRuntime, { apiKey: KEY, rootfsRoot: path.dirname(inject('image')), log: process.env.REST_IT_LOG ? (l) => console.log(l) : undefined });
  await app.listen({ host: '127.0.0.1', port: 0 });
  port = (app.server.address() as AddressInfo).port;
  url = `http://127.0.0.1:${port}`;
  client = JsBoxlite.rest(new BoxliteRestOptions({ url, credential: new ApiKeyCredential(KEY) }));
  sb = new SimpleBox({ runtime: client, rootfsPath: inject('image'), memoryMib: 512, name: `rest-tunnel-${process.pid}` });
  // 7000 echo, 7001 sha256 of the input (written after the client's FIN), 7002 1 MiB of random
  // bytes (also kept in /tmp/sent.bin). `nc -ll -e` forks one handler per connection.
  const setup = await sb.exec('sh', '-c', [
    'printf "#!/bin/sh\\nhead -c 1048576 /dev/urandom | tee /tmp/sent.bin\\n" > /tmp/gen.sh && chmod +x /tmp/gen.sh',
    'for s in "7000 cat" "7001 sha256sum" "7002 /tmp/gen.sh"; do set -- $s; nc -ll -p $1 -e $2 </dev/null >/dev/null 2>&1 & done',
    // Ready once all three listen (ports 7000-7002 = 0x1B58-0x1B5A, state 0A = LISTEN; nc binds ::).
    'i=0; until [ "$(cat /proc/net/tcp /proc/net/tcp6 2>/dev/null | grep -cE ":1B5[89A] 0+:0000 0A")" = 3 ]; do i=$((i+1)); [ $i -gt 100 ] && exit 9; sleep 0.1; done',
    'echo ready',
  ].join('; '));
  expect(setup).toMatchObject({ exitCode: 0, stdout: 'ready\n' });
  boxId = await sb.getId();
}, 120_000);

afterAll(async () => {
  await app?.close();
  if (boxId) await local.remove(boxId, true).catch(() => {});
  await local?.shutdown(10);
});

describe('tunnels over REST on a real VM', () => {
  it('our client (SimpleBox.network): 1 MiB each way with sha256, half-close, two concurrent connections', async () => {
    const data = randomBytes(MIB);
    const t = await sb.network.tunnel(7000);
    expect(t.uri()).toMatch(new RegExp(`^http://[A-Za-z0-9_-]{43}@127\\.0\\.0\\.1:${port}/$`));
    expect(sha(await roundTrip(await t.connect(), data))).toBe(sha(data));

    // The guest writes its hash only after reading EOF: our FIN reached it, its answer came back.
    expect((await roundTrip(await (await sb.network.tunnel(7001)).connect(), data)).toString()).toBe(`${sha(data)}  -\n`);

    const fromGuest = await roundTrip(await (await sb.network.tunnel(7002)).connect(), Buffer.alloc(0));
    expect(fromGuest.length).toBe(MIB);
    const guestSum = await sb.exec('sha256sum', '/tmp/sent.bin');
    expect(guestSum.stdout.split(' ')[0]).toBe(sha(fromGuest));

    const a = randomBytes(MIB / 2);
    const b = randomBytes(MIB / 2 + 7);
    const [ca, cb] = await Promise.all([sb.network.tunnel(7000), sb.network.tunnel(7000)].map((p) => p.then((x) => x.connect())));
    const [ra, rb] = await Promise.all([roundTrip(ca!, a), roundTrip(cb!, b)]);
    expect([sha(ra), sha(rb)]).toEqual([sha(a), sha(b)]);
  });

  it('our client: forward() serves each local connection through its own tunnel, concurrently', async () => {
    const f = await (await sb.network.tunnel(7000)).forward({ type: 'tcp', host: '127.0.0.1', port: 0 });
    const lp = (f.localAddr() as { port: number }).port;
    const one = (payload: Buffer) =>
      new Promise<Buffer>((resolve, reject) => {
        const s = net.connect({ host: '127.0.0.1', port: lp, allowHalfOpen: true });
        const parts: Buffer[] = [];
        s.on('data', (d) => parts.push(d));
        s.on('end', () => {
          resolve(Buffer.concat(parts));
          s.destroy();
        });
        s.on('error', reject);
        s.end(payload);
      });
    const a = randomBytes(256 * 1024);
    const b = randomBytes(300 * 1024);
    const [ra, rb] = await Promise.all([one(a), one(b)]);
    expect([sha(ra), sha(rb)]).toEqual([sha(a), sha(b)]);
    await f.close();
  });

  it('a closed guest port fails the tunnel; a wrong key and a forged tunnel are refused', async () => {
    const box = (await client.get(boxId)) as Box;
    await expect(box.network.tunnel(7999)).rejects.toMatchObject({ code: 'Network', message: expect.stringMatching(/^network error: .*7999/) });

    // The tunnel POST itself with a wrong key (a handle on the same box id).
    const { RestBox } = await import('../../dist/rest/client/box.js');
    const { RestTransport } = await import('../../dist/rest/client/transport.js');
    const wrong = new RestBox(new RestTransport(url, new ApiKeyCredential('wrong-key-0123456')), boxId, null);
    await expect(wrong.network.tunnel(7000)).rejects.toMatchObject({ code: 'Config', message: expect.stringMatching(/^configuration error: auth: invalid or missing API key/) });

    // A real uri with its token edited: 401, the socket closed; the real one still works after.
    const t = await box.network.tunnel(7000);
    const u = new URL(t.uri()!);
    const forged = `${u.username.slice(0, -2)}xx@${u.host}`;
    const status = await new Promise<number>((resolve, reject) => {
      const req = http.request({ host: '127.0.0.1', port, method: 'CONNECT', path: forged, headers: { host: forged } });
      req.on('error', reject);
      req.on('connect', (res, s) => {
        s.on('close', () => resolve(res.statusCode ?? 0));
        s.resume();
      });
      req.end();
    });
    expect(status).toBe(401);
    const data = randomBytes(1000);
    expect(sha(await roundTrip(await t.connect(), data))).toBe(sha(data));
  });

  it.skipIf(!HAVE_REF)('the 0.10 reference client: 1 MiB echoed with sha256, half-close, two concurrent connections', async () => {
    const ref = await import(`${REF_PKG}/dist/index.js`);
    const rc = ref.JsBoxlite.rest(new ref.BoxliteRestOptions({ url, credential: new ref.ApiKeyCredential(KEY) }));
    const box = await rc.get(boxId);
    const data = randomBytes(MIB);
    expect(sha(await roundTrip(await (await box.network.tunnel(7000)).connect(), data))).toBe(sha(data));
    expect((await roundTrip(await (await box.network.tunnel(7001)).connect(), data)).toString()).toBe(`${sha(data)}  -\n`);
    const a = randomBytes(MIB / 2);
    const b = randomBytes(MIB / 3);
    const conns = await Promise.all([box.network.tunnel(7000), box.network.tunnel(7000)].map((p: Promise<any>) => p.then((x) => x.connect())));
    const [ra, rb] = await Promise.all([roundTrip(conns[0], a), roundTrip(conns[1], b)]);
    expect([sha(ra), sha(rb)]).toEqual([sha(a), sha(b)]);
    await expect(box.network.tunnel(7999)).rejects.toThrow(/CONNECT proxy rejected tunnel/);
  });
});
