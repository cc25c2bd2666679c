// The live-snapshot pieces that need no VM: the shim's control op parsing and QMP helpers
// (src/shim/disk-ops.ts, a fake QMP client), and recover() of a live snapshot cut short at
// each step, on real qcow2 files (qemu-img, qemu-io).
import { execFileSync } from 'node:child_process';
import fs from 'node:fs';
import { ulid } from 'ulid';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { liveOverlayPath, recover } from '../../src/runtime/snapshots.js';
import { parseControlRequest } from '../../src/shim/control.js';
import { activeRootFile, protocolFile, switchRootOverlay } from '../../src/shim/disk-ops.js';
import type { QmpClient } from '../../src/shim/qmp.js';
import { basePath } from '../../src/store/home.js';
import { backingOf, diskOf, hasPattern, makeBox, makeHome, writePattern, type Fixture } from './snapshot-fixture.js';

let f: Fixture;
beforeEach(() => {
  f = makeHome();
});
afterEach(() => f.close());

function fakeQmp(files: string[]): { qmp: QmpClient; calls: Array<[string, unknown]> } {
  const calls: Array<[string, unknown]> = [];
  let i = 0;
  const qmp = {
    execute: async (cmd: string, args?: unknown) => {
      calls.push([cmd, args]);
      if (cmd === 'query-block') return [{ device: 'root', inserted: { file: files[Math.min(i, files.length - 1)] } }];
      if (cmd === 'blockdev-snapshot-sync') i++;
      return {};
    },
  } as unknown as QmpClient;
  return { qmp, calls };
}

describe('shim side', () => {
  it('parses the disk op and refuses a non-string overlay', () => {
    expect(parseControlRequest(Buffer.from('{"op":"disk"}'))).toEqual({ op: 'disk' });
    expect(parseControlRequest(Buffer.from('{"op":"disk","overlay":"/b/x"}'))).toEqual({ op: 'disk', overlay: '/b/x' });
    expect(() => parseControlRequest(Buffer.from('{"op":"disk","overlay":3}'))).toThrowError(expect.objectContaining({ code: 'InvalidArgument' }));
  });

  it("reads QEMU's json: names of a switched top as the file it writes", async () => {
    const json = 'json:{"backing": {"driver": "qcow2", "file": {"driver": "file", "filename": "/h/b/disk.qcow2"}}, "driver": "qcow2", "file": {"driver": "file", "filename": "/h/b/.disk-next-X.qcow2"}}';
    expect(protocolFile(json)).toBe('/h/b/.disk-next-X.qcow2');
    expect(protocolFile('/h/b/disk.qcow2')).toBe('/h/b/disk.qcow2');
    expect(() => protocolFile('json:{nope')).toThrowError(expect.objectContaining({ code: 'Storage' }));
    expect(await activeRootFile(fakeQmp([json]).qmp)).toBe('/h/b/.disk-next-X.qcow2');
  });

  it('switches only onto an overlay of the box, and only once; the shim names it disk.qcow2', async () => {
    const dir = fs.mkdtempSync(`${f.root}/box-`);
    const next = `${dir}/.disk-next-${ulid()}.qcow2`;
    fs.writeFileSync(`${dir}/disk.qcow2`, 'old');
    fs.writeFileSync(next, 'new');
    const { qmp, calls } = fakeQmp([`${dir}/disk.qcow2`, next]);
    expect(await switchRootOverlay(qmp, dir, next)).toBe(next);
    expect(fs.statSync(`${dir}/disk.qcow2`).ino).toBe(fs.statSync(next).ino);
    expect(fs.readdirSync(dir).sort()).toEqual([next.slice(dir.length + 1), 'disk.qcow2'].sort());
    expect(calls.filter(([c]) => c === 'blockdev-snapshot-sync')).toEqual([
      ['blockdev-snapshot-sync', { device: 'root', 'snapshot-file': next, format: 'qcow2', mode: 'existing' }],
    ]);
    expect(await switchRootOverlay(qmp, dir, next)).toBe(next);
    expect(calls.filter(([c]) => c === 'blockdev-snapshot-sync')).toHaveLength(1);
    for (const bad of ['/etc/passwd', `${dir}/disk.qcow2`, `/other/.disk-next-${ulid()}.qcow2`, `${dir}/../B/.disk-next-x.qcow2`, 'rel.qcow2']) {
      await expect(switchRootOverlay(qmp, dir, bad), bad).rejects.toMatchObject({ code: 'InvalidArgument' });
    }
  });
});

