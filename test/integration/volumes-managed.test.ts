import fs from 'node:fs';
import path from 'node:path';
import { afterAll, describe, expect, inject, it } from 'vitest';
import { InvalidStateError, JsBoxlite, NotFoundError, type Box } from '../../dist/index.js';
import { boxlite, run } from './helpers.js';

// Managed volumes (runtime.volumes): data persists across boxes that mount one after another,
// a volume in use is not removed, a missing one is NotFound at create. Two VMs, one at a time.
const runtime = new JsBoxlite({ homeDir: inject('home') });
const tag = `${process.pid}`;
const made: string[] = [];
const boxes: Box[] = [];

afterAll(async () => {
  for (const b of boxes) await runtime.remove(b.id, true).catch(() => undefined);
  for (const v of made) await runtime.volumes.remove(v, true).catch(() => undefined);
});

describe('managed volumes', () => {
  it('keep their data across boxes that mount them one after another, and refuse removal while in use', async () => {
    const vol = await runtime.volumes.create(`vt-data-${tag}`);
    made.push(vol.id);
    expect(vol).toMatchObject({ name: `vt-data-${tag}`, sizeBytes: 0 });

    const first = await runtime.create({ rootfsPath: inject('image'), memoryMib: 256, volumes: [{ managedVolume: vol.name, guestPath: '/data' }] });
    boxes.push(first);
    const w = await run(first, 'sh', ['-c', 'echo kept across boxes > /data/note && mkdir -p /data/d && echo 2 > /data/d/two && chmod 600 /data/note && grep " /data " /proc/mounts']);
    expect(w.exitCode).toBe(0);
    expect(w.stdout).toMatch(/^boxlite-v0 \/data 9p rw,/);
    // Mounted by a running box: refused, force or not, and nothing is lost.
    for (const force of [false, true]) {
      const err = await runtime.volumes.remove(vol.name, force).catch((e: unknown) => e);
      expect(err).toBeInstanceOf(InvalidStateError);
      expect((err as Error).message).toMatch(new RegExp(`^invalid state: volume ${vol.name} is in use by running box .*${first.id}.*; stop it first$`));
    }
    await first.stop();
    // Stopped but still configured to mount it: refused without force.
    const stoppedErr = await runtime.volumes.remove(vol.id).catch((e: unknown) => e);
    expect(stoppedErr).toBeInstanceOf(InvalidStateError);
    expect((stoppedErr as Error).message).toMatch(/in use by box .*; remove the box first, or remove the volume with force/);
    await runtime.remove(first.id);

    // The next box mounts it by id: same files, same owner and mode (mapped-xattr keeps them).
    const second = await runtime.create({ rootfsPath: inject('image'), memoryMib: 256, volumes: [{ managedVolume: vol.id, guestPath: '/srv/v' }] });
    boxes.push(second);
    const r = await run(second, 'sh', ['-c', 'cat /srv/v/note /srv/v/d/two && stat -c "%a %u" /srv/v/note']);
    expect(r).toMatchObject({ exitCode: 0, stdout: 'kept across boxes\n2\n600 0\n' });
    expect((await runtime.volumes.get(vol.name)).sizeBytes).toBe('kept across boxes\n'.length + 2);
    expect(JSON.stringify((await second.inspect()).config.volumes)).toContain(vol.id);
    await runtime.remove(second.id, true);

    // No box mounts it any more: removed, data and all.
    await runtime.volumes.remove(vol.name);
    expect(await runtime.volumes.get(vol.id).catch((e: unknown) => e)).toBeInstanceOf(NotFoundError);
    expect(fs.existsSync(path.join(inject('home'), 'volumes', vol.id))).toBe(false);
  });

  it('a missing volume at create is NotFound and creates nothing', async () => {
    const before = fs.readdirSync(path.join(inject('home'), 'boxes')).length;
    const err = await runtime.create({ rootfsPath: inject('image'), volumes: [{ managedVolume: `no-such-${tag}`, guestPath: '/x' }] }).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(NotFoundError);
    expect((err as Error).message).toBe(`volume not found: no-such-${tag}`);
    expect(fs.readdirSync(path.join(inject('home'), 'boxes')).length).toBe(before);
  });

  it('boxlite volume create|ls|inspect|rm and run -v NAME:/path', async () => {
    const name = `vt-cli-${tag}`;
    const created = await boxlite(['volume', 'create', name]);
    expect(created.code).toBe(0);
    const id = created.stdout.trim();
    made.push(id);
    expect(id).toMatch(/^[0-9a-z]{26}$/);
    const dup = await boxlite(['volume', 'create', name]);
    expect(dup.code).toBe(1);
    expect(dup.stderr).toMatch(/already exists/);

    const put = await boxlite(['run', '--rm', '--memory', '256', '-v', `${name}:/v`, '--rootfs', inject('image'), '--', 'sh', '-c', 'echo from-cli > /v/f']);
    expect(put).toMatchObject({ code: 0, stderr: '' });
    const get = await boxlite(['run', '--rm', '--memory', '256', '-v', `${name}:/v:ro`, '--rootfs', inject('image'), '--', 'sh', '-c', 'cat /v/f; touch /v/g']);
    expect(get.stdout).toBe('from-cli\n');
    expect(get.stderr).toMatch(/Read-only file system/);
    expect(get.code).toBe(1);

    const ls = await boxlite(['volume', 'ls', '--format', 'json']);
    expect(JSON.parse(ls.stdout)).toContainEqual(expect.objectContaining({ id, name, sizeBytes: 'from-cli\n'.length }));
    const inspect = await boxlite(['volume', 'inspect', name]);
    expect(JSON.parse(inspect.stdout)).toEqual([expect.objectContaining({ id, name })]);
    const missing = await boxlite(['volume', 'inspect', 'nope-nope']);
    expect(missing).toMatchObject({ code: 1 });
    expect(missing.stderr).toMatch(/volume not found: nope-nope/);
    const rm = await boxlite(['volume', 'rm', name]);
    expect(rm).toMatchObject({ code: 0, stdout: `${name}\n` });
    expect((await boxlite(['volume', 'ls', '-q'])).stdout).not.toContain(id);
  });
});
