// The attach WebSocket on a real listening app (127.0.0.1, ephemeral port) with a `ws` client, on
// the FakeRuntime: Ping at once, replay to a late attach, UTF-8-safe frames, stdin and stdin_eof,
// control frames, exit frame + Close 1000, 409 / takeover, back-pressure without loss, auth.
import { afterEach, describe, expect, it } from 'vitest';
import type { FastifyInstance } from 'fastify';
import WebSocket from 'ws';
import { buildRestApp, type RestAppOptions } from '../../src/rest/server/app.js';
import type { AttachTiming } from '../../src/rest/server/attach.js';
import type { ExecutionTuning } from '../../src/rest/server/executions.js';
import { FakeRuntime, type FakeBox } from './rest-fake-runtime.js';

let rt: FakeRuntime;
let app: FastifyInstance;
let base: string;
let box: FakeBox;

async function start(opts: RestAppOptions & { attachTiming?: Partial<AttachTiming>; execTuning?: Partial<ExecutionTuning> } = {}): Promise<void> {
  rt = new FakeRuntime();
  app = buildRestApp(rt, opts);
  await app.listen({ host: '127.0.0.1', port: 0 });
  const a = app.server.address() as { port: number };
  base = `127.0.0.1:${a.port}`;
  box = await rt.create({ image: 'alpine:latest' }, 'b1');
}
afterEach(async () => {
  await app?.close();
  rt?.dispose();
});

async function exec(body: object, headers: Record<string, string> = {}): Promise<string> {
  const r = await fetch(`http://${base}/v1/boxes/${box.id}/exec`, { method: 'POST', headers: { 'content-type': 'application/json', ...headers }, body: JSON.stringify(body) });
  expect(r.status).toBe(201);
  return ((await r.json()) as { execution_id: string }).execution_id;
}

interface Session {
  ws: WebSocket;
  events: string[];
  stdout: Buffer[];
  stderr: Buffer[];
  texts: Array<Record<string, unknown>>;
  closed: Promise<{ code: number }>;
  exit: Promise<number>;
  upgradeHeaders: Record<string, unknown>;
}

function attach(eid: string, opts: WebSocket.ClientOptions = {}, path = `/v1/boxes/${box.id}/executions/${eid}/attach`): Promise<Session> {
  return new Promise((resolve, reject) => {
    const ws = new WebSocket(`ws://${base}${path}`, opts);
    const s: Partial<Session> = { ws, events: [], stdout: [], stderr: [], texts: [] };
    let onExit!: (c: number) => void;
    s.exit = new Promise((r) => (onExit = r));
    s.closed = new Promise((r) => ws.on('close', (code) => r({ code })));
    ws.once('upgrade', (res) => (s.upgradeHeaders = res.headers));
    ws.on('ping', () => s.events!.push('ping'));
    ws.on('message', (data: Buffer, isBinary) => {
      if (isBinary) {
        s.events!.push(`bin${data[0]}`);
        (data[0] === 1 ? s.stdout! : s.stderr!).push(data.subarray(1));
      } else {
        const m = JSON.parse(data.toString()) as Record<string, unknown>;
        s.events!.push(String(m.type));
        s.texts!.push(m);
        if (m.type === 'exit') onExit(m.exit_code as number);
      }
    });
    ws.once('open', () => resolve(s as Session));
    ws.once('unexpected-response', (_req, res) => {
      let body = '';
      res.on('data', (c: Buffer) => (body += c));
      res.on('end', () => reject(Object.assign(new Error(`HTTP ${res.statusCode}`), { status: res.statusCode, body, headers: res.headers })));
    });
    ws.once('error', reject);
  });
}
const text = (b: Buffer[]) => Buffer.concat(b).toString('utf8');
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

