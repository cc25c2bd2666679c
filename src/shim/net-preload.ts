// The box's network worker (src/net/worker.ts), started when the shim process starts rather
// than when the box's config has been read and the lock taken: the worker's isolate and module
// graph (~40 ms here) load while the shim does the rest, or while a spare shim
// (src/runtime/faststart.ts) idles. It then waits for its WorkerInit as its first message.
// A box without a network ends it unused.
import { isMainThread, parentPort, Worker } from 'node:worker_threads';
import type { WorkerInit } from '../net/worker.js';
import { NET_WORKER_OPTIONS } from './network.js';

let preloaded: { worker: Worker; dead: boolean } | undefined;

export function preloadNetWorker(): void {
  if (preloaded || process.env.BOXLITE_NET_PRELOAD === '0') return;
  const worker = new Worker(new URL(import.meta.url), NET_WORKER_OPTIONS);
  const slot = { worker, dead: false };
  worker.once('exit', () => (slot.dead = true));
  worker.once('error', () => (slot.dead = true));
  // Unused until taken: it must not keep a shim that is ending alive.
  worker.unref();
  preloaded = slot;
}

/** The preloaded worker, still alive, handed its init; undefined when there is none. */
export function takePreloadedNetWorker(init: WorkerInit): Worker | undefined {
  const slot = preloaded;
  preloaded = undefined;
  if (!slot || slot.dead) return undefined;
  slot.worker.ref();
  slot.worker.postMessage(init);
  return slot.worker;
}

export function discardPreloadedNetWorker(): void {
  void preloaded?.worker.terminate();
  preloaded = undefined;
}

if (!isMainThread && parentPort) {
  const port = parentPort;
  const { runWorker } = await import('../net/worker.js');
  port.once('message', (init: WorkerInit) => runWorker(init));
}
