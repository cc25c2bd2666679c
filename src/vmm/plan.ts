// The VM plan: what a box's VM is made of, in terms that name no hypervisor. The runtime writes
// one per boot (src/runtime/box.ts), the shim carries it (ShimConfig.plan), and only src/vmm/
// turns it into a command line (qemuArgs in qemu.ts). A second engine, snapshots or a host-side
// network stack change how a plan is realised, not how a box is described.
import type { AccelKind } from './accel.js';

export type GuestArch = 'x86_64' | 'aarch64';

export interface VmResources {
  cpus: number;
  memoryMib: number;
}

export interface VmBoot {
  kernelPath: string;
  initrdPath: string;
  /**
   * Host TSC rate in kHz, used under TCG only. Omitted: read from this host (cached).
   * null: unknown, the guest calibrates itself (may hang on a loaded host).
   */
  tscKhz?: number | null;
  /** More kernel command line words (debugging). */
  extraCmdline?: string | readonly string[];
}

/** A block device; the guest sees them in order as /dev/vda, /dev/vdb, ... The first is the container root. */
export interface VmDisk {
  path: string;
  format: 'qcow2' | 'raw';
  readOnly?: boolean;
}

/** A host directory shared into the container at `guestPath` (the agent mounts it). */
export interface VmShare {
  /** Absolute host directory. */
  hostPath: string;
  /** Absolute path in the container; the agent creates it when missing. */
  guestPath: string;
  readOnly: boolean;
}

export interface PortForward {
  protocol: 'tcp' | 'udp';
  /** Host address to bind; empty or absent = all interfaces (as `docker run -p`). */
  hostAddress?: string;
  hostPort: number;
  guestPort: number;
}

/**
 * A network interface, guest addressing GUEST_NET either way.
 * `stream`: every Ethernet frame goes over a unix socket to the box's own user-space stack (the
 * shim's network worker, src/net/), which listens there; it publishes the ports itself, so
 * `ports` stays empty. `user`: NAT in the VM process (QEMU's slirp), kept only behind
 * BOXLITE_NET=slirp for the benchmark's comparison, with host ports published to guest ports.
 */
export type VmNic =
  | { kind: 'stream'; socketPath: string; mac: string; mtu: number; ports: PortForward[] }
  | { kind: 'user'; ports: PortForward[] };

/** Resource limits of every process the agent starts in the container (soft = hard). */
export interface GuestLimits {
  /** RLIMIT_NOFILE */
  openFiles?: number;
  /** RLIMIT_FSIZE, bytes */
  fileSize?: number;
  /** RLIMIT_NPROC (per user; root in the box is exempt, as on any Linux) */
  processes?: number;
  /** RLIMIT_AS, bytes */
  addressSpace?: number;
  /** RLIMIT_CPU, seconds */
  cpuSeconds?: number;
}

/**
 * What the agent applies to every execution in the container, learnt at boot (the agent reads
 * the kernel command line, so no protocol message carries it).
 */
export interface GuestPolicy {
  /** Capability numbers kept in the bounding set; absent: the agent's docker baseline. */
  capabilities?: readonly number[];
  limits?: GuestLimits;
}

export interface VmPlan {
  accel: AccelKind;
  /** Guest architecture; default: the host's. */
  arch?: GuestArch;
  resources: VmResources;
  boot: VmBoot;
  disks: VmDisk[];
  shares: VmShare[];
  /** [] = no network interface at all (the guest has only lo). At most one for now. */
  nics: VmNic[];
  /** Guest serial console, appended to this file. */
  console: { logPath: string };
  /** The agent's channel: a unix socket the host already listens on; the VM connects to it. */
  agent: { socketPath: string };
  /** A control socket for the VMM (QMP today), for snapshots and live operations. */
  controlSocketPath?: string | null;
  guest?: GuestPolicy;
  /**
   * The container's init is the box's main process, which the host starts over the agent link
   * (EXEC flag MAIN) right after the handshake; the agent builds the container then, not at
   * boot. Absent: an exec-only box, whose init is the agent's own reaper.
   */
  mainProcess?: boolean;
  /**
   * The host sends the box's CA (secrets) right after the handshake (TRUST); the agent starts
   * an exec-only box's container only once it has it, so it is in the trust store from the start.
   */
  trust?: boolean;
  /** Confine the VM process with the engine's own syscall filter (no fork/exec). */
  seccomp?: boolean;
  /** Run the VM process in the jailer (bubblewrap: own namespaces, unprivileged, only its files; jail.ts). */
  jail?: boolean;
  /** VMM binary; default `BOXLITE_QEMU`, else `qemu-system-<arch>` (resolved via PATH by spawn). */
  binary?: string;
}