describe('attach WebSocket', () => {
  it('pings at once, replays output produced before a late attach, then exit frame and Close 1000', async () => {
    await start();
    const eid = await exec({ command: 'echo', args: ['early', 'bird'] });
    await sleep(50); // finished before anyone attached
    const s = await attach(eid);
    expect(await s.exit).toBe(0);
    expect((await s.closed).code).toBe(1000);
    expect(s.events[0]).toBe('ping');
    expect(text(s.stdout)).toBe('early bird\n');
    expect(s.events.filter((e) => e !== 'ping').slice(-1)).toEqual(['exit']);
  });

  it('cuts frames on UTF-8 boundaries even when the guest writes one byte at a time', async () => {
    await start();
    const eid = await exec({ command: 'utf8' });
    const s = await attach(eid);
    await s.exit;
    for (const f of s.stdout) expect(Buffer.from(f.toString('utf8'), 'utf8').equals(f)).toBe(true);
    expect(text(s.stdout)).toBe('héllo wörld €\n');
  });

  it('stdin as binary frames and stdin_eof; stderr on channel 2; exit code passed through', async () => {
    await start();
    const eid = await exec({ command: 'cat' });
    const s = await attach(eid);
    s.ws.send(Buffer.from('line one\n'), { binary: true });
    s.ws.send(Buffer.from('line two\n'), { binary: true });
    s.ws.send(JSON.stringify({ type: 'stdin_eof' }));
    expect(await s.exit).toBe(0);
    expect(text(s.stdout)).toBe('line one\nline two\n');
    const e2 = await exec({ command: 'fail', args: ['3'] });
    const s2 = await attach(e2);
    expect(await s2.exit).toBe(3);
    expect(text(s2.stderr)).toBe('failed\n');
  });

  it('answers bad control frames with error frames and keeps the socket; signal and resize frames work', async () => {
    await start();
    const eid = await exec({ command: 'sleep', tty: true });
    const s = await attach(eid);
    s.ws.send('not json');
    s.ws.send(JSON.stringify({ nope: 1 }));
    s.ws.send(JSON.stringify({ type: 'dance' }));
    s.ws.send(JSON.stringify({ type: 'signal', sig: 9 }));
    s.ws.send(JSON.stringify({ type: 'resize', rows: 0, cols: 5 }));
    s.ws.send(JSON.stringify({ type: 'resize', rows: 30, cols: 100 }));
    s.ws.send(JSON.stringify({ type: 'signal', sig: 10 }));
    await sleep(50);
    const errors = s.texts.filter((t) => t.type === 'error').map((t) => String(t.message));
    expect(errors).toHaveLength(5);
    expect(errors[0]).toMatch(/not JSON/);
    expect(errors[1]).toMatch(/missing "type"/);
    expect(errors[2]).toMatch(/unknown control message type "dance"/);
    expect(errors[3]).toMatch(/signal 9 is not allowed/);
    expect(errors[4]).toMatch(/invalid resize/);
    const p = rt.processes[0]!;
    expect(p.resizes).toEqual([{ rows: 30, cols: 100 }]);
    expect(p.signals).toEqual([10]);
    s.ws.send(JSON.stringify({ type: 'signal', sig: 15 }));
    expect(await s.exit).toBe(-15);
    expect((await s.closed).code).toBe(1000);
  });

  it('409 while a live client is attached; a dead (silent) one is taken over, its unacknowledged output replayed', async () => {
    await start();
    const eid = await exec({ command: 'sleep' });
    const p = rt.processes[0]!;
    const first = await attach(eid);
    await expect(attach(eid)).rejects.toMatchObject({ status: 409 });
    first.ws.terminate();
    await sleep(20);
    // A client that stopped answering (no Pong): the next attach probes it and takes over.
    const silent = await attach(eid, { autoPong: false });
    await p.write(1, 'to the silent one\n');
    await sleep(30);
    const t0 = Date.now();
    const next = await attach(eid);
    expect(Date.now() - t0).toBeGreaterThanOrEqual(1500); // the 2 s probe
    expect((await silent.closed).code).toBe(4001);
    await p.write(1, 'after takeover\n');
    p.exit(0);
    expect(await next.exit).toBe(0);
    expect(text(silent.stdout)).toBe('to the silent one\n');
    // Never acknowledged by the silent client, so replayed to the next one: nothing lost.
    expect(text(next.stdout)).toBe('to the silent one\nafter takeover\n');
  });

  it('404 for an unknown execution, 409 once a finished execution was delivered, 400 without an upgrade', async () => {
    await start();
    await expect(attach('nope')).rejects.toMatchObject({ status: 404 });
    const eid = await exec({ command: 'echo', args: ['x'] });
    const s = await attach(eid);
    await s.exit;
    await s.closed;
    const err = (await attach(eid).catch((e: unknown) => e)) as { status: number; body: string };
    expect(err.status).toBe(409);
    expect(JSON.parse(err.body).error).toMatchObject({ code: 'invalid_state', type: 'InvalidStateError' });
    const r = await fetch(`http://${base}/v1/boxes/${box.id}/executions/${eid}/attach`);
    expect(r.status).toBe(400);
  });

  it('applies back-pressure to an unattached execution and delivers every byte later', async () => {
    await start();
    const size = 8 * 1024 * 1024;
    const eid = await exec({ command: 'big', args: [String(size)] });
    await sleep(200);
    const p = rt.processes[0]!;
    expect(p.exited).toBe(false); // blocked on output credit, not buffering 8 MiB
    const s = await attach(eid);
    expect(await s.exit).toBe(0);
    const out = Buffer.concat(s.stdout);
    expect(out.length).toBe(size);
    expect(out.every((b) => b === 0x78)).toBe(true);
  });

  it('a dropped socket loses nothing: the re-attach continues from what the first one had not acknowledged', async () => {
    await start();
    const eid = await exec({ command: 'sleep' });
    const p = rt.processes[0]!;
    const first = await attach(eid);
    const lines = Array.from({ length: 200 }, (_, i) => `line ${i}\n`);
    for (const l of lines.slice(0, 100)) await p.write(1, l);
    await sleep(50);
    first.ws.terminate();
    await first.closed;
    for (const l of lines.slice(100)) await p.write(1, l);
    p.exit(0);
    const second = await attach(eid);
    expect(await second.exit).toBe(0);
    const full = lines.join('');
    const a = text(first.stdout);
    const b = text(second.stdout);
    expect(full.startsWith(a)).toBe(true);
    expect(full.endsWith(b)).toBe(true);
    expect(a.length + b.length).toBeGreaterThanOrEqual(full.length);
  });

  it('checks the bearer key before the upgrade', async () => {
    await start({ apiKey: 'k3y' });
    const eid = await exec({ command: 'echo', args: ['x'] }, { authorization: 'Bearer k3y' });
    await expect(attach(eid)).rejects.toMatchObject({ status: 401 });
    const s = await attach(eid, { headers: { authorization: 'Bearer k3y' } });
    expect(await s.exit).toBe(0);
  });

  it('closes attached sockets with 1001 when the app closes', async () => {
    await start();
    const eid = await exec({ command: 'sleep' });
    const s = await attach(eid);
    await app.close();
    expect((await s.closed).code).toBe(1001);
    expect(s.texts.some((t) => t.type === 'error')).toBe(true);
  });

  it('main-command attach: X-Boxlite-Execution-Id on the 101, stdin, exit; 409 for a second live client; 409 without a main process', async () => {
    await start();
    let r = await attach('', {}, `/v1/boxes/${box.id}/attach`).catch((e: unknown) => e as { status: number; body: string });
    expect((r as { status: number }).status).toBe(409);
    expect(JSON.parse((r as { body: string }).body).error.code).toBe('invalid_state');
    rt.mainCommand = ['cat'];
    const s = await attach('', {}, `/v1/boxes/${box.id}/attach`);
    expect(s.upgradeHeaders['x-boxlite-execution-id']).toMatch(/^[0-9a-f-]{36}$/);
    const again = new WebSocket(`ws://${base}/v1/boxes/${box.id}/attach`);
    const upgradeId = await new Promise<string>((resolve, reject) => {
      again.once('unexpected-response', (_q, res) => resolve(`status ${res.statusCode}`));
      again.once('upgrade', (res) => resolve(String(res.headers['x-boxlite-execution-id'])));
      again.once('error', reject);
    });
    expect(upgradeId).toBe('status 409'); // the first client is alive
    expect(rt.execs.map((c) => c.command)).toEqual(['cat']);
    s.ws.send(Buffer.from('to main\n'), { binary: true });
    s.ws.send(JSON.stringify({ type: 'stdin_eof' }));
    expect(await s.exit).toBe(0);
    expect(text(s.stdout)).toBe('to main\n');
    rt.mainCommand = ['sleep'];
    const hdr = await new Promise<string>((resolve, reject) => {
      const ws = new WebSocket(`ws://${base}/v1/boxes/${box.id}/attach`);
      ws.once('upgrade', (res) => resolve(String(res.headers['x-boxlite-execution-id'])));
      ws.once('unexpected-response', (_q, res) => reject(new Error(`HTTP ${res.statusCode}`)));
    });
    expect(hdr).toMatch(/^[0-9a-f-]{36}$/);
    r = await fetch(`http://${base}/v1/boxes/${box.id}/executions/${hdr}`) as never;
    const info = await (r as unknown as Response).json() as { status: string; execution_id: string };
    expect(info).toMatchObject({ execution_id: hdr, status: 'running' });
  });

  it('pings every interval and drops a client silent past the dead limit; finished executions are forgotten after retention', async () => {
    await start({ attachTiming: { pingIntervalMs: 50, deadAfterMs: 200 }, execTuning: { retentionMs: 100 } });
    const eid = await exec({ command: 'sleep' });
    const live = await attach(eid);
    await sleep(300);
    expect(live.events.filter((e) => e === 'ping').length).toBeGreaterThanOrEqual(4);
    expect(live.ws.readyState).toBe(WebSocket.OPEN); // it answers the pings
    live.ws.terminate();
    await live.closed;
    const silent = await attach(eid, { autoPong: false });
    const t0 = Date.now();
    await silent.closed;
    expect(Date.now() - t0).toBeGreaterThanOrEqual(150);
    rt.processes[0]!.exit(0);
    await sleep(20);
    expect((await fetch(`http://${base}/v1/boxes/${box.id}/executions/${eid}`)).status).toBe(200);
    await sleep(150);
    expect((await fetch(`http://${base}/v1/boxes/${box.id}/executions/${eid}`)).status).toBe(404);
  });

  it('reaper: after the client left and did not return, HUP, then TERM, then KILL; a never-attached execution is left alone', async () => {
    await start({ execTuning: { reconnectGraceMs: 60, shutdownGraceMs: 60, reapTickMs: 10 } });
    const left = await exec({ command: 'sleep' });
    const never = await exec({ command: 'sleep' });
    const p = rt.processes[0]!;
    p.onSignal = (sig) => {
      if (sig === 9) p.die(9);
    };
    const s = await attach(left);
    await sleep(120);
    expect(p.signals).toEqual([]); // attached: never reaped
    s.ws.terminate();
    await s.closed;
    const info = async (eid: string) => (await (await fetch(`http://${base}/v1/boxes/${box.id}/executions/${eid}`)).json()) as { status: string; exit_code: number };
    for (let i = 0; i < 100 && (await info(left)).status === 'running'; i++) await sleep(10);
    expect(p.signals).toEqual([1, 15, 9]);
    expect(await info(left)).toMatchObject({ status: 'killed', exit_code: -9 });
    expect(rt.processes[1]!.signals).toEqual([]);
    expect((await info(never)).status).toBe('running');
  });

  it('32 concurrent executions across 4 boxes: every byte arrives, on the right socket', async () => {
    await start({ execTuning: { bufferBytes: 64 * 1024 } });
    const boxes = [box, ...(await Promise.all([1, 2, 3].map((i) => rt.create({ image: 'alpine:latest' }, `c${i}`))))];
    const runs = await Promise.all(
      Array.from({ length: 32 }, async (_, i) => {
        const b = boxes[i % 4]!;
        const size = 100_000 + i * 7919;
        const r = await fetch(`http://${base}/v1/boxes/${b.id}/exec`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ command: 'big', args: [String(size)] }) });
        const { execution_id } = (await r.json()) as { execution_id: string };
        const s = await attach(execution_id, {}, `/v1/boxes/${b.id}/executions/${execution_id}/attach`);
        expect(await s.exit).toBe(0);
        return { size, got: Buffer.concat(s.stdout).length };
      }),
    );
    for (const r of runs) expect(r.got).toBe(r.size);
  });
});

