#!/usr/bin/env node
// Fast start (docs/fast-start.md), ratios measured in one run on this machine:
//
//   template start  create → first byte of `echo` output, restored from a template (BOXLITE_FAST_START=1)
//   cold start      the same with a full guest boot
//   bare boot       QEMU boot of the same kernel+initramfs (+ root disk) to the agent's first byte
//   restore         QEMU spawn → agent HELLO of a restored box (shim.json bootMs), vs the cold one's
//   no spare        template start with BOXLITE_SPARE_SHIM=0 (a shim process spawned for the box)
//   breakdown       where a template start's time goes: the SDK's clock against the shim's start-up
//                   marks (shim.json timings) and the guest agent's console lines after RESUME
//
// Usage: node bench/faststart.mjs [--runs N]   (needs the guest runtime and .cache/images/busybox)
import fs from 'node:fs';
import path from 'node:path';
import { bareBoot } from './bare-boot.mjs';
import { ROOT, fmt, loadBoxlite, median, runsArg, scratchHome } from './lib.mjs';

const RUNS = runsArg(5);
const { JsBoxlite } = await loadBoxlite();
const { locateGuestAssets } = await import(path.join(ROOT, 'dist', 'vmm', 'assets.js'));
const image = path.join(ROOT, '.cache', 'images', 'busybox');
const home = scratchHome('faststart');
const runtime = new JsBoxlite({ homeDir: home });

/** Guest-clock ms between the agent's console lines after the host's HELLO of the restore. */
function guestSteps(consoleLog) {
  const lines = consoleLog.split(/\r?\n/).map((l) => /^\[\s*(\d+\.\d+)\] boxlite-guest: (.*)$/.exec(l)).filter(Boolean);
  const at = (re) => lines.findLast((m) => re.test(m[2]));
  const hello = at(/^host hello/);
  const reset = at(/^RESUME: clock, entropy/);
  const mounted = at(/^root disk .* mounted/);
  const ready = at(/^container ready/);
  if (hello && ready && !mounted && reset) {
    // A mounted template: no mount after RESUME.
    return { reset: (reset[1] - hello[1]) * 1000, mount: 0, container: (ready[1] - reset[1]) * 1000 };
  }
  if (!hello || !mounted || !ready) return undefined;
  return {
    reset: reset ? (reset[1] - hello[1]) * 1000 : undefined,
    mount: (mounted[1] - (reset ?? hello)[1]) * 1000,
    container: (ready[1] - mounted[1]) * 1000,
  };
}

/** create → first stdout byte of `echo ready`; also the shim's spawn → HELLO and whether it restored. */
async function startOnce(fast, { spare = true, mounted = false } = {}) {
  process.env.BOXLITE_FAST_START_MOUNTED = mounted ? '1' : '0';
  if (fast) process.env.BOXLITE_FAST_START = '1';
  else process.env.BOXLITE_FAST_START = '0';
  if (spare) delete process.env.BOXLITE_SPARE_SHIM;
  else process.env.BOXLITE_SPARE_SHIM = '0';
  const t0 = performance.timeOrigin + performance.now();
  const box = await runtime.create({ rootfsPath: image });
  const t1 = performance.timeOrigin + performance.now();
  await box.start();
  const tStarted = performance.timeOrigin + performance.now();
  const ex = await box.exec('echo', ['ready']);
  await (await ex.stdout()).next();
  const t2 = performance.timeOrigin + performance.now();
  const ms = t2 - t0;
  await ex.wait();
  // The same exec again on the now ready box: what an exec itself costs.
  const t3 = performance.now();
  const again = await box.exec('echo', ['again']);
  await (await again.stdout()).next();
  const execMs = performance.now() - t3;
  await again.wait();
  const dir = path.join(home, 'boxes', box.id);
  const shim = JSON.parse(fs.readFileSync(path.join(dir, 'shim.json'), 'utf8'));
  const guest = guestSteps(fs.readFileSync(path.join(dir, 'logs', 'console.log'), 'utf8'));
  await runtime.remove(box.id, true);
  if (Boolean(shim.template) !== fast) throw new Error(`box ${fast ? 'was not restored' : 'was restored'} (shim.json template=${shim.template})`);
  const usedMounted = Boolean(shim.template && JSON.parse(fs.readFileSync(path.join(home, 'templates', shim.template, 'manifest.json'), 'utf8')).inputs.mounted);
  if (usedMounted !== mounted) throw new Error(`box ${mounted ? 'did not get' : 'got'} the mounted template (${shim.template})`);
  const m = shim.timings?.marks ?? {};
  const at = (k) => shim.timings.origin + m[k];
  const parts = shim.timings && {
    create: t1 - t0,
    // withFastStart (template checks) and the spawn of the shim, or the hand-over to the spare
    toShim: at('config') - t1,
    shimSetup: at('listening') - at('config'),
    netWorker: m.net !== undefined ? at('net') - at('listening') : 0,
    qemuSpawn: at('spawned') - (m.net !== undefined ? at('net') : at('listening')),
    restore: at('hello') - at('spawned'),
    helloToReady: at('ready') - at('hello'),
    readyToStarted: tStarted - at('ready'),
    startedToOutput: t2 - tStarted,
    execOnReadyBox: execMs,
    guestReset: guest?.reset,
    guestMount: guest?.mount,
    guestContainer: guest?.container,
  };
  return { ms, bootMs: shim.bootMs, spareUsed: shim.timings ? shim.timings.origin < t1 : false, parts };
}

