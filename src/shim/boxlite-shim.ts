#!/usr/bin/env node
// boxlite-shim: one process per running box. Started by the SDK with the box
// config as JSON on stdin; answers one readiness line on stdout.
import { mark } from './startup.js';
mark('entry');
import type { ShimConfig } from './config.js';
import { preloadNetWorker } from './net-preload.js';

preloadNetWorker();

// The shim's module graph loads while the SDK is still writing the config: the two overlap.
const loading = import('./shim.js').then((m) => (mark('loaded'), m));
const chunks: Buffer[] = [];
process.stdin.on('data', (c: Buffer) => chunks.push(c));
process.stdin.on('end', () => {
  mark('config');
  // A spare shim (src/runtime/faststart.ts) whose SDK process went away before it got a box.
  if (!chunks.length) process.exit(0);
  const config = JSON.parse(Buffer.concat(chunks).toString('utf8')) as ShimConfig;
  process.title = `boxlite-shim ${config.boxId}`;
  void loading.then(({ runShim }) => runShim(config, process.stdout));
});
