// OUR REST client re-attaching to OUR server (FakeRuntime, no VM) after the server drops the socket:
// the frames the server replays that the client already had are skipped (exactly once), and an
// execution that finished while the client was away still delivers the output written meanwhile.
// The same scenarios run on a real VM in test/integration/rest-our-client.test.ts.
import type { AddressInfo } from 'node:net';
import type { FastifyInstance } from 'fastify';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { ApiKeyCredential, BoxliteRestOptions, JsBoxlite } from '../../src/index.js';
import { restTimings } from '../../src/rest/client/execution.js';
import { buildRestApp } from '../../src/rest/server/app.js';
import { defaultScript, FakeRuntime, type FakeProcess } from './rest-fake-runtime.js';

const KEY = 'replay-key-123';
const saved = { ...restTimings };
let rt: FakeRuntime;
let app: FastifyInstance;
let client: JsBoxlite;
const procs = new Map<string, FakeProcess>();

const dropSockets = () => {
  for (const c of (app as unknown as { websocketServer: { clients: Set<{ terminate(): void }> } }).websocketServer.clients) c.terminate();
};
const until = async (f: () => boolean) => {
  for (let i = 0; i < 200 && !f(); i++) await new Promise((r) => setTimeout(r, 10));
};

beforeAll(async () => {
  rt = new FakeRuntime({
    // `hold TAG`: registers its process and waits; the test writes and exits it.
    script: (p) => {
      if (p.call.command !== 'hold') return defaultScript(p);
      procs.set(p.call.args[0]!, p);
    },
  });
  app = buildRestApp(rt, { apiKey: KEY }) as unknown as FastifyInstance;
  await app.listen({ host: '127.0.0.1', port: 0 });
  const url = `http://127.0.0.1:${(app.server.address() as AddressInfo).port}`;
  client = JsBoxlite.rest(new BoxliteRestOptions({ url, credential: new ApiKeyCredential(KEY) }));
  Object.assign(restTimings, { reconnectFirstMs: 50, reconnectMaxMs: 50 });
});
afterEach(() => Object.assign(restTimings, { reconnectFirstMs: 50, reconnectMaxMs: 50 }));
afterAll(async () => {
  Object.assign(restTimings, saved);
  await app?.close();
  rt?.dispose();
});

describe('our client re-attaching to our server', () => {
  it('a drop replays the unacknowledged frames; the client skips those it had: every byte once', async () => {
    const box = await client.create({ image: 'alpine:latest' }, 'replay-1');
    const ex = await box.exec('hold', ['a']);
    await until(() => procs.has('a'));
    const p = procs.get('a')!;
    const out = await ex.stdout();
    let text = '';
    for (let i = 1; i <= 3; i++) await p.write(1, `l${i}\n`);
    while (!text.includes('l3\n')) text += (await out.next()) ?? '';
    dropSockets(); // at once: the Pong for l1..l3 may not have reached the server
    for (let i = 4; i <= 6; i++) await p.write(1, `l${i}\n`);
    p.exit(0);
    for (let c = await out.next(); c !== null; c = await out.next()) text += c;
    expect(text).toBe('l1\nl2\nl3\nl4\nl5\nl6\n');
    expect(await ex.wait()).toEqual({ exitCode: 0 });
  });

  it('finished while the client was away: it attaches once more and gets the rest, then the exit code', async () => {
    restTimings.reconnectFirstMs = 300;
    const box = await client.create({ image: 'alpine:latest' }, 'replay-2');
    const ex = await box.exec('hold', ['b']);
    await until(() => procs.has('b'));
    const p = procs.get('b')!;
    const out = await ex.stdout();
    await p.write(1, 'first\n');
    let text = '';
    while (!text.includes('first\n')) text += (await out.next()) ?? '';
    // Refuse upgrades until the process has finished, so the status probe sees it finished.
    const listeners = app.server.listeners('upgrade') as Array<(...a: unknown[]) => void>;
    app.server.removeAllListeners('upgrade');
    app.server.on('upgrade', (_req, socket: { destroy(): void }) => socket.destroy());
    try {
      dropSockets();
      await p.write(1, 'second\n');
      p.exit(4);
      await new Promise((r) => setTimeout(r, 500)); // the probe (finished) happened; re-attaches were refused
    } finally {
      app.server.removeAllListeners('upgrade');
      for (const l of listeners) app.server.on('upgrade', l);
    }
    for (let c = await out.next(); c !== null; c = await out.next()) text += c;
    expect(text).toBe('first\nsecond\n');
    expect((await ex.wait()).exitCode).toBe(4);
  });
});
