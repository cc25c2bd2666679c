// The reference's published 0.10 client (@boxlite-ai/boxlite with its native binding, in REST
// mode) driving our REST server in-process over a real JsBoxlite on the suite's home: the box
// lifecycle, exec (streams, stdin, exit codes, signal/kill, tty resize, timeout), copyIn/copyOut,
// metrics and the error table, on real VMs. One box is shared by the exec/file cases.
// The server and the runtime come from the built package (dist/): the server maps SDK errors with
// `instanceof`, so both must be the same module instances. The client is installed by
// scripts/setup.sh (test/fixtures/ref-client.ts).
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import type { AddressInfo } from 'node:net';
import { pathToFileURL } from 'node:url';
import { afterAll, beforeAll, describe, expect, inject, it } from 'vitest';
import { JsBoxlite } from '../../dist/index.js';
import { buildRestApp } from '../../dist/rest/server/app.js';

import { HAVE_REF, REF_PKG as REF } from '../fixtures/ref-client.js';
const KEY = 'rest-it-key-0123';

/* eslint-disable @typescript-eslint/no-explicit-any */
async function drain(s: any): Promise<string> {
  let t = '';
  for (;;) {
    const c = await s.next();
    if (c === null) return t;
    t += c;
  }
}

/** Runs a command through the 0.10 client: both streams and the exit code. */
async function run(box: any, cmd: string, args: string[], opts: { tty?: boolean; timeout?: number } = {}) {
  const ex = await box.exec(cmd, args, null, opts.tty ?? false, null, opts.timeout ?? null, null);
  const [stdout, stderr] = await Promise.all([drain(await ex.stdout()), drain(await ex.stderr())]);
  const { exitCode } = await ex.wait();
  return { stdout, stderr, exitCode };
}

