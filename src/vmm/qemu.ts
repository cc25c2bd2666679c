// QEMU command line for one box. `buildQemuCommand` is pure: every host fact (accelerator,
// TSC rate, binary path) comes in through the spec. The recipe and its measurements are in
// ARCHITECTURE.md section 4b and docs/decisions/0001-guest-kernel.md.
import { accessSync, constants } from 'node:fs';
import { delimiter, isAbsolute, join } from 'node:path';
import { EngineError, ConfigError } from '../errors/index.js';
import { cachedHostTscKhz, type AccelKind } from './accel.js';

export type GuestArch = 'x86_64' | 'aarch64';

export interface PortForward {
  protocol: 'tcp' | 'udp';
  /** Host address to bind; empty or absent = all interfaces (as `docker run -p`). */
  hostAddress?: string;
  hostPort: number;
  guestPort: number;
}

export interface QemuNetwork {
  hostfwd?: PortForward[];
}

export interface QemuSpec {
  accel: AccelKind;
  cpus: number;
  memoryMib: number;
  kernelPath: string;
  initrdPath: string;
  /** The box's qcow2 overlay; the guest sees it as /dev/vda. */
  rootDiskPath?: string | null;
  /** Host directories shared over virtio-9p (mount tag boxlite-v<index>). */
  volumes?: QemuVolume[];
  /** Unix socket the host is already listening on; QEMU connects to it as a client. */
  agentSocketPath: string;
  /** Guest serial console, appended to this file. */
  consoleLogPath: string;
  /** null: no NIC at all. */
  network: QemuNetwork | null;
  qmpSocketPath?: string | null;
  extraCmdline?: string | readonly string[];
  /**
   * Host TSC rate in kHz, used under TCG only. Omitted: read from this host (hostTscKhz,
   * cached). null: unknown, the guest calibrates itself (may hang on a loaded host).
   */
  tscKhz?: number | null;
  /** Run QEMU under its seccomp filter (no fork/exec: use unix: migration URIs). */
  seccomp?: boolean;
  /** QEMU binary; default `BOXLITE_QEMU`, else `qemu-system-<arch>` (resolved via PATH by spawn). */
  binary?: string;
  /** Guest architecture; default: the host's. */
  arch?: GuestArch;
}

export interface QemuVolume {
  /** Absolute host directory. */
  hostPath: string;
  /** Absolute path in the container; the agent creates it when missing. */
  guestPath: string;
  readOnly: boolean;
}

/**
 * A guest path as one kernel command line token: every byte outside [A-Za-z0-9/._+@-] becomes
 * %XX (so no space, quote, comma or colon reaches the kernel's parser); the agent decodes it.
 */
export function escapeCmdlinePath(p: string): string {
  let out = '';
  for (const b of Buffer.from(p, 'utf8')) {
    const c = String.fromCharCode(b);
    out += /[A-Za-z0-9/._+@-]/.test(c) ? c : `%${b.toString(16).toUpperCase().padStart(2, '0')}`;
  }
  return out;
}

/** The host facts buildQemuCommand falls back on; tests pass fixed ones. */
export interface QemuHost {
  env: NodeJS.ProcessEnv;
  tscKhz(): number | null;
}

const realHost: QemuHost = { env: process.env, tscKhz: cachedHostTscKhz };

export interface QemuCommand {
  binary: string;
  args: string[];
}

/** Guest network, fixed so the guest needs no DHCP (agent reads boxlite.ip/gw/dns). */
export const GUEST_NET = {
  cidr: '10.0.2.0/24',
  ip: '10.0.2.15/24',
  gateway: '10.0.2.2',
  dns: '10.0.2.3',
} as const;

export const AGENT_PORT_NAME = 'boxlite.agent';

export function hostGuestArch(arch: string = process.arch): GuestArch {
  return arch === 'arm64' ? 'aarch64' : 'x86_64';
}

/** QEMU option values are comma-separated; a literal comma is written twice. */
export function qemuOptValue(value: string): string {
  return value.replace(/,/g, ',,');
}

