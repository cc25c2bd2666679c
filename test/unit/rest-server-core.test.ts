// The REST server's core, in process (app.inject) on a FakeRuntime: auth, request ids, the error
// envelope and status table, body validation, unknown routes/methods, /v1/config, /v1/me, prefixes.
import { afterEach, describe, expect, it } from 'vitest';
import WebSocket from 'ws';
import type { AddressInfo } from 'node:net';
import * as S from '../../src/rest/schemas.js';
import { checkBearer } from '../../src/rest/server/auth.js';
import { toHttp } from '../../src/rest/server/errors.js';
import { ConfigError, ERROR_TABLE, BoxliteError, type ErrorCode } from '../../src/errors/index.js';
import { call, expectError, KEY, makeApp, MINIMAL_CREATE, valid } from './rest-server-helpers.js';

const apps: Array<{ close(): Promise<unknown> }> = [];
afterEach(async () => {
  for (const a of apps.splice(0)) await a.close();
});
function app(...args: Parameters<typeof makeApp>) {
  const made = makeApp(...args);
  apps.push(made.app);
  return made;
}

describe('auth', () => {
  it('GET /v1/config is public; everything else needs the bearer key', async () => {
    const { app: a } = app();
    const cfg = await call(a, 'GET', '/v1/config', { auth: false });
    expect(cfg.status).toBe(200);
    valid(S.ServerConfig, cfg.json());
    for (const [m, u] of [['GET', '/v1/me'], ['GET', '/v1/boxes'], ['GET', '/v1/metrics'], ['POST', '/v1/boxes'], ['GET', '/v1/nope']] as const) {
      const e = expectError(await call(a, m, u, { auth: false }), 401, 'unauthenticated', /invalid or missing API key/);
      expect(e.type).toBe('AuthError');
    }
  });

  it('accepts the scheme in any case, refuses a wrong key, a query token and other schemes', async () => {
    const { app: a } = app();
    expect((await call(a, 'GET', '/v1/me', { auth: false, headers: { authorization: `bearer ${KEY}` } })).status).toBe(200);
    expect((await call(a, 'GET', '/v1/me', { auth: false, headers: { authorization: `BEARER ${KEY}` } })).status).toBe(200);
    expectError(await call(a, 'GET', '/v1/me', { auth: false, headers: { authorization: `Bearer ${KEY}x` } }), 401, 'unauthenticated');
    expectError(await call(a, 'GET', '/v1/me', { auth: false, headers: { authorization: `Basic ${KEY}` } }), 401, 'unauthenticated');
    expectError(await call(a, 'GET', `/v1/me?access_token=${KEY}`, { auth: false }), 401, 'unauthenticated');
    expectError(await call(a, 'GET', '/v1/me', { auth: false, headers: { authorization: 'Bearer' } }), 401, 'unauthenticated');
  });

  it('checkBearer compares whole tokens', () => {
    expect(checkBearer(`Bearer ${KEY}`, KEY)).toBe(true);
    expect(checkBearer(`Bearer ${KEY.slice(0, -1)}`, KEY)).toBe(false);
    expect(checkBearer(undefined, KEY)).toBe(false);
    expect(checkBearer(`Bearer ${KEY} extra`, KEY)).toBe(false);
  });

  it('without a key nothing is required', async () => {
    const { app: a } = app({ apiKey: undefined });
    const me = await call(a, 'GET', '/v1/me', { auth: false });
    expect(valid(S.Principal, me.json()).sub).toBe('local-anonymous');
  });

  it('refuses browsers (any Origin) with or without a key, and closes refused connections', async () => {
    for (const apiKey of [KEY, undefined]) {
      const { app: a } = app({ apiKey });
      const r = await call(a, 'GET', '/v1/boxes', { headers: { origin: 'https://evil.example' } });
      expectError(r, 403, 'permission_denied', /cross-origin/);
      expect(r.res.headers.connection).toBe('close');
      expect((await call(a, 'POST', '/v1/boxes/b/stop', { auth: apiKey !== undefined, headers: { origin: 'null' } })).status).toBe(403);
    }
    const { app: keyed } = app();
    expect((await call(keyed, 'GET', '/v1/me', { auth: false })).res.headers.connection).toBe('close');
  });

  it('without a key serves only loopback Host names (no DNS rebinding), unless allowAnyHost', async () => {
    const { app: a } = app({ apiKey: undefined });
    for (const host of ['localhost:8100', '127.0.0.1:8100', '127.1.2.3', '[::1]:8100']) {
      expect((await call(a, 'GET', '/v1/me', { auth: false, headers: { host } })).status).toBe(200);
    }
    for (const host of ['evil.example:8100', '127.0.0.1.evil.example', '10.0.0.5:8100']) {
      expectError(await call(a, 'GET', '/v1/boxes', { auth: false, headers: { host } }), 403, 'permission_denied', /loopback/);
    }
    const { app: open } = app({ apiKey: undefined, allowAnyHost: true });
    expect((await call(open, 'GET', '/v1/me', { auth: false, headers: { host: '10.0.0.5:8100' } })).status).toBe(200);
    // With a key the Host is not judged: the key is the gate.
    const { app: keyed } = app();
    expect((await call(keyed, 'GET', '/v1/me', { headers: { host: 'boxes.example.com' } })).status).toBe(200);
  });

  it('an upgrade to a route that takes none is a 400, never a 101', async () => {
    const { app: a } = app();
    await a.listen({ host: '127.0.0.1', port: 0 });
    const port = (a.server.address() as AddressInfo).port;
    const status = await new Promise<number>((resolve, reject) => {
      const ws = new WebSocket(`ws://127.0.0.1:${port}/v1/config`);
      ws.on('unexpected-response', (_req, res) => resolve(res.statusCode ?? 0));
      ws.on('open', () => reject(new Error('upgraded a plain route')));
      ws.on('error', () => undefined);
    });
    expect(status).toBe(400);
  });

  it('rejects a WebSocket upgrade without the key before the 101', async () => {
    const { app: a } = app({}, {}, [
      (s) => s.get('/boxes/:box_id/ws-probe', { websocket: true }, (socket) => socket.send('hello')),
    ]);
    await a.listen({ host: '127.0.0.1', port: 0 });
    const port = (a.server.address() as AddressInfo).port;
    const status = await new Promise<number>((resolve, reject) => {
      const ws = new WebSocket(`ws://127.0.0.1:${port}/v1/boxes/x/ws-probe`);
      ws.on('unexpected-response', (_req, res) => resolve(res.statusCode ?? 0));
      ws.on('open', () => reject(new Error('upgraded without auth')));
      ws.on('error', () => undefined);
    });
    expect(status).toBe(401);
    const msg = await new Promise<string>((resolve, reject) => {
      const ws = new WebSocket(`ws://127.0.0.1:${port}/v1/boxes/x/ws-probe`, { headers: { authorization: `Bearer ${KEY}` } });
      ws.on('message', (d) => {
        resolve(String(d));
        ws.close();
      });
      ws.on('error', reject);
    });
    expect(msg).toBe('hello');
  });
});

