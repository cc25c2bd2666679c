// The engine check: QEMU (qemu-system-<arch> and qemu-img) is the one thing a user installs
// besides the npm package, so a missing or too old QEMU is reported as what to install, once
// per process, before the first boot, instead of as a failed spawn or an obscure QEMU error.
import { execFile } from 'node:child_process';
import { accessSync, constants } from 'node:fs';
import { delimiter, join } from 'node:path';
import { BoxliteError, UnsupportedEngineError } from '../errors/index.js';
import { hostGuestArch, locateQemu, type GuestArch } from './qemu.js';

/**
 * Oldest QEMU we accept. microvm describes its virtio-mmio devices only through ACPI since
 * 5.2 (`acpi=on`, which the guest needs to find them); 6.2 is the oldest QEMU of a distribution
 * release still in support (Ubuntu 22.04) and the floor we state; tested on 7.2 (Debian 12).
 */
export const MIN_QEMU_VERSION: readonly [number, number, number] = [6, 2, 0];

export type Version = [number, number, number];

/** "QEMU emulator version 7.2.22 (Debian …)" / "qemu-img version 8.2.2 (…)" → [7, 2, 22]. */
export function parseQemuVersion(text: string): Version | null {
  const m = /\bversion\s+(\d+)\.(\d+)(?:\.(\d+))?/i.exec(text);
  if (!m) return null;
  return [Number(m[1]), Number(m[2]), Number(m[3] ?? 0)];
}

export function compareVersions(a: readonly number[], b: readonly number[]): number {
  for (let i = 0; i < 3; i++) {
    const d = (a[i] ?? 0) - (b[i] ?? 0);
    if (d !== 0) return d;
  }
  return 0;
}

const fmt = (v: readonly number[]) => v.join('.');

/** What to install, per distribution, for this guest architecture. */
export function installHint(arch: GuestArch = hostGuestArch()): string {
  const [deb, fedora] = arch === 'x86_64' ? ['qemu-system-x86', 'qemu-system-x86-core'] : ['qemu-system-arm', 'qemu-system-aarch64-core'];
  return (
    `install QEMU ${fmt(MIN_QEMU_VERSION)} or newer — Debian/Ubuntu: apt-get install --no-install-recommends ${deb} qemu-utils; ` +
    `Fedora: dnf install ${fedora} qemu-img; Arch: pacman -S qemu-base; Homebrew: brew install qemu ` +
    '(or set BOXLITE_QEMU to a qemu-system binary)'
  );
}

export interface EngineInfo {
  qemu: string;
  qemuVersion: string;
  qemuImg: string;
  qemuImgVersion: string;
}

/** Host probes, injectable so tests can describe any host. */
export interface EngineProbes {
  arch: GuestArch;
  /** Absolute path of qemu-system-<arch> (BOXLITE_QEMU honoured); throws when there is none. */
  locateQemu(): string;
  /** Absolute path of qemu-img, or null. */
  findQemuImg(): string | null;
  /** stdout of `file args…`; rejects when it cannot run or exits non-zero. */
  run(file: string, args: string[]): Promise<string>;
}

function findOnPath(name: string, env: NodeJS.ProcessEnv): string | null {
  for (const dir of (env.PATH ?? '').split(delimiter)) {
    if (!dir) continue;
    const p = join(dir, name);
    try {
      accessSync(p, constants.X_OK);
      return p;
    } catch {
      // next
    }
  }
  return null;
}

export function defaultEngineProbes(env: NodeJS.ProcessEnv = process.env): EngineProbes {
  const arch = hostGuestArch();
  return {
    arch,
    locateQemu: () => locateQemu(env, arch),
    findQemuImg: () => findOnPath('qemu-img', env),
    run: (file, args) =>
      new Promise((resolve, reject) => {
        execFile(file, args, { timeout: 10_000, env: { ...env, LC_ALL: 'C' } }, (err, stdout) => (err ? reject(err) : resolve(stdout)));
      }),
  };
}

async function versionOf(probes: EngineProbes, what: string, file: string): Promise<Version> {
  let out: string;
  try {
    out = await probes.run(file, ['--version']);
  } catch (err) {
    throw new UnsupportedEngineError(`${what} (${file}) does not run: ${(err as Error).message.split('\n')[0]}; ${installHint(probes.arch)}`, {
      cause: err,
    });
  }
  const v = parseQemuVersion(out);
  if (!v) throw new UnsupportedEngineError(`cannot tell the version of ${what} (${file}) from "${out.trim().split('\n')[0]}"; ${installHint(probes.arch)}`);
  if (compareVersions(v, MIN_QEMU_VERSION) < 0) {
    throw new UnsupportedEngineError(`${what} ${fmt(v)} (${file}) is too old, boxlite needs ${fmt(MIN_QEMU_VERSION)} or newer; ${installHint(probes.arch)}`);
  }
  return v;
}

/** Finds qemu-system-<arch> and qemu-img and checks their versions. */
export async function checkEngine(probes: EngineProbes = defaultEngineProbes()): Promise<EngineInfo> {
  let qemu: string;
  try {
    qemu = probes.locateQemu();
  } catch (err) {
    const why = err instanceof BoxliteError ? err.message.replace(/^engine reported an error: /, '').replace(/;.*$/, '') : String(err);
    throw new UnsupportedEngineError(`QEMU not found: ${why}; ${installHint(probes.arch)}`, { cause: err });
  }
  const qemuImg = probes.findQemuImg();
  if (!qemuImg) throw new UnsupportedEngineError(`qemu-img not found on PATH; ${installHint(probes.arch)}`);
  const [qv, iv] = await Promise.all([versionOf(probes, `qemu-system-${probes.arch}`, qemu), versionOf(probes, 'qemu-img', qemuImg)]);
  return { qemu, qemuVersion: fmt(qv), qemuImg, qemuImgVersion: fmt(iv) };
}

let checked: Promise<EngineInfo> | undefined;
/**
 * `checkEngine()` on the real host, once per process. A failure is not remembered, so a user
 * who installs QEMU while the process runs is not told to install it again.
 */
export function ensureEngine(): Promise<EngineInfo> {
  checked ??= checkEngine().catch((err: unknown) => {
    checked = undefined;
    throw err;
  });
  return checked;
}
