// Managed volumes over REST: our client (JsBoxlite.rest().volumes) against our server's
// {scope}/volumes routes over a real socket, the server backed by the real Volumes store.
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import type { AddressInfo } from 'node:net';
import type { FastifyInstance } from 'fastify';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { BoxliteRestOptions, JsBoxlite } from '../../src/index.js';
import { buildRestApp } from '../../src/rest/server/app.js';
import { Volumes, type VolumeUser } from '../../src/runtime/volumes.js';
import { FakeRuntime } from './rest-fake-runtime.js';

let home: string;
let vols: Volumes;
let app: FastifyInstance;
let bare: FastifyInstance;
let client: JsBoxlite;
let bareClient: JsBoxlite;
const users = new Map<string, VolumeUser[]>();

async function listen(a: FastifyInstance): Promise<string> {
  await a.listen({ host: '127.0.0.1', port: 0 });
  return `http://127.0.0.1:${(a.server.address() as AddressInfo).port}`;
}

beforeAll(async () => {
  home = fs.mkdtempSync(path.join(os.tmpdir(), 'boxlite-vol-rest-'));
  vols = new Volumes(home, path.join(home, 'db'), (id) => users.get(id) ?? []);
  const rt = Object.assign(new FakeRuntime(), { volumes: vols });
  app = buildRestApp(rt) as unknown as FastifyInstance;
  client = JsBoxlite.rest(new BoxliteRestOptions({ url: await listen(app) }));
  bare = buildRestApp(new FakeRuntime()) as unknown as FastifyInstance;
  bareClient = JsBoxlite.rest(new BoxliteRestOptions({ url: await listen(bare) }));
});

afterAll(async () => {
  await app?.close();
  await bare?.close();
  vols?.close();
  if (home) fs.rmSync(home, { recursive: true, force: true });
});

describe('runtime.volumes over REST', () => {
  it('create, list, get, remove with the reference shapes and coded errors', async () => {
    const v = await client.volumes.create('web-data');
    expect(v).toMatchObject({ name: 'web-data', sizeBytes: 0 });
    expect(v.id).toMatch(/^[0-9a-z]{26}$/);
    const unnamed = await client.volumes.create();
    expect(unnamed.name).toBe(unnamed.id);
    expect((await client.volumes.list()).map((x) => x.name)).toEqual(['web-data', unnamed.id]);
    expect(await client.volumes.get('web-data')).toEqual(await vols.get(v.id));
    await expect(client.volumes.create('web-data')).rejects.toMatchObject({ code: 'AlreadyExists' });
    await expect(client.volumes.create('bad/name')).rejects.toMatchObject({ code: 'InvalidArgument' });
    await expect(client.volumes.get('nope')).rejects.toMatchObject({ code: 'NotFound' });
    users.set(v.id, [{ boxId: 'B', running: false }]);
    await expect(client.volumes.remove(v.id)).rejects.toMatchObject({ code: 'InvalidState' });
    await client.volumes.remove(v.id, true);
    await client.volumes.remove(unnamed.id);
    await client.volumes.remove('gone-already', true);
    expect(await client.volumes.list()).toEqual([]);
  });

  it('a server whose runtime has no volumes answers 400 unsupported', async () => {
    await expect(bareClient.volumes.list()).rejects.toMatchObject({ code: 'Unsupported' });
  });
});