describe('request ids', () => {
  it('echoes a given X-Request-Id, fills error.request_id and logs it', async () => {
    const { app: a, lines } = app();
    const r = await call(a, 'GET', '/v1/boxes/nope', { headers: { 'x-request-id': 'req-abc.123' } });
    expect(r.rid).toBe('req-abc.123');
    expectError(r, 404, 'not_found', /^box not found: nope$/);
    expect(lines.some((l) => l.startsWith('req-abc.123 GET /v1/boxes/nope 404'))).toBe(true);
  });

  it('mints a UUID when none (or a malformed one) is given', async () => {
    const { app: a } = app();
    const r1 = await call(a, 'GET', '/v1/config');
    expect(r1.rid).toMatch(/^[0-9a-f-]{36}$/);
    const r2 = await call(a, 'GET', '/v1/config', { headers: { 'x-request-id': 'bad id with spaces' } });
    expect(r2.rid).toMatch(/^[0-9a-f-]{36}$/);
  });

  it('never logs the key', async () => {
    const { app: a, lines } = app();
    await call(a, 'GET', '/v1/me');
    await call(a, 'GET', '/v1/me', { auth: false, headers: { authorization: 'Bearer wrong-key' } });
    expect(lines.join('\n')).not.toContain(KEY);
    expect(lines.join('\n')).not.toContain('wrong-key');
  });
});

