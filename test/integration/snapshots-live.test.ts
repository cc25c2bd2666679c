import { execFileSync } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { afterAll, describe, expect, inject, it } from 'vitest';
import { JsBoxlite, type Box } from '../../dist/index.js';
import { run } from './helpers.js';

// Snapshots and clones of a RUNNING box (src/runtime/snapshots.ts captureLive, src/shim/disk-ops.ts):
// the guest syncs, QEMU switches the root drive onto a new overlay over QMP, and the box keeps
// running and writing. Small busybox boxes, no network; every test removes its boxes.

const runtime = new JsBoxlite({ homeDir: inject('home') });
const made: string[] = [];

afterAll(async () => {
  for (const id of made) await runtime.remove(id, true).catch(() => undefined);
});

async function newBox(): Promise<Box> {
  const box = await runtime.create({ rootfsPath: inject('image'), network: { outbound: { mode: 'disabled' } }, memoryMib: 256 });
  made.push(box.id);
  return box;
}

async function sh(box: Box, script: string): Promise<string> {
  const r = await run(box, 'sh', ['-c', script]);
  expect(r.exitCode, `${script}: ${r.stderr}`).toBe(0);
  return r.stdout;
}

const boxDir = (id: string) => path.join(inject('home'), 'boxes', id);
const shimState = (id: string) => JSON.parse(fs.readFileSync(path.join(boxDir(id), 'shim.json'), 'utf8')) as { shimPid: number; qemuPid: number };
const alive = (pid: number) => {
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
};

