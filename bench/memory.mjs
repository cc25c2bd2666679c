#!/usr/bin/env node
// Host memory per idle box (issue 11): N idle busybox boxes of 256 MiB booted one after another,
// then, after a settle time, per box the RSS and PSS of QEMU and of the shim, and the drop of the
// host's MemAvailable per box (what decides how many boxes fit).
//
// Usage: node bench/memory.mjs [--n 1,10] [--settle S] [--memory MIB]
//                               [--tb-size MIB] [--balloon] [--label TEXT]
//   --tb-size   runs QEMU with -accel tcg,tb-size=MIB (TCG translation cache)
//   --balloon   adds virtio-balloon with free-page-reporting=on (needs virtio_balloon in the guest)
//   --shim-node-options 'FLAGS'   NODE_OPTIONS for the shims only (e.g. V8 heap limits)
// Variants go through a BOXLITE_QEMU wrapper written into the scratch home, so the runtime's
// own QEMU command line stays as it is. Needs `npm run setup` and a built dist/.
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { ensureImage, loadBoxlite, median, scratchHome } from './lib.mjs';

const arg = (name, fallback) => {
  const i = process.argv.indexOf(name);
  return i > 0 ? process.argv[i + 1] : fallback;
};
const NS = arg('--n', '1,10').split(',').map(Number);
const SETTLE_S = Number(arg('--settle', '10'));
const MEMORY = Number(arg('--memory', '256'));
const TB = arg('--tb-size', undefined);
const BALLOON = process.argv.includes('--balloon');
const SHIM_NODE = arg('--shim-node-options', undefined);
const LABEL = arg('--label', [TB ? `tb-size=${TB}` : 'default tb-size', BALLOON ? 'balloon' : '', SHIM_NODE ? `shim NODE_OPTIONS=${SHIM_NODE}` : ''].filter(Boolean).join(', '));

const home = scratchHome('memory');
if (TB || BALLOON) {
  // A wrapper that edits QEMU's argv: -accel tcg → tcg,tb-size=N; the balloon device appended.
  const real = process.env.BOXLITE_QEMU || 'qemu-system-x86_64';
  const wrapper = path.join(home, 'qemu-wrap.sh');
  const lines = [
    '#!/bin/sh',
    'prev=',
    'for a in "$@"; do',
    '  shift',
    `  if [ "$prev" = -accel ] && [ "$a" = tcg ]; then a=${TB ? `tcg,tb-size=${TB}` : 'tcg'}; fi`,
    '  set -- "$@" "$a"',
    '  prev=$a',
    'done',
  ];
  if (BALLOON) lines.push('set -- "$@" -device virtio-balloon-device,free-page-reporting=on');
  lines.push(`exec ${real} "$@"`);
  fs.writeFileSync(wrapper, lines.join('\n') + '\n', { mode: 0o755 });
  process.env.BOXLITE_QEMU = wrapper;
}

// Set after this process started: only the shims it spawns (which inherit the environment) see it.
if (SHIM_NODE) process.env.NODE_OPTIONS = SHIM_NODE;
const { JsBoxlite } = await loadBoxlite();
// --image DIR: an OCI layout to boot instead of the test image (a private copy, e.g.).
const imageArg = process.argv.indexOf('--image');
const image = imageArg > 0 ? path.resolve(process.argv[imageArg + 1]) : ensureImage('busybox');
const runtime = new JsBoxlite({ homeDir: home });

