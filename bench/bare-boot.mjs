#!/usr/bin/env node
// Baseline for cold-start comparisons: a bare QEMU boot of the runtime's own kernel and
// initramfs, measured from spawn to the first byte the guest writes on the agent port.
// Deliberately independent of src/vmm (no disk unless --root-disk, no NIC, no QMP, no jail):
// it is the floor the runtime's cold start is compared to.
//
// CLI: node bench/bare-boot.mjs [--runs N] [--parallel P] [--kernel PATH] [--initrd PATH]
//      [--root-disk PATH]  attach an ext4 image (raw or .qcow2, opened snapshot=on) as the
//                          agent's root disk, for agents that wait for /dev/vda
//      defaults: the kernel and initramfs of the guest runtime, $BOXLITE_RUNTIME_DIR or
//      runtime/<platform>/ (scripts/build-runtime.mjs)
import { spawn, execFileSync } from 'node:child_process';
import { mkdtempSync, rmSync, readFileSync, existsSync, accessSync, constants } from 'node:fs';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';

function accel() {
  const forced = process.env.BOXLITE_ACCEL;
  if (forced) return forced;
  if (process.platform === 'darwin') return 'hvf';
  if (existsSync('/sys/module/kvm_pvm')) return 'tcg';
  try { accessSync('/dev/kvm', constants.R_OK | constants.W_OK); return 'kvm'; } catch { return 'tcg'; }
}

// Same sources as src/vmm/accel.ts hostTscKhz (kept local so the baseline needs no build).
function hostTscKhz() {
  const read = (p) => { try { return readFileSync(p, 'utf8'); } catch { return null; } };
  const sysfs = Number(read('/sys/devices/system/cpu/cpu0/tsc_freq_khz'));
  if (sysfs > 0) return sysfs;
  let log = null;
  try { log = execFileSync('dmesg', { encoding: 'utf8', stdio: ['ignore', 'pipe', 'ignore'] }); } catch {}
  for (const re of [/tsc: Refined TSC clocksource calibration: (\d+\.\d+) MHz/, /tsc: Detected (\d+\.\d+) MHz TSC/, /tsc: Detected (\d+\.\d+) MHz processor/]) {
    const m = log && re.exec(log);
    if (m) return Math.round(Number(m[1]) * 1000);
  }
  const ci = read('/proc/cpuinfo') ?? '';
  const m = /^cpu MHz\s*:\s*([\d.]+)/m.exec(ci);
  return m && /\bconstant_tsc\b/.test(ci) ? Math.round(Number(m[1]) * 1000) : null;
}

