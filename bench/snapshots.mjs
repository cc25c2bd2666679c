#!/usr/bin/env node
// Snapshot create/restore time against the data on the disk (issue 11), in one run:
//
//   For each size S (MiB of random data written into a box, then the box stopped):
//     copy        baseline: `cp --sparse=always` of the box's disk.qcow2 (what a copying
//                 snapshot would cost at least)
//     create      box.snapshot.create() on the stopped box
//     restore     box.snapshot.restore() on the stopped box
//     clone       box.cloneBox() of the stopped box
//   and, once, on a running box: live snapshot.create() and cloneBox() (QMP switch, no copy).
//
// Snapshots share the disk by hard link, so create should not grow with S while the copy does.
// Usage: node bench/snapshots.mjs [--sizes 0,64,256] [--runs N (default 3)]
// Needs `npm run setup` and a built dist/; uses a scratch BOXLITE_HOME.
import { execFileSync } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { ensureImage, fmt, loadBoxlite, median, runsArg, scratchHome, time } from './lib.mjs';

const sizesArg = process.argv.indexOf('--sizes');
const SIZES = (sizesArg > 0 ? process.argv[sizesArg + 1] : '0,64,256').split(',').map(Number);
const RUNS = runsArg(3);

const { JsBoxlite } = await loadBoxlite();
const image = ensureImage('busybox');
const home = scratchHome('snapshots');
const runtime = new JsBoxlite({ homeDir: home });

const run = async (box, cmd) => {
  const ex = await box.exec('sh', ['-c', cmd]);
  const r = await ex.wait();
  if (r.exitCode !== 0) throw new Error(`${cmd}: exit ${r.exitCode}`);
};

const rows = [];
try {
  for (const mib of SIZES) {
    const box = await runtime.create({ rootfsPath: image, memoryMib: 256, diskSizeGb: 2 });
    await box.start();
    if (mib > 0) await run(box, `dd if=/dev/urandom of=/data.bin bs=1M count=${mib} 2>/dev/null && sync`);
    const id = box.id;
    await box.stop();
    const handle = await runtime.get(id);
    const disk = path.join(home, 'boxes', id, 'disk.qcow2');
    const copy = [], create = [], restore = [], clone = [];
    // The baseline first: after the first snapshot the box's own file is an empty overlay.
    const diskMib = fs.statSync(disk).blocks * 512 / 2 ** 20;
    for (let i = 0; i < RUNS; i++) {
      const dest = path.join(home, `copy-${i}.qcow2`);
      copy.push(await time(async () => execFileSync('cp', ['--sparse=always', disk, dest])));
      fs.rmSync(dest);
    }
    for (let i = 0; i < RUNS; i++) {
      create.push(await time(() => handle.snapshot.create(`s${i}`)));
      restore.push(await time(() => handle.snapshot.restore(`s${i}`)));
      let c;
      clone.push(await time(async () => { c = await handle.cloneBox(); }));
      await runtime.remove(c.id, true);
    }
    rows.push({ mib, copy: median(copy), create: median(create), restore: median(restore), clone: median(clone) });
    console.log(`written ${String(mib).padStart(5)} MiB: copy ${fmt(median(copy))}, snapshot.create ${fmt(median(create))} (${(median(create) / median(copy)).toFixed(2)}× copy), restore ${fmt(median(restore))}, cloneBox ${fmt(median(clone))}  [disk file ${diskMib.toFixed(1)} MiB allocated]`);
    await runtime.remove(id, true);
  }

  const box = await runtime.create({ rootfsPath: image, memoryMib: 256 });
  await box.start();
  await run(box, 'dd if=/dev/urandom of=/live.bin bs=1M count=16 2>/dev/null');
  const live = [], liveClone = [];
  for (let i = 0; i < RUNS; i++) {
    live.push(await time(() => box.snapshot.create(`live${i}`)));
    let c;
    liveClone.push(await time(async () => { c = await box.cloneBox(); }));
    await runtime.remove(c.id, true);
  }
  console.log(`running box: live snapshot.create ${fmt(median(live))}, live cloneBox ${fmt(median(liveClone))} (sync + one QMP switch)`);
  await runtime.remove(box.id, true);

  const first = rows[0], last = rows[rows.length - 1];
  if (rows.length > 1) {
    console.log(`growth from ${first.mib} to ${last.mib} MiB written: copy ×${(last.copy / first.copy).toFixed(1)}, snapshot.create ×${(last.create / first.create).toFixed(1)}, restore ×${(last.restore / first.restore).toFixed(1)}`);
  }
} finally {
  await runtime.shutdown?.(5).catch(() => undefined);
  fs.rmSync(home, { recursive: true, force: true });
}
