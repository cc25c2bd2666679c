// A server restart mid-exec, with the real `boxlite serve` (a child process, SIGTERM'd the way a
// service manager stops it) and OUR REST client on a scratch home:
// - SIGTERM while an exec streams: serve sends attached clients an error frame and an exit frame
//   (-1), closes the sockets (1001), stops the boxes it started and exits 0; the client's wait()
//   ends at once with exit -1 and "server shutting down"; no shim or QEMU of the home is left;
// - a new serve on the same home and port lists the box (stopped), starts it, and runs a new exec;
// - a server that dies (SIGKILL: no exit frame) and comes back INSIDE the reconnect budget: the new
//   server does not know the old execution (executions live in the server's memory), so the
//   client's probe gets 404 and wait() ends at once with "gone" instead of attaching to something else.
// - SIGTERM stops only the boxes the server ran something in (its runtime's live set): a box
//   another process runs on the same home, which the server only listed, keeps running.
import { spawn, type ChildProcess } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, inject, it } from 'vitest';
import { ApiKeyCredential, BoxliteRestOptions, JsBoxlite, type Box } from '../../dist/index.js';
import { restTimings } from '../../dist/rest/client/execution.js';
import { scratchHome } from './helpers.js';

const KEY = 'rest-restart-key-0123';
const savedTimings = { ...restTimings };
let home: string;
const servers = new Set<ChildProcess>();

interface Serve {
  child: ChildProcess;
  url: string;
  port: number;
  stderr: () => string;
  exited: Promise<{ code: number | null; signal: NodeJS.Signals | null }>;
}

/** `boxlite serve` on `home`, resolved once it prints where it listens. */
function serve(port: number): Promise<Serve> {
  const bin = path.join(inject('root'), 'dist', 'cli', 'main.js');
  const child = spawn(process.execPath, [bin, '--home', home, 'serve', '--port', String(port), '--rootfs-root', path.dirname(inject('image'))], {
    env: { ...process.env, BOXLITE_SERVE_API_KEY: KEY },
    stdio: ['ignore', 'ignore', 'pipe'],
  });
  servers.add(child);
  let err = '';
  const exited = new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((resolve) =>
    child.on('exit', (code, signal) => {
      servers.delete(child);
      resolve({ code, signal });
    }),
  );
  return new Promise((resolve, reject) => {
    const t = setTimeout(() => reject(new Error(`serve did not start: ${err}`)), 20_000);
    child.stderr!.on('data', (c: Buffer) => {
      err += c.toString('utf8');
      const m = /listening on (http:\/\/127\.0\.0\.1:(\d+))\/v1/.exec(err);
      if (m) {
        clearTimeout(t);
        resolve({ child, url: m[1]!, port: Number(m[2]), stderr: () => err, exited });
      }
    });
    void exited.then(() => reject(new Error(`serve exited early: ${err}`)));
  });
}

/**
 * Live (not zombie) shims and QEMUs of the home's boxes: QEMU's command line names the home, a
 * shim retitles itself `boxlite-shim <box id>`.
 */
const seenIds = new Set<string>();
function processesOf(dir: string): string[] {
  // Every box the home ever had: a removed box's leaked shim must still be seen.
  if (fs.existsSync(path.join(dir, 'boxes'))) for (const id of fs.readdirSync(path.join(dir, 'boxes'))) seenIds.add(id);
  const ids = [...seenIds];
  const out: string[] = [];
  for (const pid of fs.readdirSync('/proc').filter((p) => /^\d+$/.test(p))) {
    try {
      if (/^State:\s+Z/m.test(fs.readFileSync(`/proc/${pid}/status`, 'utf8'))) continue;
      const cmd = fs.readFileSync(`/proc/${pid}/cmdline`, 'utf8').split('\0').join(' ');
      if (!/qemu-system|boxlite-shim/.test(cmd)) continue;
      // A fast-start template being made behind the first box (docs/fast-start.md) is no box's VM.
      if (cmd.includes('/templates/.b-')) continue;
      if (cmd.includes(dir) || ids.some((id) => cmd.includes(id))) out.push(`${pid} ${cmd.slice(0, 200)}`);
    } catch {
      // gone meanwhile
    }
  }
  return out;
}

async function until<T>(f: () => T | Promise<T>, ok: (v: T) => boolean, ms: number): Promise<T> {
  const end = Date.now() + ms;
  for (;;) {
    const v = await f();
    if (ok(v) || Date.now() > end) return v;
    await new Promise((r) => setTimeout(r, 100));
  }
}

/** SIGTERM, as a service manager stops serve: it must exit 0, and in bounded time. */
async function term(s: Serve): Promise<number> {
  const t0 = Date.now();
  s.child.kill('SIGTERM');
  const r = await s.exited;
  expect(r, s.stderr()).toEqual({ code: 0, signal: null });
  expect(s.stderr()).toMatch(/SIGTERM: closing connections, stopping the boxes this server started/);
  expect(s.stderr()).toMatch(/stopped\n$/);
  return Date.now() - t0;
}

const client = (s: Serve) => JsBoxlite.rest(new BoxliteRestOptions({ url: s.url, credential: new ApiKeyCredential(KEY) }));

async function readUntil(out: { next(): Promise<string | null> }, text: string): Promise<string> {
  let t = '';
  while (!t.includes(text)) {
    const c = await out.next();
    if (c === null) throw new Error(`stream ended before ${JSON.stringify(text)}: ${JSON.stringify(t)}`);
    t += c;
  }
  return t;
}

beforeAll(() => {
  home = scratchHome('boxlite-rest-restart-');
});

