// The REST routes of snapshots, clone, export and import (src/rest/server/snapshots.ts) over a
// runtime whose boxes are real qcow2 disks in a scratch home (no VM): wire shapes (checked
// against the schemas), status codes, the archive as an octet-stream both ways.
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { buildRestApp } from '../../src/rest/server/app.js';
import * as S from '../../src/rest/schemas.js';
import { exportArchive, importArchive } from '../../src/runtime/archive.js';
import { boxInfo, type BoxRecordT } from '../../src/runtime/box.js';
import { BoxSnapshots, cloneRecord } from '../../src/runtime/snapshots.js';
import { call, checkResponses, expectError, KEY, valid } from './rest-server-helpers.js';
import { diskOf, hasPattern, makeBox, makeHome, writePattern, type Fixture } from './snapshot-fixture.js';

let f: Fixture;
beforeEach(() => {
  f = makeHome();
});
afterEach(() => f.close());

/** The SDK's box and runtime surface the routes use, over the fixture's home. */
function runtimeOver(fx: Fixture) {
  const ctx = fx.ctx;
  const info = async (rec: BoxRecordT) => boxInfo(rec, ctx.store.status(rec.id).state.status);
  const boxOf = (rec: BoxRecordT) => ({
    id: rec.id,
    name: rec.name ?? null,
    info: () => info(rec),
    snapshot: new BoxSnapshots(() => ctx, () => rec.id),
    cloneBox: async (_o: unknown, name?: string | null) => boxOf(await cloneRecord(ctx, rec, name)),
    export: (dest: string) => exportArchive(ctx, rec, dest),
  });
  const find = (id: string) => ctx.store.find<BoxRecordT['options'], BoxRecordT['image']>(id) as BoxRecordT | undefined;
  return {
    get: async (id: string) => (find(id) ? boxOf(find(id)!) : null),
    getInfo: async (id: string) => (find(id) ? info(find(id)!) : null),
    listInfo: async () => Promise.all((ctx.store.list() as BoxRecordT[]).map(info)),
    remove: async (id: string) => ctx.store.remove(find(id)!.id),
    metrics: async () => ({}),
    images: { pull: async () => ({}), list: async () => [] },
    create: async () => {
      throw new Error('not used');
    },
    importBox: async (p: string, n?: string | null) => boxOf(await importArchive(ctx, p, n)),
  };
}

const appOver = (fx: Fixture) => checkResponses(buildRestApp(runtimeOver(fx) as never, { apiKey: KEY }));

describe('REST snapshots, clone, export, import', () => {
  it('advertises them in /v1/config and serves the 0.10 client routes', async () => {
    const a = appOver(f);
    const cfg = valid(S.ServerConfig, (await call(a, 'GET', '/v1/config', { auth: false })).json());
    expect(cfg.capabilities).toMatchObject({ snapshots_enabled: true, clone_enabled: true, export_enabled: true, import_enabled: true });

    const box = await makeBox(f, {}, 'rb');
    writePattern(diskOf(f, box.id), 0xa1);
    const created = await call(a, 'POST', `/v1/boxes/${box.id}/snapshots`, { body: { name: 's1' } });
    expect(created.status).toBe(201);
    expect(valid(S.Snapshot, created.json())).toMatchObject({ box_id: box.id, name: 's1', container_disk_bytes: 4 * 1024 * 1024 });
    expectError(await call(a, 'POST', `/v1/boxes/${box.id}/snapshots`, { body: { name: 's1' } }), 409, 'already_exists');
    expectError(await call(a, 'POST', `/v1/boxes/${box.id}/snapshots`, { body: { name: '../x' } }), 400, 'invalid_argument');
    expectError(await call(a, 'POST', `/v1/boxes/${box.id}/snapshots`, { body: {} }), 400, 'invalid_argument');
    expectError(await call(a, 'POST', '/v1/boxes/nope/snapshots', { body: { name: 's' } }), 404, 'not_found');
    const list = (await call(a, 'GET', `/v1/boxes/${box.id}/snapshots`)).json();
    expect(list.snapshots.map((s: { name: string }) => s.name)).toEqual(['s1']);
    expect((await call(a, 'GET', `/v1/boxes/rb/snapshots/s1`)).json().name).toBe('s1');
    expectError(await call(a, 'GET', `/v1/boxes/${box.id}/snapshots/none`), 404, 'not_found');

    writePattern(diskOf(f, box.id), 0xb2);
    expect((await call(a, 'POST', `/v1/boxes/${box.id}/snapshots/s1/restore`)).status).toBe(204);
    expect(hasPattern(diskOf(f, box.id), 0xa1)).toBe(true);

    const cloned = await call(a, 'POST', `/v1/boxes/${box.id}/clone`, { body: { name: 'rc' } });
    expect(cloned.status).toBe(201);
    const clone = valid(S.Box, cloned.json());
    expect(clone.name).toBe('rc');
    expect(hasPattern(diskOf(f, clone.box_id), 0xa1)).toBe(true);

    const exported = await call(a, 'POST', `/v1/boxes/${box.id}/export`, { body: {} });
    expect(exported.status).toBe(200);
    expect(exported.res.headers['content-type']).toBe('application/octet-stream');
    const archive = exported.res.rawPayload;
    expect(archive.length).toBeGreaterThan(1024);

    const other = makeHome();
    try {
      const b = appOver(other);
      const imported = await call(b, 'POST', '/v1/boxes/import?name=back', { raw: archive, headers: { 'content-type': 'application/octet-stream' } });
      expect(imported.status, imported.res.body).toBe(201);
      const back = valid(S.Box, imported.json());
      expect(back.name).toBe('back');
      expect(hasPattern(diskOf(other, back.box_id), 0xa1)).toBe(true);
      const bad = await call(b, 'POST', '/v1/boxes/import', { raw: archive.subarray(0, 2000), headers: { 'content-type': 'application/octet-stream' } });
      expectError(bad, 400, 'invalid_argument', /not a valid \.boxlite archive/);
      expect(other.ctx.store.list()).toHaveLength(1);
    } finally {
      other.close();
    }

    expect((await call(a, 'DELETE', `/v1/boxes/${box.id}/snapshots/s1`)).status).toBe(204);
    expectError(await call(a, 'DELETE', `/v1/boxes/${box.id}/snapshots/s1`), 404, 'not_found');
  });
});
