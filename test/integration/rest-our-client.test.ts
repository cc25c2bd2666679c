// OUR REST client (JsBoxlite.rest) against OUR REST server (buildRestApp), in-process, over a
// real JsBoxlite on the suite's home: one real VM behind the wire. SimpleBox exec, stdin, exit
// codes, kill, copyIn/copyOut, metrics, listInfo, a late read of an exec's output, and a socket
// dropped by the server (the client re-attaches and the server replays what was not acknowledged).
// Everything is imported from dist: the shim is spawned from dist/shim (see global-setup.ts).
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import type { AddressInfo } from 'node:net';
import { afterAll, beforeAll, describe, expect, inject, it } from 'vitest';
import { ApiKeyCredential, BoxliteRestOptions, JsBoxlite, SimpleBox, type Box } from '../../dist/index.js';
import { buildRestApp, type RestRuntime } from '../../dist/rest/server/app.js';
import { restTimings } from '../../dist/rest/client/execution.js';

const KEY = 'rest-it-key-0123';
let local: JsBoxlite;
let app: ReturnType<typeof buildRestApp>;
let client: JsBoxlite;
let sb: SimpleBox;
let box: Box; // the same box, as our client's handle (stdin, kill, raw streams)
let tmp: string;
const savedTimings = { ...restTimings };

async function drain(s: { next(): Promise<string | null> }): Promise<string> {
  let t = '';
  for (let c = await s.next(); c !== null; c = await s.next()) t += c;
  return t;
}

beforeAll(async () => {
  tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'boxlite-rest-it-'));
  local = new JsBoxlite({ homeDir: inject('home') });
  app = buildRestApp(local as unknown as RestRuntime, { apiKey: KEY, rootfsRoot: path.dirname(inject('image')),
    log: process.env.REST_IT_LOG ? (l) => console.log(l) : undefined, // REST_IT_LOG=1: the server's request lines
  });
  await app.listen({ host: '127.0.0.1', port: 0 });
  const url = `http://127.0.0.1:${(app.server.address() as AddressInfo).port}`;
  client = JsBoxlite.rest(new BoxliteRestOptions({ url, credential: new ApiKeyCredential(KEY) }));
  sb = new SimpleBox({ runtime: client, rootfsPath: inject('image'), memoryMib: 512, name: `rest-it-${process.pid}` });
  const first = await sb.exec('echo', 'booted');
  expect(first).toMatchObject({ exitCode: 0, stdout: 'booted\n' });
  box = (await client.get(await sb.getId()))!;
});

afterAll(async () => {
  Object.assign(restTimings, savedTimings);
  const id = sb ? await sb.getId().catch(() => undefined) : undefined;
  await app?.close();
  if (id) await local.remove(id, true).catch(() => {});
  await local?.shutdown(10);
  if (tmp) fs.rmSync(tmp, { recursive: true, force: true });
});

