// The built CLI (dist/cli/main.js) against the REST server on a FakeRuntime, listening on
// 127.0.0.1: --url / BOXLITE_REST_URL / BOXLITE_API_KEY and the stored credentials, run (main
// process session: streams, exit code, --rm), exec, ls, inspect, cp, stop, rm, local-only commands,
// a wrong key, and auth login/status/logout. The real-VM version is test/integration/rest-cli.test.ts.
import { spawn } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import type { AddressInfo } from 'node:net';
import { afterAll, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import { buildRestApp } from '../../src/rest/server/app.js';
import { FakeRuntime } from './rest-fake-runtime.js';
import { CLI_BIN as CLI, runCli, type CliResult } from '../fixtures/cli-child.js';

const KEY = 'cli-remote-key-0123456789';

let rt: FakeRuntime;
let app: ReturnType<typeof buildRestApp>;
let url: string;
let tmp: string;
let xdg: string;

const cli = (args: string[], opts: { env?: Record<string, string>; input?: string } = {}) => runCli(tmp, args, opts);

const withKey = { env: { BOXLITE_API_KEY: KEY } };
const noStack = (r: CliResult) => expect(r.stderr).not.toMatch(/\n\s+at /);

beforeAll(async () => {
  if (!fs.existsSync(CLI)) throw new Error(`build first: ${CLI} is missing (npx tsc -p tsconfig.json)`);
  tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'boxlite-cli-remote-'));
  xdg = path.join(tmp, 'xdg');
  rt = new FakeRuntime();
  app = buildRestApp(rt, { apiKey: KEY });
  await app.listen({ host: '127.0.0.1', port: 0 });
  url = `http://127.0.0.1:${(app.server.address() as AddressInfo).port}`;
});

afterAll(async () => {
  await app?.close();
  if (tmp) fs.rmSync(tmp, { recursive: true, force: true });
});

beforeEach(() => {
  rt.mainCommand = undefined;
  fs.rmSync(xdg, { recursive: true, force: true });
});

describe('boxlite --url: run', { timeout: 60_000 }, () => {
  it('streams the main process and exits with its code; --rm removes the box', async () => {
    rt.mainCommand = ['fail', '7'];
    const r = await cli(['run', '--url', url, '--rm', 'alpine:latest', 'ignored-by-the-fake'], withKey);
    expect(r.stderr).toBe('failed\n');
    expect(r.code).toBe(7);
    expect(rt.records.size).toBe(0);
    expect(rt.creates.at(-1)?.options.cmd).toEqual(['ignored-by-the-fake']);

    rt.mainCommand = ['echo', 'hello', 'world'];
    const ok = await cli(['run', '--rm', 'alpine:latest'], { env: { BOXLITE_REST_URL: url, BOXLITE_API_KEY: KEY } });
    expect(ok).toMatchObject({ code: 0, stdout: 'hello world\n', stderr: '' });
  });

  it('forwards stdin with -i; without --rm the box is stopped, not removed', async () => {
    rt.mainCommand = ['cat'];
    const r = await cli(['run', '-i', '--url', url, '--name', 'cat-box', 'alpine:latest'], { ...withKey, input: 'from stdin\nline 2\n' });
    expect(r).toMatchObject({ code: 0, stdout: 'from stdin\nline 2\n' });
    const rec = [...rt.records.values()].find((x) => x.name === 'cat-box')!;
    expect(rec.status).toBe('stopped');
    expect((await cli(['rm', '--url', url, 'cat-box'], withKey)).code).toBe(0);
  });

  it('a box without a main process, a missing command: coded errors and docker exit codes, no stack', async () => {
    const none = await cli(['run', '--rm', '--url', url, 'alpine:latest'], withKey);
    expect(none.code).toBe(125);
    expect(none.stderr).toMatch(/^Error: invalid state: .*has no main process/);
    noStack(none);
    rt.mainCommand = ['no-such-binary'];
    const missing = await cli(['run', '--rm', '--url', url, 'alpine:latest'], withKey);
    expect(missing.code).toBe(127);
    expect(missing.stderr).toMatch(/command not found: no-such-binary/);
    noStack(missing);
    expect(rt.records.size).toBe(0);
  });
});

