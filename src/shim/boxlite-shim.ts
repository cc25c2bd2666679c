#!/usr/bin/env node
// boxlite-shim: one process per running box. Started by the SDK with the box
// config as JSON on stdin; answers one readiness line on stdout.
import { runShim } from './shim.js';
import type { ShimConfig } from './config.js';

const chunks: Buffer[] = [];
process.stdin.on('data', (c: Buffer) => chunks.push(c));
process.stdin.on('end', () => {
  const config = JSON.parse(Buffer.concat(chunks).toString('utf8')) as ShimConfig;
  process.title = `boxlite-shim ${config.boxId}`;
  void runShim(config, process.stdout);
});