const kib = (pid, file, key) => {
  try {
    const m = fs.readFileSync(`/proc/${pid}/${file}`, 'utf8').match(new RegExp(`^${key}:\\s+(\\d+) kB`, 'm'));
    return m ? Number(m[1]) / 1024 : NaN;
  } catch {
    return NaN;
  }
};
const memAvailable = () => Number(fs.readFileSync('/proc/meminfo', 'utf8').match(/^MemAvailable:\s+(\d+)/m)[1]) / 1024;
// utime + stime in clock ticks (USER_HZ, 100 on Linux).
const cpuTicks = (pid) => {
  const f = fs.readFileSync(`/proc/${pid}/stat`, 'utf8').split(') ')[1].split(' ');
  return Number(f[11]) + Number(f[12]);
};
const pidsOf = (id) => JSON.parse(fs.readFileSync(path.join(home, 'boxes', id, 'shim.json'), 'utf8'));
const f0 = (x) => x.toFixed(0);

try {
  // One warm-up box builds the image's ext4 once, so boxes below only boot.
  const warm = await runtime.create({ rootfsPath: image, memoryMib: MEMORY });
  await (await warm.exec('true')).wait();
  await runtime.remove(warm.id, true);
  await new Promise((r) => setTimeout(r, 2000));

  console.log(`variant: ${LABEL}; ${MEMORY} MiB boxes, busybox, settle ${SETTLE_S} s; host ${f0(os.totalmem() / 2 ** 20)} MiB, ${os.cpus().length} cpus`);
  for (const n of NS) {
    const before = memAvailable();
    const boxes = [];
    const boot = [];
    for (let i = 0; i < n; i++) {
      const box = await runtime.create({ rootfsPath: image, memoryMib: MEMORY });
      const t0 = performance.now();
      await (await box.exec('true')).wait();
      boot.push(performance.now() - t0);
      boxes.push(box);
    }
    await new Promise((r) => setTimeout(r, SETTLE_S * 1000));
    // Idle CPU of the VMs (timer ticks, the agent's poll): what bounds the count besides memory.
    const qemus = boxes.map((b) => pidsOf(b.id).qemuPid);
    const c0 = qemus.map(cpuTicks);
    await new Promise((r) => setTimeout(r, 5000));
    const idleCpu = median(qemus.map((pid, i) => (cpuTicks(pid) - c0[i]) / 5)); // % of one core
    const rows = boxes.map((b) => {
      const { shimPid, qemuPid } = pidsOf(b.id);
      return {
        qemuRss: kib(qemuPid, 'status', 'VmRSS'),
        qemuPss: kib(qemuPid, 'smaps_rollup', 'Pss'),
        shimRss: kib(shimPid, 'status', 'VmRSS'),
        shimPss: kib(shimPid, 'smaps_rollup', 'Pss'),
      };
    });
    const used = (before - memAvailable()) / n;
    const med = (k) => median(rows.map((r) => r[k]));
    // The exec round trip on an idle box of this set: the variant must not slow it down.
    const rt = [];
    for (let i = 0; i < 20; i++) {
      const t0 = performance.now();
      await (await boxes[0].exec('true')).wait();
      rt.push(performance.now() - t0);
    }
    // PSS splits shared pages (QEMU's and Node's code) among the processes that map them: the
    // sum is what one more box costs. MemAvailable moves with everything else on the host too.
    const perBox = med('qemuPss') + med('shimPss');
    console.log(
      `N=${String(n).padStart(2)}: per box QEMU RSS ${f0(med('qemuRss'))} MiB (PSS ${f0(med('qemuPss'))}), shim RSS ${f0(med('shimRss'))} MiB (PSS ${f0(med('shimPss'))});` +
        ` PSS ${f0(perBox)} MiB/box → ${Math.floor(before / perBox)} idle boxes fit in the ${f0(before)} MiB available (MemAvailable drop ${f0(used)} MiB/box)` +
        `; idle CPU ${idleCpu.toFixed(1)}% of a core per box; first exec ${f0(median(boot))} ms, exec round trip ${median(rt).toFixed(1)} ms`,
    );
    for (const b of boxes) await runtime.remove(b.id, true);
    await new Promise((r) => setTimeout(r, 2000));
  }
} finally {
  await runtime.shutdown();
  fs.rmSync(home, { recursive: true, force: true });
}
