// Snapshots, restore, clone and the reference counts of shared bases, on real qcow2 files
// (qemu-img, qemu-io) in a scratch home; no VM. What a box "wrote" is a byte pattern at an offset.
import fs from 'node:fs';
import path from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { BoxSnapshots, cloneRecord, collectBases, recover, validateSnapshotName } from '../../src/runtime/snapshots.js';
import { basePath, boxPaths } from '../../src/store/home.js';
import { backingOf, diskOf, hasPattern, makeBox, makeHome, writePattern, type Fixture } from './snapshot-fixture.js';

let f: Fixture;
beforeEach(() => {
  f = makeHome();
});
afterEach(() => f.close());

const handle = (id: string) => new BoxSnapshots(() => f.ctx, () => id);
const bases = () => fs.readdirSync(path.join(f.root, 'bases')).filter((n) => n.endsWith('.qcow2')).sort();

describe('snapshot names', () => {
  it('accepts ordinary names and refuses path-like, empty, long and control-character ones', () => {
    for (const ok of ['s1', 'before-upgrade_v2.1', 'UPPER', 'a'.repeat(128), 'with space']) expect(validateSnapshotName(ok)).toBe(ok);
    for (const bad of ['', '.', '..', '.hidden', 'a/b', '../x', 'a\\b', 'nul\0', 'tab\t', 'a'.repeat(129)]) {
      expect(() => validateSnapshotName(bad), JSON.stringify(bad)).toThrowError(expect.objectContaining({ code: 'InvalidArgument' }));
    }
    expect(() => validateSnapshotName(42)).toThrowError(expect.objectContaining({ code: 'InvalidArgument', message: expect.stringMatching(/^invalid argument: /) }));
  });
});

