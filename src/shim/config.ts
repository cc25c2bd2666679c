import type { NetConfig } from '../net/types.js';
import type { VmPlan } from '../vmm/plan.js';
import type { TemplateRef } from '../vmm/template.js';
import type { LifecycleConfig } from './lifecycle.js';
import type { PublishedPort } from './ports.js';

/** What the SDK hands the shim on stdin (never argv: it may carry secrets later). */
export interface ShimConfig {
  boxId: string;
  boxDir: string;
  /** The VM to run, as the runtime describes it; the shim has vmm/ turn it into a command (qemuArgs). */
  plan: VmPlan;
  accelReason: string;
  /** Bound on the wait for the agent's first HELLO. */
  agentTimeoutMs: number;
  /** Bound on a graceful guest power-off before QEMU is killed. */
  stopTimeoutMs: number;
  /** Detached shims outlive the process that started them. */
  detach: boolean;
  /**
   * The box's main process (the image's Entrypoint + Cmd after the box's overrides), started
   * right after the agent's HELLO as the container's init (EXEC flag MAIN); absent: an
   * exec-only box. With `hold` it starts on the first client's `attach` instead, so a client
   * that wants all of its output attaches before it runs (docker's create, attach, start).
   */
  main?: MainSpec;
  /**
   * The box's own network stack (the plan's NIC is a `stream` one): the shim's network worker
   * listens on `net.socketPath` before QEMU starts and publishes `net.ports` itself. Carries
   * the secrets' values, which is why the config travels on stdin only.
   */
  net?: NetConfig;
  /**
   * @internal Test hook (the host test tier): run this process instead of the VM. It must
   * connect to the agent socket itself; `{agentSocket}` in `args` is replaced by its path.
   * `qemu` is then unused. Never set by the SDK.
   */
  agentPeer?: { command: string; args: string[] };
  /** Fast start: restore this saved template VM instead of booting (src/vmm/template.ts). */
  template?: TemplateRef;
  /** box.fork(): restore a running box's saved memory (src/shim/fork.ts) instead of booting. */
  fork?: { statePath: string };
  /** autoStop and healthCheck, run by the shim itself (src/shim/lifecycle.ts); absent: neither. */
  lifecycle?: LifecycleConfig;
}

export interface MainSpec {
  argv: string[];
  env: string[];
  user: string;
  cwd: string;
  tty: boolean;
  hold: boolean;
  /** A held process starts anyway after this long without an attach (default 30 s). */
  holdTimeoutMs?: number;
  /**
   * logs/main.log is rotated to main.log.1 (one generation kept) when it would grow past this
   * (default 64 MiB), so a process that floods its output cannot fill the host's disk.
   */
  logMaxBytes?: number;
}

/** `boxes/<id>/exit.json`: how the main process's last run ended. */
export interface ExitRecord {
  /** Exit status; 128+N for death by signal N, as docker reports it (and the reference's exitCode). */
  exitCode: number;
  /** exited | signaled | failed (could not start) | stopped (the box was stopped under it) */
  reason: 'exited' | 'signaled' | 'failed' | 'stopped';
  signal?: number;
  message?: string;
  startedAt?: string;
  finishedAt: string;
}

/** The shim's first stdout line: ready, or why it could not start. */
export type ShimReadyLine =
  | { ready: true; state: ShimState }
  | { ready: false; error: { code: string; message: string } };

/** Persisted in `boxes/<id>/shim.json` while the shim lives. */
export interface ShimState {
  shimPid: number;
  shimStartTime?: string;
  qemuPid: number;
  qemuStartTime?: string;
  accel: string;
  accelReason: string;
  startedAt: string;
  /** QEMU spawn → first agent HELLO. */
  bootMs: number;
  agentVersion: string;
  agentFeatures: number;
  /** Host ports actually bound for the box (hostPort 0 resolved); [] when none. */
  publishedPorts?: PublishedPort[];
  /** The template key the VM was restored from; absent: booted cold. */
  template?: string;
  /** The VM is paused (QMP stop) by box.pause(); absent or false: running. */
  paused?: boolean;
  /** Start-up marks of the shim (src/shim/startup.ts): ms since its process started. */
  timings?: { origin: number; marks: Record<string, number> };
}

// The box directory layout lives in store/home.ts (its one owner); the shim reaches it from here.
export { boxPaths, type BoxPaths } from '../store/home.js';
