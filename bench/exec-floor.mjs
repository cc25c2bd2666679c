#!/usr/bin/env node
// Exec round trip vs the in-guest spawn floor, in one run on one warm box (issue 11):
//
//   round trip   SDK exec('true') → wait(), and exec('/bin/true') (no PATH search)
//   floor        inside the same guest, timed by its own clock:
//                  sh loop   busybox sh running /bin/true N times (the figure bench/run.mjs prints),
//                            timed by floor.c's clock less an empty loop, in blocks between the round trips
//                  C loop    fork / vfork / posix_spawn + execve(/bin/true) + waitpid
//                            (bench/floor/floor.c, built static with musl on the host, copied in)
//   link         raw PING/PONG between the shim and the agent
//
// Usage: node bench/exec-floor.mjs [--runs N (round trips, default 100)] [--image busybox]
// Needs `npm run setup` and a built dist/; uses a scratch BOXLITE_HOME.
import { execFileSync } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { ROOT, ensureImage, fmt, loadBoxlite, median, runsArg, scratchHome } from './lib.mjs';

// Fast start's default (auto) makes a template in the background once the first box of a shape
// is up: a second VM booting on the same cores while the round trips are timed. Not here.
process.env.BOXLITE_FAST_START ??= '0';

const RUNS = runsArg(100);
const FLOOR_RUNS = 400;
const BLOCKS = 5;
const p90 = (xs) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length * 0.9)];

const { JsBoxlite } = await loadBoxlite();
// --image DIR: an OCI layout to boot instead of the test image (a private copy, e.g.).
const imageArg = process.argv.indexOf('--image');
const image = imageArg > 0 ? path.resolve(process.argv[imageArg + 1]) : ensureImage('busybox');
const home = scratchHome('exec-floor');
const runtime = new JsBoxlite({ homeDir: home });

const floorBin = path.join(home, 'floor');
execFileSync(fs.existsSync('/usr/bin/musl-gcc') ? 'musl-gcc' : 'gcc', ['-static', '-O2', '-o', floorBin, path.join(ROOT, 'bench', 'floor', 'floor.c')]);

const out = async (ex) => {
  let s = '';
  for await (const chunk of await ex.stdout()) s += chunk;
  const r = await ex.wait();
  if (r.exitCode !== 0) throw new Error(`exit ${r.exitCode}: ${s}`);
  return s;
};

try {
  const box = await runtime.create({ rootfsPath: image, memoryMib: 256 });
  await box.start();
  await box.copyIn(floorBin, '/tmp/floor');
  for (let i = 0; i < 10; i++) await (await box.exec('true')).wait(); // warm caches and translations

  // Blocks of round trips alternate with blocks of the sh-loop floor, so that a change of host
  // load (this host is shared) moves both sides of a block's ratio alike; the ratio printed is
  // the median of the blocks' ratios.
  const rt = { true: [], '/bin/true': [] };
  const ping = [];
  const blocks = [];
  for (let b = 0; b < BLOCKS; b++) {
    const mine = [];
    for (let i = 0; i < Math.ceil(RUNS / BLOCKS); i++) {
      ping.push(await box.pingAgent());
      for (const cmd of Object.keys(rt)) {
        const t0 = performance.now();
        await (await box.exec(cmd)).wait();
        rt[cmd].push(performance.now() - t0);
        if (cmd === 'true') mine.push(performance.now() - t0);
      }
    }
    const floor = Number((await out(await box.exec('/tmp/floor', [String(Math.ceil(FLOOR_RUNS / BLOCKS)), '/bin/true', 'sh']))).split(' ')[1]);
    blocks.push({ floor, ratio: median(mine) / floor });
  }
  const shFloor = median(blocks.map((b) => b.floor));
  const shRatio = median(blocks.map((b) => b.ratio));
  const cLoop = {};
  for (const line of (await out(await box.exec('/tmp/floor', [String(FLOOR_RUNS), '/bin/true']))).trim().split('\n')) {
    const [mode, med] = line.split(' ');
    cLoop[mode] = Number(med);
  }
  await runtime.remove(box.id, true);

  const accel = (await import(path.join(ROOT, 'dist', 'vmm', 'accel.js'))).detectAccelerator();
  const rtTrue = median(rt.true);
  console.log(`accelerator: ${accel.kind}; ${RUNS} round trips each, floors over ${FLOOR_RUNS} spawns`);
  console.log(`round trip exec('true') → wait:      median ${fmt(rtTrue)}  p90 ${fmt(p90(rt.true))}`);
  console.log(`round trip exec('/bin/true') → wait: median ${fmt(median(rt['/bin/true']))}  p90 ${fmt(p90(rt['/bin/true']))}`);
  console.log(`link ping (shim ⇄ agent):            median ${fmt(median(ping))}`);
  console.log(`floor, sh loop of /bin/true:         ${fmt(shFloor)}   ratio ${shRatio.toFixed(2)}x (target ≤ 1.3x; median of ${BLOCKS} blocks: ${blocks.map((b) => b.ratio.toFixed(2)).join(' ')})`);
  for (const [mode, ms] of Object.entries(cLoop)) console.log(`floor, C ${mode.padEnd(11)} + exec + wait: ${fmt(ms)}   ratio ${(rtTrue / ms).toFixed(2)}x`);
} finally {
  await runtime.shutdown();
  fs.rmSync(home, { recursive: true, force: true });
}