describe('error envelope', () => {
  it('unknown routes are 404, wrong methods 405, both enveloped', async () => {
    const { app: a } = app();
    expectError(await call(a, 'GET', '/v1/nothing-here'), 404, 'not_found');
    expectError(await call(a, 'GET', '/v2/boxes'), 404, 'not_found');
    expectError(await call(a, 'PATCH', '/v1/boxes/abc'), 405, 'method_not_allowed');
    expectError(await call(a, 'PUT', '/v1/boxes'), 405, 'method_not_allowed');
  });

  it('malformed JSON, a wrong type, an unknown field and out-of-range values are 400 naming the field', async () => {
    const { app: a } = app();
    expectError(await call(a, 'POST', '/v1/boxes', { raw: '{"image":', headers: { 'content-type': 'application/json' } }), 400, 'invalid_argument', /malformed JSON/);
    expectError(await call(a, 'POST', '/v1/boxes', { body: { ...MINIMAL_CREATE, cpus: 'two' } }), 400, 'invalid_argument', /cpus: Expected number/);
    expectError(await call(a, 'POST', '/v1/boxes', { body: { ...MINIMAL_CREATE, bogus: 1 } }), 400, 'invalid_argument', /unknown field\(s\) "bogus"/);
    // The e2e driver's expectation: 400 with "invalid" in the body.
    const zero = expectError(await call(a, 'POST', '/v1/boxes', { body: { ...MINIMAL_CREATE, cpus: 0 } }), 400, 'invalid_argument', /cpus/);
    expect(zero.type).toBe('InvalidArgumentError');
    expectError(await call(a, 'POST', '/v1/boxes', { body: { ...MINIMAL_CREATE, memory_mib: -1 } }), 400, 'invalid_argument', /^invalid argument: memory_mib/);
    expectError(await call(a, 'POST', '/v1/boxes', { body: { ...MINIMAL_CREATE, network: { outbound: { mode: 'maybe' } } } }), 400, 'invalid_argument', /network\.outbound\.mode/);
    expectError(await call(a, 'POST', '/v1/boxes', { body: [1, 2] }), 400, 'invalid_argument');
    expectError(await call(a, 'POST', '/v1/boxes', { raw: 'x', headers: { 'content-type': 'text/plain' } }), 400, 'invalid_argument', /Content-Type/);
  });

  it('an oversized JSON body is 413 payload_too_large and the server keeps serving', async () => {
    const { app: a } = app();
    const big = JSON.stringify({ image: 'x'.repeat(2 * 1024 * 1024) });
    expectError(await call(a, 'POST', '/v1/boxes', { raw: big, headers: { 'content-type': 'application/json' } }), 413, 'payload_too_large');
    expect((await call(a, 'GET', '/v1/config')).status).toBe(200);
  });

  it('maps every SDK error code through the reference table; unexpected errors are a bare 500', () => {
    for (const code of Object.keys(ERROR_TABLE) as ErrorCode[]) {
      const { status, body } = toHttp(new BoxliteError('x', { code }), 'rid');
      expect(status).toBe(ERROR_TABLE[code].httpStatus);
      expect(body.error.code).toBe(ERROR_TABLE[code].httpCode);
      valid(S.ErrorResponse, body);
    }
    expect(toHttp(new ConfigError('cpus must be 1')).body.error.message).toBe('invalid argument: cpus must be 1');
    const boom = new Error('secret detail');
    const r = toHttp(boom, 'rid');
    expect(r.status).toBe(500);
    expect(r.body.error).toMatchObject({ type: 'InternalError', code: 'internal' });
    expect(JSON.stringify(r.body)).not.toContain('secret detail');
    expect(r.internal).toContain('secret detail');
  });

  it('a runtime failure is a 500 envelope, logged by request id, with no stack', async () => {
    const { app: a, rt, lines } = app();
    rt.listInfo = async () => {
      throw new TypeError('kaboom');
    };
    const r = await call(a, 'GET', '/v1/boxes');
    expectError(r, 500, 'internal');
    expect(lines.some((l) => l.startsWith(`${r.rid} error 500: TypeError: kaboom`))).toBe(true);
  });
});

