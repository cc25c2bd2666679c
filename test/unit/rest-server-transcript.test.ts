// Every request the reference's 0.10 client sent (test/fixtures/rest-transcript.json, captured by
// scripts/capture-rest-transcript.mjs) is one our server routes and whose body and query our
// schemas accept: the server takes exactly what the real client sends.
import fs from 'node:fs';
import path from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import * as S from '../../src/rest/schemas.js';
import { boxOptionsFrom } from '../../src/rest/server/boxes.js';
import { makeApp } from './rest-server-helpers.js';

const FIXTURE = path.resolve(__dirname, '../fixtures/rest-transcript.json');
type Req = { kind: string; status?: number; method?: string; path: string; query?: Record<string, string>; body?: unknown; headers?: Record<string, string> };
const transcript: { scenarios: Record<string, { requests: Req[] }> } | undefined = fs.existsSync(FIXTURE)
  ? JSON.parse(fs.readFileSync(FIXTURE, 'utf8'))
  : undefined;
// A tunnel's CONNECT is no route (inject cannot send one): test/unit/rest-tunnel.test.ts covers it.
const all = transcript ? Object.entries(transcript.scenarios).flatMap(([name, s]) => s.requests.filter((r) => r.kind === 'http' && r.method !== 'CONNECT').map((r) => ({ name, ...r }))) : [];

// Requests the 0.10 client sends without validating them itself ("client-validation" scenario: the
// capture server merely answered them plausibly, so the recorded status is not a verdict). The
// contract leaves the server's answer to us (§1.4/§5.3: validate, answer with the envelope), and the
// right answer is a rejection, checked below, not acceptance:
// - exec {"command":""}: ExecRequest.command is required and an empty program can never run; the
//   local SDK refuses box.exec('') (ConfigError "command must be a non-empty string"), so the server
//   answers 400 invalid_argument naming `command` before booting anything (the 0.10 client surfaces
//   it as an error from exec()).
// - resize {"cols":0,"rows":0} (ex.resizeTty(0, 0)): ResizeRequest is cols≥1, rows≥1 (OpenAPI, and the
//   attach `resize` frame's "both > 0"), so 400 invalid_argument naming the field; a real tty exec is
//   used below, and the body is validated before the execution is looked up anyway.
// - GET /v1/boxes/a/b: rt.get('a/b'), the id put in the path verbatim. No box id or name may contain
//   '/', so no box route matches: 404 not_found envelope, which the 0.10 client turns into null.
// - GET /v1/boxes/: rt.get(''), getBox with an empty id: 404 not_found ("box not found: "), not the
//   box list (boxes.ts), so the 0.10 client gets null, like the local SDK's get('').
const REJECTED: Array<{ match: (r: Req) => boolean; status: number; code: string; message: RegExp }> = [
  { match: (r) => r.method === 'POST' && /\/exec$/.test(r.path) && (r.body as { command?: unknown })?.command === '', status: 400, code: 'invalid_argument', message: /^invalid argument: command/ },
  { match: (r) => r.method === 'POST' && /\/resize$/.test(r.path) && ((r.body as { cols?: number })?.cols === 0 || (r.body as { rows?: number })?.rows === 0), status: 400, code: 'invalid_argument', message: /^invalid argument: (cols|rows)/ },
  { match: (r) => r.method === 'GET' && r.path === '/v1/boxes/a/b', status: 404, code: 'not_found', message: /^not found/ },
  { match: (r) => r.method === 'GET' && r.path === '/v1/boxes/', status: 404, code: 'not_found', message: /^box not found: $/ },
];
const rejected = all.filter((r) => REJECTED.some((x) => x.match(r)));
const http = all.filter((r) => !rejected.includes(r));

