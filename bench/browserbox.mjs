#!/usr/bin/env node
// BrowserBox benchmark (not a test): start → first page title, against a plain exec on the same
// image in the same run (same machine, same accelerator, same image cache state).
//
//   baseline  new SimpleBox on the browserbox image → first exec('true') done (boot + one exec),
//             then the median warm exec('true') round trip
//   browser   new BrowserBox → playwrightEndpoint() → chromium.connect → newPage → setContent →
//             title(), split into "server ready" (boot + npx run-server answering) and the client part
//
// Usage: node bench/browserbox.mjs   (needs scripts/setup.sh; uses a scratch BOXLITE_HOME)
import { execFileSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
const { JsBoxlite, SimpleBox, BrowserBox } = await import(path.join(ROOT, 'dist', 'index.js'));
const { chromium } = await import('playwright-core');

const image = path.join(ROOT, '.cache', 'images', 'browserbox');
execFileSync(process.execPath, [path.join(ROOT, 'scripts', 'make-test-image.mjs'), image, '--variant', 'browserbox'], { stdio: 'ignore' });

const net = await import('node:net');
/** A host port that was free a moment ago (the reference's 3000/9222 may be taken). */
const port = () =>
  new Promise((resolve) => {
    const srv = net.createServer().listen(0, '127.0.0.1', () => {
      const p = srv.address().port;
      srv.close(() => resolve(p));
    });
  });
const s = (ms) => `${(ms / 1000).toFixed(1)} s`;
const median = (xs) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)];

const home = fs.mkdtempSync(path.join(os.tmpdir(), 'boxlite-bench-browser-'));
const runtime = new JsBoxlite({ homeDir: home });
try {
  // One-time ext4 build of the ~500 MB image, so neither figure below includes it.
  let t = Date.now();
  const warm = new SimpleBox({ runtime, rootfsPath: image });
  await warm.exec('true');
  await warm.stop();
  console.log(`image prepare + first boot (once per home): ${s(Date.now() - t)}`);

  t = Date.now();
  const plain = new SimpleBox({ runtime, rootfsPath: image, memoryMib: 2048, cpus: 2 });
  await plain.exec('true');
  const coldExec = Date.now() - t;
  const warmRuns = [];
  for (let i = 0; i < 5; i++) {
    const t1 = performance.now();
    await plain.exec('true');
    warmRuns.push(performance.now() - t1);
  }
  await plain.stop();

  t = Date.now();
  const box = new BrowserBox({ runtime, rootfsPath: image, port: await port(), cdpPort: await port() });
  const ws = await box.playwrightEndpoint(600);
  const serverReady = Date.now() - t;
  const browser = await chromium.connect(ws, { timeout: 600_000 });
  const page = await browser.newPage();
  await page.setContent('<title>t</title>');
  const title = await page.title();
  const total = Date.now() - t;
  await browser.close();
  await box.stop();
  if (title !== 't') throw new Error(`unexpected title ${title}`);

  console.log(`baseline: boot → first exec('true'):        ${s(coldExec)}   warm exec round trip: ${median(warmRuns).toFixed(0)} ms`);
  console.log(`BrowserBox: start → Playwright server ready: ${s(serverReady)}`);
  console.log(`BrowserBox: start → first page title:        ${s(total)}  (${(total / coldExec).toFixed(1)}× the boot → first exec baseline)`);
} finally {
  await runtime.shutdown?.().catch(() => {});
  fs.rmSync(home, { recursive: true, force: true });
}
