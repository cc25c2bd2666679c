#!/usr/bin/env node
// Benchmarks (not tests): each figure is printed as a ratio against a baseline
// measured in the same run on the same machine, never as an absolute promise.
//
//   cold start      create → first byte of `echo` output   vs  bare QEMU boot of the same
//                                                               kernel+initramfs to the agent's first byte
//   exec round trip exec('true') → wait() on a warm box      vs  raw PING/PONG on the agent link
//
// Usage: npm run bench [-- --runs N]   (needs `npm run setup`; uses a scratch BOXLITE_HOME)
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { bareBoot } from './bare-boot.mjs';

const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
const { JsBoxlite } = await import(path.join(ROOT, 'dist', 'index.js'));
const { locateGuestAssets } = await import(path.join(ROOT, 'dist', 'vmm', 'assets.js'));

const runsArg = process.argv.indexOf('--runs');
const RUNS = runsArg > 0 ? Number(process.argv[runsArg + 1]) : 5;
const EXEC_RUNS = 50;
const image = path.join(ROOT, '.cache', 'images', 'busybox');

const median = (xs) => {
  const s = [...xs].sort((a, b) => a - b);
  return s.length % 2 ? s[(s.length - 1) / 2] : (s[s.length / 2 - 1] + s[s.length / 2]) / 2;
};
const fmt = (ms) => `${ms.toFixed(ms < 10 ? 2 : 0)} ms`;

const home = fs.mkdtempSync(path.join(os.tmpdir(), 'boxlite-bench-'));
const runtime = new JsBoxlite({ homeDir: home });

try {
  // The same kernel and initramfs the boxes boot: the shipped guest runtime.
  const assets = await locateGuestAssets();
  // Warm the image cache so cold start measures the box, not the one-time ext4 build.
  const warm = await runtime.create({ rootfsPath: image });
  // The agent mounts its root disk before it says HELLO, so the baseline gets the same disk
  // (opened snapshot=on: nothing is written to the shared base).
  const rootDiskPath = warm.config.image.rootfsBase;
  await runtime.remove(warm.id);

  const bare = [];
  const cold = [];
  for (let i = 0; i < RUNS; i++) {
    bare.push(await bareBoot({ kernelPath: assets.kernelPath, initrdPath: assets.initrdPath, rootDiskPath }));
    const t0 = performance.now();
    const box = await runtime.create({ rootfsPath: image });
    const ex = await box.exec('echo', ['ready']);
    await (await ex.stdout()).next();
    cold.push(performance.now() - t0);
    await ex.wait();
    await runtime.remove(box.id, true);
  }

  const box = await runtime.create({ rootfsPath: image });
  await box.start();
  for (let i = 0; i < 5; i++) await (await box.exec('true')).wait(); // warm the guest page cache
  const ping = [];
  const execs = [];
  for (let i = 0; i < EXEC_RUNS; i++) {
    ping.push(await box.pingAgent());
    const t0 = performance.now();
    await (await box.exec('true')).wait();
    execs.push(performance.now() - t0);
  }
  // Context: what starting any process costs inside this guest (fork+exec+wait of /bin/true,
  // timed by the guest itself); no exec protocol can be cheaper than this.
  const loop = await box.exec('sh', ['-c', 'a=$(cut -d" " -f1 /proc/uptime); i=0; while [ $i -lt 200 ]; do /bin/true; i=$((i+1)); done; b=$(cut -d" " -f1 /proc/uptime); echo "$a $b"']);
  const [a, b] = (await (await loop.stdout()).next()).trim().split(' ').map(Number);
  await loop.wait();
  const floor = ((b - a) * 1000) / 200;
  await runtime.remove(box.id, true);

  const accel = (await import(path.join(ROOT, 'dist', 'vmm', 'accel.js'))).detectAccelerator();
  console.log(`accelerator: ${accel.kind} (${accel.reason})`);
  console.log(`cold start (create → first output), median of ${RUNS}: ${fmt(median(cold))}`);
  console.log(`  baseline bare QEMU boot to agent byte, median of ${RUNS}: ${fmt(median(bare))}`);
  console.log(`  ratio: ${(median(cold) / median(bare)).toFixed(2)}x   (target ≤ 1.25x)`);
  console.log(`exec round trip (exec true → wait), median of ${EXEC_RUNS}: ${fmt(median(execs))}`);
  console.log(`  baseline raw agent ping, median of ${EXEC_RUNS}: ${fmt(median(ping))}`);
  console.log(`  ratio: ${(median(execs) / median(ping)).toFixed(2)}x   (target ≤ 2x)`);
  console.log(`  context: fork+exec+wait of /bin/true inside the guest: ${fmt(floor)} (${(median(execs) / floor).toFixed(2)}x of it)`);
} finally {
  await runtime.shutdown();
  fs.rmSync(home, { recursive: true, force: true });
}
