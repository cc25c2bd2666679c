import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { isManagedVolumeSource } from '../../src/cli/volumes.js';
import { AlreadyExistsError, ConfigError, InvalidStateError, NotFoundError, UnsupportedError } from '../../src/errors/index.js';
import { normalizeBoxOptions } from '../../src/runtime/options.js';
import { managedVolumeIds, treeBytes, validateVolumeName, Volumes, type VolumeUser } from '../../src/runtime/volumes.js';
import { volumePaths } from '../../src/store/home.js';

let home: string;
let users: Map<string, VolumeUser[]>;
let vols: Volumes;

beforeEach(() => {
  home = fs.mkdtempSync(path.join(os.tmpdir(), 'boxlite-vols-'));
  users = new Map();
  vols = new Volumes(home, path.join(home, 'db'), (id) => users.get(id) ?? []);
});

afterEach(() => {
  vols.close();
  fs.rmSync(home, { recursive: true, force: true });
});

async function rejection(p: Promise<unknown>): Promise<Error> {
  const err = await p.then(
    () => undefined,
    (e: unknown) => e,
  );
  if (!(err instanceof Error)) throw new Error('expected a rejection');
  return err;
}

describe('runtime.volumes (VolumeHandle)', () => {
  it('creates named and unnamed volumes with the reference VolumeInfo fields, a directory each', async () => {
    const a = await vols.create('data');
    expect(Object.keys(a).sort()).toEqual(['createdAt', 'id', 'name', 'sizeBytes']);
    expect(a.name).toBe('data');
    expect(a.id).toMatch(/^[0-9a-z]{26}$/);
    expect(new Date(a.createdAt).toISOString()).toBe(a.createdAt);
    expect(fs.statSync(volumePaths(home, a.id).data).isDirectory()).toBe(true);
    expect(JSON.parse(fs.readFileSync(volumePaths(home, a.id).record, 'utf8'))).toEqual({ id: a.id, name: 'data', createdAt: a.createdAt });
    // The reference: without a name it is named after its id.
    const b = await vols.create();
    expect(b.name).toBe(b.id);
    expect((await vols.list()).map((v) => v.name)).toEqual(['data', b.id]);
  });

  it('gets by id or name and reports the bytes its files take', async () => {
    const a = await vols.create('sized');
    fs.writeFileSync(path.join(volumePaths(home, a.id).data, 'f'), Buffer.alloc(1000));
    fs.mkdirSync(path.join(volumePaths(home, a.id).data, 'sub'));
    fs.writeFileSync(path.join(volumePaths(home, a.id).data, 'sub', 'g'), 'abc');
    fs.symlinkSync('/etc/passwd', path.join(volumePaths(home, a.id).data, 'link'));
    const byName = await vols.get('sized');
    const byId = await vols.get(a.id);
    expect(byName).toEqual(byId);
    expect(byName.sizeBytes).toBe(1000 + 3 + '/etc/passwd'.length);
  });

  it('refuses a duplicate name (AlreadyExists), bad names (Config) and unknown volumes (NotFound)', async () => {
    await vols.create('twice');
    const dup = await rejection(vols.create('twice'));
    expect(dup).toBeInstanceOf(AlreadyExistsError);
    expect(dup.message).toMatch(/a volume named "twice" already exists/);
    for (const bad of ['a', '-x', 'a/b', 'a:b', 'sp ace', '', 'x'.repeat(129), '../up']) {
      expect(await rejection(vols.create(bad))).toBeInstanceOf(ConfigError);
    }
    expect(() => validateVolumeName('ok.name_1-2')).not.toThrow();
    const missing = await rejection(vols.get('nope'));
    expect(missing).toBeInstanceOf(NotFoundError);
    expect(missing.message).toBe('volume not found: nope');
    expect((missing as NotFoundError).code).toBe('NotFound');
    expect(await rejection(vols.remove('nope'))).toBeInstanceOf(NotFoundError);
    // force: a missing volume is not an error (the reference's meaning).
    await expect(vols.remove('nope', true)).resolves.toBeUndefined();
    // Nothing half-made was left by the refusals.
    expect((await vols.list()).map((v) => v.name)).toEqual(['twice']);
    expect(fs.readdirSync(path.join(home, 'volumes'))).toHaveLength(1);
  });

  it('refuses to remove a volume a box mounts unless forced, and never under a running box', async () => {
    const v = await vols.create('busy');
    users.set(v.id, [{ boxId: 'B1', boxName: 'web', running: false }]);
    const inUse = await rejection(vols.remove('busy'));
    expect(inUse).toBeInstanceOf(InvalidStateError);
    expect(inUse.message).toMatch(/^invalid state: volume busy is in use by box web \(B1\); remove the box first, or remove the volume with force$/);
    users.set(v.id, [{ boxId: 'B1', running: true }]);
    const running = await rejection(vols.remove('busy', true));
    expect(running).toBeInstanceOf(InvalidStateError);
    expect(running.message).toMatch(/in use by running box B1; stop it first/);
    expect(fs.existsSync(volumePaths(home, v.id).dir)).toBe(true);
    users.set(v.id, [{ boxId: 'B1', running: false }]);
    await vols.remove('busy', true);
    expect(fs.existsSync(volumePaths(home, v.id).dir)).toBe(false);
    expect(await vols.list()).toEqual([]);
  });

  it('is shared through the database by two runtimes on one home', async () => {
    const other = new Volumes(home, path.join(home, 'db'), () => []);
    try {
      await vols.create('shared');
      expect((await other.get('shared')).name).toBe('shared');
      expect(await rejection(other.create('shared'))).toBeInstanceOf(AlreadyExistsError);
    } finally {
      other.close();
    }
  });
});

