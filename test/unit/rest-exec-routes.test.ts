// Execution routes in-process (app.inject) on the FakeRuntime: exec, status, kill, signal, resize.
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import type { FastifyInstance } from 'fastify';
import { buildRestApp } from '../../src/rest/server/app.js';
import * as S from '../../src/rest/schemas.js';
import { PortalError } from '../../src/errors/index.js';
import { FakeRuntime, type FakeBox } from './rest-fake-runtime.js';
import { checkResponses } from './rest-server-helpers.js';

let rt: FakeRuntime;
let app: FastifyInstance;
let box: FakeBox;

beforeEach(async () => {
  rt = new FakeRuntime();
  app = checkResponses(buildRestApp(rt));
  await app.ready();
  box = await rt.create({ image: 'alpine:latest' }, 'b1');
});
afterEach(async () => {
  await app.close();
  rt.dispose();
});

const exec = (body: unknown, id = box.id) => app.inject({ method: 'POST', url: `/v1/boxes/${id}/exec`, payload: body as object });
const status = async (eid: string, id = box.id) => app.inject({ method: 'GET', url: `/v1/boxes/${id}/executions/${eid}` });
async function until(eid: string, pred: (b: Record<string, unknown>) => boolean): Promise<Record<string, unknown>> {
  for (let i = 0; i < 200; i++) {
    const r = await status(eid);
    const b = r.json() as Record<string, unknown>;
    if (pred(b)) return b;
    await new Promise((res) => setTimeout(res, 5));
  }
  throw new Error(`execution ${eid} never matched`);
}
const envelopeOf = (r: { json(): unknown }) => S.ErrorResponse.parse(r.json()).error;

