#!/usr/bin/env node
// Network benchmark (not a test): the box's own user-space stack (src/net/, the default) against
// QEMU's slirp (BOXLITE_NET=slirp), measured in the same run on the same machine and image, each
// figure printed with its ratio:
//
//   download     guest reads N MiB from a host TCP server (host.boxlite.internal)   MiB/s
//   upload       guest writes N MiB to a host TCP sink                               MiB/s
//   connect      guest TCP connect() to a host listener, median of C connects         ms
//   memory       the box's host processes (shim + QEMU) RSS after the transfers;      MiB
//                the stack lives in the shim (worker thread), slirp inside QEMU
//
// Timings are taken inside the guest (python3 perf_counter), so boot and exec costs stay out.
// Target (issue 9): stack throughput >= 0.8x slirp.
//
// Usage: node bench/network.mjs [--runs N] [--mib M] [--connects C]
//        (needs scripts/setup.sh: the python test image; uses a scratch BOXLITE_HOME; loopback only)
import fs from 'node:fs';
import net from 'node:net';
import path from 'node:path';
import { ROOT, loadBoxlite, median, runsArg, scratchHome } from './lib.mjs';

const { JsBoxlite } = await loadBoxlite();
const RUNS = runsArg(3);
const arg = (name, fallback) => {
  const i = process.argv.indexOf(name);
  return i > 0 ? Number(process.argv[i + 1]) : fallback;
};
const MIB = arg('--mib', 200);
const CONNECTS = arg('--connects', 200);
const BYTES = MIB * 1024 * 1024;
const image = path.join(ROOT, '.cache', 'images', 'python');
if (!fs.existsSync(image)) throw new Error(`missing ${image}: run scripts/setup.sh first`);

// ---- host servers (127.0.0.1 only) --------------------------------------------------------------
const block = Buffer.alloc(1 << 20, 0x5a);
const listen = (handler) =>
  new Promise((resolve) => {
    const s = net.createServer({ allowHalfOpen: true }, handler);
    s.listen(0, '127.0.0.1', () => resolve(s));
  });
// Source: writes BYTES on connect, then FIN.
const source = await listen((sock) => {
  sock.on('error', () => {});
  let left = BYTES;
  const pump = () => {
    while (left > 0) {
      const n = Math.min(left, block.length);
      left -= n;
      if (!sock.write(n === block.length ? block : block.subarray(0, n))) return void sock.once('drain', pump);
    }
    sock.end();
  };
  pump();
});
// Sink: counts until the guest's FIN, answers the count.
const sink = await listen((sock) => {
  sock.on('error', () => {});
  let n = 0;
  sock.on('data', (c) => (n += c.length));
  sock.on('end', () => sock.end(String(n)));
});
// Accepts and closes at once: connect latency.
const acceptor = await listen((sock) => {
  sock.on('error', () => {});
  sock.destroy();
});
const port = (s) => s.address().port;

const GUEST = `
import socket, time, json, sys
host = 'host.boxlite.internal'
what, port, n = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
if what == 'down':
    s = socket.create_connection((host, port)); buf = bytearray(1 << 20); view = memoryview(buf); got = 0
    t = time.perf_counter()
    while True:
        k = s.recv_into(view)
        if not k: break
        got += k
    dt = time.perf_counter() - t
    print(json.dumps({'bytes': got, 's': dt}))
elif what == 'up':
    block = b'\\x5a' * (1 << 20); s = socket.create_connection((host, port))
    t = time.perf_counter()
    for i in range(n // len(block)): s.sendall(block)
    s.shutdown(socket.SHUT_WR); ack = s.recv(64)
    dt = time.perf_counter() - t
    print(json.dumps({'bytes': int(ack), 's': dt}))
else:
    times = []
    for i in range(n):
        t = time.perf_counter(); s = socket.create_connection((host, port)); times.append(time.perf_counter() - t); s.close()
    times.sort()
    print(json.dumps({'median_ms': times[len(times) // 2] * 1000}))
`;

async function guest(box, ...args) {
  const ex = await box.exec('python3', ['-c', GUEST, ...args.map(String)]);
  const out = [];
  const stream = await ex.stdout();
  for (;;) {
    const c = await stream.nextBuffer();
    if (c === null) break;
    out.push(c);
  }
  const r = await ex.wait();
  if (r.exitCode !== 0) throw new Error(`guest ${args[0]} failed: exit ${r.exitCode} ${r.errorMessage ?? ''}`);
  return JSON.parse(Buffer.concat(out).toString().trim());
}

function rssMib(pid) {
  try {
    const m = /^VmRSS:\s+(\d+) kB/m.exec(fs.readFileSync(`/proc/${pid}/status`, 'utf8'));
    return m ? Number(m[1]) / 1024 : NaN;
  } catch {
    return NaN;
  }
}

