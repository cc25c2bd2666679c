// The built CLI (dist/cli/main.js) with --url against OUR REST server (buildRestApp, in-process,
// 127.0.0.1 with a key) over a real JsBoxlite on the suite's home: real VMs behind the wire.
// run streams and exits with the command's code (--rm removes, -t gives a terminal), run -d, exec,
// ls, inspect, cp in/out, stop, rm; a wrong key; auth login/status/logout in a temp XDG dir.
import { spawn, type ChildProcessWithoutNullStreams } from 'node:child_process';
import fs from 'node:fs';
import http from 'node:http';
import os from 'node:os';
import path from 'node:path';
import type { AddressInfo } from 'node:net';
import { afterAll, beforeAll, describe, expect, inject, it } from 'vitest';
import { JsBoxlite } from '../../dist/index.js';
import { buildRestApp, type RestRuntime } from '../../dist/rest/server/app.js';
import { CLI_BIN, cliEnv, runCli, type CliResult } from '../fixtures/cli-child.js';

const KEY = 'rest-cli-it-key-0123';
const NAME = `rest-cli-${process.pid}`;
let local: JsBoxlite;
let app: ReturnType<typeof buildRestApp>;
let url: string;
let tmp: string;

const cli = (args: string[], opts: { env?: Record<string, string>; input?: string } = {}) => runCli(tmp, args, opts);

/** `network tunnel --url …` as a long-running child; resolves once it printed its address. */
function startTunnel(args: string[]): Promise<{ child: ChildProcessWithoutNullStreams; addr: string }> {
  const child = spawn(process.execPath, [CLI_BIN, 'network', 'tunnel', ...args], { stdio: 'pipe', env: cliEnv(tmp, { BOXLITE_API_KEY: KEY }) });
  let out = '';
  let err = '';
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`no address printed; stderr: ${err}`)), 60_000);
    child.stdout.on('data', (c) => {
      out += c;
      const nl = out.indexOf('\n');
      if (nl >= 0) {
        clearTimeout(timer);
        resolve({ child, addr: out.slice(0, nl) });
      }
    });
    child.stderr.on('data', (c) => (err += c));
    child.on('exit', (code) => {
      clearTimeout(timer);
      reject(new Error(`tunnel exited early (${code}): ${err}`));
    });
  });
}

function get(port: number): Promise<{ status: number; body: string }> {
  return new Promise((resolve, reject) => {
    const req = http.get({ host: '127.0.0.1', port, path: '/', agent: false, timeout: 30_000 }, (res) => {
      let body = '';
      res.on('data', (c) => (body += c));
      res.on('end', () => resolve({ status: res.statusCode ?? 0, body }));
    });
    req.on('timeout', () => req.destroy(new Error('timeout')));
    req.on('error', reject);
  });
}

const keyed = (extra: Record<string, string> = {}) => ({ env: { BOXLITE_API_KEY: KEY, ...extra } });
const noStack = (r: CliResult) => expect(r.stderr).not.toMatch(/\n\s+at /);
const ours = async () => (await local.listInfo()).filter((b) => b.name?.startsWith(NAME));

beforeAll(async () => {
  tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'boxlite-rest-cli-'));
  local = new JsBoxlite({ homeDir: inject('home') });
  app = buildRestApp(local as unknown as RestRuntime, { apiKey: KEY, rootfsRoot: path.dirname(inject('image')) });
  await app.listen({ host: '127.0.0.1', port: 0 });
  url = `http://127.0.0.1:${(app.server.address() as AddressInfo).port}`;
});

afterAll(async () => {
  await app?.close();
  for (const b of local ? await ours().catch(() => []) : []) await local.remove(b.id, true).catch(() => {});
  await local?.shutdown(10);
  if (tmp) fs.rmSync(tmp, { recursive: true, force: true });
});

