#!/usr/bin/env node
// CodeBox benchmark (not a test): figures as ratios against a baseline measured in the same run,
// on the same image (.cache/images/codebox, the python:slim stand-in):
//
//   cold run    new CodeBox → run('print(1)') resolved        vs  new SimpleBox → exec('true') resolved
//   warm run    run('print(1)') on a running box               vs  exec('true') on the same box
//
// The difference is Python's own start-up (interpreter + site, from the precompiled .pyc files).
//
// Usage: node bench/codebox.mjs [--runs N]   (needs scripts/setup.sh; uses a scratch BOXLITE_HOME)
import fs from 'node:fs';
import path from 'node:path';
import { ROOT, ensureImage, fmt, loadBoxlite, median, runsArg, scratchHome, time } from './lib.mjs';

const { JsBoxlite, SimpleBox, CodeBox } = await loadBoxlite();
const RUNS = runsArg(3);
const WARM_RUNS = 20;
const image = ensureImage('codebox');

const home = scratchHome('codebox');
const runtime = new JsBoxlite({ homeDir: home });
try {
  // The first box of an image builds its ext4 root once: keep that out of the cold figures.
  const prep = new SimpleBox({ runtime, rootfsPath: image });
  await prep.exec('true');
  await prep.stop();

  const coldRun = [];
  const coldExec = [];
  for (let i = 0; i < RUNS; i++) {
    const plain = new SimpleBox({ runtime, rootfsPath: image });
    coldExec.push(await time(() => plain.exec('true')));
    await plain.stop();
    const code = new CodeBox({ runtime, rootfsPath: image });
    coldRun.push(
      await time(async () => {
        if ((await code.run('print(1)')) !== '1\n') throw new Error('unexpected run() output');
      }),
    );
    await code.stop();
  }

  const box = new CodeBox({ runtime, rootfsPath: image });
  await box.run('print(1)'); // boot, and warm the guest page cache
  await box.exec('true');
  const warmRun = [];
  const warmExec = [];
  for (let i = 0; i < WARM_RUNS; i++) {
    warmExec.push(await time(() => box.exec('true')));
    warmRun.push(await time(() => box.run('print(1)')));
  }
  await box.stop();

  const accel = (await import(path.join(ROOT, 'dist', 'vmm', 'accel.js'))).detectAccelerator();
  console.log(`accelerator: ${accel.kind} (${accel.reason})`);
  console.log(`CodeBox cold run('print(1)') (create → result), median of ${RUNS}: ${fmt(median(coldRun))}`);
  console.log(`  baseline SimpleBox cold exec('true') on the same image, median of ${RUNS}: ${fmt(median(coldExec))}`);
  console.log(`  ratio: ${(median(coldRun) / median(coldExec)).toFixed(2)}x`);
  console.log(`CodeBox warm run('print(1)') round trip, median of ${WARM_RUNS}: ${fmt(median(warmRun))}`);
  console.log(`  baseline warm exec('true') on the same box, median of ${WARM_RUNS}: ${fmt(median(warmExec))}`);
  console.log(`  ratio: ${(median(warmRun) / median(warmExec)).toFixed(2)}x`);
} finally {
  await runtime.shutdown();
  fs.rmSync(home, { recursive: true, force: true });
}