describe('POST …/exec', () => {
  it('starts the command with every field of the 0.10 body plus user, answers 201 + Location', async () => {
    const r = await exec({ command: 'echo', args: ['hello', 'world'], env: { K: 'V' }, timeout_seconds: 7.5, working_dir: '/tmp', tty: false, user: '1000:1000', future_field: 1 });
    expect(r.statusCode).toBe(201);
    const { execution_id } = S.ExecResponse.parse(r.json());
    expect(r.headers.location).toBe(`/v1/boxes/${box.id}/executions/${execution_id}`);
    expect(rt.execs[0]).toMatchObject({ command: 'echo', args: ['hello', 'world'], env: [['K', 'V']], tty: false, user: '1000:1000', timeoutSecs: 7.5, workingDir: '/tmp' });
    const info = S.ExecutionInfo.parse(await until(execution_id, (b) => b.status !== 'running'));
    expect(info).toMatchObject({ execution_id, status: 'completed', exit_code: 0 });
    expect(typeof info.duration_ms).toBe('number');
    expect(Date.parse(info.started_at!)).toBeGreaterThan(0);
  });

  it('bounds running executions per box and per server (429), and frees the slot when one ends', async () => {
    await app.close();
    app = checkResponses(buildRestApp(rt, { execTuning: { maxRunningPerBox: 2, maxRunning: 3 } }));
    await app.ready();
    const other = await rt.create({ image: 'alpine:latest' }, 'b2');
    const first = S.ExecResponse.parse((await exec({ command: 'sleep' })).json()).execution_id;
    expect((await exec({ command: 'sleep' })).statusCode).toBe(201);
    const full = await exec({ command: 'echo' });
    expect(full.statusCode).toBe(429);
    expect(envelopeOf(full)).toMatchObject({ code: 'resource_exhausted', message: expect.stringMatching(/^resource exhausted: box .* 2 executions/) });
    expect((await exec({ command: 'sleep' }, other.id)).statusCode).toBe(201);
    const server = await exec({ command: 'echo' }, other.id);
    expect(envelopeOf(server).message).toMatch(/the server already runs 3 executions/);
    expect((await app.inject({ method: 'DELETE', url: `/v1/boxes/${box.id}/executions/${first}` })).statusCode).toBe(204);
    await until(first, (b) => b.status !== 'running');
    expect((await exec({ command: 'echo' })).statusCode).toBe(201);
  });

  it('timeout_seconds 0 (what 0.10 sends for timeout 0) means no timeout; negative stays 400', async () => {
    const r = await exec({ command: 'echo', timeout_seconds: 0 });
    expect(r.statusCode).toBe(201);
    expect(rt.execs[0]).toMatchObject({ command: 'echo', timeoutSecs: null });
    const bad = await exec({ command: 'echo', timeout_seconds: -0.5 });
    expect(bad.statusCode).toBe(400);
    expect(envelopeOf(bad).message).toMatch(/timeout_seconds/);
  });

  it('reports the final status as soon as the process exits, even with unread output held for a later attach', async () => {
    await app.close();
    app = checkResponses(buildRestApp(rt, { execTuning: { bufferBytes: 64 * 1024 } } as never));
    await app.ready();
    const { execution_id } = (await exec({ command: 'big', args: [String(2 * 1024 * 1024)] })).json();
    expect(await until(execution_id, (b) => b.status !== 'running')).toMatchObject({ status: 'completed', exit_code: 0 });
  });

  it('lives under the configured path prefix (Location included)', async () => {
    await app.close();
    app = checkResponses(buildRestApp(rt, { pathPrefix: 'acme/team-1' }));
    await app.ready();
    const r = await app.inject({ method: 'POST', url: `/v1/acme/team-1/boxes/${box.id}/exec`, payload: { command: 'echo' } });
    expect(r.statusCode).toBe(201);
    expect(r.headers.location).toBe(`/v1/acme/team-1/boxes/${box.id}/executions/${r.json().execution_id}`);
    expect((await app.inject({ method: 'GET', url: String(r.headers.location) })).statusCode).toBe(200);
    expect((await app.inject({ method: 'POST', url: `/v1/boxes/${box.id}/exec`, payload: { command: 'echo' } })).statusCode).toBe(404);
  });

  it('reports running with null exit_code and duration while the command runs', async () => {
    const { execution_id } = (await exec({ command: 'sleep', args: ['100'] })).json();
    const info = S.ExecutionInfo.parse((await status(execution_id)).json());
    expect(info).toMatchObject({ status: 'running', exit_code: null, duration_ms: null, error_message: null });
  });

  it('answers 400 naming the field for a bad body, 404 for an unknown box, 422 for a missing command', async () => {
    let r = await exec({ args: ['x'] });
    expect(r.statusCode).toBe(400);
    expect(envelopeOf(r)).toMatchObject({ code: 'invalid_argument', type: 'InvalidArgumentError' });
    expect(envelopeOf(r).message).toMatch(/command/);
    r = await exec({ command: 'echo', timeout_seconds: -1 });
    expect(r.statusCode).toBe(400);
    expect(envelopeOf(r).message).toMatch(/timeout_seconds/);
    r = await exec({ command: 'echo', args: 'notalist' });
    expect(r.statusCode).toBe(400);
    r = await app.inject({ method: 'POST', url: `/v1/boxes/${box.id}/exec`, headers: { 'content-type': 'application/json' }, payload: '{"command":' });
    expect(r.statusCode).toBe(400);
    expect(envelopeOf(r).code).toBe('invalid_argument');
    r = await exec({ command: 'echo' }, 'nope');
    expect(r.statusCode).toBe(404);
    expect(envelopeOf(r)).toMatchObject({ code: 'not_found', message: 'box not found: nope' });
    r = await exec({ command: 'no-such-command' });
    expect(r.statusCode).toBe(422);
    expect(envelopeOf(r).code).toBe('execution_failed');
  });

  it('writes the inline stdin extension and closes stdin', async () => {
    (await exec({ command: 'sleep', stdin: 'abc' })).json();
    await rt.processes[0]!.stdinEnd();
    expect(rt.processes[0]!.stdinText()).toBe('abc');
    expect(rt.processes[0]!.stdinClosed).toBe(true);
  });

  it('a box lost under the command: exit_code -1 and the reason in error_message', async () => {
    const { execution_id } = (await exec({ command: 'sleep' })).json();
    rt.processes[0]!.execution.lost(new PortalError('the guest agent connection closed'));
    const info = S.ExecutionInfo.parse(await until(execution_id, (b) => b.status !== 'running'));
    expect(info).toMatchObject({ status: 'completed', exit_code: -1 });
    expect(info.error_message).toMatch(/guest agent connection closed/);
  });

  it('reports timed_out when the timeout fires', async () => {
    const { execution_id } = (await exec({ command: 'sleep', timeout_seconds: 0.05 })).json();
    const info = await until(execution_id, (b) => b.status !== 'running');
    expect(info).toMatchObject({ status: 'timed_out', exit_code: -9 });
    expect(info.error_message).toMatch(/timed out/);
  });
});