describe('our REST client and server on a real VM', () => {
  it('SimpleBox exec: stdout, stderr, exit code; stdin; kill', async () => {
    expect(await sb.exec('sh', '-c', 'echo out; echo err >&2; exit 3')).toEqual({ exitCode: 3, stdout: 'out\n', stderr: 'err\n' });
    expect((await sb.exec('sh', ['-c', 'echo $K-$(pwd)'], { K: 'V' }, { cwd: '/tmp' })).stdout).toBe('V-/tmp\n');

    const cat = await box.exec('cat', null, null, false, null, null, null);
    const stdin = await cat.stdin();
    await stdin.writeString('piped ');
    await stdin.writeString('héllo €\n');
    await stdin.close();
    expect(await drain(await cat.stdout())).toBe('piped héllo €\n');
    expect((await cat.wait()).exitCode).toBe(0);

    const sleeper = await box.exec('sleep', ['600'], null, false, null, null, null);
    await new Promise((r) => setTimeout(r, 500));
    const t0 = Date.now();
    await sleeper.kill();
    const r = await sleeper.wait();
    expect(r.exitCode).toBe(-9);
    expect(Date.now() - t0).toBeLessThan(15_000);
  });

  it('copyIn / copyOut of a file and a directory', async () => {
    fs.writeFileSync(path.join(tmp, 'up.txt'), 'UP\n');
    fs.mkdirSync(path.join(tmp, 'tree', 'sub'), { recursive: true });
    fs.writeFileSync(path.join(tmp, 'tree', 'a.txt'), 'A');
    fs.writeFileSync(path.join(tmp, 'tree', 'sub', 'b.txt'), 'B');
    await sb.copyIn(path.join(tmp, 'up.txt'), '/tmp/x.txt');
    await sb.copyIn(path.join(tmp, 'tree'), '/data');
    expect((await sb.exec('sh', '-c', 'cat /tmp/x.txt; find /data | sort')).stdout).toBe(
      'UP\n/data\n/data/a.txt\n/data/sub\n/data/sub/b.txt\n',
    );
    await sb.copyOut('/tmp/x.txt', path.join(tmp, 'back.txt'));
    expect(fs.readFileSync(path.join(tmp, 'back.txt'), 'utf8')).toBe('UP\n');
    await sb.copyOut('/data', path.join(tmp, 'backdir'));
    expect(fs.readFileSync(path.join(tmp, 'backdir', 'data', 'sub', 'b.txt'), 'utf8')).toBe('B');
    await expect(sb.copyOut('/no/such/file', path.join(tmp, 'nothing'))).rejects.toThrow();
  });

  it('a download is bounded while the box makes it: a 20 GB sparse file and too many files are 413, nothing staged is left', async () => {
    // A second server on the same runtime, with small limits and its own staging directory.
    const stage = fs.mkdtempSync(path.join(tmp, 'stage-'));
    const savedTmp = process.env.TMPDIR;
    process.env.TMPDIR = stage;
    const small = buildRestApp(local as unknown as RestRuntime, { apiKey: KEY, maxFileBytes: 1024 * 1024, maxFileEntries: 50 });
    try {
      await small.listen({ host: '127.0.0.1', port: 0 });
      const c2 = JsBoxlite.rest(new BoxliteRestOptions({ url: `http://127.0.0.1:${(small.server.address() as AddressInfo).port}`, credential: new ApiKeyCredential(KEY) }));
      const b2 = (await c2.get(await sb.getId()))!;
      const prep = await sb.exec('sh', '-c', 'mkdir -p /tmp/sparse /tmp/many && truncate -s 20G /tmp/sparse/f && cd /tmp/many && i=0; while [ $i -lt 80 ]; do : > f$i; i=$((i+1)); done; echo ok');
      expect(prep).toMatchObject({ exitCode: 0, stdout: 'ok\n' });
      const t0 = Date.now();
      const big = await b2.copyOut('/tmp/sparse', path.join(tmp, 'sparse-back')).then(() => null, (e: unknown) => e as Error & { code?: string });
      expect(big?.code).toBe('ResourceExhausted');
      expect(big?.message).toMatch(/payload too large: \/tmp\/sparse exceeds the server's file transfer limit of 1048576 bytes/);
      expect(Date.now() - t0).toBeLessThan(30_000);
      const many = await b2.copyOut('/tmp/many', path.join(tmp, 'many-back')).then(() => null, (e: unknown) => e as Error & { code?: string });
      expect(many?.code).toBe('ResourceExhausted');
      expect(many?.message).toMatch(/more than the server's limit of 50 entries/);
      for (let i = 0; i < 50 && fs.readdirSync(stage).length; i++) await new Promise((r) => setTimeout(r, 100));
      expect(fs.readdirSync(stage)).toEqual([]);
      expect(fs.existsSync(path.join(tmp, 'sparse-back', 'sparse', 'f'))).toBe(false);
      // The box's tar was stopped, not left producing zeros.
      const ps = await sb.exec('sh', '-c', 'ps -o args 2>/dev/null || ps');
      expect(ps.stdout).not.toMatch(/tar -c/);
      // Under the limits the same server still serves.
      await b2.copyOut('/tmp/x.txt', path.join(tmp, 'small-back.txt'));
      expect(fs.readFileSync(path.join(tmp, 'small-back.txt'), 'utf8')).toBe('UP\n');
      await b2.copyOut('/data', path.join(tmp, 'data-back'));
      expect(fs.readFileSync(path.join(tmp, 'data-back', 'data', 'sub', 'b.txt'), 'utf8')).toBe('B');
      for (let i = 0; i < 50 && fs.readdirSync(stage).length; i++) await new Promise((r) => setTimeout(r, 100));
      expect(fs.readdirSync(stage)).toEqual([]);
    } finally {
      process.env.TMPDIR = savedTmp;
      await small.close();
      await sb.exec('rm', '-rf', '/tmp/sparse', '/tmp/many').catch(() => undefined);
    }
  });

  it('metrics and listInfo', async () => {
    const m = await sb.metrics();
    expect(m.memoryBytes).toBeGreaterThan(0);
    expect(m.commandsExecutedTotal).toBeGreaterThan(0);
    const infos = await client.listInfo();
    const mine = infos.find((i) => i.id === box.id);
    expect(mine).toMatchObject({ name: `rest-it-${process.pid}`, state: { status: 'running', running: true } });
    const rm = await client.metrics();
    expect(rm.numRunningBoxes).toBeGreaterThanOrEqual(1);
  });

  it('late read: output written before anyone reads arrives in full', async () => {
    const ex = await box.exec('sh', ['-c', 'seq 1 20000; echo done >&2'], null, false, null, null, null);
    await new Promise((r) => setTimeout(r, 4_000));
    const [out, err] = await Promise.all([drain(await ex.stdout()), drain(await ex.stderr())]);
    expect(out).toBe(Array.from({ length: 20000 }, (_, i) => `${i + 1}\n`).join(''));
    expect(err).toBe('done\n');
    expect((await ex.wait()).exitCode).toBe(0);
  });

  it('a socket dropped by the server: the client re-attaches and nothing is lost', async () => {
    restTimings.reconnectFirstMs = 300;
    const ex = await box.exec('sh', ['-c', 'for i in $(seq 1 12); do echo line$i; sleep 0.25; done'], null, false, null, null, null);
    const stdout = await ex.stdout();
    let text = '';
    while (!text.includes('line2\n')) text += (await stdout.next()) ?? '';
    const wss = (app as unknown as { websocketServer: { clients: Set<{ terminate(): void }> } }).websocketServer;
    expect(wss.clients.size).toBeGreaterThan(0);
    for (const c of wss.clients) c.terminate();
    text += await drain(stdout);
    const r = await ex.wait();
    expect(r).toMatchObject({ exitCode: 0 });
    // The in-flight window is replayed by the server and skipped by the client: every line exactly once.
    expect(text).toBe(Array.from({ length: 12 }, (_, i) => `line${i + 1}\n`).join(''));
  });

  it('a socket dropped while the exec finishes: the output written meanwhile still arrives', async () => {
    Object.assign(restTimings, { reconnectFirstMs: 200, reconnectMaxMs: 200 });
    // Upgrades are refused (socket destroyed) while `blocked`: the client sees drops until the exec is done.
    let blocked = false;
    const server = app.server;
    const listeners = server.listeners('upgrade') as Array<(...a: unknown[]) => void>;
    server.removeAllListeners('upgrade');
    server.on('upgrade', (req: unknown, socket: { destroy(): void }, head: unknown) => {
      if (blocked) socket.destroy();
      else for (const l of listeners) l(req, socket, head);
    });
    try {
      const ex = await box.exec('sh', ['-c', 'echo first; sleep 2; seq 1 3000; echo last'], null, false, null, null, null);
      const stdout = await ex.stdout();
      let text = '';
      while (!text.includes('first\n')) text += (await stdout.next()) ?? '';
      blocked = true;
      const wss = (app as unknown as { websocketServer: { clients: Set<{ terminate(): void }> } }).websocketServer;
      for (const c of wss.clients) c.terminate();
      await new Promise((r) => setTimeout(r, 4_000)); // the exec has finished; the client kept re-trying
      blocked = false;
      text += await drain(stdout);
      expect((await ex.wait()).exitCode).toBe(0);
      expect(text).toBe(`first\n${Array.from({ length: 3000 }, (_, i) => `${i + 1}\n`).join('')}last\n`);
    } finally {
      server.removeAllListeners('upgrade');
      for (const l of listeners) server.on('upgrade', l);
    }
  });
});