afterAll(async () => {
  Object.assign(restTimings, savedTimings);
  for (const c of servers) {
    c.kill('SIGTERM');
    await new Promise((r) => c.once('exit', r));
  }
  // Whatever a failed test left running on the home (the homes themselves are the suite's to remove).
  const rt = new JsBoxlite({ homeDir: home });
  for (const i of await rt.listInfo()) await rt.remove(i.id, true).catch(() => {});
  await rt.shutdown(10);
});

describe('a REST server restarted mid-exec (real `boxlite serve`, SIGTERM)', () => {
  let boxId: string;
  let port: number;

  it('SIGTERM mid-exec: wait() ends at once with exit -1 and the reason, its VM is gone', async () => {
    // A short budget so the client gives up before the next server is up (defaults: 15 s first retry, 270 s budget).
    Object.assign(restTimings, { reconnectFirstMs: 200, reconnectMaxMs: 300, reconnectBudgetMs: 2_000, probeMs: 1_000 });
    const a = await serve(0);
    port = a.port;
    const c = client(a);
    const box = await c.create({ rootfsPath: path.basename(inject('image')), memoryMib: 256 }, `restart-${process.pid}`);
    boxId = box.id;
    const ex = await box.exec('sh', ['-c', 'echo started; i=0; while true; do i=$((i+1)); echo tick$i; sleep 0.2; done'], null, false, null, null, null);
    const stdout = await ex.stdout();
    await readUntil(stdout, 'tick2\n');
    // The leak check below can see this box's shim and QEMU.
    expect(processesOf(home).filter((l) => /boxlite-shim/.test(l))).toHaveLength(1);
    expect(processesOf(home).filter((l) => /qemu-system/.test(l))).toHaveLength(1);

    const t0 = Date.now();
    const waited = ex.wait().then((r) => ({ r, ms: Date.now() - t0 }));
    const termMs = await term(a);
    expect(termMs).toBeLessThan(20_000); // runtime.shutdown(10): graceful, then forced
    const { r, ms } = await waited;
    expect(r.exitCode).toBe(-1);
    expect(r.errorMessage).toMatch(/server shutting down/);
    expect(ms).toBeLessThan(termMs + 1_000); // the exit frame came with the shutdown: no reconnect wait
    // The stream ended too (a reader blocked on it is released), with what was sent before the drop.
    for (let chunk = await stdout.next(); chunk !== null; chunk = await stdout.next());
    expect(await until(() => processesOf(home), (p) => p.length === 0, 5_000)).toEqual([]);
  });

  it('a new server on the same home and port: the box is listed stopped, starts, and a new exec works', async () => {
    const b = await serve(port);
    const c = client(b);
    const info = (await c.listInfo()).find((i) => i.id === boxId);
    expect(info).toMatchObject({ name: `restart-${process.pid}`, state: { status: 'stopped', running: false } });
    const box = (await c.get(boxId)) as Box;
    await box.start();
    expect((await c.getInfo(boxId))?.state.status).toBe('running');
    const ex = await box.exec('sh', ['-c', 'echo after-restart; exit 7'], null, false, null, null, null);
    let out = '';
    const so = await ex.stdout();
    for (let chunk = await so.next(); chunk !== null; chunk = await so.next()) out += chunk;
    expect(out).toBe('after-restart\n');
    expect((await ex.wait()).exitCode).toBe(7);

    // A crash (no exit frame), back within the budget: the new server has no such execution → 404 → "gone" at once.
    Object.assign(restTimings, { reconnectFirstMs: 200, reconnectMaxMs: 300, reconnectBudgetMs: 60_000, probeMs: 1_000 });
    const long = await box.exec('sleep', ['600'], null, false, null, null, null);
    await new Promise((r) => setTimeout(r, 300));
    const t0 = Date.now();
    const waited = long.wait().then((r) => ({ r, ms: Date.now() - t0 }));
    b.child.kill('SIGKILL');
    await b.exited;
    const next = await serve(port);
    try {
      const { r, ms } = await waited;
      expect(r.exitCode).toBe(-1);
      expect(r.errorMessage).toMatch(/is gone/);
      expect(ms).toBeLessThan(30_000); // far inside the 60 s budget: it did not wait the budget out
      const c2 = client(next);
      // The crashed server stopped nothing: the box may still run under its own shim.
      expect(['running', 'stopped']).toContain((await c2.getInfo(boxId))?.state.status);
      await c2.remove(boxId, true);
      expect(await c2.getInfo(boxId)).toBeNull();
    } finally {
      await term(next);
    }
    expect(await until(() => processesOf(home), (p) => p.length === 0, 5_000)).toEqual([]);
  });

  it('SIGTERM stops only what the server ran: a box another process runs on the home and the server only listed keeps running', async () => {
    const s = await serve(port);
    const local = new JsBoxlite({ homeDir: home });
    try {
      const other = await local.create({ rootfsPath: inject('image'), memoryMib: 256, detach: true }, `untouched-${process.pid}`);
      await other.start();
      const c = client(s);
      expect((await c.listInfo()).find((i) => i.id === other.id)?.state.status).toBe('running');
      expect((await c.getInfo(other.id))?.state.status).toBe('running');
      await term(s);
      expect((await local.getInfo(other.id))?.state.status).toBe('running');
      expect(processesOf(home).length).toBeGreaterThan(0);
      await local.remove(other.id, true);
    } finally {
      await local.shutdown(10);
    }
    expect(await until(() => processesOf(home), (p) => p.length === 0, 5_000)).toEqual([]);
  });
});
