import path from 'node:path';
import type { QemuSpec } from '../vmm/qemu.js';
import type { PublishedPort } from './ports.js';

/** What the SDK hands the shim on stdin (never argv: it may carry secrets later). */
export interface ShimConfig {
  boxId: string;
  boxDir: string;
  /** QEMU launch spec; the shim derives the command line with buildQemuCommand. */
  qemu: QemuSpec;
  accelReason: string;
  /** Bound on the wait for the agent's first HELLO. */
  agentTimeoutMs: number;
  /** Bound on a graceful guest power-off before QEMU is killed. */
  stopTimeoutMs: number;
  /** Detached shims outlive the process that started them. */
  detach: boolean;
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

export function boxPaths(boxDir: string) {
  return {
    config: path.join(boxDir, 'config.json'),
    disk: path.join(boxDir, 'disk.qcow2'),
    controlSocket: path.join(boxDir, 'control.sock'),
    agentSocket: path.join(boxDir, 'agent.sock'),
    shimState: path.join(boxDir, 'shim.json'),
    /** Held (O_EXCL) by the one shim that owns this box's VM, from boot to exit. */
    shimLock: path.join(boxDir, 'shim.lock'),
    logsDir: path.join(boxDir, 'logs'),
    consoleLog: path.join(boxDir, 'logs', 'console.log'),
    qemuLog: path.join(boxDir, 'logs', 'qemu.log'),
    shimLog: path.join(boxDir, 'logs', 'shim.log'),
  };
}