/** ms from spawn to the first byte on the agent socket. */
export async function bareBoot({ kernelPath, initrdPath, rootDiskPath = null, timeoutMs = 120_000, extraCmdline = '', qemu = process.env.BOXLITE_QEMU || 'qemu-system-x86_64' }) {
  const dir = mkdtempSync(join(tmpdir(), 'bareboot-'));
  const sock = join(dir, 'agent.sock');
  const kind = accel();
  const append = ['console=ttyS0', 'quiet', 'panic=-1', 'cryptomgr.notests', 'mitigations=off', 'nokaslr'];
  const args = ['-M', 'microvm,rtc=on', '-nodefaults', '-no-user-config', '-nographic', '-no-reboot', '-m', '512', '-smp', '1'];
  if (kind === 'kvm') args.push('-accel', 'kvm', '-cpu', 'host');
  else {
    args.push('-accel', 'tcg', '-cpu', 'max,-erms,-fsrm');
    const khz = hostTscKhz();
    if (khz) append.push(`tsc_early_khz=${khz}`);
    append.push('tsc=reliable', 'no_timer_check');
  }
  if (rootDiskPath) {
    append.push('boxlite.root=/dev/vda');
    // snapshot=on: writes go to a throwaway overlay, so parallel runs can share one image
    const fmt = rootDiskPath.endsWith('.qcow2') ? 'qcow2' : 'raw';
    args.push('-drive', `id=root,file=${rootDiskPath.replace(/,/g, ',,')},format=${fmt},if=none,snapshot=on`, '-device', 'virtio-blk-device,drive=root');
  }
  if (extraCmdline) append.push(extraCmdline);
  args.push('-kernel', kernelPath, '-initrd', initrdPath, '-append', append.join(' '),
    '-serial', `file:${join(dir, 'console.log')}`,
    '-chardev', `socket,id=agent,path=${sock}`,
    '-device', 'virtio-serial-device', '-device', 'virtserialport,chardev=agent,name=boxlite.agent');
  let child;
  const server = createServer();
  try {
    return await new Promise((resolve, reject) => {
      let t0 = 0;
      const timer = setTimeout(() => reject(new Error(`no agent byte within ${timeoutMs} ms; console: ${safeRead(join(dir, 'console.log'))}`)), timeoutMs);
      server.on('connection', (c) => {
        c.once('data', () => { clearTimeout(timer); resolve(performance.now() - t0); c.destroy(); });
        c.on('error', () => {});
      });
      server.listen(sock, () => {
        t0 = performance.now();
        child = spawn(qemu, args, { stdio: ['ignore', 'ignore', 'pipe'] });
        let err = '';
        child.stderr.on('data', (d) => { err += d; });
        child.on('exit', (code, sig) => { clearTimeout(timer); reject(new Error(`qemu exited (${code ?? sig}) before the agent spoke: ${err.trim()} ${safeRead(join(dir, 'console.log'))}`)); });
        child.on('error', (e) => { clearTimeout(timer); reject(e); });
      });
    });
  } finally {
    if (child && child.exitCode === null) {
      const gone = new Promise((r) => child.once('exit', r));
      child.kill('SIGKILL');
      await gone;
    }
    server.close();
    rmSync(dir, { recursive: true, force: true });
  }
}

function safeRead(p) { try { return readFileSync(p, 'utf8').slice(-2000); } catch { return ''; } }

function defaults() {
  const dir = process.env.BOXLITE_RUNTIME_DIR || fileURLToPath(new URL(`../runtime/${process.platform}-${process.arch}`, import.meta.url));
  try {
    const m = JSON.parse(readFileSync(join(dir, 'runtime.json'), 'utf8'));
    return { kernelPath: join(dir, m.kernel.file), initrdPath: join(dir, m.initramfs.file) };
  } catch {
    return {};
  }
}

const median = (xs) => { const s = [...xs].sort((a, b) => a - b); const m = s.length >> 1; return s.length % 2 ? s[m] : (s[m - 1] + s[m]) / 2; };

async function main(argv) {
  const opt = { runs: 5, parallel: 1, ...defaults() };
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i], v = argv[i + 1];
    if (a === '--runs') { opt.runs = Number(v); i++; }
    else if (a === '--parallel') { opt.parallel = Number(v); i++; }
    else if (a === '--kernel') { opt.kernelPath = v; i++; }
    else if (a === '--initrd') { opt.initrdPath = v; i++; }
    else if (a === '--append') { opt.extraCmdline = v; i++; }
    else if (a === '--root-disk') { opt.rootDiskPath = v; i++; }
    else { console.error(`unknown argument ${a}`); process.exit(2); }
  }
  if (!opt.kernelPath || !opt.initrdPath) { console.error('kernel or initramfs not found; pass --kernel and --initrd (or run npm run setup)'); process.exit(2); }
  const times = [];
  for (let r = 0; r < opt.runs; r++) {
    const batch = await Promise.all(Array.from({ length: opt.parallel }, () => bareBoot(opt)));
    times.push(...batch);
    console.error(`run ${r + 1}/${opt.runs}: ${batch.map((t) => t.toFixed(0)).join(' ')} ms`);
  }
  const out = { accel: accel(), kernel: opt.kernelPath, initrd: opt.initrdPath, runs: opt.runs, parallel: opt.parallel, medianMs: Math.round(median(times)), minMs: Math.round(Math.min(...times)), maxMs: Math.round(Math.max(...times)) };
  console.log(JSON.stringify(out));
}

if (import.meta.url === pathToFileURL(process.argv[1] ?? '').href) {
  main(process.argv.slice(2)).catch((e) => { console.error(e.message); process.exit(1); });
}