describe('snapshot and clone of a running box', () => {
  it('captures A while the box keeps running and writing B; clone sees A, restore after stop gives A', async () => {
    const box = await newBox();
    // No sync of our own: the snapshot's quiesce (agent exec `sync`) must write A out.
    await sh(box, 'echo A > /root/state; head -c 262144 /dev/urandom > /root/blob; md5sum /root/blob > /root/blob.md5');
    const { qemuPid } = shimState(box.id);

    const t0 = performance.now();
    const s1 = await box.snapshot.create('live1');
    const snapMs = performance.now() - t0;
    expect(s1).toMatchObject({ name: 'live1', boxId: box.id });
    expect(s1.sizeBytes).toBeGreaterThan(0);
    await expect(box.snapshot.create('live1')).rejects.toMatchObject({ code: 'AlreadyExists' });

    const t1 = performance.now();
    const clone = await box.cloneBox(null, null);
    const cloneMs = performance.now() - t1;
    made.push(clone.id);
    console.log(`[timing] live snapshot.create ${snapMs.toFixed(0)} ms, live cloneBox ${cloneMs.toFixed(0)} ms`);

    // A third live capture (the top QEMU writes is now known by an overlay name), and a clone of it boots.
    const clone2 = await box.cloneBox(null, null);
    made.push(clone2.id);
    expect(await sh(clone2, 'cat /root/state')).toBe('A\n');
    await clone2.stop();
    await runtime.remove(clone2.id);

    // The same VM kept running (no reboot), and it writes on.
    expect(shimState(box.id).qemuPid).toBe(qemuPid);
    await sh(box, 'echo B > /root/state; echo more > /root/added; sync');
    expect(await sh(box, 'cat /root/state')).toBe('B\n');
    // Restore stays stopped-only.
    await expect(box.snapshot.restore('live1')).rejects.toMatchObject({ code: 'InvalidState', message: expect.stringMatching(/^invalid state: .*running/) });

    // The clone (taken after the snapshot, before B) has A and the blob intact, not B.
    await run(clone, 'true').catch((err) => {
      const logs = path.join(boxDir(clone.id), 'logs');
      for (const n of fs.readdirSync(logs)) console.log(`--- ${n}\n${fs.readFileSync(path.join(logs, n), 'utf8').slice(-3000)}`);
      console.log(execFileSync('qemu-img', ['info', '-U', '--backing-chain', path.join(boxDir(clone.id), 'disk.qcow2')], { encoding: 'utf8' }));
      throw err;
    });
    expect(await sh(clone, 'cat /root/state; md5sum -c /root/blob.md5 >/dev/null && echo blob-ok; ls /root/added 2>/dev/null || echo no-added')).toBe(
      'A\nblob-ok\nno-added\n',
    );
    await clone.stop();

    // The live disk's files: disk.qcow2 is an overlay on a read-only base, no overlay left behind.
    const disk = path.join(boxDir(box.id), 'disk.qcow2');
    const info = JSON.parse(execFileSync('qemu-img', ['info', '-U', '--output=json', disk], { encoding: 'utf8' })) as Record<string, string>;
    expect(path.dirname(info['full-backing-filename'] ?? info['backing-filename']!)).toBe(path.join(inject('home'), 'bases'));
    // The running QEMU knows its top by the overlay's name: that one name stays, the same file as disk.qcow2.
    const names = fs.readdirSync(boxDir(box.id)).filter((n) => n.startsWith('.disk-next-'));
    expect(names).toHaveLength(1);
    expect(fs.statSync(path.join(boxDir(box.id), names[0]!)).ino).toBe(fs.statSync(disk).ino);

    await box.stop();
    const again = (await runtime.get(box.id))!;
    expect(await sh(again, 'cat /root/state')).toBe('B\n');
    await again.stop();
    await again.snapshot.restore('live1');
    const restored = (await runtime.get(box.id))!;
    expect(await sh(restored, 'cat /root/state; md5sum -c /root/blob.md5 >/dev/null && echo blob-ok; ls /root/added 2>/dev/null || echo no-added')).toBe(
      'A\nblob-ok\nno-added\n',
    );
    await restored.stop();
    await runtime.remove(clone.id);
    await runtime.remove(box.id);
    expect(await runtime.get(box.id)).toBeNull();
  });

  for (const moment of ['before', 'after'] as const) {
    it(`kill -9 of the shim ${moment} the QMP switch: the box stays whole and removable, no half base is used`, async () => {
      const box = await newBox();
      await sh(box, 'echo A > /root/state; sync');
      // The shim holds the disk op this long (src/shim/shim.ts test hook), so the kill lands mid-op.
      fs.writeFileSync(path.join(boxDir(box.id), '.test-live-disk-hold'), `${moment}:4000`);
      const { shimPid, qemuPid } = shimState(box.id);
      const pending = box.snapshot.create('k');
      // Wait until the SDK has handed the overlay to the shim (it sits in the hook), then kill it.
      const next = () => fs.readdirSync(boxDir(box.id)).some((n) => n.startsWith('.disk-next-'));
      for (let i = 0; i < 200 && !next(); i++) await new Promise((r) => setTimeout(r, 25));
      expect(next()).toBe(true);
      await new Promise((r) => setTimeout(r, 500));
      process.kill(shimPid, 'SIGKILL');
      await expect(pending).rejects.toMatchObject({ code: expect.any(String) });
      expect(alive(qemuPid)).toBe(false);

      // Recovered at once: no overlay, no pending base; the snapshot is either whole or absent.
      expect(fs.readdirSync(boxDir(box.id)).filter((n) => n.startsWith('.disk-next-') || n === 'disk-op.lock')).toEqual([]);
      const disk = path.join(boxDir(box.id), 'disk.qcow2');
      execFileSync('qemu-img', ['check', '-q', '-U', disk], { stdio: 'pipe' });
      const listed = (await box.snapshot.list()).map((s) => s.name);
      console.log(`[kill -9 ${moment}] snapshots after recovery: ${JSON.stringify(listed)}`);
      if (moment === 'before') expect(listed).toEqual([]);
      for (const n of fs.readdirSync(path.join(inject('home'), 'bases')).filter((x) => x.endsWith('.qcow2'))) {
        execFileSync('qemu-img', ['check', '-q', '-U', path.join(inject('home'), 'bases', n)], { stdio: 'pipe' });
      }

      // The box boots again on a whole disk with A, and goes away cleanly.
      const again = (await runtime.get(box.id))!;
      expect(await sh(again, 'cat /root/state')).toBe('A\n');
      if (listed.includes('k')) {
        await again.stop();
        await again.snapshot.restore('k');
        expect(await sh((await runtime.get(box.id))!, 'cat /root/state')).toBe('A\n');
      }
      await runtime.remove(box.id, true);
      expect(await runtime.get(box.id)).toBeNull();
    });
  }
});
