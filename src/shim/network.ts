// The shim side of the box's network worker (src/net/worker.ts): starts it before QEMU (QEMU
// connects to the NIC socket it listens on), waits for it to be ready, reads its counters
// (a SharedArrayBuffer it writes with Atomics), knows the ports it bound and the box CA, and
// turns its death into one clear NetworkError for the shim to end the box with.
import { Worker } from 'node:worker_threads';
import { NetworkError } from '../errors/index.js';
import { COUNTER, COUNTER_SLOTS, type NetConfig } from '../net/types.js';
import type { ParentMessage, WorkerInit, WorkerMessage } from '../net/worker.js';
import type { PublishedPort } from './ports.js';

const WORKER_URL = new URL('../net/worker.js', import.meta.url);
/** Binding ports and listening takes milliseconds; this bounds a worker that hangs while loading. */
const READY_TIMEOUT_MS = 15_000;
/**
 * The worker's heap cap. Every buffer of the stack is bounded per flow and flows are capped,
 * so a healthy box stays far below; beyond it the worker dies (ERR_WORKER_OUT_OF_MEMORY) and
 * the box ends with a network error rather than the host swapping.
 */
const WORKER_HEAP_MB = 512;
/** How the worker is made, here and when preloaded (src/shim/net-preload.ts). */
export const NET_WORKER_OPTIONS = {
  resourceLimits: { maxOldGenerationSizeMb: WORKER_HEAP_MB, maxYoungGenerationSizeMb: 8 },
  // Its own stdio would interleave with the shim's ready line on stdout.
  stdout: true,
  stderr: true,
} as const;

export type NetCounters = { -readonly [K in keyof typeof COUNTER]: number };

export class NetworkSupervisor {
  private worker?: Worker;
  private exited: Promise<void> = Promise.resolve();
  private readonly sab = new SharedArrayBuffer(COUNTER_SLOTS * 8);
  private readonly view = new BigInt64Array(this.sab);
  private stopping = false;
  private failed = false;
  private nextSnapshot = 1;
  private readonly snapshots = new Map<number, (data: unknown) => void>();
  /** Host ports the worker bound (hostPort 0 resolved). */
  ports: PublishedPort[] = [];
  /** The box CA's certificate when the box has secrets (part C hands it to the agent). */
  caPem?: string;

  constructor(
    private readonly config: NetConfig,
    private readonly log: (line: string) => void,
    /** Called once when the worker dies or reports a fatal error while the box runs. */
    private readonly onFatal: (err: NetworkError) => void,
    /** A worker already loaded that takes its init as a message (src/shim/net-preload.ts). */
    private readonly preloaded?: (init: WorkerInit) => Worker | undefined,
  ) {}

  /** Starts the worker; resolves once it listens on the NIC socket and bound every port. */
  start(timeoutMs = READY_TIMEOUT_MS): Promise<void> {
    const init: WorkerInit = { kind: 'boxlite-net', config: this.config, counters: this.sab };
    const worker = this.preloaded?.(init) ?? new Worker(WORKER_URL, { ...NET_WORKER_OPTIONS, workerData: init });
    this.worker = worker;
    this.exited = new Promise((r) => worker.once('exit', () => r()));
    worker.stdout.on('data', (c: Buffer) => this.log(`net: ${c.toString('utf8').trimEnd()}`));
    worker.stderr.on('data', (c: Buffer) => this.log(`net: ${c.toString('utf8').trimEnd()}`));
    return new Promise<void>((resolve, reject) => {
      let ready = false;
      const timer = setTimeout(() => {
        if (ready) return;
        this.failed = true;
        void worker.terminate();
        reject(new NetworkError(`the network worker did not start within ${timeoutMs} ms`));
      }, timeoutMs);
      const fail = (message: string) => {
        if (this.failed || this.stopping) return;
        this.failed = true;
        clearTimeout(timer);
        const err = new NetworkError(message);
        this.log(`network failed: ${message}`);
        if (!ready) reject(err);
        else this.onFatal(err);
      };
      worker.on('message', (m: WorkerMessage) => {
        switch (m.type) {
          case 'log':
            this.log(`net: ${m.line}`);
            break;
          case 'ready':
            ready = true;
            clearTimeout(timer);
            this.ports = m.ports.map((p) => ({ ...p }));
            if (m.caPem) this.caPem = m.caPem;
            resolve();
            break;
          case 'fatal':
            fail(m.message);
            break;
          case 'snapshot':
            this.snapshots.get(m.id)?.(m.data);
            this.snapshots.delete(m.id);
            break;
        }
      });
      worker.on('error', (err) => fail(`the box's network stack crashed: ${err.message}`));
      worker.on('exit', (code) => {
        for (const done of this.snapshots.values()) done(undefined);
        this.snapshots.clear();
        fail(`the box's network stack exited (code ${code})`);
      });
    });
  }

  /** The counters now (plain numbers: they stay far below 2^53). */
  counters(): NetCounters {
    const out = {} as NetCounters;
    for (const [name, slot] of Object.entries(COUNTER) as Array<[keyof typeof COUNTER, number]>) {
      out[name] = Number(Atomics.load(this.view, slot));
    }
    return out;
  }

  /** Live flow figures and the dispatcher's state (blocked by reason, DNS, pins), for inspect. */
  snapshot(timeoutMs = 2000): Promise<unknown> {
    const worker = this.worker;
    if (!worker || this.failed || this.stopping) return Promise.resolve(undefined);
    const id = this.nextSnapshot++;
    return new Promise((resolve) => {
      const timer = setTimeout(() => {
        this.snapshots.delete(id);
        resolve(undefined);
      }, timeoutMs);
      this.snapshots.set(id, (data) => {
        clearTimeout(timer);
        resolve(data);
      });
      worker.postMessage({ type: 'snapshot', id } satisfies ParentMessage);
    });
  }

  /** Closes every socket of the box's network and ends the thread (bounded). */
  async stop(): Promise<void> {
    if (this.stopping) return;
    this.stopping = true;
    const worker = this.worker;
    if (!worker) return;
    this.log(`network counters at stop: ${JSON.stringify(this.counters())}`);
    worker.postMessage({ type: 'stop' } satisfies ParentMessage);
    const timer = setTimeout(() => void worker.terminate(), 1000);
    await this.exited;
    clearTimeout(timer);
  }
}
