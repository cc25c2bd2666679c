import type { BoxStore } from '../store/boxes.js';
import type { DiskStore } from '../store/disks.js';
import type { HomeLayout } from '../store/home.js';
import type { Accelerator } from '../vmm/accel.js';
import type { GuestAssets } from '../vmm/assets.js';
import type { Box } from './box.js';

export interface RuntimeMetrics {
  boxesCreatedTotal: number;
  boxesFailedTotal: number;
  numRunningBoxes: number;
  totalCommandsExecuted: number;
  totalExecErrors: number;
}

/** What a Box needs from the runtime that owns it (kept narrow so boxes never reach into the runtime). */
export interface RuntimeContext {
  home: HomeLayout;
  store: BoxStore;
  /** Disk bases, snapshots and their references (issue 11: src/runtime/snapshots.ts). */
  disks: DiskStore;
  metrics: RuntimeMetrics;
  guestAssets(): Promise<GuestAssets>;
  accelerator(): Accelerator;
  agentTimeoutMs(accel: string): number;
  onBoxStarted(box: Box): void;
  onBoxStopped(box: Box): void;
  onBoxFailed(): void;
}
