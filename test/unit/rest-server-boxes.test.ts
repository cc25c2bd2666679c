// Box, image and metrics routes on a FakeRuntime (whose create() runs the SDK's own option
// validation): exactly the 0.10 client's bodies, the legacy shapes, the status table.
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import * as S from '../../src/rest/schemas.js';
import { call, expectError, makeApp, MINIMAL_CREATE, valid } from './rest-server-helpers.js';

const made: Array<ReturnType<typeof makeApp>> = [];
afterEach(async () => {
  for (const m of made.splice(0)) {
    await m.app.close();
    m.rt.dispose();
  }
});
function app(...args: Parameters<typeof makeApp>) {
  const m = makeApp(...args);
  made.push(m);
  return m;
}

const FULL_CREATE = {
  name: 'named-box',
  image: 'alpine:latest',
  cpus: 1,
  memory_mib: 512,
  disk_size_gb: 4,
  working_dir: '/w',
  env: { A: '1' },
  network: { outbound: { mode: 'enabled', allow_net: ['example.com'] }, inbound: { mode: 'enabled' } },
  entrypoint: ['sh'],
  cmd: ['-c', 'true'],
  user: '1000:1000',
  secrets: [{ name: 'tok', value: 'super-secret-value', hosts: ['api.example.com'], placeholder: '<BOXLITE_SECRET:tok>' }],
  detach: true,
  advanced: { capabilities: { add: ['SYS_ADMIN'], drop: ['NET_RAW'] } },
  auto_stop: 0,
  auto_delete: 0,
  auto_resume: false,
};

async function create(a: ReturnType<typeof makeApp>['app'], body: unknown = MINIMAL_CREATE) {
  const r = await call(a, 'POST', '/v1/boxes', { body });
  expect(r.status, r.res.body).toBe(201);
  return valid(S.Box, r.json());
}