describe('execution control', () => {
  it('DELETE kills (204), then status is killed; a repeat is 204; unknown and foreign ids are 404', async () => {
    const { execution_id } = (await exec({ command: 'sleep' })).json();
    const url = `/v1/boxes/${box.id}/executions/${execution_id}`;
    expect((await app.inject({ method: 'DELETE', url })).statusCode).toBe(204);
    expect(rt.processes[0]!.signals).toEqual([9]);
    expect(await until(execution_id, (b) => b.status !== 'running')).toMatchObject({ status: 'killed', exit_code: -9 });
    expect((await app.inject({ method: 'DELETE', url })).statusCode).toBe(204);
    expect((await status('nope')).statusCode).toBe(404);
    expect(envelopeOf(await status('nope')).message).toBe('execution not found: nope');
    const other = await rt.create({ image: 'alpine:latest' }, 'b2');
    expect((await status(execution_id, other.id)).statusCode).toBe(404);
  });

  it('signal: the whitelist is delivered (204), anything else is 400; a finished execution is 409', async () => {
    const { execution_id } = (await exec({ command: 'sleep' })).json();
    const sig = (signal: unknown) => app.inject({ method: 'POST', url: `/v1/boxes/${box.id}/executions/${execution_id}/signal`, payload: { signal } as object });
    for (const bad of [9, 0, 65, 'TERM', 1.5]) {
      const r = await sig(bad);
      expect(r.statusCode, String(bad)).toBe(400);
      expect(envelopeOf(r).code).toBe('invalid_argument');
    }
    expect((await sig(10)).statusCode).toBe(204);
    expect((await sig(28)).statusCode).toBe(204);
    expect(rt.processes[0]!.signals).toEqual([10, 28]);
    expect((await sig(15)).statusCode).toBe(204);
    expect(await until(execution_id, (b) => b.status !== 'running')).toMatchObject({ status: 'completed', exit_code: -15 });
    const r = await sig(15);
    expect(r.statusCode).toBe(409);
    expect(envelopeOf(r).code).toBe('invalid_state');
  });

  it('a signal or kill the guest does not acknowledge in time is 504 timeout', async () => {
    await app.close();
    app = checkResponses(buildRestApp(rt, { execTuning: { signalTimeoutMs: 50 } } as never));
    await app.ready();
    const { execution_id } = (await exec({ command: 'sleep' })).json();
    const ex = rt.processes[0]!.execution;
    ex.signal = () => new Promise<void>(() => {}); // the guest never answers
    let r = await app.inject({ method: 'POST', url: `/v1/boxes/${box.id}/executions/${execution_id}/signal`, payload: { signal: 15 } });
    expect(r.statusCode).toBe(504);
    expect(envelopeOf(r)).toMatchObject({ code: 'timeout', type: 'TimeoutError' });
    r = await app.inject({ method: 'DELETE', url: `/v1/boxes/${box.id}/executions/${execution_id}` });
    expect(r.statusCode).toBe(504);
  });

  it('resize: a tty execution takes it before any attach (204); a non-tty one is 409; bad sizes 400', async () => {
    const tty = (await exec({ command: 'sleep', tty: true })).json().execution_id;
    const plain = (await exec({ command: 'sleep' })).json().execution_id;
    const resize = (eid: string, body: unknown) => app.inject({ method: 'POST', url: `/v1/boxes/${box.id}/executions/${eid}/resize`, payload: body as object });
    expect((await resize(tty, { cols: 120, rows: 40 })).statusCode).toBe(204);
    expect(rt.processes[0]!.resizes).toEqual([{ rows: 40, cols: 120 }]);
    const r = await resize(plain, { cols: 120, rows: 40 });
    expect(r.statusCode).toBe(409);
    expect(envelopeOf(r).code).toBe('invalid_state');
    expect((await resize(tty, { cols: 0, rows: 40 })).statusCode).toBe(400);
    expect((await resize(tty, { cols: 10 })).statusCode).toBe(400);
  });
});
