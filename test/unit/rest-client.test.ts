// Our REST client's own rules (src/rest/client/), against the capture server: credentials and
// the token cache, URLs, listInfo paging, the stateful UTF-8 decoder, the attach socket's
// first-frame watchdog, reconnect budget and connect failures, metrics parsing, error mapping.
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { ApiKeyCredential, BoxliteRestOptions, InvalidArgumentError, JsBoxlite, SimpleBox } from '../../src/index.js';
import { restTimings } from '../../src/rest/client/execution.js';
import { errorFromResponse, RestTransport } from '../../src/rest/client/transport.js';
import { parseBox } from '../../src/rest/client/wire.js';
import { CaptureServer, type CaptureServerOptions, type CapturedHttp } from '../fixtures/rest-capture-server.js';

const saved = { ...restTimings };
let server: CaptureServer | undefined;
async function serve(options: CaptureServerOptions = {}): Promise<string> {
  server = new CaptureServer(options);
  return server.listen();
}
afterEach(async () => {
  Object.assign(restTimings, saved);
  await server?.close();
  server = undefined;
});

async function drain(s: { next(): Promise<string | null> }): Promise<string> {
  let out = '';
  for (let c = await s.next(); c !== null; c = await s.next()) out += c;
  return out;
}

describe('credentials', () => {
  const env = process.env.BOXLITE_API_KEY;
  beforeEach(() => delete process.env.BOXLITE_API_KEY);
  afterEach(() => (env === undefined ? delete process.env.BOXLITE_API_KEY : (process.env.BOXLITE_API_KEY = env)));

  it('ApiKeyCredential: fromEnv is null when unset or empty; getToken never expires', () => {
    expect(ApiKeyCredential.fromEnv()).toBeNull();
    process.env.BOXLITE_API_KEY = '';
    expect(ApiKeyCredential.fromEnv()).toBeNull();
    process.env.BOXLITE_API_KEY = 'k1';
    expect(ApiKeyCredential.fromEnv()!.getToken()).toEqual({ token: 'k1', expiresAt: null });
  });

  it('any object with getToken() is a credential; anything else is refused', async () => {
    const url = await serve({ apiKey: 'custom' });
    const rt = JsBoxlite.rest(new BoxliteRestOptions({ url, credential: { getToken: () => ({ token: 'custom' }) } }));
    expect(await rt.listInfo()).toEqual([]);
    expect(() => JsBoxlite.rest({ url, credential: { token: 'x' } as never })).toThrow(InvalidArgumentError);
    expect(() => JsBoxlite.rest({ url: '' })).toThrow(/needs BoxliteRestOptions with a url/);
  });

  it('caches the token until expiresAt − 60 s (null: forever)', async () => {
    const url = await serve({ apiKey: 't' });
    const counting = (expiresAt: number | null) => {
      const c = { calls: 0, getToken: () => (c.calls++, { token: 't', expiresAt }) };
      return c;
    };
    const now = Math.floor(Date.now() / 1000);
    for (const [expiresAt, calls] of [
      [null, 1],
      [now + 3600, 1],
      [now + 30, 3],
    ] as const) {
      const cred = counting(expiresAt);
      const rt = JsBoxlite.rest(new BoxliteRestOptions({ url, credential: cred }));
      for (let i = 0; i < 3; i++) await rt.listInfo();
      expect(cred.calls, `expiresAt ${expiresAt}`).toBe(calls);
    }
  });

  it('no credential: no Authorization header; a 401 is a Config "auth:" error', async () => {
    const url = await serve({ apiKey: 'needed' });
    const rt = JsBoxlite.rest(new BoxliteRestOptions({ url }));
    await expect(rt.listInfo()).rejects.toThrow(/^configuration error: auth: invalid or missing API key$/);
    expect((server!.log[0] as CapturedHttp).headers.authorization).toBeUndefined();
  });
});

describe('BoxliteRestOptions.fromEnv', () => {
  it('reads BOXLITE_REST_URL, BOXLITE_API_KEY and BOXLITE_REST_PATH_PREFIX; null without a URL', () => {
    expect(BoxliteRestOptions.fromEnv({})).toBeNull();
    const o = BoxliteRestOptions.fromEnv({ BOXLITE_REST_URL: 'http://h:8100', BOXLITE_API_KEY: 'k', BOXLITE_REST_PATH_PREFIX: 'acme' })!;
    expect([o.url, o.pathPrefix, o.credential?.getToken()]).toEqual(['http://h:8100', 'acme', { token: 'k', expiresAt: null }]);
    expect(BoxliteRestOptions.fromEnv({ BOXLITE_REST_URL: 'http://h' })!.credential).toBeUndefined();
  });
});

