// Linux capabilities and rlimits of the container: the reference's `advanced.capabilities` policy resolved
// against the docker baseline into the set the agent keeps in every execution's bounding set.
// The agent receives the result as a bit mask (boxlite.caps=, src/vmm/qemu.ts) and never sees
// the names, so an unknown name can only be refused here, at create().
import { ConfigError } from '../errors/index.js';
import type { GuestLimits, GuestPolicy, VmPlan } from '../vmm/plan.js';
import type { ContainerCapabilities, NormalizedBoxOptions } from './options.js';

/** Capability names by number (linux/capability.h, up to 6.x: CHECKPOINT_RESTORE = 40). */
export const CAPABILITY_NAMES: readonly string[] = [
  'CHOWN', 'DAC_OVERRIDE', 'DAC_READ_SEARCH', 'FOWNER', 'FSETID', 'KILL', 'SETGID', 'SETUID',
  'SETPCAP', 'LINUX_IMMUTABLE', 'NET_BIND_SERVICE', 'NET_BROADCAST', 'NET_ADMIN', 'NET_RAW',
  'IPC_LOCK', 'IPC_OWNER', 'SYS_MODULE', 'SYS_RAWIO', 'SYS_CHROOT', 'SYS_PTRACE', 'SYS_PACCT',
  'SYS_ADMIN', 'SYS_BOOT', 'SYS_NICE', 'SYS_RESOURCE', 'SYS_TIME', 'SYS_TTY_CONFIG', 'MKNOD',
  'LEASE', 'AUDIT_WRITE', 'AUDIT_CONTROL', 'SETFCAP', 'MAC_OVERRIDE', 'MAC_ADMIN', 'SYSLOG',
  'WAKE_ALARM', 'BLOCK_SUSPEND', 'AUDIT_READ', 'PERFMON', 'BPF', 'CHECKPOINT_RESTORE',
];

/**
 * Docker's default set, the reference's baseline. The agent keeps the same list (kept_caps in
 * guest/src/exec.c) for boxes that change nothing, so it only needs boxlite.caps= otherwise.
 */
export const DEFAULT_CAPABILITIES: readonly string[] = [
  'CHOWN', 'DAC_OVERRIDE', 'FOWNER', 'FSETID', 'KILL', 'SETGID', 'SETUID', 'SETPCAP',
  'NET_BIND_SERVICE', 'NET_RAW', 'SYS_CHROOT', 'MKNOD', 'AUDIT_WRITE', 'SETFCAP',
];

/** Upper case without the optional CAP_ prefix: `net_raw`, `CAP_NET_RAW` and `NET_RAW` are one name. */
export function canonicalCapability(name: string): string {
  const upper = name.toUpperCase();
  return upper.startsWith('CAP_') ? upper.slice(4) : upper;
}

/**
 * Canonical names of one list; throws a ConfigError naming the option and the entry for
 * anything that is not a Linux capability (or ALL).
 */
function canonicalList(option: string, names: readonly string[] | undefined): string[] {
  const out: string[] = [];
  for (const [i, raw] of (names ?? []).entries()) {
    const name = canonicalCapability(raw);
    if (name !== 'ALL' && !CAPABILITY_NAMES.includes(name)) {
      throw new ConfigError(
        `${option}[${i}] ${JSON.stringify(raw)} is not a Linux capability (names as in docker --cap-add: NET_ADMIN, CAP_SYS_PTRACE, ALL)`,
      );
    }
    if (!out.includes(name)) out.push(name);
  }
  return out;
}

/** The policy in canonical form (stored with the box); throws ConfigError for an unknown name. */
export function normalizeCapabilities(caps: ContainerCapabilities | undefined): { add: string[]; drop: string[] } | undefined {
  const add = canonicalList('advanced.capabilities.add', caps?.add);
  const drop = canonicalList('advanced.capabilities.drop', caps?.drop);
  return add.length || drop.length ? { add, drop } : undefined;
}

/**
 * The resulting capability numbers, ascending. The reference's rules: a named addition wins over
 * a named removal; with add ALL, named removals win; with drop ALL, the additions are the set.
 */
export function resolveCapabilities(policy: { add: readonly string[]; drop: readonly string[] } | undefined): number[] {
  const all = CAPABILITY_NAMES;
  let set: Set<string>;
  if (!policy) set = new Set(DEFAULT_CAPABILITIES);
  else if (policy.drop.includes('ALL')) set = new Set(policy.add.includes('ALL') ? all : policy.add);
  else if (policy.add.includes('ALL')) set = new Set(all.filter((c) => !policy.drop.includes(c)));
  else set = new Set([...DEFAULT_CAPABILITIES.filter((c) => !policy.drop.includes(c)), ...policy.add]);
  return [...set].map((c) => all.indexOf(c)).sort((a, b) => a - b);
}

/** The plan's guest policy for a box: only what differs from the agent's defaults. */
export function guestPolicy(options: Pick<NormalizedBoxOptions, 'capabilities' | 'limits'>): Pick<VmPlan, 'guest'> {
  const guest: GuestPolicy = {};
  if (options.capabilities) guest.capabilities = resolveCapabilities(options.capabilities);
  const l = options.limits;
  if (l && Object.keys(l).length) {
    guest.limits = {
      openFiles: l.maxOpenFiles,
      fileSize: l.maxFileSize,
      processes: l.maxProcesses,
      addressSpace: l.maxMemory,
      cpuSeconds: l.maxCpuTime,
    };
    for (const k of Object.keys(guest.limits) as Array<keyof GuestLimits>) if (guest.limits[k] === undefined) delete guest.limits[k];
  }
  return Object.keys(guest).length ? { guest } : {};
}
