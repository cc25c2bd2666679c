import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, inject, it } from 'vitest';
import { ConfigError, JsBoxlite, NotFoundError, type Box } from '../../dist/index.js';
import { run } from './helpers.js';

// Host directories shared into a box over virtio-9p (one VM for the file).
let runtime: JsBoxlite;
let box: Box;
let rwDir: string;
let roDir: string;

const sh = (script: string, user?: string) => run(box, 'sh', ['-c', script], { user });

beforeAll(async () => {
  rwDir = fs.mkdtempSync(path.join(os.tmpdir(), 'boxlite-vol-rw-'));
  roDir = fs.mkdtempSync(path.join(os.tmpdir(), 'boxlite-vol-ro-'));
  fs.writeFileSync(path.join(rwDir, 'from-host.txt'), 'hello from the host\n');
  fs.writeFileSync(path.join(roDir, 'ro.txt'), 'read only\n');
  runtime = new JsBoxlite({ homeDir: inject('home') });
  box = await runtime.create({
    rootfsPath: inject('image'),
    volumes: [
      { hostPath: rwDir, guestPath: '/data' },
      { hostPath: roDir, guestPath: '/srv/not/there/yet', readOnly: true },
    ],
  });
  await box.start();
});

afterAll(async () => {
  if (box) await runtime.remove(box.id, true);
  for (const d of [rwDir, roDir]) if (d) fs.rmSync(d, { recursive: true, force: true });
});

describe('host path volumes', () => {
  it('shares a read-write directory both ways, at once', async () => {
    expect(await sh('cat /data/from-host.txt')).toEqual({ exitCode: 0, stdout: 'hello from the host\n', stderr: '' });
    expect((await sh('echo written in the guest > /data/from-guest.txt && mkdir -p /data/sub && echo x > /data/sub/y')).exitCode).toBe(0);
    // No stop, no sync: the guest's write is on the host as soon as the command returns.
    expect(fs.readFileSync(path.join(rwDir, 'from-guest.txt'), 'utf8')).toBe('written in the guest\n');
    expect(fs.readFileSync(path.join(rwDir, 'sub', 'y'), 'utf8')).toBe('x\n');
    // ...and a host change is visible in the guest at once.
    fs.writeFileSync(path.join(rwDir, 'later.txt'), 'later\n');
    expect((await sh('cat /data/later.txt')).stdout).toBe('later\n');
    expect((await sh('grep " /data " /proc/mounts')).stdout).toMatch(/^boxlite-v0 \/data 9p rw,/);
  });

  it('keeps a read-only volume read-only, even for root', async () => {
    expect((await sh('cat /srv/not/there/yet/ro.txt')).stdout).toBe('read only\n');
    const write = await sh('id -u; echo x > /srv/not/there/yet/new.txt');
    expect(write.stdout).toBe('0\n');
    expect(write.exitCode).not.toBe(0);
    expect(write.stderr).toMatch(/Read-only file system/);
    // Root may remount it read-write in the guest; QEMU (readonly=on) still refuses the write.
    const remount = await sh('mount -o remount,rw /srv/not/there/yet; echo y > /srv/not/there/yet/new.txt');
    expect(remount.exitCode).not.toBe(0);
    expect(remount.stderr).toMatch(/Read-only file system|Operation not permitted|Permission denied/);
    expect(fs.existsSync(path.join(roDir, 'new.txt'))).toBe(false);
    expect(fs.readdirSync(roDir)).toEqual(['ro.txt']);
  });

  it('creates a missing guest path', async () => {
    expect((await sh('grep " /srv/not/there/yet " /proc/mounts')).stdout).toMatch(/^boxlite-v1 \/srv\/not\/there\/yet 9p ro,/);
  });

  it('rejects a missing host path with a ConfigError before anything starts', async () => {
    const before = fs.readdirSync(path.join(inject('home'), 'boxes'));
    const missing = path.join(rwDir, 'no-such-dir');
    const err = await runtime
      .create({ rootfsPath: inject('image'), volumes: [{ hostPath: missing, guestPath: '/x' }] })
      .catch((e: unknown) => e);
    expect(err).toBeInstanceOf(ConfigError);
    expect((err as Error).message).toMatch(/volumes\[0\]\.hostPath does not exist/);
    expect(fs.readdirSync(path.join(inject('home'), 'boxes'))).toEqual(before);
    const managed = await runtime
      .create({ rootfsPath: inject('image'), volumes: [{ managedVolume: 'data', guestPath: '/x' } as never] })
      .catch((e: unknown) => e);
    // Managed volumes are test/integration/volumes-managed.test.ts's; one that does not exist is NotFound.
    expect(managed).toBeInstanceOf(NotFoundError);
    expect((managed as Error).message).toBe('volume not found: data');
  });
});

describe('boxlite run -v', () => {
  it('shares HOST:GUEST read-write and HOST:GUEST:ro read-only', () => {
    const bin = path.join(inject('root'), 'dist', 'cli', 'main.js');
    const r = spawnSync(
      process.execPath,
      [bin, '--home', inject('home'), 'run', '--rm', '-v', `${rwDir}:/w`, '-v', `${roDir}:/r:ro`, '--rootfs', inject('image'), '--',
        'sh', '-c', 'echo cli > /w/cli.txt && cat /r/ro.txt && touch /r/nope'],
      { encoding: 'utf8', timeout: 120_000 },
    );
    expect(r.stdout).toBe('read only\n');
    expect(r.stderr).toMatch(/Read-only file system/);
    expect(r.status).toBe(1);
    expect(fs.readFileSync(path.join(rwDir, 'cli.txt'), 'utf8')).toBe('cli\n');
    const bad = spawnSync(process.execPath, [bin, '--home', inject('home'), 'run', '--rm', '-v', '/nope-nope:/x', '--rootfs', inject('image'), 'true'], {
      encoding: 'utf8',
    });
    expect(bad.status).not.toBe(0);
    expect(bad.stderr).toMatch(/volumes\[0\]\.hostPath does not exist/);
  });
});
