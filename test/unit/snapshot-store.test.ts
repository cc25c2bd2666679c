// db/disks.db alone: reference counts as rows, pending rows, and collection that frees a base
// only when nothing (snapshot, box disk, child base) points at it.
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { DiskStore } from '../../src/store/disks.js';

let dir: string;
let db: DiskStore;
let live: Set<string>;
beforeEach(() => {
  dir = fs.mkdtempSync(path.join(os.tmpdir(), 'bl-disks-'));
  db = new DiskStore(dir);
  live = new Set(['A', 'B']);
});
afterEach(() => {
  db.close();
  fs.rmSync(dir, { recursive: true, force: true });
});

const ready = (id: string, owner: string, parent: string | null = null, snap?: string) => {
  db.beginBase({ id, parent, owner, createdAt: 1 }, snap ? { id: `S-${id}`, name: snap, createdAt: 1, containerDiskBytes: 10 } : undefined);
  db.commitBase(id, 100);
};

describe('DiskStore', () => {
  it('counts references from snapshots, box disks and child bases', () => {
    ready('b1', 'A', null, 's1');
    expect(db.references('b1')).toBe(2); // its snapshot and A's disk
    ready('b2', 'A', 'b1', 's2'); // A's disk moves to b2, which sits on b1
    expect(db.refsOf('A')).toEqual(['b2']);
    expect(db.references('b1')).toBe(2); // snapshot s1 and child b2
    expect(db.addRef('B', 'b1')).toBe(true); // a clone on b1
    expect(db.references('b1')).toBe(3);
    expect(db.addRef('B', 'missing')).toBe(false);
  });

  it('collects nothing that is used, then frees parents once their children go', () => {
    ready('b1', 'A', null, 's1');
    ready('b2', 'A', 'b1', 's2');
    expect(db.collect(() => live)).toEqual([]);
    expect(db.removeSnapshot('A', 's1')).toBe(true);
    expect(db.removeSnapshot('A', 's1')).toBe(false);
    expect(db.collect(() => live)).toEqual([]); // b1 is b2's parent
    live.delete('A'); // box A removed: its snapshots and disk references die with it
    expect(db.collect(() => live).sort()).toEqual(['b1', 'b2']);
    expect(db.allBases()).toEqual([]);
  });

  it('keeps a base a clone uses after its source box and snapshot are gone', () => {
    ready('b1', 'A', null, 's1');
    db.addRef('B', 'b1');
    live.delete('A');
    expect(db.collect(() => live)).toEqual([]);
    expect(db.listSnapshots('A')).toEqual([]);
    expect(db.references('b1')).toBe(1);
    live.delete('B');
    expect(db.collect(() => live)).toEqual(['b1']);
  });

  it('hides pending snapshots, reserves their name, and drops them on abort', () => {
    db.beginBase({ id: 'p', parent: null, owner: 'A', createdAt: 1 }, { id: 'S', name: 'n', createdAt: 1, containerDiskBytes: 1 });
    expect(db.listSnapshots('A')).toEqual([]);
    expect(db.getSnapshot('A', 'n')).toBeUndefined();
    expect(db.pendingOf('A').map((b) => b.id)).toEqual(['p']);
    expect(() => db.beginBase({ id: 'q', parent: null, owner: 'A', createdAt: 1 }, { id: 'S2', name: 'n', createdAt: 1, containerDiskBytes: 1 })).toThrowError(
      expect.objectContaining({ code: 'AlreadyExists' }),
    );
    expect(db.collect(() => live)).toEqual([]); // pending rows of a live box are never collected
    db.abortBase('p');
    expect(db.pendingOf('A')).toEqual([]);
    expect(db.base('q')).toBeUndefined();
  });

  it('addRef is idempotent and keepOnlyRef keeps only the named base', () => {
    ready('b1', 'A', null, 's1');
    ready('b2', 'B', null, 's2');
    expect(() => db.abortBase('nothing')).not.toThrow();
    expect(db.addRef('A', 'b1')).toBe(true);
    expect(db.refsOf('A')).toEqual(['b1']);
    // A restore cut short: A holds its old base and the snapshot's until the rename is done.
    expect(db.addRef('A', 'b2')).toBe(true);
    expect(db.refsOf('A')).toEqual(['b1', 'b2']);
    db.keepOnlyRef('A', 'b2');
    expect(db.refsOf('A')).toEqual(['b2']);
    expect(db.references('b1')).toBe(1); // its snapshot only
  });
});