describe('box.snapshot', () => {
  it('create → write → restore brings back the snapshot content; info has the reference fields', async () => {
    const box = await makeBox(f);
    const disk = diskOf(f, box.id);
    writePattern(disk, 0xa1);
    const t0 = Math.floor(Date.now() / 1000);
    const info = await handle(box.id).create('s1');
    expect(Object.keys(info).sort()).toEqual(['boxId', 'containerDiskBytes', 'createdAt', 'id', 'name', 'sizeBytes']);
    expect(info).toMatchObject({ boxId: box.id, name: 's1', containerDiskBytes: 4 * 1024 * 1024 });
    expect(info.createdAt).toBeGreaterThanOrEqual(t0);
    expect(info.createdAt).toBeLessThan(t0 + 60);
    expect(info.sizeBytes).toBeGreaterThan(0);
    // The snapshot is the old disk's inode under a new name, read-only; the box got a fresh overlay on it.
    const [base] = bases();
    expect(base).toBeDefined();
    const baseFile = path.join(f.root, 'bases', base!);
    expect(fs.statSync(baseFile).mode & 0o777).toBe(0o444);
    expect(backingOf(disk)).toBe(baseFile);
    expect(hasPattern(disk, 0xa1)).toBe(true);

    writePattern(disk, 0xb2);
    writePattern(disk, 0xb2, 1024 * 1024);
    expect(hasPattern(disk, 0xb2)).toBe(true);
    await handle(box.id).restore('s1');
    expect(hasPattern(disk, 0xa1)).toBe(true);
    expect(hasPattern(disk, 0x11, 1024 * 1024)).toBe(true); // the image's bytes again
    expect(hasPattern(baseFile, 0xa1)).toBe(true);

    expect((await handle(box.id).list()).map((s) => s.name)).toEqual(['s1']);
    expect(await handle(box.id).get('s1')).toEqual(info);
    expect(await handle(box.id).get('nope')).toBeNull();
  });

  it('refuses a duplicate name (AlreadyExists), an unknown one (NotFound) and a running box (InvalidState)', async () => {
    const box = await makeBox(f);
    await handle(box.id).create('dup');
    await expect(handle(box.id).create('dup')).rejects.toMatchObject({ code: 'AlreadyExists', message: expect.stringMatching(/^already exists: snapshot "dup"/) });
    await expect(handle(box.id).restore('missing')).rejects.toMatchObject({ code: 'NotFound' });
    await expect(handle(box.id).remove('missing')).rejects.toMatchObject({ code: 'NotFound' });
    await expect(handle(box.id).create('../x')).rejects.toMatchObject({ code: 'InvalidArgument' });
    // A live shim's lock (our own pid, no `op`): the box is running.
    const lock = boxPaths(f.ctx.store.dir(box.id)).shimLock;
    fs.writeFileSync(lock, JSON.stringify({ pid: process.pid }));
    await expect(handle(box.id).create('s2')).rejects.toMatchObject({ code: 'InvalidState', message: expect.stringMatching(/^invalid state: box .* is running/) });
    await expect(handle(box.id).restore('dup')).rejects.toMatchObject({ code: 'InvalidState' });
    // A disk operation in another live process: busy, and the box does not read as running.
    fs.writeFileSync(lock, JSON.stringify({ pid: process.pid, op: 'exporting it' }));
    expect(f.ctx.store.status(box.id).shim).toBeUndefined();
    await expect(handle(box.id).create('s2')).rejects.toMatchObject({ code: 'InvalidState', message: expect.stringMatching(/busy/) });
    // A lock of a dead process is taken over.
    fs.writeFileSync(lock, JSON.stringify({ pid: 2 ** 22 + 7 }));
    await expect(handle(box.id).create('s2')).resolves.toMatchObject({ name: 's2' });
    expect(fs.existsSync(lock)).toBe(false);
  });

  it('removing a snapshot keeps its base while the box disk sits on it; removing the box frees it', async () => {
    const box = await makeBox(f);
    writePattern(diskOf(f, box.id), 0xa1);
    const s1 = await handle(box.id).create('s1');
    const baseId = f.ctx.disks.getSnapshot(box.id, 's1')!.baseId;
    expect(f.ctx.disks.references(baseId)).toBe(2); // the snapshot and the box's disk
    await handle(box.id).remove('s1');
    expect(await handle(box.id).get('s1')).toBeNull();
    expect(f.ctx.disks.references(baseId)).toBe(1);
    expect(fs.existsSync(basePath(f.root, baseId))).toBe(true);
    expect(hasPattern(diskOf(f, box.id), 0xa1)).toBe(true);
    expect(s1.id).toBeTruthy();
    f.ctx.store.remove(box.id);
    collectBases(f.ctx);
    expect(bases()).toEqual([]);
    expect(f.ctx.disks.allBases()).toEqual([]);
  });

  it('a chain of snapshots: restoring the older one and removing the newer never breaks the older', async () => {
    const box = await makeBox(f);
    const disk = diskOf(f, box.id);
    writePattern(disk, 0x01);
    await handle(box.id).create('one');
    writePattern(disk, 0x02, 65536);
    await handle(box.id).create('two');
    await handle(box.id).restore('one');
    expect(hasPattern(disk, 0x01)).toBe(true);
    expect(hasPattern(disk, 0x11, 65536)).toBe(true);
    await handle(box.id).remove('one');
    // "two" is built on "one"'s base: the base stays (its child needs it) though its snapshot is gone.
    await handle(box.id).restore('two');
    expect(hasPattern(disk, 0x01)).toBe(true);
    expect(hasPattern(disk, 0x02, 65536)).toBe(true);
    await handle(box.id).remove('two');
    // Now only the box's disk holds the chain: two bases (one → two), nothing freed that it uses.
    expect(bases()).toHaveLength(2);
    expect(hasPattern(disk, 0x02, 65536)).toBe(true);
    await expect(handle(box.id).restore('two')).rejects.toMatchObject({ code: 'NotFound' });
  });
});