function validate(spec: QemuSpec): void {
  const bad = (what: string) => {
    throw new ConfigError(what);
  };
  if (!Number.isInteger(spec.cpus) || spec.cpus < 1) bad(`invalid CPU count ${spec.cpus}`);
  if (!Number.isInteger(spec.memoryMib) || spec.memoryMib < 64) bad(`invalid memory size ${spec.memoryMib} MiB`);
  const vols = spec.volumes ?? [];
  if (vols.length > 16) bad(`too many volumes (${vols.length}; at most 16)`);
  for (const v of vols) {
    if (!isAbsolute(v.hostPath) || !v.guestPath.startsWith('/')) bad(`invalid volume ${v.hostPath}:${v.guestPath}`);
  }
  // The kernel command line holds 2048 bytes in all (x86); keep the volumes to half of it.
  if (vols.reduce((n, v) => n + escapeCmdlinePath(v.guestPath).length + 20, 0) > 1024) {
    bad('volume guest paths are too long to pass on the kernel command line');
  }
  for (const f of spec.network?.hostfwd ?? []) {
    for (const port of [f.hostPort, f.guestPort]) {
      if (!Number.isInteger(port) || port < 1 || port > 65535) bad(`invalid port ${port}`);
    }
    if (f.protocol !== 'tcp' && f.protocol !== 'udp') bad(`invalid port protocol ${String(f.protocol)}`);
    // slirp forwards from IPv4 host addresses only
    if (f.hostAddress && !/^(\d{1,3}\.){3}\d{1,3}$/.test(f.hostAddress)) bad(`invalid host address ${f.hostAddress}`);
  }
}

/** Kernel command line for the guest (everything after -append). */
export function buildKernelCmdline(spec: QemuSpec, host: Partial<QemuHost> = {}): string {
  const arch = spec.arch ?? hostGuestArch();
  const parts: string[] = [
    arch === 'aarch64' ? 'console=ttyAMA0' : 'console=ttyS0',
    'quiet',
    // Reboot at once on panic; with -no-reboot QEMU then exits instead of hanging.
    'panic=-1',
    // Skips the crypto self-tests: 0.3-0.5 s of boot under TCG.
    'cryptomgr.notests',
    // A single-tenant VM gains nothing from the mitigations; they cost boot and exec time.
    'mitigations=off',
    'nokaslr',
  ];
  if (spec.accel === 'tcg' && arch === 'x86_64') {
    // The guest TSC runs at the host rate; calibrating it against the emulated PIT fails on a
    // loaded host and the boot hangs (ARCHITECTURE.md section 4). no_timer_check skips the
    // IO-APIC timer test that similarly misfires under emulation.
    const khz = spec.tscKhz === undefined ? (host.tscKhz ?? realHost.tscKhz)() : spec.tscKhz;
    if (khz && khz > 0) parts.push(`tsc_early_khz=${Math.round(khz)}`);
    parts.push('tsc=reliable', 'no_timer_check');
  }
  if (spec.rootDiskPath) parts.push('boxlite.root=/dev/vda');
  (spec.volumes ?? []).forEach((v, i) => {
    parts.push(`boxlite.vol=${i}:${v.readOnly ? 'ro' : 'rw'}:${escapeCmdlinePath(v.guestPath)}`);
  });
  if (spec.network) {
    parts.push(`boxlite.ip=${GUEST_NET.ip}`, `boxlite.gw=${GUEST_NET.gateway}`, `boxlite.dns=${GUEST_NET.dns}`);
  }
  const extra = spec.extraCmdline;
  if (typeof extra === 'string' && extra.trim()) parts.push(extra.trim());
  else if (Array.isArray(extra)) parts.push(...extra.filter((s) => s.length > 0));
  return parts.join(' ');
}

/**
 * The QEMU argv for one box. Pure given `host` (defaults: process.env and this host's TSC
 * rate, which are only consulted when the spec leaves `binary` / `tscKhz` out).
 */
