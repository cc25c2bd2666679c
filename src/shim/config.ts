import type { VmPlan } from '../vmm/plan.js';
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
   * @internal Test hook (the host test tier): run this process instead of the VM. It must
   * connect to the agent socket itself; `{agentSocket}` in `args` is replaced by its path.
   * `qemu` is then unused. Never set by the SDK.
   */
  agentPeer?: { command: string; args: string[] };
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
}

// The box directory layout lives in store/home.ts (its one owner); the shim reaches it from here.
export { boxPaths, type BoxPaths } from '../store/home.js';
