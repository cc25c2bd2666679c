#!/usr/bin/env node
// REST benchmark (not a test): the same work through the local SDK, through OUR REST client and
// through the reference's 0.10 client against OUR server (buildRestApp, in this process, on
// 127.0.0.1:0, over a real runtime on a scratch home), measured in the same run, each REST figure
// printed as a ratio against the local one:
//
//   exec round trip     exec('true') → wait(), and exec('echo x') → stdout drained → wait(),
//                       on one warm box: median and p90 of N, the three clients interleaved
//   create → output     create → exec('echo ready') → first stdout chunk (a cold box each time)
//   32 concurrent       32 execs at once across 4 boxes, each printing 256 KiB of its own pattern:
//                       throughput, and every exec's byte count + sha256 checked ("lost bytes: 0";
//                       the process exits 1 if any byte is lost or changed)
//
// The 0.10 client is skipped (with a message) when it is not installed: scripts/setup.sh puts it
// in .cache/ref-client; BOXLITE_REF_DIR (or /tmp/ref-native) is also looked at.
//
// Usage: node bench/rest.mjs [--runs N (create→output, default 5)] [--execs N (round trips, default 50)]
//        (needs `npm run build` and scripts/setup.sh; uses a scratch BOXLITE_HOME; loopback only)
import { createHash } from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import { pathToFileURL } from 'node:url';
import { ROOT, ensureImage, fmt, loadBoxlite, median, runsArg, scratchHome } from './lib.mjs';

const { JsBoxlite, BoxliteRestOptions, ApiKeyCredential } = await loadBoxlite();
const { buildRestApp } = await import(path.join(ROOT, 'dist', 'rest', 'server', 'app.js'));

const arg = (name, fallback) => {
  const i = process.argv.indexOf(name);
  return i > 0 ? Number(process.argv[i + 1]) : fallback;
};
const RUNS = runsArg(5);
const EXECS = arg('--execs', 50);
const CONCURRENT = 32;
const BOXES = 4;
const BYTES = 256 * 1024;
const KEY = 'bench-rest-key-0123';
const MEM = 256;

const p90 = (xs) => {
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.min(s.length - 1, Math.ceil(0.9 * s.length) - 1)];
};
const ratio = (x, base) => `${(x / base).toFixed(2)}x`;
async function drain(s) {
  let t = '';
  for (let c = await s.next(); c !== null; c = await s.next()) t += c;
  return t;
}

// Where scripts/setup.sh installs it (.cache/ref-client), else BOXLITE_REF_DIR, else /tmp/ref-native.
const refDir = process.env.BOXLITE_REF_DIR ?? [path.join(ROOT, '.cache', 'ref-client'), '/tmp/ref-native'].find((d) => fs.existsSync(path.join(d, 'node_modules', '@boxlite-ai', 'boxlite')));
const REF = path.join(refDir ?? path.join(ROOT, '.cache', 'ref-client'), 'node_modules', '@boxlite-ai', 'boxlite');
const haveRef = fs.existsSync(path.join(REF, 'dist', 'index.js')) && fs.existsSync(path.join(REF, '..', 'boxlite-linux-x64-gnu'));
const ref = haveRef ? await import(pathToFileURL(path.join(REF, 'dist', 'index.js')).href) : undefined;
if (!haveRef) console.log(`0.10 reference client: skipped (not installed under ${path.resolve(REF, '../../..')})`);

const image = ensureImage('busybox');
const home = scratchHome('rest');
const local = new JsBoxlite({ homeDir: home });
const app = buildRestApp(local, { apiKey: KEY, rootfsRoot: path.dirname(image) });
await app.listen({ host: '127.0.0.1', port: 0 });
const url = `http://127.0.0.1:${app.server.address().port}`;
const clients = { ours: JsBoxlite.rest(new BoxliteRestOptions({ url, credential: new ApiKeyCredential(KEY) })) };
if (ref) clients.ref = ref.JsBoxlite.rest(new ref.BoxliteRestOptions({ url, credential: new ref.ApiKeyCredential(KEY) }));
const names = { local: 'local SDK', ours: 'our REST client', ref: '0.10 REST client' };
const remoteOpts = { rootfsPath: path.basename(image), memoryMib: MEM };
const localOpts = { rootfsPath: image, memoryMib: MEM };
let failed = false;