export function buildQemuCommand(spec: QemuSpec, host: Partial<QemuHost> = {}): QemuCommand {
  validate(spec);
  const arch = spec.arch ?? hostGuestArch();
  const env = host.env ?? realHost.env;
  const binary = spec.binary ?? (env.BOXLITE_QEMU || `qemu-system-${arch}`);
  const o = qemuOptValue;
  const args: string[] = [];

  if (arch === 'x86_64') {
    // microvm describes its virtio-mmio devices through ACPI (the guest loads virtio_mmio as a
    // module and finds them there). rtc=on: without it boot is ~2 s slower and the guest clock
    // starts at 1970.
    args.push('-M', 'microvm,acpi=on,rtc=on');
  } else {
    // arm64 (hvf on macOS; best effort, untested here): virt describes virtio-mmio via the DT.
    args.push('-M', 'virt,highmem=on');
  }
  args.push('-nodefaults', '-no-user-config', '-nographic', '-no-reboot');

  switch (spec.accel) {
    case 'kvm':
      args.push('-accel', 'kvm', '-cpu', 'host');
      break;
    case 'hvf':
      args.push('-accel', 'hvf', '-cpu', 'host');
      break;
    case 'tcg':
      // -erms,-fsrm: the guest then avoids `rep movsb`, which TCG emulates slowly
      // (~0.3 s of boot, 3x agent throughput).
      args.push('-accel', 'tcg', '-cpu', arch === 'x86_64' ? 'max,-erms,-fsrm' : 'max');
      break;
  }
  args.push('-smp', String(spec.cpus), '-m', String(spec.memoryMib));

  args.push('-kernel', spec.kernelPath, '-initrd', spec.initrdPath, '-append', buildKernelCmdline(spec, host));

  args.push(
    '-chardev', `file,id=console,path=${o(spec.consoleLogPath)},append=on`,
    '-serial', 'chardev:console',
  );

  // Host listens first and QEMU connects (no server=on): the host owns the socket's lifetime
  // and can't miss the guest's first byte.
  args.push(
    '-chardev', `socket,id=agent,path=${o(spec.agentSocketPath)}`,
    '-device', 'virtio-serial-device',
    '-device', `virtserialport,chardev=agent,name=${AGENT_PORT_NAME}`,
  );

  if (spec.rootDiskPath) {
    args.push(
      '-drive', `id=root,file=${o(spec.rootDiskPath)},format=qcow2,if=none,discard=unmap`,
      '-device', 'virtio-blk-device,drive=root',
    );
  }

  // Volumes: one virtio-9p share each. mapped-xattr works unprivileged (guest owners and
  // modes live in xattrs on the host); readonly=on makes QEMU refuse writes whatever the guest
  // does. The agent mounts tag boxlite-v<i> at the guest path (boxlite.vol=, msize=512000).
  (spec.volumes ?? []).forEach((v, i) => {
    args.push(
      '-fsdev', `local,id=v${i},path=${o(v.hostPath)},security_model=mapped-xattr${v.readOnly ? ',readonly=on' : ''}`,
      '-device', `virtio-9p-device,fsdev=v${i},mount_tag=boxlite-v${i}`,
    );
  });

  if (spec.network) {
    const fwd = (spec.network.hostfwd ?? []).map(
      (f) => `,hostfwd=${f.protocol}:${f.hostAddress ?? ''}:${f.hostPort}-:${f.guestPort}`,
    );
    args.push(
      '-netdev', `user,id=net0,net=${GUEST_NET.cidr},host=${GUEST_NET.gateway},dns=${GUEST_NET.dns}${fwd.join('')}`,
      '-device', 'virtio-net-device,netdev=net0',
    );
  }

  if (spec.qmpSocketPath) {
    args.push(
      '-chardev', `socket,id=qmp,path=${o(spec.qmpSocketPath)},server=on,wait=off`,
      '-mon', 'chardev=qmp,mode=control',
    );
  }

  if (spec.seccomp) {
    args.push('-sandbox', 'on,obsolete=deny,elevateprivileges=deny,spawn=deny,resourcecontrol=deny');
  }

  return { binary, args };
}

/**
 * Finds the QEMU binary: `BOXLITE_QEMU` if set, else `qemu-system-<arch>` on PATH.
 * Throws an Engine error when there is none.
 */
export function locateQemu(env: NodeJS.ProcessEnv = process.env, arch: GuestArch = hostGuestArch()): string {
  const engineError = (msg: string) => new EngineError(msg);
  const isExecutable = (p: string) => {
    try {
      accessSync(p, constants.X_OK);
      return true;
    } catch {
      return false;
    }
  };
  const override = env.BOXLITE_QEMU;
  if (override) {
    if (!isAbsolute(override) && !override.includes('/')) {
      const found = searchPath(override, env.PATH, isExecutable);
      if (found) return found;
    } else if (isExecutable(override)) {
      return override;
    }
    throw engineError(`BOXLITE_QEMU=${override} is not an executable file`);
  }
  const name = `qemu-system-${arch}`;
  const found = searchPath(name, env.PATH, isExecutable);
  if (!found) throw engineError(`${name} not found on PATH; install QEMU (Debian: apt-get install qemu-system-x86) or set BOXLITE_QEMU`);
  return found;
}

function searchPath(name: string, pathVar: string | undefined, ok: (p: string) => boolean): string | null {
  for (const dir of (pathVar ?? '').split(delimiter)) {
    if (!dir) continue;
    const p = join(dir, name);
    if (ok(p)) return p;
  }
  return null;
}
