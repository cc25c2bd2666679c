// The QEMU command line for one VM plan (plan.ts): the only place that knows QEMU's options.
// `qemuArgs` is pure: every host fact (TSC rate, binary path) comes in through the plan or
// `host`. The recipe and its measurements are in ARCHITECTURE.md section 4b and
// docs/decisions/0001-guest-kernel.md.
import { accessSync, constants } from 'node:fs';
import { delimiter, isAbsolute, join } from 'node:path';
import { EngineError, ConfigError } from '../errors/index.js';
import { cachedHostTscKhz } from './accel.js';
import type { GuestArch, GuestLimits, VmPlan } from './plan.js';

export type { GuestArch, PortForward, VmPlan } from './plan.js';

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

/** The host facts qemuArgs falls back on; tests pass fixed ones. */
export interface QemuHost {
  env: NodeJS.ProcessEnv;
  tscKhz(): number | null;
}

const realHost: QemuHost = { env: process.env, tscKhz: cachedHostTscKhz };

export interface QemuCommand {
  binary: string;
  args: string[];
}

/**
 * Guest network, fixed so the guest needs no DHCP (the agent reads boxlite.ip/gw/dns/host): the
 * reference's addressing. slirp answers ARP only for its host and DNS addresses, so the gateway
 * shares the DNS address (.1) and slirp routes whatever is sent there; its `host=` address .254
 * is host.boxlite.internal, which slirp delivers to the host's loopback.
 */
export const GUEST_NET = {
  cidr: '192.168.127.0/24',
  ip: '192.168.127.2/24',
  gateway: '192.168.127.1',
  dns: '192.168.127.1',
  hostAlias: '192.168.127.254',
  /** Where slirp's DHCP server would start leasing: the guest's own address, should anything ask. */
  dhcpStart: '192.168.127.2',
} as const;

/**
 * The virtual link of a `stream` NIC (the box's own stack): fixed MACs (each box has its own
 * link, so they never meet) and the large MTU. Addresses are GUEST_NET's.
 */
export const STREAM_LINK = {
  guestMac: '52:54:00:12:34:56',
  gatewayMac: '52:55:c0:a8:7f:01',
  mtu: 65520,
} as const;

export const AGENT_PORT_NAME = 'boxlite.agent';

export function hostGuestArch(arch: string = process.arch): GuestArch {
  return arch === 'arm64' ? 'aarch64' : 'x86_64';
}

/** QEMU option values are comma-separated; a literal comma is written twice. */
export function qemuOptValue(value: string): string {
  return value.replace(/,/g, ',,');
}

function validate(plan: VmPlan): void {
  const bad = (what: string) => {
    throw new ConfigError(what);
  };
  const { cpus, memoryMib } = plan.resources;
  if (!Number.isInteger(cpus) || cpus < 1) bad(`invalid CPU count ${cpus}`);
  if (!Number.isInteger(memoryMib) || memoryMib < 64) bad(`invalid memory size ${memoryMib} MiB`);
  if (plan.nics.length > 1) bad(`at most one network interface is supported, got ${plan.nics.length}`);
  if (plan.disks.length > 8) bad(`too many disks (${plan.disks.length}; at most 8)`);
  const vols = plan.shares;
  if (vols.length > 16) bad(`too many volumes (${vols.length}; at most 16)`);
  for (const v of vols) {
    if (!isAbsolute(v.hostPath) || !v.guestPath.startsWith('/')) bad(`invalid volume ${v.hostPath}:${v.guestPath}`);
  }
  // The kernel command line holds 2048 bytes in all (x86); keep the volumes to half of it.
  if (vols.reduce((n, v) => n + escapeCmdlinePath(v.guestPath).length + 20, 0) > 1024) {
    bad('volume guest paths are too long to pass on the kernel command line');
  }
  for (const c of plan.guest?.capabilities ?? []) {
    if (!Number.isInteger(c) || c < 0 || c > 63) bad(`invalid capability number ${c}`);
  }
  for (const [key] of GUEST_LIMIT_WORDS) {
    const v = plan.guest?.limits?.[key];
    if (v !== undefined && (!Number.isSafeInteger(v) || v < 0)) bad(`invalid limit ${key} ${v}`);
  }
  // slirp needs its host ports resolved first (the shim does); the stack binds port 0 itself.
  const forwards = plan.nics.flatMap((n) => n.ports.map((f) => ({ f, minHost: n.kind === 'stream' ? 0 : 1 })));
  for (const { f, minHost } of forwards) {
    for (const [port, min] of [[f.hostPort, minHost], [f.guestPort, 1]] as const) {
      if (!Number.isInteger(port) || port < min || port > 65535) bad(`invalid port ${port}`);
    }
    if (f.protocol !== 'tcp' && f.protocol !== 'udp') bad(`invalid port protocol ${String(f.protocol)}`);
    // slirp forwards from IPv4 host addresses only
    if (f.hostAddress && !/^(\d{1,3}\.){3}\d{1,3}$/.test(f.hostAddress)) bad(`invalid host address ${f.hostAddress}`);
  }
  for (const nic of plan.nics) {
    if (nic.kind !== 'stream') continue;
    if (!isAbsolute(nic.socketPath)) bad(`invalid network socket path ${nic.socketPath}`);
    if (!/^([0-9a-f]{2}:){5}[0-9a-f]{2}$/.test(nic.mac)) bad(`invalid MAC address ${nic.mac}`);
    // virtio-net's host_mtu range; the stack's MSS is mtu - 40.
    if (!Number.isInteger(nic.mtu) || nic.mtu < 576 || nic.mtu > 65535) bad(`invalid MTU ${nic.mtu}`);
  }
}