describe('recover() of a live snapshot cut short', () => {
  /** The state captureLive leaves just before the QMP switch: pending rows, base link, empty overlay. */
  async function cutShort() {
    const box = await makeBox(f);
    const disk = diskOf(f, box.id);
    writePattern(disk, 0xa1);
    const baseId = ulid();
    f.ctx.disks.beginBase({ id: baseId, parent: null, owner: box.id, createdAt: 1 }, { id: ulid(), name: 'k', createdAt: 1, containerDiskBytes: 4 << 20 });
    const file = basePath(f.ctx.home.root, baseId);
    fs.mkdirSync(f.ctx.home.root + '/bases', { recursive: true });
    fs.linkSync(disk, file);
    const next = liveOverlayPath(f.ctx.store.dir(box.id), baseId);
    execFileSync('qemu-img', ['create', '-q', '-f', 'qcow2', '-F', 'qcow2', '-u', '-b', file, next, String(4 << 20)]);
    return { box, disk, file, next, baseId };
  }

  it('not switched (stopped, empty overlay): base name and rows dropped, the disk untouched', async () => {
    const { box, disk, file, next, baseId } = await cutShort();
    const ino = fs.statSync(disk).ino;
    await recover(f.ctx, box.id);
    expect([fs.existsSync(file), fs.existsSync(next), f.ctx.disks.base(baseId)]).toEqual([false, false, undefined]);
    expect(fs.statSync(disk).ino).toBe(ino);
    expect(hasPattern(disk, 0xa1)).toBe(true);
    expect(f.ctx.disks.listSnapshots(box.id)).toEqual([]);
  });

  it('switched and written (stopped): the overlay becomes the disk and the base is committed read-only', async () => {
    const { box, disk, file, next, baseId } = await cutShort();
    writePattern(next, 0xb2, 1 << 20); // what the guest wrote after the switch
    await recover(f.ctx, box.id);
    expect(f.ctx.disks.base(baseId)?.state).toBe('ready');
    expect(f.ctx.disks.listSnapshots(box.id).map((s) => s.name)).toEqual(['k']);
    expect(fs.statSync(file).mode & 0o777).toBe(0o444);
    expect(fs.existsSync(next)).toBe(false);
    expect(backingOf(disk)).toBe(file);
    expect(hasPattern(disk, 0xa1) && hasPattern(disk, 0xb2, 1 << 20)).toBe(true);
    expect(hasPattern(file, 0xb2, 1 << 20)).toBe(false);
  });

  it('running: decided by the file QEMU writes, not by content; the active overlay keeps its name', async () => {
    const a = await cutShort();
    await recover(f.ctx, a.box.id, a.disk); // QEMU still on the old file: undo
    expect([fs.existsSync(a.file), fs.existsSync(a.next), f.ctx.disks.base(a.baseId)]).toEqual([false, false, undefined]);

    const b = await cutShort();
    await recover(f.ctx, b.box.id, b.next); // QEMU writes the overlay (even if empty): finish
    expect(f.ctx.disks.base(b.baseId)?.state).toBe('ready');
    expect(fs.statSync(b.next).ino).toBe(fs.statSync(b.disk).ino);
    expect(backingOf(b.disk)).toBe(b.file);
    // Once the VM is gone, the extra name goes with the next recovery.
    await recover(f.ctx, b.box.id);
    expect(fs.existsSync(b.next)).toBe(false);
    expect(hasPattern(b.disk, 0xa1)).toBe(true);
  });
});
