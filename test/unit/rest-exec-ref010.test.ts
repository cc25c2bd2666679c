// The reference's published 0.10 client (npm @boxlite-ai/boxlite@0.10 with its native binding; in
// REST mode it needs no VM) driving OUR server on the FakeRuntime: exec with streamed stdout and
// stderr, stdin, exit codes, resize/signal/kill sent before the socket opens, timeouts, copyIn /
// copyOut of a file and a directory. The client is installed by scripts/setup.sh
// (test/fixtures/ref-client.ts).
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { FastifyInstance } from 'fastify';
import { buildRestApp } from '../../src/rest/server/app.js';
import { FakeRuntime } from './rest-fake-runtime.js';

import { HAVE_REF as available, REF_PKG } from '../fixtures/ref-client.js';

const REF = path.join(REF_PKG, 'dist', 'index.js');

/* eslint-disable @typescript-eslint/no-explicit-any */
let ref: any;
let client: any;
let rt: FakeRuntime;
let app: FastifyInstance;
let tmp: string;

async function drain(s: any): Promise<string> {
  let t = '';
  for (;;) {
    const c = await s.next();
    if (c === null) return t;
    t += c;
  }
}

describe.skipIf(!available)('the 0.10 reference client against our server', () => {
  beforeAll(async () => {
    ref = await import(REF);
    rt = new FakeRuntime();
    app = buildRestApp(rt, { apiKey: 'ref-key' });
    await app.listen({ host: '127.0.0.1', port: 0 });
    const port = (app.server.address() as { port: number }).port;
    client = ref.JsBoxlite.rest(new ref.BoxliteRestOptions({ url: `http://127.0.0.1:${port}`, credential: new ref.ApiKeyCredential('ref-key') }));
    tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'boxlite-ref010-'));
  });
  afterAll(async () => {
    await app?.close();
    rt?.dispose();
    if (tmp) fs.rmSync(tmp, { recursive: true, force: true });
  });

  it('exec streams stdout and stderr, takes stdin, reports exit codes', async () => {
    const box = await client.create({ image: 'alpine:latest' }, 'ref-exec');
    const ex = await box.exec('echo', ['hi', 'there'], null, false, null, null, null);
    expect(await drain(await ex.stdout())).toBe('hi there\n');
    expect((await ex.wait()).exitCode).toBe(0);
    const cat = await box.exec('cat', null, null, false, null, null, null);
    const stdin = await cat.stdin();
    await stdin.writeString('piped\n');
    await stdin.close();
    expect(await drain(await cat.stdout())).toBe('piped\n');
    expect((await cat.wait()).exitCode).toBe(0);
    const fail = await box.exec('fail', ['7'], null, false, null, null, null);
    expect(await drain(await fail.stderr())).toBe('failed\n');
    expect((await fail.wait()).exitCode).toBe(7);
    const u = await box.exec('utf8', null, null, false, null, null, null);
    expect(await drain(await u.stdout())).toBe('héllo wörld €\n'); // their decoder is per frame: our cuts keep it whole
    // More than the server's per-execution buffer: only flows if their client's Pongs acknowledge our frames.
    const big = await box.exec('big', [String(6 * 1024 * 1024)], null, false, null, null, null);
    const text = await drain(await big.stdout());
    expect(text.length).toBe(6 * 1024 * 1024);
    expect((await big.wait()).exitCode).toBe(0);
  });

  it('a server shutting down ends its wait() at once (exit -1) instead of leaving it re-attaching', async () => {
    const own = buildRestApp(new FakeRuntime(), { apiKey: 'ref-key' });
    await own.listen({ host: '127.0.0.1', port: 0 });
    const port = (own.server.address() as { port: number }).port;
    const c = ref.JsBoxlite.rest(new ref.BoxliteRestOptions({ url: `http://127.0.0.1:${port}`, credential: new ref.ApiKeyCredential('ref-key') }));
    const box = await c.create({ image: 'alpine:latest' }, 'ref-shutdown');
    const ex = await box.exec('sleep', null, null, false, null, null, null);
    await new Promise((r) => setTimeout(r, 300)); // attached
    const t0 = Date.now();
    const waited = ex.wait();
    await own.close();
    expect((await waited).exitCode).toBe(-1);
    expect(Date.now() - t0).toBeLessThan(5_000); // their reconnect would take 15 s at the least
  });

  it('resize, signal and kill (sent before the upgrade) and a timeout', async () => {
    const box = await client.create({ image: 'alpine:latest' }, 'ref-ctl');
    const ex = await box.exec('sleep', null, null, true, null, null, null);
    await ex.resizeTty(30, 100);
    await ex.signal(10);
    await ex.kill();
    expect((await ex.wait()).exitCode).toBe(-9);
    const p = rt.processes.find((q) => q.call.box === box.id)!;
    expect(p.resizes).toEqual([{ rows: 30, cols: 100 }]);
    expect(p.signals).toEqual([10, 9]);
    const t = await box.exec('sleep', null, null, false, null, 0.2, null);
    expect((await t.wait()).exitCode).toBe(-9);
    // timeout 0 goes on the wire as timeout_seconds: 0, which means none (as the reference server).
    const z = await box.exec('echo', ['z'], null, false, null, 0, null);
    expect(await drain(await z.stdout())).toBe('z\n');
    expect((await z.wait()).exitCode).toBe(0);
    expect(rt.execs.at(-1)).toMatchObject({ command: 'echo', timeoutSecs: null });
  });

  it('copyIn / copyOut of a file and a directory', async () => {
    const box = await client.create({ image: 'alpine:latest' }, 'ref-files');
    fs.writeFileSync(path.join(tmp, 'up.txt'), 'UP');
    fs.mkdirSync(path.join(tmp, 'tree/sub'), { recursive: true });
    fs.writeFileSync(path.join(tmp, 'tree/a.txt'), 'A');
    fs.writeFileSync(path.join(tmp, 'tree/sub/b.txt'), 'B');
    await box.copyIn(path.join(tmp, 'up.txt'), '/tmp/x.txt');
    await box.copyIn(path.join(tmp, 'tree'), '/data');
    const fb = (await rt.get('ref-files'))!;
    expect(fs.readFileSync(path.join(fb.root, 'tmp/x.txt'), 'utf8')).toBe('UP');
    expect(fs.readFileSync(path.join(fb.root, 'data/sub/b.txt'), 'utf8')).toBe('B');
    await box.copyOut('/tmp/x.txt', path.join(tmp, 'back.txt'));
    expect(fs.readFileSync(path.join(tmp, 'back.txt'), 'utf8')).toBe('UP'); // a file, not a directory
    await box.copyOut('/data', path.join(tmp, 'backdir'));
    expect(fs.readFileSync(path.join(tmp, 'backdir/data/a.txt'), 'utf8')).toBe('A');
    expect(fs.readFileSync(path.join(tmp, 'backdir/data/sub/b.txt'), 'utf8')).toBe('B');
  });
});
