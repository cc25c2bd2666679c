// OUR REST client (JsBoxlite.rest) against OUR server (buildRestApp) on the FakeRuntime, over a
// real socket: the box lifecycle, exec with streamed stdout/stderr, stdin, exit codes, the
// UTF-8 decoder, resize/signal/kill, `user` honoured, copyIn/copyOut, metrics and errors.
// The same scenarios as the reference client's in rest-exec-ref010.test.ts.
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import type { AddressInfo } from 'node:net';
import type { FastifyInstance } from 'fastify';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { ApiKeyCredential, BoxliteRestOptions, JsBoxlite } from '../../src/index.js';
import { buildRestApp } from '../../src/rest/server/app.js';
import { FakeRuntime } from './rest-fake-runtime.js';

const KEY = 'our-client-key';
let rt: FakeRuntime;
let app: FastifyInstance;
let url: string;
let client: JsBoxlite;
let tmp: string;

async function drain(s: { next(): Promise<string | null> }): Promise<string> {
  let t = '';
  for (let c = await s.next(); c !== null; c = await s.next()) t += c;
  return t;
}

beforeAll(async () => {
  rt = new FakeRuntime();
  app = buildRestApp(rt, { apiKey: KEY }) as unknown as FastifyInstance;
  await app.listen({ host: '127.0.0.1', port: 0 });
  url = `http://127.0.0.1:${(app.server.address() as AddressInfo).port}`;
  client = JsBoxlite.rest(new BoxliteRestOptions({ url, credential: new ApiKeyCredential(KEY) }));
  tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'boxlite-our-client-'));
});
afterAll(async () => {
  await app?.close();
  rt?.dispose();
  if (tmp) fs.rmSync(tmp, { recursive: true, force: true });
});

describe('our REST client against our server', () => {
  it('create, get, getInfo, listInfo, start, stop, remove, and the error table', async () => {
    const box = await client.create({ image: 'alpine:latest' }, 'our-b1');
    expect(box.name).toBe('our-b1');
    expect((await client.get('our-b1'))!.id).toBe(box.id);
    expect(await client.get('no-such-box')).toBeNull();
    expect(await client.getInfo('our-b1')).toMatchObject({ id: box.id, name: 'our-b1', state: { status: 'configured', running: false } });
    expect((await client.listInfo()).map((i) => i.id)).toContain(box.id);
    await box.start();
    expect((await box.info()).state).toMatchObject({ status: 'running', running: true });
    await box.stop();
    await expect(client.create({ image: 'alpine:latest' }, 'our-b1')).rejects.toMatchObject({ code: 'AlreadyExists' });
    await expect(client.create({ image: 'alpine:latest', cpus: 0 })).rejects.toMatchObject({ code: 'InvalidArgument' });
    await client.remove(box.id, false);
    expect(await client.getInfo(box.id)).toBeNull();
    await expect(client.remove(box.id, true)).rejects.toMatchObject({ code: 'NotFound' });
    const anon = JsBoxlite.rest(new BoxliteRestOptions({ url }));
    await expect(anon.listInfo()).rejects.toThrow(/^configuration error: auth: /);
  });

  it('exec: stdout, stderr, stdin, exit codes, UTF-8, a large output, user honoured', async () => {
    const box = await client.create({ image: 'alpine:latest' }, 'our-exec');
    const ex = await box.exec('echo', ['hi', 'there'], [['K', 'V']], false, 'nobody', null, '/tmp');
    expect(await drain(await ex.stdout())).toBe('hi there\n');
    expect((await ex.wait()).exitCode).toBe(0);
    expect(rt.processes.at(-1)!.call).toMatchObject({ user: 'nobody', workingDir: '/tmp', env: [['K', 'V']] });
    const cat = await box.exec('cat');
    const stdin = await cat.stdin();
    await stdin.writeString('piped\n');
    await stdin.close();
    expect(await drain(await cat.stdout())).toBe('piped\n');
    expect((await cat.wait()).exitCode).toBe(0);
    const fail = await box.exec('fail', ['7']);
    expect(await drain(await fail.stderr())).toBe('failed\n');
    expect((await fail.wait()).exitCode).toBe(7);
    const u = await box.exec('utf8');
    expect(await drain(await u.stdout())).toBe('héllo wörld €\n');
    const big = await box.exec('big', [String(6 * 1024 * 1024)]);
    expect((await drain(await big.stdout())).length).toBe(6 * 1024 * 1024);
    expect((await big.wait()).exitCode).toBe(0);
  });

  it('resize, signal and kill, and a timeout', async () => {
    const box = await client.create({ image: 'alpine:latest' }, 'our-ctl');
    const ex = await box.exec('sleep', null, null, true);
    await ex.resizeTty(30, 100);
    await ex.signal(10);
    await ex.kill();
    expect((await ex.wait()).exitCode).toBe(-9);
    const p = rt.processes.find((q) => q.call.box === box.id)!;
    expect(p.resizes).toEqual([{ rows: 30, cols: 100 }]);
    expect(p.signals).toEqual([10, 9]);
    const t = await box.exec('sleep', null, null, false, null, 0.2);
    expect((await t.wait()).exitCode).toBe(-9);
  });

  it('copyIn / copyOut of a file and a directory', async () => {
    const box = await client.create({ image: 'alpine:latest' }, 'our-files');
    fs.writeFileSync(path.join(tmp, 'up.txt'), 'UP');
    fs.mkdirSync(path.join(tmp, 'tree/sub'), { recursive: true });
    fs.writeFileSync(path.join(tmp, 'tree/a.txt'), 'A');
    fs.writeFileSync(path.join(tmp, 'tree/sub/b.txt'), 'B');
    await box.copyIn(path.join(tmp, 'up.txt'), '/tmp/x.txt');
    await box.copyIn(path.join(tmp, 'tree'), '/data');
    const fb = (await rt.get('our-files'))!;
    expect(fs.readFileSync(path.join(fb.root, 'tmp/x.txt'), 'utf8')).toBe('UP');
    expect(fs.readFileSync(path.join(fb.root, 'data/sub/b.txt'), 'utf8')).toBe('B');
    await box.copyOut('/tmp/x.txt', path.join(tmp, 'back.txt'));
    expect(fs.readFileSync(path.join(tmp, 'back.txt'), 'utf8')).toBe('UP');
    await box.copyOut('/data', path.join(tmp, 'backdir'));
    expect(fs.readFileSync(path.join(tmp, 'backdir/data/sub/b.txt'), 'utf8')).toBe('B');
  });

  it('a 9 MiB file streams both ways (chunked upload past the buffered size)', async () => {
    const box = await client.create({ image: 'alpine:latest' }, 'our-big');
    const data = Buffer.alloc(9 * 1024 * 1024);
    for (let i = 0; i < data.length; i++) data[i] = (i * 31) & 0xff;
    fs.writeFileSync(path.join(tmp, 'big.bin'), data);
    await box.copyIn(path.join(tmp, 'big.bin'), '/tmp/big.bin');
    await box.copyOut('/tmp/big.bin', path.join(tmp, 'big-back.bin'));
    expect(fs.readFileSync(path.join(tmp, 'big-back.bin')).equals(data)).toBe(true);
  });

  it('metrics: runtime and box', async () => {
    const box = await client.create({ image: 'alpine:latest' });
    await box.start();
    expect(await client.metrics()).toMatchObject({ boxesCreatedTotal: expect.any(Number), numRunningBoxes: expect.any(Number) });
    expect(await box.metrics()).toMatchObject({ commandsExecutedTotal: expect.any(Number) });
  });
});
