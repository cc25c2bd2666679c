// The SDK's side of the lifecycle options the shim runs (src/shim/lifecycle.ts): what goes into
// the shim's config, how info() reads the health the shim records, and pause/resume, which ask
// the box's shim over its control socket (any process may, as for stop).
import { InvalidStateError } from '../errors/index.js';
import { ShimClient } from '../shim/client.js';
import type { ShimConfig } from '../shim/config.js';
import type { HealthStatus } from '../shim/lifecycle.js';
import type { BoxStore } from '../store/boxes.js';
import { boxPaths, type BoxPaths } from '../store/home.js';
import { readJson } from '../util/fs.js';
import type { NormalizedBoxOptions } from './options.js';

/** ShimConfig.lifecycle for a box's options; nothing when it sets neither autoStop nor healthCheck. */
export function lifecycleConfig(options: Pick<NormalizedBoxOptions, 'autoStop' | 'healthCheck'>): Pick<ShimConfig, 'lifecycle'> {
  const autoStopSecs = options.autoStop && options.autoStop > 0 ? options.autoStop : undefined;
  const healthCheck = options.healthCheck;
  if (!autoStopSecs && !healthCheck) return {};
  return { lifecycle: { ...(autoStopSecs ? { autoStopSecs } : {}), ...(healthCheck ? { healthCheck: { ...healthCheck } } : {}) } };
}

const NONE: HealthStatus = { state: 'None', failures: 0 };
const STATES = new Set(['None', 'Starting', 'Healthy', 'Unhealthy']);

/**
 * `info().healthStatus`: None without a healthCheck or while the box is not running (the
 * reference clears it on stop); else what the shim last wrote, Starting before its first write.
 */
export function healthStatusOf(
  options: Pick<NormalizedBoxOptions, 'healthCheck'>,
  paths: Pick<BoxPaths, 'healthFile'>,
  running: boolean,
): HealthStatus {
  if (!options.healthCheck || !running) return { ...NONE };
  const s = readJson<HealthStatus>(paths.healthFile);
  if (!s || !STATES.has(s.state) || typeof s.failures !== 'number') return { state: 'Starting', failures: 0 };
  return { state: s.state, failures: s.failures, ...(typeof s.lastCheck === 'string' ? { lastCheck: s.lastCheck } : {}) };
}

/** Pauses or resumes a running box through its shim; idempotent; InvalidState when it is not running. */
export async function pauseBox(store: BoxStore, id: string, paused: boolean): Promise<void> {
  const { state, shim } = store.status(id);
  if (!shim?.qemuPid || state.status === 'stopping') {
    const what = state.status === 'stopping' ? 'is stopping' : shim ? 'is still booting' : `is ${state.status}`;
    throw new InvalidStateError(`box ${id} ${what}: only a running box can be ${paused ? 'paused' : 'resumed'}`);
  }
  const client = await ShimClient.connect(boxPaths(store.dir(id)).controlSocket);
  try {
    await client.request(paused ? 'pause' : 'resume');
  } finally {
    client.close();
  }
}

/** `info` with the health the shim recorded (runtime.getInfo/listInfo, like box.info()). */
export function withHealth<T extends { healthStatus: HealthStatus }>(
  info: T,
  record: { options: Pick<NormalizedBoxOptions, 'healthCheck'> },
  boxDir: string,
  running: boolean,
): T {
  info.healthStatus = healthStatusOf(record.options, boxPaths(boxDir), running);
  return info;
}