try {
  // Warm the image cache so every create measures a box, not the one-time ext4 build.
  const warm = await local.create(localOpts);
  await local.remove(warm.id, true);

  // ---- create → first output ------------------------------------------------------------------
  const cold = { local: [] };
  for (const k of Object.keys(clients)) cold[k] = [];
  for (let i = 0; i < RUNS; i++) {
    // Rotated each run: no client always pays for being first after a removal.
    const order = [['local', local], ...Object.entries(clients)];
    for (const [k, rt] of [...order.slice(i % order.length), ...order.slice(0, i % order.length)]) {
      const t0 = performance.now();
      const box = await rt.create(k === 'local' ? localOpts : remoteOpts, null);
      const ex = await box.exec('echo', ['ready'], null, false, null, null, null);
      const first = await (await ex.stdout()).next();
      cold[k].push(performance.now() - t0);
      if (first !== 'ready\n') throw new Error(`${names[k]}: first output ${JSON.stringify(first)}`);
      await ex.wait();
      await local.remove(box.id, true);
    }
  }

  // ---- exec round trip on one warm box ----------------------------------------------------------
  const warmBox = await local.create(localOpts);
  await warmBox.start();
  const handles = { local: warmBox };
  for (const [k, rt] of Object.entries(clients)) handles[k] = await rt.get(warmBox.id);
  const rt = {};
  for (const k of Object.keys(handles)) rt[k] = { true: [], echo: [] };
  const once = async (h, cmd) => {
    const t0 = performance.now();
    if (cmd === 'true') {
      const r = await (await h.exec('true', null, null, false, null, null, null)).wait();
      if (r.exitCode !== 0) throw new Error(`true exited ${r.exitCode}`);
    } else {
      const ex = await h.exec('echo', ['x'], null, false, null, null, null);
      const out = await drain(await ex.stdout());
      if ((await ex.wait()).exitCode !== 0 || out !== 'x\n') throw new Error(`echo x gave ${JSON.stringify(out)}`);
    }
    return performance.now() - t0;
  };
  for (const h of Object.values(handles)) for (let i = 0; i < 3; i++) await once(h, 'true'); // warm guest + sockets
  for (let i = 0; i < EXECS; i++) {
    for (const [k, h] of Object.entries(handles)) {
      rt[k].true.push(await once(h, 'true'));
      rt[k].echo.push(await once(h, 'echo'));
    }
  }
  await local.remove(warmBox.id, true);

  // ---- 32 concurrent execs across 4 boxes, no lost byte -----------------------------------------
  const boxes = [];
  for (let b = 0; b < BOXES; b++) {
    const box = await local.create(localOpts);
    await box.start();
    boxes.push(box);
  }
  // Each exec prints BYTES of its own pattern (a line with its index), so a byte moved from one
  // exec to another, dropped or duplicated changes that exec's hash.
  const expected = Array.from({ length: CONCURRENT }, (_, i) => {
    const line = `exec-${String(i).padStart(2, '0')}-abcdefghijklmnopqrstuvwxyz-0123456789\n`;
    const buf = Buffer.from(line.repeat(Math.ceil(BYTES / line.length))).subarray(0, BYTES);
    return { line: line.slice(0, -1), sha: createHash('sha256').update(buf).digest('hex') };
  });
  const fanOut = async (k) => {
    const hs = [];
    for (const box of boxes) hs.push(k === 'local' ? box : await clients[k].get(box.id));
    let lost = 0;
    let wrong = 0;
    const t0 = performance.now();
    await Promise.all(
      expected.map(async ({ line, sha }, i) => {
        const ex = await hs[i % BOXES].exec('sh', ['-c', `yes ${line} | head -c ${BYTES}`], null, false, null, null, null);
        const out = await drain(await ex.stdout());
        const r = await ex.wait();
        const got = Buffer.from(out, 'utf8');
        lost += Math.max(0, BYTES - got.length);
        if (r.exitCode !== 0 || got.length !== BYTES || createHash('sha256').update(got).digest('hex') !== sha) wrong++;
      }),
    );
    const ms = performance.now() - t0;
    return { ms, lost, wrong };
  };
  const fan = {};
  await fanOut('local'); // warm: the first `yes|head` in each box pages busybox in
  for (const k of ['local', ...Object.keys(clients)]) fan[k] = await fanOut(k);
  for (const box of boxes) await local.remove(box.id, true);

  // ---- figures -----------------------------------------------------------------------------------
  const accel = (await import(path.join(ROOT, 'dist', 'vmm', 'accel.js'))).detectAccelerator();
  console.log(`accelerator: ${accel.kind} (${accel.reason})`);
  console.log(`REST server in-process on ${url}, busybox boxes of ${MEM} MiB, scratch home`);
  console.log(`exec round trip on a warm box, ${EXECS} runs each (median / p90; ratio of medians vs local):`);
  for (const cmd of ['true', 'echo']) {
    const base = median(rt.local[cmd]);
    console.log(`  ${cmd === 'true' ? 'exec true → wait' : 'exec echo x → read → wait'}`);
    for (const k of Object.keys(rt)) {
      const xs = rt[k][cmd];
      console.log(`    ${names[k].padEnd(17)} ${fmt(median(xs)).padStart(9)} / ${fmt(p90(xs)).padStart(9)}${k === 'local' ? '   (baseline)' : `   ${ratio(median(xs), base)}`}`);
    }
  }
  console.log(`create → first output (cold box each), median of ${RUNS}:`);
  for (const k of Object.keys(cold)) {
    console.log(`    ${names[k].padEnd(17)} ${fmt(median(cold[k])).padStart(9)}${k === 'local' ? '   (baseline)' : `   ${ratio(median(cold[k]), median(cold.local))}`}`);
  }
  const total = CONCURRENT * BYTES;
  console.log(`${CONCURRENT} concurrent execs across ${BOXES} boxes, ${BYTES / 1024} KiB each (${(total / 2 ** 20).toFixed(0)} MiB), sha256 per exec:`);
  for (const k of Object.keys(fan)) {
    const { ms, lost, wrong } = fan[k];
    const mibs = total / 2 ** 20 / (ms / 1000);
    console.log(
      `    ${names[k].padEnd(17)} ${fmt(ms).padStart(9)}  ${mibs.toFixed(1).padStart(6)} MiB/s${k === 'local' ? '   (baseline)' : `   ${(mibs / (total / 2 ** 20 / (fan.local.ms / 1000))).toFixed(2)}x throughput`}   lost bytes: ${lost}, execs wrong: ${wrong}`,
    );
    if (lost || wrong) failed = true;
  }
} finally {
  await app.close();
  await local.shutdown(10);
  fs.rmSync(home, { recursive: true, force: true });
}
if (failed) {
  console.error('FAILED: bytes were lost or changed');
  process.exit(1);
}
