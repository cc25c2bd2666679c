import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { ConfigError, StorageError } from '../errors/index.js';

// The one owner of the on-disk layout: every `$BOXLITE_HOME/...` and `boxes/<id>/...` path is
// named here (docs/architecture.md, "Home layout"); the rest of the code asks for them by name.

/** `$BOXLITE_HOME` layout (spec: reference-configuration, "Home directory"). */
export interface HomeLayout {
  root: string;
  boxes: string;
  images: string;
  logs: string;
  db: string;
  tmp: string;
}

/** The directory of one box. */
export function boxDir(boxesDir: string, id: string): string {
  return path.join(boxesDir, id);
}

/** Every file of a box directory (`boxes/<id>/`). */
export interface BoxPaths {
  dir: string;
  /** Immutable box config, a copy of the database record for people and tools. */
  config: string;
  /** The box's writable qcow2 overlay. */
  disk: string;
  /** Shim control socket (while running). */
  controlSocket: string;
  /** QEMU ⇄ shim agent link (while running). */
  agentSocket: string;
  /** QEMU's NIC ⇄ the shim's network worker: Ethernet frames (while running). */
  netSocket: string;
  /** Tunnels into the box: one connection per tunnel, served by the network worker (while running). */
  tunnelSocket: string;
  /** Shim and QEMU pids, accelerator, boot time, published ports (while running). */
  shimState: string;
  /** Held (O_EXCL) by the one shim that owns this box's VM, from boot to exit. */
  shimLock: string;
  logsDir: string;
  /** Guest serial console. */
  consoleLog: string;
  /** The main process's stdout and stderr, as they came (`box.logs()` of a box that has one). */
  mainLog: string;
  /** How the main process's last run ended (written by the shim; removed when it runs again). */
  exitFile: string;
  qemuLog: string;
  shimLog: string;
  /** QEMU's QMP monitor (the shim's pause/resume; while running). */
  qmpSocket: string;
  /** The shim's health check state (`info().healthStatus`; while running with a healthCheck). */
  healthFile: string;
  /** Written by the shim when autoStop stopped the box (autoDelete then removes it); cleared at boot. */
  autoStopFile: string;
}

export function boxPaths(dir: string): BoxPaths {
  return {
    dir,
    config: path.join(dir, 'config.json'),
    disk: path.join(dir, 'disk.qcow2'),
    controlSocket: path.join(dir, 'control.sock'),
    agentSocket: path.join(dir, 'agent.sock'),
    netSocket: path.join(dir, 'net.sock'),
    tunnelSocket: path.join(dir, 'tunnel.sock'),
    shimState: path.join(dir, 'shim.json'),
    shimLock: path.join(dir, 'shim.lock'),
    logsDir: path.join(dir, 'logs'),
    consoleLog: path.join(dir, 'logs', 'console.log'),
    mainLog: path.join(dir, 'logs', 'main.log'),
    exitFile: path.join(dir, 'exit.json'),
    qemuLog: path.join(dir, 'logs', 'qemu.log'),
    shimLog: path.join(dir, 'logs', 'shim.log'),
    qmpSocket: path.join(dir, 'qmp.sock'),
    healthFile: path.join(dir, 'health.json'),
    autoStopFile: path.join(dir, 'autostop.json'),
  };
}

/** Immutable qcow2 bases that snapshots and clones share (registry: db/disks.db, src/store/disks.ts). */
export function basesDir(root: string): string {
  return path.join(root, 'bases');
}

export function basePath(root: string, id: string): string {
  return path.join(basesDir(root), `${id}.qcow2`);
}

/** Longest box dir that still leaves room for `/control.sock` in a 108-byte sun_path. */
const MAX_SOCKET_PATH = 107;

export function resolveHome(homeDir?: string | null, env: NodeJS.ProcessEnv = process.env): HomeLayout {
  const root = path.resolve(homeDir || env.BOXLITE_HOME || path.join(os.homedir(), '.boxlite'));
  const layout: HomeLayout = {
    root,
    boxes: path.join(root, 'boxes'),
    images: path.join(root, 'images'),
    logs: path.join(root, 'logs'),
    db: path.join(root, 'db'),
    tmp: env.BOXLITE_TMPDIR ? path.resolve(env.BOXLITE_TMPDIR) : path.join(root, 'tmp'),
  };
  const longest = boxPaths(boxDir(layout.boxes, '0'.repeat(26))).controlSocket;
  if (Buffer.byteLength(longest) > MAX_SOCKET_PATH) {
    throw new ConfigError(
      `homeDir is too long for unix sockets (${Buffer.byteLength(longest)} > ${MAX_SOCKET_PATH} bytes): ${root}`,
    );
  }
  return layout;
}

export function ensureHome(layout: HomeLayout): void {
  try {
    for (const dir of [layout.root, layout.boxes, layout.images, layout.logs, layout.db, layout.tmp]) {
      fs.mkdirSync(dir, { recursive: true, mode: 0o700 });
    }
  } catch (err) {
    throw new StorageError(`cannot create BoxLite home ${layout.root}: ${(err as Error).message}`, { cause: err });
  }
}

/** A managed volume's files (`volumes/<id>/`): `data/` is what boxes mount, `volume.json` a copy of its record. */
export function volumePaths(homeRoot: string, id: string): { dir: string; data: string; record: string } {
  const dir = path.join(homeRoot, 'volumes', id);
  return { dir, data: path.join(dir, 'data'), record: path.join(dir, 'volume.json') };
}