describe('boxlite CLI against a REST server on real VMs', () => {
  it('run --url streams stdout/stderr, exits with the code, --rm removes; -i stdin; -t a terminal', async () => {
    const r = await cli(['run', '--url', url, '--rm', '--name', `${NAME}-a`, '--rootfs', inject('image'), '--', 'sh', '-c', 'echo out; echo err >&2; exit 7'], keyed());
    expect(r.stderr).toBe('err\n');
    expect(r.stdout).toBe('out\n');
    expect(r.code).toBe(7);
    expect(await ours()).toEqual([]);

    const piped = await cli(['run', '--rm', '-i', '--rootfs', inject('image'), '--', 'sh', '-c', 'read l; echo "got $l"; exit 3'], {
      ...keyed({ BOXLITE_REST_URL: url }),
      input: 'a line\n',
    });
    expect(piped).toMatchObject({ code: 3, stdout: 'got a line\n' });

    const tty = await cli(['run', '--url', url, '--rm', '-t', '--rootfs', inject('image'), 'tty'], keyed());
    expect(tty.code).toBe(0);
    expect(tty.stdout.trim()).toMatch(/^\/dev\/pts\/\d+$/);

    const missing = await cli(['run', '--url', url, '--rm', '--rootfs', inject('image'), 'no-such-binary'], keyed());
    expect(missing.code).toBe(127);
    expect(missing.stderr).toMatch(/command not found: no-such-binary/);
    noStack(missing);
    expect(await ours()).toEqual([]);
  });

  it('run -d, exec, ls, inspect, cp in and out, stop, rm', async () => {
    const name = `${NAME}-svc`;
    const d = await cli(['run', '-d', '--url', url, '--name', name, '--rootfs', inject('image'), '--', 'sleep', '600'], keyed());
    expect(d.stderr).toBe('');
    expect(d.code).toBe(0);
    const id = d.stdout.trim();
    expect((await local.getInfo(id))?.state.running).toBe(true);

    const ex = await cli(['exec', '--url', url, name, '--', 'sh', '-c', 'echo out; echo e >&2; exit 4'], keyed());
    expect(ex).toMatchObject({ code: 4, stdout: 'out\n', stderr: 'e\n' });
    const env = await cli(['exec', '--url', url, '-e', 'A=1', '-w', '/tmp', name, 'sh', '-c', 'echo "$A" $(pwd)'], keyed());
    expect(env).toMatchObject({ code: 0, stdout: '1 /tmp\n' });
    const cat = await cli(['exec', '-i', '--url', url, id, 'cat'], { ...keyed(), input: 'héllo € piped\n' });
    expect(cat).toMatchObject({ code: 0, stdout: 'héllo € piped\n' });

    const ls = await cli(['ls', '--url', url], keyed());
    expect(ls.code).toBe(0);
    expect(ls.stdout).toMatch(new RegExp(`^${id}\\s+${name}\\s+\\S+\\s+running`, 'm'));
    const inspect = await cli(['inspect', '--url', url, name], keyed());
    expect(inspect.code).toBe(0);
    expect(JSON.parse(inspect.stdout)).toMatchObject([{ id, name, state: { status: 'running', running: true } }]);

    const up = path.join(tmp, 'up.txt');
    fs.writeFileSync(up, 'UP from the host\n');
    expect(await cli(['cp', '--url', url, up, `${name}:/tmp/up.txt`], keyed())).toMatchObject({ code: 0, stderr: '' });
    expect((await cli(['exec', '--url', url, name, 'cat', '/tmp/up.txt'], keyed())).stdout).toBe('UP from the host\n');
    // A host directory lands as DEST/<its name>, as with the local runtime.
    fs.mkdirSync(path.join(tmp, 'hosttree', 'sub'), { recursive: true });
    fs.writeFileSync(path.join(tmp, 'hosttree', 'sub', 'a.txt'), 'A');
    expect((await cli(['cp', '--url', url, path.join(tmp, 'hosttree'), `${name}:/tmp/in`], keyed())).code).toBe(0);
    expect((await cli(['exec', '--url', url, name, 'cat', '/tmp/in/hosttree/sub/a.txt'], keyed())).stdout).toBe('A');
    await cli(['exec', '--url', url, name, 'sh', '-c', 'mkdir -p /tmp/tree/sub && echo B > /tmp/tree/sub/b.txt'], keyed());
    // Into an existing directory (the placement local and remote copies agree on).
    const down = path.join(tmp, 'down');
    fs.mkdirSync(down);
    expect((await cli(['cp', '--url', url, `${name}:/tmp/tree`, down], keyed())).code).toBe(0);
    expect(fs.readFileSync(path.join(down, 'tree', 'sub', 'b.txt'), 'utf8')).toBe('B\n');
    const file = path.join(tmp, 'one.txt');
    expect((await cli(['cp', '--url', url, `${name}:/tmp/up.txt`, file], keyed())).code).toBe(0);
    expect(fs.readFileSync(file, 'utf8')).toBe('UP from the host\n');

    // network tunnel over the server's tunnel route: a local port to an httpd in the guest, until Ctrl-C.
    const h = await cli(['exec', '--url', url, name, '--', 'sh', '-c', 'mkdir -p /www && echo tunnel-ok > /www/index.html && httpd -p 8000 -h /www'], keyed());
    expect(h.code).toBe(0);
    const t = await startTunnel(['--url', url, name, '8000']);
    try {
      expect(t.addr).toMatch(/^127\.0\.0\.1:\d+$/);
      const port = Number(t.addr.split(':')[1]);
      expect(await get(port)).toEqual({ status: 200, body: 'tunnel-ok\n' });
      expect((await Promise.all([get(port), get(port)])).map((r) => r.body)).toEqual(['tunnel-ok\n', 'tunnel-ok\n']);
      t.child.kill('SIGINT');
      expect(await new Promise((r) => (t.child.exitCode !== null ? r(t.child.exitCode) : t.child.once('exit', r)))).toBe(0);
    } finally {
      t.child.kill('SIGKILL');
    }

    expect(await cli(['stop', '--url', url, name], keyed())).toMatchObject({ code: 0, stdout: `${name}\n` });
    expect((await local.getInfo(id))?.state.running).toBe(false);
    expect(await cli(['rm', '--url', url, name], keyed())).toMatchObject({ code: 0, stdout: `${name}\n` });
    expect(await local.getInfo(id)).toBeNull();
    const gone = await cli(['exec', '--url', url, name, 'true'], keyed());
    expect(gone.code).toBe(125);
    expect(gone.stderr).toMatch(/^Error: .*not found/);
  });

  it('a wrong key: non-zero, "unauthorized", no stack; auth login/status/logout', async () => {
    const wrong = await cli(['ls', '--url', url], { env: { BOXLITE_API_KEY: 'not-the-key-0123' } });
    expect(wrong.code).toBe(1);
    expect(wrong.stderr).toMatch(/^Error: configuration error: auth: invalid or missing API key/);
    noStack(wrong);
    const runWrong = await cli(['run', '--rm', '--url', url, '--rootfs', inject('image'), 'true'], { env: { BOXLITE_API_KEY: 'not-the-key-0123' } });
    expect(runWrong.code).toBe(125);
    noStack(runWrong);

    const file = path.join(tmp, 'xdg', 'boxlite', 'credentials.json');
    const bad = await cli(['auth', 'login', '--url', url, '--api-key-stdin'], { input: 'not-the-key-0123\n' });
    expect(bad.code).toBe(1);
    expect(bad.stderr).toMatch(/HTTP 401 unauthorized\); nothing was stored/);
    expect(fs.existsSync(file)).toBe(false);
    const login = await cli(['auth', 'login', '--url', url, '--api-key-stdin'], { input: `${KEY}\n` });
    expect(login.code).toBe(0);
    expect(fs.statSync(file).mode & 0o777).toBe(0o600);
    const status = await cli(['auth', 'status']);
    expect(status.code).toBe(0);
    expect(status.stdout).toMatch(/^Status: +accepted/m);
    expect(status.stdout).not.toContain(KEY);
    // The stored credentials alone: the remote server's boxes.
    const r = await cli(['run', '--rm', '--rootfs', inject('image'), 'echo', 'stored'], {});
    expect(r).toMatchObject({ code: 0, stdout: 'stored\n' });
    expect((await cli(['auth', 'logout'])).code).toBe(0);
    expect(fs.existsSync(file)).toBe(false);
    expect((await cli(['auth', 'status'])).code).toBe(1);
  });
});
