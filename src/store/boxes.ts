import fs from 'node:fs';
import path from 'node:path';
import { AlreadyExistsError, StorageError } from '../errors/index.js';
import { isProcessAlive, readJson, writeFileAtomic } from '../util/fs.js';

/** Lifecycle states; the same names appear in info().state.status, the CLI and error messages. */
export type BoxStatus = 'configured' | 'running' | 'stopping' | 'stopped' | 'failed' | 'unknown';

/** Immutable once written (boxes/<id>/config.json). */
export interface BoxRecord<Options = unknown, Image = unknown> {
  id: string;
  name?: string;
  createdAt: string;
  options: Options;
  image: Image;
}

/** Mutable (boxes/<id>/state.json). */
export interface BoxState {
  status: BoxStatus;
  startedAt?: string;
  stoppedAt?: string;
  lastError?: string;
}

export interface LiveShim {
  shimPid: number;
  shimStartTime?: string;
  /** Unknown while the VM is still booting. */
  qemuPid?: number;
  qemuStartTime?: string;
}

/**
 * Box records on disk, one directory per box. Every process that opens the
 * same home sees the same boxes; the live state of a running box is proven by
 * its shim process, not trusted from a file.
 */
export class BoxStore {
  constructor(readonly boxesDir: string) {}

  dir(id: string): string {
    return path.join(this.boxesDir, id);
  }

  create<O, I>(record: BoxRecord<O, I>): void {
    if (record.name && this.list().some((r) => r.name === record.name)) {
      throw new AlreadyExistsError(`a box named ${JSON.stringify(record.name)} already exists`);
    }
    const dir = this.dir(record.id);
    try {
      fs.mkdirSync(dir, { mode: 0o700 });
      fs.mkdirSync(path.join(dir, 'logs'));
      writeFileAtomic(path.join(dir, 'config.json'), JSON.stringify(record, null, 2));
      this.writeState(record.id, { status: 'configured' });
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === 'EEXIST') throw new AlreadyExistsError(`box with ID ${record.id} exists`);
      fs.rmSync(dir, { recursive: true, force: true });
      throw new StorageError(`cannot create box directory ${dir}: ${(err as Error).message}`, { cause: err });
    }
  }

  get<O, I>(id: string): BoxRecord<O, I> | undefined {
    return readJson<BoxRecord<O, I>>(path.join(this.dir(id), 'config.json'));
  }

  list<O, I>(): Array<BoxRecord<O, I>> {
    let ids: string[];
    try {
      ids = fs.readdirSync(this.boxesDir);
    } catch {
      return [];
    }
    return ids
      .sort()
      .map((id) => this.get<O, I>(id))
      .filter((r): r is BoxRecord<O, I> => r !== undefined);
  }

  /** Exact id, exact name, then a unique id prefix of at least 4 characters. */
  find<O, I>(idOrName: string): BoxRecord<O, I> | undefined {
    const all = this.list<O, I>();
    const exact = all.find((r) => r.id === idOrName) ?? all.find((r) => r.name === idOrName);
    if (exact) return exact;
    if (idOrName.length < 4) return undefined;
    const prefixed = all.filter((r) => r.id.startsWith(idOrName.toUpperCase()));
    return prefixed.length === 1 ? prefixed[0] : undefined;
  }

  readState(id: string): BoxState {
    return readJson<BoxState>(path.join(this.dir(id), 'state.json')) ?? { status: 'unknown' };
  }

  writeState(id: string, state: BoxState): void {
    writeFileAtomic(path.join(this.dir(id), 'state.json'), JSON.stringify(state, null, 2));
  }

  /**
   * The shim of a running (or booting) box, if its process is alive: shim.json once the VM
   * is ready, the shim's lock file while it boots.
   */
  liveShim(id: string): LiveShim | undefined {
    const ready = readJson<LiveShim>(path.join(this.dir(id), 'shim.json'));
    if (ready && isProcessAlive(ready.shimPid, ready.shimStartTime)) return ready;
    const lock = readJson<{ pid: number; startTime?: string }>(path.join(this.dir(id), 'shim.lock'));
    if (lock && isProcessAlive(lock.pid, lock.startTime)) return { shimPid: lock.pid, shimStartTime: lock.startTime };
    return undefined;
  }

  /** Stored state reconciled with reality: a box whose shim died is stopped, not running. */
  status(id: string): { state: BoxState; shim?: LiveShim } {
    const state = this.readState(id);
    const shim = this.liveShim(id);
    if (shim) return { state: { ...state, status: state.status === 'stopping' ? 'stopping' : 'running' }, shim };
    if (state.status === 'running' || state.status === 'stopping') {
      const reconciled: BoxState = { ...state, status: 'stopped', stoppedAt: state.stoppedAt ?? new Date().toISOString() };
      try {
        this.writeState(id, reconciled);
      } catch {
        // Another process may have removed the box meanwhile.
      }
      return { state: reconciled };
    }
    return { state };
  }

  remove(id: string): void {
    try {
      fs.rmSync(this.dir(id), { recursive: true, force: true });
    } catch (err) {
      throw new StorageError(`cannot remove box directory ${this.dir(id)}: ${(err as Error).message}`, { cause: err });
    }
  }
}
