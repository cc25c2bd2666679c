// Shared by the rest-server-*.test.ts files: an in-process app on a FakeRuntime and an inject()
// wrapper that validates every response against the schemas (errors against ErrorResponse, with
// error.request_id equal to the echoed X-Request-Id, and never a stack trace).
import { afterEach, expect } from 'vitest';
import type { FastifyInstance } from 'fastify';
import { z } from 'zod';
import { buildRestApp, type RestAppOptions, type RouteModule } from '../../src/rest/server/app.js';
import * as S from '../../src/rest/schemas.js';
import { FakeRuntime, type FakeRuntimeOptions } from './rest-fake-runtime.js';

export const KEY = 'test-key-0123456789';

export function makeApp(opts: RestAppOptions = {}, rtOpts: FakeRuntimeOptions = {}, extra: RouteModule[] = []) {
  const rt = new FakeRuntime(rtOpts);
  const lines: string[] = [];
  const app = checkResponses(buildRestApp(rt, { apiKey: KEY, log: (l) => lines.push(l), ...opts }, extra));
  return { rt, app, lines };
}

/** The schema of each route's JSON success body (the OpenAPI components), by method and route pattern. */
const RESPONSE_SCHEMAS: Array<[string, RegExp, z.ZodTypeAny]> = [
  ['GET', /^\/v1\/config$/, S.ServerConfig],
  ['GET', /^\/v1\/me$/, S.Principal],
  ['GET', /\/boxes\/:box_id\/metrics$/, S.BoxMetrics],
  ['GET', /\/metrics$/, S.RuntimeMetrics],
  ['POST', /\/boxes$/, S.Box],
  ['GET', /\/boxes$/, S.ListBoxesResponse],
  ['GET', /\/boxes\/:box_id$/, S.Box],
  ['POST', /\/boxes\/:box_id\/(start|stop)$/, S.Box],
  ['POST', /\/boxes\/:box_id\/exec$/, S.ExecResponse],
  ['GET', /\/executions\/:eid$/, S.ExecutionInfo],
  ['POST', /\/images\/pull$/, S.ImageInfo],
  ['GET', /\/images$/, S.ListImagesResponse],
  ['GET', /\/images\/:image_id$/, S.ImageInfo],
  ['POST', /\/network\/tunnel$/, S.TunnelDescriptor],
  ['POST', /\/boxes\/:box_id\/snapshots$/, S.Snapshot],
  ['GET', /\/boxes\/:box_id\/snapshots$/, z.object({ snapshots: z.array(S.Snapshot) }).strict()],
  ['GET', /\/boxes\/:box_id\/snapshots\/:name$/, S.Snapshot],
  ['POST', /\/boxes\/(:box_id\/clone|import)$/, S.Box],
];

/** Responses of the current test file that did not match their route's schema. */
const violations: string[] = [];
afterEach(() => {
  expect(violations.splice(0), 'responses that do not match the OpenAPI schemas').toEqual([]);
});

/**
 * Checks every JSON response of `app` against its route's schema (errors against ErrorResponse);
 * a JSON success body of a route missing from RESPONSE_SCHEMAS is a violation too, so a new route
 * cannot go unchecked. Call before the app is ready.
 */
export function checkResponses<T extends FastifyInstance>(app: T): T {
  app.addHook('onSend', async (req, reply, payload) => {
    if (typeof payload !== 'string' || !/^application\/json/.test(String(reply.getHeader('content-type') ?? ''))) return payload;
    const route = req.routeOptions.url ?? '(no route)';
    const status = reply.statusCode;
    const schema = status >= 400 ? S.ErrorResponse : RESPONSE_SCHEMAS.find(([m, re]) => m === req.method && re.test(route))?.[2];
    if (!schema) violations.push(`${req.method} ${route} ${status}: no schema for this JSON response`);
    else {
      const r = schema.safeParse(JSON.parse(payload));
      if (!r.success) violations.push(`${req.method} ${route} ${status}: ${r.error.message.slice(0, 300)}`);
    }
    return payload;
  });
  return app;
}

export interface CallOptions {
  body?: unknown;
  raw?: string | Buffer;
  headers?: Record<string, string>;
  auth?: boolean;
}

export async function call(
  app: ReturnType<typeof makeApp>['app'],
  method: 'GET' | 'POST' | 'PUT' | 'DELETE' | 'HEAD' | 'PATCH',
  url: string,
  o: CallOptions = {},
) {
  const headers: Record<string, string> = { ...(o.auth === false ? {} : { authorization: `Bearer ${KEY}` }), ...o.headers };
  let payload: string | Buffer | undefined;
  if (o.raw !== undefined) payload = o.raw;
  else if (o.body !== undefined) {
    payload = JSON.stringify(o.body);
    headers['content-type'] ??= 'application/json';
  }
  const res = await app.inject({ method, url, headers, payload });
  const rid = res.headers['x-request-id'];
  expect(typeof rid).toBe('string');
  if (method === 'HEAD') {
    expect(res.body).toBe('');
  } else if (res.statusCode >= 400) {
    expect(res.headers['content-type']).toMatch(/^application\/json/);
    const body = S.ErrorResponse.parse(res.json());
    expect(body.error.request_id).toBe(rid);
    expect(res.body).not.toMatch(/\bat .+\.(ts|js):\d+/);
    expect(body.error.stack).toBeUndefined();
  }
  return { res, status: res.statusCode, json: () => res.json() as any, rid: rid as string };
}

/** Asserts a success body against `schema` and returns it parsed. */
export function valid<T extends z.ZodTypeAny>(schema: T, value: unknown): z.infer<T> {
  const r = schema.safeParse(value);
  if (!r.success) throw new Error(`response does not match the schema: ${r.error.message}\n${JSON.stringify(value)}`);
  return r.data;
}

export function expectError(r: Awaited<ReturnType<typeof call>>, status: number, code: string, message?: RegExp) {
  expect(r.status, JSON.stringify(r.res.body)).toBe(status);
  const e = r.json().error;
  expect(e.code).toBe(code);
  if (message) expect(e.message).toMatch(message);
  return e as { message: string; type: string; code: string; request_id: string };
}

/** The 0.10 client's minimal create body (rest-contract §3.3). */
export const MINIMAL_CREATE = { image: 'alpine:latest', network: { outbound: { mode: 'enabled' }, inbound: { mode: 'enabled' } }, detach: false };