const home = scratchHome('network');
const runtime = new JsBoxlite({ homeDir: home });
const boxes = {};
const shimPid = async (box) => JSON.parse(fs.readFileSync(path.join((await box.inspect()).paths.dir, 'shim.json'), 'utf8'));
const bootRss = {};
try {
  for (const kind of ['stack', 'slirp']) {
    const prev = process.env.BOXLITE_NET;
    process.env.BOXLITE_NET = kind;
    try {
      const box = await runtime.create({ rootfsPath: image });
      await box.start();
      boxes[kind] = box;
      bootRss[kind] = rssMib((await shimPid(box)).shimPid);
    } finally {
      if (prev === undefined) delete process.env.BOXLITE_NET;
      else process.env.BOXLITE_NET = prev;
    }
  }
  const fig = { stack: { down: [], up: [], conn: [] }, slirp: { down: [], up: [], conn: [] } };
  // Alternate the two boxes so a slow moment of the host hits both alike.
  for (let i = 0; i < RUNS; i++) {
    for (const kind of ['stack', 'slirp']) {
      const box = boxes[kind];
      const d = await guest(box, 'down', port(source), BYTES);
      if (d.bytes !== BYTES) throw new Error(`${kind}: downloaded ${d.bytes} of ${BYTES} bytes`);
      fig[kind].down.push(MIB / d.s);
      const u = await guest(box, 'up', port(sink), BYTES);
      if (u.bytes !== BYTES) throw new Error(`${kind}: the sink got ${u.bytes} of ${BYTES} bytes`);
      fig[kind].up.push(MIB / u.s);
      fig[kind].conn.push((await guest(box, 'conn', port(acceptor), CONNECTS)).median_ms);
    }
  }
  const mem = {};
  for (const kind of ['stack', 'slirp']) {
    const shim = await shimPid(boxes[kind]);
    mem[kind] = { shim: rssMib(shim.shimPid), qemu: rssMib(shim.qemuPid) };
  }
  const workerHeap = (await boxes.stack.inspect()).networkStats?.snapshot?.memory;

  const accel = (await import(path.join(ROOT, 'dist', 'vmm', 'accel.js'))).detectAccelerator();
  const m = (k, f) => median(fig[k][f]);
  const line = (label, f, unit, higherIsBetter) => {
    const a = m('stack', f);
    const b = m('slirp', f);
    const ratio = higherIsBetter ? a / b : b / a;
    console.log(`${label.padEnd(28)} stack ${a.toFixed(f === 'conn' ? 3 : 1)} ${unit}   slirp ${b.toFixed(f === 'conn' ? 3 : 1)} ${unit}   ratio ${ratio.toFixed(2)}x${f === 'conn' ? ' (slirp/stack)' : ''}`);
  };
  console.log(`accelerator: ${accel.kind} (${accel.reason}); ${MIB} MiB per transfer, ${CONNECTS} connects, median of ${RUNS} runs`);
  line('guest download', 'down', 'MiB/s', true);
  line('guest upload', 'up', 'MiB/s', true);
  line('guest TCP connect latency', 'conn', 'ms', false);
  console.log(`  throughput target: stack >= 0.8x slirp`);
  const tot = (k) => mem[k].shim + mem[k].qemu;
  console.log(
    `memory (RSS after the transfers)  stack: shim ${mem.stack.shim.toFixed(1)} + qemu ${mem.stack.qemu.toFixed(1)} = ${tot('stack').toFixed(1)} MiB` +
      `   slirp: shim ${mem.slirp.shim.toFixed(1)} + qemu ${mem.slirp.qemu.toFixed(1)} = ${tot('slirp').toFixed(1)} MiB` +
      `   stack costs ${(tot('stack') - tot('slirp')).toFixed(1)} MiB more per box (shim delta ${(mem.stack.shim - mem.slirp.shim).toFixed(1)} MiB)`,
  );
  console.log(`  shim RSS right after boot: stack ${bootRss.stack.toFixed(1)} MiB, slirp ${bootRss.slirp.toFixed(1)} MiB (the worker's fixed cost: ${(bootRss.stack - bootRss.slirp).toFixed(1)} MiB)`);
  if (workerHeap) console.log(`  the worker's own heap: ${(workerHeap.heapUsed / 1048576).toFixed(1)} MiB used of ${(workerHeap.heapTotal / 1048576).toFixed(1)} MiB`);
} finally {
  for (const box of Object.values(boxes)) await runtime.remove(box.id, true).catch(() => {});
  await runtime.shutdown();
  for (const s of [source, sink, acceptor]) s.close();
  fs.rmSync(home, { recursive: true, force: true });
}