describe('URLs', () => {
  it('trims trailing slashes, keeps the prefix verbatim, root endpoints without it', () => {
    const t = new RestTransport('http://h:1/api//', null, 'acme/team-1');
    expect(t.url('/boxes')).toBe('http://h:1/api/v1/acme/team-1/boxes');
    expect(t.url('/config', true)).toBe('http://h:1/api/v1/config');
    expect(new RestTransport('https://h', null, '').wsUrl('/boxes/b/executions/e/attach')).toBe('wss://h/v1/boxes/b/executions/e/attach');
  });
});

describe('listInfo', () => {
  it('follows next_page_token to the last page', async () => {
    const url = await serve({ forcePageSize: 2 });
    const rt = JsBoxlite.rest({ url });
    for (let i = 0; i < 5; i++) await rt.create({ image: 'alpine:latest' });
    server!.log.length = 0;
    expect((await rt.listInfo()).map((b) => b.id)).toEqual(['box-1', 'box-2', 'box-3', 'box-4', 'box-5']);
    expect(server!.log.map((e) => e.query)).toEqual([{}, { pageToken: '2' }, { pageToken: '4' }]);
  });
});

describe('exec over the attach socket', () => {
  it('decodes UTF-8 across frames (a character cut between two frames arrives whole)', async () => {
    const url = await serve();
    const box = await JsBoxlite.rest({ url }).create({ image: 'alpine:latest' });
    const ex = await box.exec('utf8');
    expect(await drain(await ex.stdout())).toBe('héllo wörld ✓\n');
    expect(await ex.wait()).toEqual({ exitCode: 0 });
  });

  it('no first frame in time: the socket is dropped, re-attached, and after the budget the result says so', async () => {
    Object.assign(restTimings, { firstFrameMs: 80, reconnectFirstMs: 40, reconnectMaxMs: 40, reconnectBudgetMs: 400 });
    const url = await serve({ noPing: true });
    const box = await JsBoxlite.rest({ url }).create({ image: 'alpine:latest' });
    const ex = await box.exec('sleep', ['30']);
    const r = await ex.wait();
    expect(r.exitCode).toBe(-1);
    expect(r.errorMessage).toMatch(/reconnecting failed/);
    const attaches = server!.log.filter((e) => e.kind === 'ws').length;
    expect(attaches).toBeGreaterThan(2);
    expect(server!.log.filter((e) => e.kind === 'http' && e.method === 'GET' && e.path.endsWith('/executions/exec-1')).length).toBeGreaterThanOrEqual(attaches);
  });

  it('the watchdog drops a socket silent after its first frame; the exec is re-attached and its exit still arrives', async () => {
    Object.assign(restTimings, { watchdogMs: 80, reconnectFirstMs: 20, reconnectMaxMs: 20 });
    const url = await serve();
    const box = await JsBoxlite.rest({ url }).create({ image: 'alpine:latest' });
    const ex = await box.exec('sleep', ['30']);
    const attaches = () => server!.log.filter((e) => e.kind === 'ws').length;
    for (let i = 0; i < 100 && attaches() < 2; i++) await new Promise((r) => setTimeout(r, 20));
    expect(attaches()).toBeGreaterThanOrEqual(2);
    await ex.kill();
    expect(await ex.wait()).toEqual({ exitCode: 137 });
  });

  it('after the first frame the client pings the server on its interval', async () => {
    Object.assign(restTimings, { pingMs: 30 });
    const url = await serve();
    const box = await JsBoxlite.rest({ url }).create({ image: 'alpine:latest' });
    const ex = await box.exec('sleep', ['30']);
    await new Promise((r) => setTimeout(r, 250));
    expect(server!.pingsReceived).toBeGreaterThanOrEqual(3);
    await ex.kill();
    expect(await ex.wait()).toEqual({ exitCode: 137 });
  });

  it('a refused first upgrade still resolves exec(); wait() reports "WS connect failed"', async () => {
    const url = await serve({ refuseAttach: 401 });
    const box = await JsBoxlite.rest({ url }).create({ image: 'alpine:latest' });
    const ex = await box.exec('echo', ['hi']);
    const r = await ex.wait();
    expect(r.exitCode).toBe(0); // the status probe: it completed
    expect(r.errorMessage).toMatch(/^WS connect failed: WS auth rejected \(HTTP 401\)/);
  });

  it('a socket closed without an exit frame ends with the exit code the status probe reports', async () => {
    const url = await serve();
    const box = await JsBoxlite.rest({ url }).create({ image: 'alpine:latest' });
    const ex = await box.exec('drop');
    expect(await drain(await ex.stdout())).toBe('partial\n');
    expect(await ex.wait()).toEqual({ exitCode: 5 });
  });
});

