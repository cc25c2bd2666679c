// Accelerator choice (docs: ARCHITECTURE.md section 3) and the host TSC rate the guest needs
// under TCG (section 4).
import { closeSync, constants, existsSync, openSync, readFileSync, readSync } from 'node:fs';
import { execFileSync } from 'node:child_process';
import { ConfigError } from '../errors/index.js';

export type AccelKind = 'kvm' | 'hvf' | 'tcg';

export interface Accelerator {
  kind: AccelKind;
  /** Why this accelerator was chosen, for `boxlite info` and logs. */
  reason: string;
}
export type AcceleratorChoice = Accelerator;

/** Filesystem probes, injectable so tests can describe any host. */
export interface AccelProbes {
  platform: NodeJS.Platform;
  exists(path: string): boolean;
  /** Opens `path` read-write and closes it; throws the open error (with `code`) on failure. */
  openReadWrite(path: string): void;
}

export const defaultAccelProbes: AccelProbes = {
  platform: process.platform,
  exists: (path) => existsSync(path),
  // (libuv opens every fd close-on-exec)
  openReadWrite: (path) => closeSync(openSync(path, constants.O_RDWR)),
};

const KINDS: readonly AccelKind[] = ['kvm', 'hvf', 'tcg'];
const PVM_MARKER = '/sys/module/kvm_pvm';
const KVM_DEVICE = '/dev/kvm';


/**
 * Picks kvm on Linux when /dev/kvm is usable, hvf on macOS, else tcg.
 * `BOXLITE_ACCEL=kvm|hvf|tcg` overrides (`auto` or empty means detect).
 */
export function detectAccelerator(
  env: NodeJS.ProcessEnv = process.env,
  probes: Partial<AccelProbes> = {},
): Accelerator {
  const p: AccelProbes = { ...defaultAccelProbes, ...probes };
  const forced = env.BOXLITE_ACCEL?.trim().toLowerCase();
  if (forced && forced !== 'auto') {
    if (!(KINDS as readonly string[]).includes(forced)) {
      throw new ConfigError(`BOXLITE_ACCEL must be one of kvm, hvf, tcg or auto, got "${env.BOXLITE_ACCEL}"`);
    }
    const kind = forced as AccelKind;
    if (kind === 'hvf' && p.platform !== 'darwin') {
      throw new ConfigError(`BOXLITE_ACCEL=hvf is only available on macOS (this host is ${p.platform})`);
    }
    if (kind === 'kvm' && p.platform !== 'linux') {
      throw new ConfigError(`BOXLITE_ACCEL=kvm is only available on Linux (this host is ${p.platform})`);
    }
    return { kind, reason: `forced by BOXLITE_ACCEL=${kind}` };
  }

  if (p.platform === 'darwin') return { kind: 'hvf', reason: 'macOS Hypervisor.framework' };
  if (p.platform !== 'linux') {
    return { kind: 'tcg', reason: `no hardware accelerator supported on ${p.platform}` };
  }
  // A PVM "KVM" runs guests paravirtualized (no VMX/SVM): stock kernels crawl or hang there.
  if (p.exists(PVM_MARKER)) {
    return {
      kind: 'tcg',
      reason: `KVM is a nested PVM hypervisor (${PVM_MARKER}), which cannot boot stock kernels`,
    };
  }
  if (!p.exists(KVM_DEVICE)) {
    return { kind: 'tcg', reason: `${KVM_DEVICE} does not exist (no KVM on this host)` };
  }
  try {
    p.openReadWrite(KVM_DEVICE);
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code ?? String(err);
    const hint = code === 'EACCES' || code === 'EPERM' ? '; add the user to the kvm group' : '';
    return { kind: 'tcg', reason: `${KVM_DEVICE} cannot be opened read-write (${code})${hint}` };
  }
  return { kind: 'kvm', reason: `${KVM_DEVICE} is usable` };
}

/** Text sources for `hostTscKhz`, injectable for tests. Each returns null when unreadable. */
export interface TscProbes {
  readFile(path: string): string | null;
  /** The kernel log (from /dev/kmsg or `dmesg`), or null. */
  kernelLog(): string | null;
}

function readFileOrNull(path: string): string | null {
  try {
    return readFileSync(path, 'utf8');
  } catch {
    return null;
  }
}

/** Reads the kernel ring buffer without blocking: /dev/kmsg first, then `dmesg`. */
function readKernelLog(): string | null {
  let fd: number | undefined;
  try {
    fd = openSync('/dev/kmsg', constants.O_RDONLY | constants.O_NONBLOCK);
    const buf = Buffer.alloc(8192);
    const records: string[] = [];
    for (let i = 0; i < 100_000; i++) {
      let n: number;
      try {
        n = readSync(fd, buf, 0, buf.length, null);
      } catch (err) {
        const code = (err as NodeJS.ErrnoException).code;
        if (code === 'EPIPE') continue; // records were overwritten while reading: skip ahead
        break; // EAGAIN: end of the buffer
      }
      if (n <= 0) break;
      records.push(buf.toString('utf8', 0, n));
    }
    if (records.length > 0) return records.join('');
  } catch {
    // not readable (kernel.dmesg_restrict, containers): try dmesg
  } finally {
    if (fd !== undefined) closeSync(fd);
  }
  try {
    return execFileSync('dmesg', { encoding: 'utf8', stdio: ['ignore', 'pipe', 'ignore'], timeout: 5000 });
  } catch {
    return null;
  }
}

export const defaultTscProbes: TscProbes = { readFile: readFileOrNull, kernelLog: readKernelLog };

function mhzToKhz(whole: string, frac: string | undefined): number {
  return Number(whole) * 1000 + Number((frac ?? '').padEnd(3, '0').slice(0, 3));
}

/**
 * The host TSC rate in kHz, or null if it cannot be found. Under TCG the guest's TSC runs at
 * the host rate; the guest must be told (`tsc_early_khz=`) because calibrating against the
 * emulated PIT fails on a loaded host and the boot hangs.
 */
export function hostTscKhz(probes: Partial<TscProbes> = {}): number | null {
  const p: TscProbes = { ...defaultTscProbes, ...probes };
  const sysfs = p.readFile('/sys/devices/system/cpu/cpu0/tsc_freq_khz');
  if (sysfs && /^\s*\d+\s*$/.test(sysfs) && Number(sysfs) > 0) return Number(sysfs);

  const log = p.kernelLog();
  if (log) {
    // Most precise first: the refined calibration, then the TSC line (printed when the TSC and
    // CPU rates differ), then the processor line.
    for (const re of [
      /tsc: Refined TSC clocksource calibration: (\d+)(?:\.(\d+))? MHz/,
      /tsc: Detected (\d+)(?:\.(\d+))? MHz TSC/,
      /tsc: Detected (\d+)(?:\.(\d+))? MHz processor/,
    ]) {
      const m = re.exec(log);
      if (m?.[1]) return mhzToKhz(m[1], m[2]);
    }
  }

  const cpuinfo = p.readFile('/proc/cpuinfo');
  if (cpuinfo && /^flags\s*:.*\bconstant_tsc\b/m.test(cpuinfo)) {
    const m = /^cpu MHz\s*:\s*(\d+)(?:\.(\d+))?/m.exec(cpuinfo);
    if (m?.[1]) return mhzToKhz(m[1], m[2]);
  }
  return null;
}

let cachedTscKhz: number | null | undefined;
/** `hostTscKhz()` with the real probes, computed once per process. */
export function cachedHostTscKhz(): number | null {
  if (cachedTscKhz === undefined) cachedTscKhz = hostTscKhz();
  return cachedTscKhz;
}