describe('POST /v1/boxes', () => {
  it("accepts the 0.10 client's minimal body: 201, Location, a Box; inbound dropped, outbound kept", async () => {
    const { app: a, rt } = app();
    const r = await call(a, 'POST', '/v1/boxes', { body: MINIMAL_CREATE });
    expect(r.status).toBe(201);
    const box = valid(S.Box, r.json());
    expect(r.res.headers.location).toBe(`/v1/boxes/${box.box_id}`);
    expect(box).toMatchObject({ status: 'configured', image: 'docker.io/library/alpine:latest', cpus: 1, memory_mib: 512, name: null, labels: {}, auto_stop: 0, auto_pause: 0 });
    expect(rt.creates[0]!.options).toEqual({ image: 'alpine:latest', network: { outbound: { mode: 'enabled' } }, detach: false });
  });

  it('accepts the full 0.10 body and maps every field; the secret value never comes back', async () => {
    const { app: a, rt, lines } = app();
    const r = await call(a, 'POST', '/v1/boxes', { body: FULL_CREATE });
    expect(r.status, r.res.body).toBe(201);
    const box = valid(S.Box, r.json());
    expect(box.name).toBe('named-box');
    expect(rt.creates[0]).toEqual({
      name: 'named-box',
      options: {
        image: 'alpine:latest',
        cpus: 1,
        memoryMib: 512,
        diskSizeGb: 4,
        workingDir: '/w',
        env: [{ key: 'A', value: '1' }],
        entrypoint: ['sh'],
        cmd: ['-c', 'true'],
        user: '1000:1000',
        network: { outbound: { mode: 'enabled', allowNet: ['example.com'] } },
        secrets: [{ name: 'tok', value: 'super-secret-value', hosts: ['api.example.com'], placeholder: '<BOXLITE_SECRET:tok>' }],
        detach: true,
        advanced: { capabilities: { add: ['SYS_ADMIN'], drop: ['NET_RAW'] } },
        autoStop: 0,
        autoDelete: 0,
        autoResume: false,
      },
    });
    const all = [r.res.body, (await call(a, 'GET', '/v1/boxes')).res.body, (await call(a, 'GET', `/v1/boxes/${box.box_id}`)).res.body, lines.join('\n')];
    for (const text of all) expect(text).not.toContain('super-secret-value');
  });

  it('accepts the legacy shapes: flat network, auto_pause', async () => {
    const { app: a, rt } = app();
    await create(a, { image: 'alpine', network: { mode: 'disabled' }, auto_pause: 0 });
    expect(rt.creates[0]!.options).toEqual({ image: 'alpine', network: { mode: 'disabled' }, autoStop: 0 });
    await create(a, { network: { allow_net: ['example.com'] } });
    expect(rt.creates[1]!.options).toEqual({ image: 'alpine:latest', network: { mode: 'enabled', allowNet: ['example.com'] } });
  });

  it('refuses mixed network shapes, inbound allow_net, host_path volumes and rootfs_path (400)', async () => {
    const { app: a } = app();
    expectError(await call(a, 'POST', '/v1/boxes', { body: { network: { mode: 'enabled', outbound: { mode: 'enabled' } } } }), 400, 'invalid_argument', /network: mixes/);
    expectError(await call(a, 'POST', '/v1/boxes', { body: { network: { outbound: { mode: 'enabled' }, inbound: { mode: 'enabled', allow_net: ['1.2.3.4'] } } } }), 400, 'invalid_argument', /network\.inbound\.allow_net/);
    expectError(await call(a, 'POST', '/v1/boxes', { body: { volumes: [{ host_path: '/etc', guest_path: '/x' }] } }), 400, 'unsupported', /host_path/);
    expectError(await call(a, 'POST', '/v1/boxes', { body: { rootfs_path: '/srv/rootfs' } }), 400, 'unsupported', /rootfs_path/);
    expectError(await call(a, 'POST', '/v1/boxes', { body: { rootfs_path: '/x', image: 'alpine' } }), 400, 'invalid_argument', /rootfs_path: excludes image/);
    expectError(await call(a, 'POST', '/v1/boxes', { body: { name: '-bad name' } }), 400, 'invalid_argument', /^invalid argument: name/);
    expectError(await call(a, 'POST', '/v1/boxes', { body: { tty: true } }), 400, 'unsupported', /tty/);
    expectError(await call(a, 'POST', '/v1/boxes', { body: { security: 'maximum' } }), 400, 'invalid_argument', /unknown field\(s\) "security"/);
  });

  it('passes features the SDK lacks on to it: its Unsupported is a 400 unsupported', async () => {
    const { app: a } = app();
    expectError(await call(a, 'POST', '/v1/boxes', { body: { volumes: [{ managed_volume: 'vol1', guest_path: '/data', read_only: false }] } }), 400, 'unsupported', /managedVolume/);
    expectError(await call(a, 'POST', '/v1/boxes', { body: { cpus: 32 } }), 400, 'invalid_argument', /cpus/);
  });

  it('rootfs_path only under the allow-listed root', async () => {
    const root = fs.mkdtempSync(path.join(os.tmpdir(), 'rest-rootfs-'));
    fs.mkdirSync(path.join(root, 'busybox'));
    const outside = fs.mkdtempSync(path.join(os.tmpdir(), 'rest-outside-'));
    fs.symlinkSync(outside, path.join(root, 'escape'));
    try {
      const { app: a, rt } = app({ rootfsRoot: root });
      const made = await create(a, { rootfs_path: 'busybox' });
      expect(rt.creates[0]!.options.rootfsPath).toBe(fs.realpathSync(path.join(root, 'busybox')));
      // The server's own path never reaches the client: `image` is relative to the rootfs root.
      expect(made.image).toBe('rootfs:busybox');
      expect(valid(S.Box, (await call(a, 'GET', `/v1/boxes/${made.box_id}`)).json()).image).toBe('rootfs:busybox');
      const listed = (await call(a, 'GET', '/v1/boxes')).res.body;
      expect(listed).toContain('"image":"rootfs:busybox"');
      expect(listed).not.toContain(fs.realpathSync(root));
      // A layout outside the root (a box made on this home by the CLI) shows its basename only.
      await rt.create({ rootfsPath: outside });
      const all = (await call(a, 'GET', '/v1/boxes')).res.body;
      expect(all).toContain(`"image":"rootfs:${path.basename(outside)}"`);
      expect(all).not.toContain(fs.realpathSync(outside));
      expectError(await call(a, 'POST', '/v1/boxes', { body: { rootfs_path: '../' } }), 400, 'invalid_argument', /under the server's rootfs root/);
      expectError(await call(a, 'POST', '/v1/boxes', { body: { rootfs_path: 'escape' } }), 400, 'invalid_argument', /under the server's rootfs root/);
      expectError(await call(a, 'POST', '/v1/boxes', { body: { rootfs_path: 'missing' } }), 400, 'invalid_argument', /no such OCI layout/);
    } finally {
      fs.rmSync(root, { recursive: true, force: true });
      fs.rmSync(outside, { recursive: true, force: true });
    }
  });

  it('resolves the image first: a bad one is 422 image_pull_failed', async () => {
    const { app: a, rt } = app();
    const e = expectError(await call(a, 'POST', '/v1/boxes', { body: { ...MINIMAL_CREATE, image: 'no-such-image:nope' } }), 422, 'image_pull_failed', /^images error: /);
    expect(e.type).toBe('ImageError');
    expect(rt.records.size).toBe(0);
  });

  it('a duplicate name is 409 already_exists', async () => {
    const { app: a } = app();
    await create(a, { ...MINIMAL_CREATE, name: 'dup' });
    const e = expectError(await call(a, 'POST', '/v1/boxes', { body: { ...MINIMAL_CREATE, name: 'dup' } }), 409, 'already_exists', /dup/);
    expect(e.type).toBe('AlreadyExistsError');
  });

  it('an absent body creates the default box', async () => {
    const { app: a, rt } = app();
    const r = await call(a, 'POST', '/v1/boxes');
    expect(r.status).toBe(201);
    expect(rt.creates[0]!.options).toEqual({ image: 'alpine:latest' });
  });
});

describe('box routes', () => {
  it('get by id or name, head 204/404 without a body, 404 envelope otherwise', async () => {
    const { app: a } = app();
    const box = await create(a, { ...MINIMAL_CREATE, name: 'web' });
    expect(valid(S.Box, (await call(a, 'GET', `/v1/boxes/${box.box_id}`)).json()).box_id).toBe(box.box_id);
    expect(valid(S.Box, (await call(a, 'GET', '/v1/boxes/web')).json()).box_id).toBe(box.box_id);
    expect((await call(a, 'HEAD', '/v1/boxes/web')).status).toBe(204);
    expect((await call(a, 'HEAD', '/v1/boxes/nope')).status).toBe(404);
    expectError(await call(a, 'GET', '/v1/boxes/nope'), 404, 'not_found', /^box not found: nope$/);
  });

  it('list returns every box unless pageSize is given; tokens page through; status filters', async () => {
    const { app: a } = app();
    const ids = [];
    for (let i = 0; i < 5; i++) ids.push((await create(a)).box_id);
    const all = valid(S.ListBoxesResponse, (await call(a, 'GET', '/v1/boxes')).json());
    expect(all.boxes.map((b) => b.box_id)).toEqual(ids);
    expect(all.next_page_token).toBeUndefined();
    const seen: string[] = [];
    let token: string | undefined;
    do {
      const page = valid(S.ListBoxesResponse, (await call(a, 'GET', `/v1/boxes?pageSize=2${token ? `&pageToken=${token}` : ''}`)).json());
      expect(page.boxes.length).toBeLessThanOrEqual(2);
      seen.push(...page.boxes.map((b) => b.box_id));
      token = page.next_page_token;
    } while (token);
    expect(seen).toEqual(ids);
    await call(a, 'POST', `/v1/boxes/${ids[1]}/start`);
    const running = valid(S.ListBoxesResponse, (await call(a, 'GET', '/v1/boxes?status=running')).json());
    expect(running.boxes.map((b) => b.box_id)).toEqual([ids[1]]);
    expectError(await call(a, 'GET', '/v1/boxes?pageToken=garbage'), 400, 'invalid_argument', /pageToken/);
    expectError(await call(a, 'GET', '/v1/boxes?pageSize=0'), 400, 'invalid_argument', /pageSize/);
    expectError(await call(a, 'GET', '/v1/boxes?status=sleeping'), 400, 'invalid_argument', /status/);
    expectError(await call(a, 'GET', '/v1/boxes?nope=1'), 400, 'invalid_argument', /unknown field/);
  });

  it('start and stop answer 200 with a Box (no body, or {timeout_seconds}); a stopped box starts again', async () => {
    const { app: a } = app();
    const box = await create(a);
    const started = await call(a, 'POST', `/v1/boxes/${box.box_id}/start`);
    expect(valid(S.Box, started.json()).status).toBe('running');
    const stopped = await call(a, 'POST', `/v1/boxes/${box.box_id}/stop`);
    expect(valid(S.Box, stopped.json()).status).toBe('stopped');
    expect(valid(S.Box, (await call(a, 'POST', `/v1/boxes/${box.box_id}/start`)).json()).status).toBe('running');
    expect(valid(S.Box, (await call(a, 'POST', `/v1/boxes/${box.box_id}/stop`, { body: { timeout_seconds: 5 } })).json()).status).toBe('stopped');
    expectError(await call(a, 'POST', `/v1/boxes/${box.box_id}/stop`, { body: { timeout_seconds: -1 } }), 400, 'invalid_argument', /timeout_seconds/);
    expectError(await call(a, 'POST', '/v1/boxes/nope/start'), 404, 'not_found');
    expectError(await call(a, 'POST', '/v1/boxes/nope/stop'), 404, 'not_found');
  });

  it('delete: force=false refuses a running box (409), force=true removes it (204), a repeat is 404', async () => {
    const { app: a } = app();
    const box = await create(a);
    await call(a, 'POST', `/v1/boxes/${box.box_id}/start`);
    expectError(await call(a, 'DELETE', `/v1/boxes/${box.box_id}`), 409, 'invalid_state', /running/);
    expect((await call(a, 'DELETE', `/v1/boxes/${box.box_id}?force=true`)).status).toBe(204);
    expectError(await call(a, 'DELETE', `/v1/boxes/${box.box_id}`), 404, 'not_found');
    const idle = await create(a);
    expect((await call(a, 'DELETE', `/v1/boxes/${idle.box_id}`)).status).toBe(204);
    expectError(await call(a, 'DELETE', `/v1/boxes/x?force=maybe`), 400, 'invalid_argument', /force/);
  });

  it('box metrics never boot a box; a running box reports live figures', async () => {
    const { app: a, rt } = app();
    const box = await create(a);
    const idle = valid(S.BoxMetrics, (await call(a, 'GET', `/v1/boxes/${box.box_id}/metrics`)).json());
    expect(idle).toMatchObject({ commands_executed_total: 0, cpu_percent: null, boot_timing: null });
    expect(rt.boots).toBe(0);
    await call(a, 'POST', `/v1/boxes/${box.box_id}/start`);
    const live = valid(S.BoxMetrics, (await call(a, 'GET', `/v1/boxes/${box.box_id}/metrics`)).json());
    expect(live.cpu_percent).toBe(1.5);
    expect(live.memory_bytes).toBe(64 * 1024 * 1024);
    expect(live.boot_timing).toMatchObject({ image_prepare_ms: 3, filesystem_setup_ms: 2, guest_boot_ms: null });
    expectError(await call(a, 'GET', '/v1/boxes/nope/metrics'), 404, 'not_found');
  });

  it('runtime metrics use the reference field names', async () => {
    const { app: a } = app();
    const b = await create(a);
    await create(a);
    await call(a, 'POST', `/v1/boxes/${b.box_id}/start`);
    const m = valid(S.RuntimeMetrics, (await call(a, 'GET', '/v1/metrics')).json());
    expect(m).toMatchObject({ boxes_created_total: 2, num_running_boxes: 1, boxes_stopped_total: 0 });
    await call(a, 'POST', `/v1/boxes/${b.box_id}/stop`);
    expect(valid(S.RuntimeMetrics, (await call(a, 'GET', '/v1/metrics')).json())).toMatchObject({ num_running_boxes: 0, boxes_stopped_total: 1 });
  });

  it('a box that exited reports exit_code', async () => {
    const { app: a, rt } = app();
    const box = await create(a);
    rt.exitMain(box.box_id, 3);
    expect(valid(S.Box, (await call(a, 'GET', `/v1/boxes/${box.box_id}`)).json())).toMatchObject({ status: 'stopped', exit_code: 3 });
  });
});

describe('features of a later issue answer Unsupported', () => {
  it('snapshots, clone, export, import, volumes: 400 unsupported (404 for an unknown box)', async () => {
    const { app: a } = app();
    const box = await create(a);
    const id = box.box_id;
    const cases: Array<[Parameters<typeof call>[1], string, unknown?]> = [
      ['POST', `/v1/boxes/${id}/snapshots`, { name: 's1' }],
      ['GET', `/v1/boxes/${id}/snapshots`],
      ['GET', `/v1/boxes/${id}/snapshots/s1`],
      ['DELETE', `/v1/boxes/${id}/snapshots/s1`],
      ['POST', `/v1/boxes/${id}/snapshots/s1/restore`],
      ['POST', `/v1/boxes/${id}/clone`, {}],
      ['POST', `/v1/boxes/${id}/export`, {}],
      ['POST', '/v1/volumes', { name: 'v' }],
      ['GET', '/v1/volumes'],
      ['GET', '/v1/volumes/v'],
      ['DELETE', '/v1/volumes/v'],
    ];
    for (const [m, u, body] of cases) expectError(await call(a, m, u, { body }), 400, 'unsupported', /not implemented by this server yet/);
    expectError(await call(a, 'POST', '/v1/boxes/nope/snapshots', { body: { name: 's' } }), 404, 'not_found');
    const imp = await call(a, 'POST', '/v1/boxes/import?name=x', { raw: Buffer.alloc(3 * 1024 * 1024), headers: { 'content-type': 'application/octet-stream' } });
    expectError(imp, 400, 'unsupported', /import_enabled: false/);
  });
});

describe('images', () => {
  it('pull, list (paging on request), get and head by id', async () => {
    const { app: a } = app();
    const pulled = valid(S.ImageInfo, (await call(a, 'POST', '/v1/images/pull', { body: { reference: 'alpine:latest' } })).json());
    expect(pulled).toMatchObject({ reference: 'docker.io/library/alpine:latest', repository: 'docker.io/library/alpine', tag: 'latest' });
    await call(a, 'POST', '/v1/images/pull', { body: { reference: 'busybox' } });
    const list = valid(S.ListImagesResponse, (await call(a, 'GET', '/v1/images')).json());
    expect(list.images).toHaveLength(2);
    const page = valid(S.ListImagesResponse, (await call(a, 'GET', '/v1/images?pageSize=1')).json());
    expect(page.images).toHaveLength(1);
    expect(page.next_page_token).toBeTypeOf('string');
    expect(valid(S.ImageInfo, (await call(a, 'GET', `/v1/images/${pulled.id}`)).json()).id).toBe(pulled.id);
    expect((await call(a, 'HEAD', `/v1/images/${pulled.id}`)).status).toBe(204);
    expect((await call(a, 'HEAD', '/v1/images/sha256:00')).status).toBe(404);
    expectError(await call(a, 'GET', '/v1/images/sha256:00'), 404, 'not_found');
  });

  it('a bad reference is 422 image_pull_failed; a bad body 400', async () => {
    const { app: a } = app();
    expectError(await call(a, 'POST', '/v1/images/pull', { body: { reference: 'nope:1' } }), 422, 'image_pull_failed');
    expectError(await call(a, 'POST', '/v1/images/pull', { body: {} }), 400, 'invalid_argument', /reference/);
  });
});