describe('cloneBox', () => {
  it('shares the disk copy-on-write: each side keeps its own writes; removing the source keeps the clone', async () => {
    const src = await makeBox(f, { env: [{ key: 'A', value: 'b' }] }, 'src');
    writePattern(diskOf(f, src.id), 0xa1);
    const clone = await cloneRecord(f.ctx, src, 'copy');
    expect(clone.id).not.toBe(src.id);
    expect(clone.name).toBe('copy');
    expect(clone.options.env).toEqual([['A', 'b']]);
    const srcDisk = diskOf(f, src.id);
    const cloneDisk = diskOf(f, clone.id);
    expect(backingOf(cloneDisk)).toBe(backingOf(srcDisk));
    // No copy: the clone's overlay is small, the data is in the shared base.
    expect(fs.statSync(cloneDisk).size).toBeLessThan(1024 * 1024);
    expect(hasPattern(cloneDisk, 0xa1)).toBe(true);
    writePattern(cloneDisk, 0xc3);
    writePattern(srcDisk, 0xd4, 65536);
    expect(hasPattern(srcDisk, 0xa1)).toBe(true);
    expect(hasPattern(cloneDisk, 0xc3)).toBe(true);
    expect(hasPattern(cloneDisk, 0x11, 65536)).toBe(true);
    const before = bases().length;
    // The clone wrote since it was made: cloning it captures a new base.
    const c2 = await cloneRecord(f.ctx, clone, 'copy2');
    expect(bases().length).toBe(before + 1);
    expect(hasPattern(diskOf(f, c2.id), 0xc3)).toBe(true);
    // c2 wrote nothing since it was put on its base: its clone shares that base as it is.
    const c3 = await cloneRecord(f.ctx, c2, null);
    expect(c3.name).toBeUndefined();
    expect(bases().length).toBe(before + 1);
    expect(backingOf(diskOf(f, c3.id))).toBe(backingOf(diskOf(f, c2.id)));

    f.ctx.store.remove(src.id);
    collectBases(f.ctx);
    expect(hasPattern(cloneDisk, 0xc3)).toBe(true);
    expect(hasPattern(cloneDisk, 0xa1, 0)).toBe(false); // overwritten by the clone's own write
    expect(hasPattern(diskOf(f, c2.id), 0xc3)).toBe(true);
    await expect(cloneRecord(f.ctx, src, 'x')).rejects.toMatchObject({ code: 'NotFound' });
    await expect(cloneRecord(f.ctx, clone, 'copy2')).rejects.toMatchObject({ code: 'AlreadyExists' });
    // The refused clone left no box and no base behind.
    expect(f.ctx.store.list().map((r) => r.name ?? null).sort()).toEqual(['copy', 'copy2', null].sort());
  });

  it('a snapshot removed while a clone uses its base keeps the base', async () => {
    const src = await makeBox(f);
    writePattern(diskOf(f, src.id), 0xa1);
    await handle(src.id).create('s');
    const clone = await cloneRecord(f.ctx, src, 'c'); // src wrote nothing since: shares the snapshot's base
    const baseId = f.ctx.disks.getSnapshot(src.id, 's')!.baseId;
    expect(backingOf(diskOf(f, clone.id))).toBe(basePath(f.root, baseId));
    await handle(src.id).remove('s');
    f.ctx.store.remove(src.id);
    collectBases(f.ctx);
    expect(fs.existsSync(basePath(f.root, baseId))).toBe(true);
    expect(hasPattern(diskOf(f, clone.id), 0xa1)).toBe(true);
    f.ctx.store.remove(clone.id);
    collectBases(f.ctx);
    expect(bases()).toEqual([]);
  });
});