describe('main attach, two clients at once', () => {
  it('share one box.attach(): one main process runs, one client gets it, the other 409', async () => {
    await start();
    rt.mainCommand = ['cat'];
    // A slow attach, so both upgrades are in flight before it resolves.
    const proto = Object.getPrototypeOf(box) as { attach: (o?: { tty?: boolean }) => Promise<unknown> };
    const orig = proto.attach;
    proto.attach = async function (this: unknown, o?: { tty?: boolean }) {
      await sleep(150);
      return orig.call(this, o);
    };
    try {
      const open = () =>
        new Promise<string>((resolve, reject) => {
          const ws = new WebSocket(`ws://${base}/v1/boxes/${box.id}/attach`);
          ws.once('upgrade', (res) => resolve(String(res.headers['x-boxlite-execution-id'])));
          ws.once('unexpected-response', (_q, res) => resolve(`status ${res.statusCode}`));
          ws.once('error', reject);
        });
      const got = await Promise.all([open(), open()]);
      expect(got.filter((g) => g === 'status 409')).toHaveLength(1);
      expect(got.find((g) => g !== 'status 409')).toMatch(/^[0-9a-f-]{36}$/);
      expect(rt.execs.map((c) => c.command)).toEqual(['cat']);
    } finally {
      proto.attach = orig;
    }
  });
});