describe('boxlite --url: box commands', { timeout: 60_000 }, () => {
  it('run -d, exec, ls, inspect, cp in and out, stop, rm', async () => {
    rt.mainCommand = ['sleep'];
    const d = await cli(['run', '-d', '--url', url, '--name', 'svc', 'alpine:latest'], withKey);
    expect(d.code).toBe(0);
    const id = d.stdout.trim();
    expect(rt.records.get(id)?.status).toBe('running');

    const ex = await cli(['exec', '--url', url, 'svc', 'echo', 'hi', 'there'], withKey);
    expect(ex).toMatchObject({ code: 0, stdout: 'hi there\n' });
    const fail = await cli(['exec', '--url', url, id, 'fail', '3'], withKey);
    expect(fail).toMatchObject({ code: 3, stderr: 'failed\n' });
    const cat = await cli(['exec', '-i', '--url', url, id, 'cat'], { ...withKey, input: 'piped' });
    expect(cat).toMatchObject({ code: 0, stdout: 'piped' });
    const missing = await cli(['exec', '--url', url, id, 'nope'], withKey);
    expect(missing.code).toBe(127);

    const ls = await cli(['ls', '--url', url], withKey);
    expect(ls.code).toBe(0);
    expect(ls.stdout).toMatch(new RegExp(`^${id}\\s+svc\\s+\\S+\\s+running`, 'm'));
    const json = JSON.parse((await cli(['ls', '--url', url, '--format', 'json'], withKey)).stdout) as Array<{ id: string }>;
    expect(json.map((b) => b.id)).toContain(id);

    const inspect = await cli(['inspect', '--url', url, 'svc'], withKey);
    expect(inspect.code).toBe(0);
    expect(JSON.parse(inspect.stdout)).toMatchObject([{ id, name: 'svc', state: { status: 'running' } }]);

    const up = path.join(tmp, 'up.txt');
    fs.writeFileSync(up, 'UP\n');
    expect((await cli(['cp', '--url', url, up, 'svc:/tmp/up.txt'], withKey)).code).toBe(0);
    expect(fs.readFileSync(path.join(rt.records.get(id)!.root, 'tmp', 'up.txt'), 'utf8')).toBe('UP\n');
    const down = path.join(tmp, 'down.txt');
    expect((await cli(['cp', '--url', url, 'svc:/tmp/up.txt', down], withKey)).code).toBe(0);
    expect(fs.readFileSync(down, 'utf8')).toBe('UP\n');

    // A directory lands as DEST/<its name>, as with the local runtime.
    fs.mkdirSync(path.join(tmp, 'tree', 'sub'), { recursive: true });
    fs.writeFileSync(path.join(tmp, 'tree', 'sub', 'b.txt'), 'B');
    expect((await cli(['cp', '--url', url, path.join(tmp, 'tree'), 'svc:/tmp/d'], withKey)).code).toBe(0);
    expect(fs.readFileSync(path.join(rt.records.get(id)!.root, 'tmp', 'd', 'tree', 'sub', 'b.txt'), 'utf8')).toBe('B');
    const noOverwrite = await cli(['cp', '--no-overwrite', '--url', url, 'svc:/tmp/up.txt', down], withKey);
    expect(noOverwrite.code).toBe(1);
    expect(noOverwrite.stderr).toMatch(/^Error: unsupported: cp: -L and --no-overwrite from a box are not available against a remote server/);

    const stats = await cli(['stats', '--url', url, '--format', 'json', 'svc'], withKey);
    expect(stats.code).toBe(0);
    expect(JSON.parse(stats.stdout)).toMatchObject([{ id, name: 'svc' }]);

    const stopped = await cli(['stop', '--url', url, 'svc'], withKey);
    expect(stopped).toMatchObject({ code: 0, stdout: 'svc\n' });
    expect((await cli(['ls', '-q', '--url', url], withKey)).stdout).not.toContain(id);
    expect((await cli(['ls', '-a', '-q', '--url', url], withKey)).stdout).toContain(id);
    expect((await cli(['rm', '--url', url, 'svc'], withKey)).code).toBe(0);
    expect(rt.records.has(id)).toBe(false);
    const gone = await cli(['inspect', '--url', url, id], withKey);
    expect(gone.code).toBe(1);
    expect(gone.stderr).toMatch(/^Error: .*not found/);
  });

  it('attach -i: the main-process session of a running box, stdin forwarded, its exit code', async () => {
    const d = await cli(['run', '-d', '--url', url, '--name', 'att', 'alpine:latest'], withKey);
    expect(d.code).toBe(0);
    rt.mainCommand = ['cat'];
    const r = await cli(['attach', '-i', '--url', url, 'att'], { ...withKey, input: 'to the main process\n' });
    expect(r).toMatchObject({ code: 0, stdout: 'to the main process\n' });
    expect((await cli(['rm', '-f', '--url', url, 'att'], withKey)).code).toBe(0);
  });

  it('local-only commands and flags: coded errors naming the command; a wrong key: 401, no stack', async () => {
    for (const [name, ...rest] of [['images'], ['pull', 'alpine'], ['logs', 'x'], ['info'], ['rmi', 'alpine']]) {
      const r = await cli([name!, '--url', url, ...rest], withKey);
      expect(r.code, name).toBe(1);
      expect(r.stderr).toMatch(new RegExp(`^Error: unsupported: \`boxlite ${name}\` is not available against a remote server \\(--url; here ${url} from --url\\)`));
      noStack(r);
    }
    // Group commands take the options after their own name: `boxlite image prune --url …`.
    const prune = await cli(['image', 'prune', '--url', url], withKey);
    expect(prune.code).toBe(1);
    expect(prune.stderr).toMatch(/`boxlite image prune` is not available against a remote server/);
    // Tunnels work remotely (the server's CONNECT route): an unknown box is the server's 404.
    const tunnel = await cli(['network', 'tunnel', '--url', url, 'no-such-box', '80'], withKey);
    expect(tunnel.code).toBe(1);
    expect(tunnel.stderr).toMatch(/^Error: .*not found: no-such-box/);
    const home = await cli(['--home', tmp, 'ls', '--url', url], withKey);
    expect(home.code).toBe(1);
    expect(home.stderr).toMatch(/--home is local-only/);
    const before = rt.records.size;
    const rmd = await cli(['run', '-d', '--rm', '--url', url, 'alpine:latest'], withKey);
    expect(rmd.code).toBe(125);
    expect(rmd.stderr).toMatch(/^Error: configuration error: --rm with -d is not available against a remote server/);
    expect(rt.records.size).toBe(before);
    const serve = await cli(['--url', url, 'serve', '--port', '0'], withKey);
    expect(serve.code).toBe(1);
    expect(serve.stderr).toMatch(/^Error: configuration error: serve runs this machine's runtime/);
    const serveKey = await cli(['--api-key', 'k'.repeat(16), 'serve', '--port', '0'], withKey);
    expect(serveKey.stderr).toMatch(/put them after it/);
    const port = await cli(['run', '--url', url, '-p', '8080:80', 'alpine:latest'], withKey);
    expect(port.code).toBe(125);
    expect(port.stderr).toMatch(/^Error: unsupported: Host port publication/);

    const wrong = await cli(['ls', '--url', url], { env: { BOXLITE_API_KEY: 'wrong-key-0123456789' } });
    expect(wrong.code).toBe(1);
    expect(wrong.stderr).toMatch(/^Error: configuration error: auth: .*(invalid or missing API key|unauthorized)/);
    noStack(wrong);
    const runWrong = await cli(['run', '--rm', '--url', url, 'alpine:latest', 'true'], { env: { BOXLITE_API_KEY: 'wrong' } });
    expect(runWrong.code).toBe(125);
    expect(runWrong.stderr).toMatch(/auth: /);
    expect(runWrong.stderr).not.toContain('wrong\n');
  });
});

describe('boxlite auth', { timeout: 60_000 }, () => {
  const file = () => path.join(xdg, 'boxlite', 'credentials.json');

  it('login verifies and stores 0600; status redacts and checks; other commands use it; logout deletes', async () => {
    const bad = await cli(['auth', 'login', '--url', url, '--api-key-stdin'], { input: 'wrong-key-0123456789\n' });
    expect(bad.code).toBe(1);
    expect(bad.stderr).toMatch(/^Error: configuration error: auth login: the server rejected the API key \(HTTP 401 unauthorized\); nothing was stored/);
    expect(fs.existsSync(file())).toBe(false);

    const login = await cli(['auth', 'login', '--url', `${url}/`, '--api-key-stdin'], { input: `${KEY}\n` });
    expect(login.code).toBe(0);
    expect(login.stdout).toContain(`Logged in to ${url} `);
    expect(fs.statSync(file()).mode & 0o777).toBe(0o600);
    expect(fs.statSync(path.dirname(file())).mode & 0o777).toBe(0o700);
    expect(JSON.parse(fs.readFileSync(file(), 'utf8'))).toEqual({ url, apiKey: KEY });

    const status = await cli(['auth', 'status']);
    expect(status.code).toBe(0);
    expect(status.stdout).toMatch(new RegExp(`^Server: +${url} \\(from ${file()}\\)$`, 'm'));
    expect(status.stdout).toMatch(/^API key: +cli-… \(25 characters\)$/m);
    expect(status.stdout).toMatch(/^Status: +accepted/m);
    expect(status.stdout + status.stderr).not.toContain(KEY);

    // No --url, no env: the stored server and key.
    rt.mainCommand = ['echo', 'via stored credentials'];
    const run = await cli(['run', '--rm', 'alpine:latest']);
    expect(run).toMatchObject({ code: 0, stdout: 'via stored credentials\n' });
    // The stored key is never sent to another server.
    const other = await cli(['auth', 'status', '--url', 'http://127.0.0.1:9']);
    expect(other.stdout).toMatch(/^API key: +\(none\)$/m);
    expect(other.code).toBe(1);

    // A wrong key in the environment wins over the stored one: status says so, exit 1.
    const rejected = await cli(['auth', 'status'], { env: { BOXLITE_API_KEY: 'wrong-key-0123456789' } });
    expect(rejected.code).toBe(1);
    expect(rejected.stdout).toMatch(/^Status: +the server rejected the API key \(HTTP 401 unauthorized\)$/m);

    fs.chmodSync(file(), 0o644);
    const open = await cli(['ls']);
    expect(open.code).toBe(1);
    expect(open.stderr).toMatch(/is accessible by others \(mode 0644\); run `chmod 600 /);
    fs.chmodSync(file(), 0o600);

    expect(await cli(['auth', 'logout'])).toMatchObject({ code: 0, stdout: `Removed ${file()}\n` });
    expect(fs.existsSync(file())).toBe(false);
    expect(await cli(['auth', 'logout'])).toMatchObject({ code: 0, stdout: `Not logged in (no ${file()})\n` });
    const after = await cli(['auth', 'status']);
    expect(after.code).toBe(1);
    expect(after.stdout).toMatch(/^Not logged in/);
  });

  it('login takes BOXLITE_API_KEY, records the prefix the server reports, and needs a URL and a key', async () => {
    const prefixed = buildRestApp(new FakeRuntime(), { apiKey: KEY, pathPrefix: 'tenant-a' });
    await prefixed.listen({ host: '127.0.0.1', port: 0 });
    try {
      const purl = `http://127.0.0.1:${(prefixed.server.address() as AddressInfo).port}`;
      const r = await cli(['--url', purl, 'auth', 'login'], withKey);
      expect(r.code).toBe(0);
      expect(JSON.parse(fs.readFileSync(file(), 'utf8'))).toEqual({ url: purl, apiKey: KEY, pathPrefix: 'tenant-a' });
      // Box routes exist only under the prefix: ls works through the stored prefix.
      expect((await cli(['ls', '-a'])).code).toBe(0);
      expect((await cli(['ls', '-a', '--path-prefix', 'other'])).code).toBe(1);
    } finally {
      await prefixed.close();
    }
    expect((await cli(['auth', 'login'])).stderr).toMatch(/auth login needs --url URL/);
    const nokey = await cli(['auth', 'login', '--url', url]);
    expect(nokey.code).toBe(1);
    expect(nokey.stderr).toMatch(/no API key: pipe it with --api-key-stdin, or set BOXLITE_API_KEY/);
  });
});