try {
  const assets = await locateGuestAssets();
  const warm = await runtime.create({ rootfsPath: image });
  const rootDiskPath = warm.config.image.rootfsBase;
  await runtime.remove(warm.id);

  // First fast start of the shape: builds the template (cold boot + save), then restores it.
  const first = await startOnce(true);
  const manifestDir = fs.readdirSync(path.join(home, 'templates')).find((d) => /^[0-9a-f]{32}$/.test(d));
  // The mounted variant (BOXLITE_FAST_START_MOUNTED=1, a never-booted disk): built by its first box.
  const firstMounted = await startOnce(true, { mounted: true });
  const manifest = JSON.parse(fs.readFileSync(path.join(home, 'templates', manifestDir, 'manifest.json'), 'utf8'));

  const bare = [];
  const cold = [];
  const fast = [];
  const noSpare = [];
  const mounted = [];
  for (let i = 0; i < RUNS; i++) {
    bare.push(await bareBoot({ kernelPath: assets.kernelPath, initrdPath: assets.initrdPath, rootDiskPath }));
    cold.push(await startOnce(false));
    noSpare.push(await startOnce(true, { spare: false }));
    // The spare the previous template start left (it waits out bare, cold and no-spare runs).
    fast.push(await startOnce(true));
    // The spare the template start's box left: ready before the mounted start takes it.
    await new Promise((r) => setTimeout(r, 1500));
    mounted.push(await startOnce(true, { mounted: true }));
  }
  const b = median(bare);
  const c = median(cold.map((r) => r.ms));
  const f = median(fast.map((r) => r.ms));
  const cr = median(cold.map((r) => r.bootMs));
  const fr = median(fast.map((r) => r.bootMs));
  console.log(`runs: ${RUNS} (medians)`);
  console.log(`bare boot (spawn → agent's first byte):       ${fmt(b)}`);
  console.log(`cold start (create → first output):           ${fmt(c)}   ${(c / b).toFixed(2)}× bare`);
  console.log(`template start (create → first output):       ${fmt(f)}   ${(f / b).toFixed(2)}× bare, ${(f / c).toFixed(2)}× cold`);
  const ns = median(noSpare.map((r) => r.ms));
  console.log(`  same, no spare shim (BOXLITE_SPARE_SHIM=0):  ${fmt(ns)}   ${(ns / b).toFixed(2)}× bare (spare used in ${fast.filter((r) => r.spareUsed).length}/${RUNS}, mounted ${mounted.filter((r) => r.spareUsed).length}/${RUNS})`);
  const mt = median(mounted.map((r) => r.ms));
  console.log(`mounted template start (never-booted disk):    ${fmt(mt)}   ${(mt / b).toFixed(2)}× bare (first, with its build: ${fmt(firstMounted.ms)})`);
  console.log(`  QEMU spawn → HELLO: cold ${fmt(cr)}, restored ${fmt(fr)} (${(fr / cr).toFixed(2)}×)`);
  const part = (runs, k) => median(runs.map((r) => r.parts?.[k]).filter((v) => v !== undefined));
  const labels = {
    create: 'create() (image check, disk overlay)',
    toShim: 'template check + shim spawn/hand-over → config read',
    shimSetup: 'shim: rest of its modules (fresh), lock, socket',
    netWorker: 'shim: network worker start',
    qemuSpawn: 'shim: QEMU command + spawn',
    restore: 'QEMU restore: spawn → agent HELLO',
    helloToReady: 'RESUME, main process, ready line',
    readyToStarted: 'SDK: ready line read, control socket connected',
    startedToOutput: 'start() → first output (guest work, exec)',
    execOnReadyBox: '  (an exec on the ready box, for comparison)',
    guestReset: '  of which guest: HELLO → clock, RNG, disk cache reset',
    guestMount: '  of which guest: → root mounted',
    guestContainer: '  of which guest: mounted → container ready',
  };
  console.log(`  per run (ms): template ${fast.map((r) => r.ms.toFixed(0)).join(' ')}; no spare ${noSpare.map((r) => r.ms.toFixed(0)).join(' ')}; mounted ${mounted.map((r) => r.ms.toFixed(0)).join(' ')}`);
  console.log('breakdown of a template start, medians (with spare | without | mounted):');
  for (const [k, label] of Object.entries(labels)) console.log(`  ${label.padEnd(52)} ${fmt(part(fast, k)).padStart(7)} | ${fmt(part(noSpare, k)).padStart(7)} | ${fmt(part(mounted, k)).padStart(7)}`);
  console.log(`template: build+first start ${fmt(first.ms)} (boot ${manifest.bootMs} ms, save ${manifest.saveMs} ms, ${(manifest.state.size / 2 ** 20).toFixed(1)} MiB state)`);
  console.log(`target: template start ≤ 0.15× bare boot → ${f / b <= 0.15 ? 'met' : 'not met'}; mounted ${mt / b <= 0.15 ? 'met' : 'not met'}`);
} finally {
  await runtime.shutdown();
  fs.rmSync(home, { recursive: true, force: true });
}
