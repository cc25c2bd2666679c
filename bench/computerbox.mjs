#!/usr/bin/env node
// ComputerBox benchmark (not a test): figures against a baseline measured in the same run, on the
// same image (.cache/images/desktop, the webtop stand-in whose entrypoint starts Xvfb + a window):
//
//   boot → ready   new ComputerBox → waitUntilReady() resolved  vs  new SimpleBox → exec('true') resolved
//   screenshot     screenshot() on a ready desktop               vs  exec('true') on the same box
//   mouseMove      mouseMove(x, y) (one xdotool run)             vs  the same baseline
//
// waitUntilReady polls every 2 s (the reference's DESKTOP_READY_RETRY_DELAY), so its figure is
// quantised by that; screenshot() is python3 + PIL's ImageGrab + PNG + base64 in the guest.
//
// Usage: node bench/computerbox.mjs [--runs N]   (needs scripts/setup.sh; uses a scratch BOXLITE_HOME)
import fs from 'node:fs';
import path from 'node:path';
import { ROOT, ensureImage, fmt, loadBoxlite, median, runsArg, scratchHome, time } from './lib.mjs';

const { JsBoxlite, SimpleBox, ComputerBox } = await loadBoxlite();
const RUNS = runsArg(3);
const WARM_RUNS = 10;
const image = ensureImage('desktop');

const home = scratchHome('computerbox');
const runtime = new JsBoxlite({ homeDir: home });
const opts = { runtime, rootfsPath: image, guiHttpPort: 0, guiHttpsPort: 0 };
try {
  // The first box of an image builds its ext4 root once: keep that out of the cold figures.
  const prep = new SimpleBox({ runtime, rootfsPath: image });
  await prep.exec('true');
  await prep.stop();

  const coldReady = [];
  const coldExec = [];
  for (let i = 0; i < RUNS; i++) {
    const plain = new SimpleBox({ runtime, rootfsPath: image });
    coldExec.push(await time(() => plain.exec('true')));
    await plain.stop();
    const desktop = new ComputerBox(opts);
    coldReady.push(await time(() => desktop.waitUntilReady(300)));
    await desktop.stop();
  }

  const box = new ComputerBox(opts);
  await box.waitUntilReady(300);
  await box.screenshot(); // warm the guest page cache (python, PIL)
  const shot = [];
  const move = [];
  const warmExec = [];
  for (let i = 0; i < WARM_RUNS; i++) {
    warmExec.push(await time(() => box.exec('true')));
    move.push(await time(() => box.mouseMove(10 + i, 20 + i)));
    shot.push(await time(() => box.screenshot()));
  }
  await box.stop();

  const accel = (await import(path.join(ROOT, 'dist', 'vmm', 'accel.js'))).detectAccelerator();
  console.log(`accelerator: ${accel.kind} (${accel.reason})`);
  console.log(`ComputerBox boot → waitUntilReady() (create → ready), median of ${RUNS}: ${fmt(median(coldReady))}`);
  console.log(`  baseline SimpleBox cold exec('true') on the same image, median of ${RUNS}: ${fmt(median(coldExec))}`);
  console.log(`  ratio: ${(median(coldReady) / median(coldExec)).toFixed(2)}x`);
  console.log(`ComputerBox screenshot() (1024x768 PNG, base64), median of ${WARM_RUNS}: ${fmt(median(shot))}`);
  console.log(`ComputerBox mouseMove(), median of ${WARM_RUNS}: ${fmt(median(move))}`);
  console.log(`  baseline warm exec('true') on the same box, median of ${WARM_RUNS}: ${fmt(median(warmExec))}`);
  console.log(`  ratios: screenshot ${(median(shot) / median(warmExec)).toFixed(2)}x, mouseMove ${(median(move) / median(warmExec)).toFixed(2)}x`);
} finally {
  await runtime.shutdown();
  fs.rmSync(home, { recursive: true, force: true });
}
