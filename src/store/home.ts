import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { ConfigError, StorageError } from '../errors/index.js';

/** `$BOXLITE_HOME` layout (spec: reference-configuration, "Home directory"). */
export interface HomeLayout {
  root: string;
  boxes: string;
  images: string;
  init: string;
  logs: string;
  db: string;
  tmp: string;
}

/** Longest box dir that still leaves room for `/control.sock` in a 108-byte sun_path. */
const MAX_SOCKET_PATH = 107;

export function resolveHome(homeDir?: string | null, env: NodeJS.ProcessEnv = process.env): HomeLayout {
  const root = path.resolve(homeDir || env.BOXLITE_HOME || path.join(os.homedir(), '.boxlite'));
  const layout: HomeLayout = {
    root,
    boxes: path.join(root, 'boxes'),
    images: path.join(root, 'images'),
    init: path.join(root, 'init'),
    logs: path.join(root, 'logs'),
    db: path.join(root, 'db'),
    tmp: env.BOXLITE_TMPDIR ? path.resolve(env.BOXLITE_TMPDIR) : path.join(root, 'tmp'),
  };
  const longest = path.join(layout.boxes, '0'.repeat(26), 'control.sock');
  if (Buffer.byteLength(longest) > MAX_SOCKET_PATH) {
    throw new ConfigError(
      `homeDir is too long for unix sockets (${Buffer.byteLength(longest)} > ${MAX_SOCKET_PATH} bytes): ${root}`,
    );
  }
  return layout;
}

export function ensureHome(layout: HomeLayout): void {
  try {
    for (const dir of [layout.root, layout.boxes, layout.images, layout.init, layout.logs, layout.db, layout.tmp]) {
      fs.mkdirSync(dir, { recursive: true, mode: 0o700 });
    }
  } catch (err) {
    throw new StorageError(`cannot create BoxLite home ${layout.root}: ${(err as Error).message}`, { cause: err });
  }
}