describe.skipIf(!HAVE_REF)('the 0.10 reference client against our REST server on real VMs', () => {
  let sdk: any;
  let runtime: JsBoxlite;
  let app: ReturnType<typeof buildRestApp>;
  let url: string;
  let R: any;
  let box: any;
  let tmp: string;
  const lines: string[] = [];
  const image = () => ({ rootfsPath: path.basename(inject('image')), memoryMib: 512 });

  beforeAll(async () => {
    sdk = await import(pathToFileURL(path.join(REF, 'dist/index.js')).href);
    runtime = new JsBoxlite({ homeDir: inject('home') });
    app = buildRestApp(runtime, { apiKey: KEY, rootfsRoot: path.dirname(inject('image')), log: (l) => lines.push(l) });
    await app.listen({ host: '127.0.0.1', port: 0 });
    url = `http://127.0.0.1:${(app.server.address() as AddressInfo).port}`;
    R = sdk.JsBoxlite.rest(new sdk.BoxliteRestOptions({ url, credential: new sdk.ApiKeyCredential(KEY) }));
    tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'boxlite-rest-it-'));
    box = await R.create(image(), `rest-it-${process.pid}`);
    await box.start();
  });

  afterAll(async () => {
    if (box) await R.remove(box.id, true).catch(() => undefined);
    await app?.close();
    for (const i of await runtime.listInfo()) if (i.name?.startsWith('rest-it-')) await runtime.remove(i.id, true);
    if (tmp) fs.rmSync(tmp, { recursive: true, force: true });
  });

  it('create, get, listInfo, start, stop, remove', async () => {
    expect(box.name).toBe(`rest-it-${process.pid}`);
    expect((await R.get(box.name)).id).toBe(box.id);
    expect((await R.getInfo(box.id)).state).toMatchObject({ status: 'running', running: true });
    expect((await R.listInfo()).map((i: any) => i.id)).toContain(box.id);
    // A second box: configured, started (exec works), stopped, then removed without force.
    const b2 = await R.create(image(), `rest-it-b2-${process.pid}`);
    expect((await R.getInfo(b2.id)).state.status).toBe('configured');
    await b2.start();
    expect((await run(b2, 'echo', ['b2'])).stdout).toBe('b2\n');
    // Stopped outside the server (as the CLI would): the server's handle is spent, and it takes a fresh one.
    await (await runtime.get(b2.id))!.stop();
    expect((await run(b2, 'echo', ['again'])).stdout).toBe('again\n');
    await b2.stop();
    expect((await R.getInfo(b2.id)).state).toMatchObject({ status: 'stopped', running: false });
    await R.remove(b2.id, false);
    expect(await R.get(b2.id)).toBeNull();
  });

  it('exec: streamed stdout and stderr, stdin, exit codes', async () => {
    expect(await run(box, 'sh', ['-c', 'echo out; echo err >&2; exit 3'])).toEqual({ stdout: 'out\n', stderr: 'err\n', exitCode: 3 });
    // Streamed: the first lines arrive while the process still runs.
    const live = await box.exec('sh', ['-c', 'echo first; echo e1 >&2; sleep 3; echo second'], null, false, null, null, null);
    const t0 = Date.now();
    const [o, e] = [await live.stdout(), await live.stderr()];
    expect([await o.next(), await e.next()]).toEqual(['first\n', 'e1\n']);
    expect(Date.now() - t0).toBeLessThan(2500);
    expect(await drain(o)).toBe('second\n');
    expect((await live.wait()).exitCode).toBe(0);
    const cat = await box.exec('cat', null, null, false, null, null, null);
    const stdin = await cat.stdin();
    await stdin.writeString('piped\n');
    await stdin.close();
    expect(await drain(await cat.stdout())).toBe('piped\n');
    expect((await cat.wait()).exitCode).toBe(0);
    const big = await run(box, 'sh', ['-c', 'head -c 3000000 /dev/zero | tr "\\0" a']);
    expect(big.stdout.length).toBe(3_000_000);
  });

  it('signal, kill, tty resize and a timeout', async () => {
    const s = await box.exec('sleep', ['60'], null, false, null, null, null);
    await new Promise((r) => setTimeout(r, 500));
    await s.signal(15);
    expect((await s.wait()).exitCode).toBe(-15);
    const k = await box.exec('sleep', ['60'], null, false, null, null, null);
    await k.kill();
    expect((await k.wait()).exitCode).toBe(-9);
    const t = await box.exec('sh', ['-c', 'read x; stty size'], null, true, null, null, null);
    await t.resizeTty(30, 100);
    const out = await t.stdout();
    const stdin = await t.stdin();
    await stdin.writeString('\n');
    let text = '';
    while (!/30 100/.test(text)) {
      const c = await out.next();
      if (c === null) break;
      text += c;
    }
    expect(text).toMatch(/30 100/);
    expect((await t.wait()).exitCode).toBe(0);
    const t0 = Date.now();
    const slow = await run(box, 'sleep', ['60'], { timeout: 1 });
    expect(slow.exitCode).toBe(-9);
    expect(Date.now() - t0).toBeLessThan(20_000);
  });

  it('copyIn / copyOut of a file and a directory', async () => {
    fs.writeFileSync(path.join(tmp, 'up.txt'), 'UP');
    fs.mkdirSync(path.join(tmp, 'tree/sub'), { recursive: true });
    fs.writeFileSync(path.join(tmp, 'tree/a.txt'), 'A');
    fs.writeFileSync(path.join(tmp, 'tree/sub/b.txt'), 'B');
    await box.copyIn(path.join(tmp, 'up.txt'), '/tmp/x.txt');
    await box.copyIn(path.join(tmp, 'tree'), '/data');
    expect((await run(box, 'cat', ['/tmp/x.txt', '/data/a.txt', '/data/sub/b.txt'])).stdout).toBe('UPAB');
    await box.copyOut('/tmp/x.txt', path.join(tmp, 'back.txt'));
    expect(fs.readFileSync(path.join(tmp, 'back.txt'), 'utf8')).toBe('UP');
    await box.copyOut('/data', path.join(tmp, 'backdir'));
    expect(fs.readFileSync(path.join(tmp, 'backdir/data/a.txt'), 'utf8')).toBe('A');
    expect(fs.readFileSync(path.join(tmp, 'backdir/data/sub/b.txt'), 'utf8')).toBe('B');
  });

  it('metrics: runtime and box', async () => {
    // 0.10 computes numRunningBoxes itself (created − stopped), so only the counters are checked.
    const rm = await R.metrics();
    expect(rm).toMatchObject({ numRunningBoxes: expect.any(Number), totalCommandsExecuted: expect.any(Number) });
    expect(rm.boxesCreatedTotal).toBeGreaterThanOrEqual(2);
    const m = await box.metrics();
    expect(m.commandsExecutedTotal).toBeGreaterThan(0);
    expect(m).toMatchObject({ execErrorsTotal: expect.any(Number) });
  });

  it('errors: 401, 404, 400 (bad options), 422 (bad image), 409 (duplicate name)', async () => {
    const bad = sdk.JsBoxlite.rest(new sdk.BoxliteRestOptions({ url, credential: new sdk.ApiKeyCredential('wrong-key-xyz') }));
    await expect(bad.listInfo()).rejects.toThrow(/auth: invalid or missing API key/);
    expect(await R.get('no-such-box')).toBeNull();
    await expect(R.remove('no-such-box', true)).rejects.toThrow(/box not found/);
    await expect(R.create({ ...image(), cpus: 0 })).rejects.toThrow(/invalid argument: .*cpus/);
    await expect(R.create({ image: 'Bad//Image', memoryMib: 512 })).rejects.toThrow(/^images error: .*invalid reference format/);
    // An unreachable registry is not a bad image: 503 network_unavailable (0.10 doubles the prefix).
    await expect(R.create({ image: 'localhost:1/none:1', memoryMib: 512 })).rejects.toThrow(/^network error: .*cannot reach registry/);
    await expect(R.create(image(), box.name)).rejects.toThrow(/already exists/);
    // What the server answered, by status (the 0.10 client shows only the message).
    const log = lines.join('\n');
    for (const want of [/GET \/v1\/boxes 401 /, /GET \/v1\/boxes\/no-such-box 404 /, /DELETE \/v1\/boxes\/no-such-box 404 /]) expect(log).toMatch(want);
    expect(log.match(/POST \/v1\/boxes (\d{3}) /g)?.map((l) => l.slice(-4, -1)).slice(-4)).toEqual(['400', '422', '503', '409']);
    expect(log).not.toContain(KEY);
  });
});
