import fs from 'node:fs';
import { AlreadyExistsError } from '../errors/index.js';
import { isProcessAlive, processStartTime, readJson } from '../util/fs.js';

/**
 * One VM per box: the shim that creates shim.lock (O_EXCL) owns the box until it exits.
 * A second booter (another process, another handle) fails here and attaches instead.
 * A lock left by a dead shim (pid gone, or reused: start times differ) is taken over.
 */
export class ShimLock {
  private held = false;

  constructor(
    private readonly file: string,
    private readonly boxId: string,
    private readonly log: (line: string) => void,
  ) {}

  get isHeld(): boolean {
    return this.held;
  }

  acquire(): void {
    const mine = JSON.stringify({ pid: process.pid, startTime: processStartTime(process.pid) });
    for (let attempt = 0; attempt < 2; attempt++) {
      try {
        fs.writeFileSync(this.file, mine, { flag: 'wx' });
        this.held = true;
        return;
      } catch (err) {
        if ((err as NodeJS.ErrnoException).code !== 'EEXIST') throw err;
      }
      const owner = readJson<{ pid: number; startTime?: string }>(this.file);
      if (owner && isProcessAlive(owner.pid, owner.startTime)) {
        throw new AlreadyExistsError(`box ${this.boxId} is already running or starting (shim pid ${owner.pid})`);
      }
      this.log(`taking over the stale lock of shim pid ${owner?.pid}`);
      fs.rmSync(this.file, { force: true });
    }
    throw new AlreadyExistsError(`box ${this.boxId} is being started by another process`);
  }
}