/** boxlite.rlimit=<word>:<value>, one per limit; the words are the agent's (guest/src/boot.c). */
const GUEST_LIMIT_WORDS: ReadonlyArray<[keyof GuestLimits, string]> = [
  ['openFiles', 'nofile'],
  ['fileSize', 'fsize'],
  ['processes', 'nproc'],
  ['addressSpace', 'as'],
  ['cpuSeconds', 'cpu'],
];

/** Kernel command line for the guest (everything after -append). */
export function buildKernelCmdline(plan: VmPlan, host: Partial<QemuHost> = {}): string {
  const arch = plan.arch ?? hostGuestArch();
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
  if (plan.accel === 'tcg' && arch === 'x86_64') {
    // The guest TSC runs at the host rate; calibrating it against the emulated PIT fails on a
    // loaded host and the boot hangs (ARCHITECTURE.md section 4). no_timer_check skips the
    // IO-APIC timer test that similarly misfires under emulation.
    const khz = plan.boot.tscKhz === undefined ? (host.tscKhz ?? realHost.tscKhz)() : plan.boot.tscKhz;
    if (khz && khz > 0) parts.push(`tsc_early_khz=${Math.round(khz)}`);
    parts.push('tsc=reliable', 'no_timer_check');
  }
  if (plan.disks.length) parts.push('boxlite.root=/dev/vda');
  plan.shares.forEach((v, i) => {
    parts.push(`boxlite.vol=${i}:${v.readOnly ? 'ro' : 'rw'}:${escapeCmdlinePath(v.guestPath)}`);
  });
  if (plan.nics.length) {
    parts.push(
      `boxlite.ip=${GUEST_NET.ip}`,
      `boxlite.gw=${GUEST_NET.gateway}`,
      `boxlite.dns=${GUEST_NET.dns}`,
      `boxlite.host=${GUEST_NET.hostAlias}`,
    );
  }
  if (plan.mainProcess) parts.push('boxlite.main');
  if (plan.trust) parts.push('boxlite.trust');
  const g = plan.guest;
  if (g?.capabilities) {
    let mask = 0n;
    for (const c of g.capabilities) mask |= 1n << BigInt(c);
    parts.push(`boxlite.caps=${mask.toString(16)}`);
  }
  for (const [key, word] of GUEST_LIMIT_WORDS) {
    const v = g?.limits?.[key];
    if (v !== undefined) parts.push(`boxlite.rlimit=${word}:${v}`);
  }
  const extra = plan.boot.extraCmdline;
  if (typeof extra === 'string' && extra.trim()) parts.push(extra.trim());
  else if (Array.isArray(extra)) parts.push(...extra.filter((s) => s.length > 0));
  return parts.join(' ');
}

/**
 * BOXLITE_TCG_TB_MIB caps TCG's translation cache (`tb-size`, MiB). Off by default: QEMU's 1 GiB
 * cache is touched as code gets translated (≈48 MiB RSS per idle box, more after work); 32 saves
 * 18 MiB idle and ~65 MiB after a Python run, but that run is ~10% slower, and 16 is 3x slower
 * (docs/perf.md). Opt-in for dense fleets of mostly idle boxes.
 */
function tcgTbSize(env: NodeJS.ProcessEnv): string {
  const v = env.BOXLITE_TCG_TB_MIB;
  if (v === undefined || v === '') return '';
  if (!/^[0-9]{1,4}$/.test(v) || Number(v) < 1 || Number(v) > 2048) {
    throw new ConfigError(`invalid BOXLITE_TCG_TB_MIB ${JSON.stringify(v)}: expected an integer 1-2048 (MiB)`);
  }
  return `,tb-size=${Number(v)}`;
}