describe('crash recovery (kill -9 in the middle of a snapshot)', () => {
  it('linked but not yet switched: the half-made base is dropped and the disk is untouched', async () => {
    const box = await makeBox(f);
    const disk = diskOf(f, box.id);
    writePattern(disk, 0xa1);
    f.ctx.disks.beginBase({ id: 'PENDING1', parent: null, owner: box.id, createdAt: 1 }, { id: 'S1', name: 'half', createdAt: 1, containerDiskBytes: 1 });
    fs.mkdirSync(path.join(f.root, 'bases'), { recursive: true });
    fs.linkSync(disk, basePath(f.root, 'PENDING1'));
    fs.writeFileSync(path.join(f.ctx.store.dir(box.id), `.disk.qcow2.${process.pid}.abcd1234.tmp`), 'partial overlay');
    expect(await handle(box.id).list()).toEqual([]); // pending rows are never shown
    await recover(f.ctx, box.id);
    expect(fs.existsSync(basePath(f.root, 'PENDING1'))).toBe(false);
    expect(f.ctx.disks.base('PENDING1')).toBeUndefined();
    expect(fs.readdirSync(f.ctx.store.dir(box.id)).filter((n) => n.endsWith('.tmp'))).toEqual([]);
    expect(hasPattern(disk, 0xa1)).toBe(true);
    // And the name is free again.
    await expect(handle(box.id).create('half')).resolves.toMatchObject({ name: 'half' });
  });

  it('switched but not committed: recovery finishes the snapshot', async () => {
    const box = await makeBox(f);
    const disk = diskOf(f, box.id);
    writePattern(disk, 0xa1);
    f.ctx.disks.beginBase({ id: 'PENDING2', parent: null, owner: box.id, createdAt: 1 }, { id: 'S2', name: 'almost', createdAt: 1, containerDiskBytes: 4194304 });
    const file = basePath(f.root, 'PENDING2');
    fs.mkdirSync(path.dirname(file), { recursive: true });
    fs.linkSync(disk, file);
    const { overlayOnto } = await import('../../src/runtime/snapshots.js');
    await overlayOnto(file, disk, 4194304);
    await recover(f.ctx, box.id);
    expect((await handle(box.id).get('almost'))?.sizeBytes).toBeGreaterThan(0);
    expect(fs.statSync(file).mode & 0o777).toBe(0o444);
    writePattern(disk, 0xb2);
    await handle(box.id).restore('almost');
    expect(hasPattern(disk, 0xa1)).toBe(true);
  });

  it('a pending base of a box removed meanwhile is collected', async () => {
    const box = await makeBox(f);
    f.ctx.disks.beginBase({ id: 'PENDING3', parent: null, owner: box.id, createdAt: 1 });
    fs.mkdirSync(path.join(f.root, 'bases'), { recursive: true });
    fs.writeFileSync(basePath(f.root, 'PENDING3'), 'x');
    f.ctx.store.remove(box.id);
    collectBases(f.ctx);
    expect(f.ctx.disks.allBases()).toEqual([]);
    expect(bases()).toEqual([]);
  });
});

describe('long chains', () => {
  it('flattens a new base once the chain reaches MAX_CHAIN layers; every snapshot keeps its content', async () => {
    const { MAX_CHAIN } = await import('../../src/runtime/snapshots.js');
    const { qcow2BackingChain } = await import('../../src/vmm/jail.js');
    const box = await makeBox(f);
    const disk = diskOf(f, box.id);
    const n = MAX_CHAIN + 4;
    for (let i = 1; i <= n; i++) {
      writePattern(disk, i, i * 65536);
      await handle(box.id).create(`c${i}`);
      expect(qcow2BackingChain(disk).length, `after snapshot ${i}`).toBeLessThanOrEqual(MAX_CHAIN + 1);
    }
    for (const i of [1, MAX_CHAIN - 1, MAX_CHAIN, n]) {
      await handle(box.id).restore(`c${i}`);
      for (let j = 1; j <= i; j++) expect(hasPattern(disk, j, j * 65536), `c${i} has ${j}`).toBe(true);
      if (i < n) expect(hasPattern(disk, 0x11, (i + 1) * 65536), `c${i} lacks ${i + 1}`).toBe(true);
    }
    // Removing the box frees every base, flattened ones included.
    f.ctx.store.remove(box.id);
    collectBases(f.ctx);
    expect(bases()).toEqual([]);
  });
});

describe('cost', () => {
  it('snapshot create and restore take the same time whatever the disk holds (no data is copied)', async () => {
    const { execFileSync } = await import('node:child_process');
    const figures: string[] = [];
    for (const mib of [1, 64, 256]) {
      const box = await makeBox(f);
      const disk = diskOf(f, box.id);
      execFileSync('qemu-img', ['resize', '-q', disk, `${mib + 8}M`]);
      execFileSync('qemu-io', ['-f', 'qcow2', '-c', `write -P 0x33 0 ${mib}M`, disk], { stdio: 'pipe' });
      const t0 = performance.now();
      await handle(box.id).create('s');
      const t1 = performance.now();
      await handle(box.id).restore('s');
      const t2 = performance.now();
      expect(hasPattern(disk, 0x33, (mib - 1) * 1024 * 1024)).toBe(true);
      figures.push(`${mib} MiB written: create ${(t1 - t0).toFixed(0)} ms, restore ${(t2 - t1).toFixed(0)} ms`);
      expect(t1 - t0).toBeLessThan(5000);
    }
    console.log(`[timing] ${figures.join('; ')}`);
  });
});