describe('files', () => {
  it('copyOut refuses an archive entry that escapes the destination', async () => {
    const fs = await import('node:fs');
    const os = await import('node:os');
    const path = await import('node:path');
    const url = await serve();
    const box = await JsBoxlite.rest({ url }).create({ image: 'alpine:latest' });
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'boxlite-evil-'));
    try {
      await expect(box.copyOut('/srv/evil', path.join(dir, 'dest'))).rejects.toThrow(/escapes the destination/);
      expect(fs.existsSync(path.join(dir, 'escaped.txt'))).toBe(false);
      expect(fs.readdirSync(dir).filter((n) => n.includes('boxlite-copy'))).toEqual([]); // no staging file left
    } finally {
      fs.rmSync(dir, { recursive: true, force: true });
    }
  });
});

describe('box types over REST', () => {
  it('new SimpleBox({ runtime: JsBoxlite.rest(...), image }) runs commands through the server', async () => {
    const url = await serve();
    const box = new SimpleBox({ runtime: JsBoxlite.rest(new BoxliteRestOptions({ url })), image: 'alpine:latest' });
    const r = await box.exec('echo', 'hi', 'there');
    expect([r.exitCode, r.stdout, r.stderr]).toEqual([0, 'hi there\n', '']);
    const f = await box.exec('fail');
    expect([f.exitCode, f.stdout, f.stderr]).toEqual([3, 'before\n', 'oops\n']);
    await box.stop();
    const paths = server!.log.map((e) => `${e.kind === 'http' ? e.method : 'WS'} ${e.path}`);
    expect(paths[0]).toBe('POST /v1/boxes');
    expect(paths).toContain('POST /v1/boxes/box-1/exec');
    expect(paths).toContain('WS /v1/boxes/box-1/executions/exec-1/attach');
  });
});

describe('responses', () => {
  it('box metrics are parsed for real (the 0.10 client returns zeros)', async () => {
    const url = await serve();
    const box = await JsBoxlite.rest({ url }).create({ image: 'alpine:latest' });
    expect(await box.metrics()).toMatchObject({
      commandsExecutedTotal: 7,
      execErrorsTotal: 1,
      cpuPercent: 12.5,
      memoryBytes: 1048576,
      networkTcpErrors: 6,
      totalCreateDurationMs: 10,
      guestBootDurationMs: 20,
      stageContainerInitMs: 6,
    });
  });

  it('a Box: defaults, legacy auto_pause, unknown status, missing fields and bad ids', () => {
    const base = { box_id: 'b1', status: 'running', created_at: 'nonsense', updated_at: 'x', image: 'i', cpus: 1, memory_mib: 128, extra: 1 };
    const info = parseBox({ ...base, auto_pause: 30 });
    expect(info).toMatchObject({ id: 'b1', state: { status: 'running', running: true }, autoStop: 30, autoDelete: 0, autoResume: true, network: null });
    expect(Number.isNaN(Date.parse(info.createdAt))).toBe(false);
    expect(parseBox({ ...base, status: 'weird' }).state.status).toBe('unknown');
    expect(() => parseBox({ ...base, cpus: undefined })).toThrow(/missing field `cpus`/);
    expect(() => parseBox({ ...base, box_id: 'a/b' })).toThrow(/unparseable box_id/);
  });

  it('errors: envelope code first, then the flat shape, then the status', () => {
    const env = (code: string, message: string) => JSON.stringify({ error: { message, type: 'X', code } });
    expect(errorFromResponse(422, env('image_pull_failed', 'images error: manifest unknown')).message).toBe('images error: manifest unknown');
    expect(errorFromResponse(400, env('invalid_argument', 'cpus: too small')).code).toBe('InvalidArgument');
    expect(errorFromResponse(409, env('already_exists', 'box named a')).code).toBe('AlreadyExists');
    expect(errorFromResponse(410, env('session_reaped', 'gone')).code).toBe('SessionReaped');
    expect(errorFromResponse(504, env('timeout', 'signal'))).toMatchObject({ code: 'Timeout', message: 'server timed out: signal' });
    expect(errorFromResponse(400, JSON.stringify({ message: 'bad', code: 'invalid_argument' })).code).toBe('InvalidArgument');
    expect(errorFromResponse(404, 'nope').code).toBe('NotFound');
    expect(errorFromResponse(403, 'no').message).toBe('configuration error: auth: unauthorized (HTTP 403): no');
    expect(errorFromResponse(502, 'bad gw')).toMatchObject({ code: 'Network', message: 'network error: upstream returned HTTP 502: bad gw' });
    expect(errorFromResponse(500, 'boom').message).toBe('internal error: HTTP 500: boom');
  });
});