describe('managed volumes in box options', () => {
  it('resolve to the volume data directory, recorded by id', async () => {
    const v = await vols.create('cache');
    const o = normalizeBoxOptions({ rootfsPath: '/', volumes: [{ managedVolume: 'cache', guestPath: '/cache/' }] }, 4, vols.resolve);
    expect(o.volumes).toEqual([{ hostPath: fs.realpathSync(volumePaths(home, v.id).data), guestPath: '/cache', readOnly: false, managedVolume: v.id }]);
    expect(managedVolumeIds(o.volumes)).toEqual([v.id]);
    const ro = normalizeBoxOptions({ rootfsPath: '/', volumes: [{ managedVolume: v.id, guestPath: '/c', readOnly: true }] }, 4, vols.resolve);
    expect(ro.volumes![0]).toMatchObject({ readOnly: true, managedVolume: v.id });
  });

  it('a missing volume is NotFound; a bad shape is a ConfigError naming the entry', async () => {
    await vols.create('one');
    const norm = (volumes: unknown[]) => () => normalizeBoxOptions({ rootfsPath: '/', volumes: volumes as never }, 4, vols.resolve);
    expect(norm([{ managedVolume: 'missing', guestPath: '/m' }])).toThrow(NotFoundError);
    expect(norm([{ managedVolume: 'missing', guestPath: '/m' }])).toThrow('volume not found: missing');
    expect(norm([{ managedVolume: 'one', guestPath: 'rel' }])).toThrow(/^configuration error: volumes\[0\]\.guestPath must be an absolute path/);
    expect(norm([{ managedVolume: 'one', hostPath: '/tmp', guestPath: '/x' }])).toThrow(/volumes\[0\]\.must name either managedVolume or hostPath/);
    expect(norm([{ managedVolume: '', guestPath: '/x' }])).toThrow(/managedVolume must be a volume id or name/);
    expect(norm([{ managedVolume: 'one', guestPath: '/x', extra: 1 }])).toThrow(/has no field "extra"/);
    expect(norm([{ managedVolume: 'one', guestPath: '/x' }, { managedVolume: 'one', guestPath: '/x' }])).toThrow(/guestPath \/x is already used by volumes\[0\]/);
    expect(() => normalizeBoxOptions({ rootfsPath: '/', volumes: [{ managedVolume: 'one', guestPath: '/x' }] }, 4)).toThrow(UnsupportedError);
  });

  it('recreates a data directory deleted behind the runtime empty instead of failing boxes', async () => {
    const v = await vols.create('gone');
    fs.rmSync(volumePaths(home, v.id).data, { recursive: true });
    expect(vols.resolve('gone').hostPath).toBe(volumePaths(home, v.id).data);
    expect(fs.readdirSync(volumePaths(home, v.id).data)).toEqual([]);
  });

  it('treeBytes is 0 for a missing directory', () => {
    expect(treeBytes(path.join(home, 'nothing'))).toBe(0);
  });
});

describe('boxlite -v', () => {
  // parseVolumeFlag lives in main.ts, which runs the CLI when imported: its use is covered by
  // test/integration/volumes-managed.test.ts; the rule it applies is tested here.
  it('takes a source without "/" for a managed volume name', () => {
    for (const name of ['data', 'my.vol', 'x_1']) expect(isManagedVolumeSource(name)).toBe(true);
    for (const p of ['/srv/x', './rel', 'a/b', '.', '..', '~']) expect(isManagedVolumeSource(p)).toBe(false);
  });
});
