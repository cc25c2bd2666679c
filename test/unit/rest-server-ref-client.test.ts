// The reference's published 0.10 client (@boxlite-ai/boxlite + its native binding; REST mode
// needs no VM) against our server on a FakeRuntime: the box lifecycle, metrics and the error
// table as its users see them. The client is installed by scripts/setup.sh (test/fixtures/ref-client.ts).
import fs from 'node:fs';
import path from 'node:path';
import type { AddressInfo } from 'node:net';
import { pathToFileURL } from 'node:url';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { buildRestApp } from '../../src/rest/server/app.js';
import { FakeRuntime } from './rest-fake-runtime.js';

import { HAVE_REF, REF_PKG as REF } from '../fixtures/ref-client.js';
const KEY = 'ref-client-key-123';

describe.skipIf(!HAVE_REF)('the reference 0.10 client against our server', () => {
  let sdk: any;
  let rt: FakeRuntime;
  let app: ReturnType<typeof buildRestApp>;
  let url: string;
  let R: any;
  const lines: string[] = [];

  beforeAll(async () => {
    sdk = await import(pathToFileURL(path.join(REF, 'dist/index.js')).href);
    rt = new FakeRuntime();
    app = buildRestApp(rt, { apiKey: KEY, log: (l) => lines.push(l) });
    await app.listen({ host: '127.0.0.1', port: 0 });
    url = `http://127.0.0.1:${(app.server.address() as AddressInfo).port}`;
    R = sdk.JsBoxlite.rest(new sdk.BoxliteRestOptions({ url, credential: new sdk.ApiKeyCredential(KEY) }));
  });
  afterAll(async () => {
    await app?.close();
    rt?.dispose();
  });

  it('create, get, getInfo, listInfo, start, stop, remove', async () => {
    const box = await R.create({ image: 'alpine:latest' }, 'ref-b1');
    expect(box.name).toBe('ref-b1');
    expect((await R.get('ref-b1')).id).toBe(box.id);
    expect(await R.get('no-such-box')).toBeNull();
    expect(await R.getInfo('no-such-box')).toBeNull();
    // Sent verbatim as GET /v1/boxes/ and GET /v1/boxes/a/b: both 404 → null, like the local get().
    expect(await R.get('')).toBeNull();
    expect(await R.get('a/b')).toBeNull();
    const info = await R.getInfo('ref-b1');
    expect(info).toMatchObject({ id: box.id, name: 'ref-b1', state: { status: 'configured', running: false }, cpus: 1, memoryMib: 512 });
    expect((await R.listInfo()).map((i: any) => i.id)).toContain(box.id);
    await box.start();
    expect((await box.info()).state).toMatchObject({ status: 'running', running: true });
    await box.stop();
    expect((await R.getInfo(box.id)).state.status).toBe('stopped');
    await R.remove(box.id, false);
    expect(await R.getInfo(box.id)).toBeNull();
    await expect(R.remove(box.id, true)).rejects.toThrow(/box not found/);
  });

  it('metrics: runtime and box', async () => {
    const box = await R.create({ image: 'alpine:latest' });
    await box.start();
    expect(await R.metrics()).toMatchObject({ boxesCreatedTotal: expect.any(Number), numRunningBoxes: expect.any(Number) });
    const m = await box.metrics();
    expect(m).toMatchObject({ commandsExecutedTotal: expect.any(Number), execErrorsTotal: expect.any(Number) });
    await R.remove(box.id, true);
  });

  it('errors: duplicate name 409, bad image 422, bad options 400, wrong key 401', async () => {
    await R.create({ image: 'alpine:latest' }, 'ref-dup');
    await expect(R.create({ image: 'alpine:latest' }, 'ref-dup')).rejects.toThrow(/already exists/);
    await expect(R.create({ image: 'no-such-image:1' })).rejects.toThrow(/^images error: /);
    await expect(R.create({ image: 'alpine:latest', cpus: 0 })).rejects.toThrow(/invalid argument: .*cpus/);
    await expect(R.create({ image: 'alpine:latest', memoryMib: 100 })).rejects.toThrow(/invalid argument: .*memory_mib/);
    const bad = sdk.JsBoxlite.rest(new sdk.BoxliteRestOptions({ url, credential: new sdk.ApiKeyCredential('wrong-key-xyz') }));
    await expect(bad.listInfo()).rejects.toThrow(/auth: invalid or missing API key/);
    expect(lines.join('\n')).not.toContain(KEY);
  });

  it('capability gates: snapshots, clone and export are refused from /v1/config', async () => {
    const box = await R.create({ image: 'alpine:latest' });
    await expect(box.snapshot.create('s')).rejects.toThrow(/does not support snapshots/);
    await expect(box.cloneBox({}, 'c')).rejects.toThrow(/does not support clone/);
    await R.remove(box.id, true);
  });
});