describe('config, me, prefix', () => {
  it('advertises truthful capabilities and the configured transfer limit', async () => {
    const { app: a } = app({ maxFileBytes: 5 * 1024 * 1024 });
    const cfg = valid(S.ServerConfig, (await call(a, 'GET', '/v1/config', { auth: false })).json());
    expect(cfg.capabilities).toMatchObject({
      snapshots_enabled: false,
      clone_enabled: false,
      export_enabled: false,
      import_enabled: false,
      linux_capabilities_enabled: true,
      file_transfer_max_bytes: 5 * 1024 * 1024,
    });
    expect(cfg.defaults).toMatchObject({ cpus: 1, memory_mib: 512 });
  });

  it('/v1/me reports path_prefix null (the field the e2e helper reads)', async () => {
    const { app: a } = app();
    const me = valid(S.Principal, (await call(a, 'GET', '/v1/me')).json());
    expect(me).toMatchObject({ principal_type: 'service_account', path_prefix: null });
  });

  it('a configured prefix scopes box routes under /v1/{prefix}; config and me stay at /v1', async () => {
    const { app: a } = app({ pathPrefix: 'acme/team-1' });
    expect(valid(S.Principal, (await call(a, 'GET', '/v1/me')).json()).path_prefix).toBe('acme/team-1');
    const created = await call(a, 'POST', '/v1/acme/team-1/boxes', { body: MINIMAL_CREATE });
    expect(created.status).toBe(201);
    const box = valid(S.Box, created.json());
    expect(created.res.headers.location).toBe(`/v1/acme/team-1/boxes/${box.box_id}`);
    expect((await call(a, 'GET', `/v1/acme/team-1/boxes/${box.box_id}`)).status).toBe(200);
    expectError(await call(a, 'GET', `/v1/boxes/${box.box_id}`), 404, 'not_found');
    expect((await call(a, 'GET', '/v1/acme/team-1/metrics')).status).toBe(200);
    expect((await call(a, 'GET', '/v1/config')).status).toBe(200);
  });

  it('refuses a malformed prefix at build time', () => {
    expect(() => makeApp({ pathPrefix: '../etc' })).toThrow(/invalid pathPrefix/);
  });
});

describe('bodies', () => {
  it('an empty body with Content-Type: application/json reads as none (stop/start of other clients)', async () => {
    const { app: a } = app();
    const created = await call(a, 'POST', '/v1/boxes', { body: MINIMAL_CREATE });
    const id = created.json().box_id;
    const r = await call(a, 'POST', `/v1/boxes/${id}/start`, { raw: '', headers: { 'content-type': 'application/json; charset=utf-8' } });
    expect(r.status).toBe(200);
    valid(S.Box, r.json());
  });

  it('refuses prototype poisoning', async () => {
    const { app: a } = app();
    expectError(await call(a, 'POST', '/v1/boxes', { raw: '{"__proto__":{"x":1}}', headers: { 'content-type': 'application/json' } }), 400, 'invalid_argument');
  });
});