describe.skipIf(!transcript)('the 0.10 client transcript', () => {
  const made = [makeApp({ apiKey: 'test-key' }), makeApp({ apiKey: 'test-key', pathPrefix: 'acme/team-1' })];
  afterAll(async () => {
    for (const m of made) {
      await m.app.close();
      m.rt.dispose();
    }
  });

  it('has requests to check', () => {
    expect(http.length).toBeGreaterThan(20);
    expect(all.length).toBe(http.length + rejected.length);
  });

  it('every JSON body parses with the schema of its route', () => {
    const checks: Array<[RegExp, string, { safeParse(v: unknown): { success: boolean; error?: unknown } }]> = [
      [/\/boxes$/, 'POST', S.CreateBoxRequest],
      [/\/exec$/, 'POST', S.ExecRequest],
      [/\/resize$/, 'POST', S.ResizeRequest],
      [/\/signal$/, 'POST', S.SignalRequest],
      [/\/stop$/, 'POST', S.StopBoxRequest],
    ];
    let checked = 0;
    for (const r of http) {
      for (const [re, method, schema] of checks) {
        // Bodies the scenario sent to provoke a 400 (cpus: 0) are refused by design.
        if (r.method !== method || !re.test(r.path) || r.body === undefined || r.body === null || r.status === 400) continue;
        const res = schema.safeParse(r.body);
        expect(res.success, `${r.name}: ${r.method} ${r.path} ${JSON.stringify(r.body)}: ${String(res.error)}`).toBe(true);
        checked++;
      }
    }
    expect(checked).toBeGreaterThan(10);
  });

  it('every create body maps to SDK options (inbound dropped, nothing refused by the mapping)', () => {
    for (const r of http.filter((x) => x.method === 'POST' && /\/boxes$/.test(x.path) && x.status !== 400)) {
      const opts = boxOptionsFrom(S.CreateBoxRequest.parse(r.body), undefined);
      expect(JSON.stringify(opts)).not.toContain('inbound');
    }
  });

  it('the client-side-invalid requests the 0.10 client sends get the right error envelope', async () => {
    expect(rejected.length).toBe(REJECTED.length);
    const m = made[0]!;
    const auth = { authorization: 'Bearer test-key' };
    const created = await m.app.inject({ method: 'POST', url: '/v1/boxes', headers: { ...auth, 'content-type': 'application/json' }, payload: '{"image":"alpine:latest"}' });
    const boxId = (JSON.parse(created.body) as { box_id: string }).box_id;
    const started = await m.app.inject({ method: 'POST', url: `/v1/boxes/${boxId}/exec`, headers: { ...auth, 'content-type': 'application/json' }, payload: '{"command":"sleep","args":["30"],"tty":true}' });
    const execId = (JSON.parse(started.body) as { execution_id: string }).execution_id;
    for (const r of rejected) {
      const x = REJECTED.find((y) => y.match(r))!;
      // The transcript's box ids are the capture server's ('box-1'): use a real box of ours.
      const url = r.path.replace(/^\/v1\/boxes\/box-1\//, `/v1/boxes/${boxId}/`).replace(/\/executions\/exec-\d+\//, `/executions/${execId}/`);
      const isJson = r.body !== undefined && r.body !== null;
      const res = await m.app.inject({ method: r.method as 'GET', url, headers: isJson ? { ...auth, 'content-type': 'application/json' } : auth, payload: isJson ? JSON.stringify(r.body) : undefined });
      const body = JSON.parse(res.body) as { error: { message: string; type: string; code: string; request_id: string } };
      const where = `${r.name}: ${r.method} ${url} → ${res.statusCode} ${res.body}`;
      expect(res.statusCode, where).toBe(x.status);
      expect(body.error.code, where).toBe(x.code);
      expect(body.error.message, where).toMatch(x.message);
      expect(body.error.request_id, where).toBe(res.headers['x-request-id']);
    }
    await m.app.inject({ method: 'DELETE', url: `/v1/boxes/${boxId}/executions/${execId}`, headers: auth });
  });

  it('every request hits a route of ours (never the no-route 404 or a 405), with its query accepted', async () => {
    for (const r of http) {
      const m = r.path.startsWith('/v1/acme/') ? made[1]! : made[0]!;
      const qs = new URLSearchParams(r.query ?? {}).toString();
      const headers: Record<string, string> = { authorization: 'Bearer test-key' };
      let payload: string | Buffer | undefined;
      if (r.body !== undefined && r.body !== null && !(typeof r.body === 'object' && 'tar' in (r.body as object))) {
        payload = JSON.stringify(r.body);
        headers['content-type'] = 'application/json';
      }
      const res = await m.app.inject({ method: r.method as 'GET', url: `${r.path}${qs ? `?${qs}` : ''}`, headers, payload });
      const body = res.body ? (JSON.parse(res.body) as { error?: { message: string; code: string } }) : {};
      const where = `${r.name}: ${r.method} ${r.path}?${qs} → ${res.statusCode} ${res.body.slice(0, 200)}`;
      expect(body.error?.message ?? '', where).not.toMatch(/no route|not allowed on/);
      expect(body.error?.message ?? '', where).not.toMatch(/^invalid argument: (query|pageSize|pageToken|force)/);
    }
  });
});