/**
 * The QEMU argv for one VM plan. Pure given `host` (defaults: process.env and this host's TSC
 * rate, which are only consulted when the plan leaves `binary` / `boot.tscKhz` out).
 */
export function qemuArgs(plan: VmPlan, host: Partial<QemuHost> = {}): QemuCommand {
  validate(plan);
  const arch = plan.arch ?? hostGuestArch();
  const env = host.env ?? realHost.env;
  const binary = plan.binary ?? (env.BOXLITE_QEMU || `qemu-system-${arch}`);
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

  switch (plan.accel) {
    case 'kvm':
      args.push('-accel', 'kvm', '-cpu', 'host');
      break;
    case 'hvf':
      args.push('-accel', 'hvf', '-cpu', 'host');
      break;
    case 'tcg':
      // -erms,-fsrm: the guest then avoids `rep movsb`, which TCG emulates slowly
      // (~0.3 s of boot, 3x agent throughput).
      args.push('-accel', `tcg${tcgTbSize(env)}`, '-cpu', arch === 'x86_64' ? 'max,-erms,-fsrm' : 'max');
      break;
  }
  args.push('-smp', String(plan.resources.cpus), '-m', String(plan.resources.memoryMib));

  args.push('-kernel', plan.boot.kernelPath, '-initrd', plan.boot.initrdPath, '-append', buildKernelCmdline(plan, host));

  args.push(
    '-chardev', `file,id=console,path=${o(plan.console.logPath)},append=on`,
    '-serial', 'chardev:console',
  );

  // Host listens first and QEMU connects (no server=on): the host owns the socket's lifetime
  // and can't miss the guest's first byte.
  args.push(
    '-chardev', `socket,id=agent,path=${o(plan.agent.socketPath)}`,
    '-device', 'virtio-serial-device',
    '-device', `virtserialport,chardev=agent,name=${AGENT_PORT_NAME}`,
  );

  // The first disk is the container root (/dev/vda, named `root`); the others follow in order.
  plan.disks.forEach((d, i) => {
    const id = i === 0 ? 'root' : `disk${i}`;
    args.push(
      '-drive', `id=${id},file=${o(d.path)},format=${d.format},if=none,discard=unmap${d.readOnly ? ',readonly=on' : ''}`,
      '-device', `virtio-blk-device,drive=${id}`,
    );
  });

  // Volumes: one virtio-9p share each. mapped-xattr works unprivileged (guest owners and
  // modes live in xattrs on the host); readonly=on makes QEMU refuse writes whatever the guest
  // does. The agent mounts tag boxlite-v<i> at the guest path (boxlite.vol=, msize=512000).
  plan.shares.forEach((v, i) => {
    args.push(
      '-fsdev', `local,id=v${i},path=${o(v.hostPath)},security_model=mapped-xattr${v.readOnly ? ',readonly=on' : ''}`,
      '-device', `virtio-9p-device,fsdev=v${i},mount_tag=boxlite-v${i}`,
    );
  });

  for (const nic of plan.nics) {
    if (nic.kind === 'stream') {
      // The box's own stack listens on the socket first (the shim's network worker) and QEMU
      // connects (server=off), as for the agent socket. QEMU 7.2 sends each frame as a 4-byte
      // big-endian length + the Ethernet frame, without a vnet header, so the guest computes
      // full checksums and does no segmentation offload. host_mtu: the guest driver takes
      // the link MTU from the device (VIRTIO_NET_F_MTU); 64 KiB segments are what makes the
      // stack as fast as slirp under TCG (NETWORK.md: 34 MB/s at 65520 vs ~20 at 1500).
      args.push(
        '-netdev', `stream,id=net0,server=off,addr.type=unix,addr.path=${o(nic.socketPath)}`,
        '-device', `virtio-net-device,netdev=net0,mac=${nic.mac},host_mtu=${nic.mtu}`,
      );
      continue;
    }
    const fwd = nic.ports.map(
      (f) => `,hostfwd=${f.protocol}:${f.hostAddress ?? ''}:${f.hostPort}-:${f.guestPort}`,
    );
    args.push(
      '-netdev',
      `user,id=net0,net=${GUEST_NET.cidr},host=${GUEST_NET.hostAlias},dns=${GUEST_NET.dns},dhcpstart=${GUEST_NET.dhcpStart}${fwd.join('')}`,
      '-device', 'virtio-net-device,netdev=net0',
    );
  }

  if (plan.controlSocketPath) {
    args.push(
      '-chardev', `socket,id=qmp,path=${o(plan.controlSocketPath)},server=on,wait=off`,
      '-mon', 'chardev=qmp,mode=control',
    );
  }

  if (plan.seccomp) {
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
