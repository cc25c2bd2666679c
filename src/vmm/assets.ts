// The guest runtime: the kernel and initramfs every box boots, shipped prebuilt with the package
// in runtime/<platform>/ (scripts/build-runtime.mjs) and used in place, read-only, by every
// home. Nothing here reads or writes a $BOXLITE_HOME (docs/decisions/0002-guest-runtime.md).
import { constants } from 'node:fs';
import { access, readFile, stat } from 'node:fs/promises';
import { homedir } from 'node:os';
import { isAbsolute, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { EngineError, UnsupportedEngineError } from '../errors/index.js';
import { deriveInitramfs } from './initramfs.js';

export interface GuestAssets {
  kernelPath: string;
  initrdPath: string;
  /** Debian package version of the kernel (runtime.json `kernel.version`), or "unknown". */
  kernelVersion: string;
  /** `uname -r` inside the guest. */
  kernelRelease?: string;
  /** The runtime directory the kernel comes from. */
  runtimeDir?: string;
}

/** Bump when runtime.json or the directory layout changes incompatibly. */
export const RUNTIME_FORMAT = 1;

/** Platforms this package ships a runtime for (runtime/<tag>/). */
export const SHIPPED_PLATFORMS: readonly string[] = ['linux-x64'];

/** runtime.json, written by scripts/build-runtime.mjs. */
export interface RuntimeManifest {
  format: number;
  /** Version of the boxlite package the runtime was built for. */
  boxliteVersion: string;
  /** `<process.platform>-<process.arch>` of the host it is for, e.g. linux-x64. */
  platform: string;
  /** 16 hex digits over every file's sha256: names the cache of derived assets. */
  hash: string;
  kernel: { file: string; package: string; version: string; kernelRelease: string; bootProtocol: string };
  initramfs: { file: string };
  /** Every file of the runtime: sha256 and size. */
  files: Record<string, { sha256: string; size: number }>;
}

export interface LoadedRuntime {
  dir: string;
  manifest: RuntimeManifest;
}

/** The runtime's platform tag for this host, as the package names its runtime directories. */
export function platformTag(platform: string = process.platform, arch: string = process.arch): string {
  return `${platform}-${arch}`;
}

/**
 * Where the runtime is: `BOXLITE_RUNTIME_DIR`, else runtime/<platform>/ of the installed package
 * (two levels above this module, in dist/vmm/ as in src/vmm/).
 */
export function runtimeDirFor(env: NodeJS.ProcessEnv = process.env): string {
  const override = env.BOXLITE_RUNTIME_DIR;
  if (override) return isAbsolute(override) ? override : resolve(override);
  return fileURLToPath(new URL(`../../runtime/${platformTag()}`, import.meta.url));
}

/**
 * Where assets derived from a runtime are cached (an initramfs with a BOXLITE_GUEST_AGENT
 * override): per user, outside every home, keyed by the runtime's version and hash.
 */
export function runtimeCacheDir(manifest: Pick<RuntimeManifest, 'boxliteVersion' | 'hash'>, env: NodeJS.ProcessEnv = process.env): string {
  const dataHome = env.XDG_DATA_HOME && isAbsolute(env.XDG_DATA_HOME) ? env.XDG_DATA_HOME : join(homedir(), '.local', 'share');
  return join(dataHome, 'boxlite', 'runtimes', `v${manifest.boxliteVersion}-${manifest.hash}`);
}

function missingRuntimeHint(env: NodeJS.ProcessEnv): string {
  if (env.BOXLITE_RUNTIME_DIR) return 'point BOXLITE_RUNTIME_DIR at a runtime directory (one with runtime.json) or unset it';
  return 'in a source checkout run `npm run setup` (it builds runtime/ with scripts/build-runtime.mjs); ' +
    'an installed boxlite package carries it: reinstall the package, or set BOXLITE_RUNTIME_DIR';
}

function isManifest(m: unknown): m is RuntimeManifest {
  const r = m as RuntimeManifest | null;
  return (
    typeof r === 'object' && r !== null &&
    typeof r.format === 'number' && typeof r.boxliteVersion === 'string' && typeof r.platform === 'string' &&
    typeof r.hash === 'string' && /^[0-9a-f]{16}$/.test(r.hash) &&
    typeof r.kernel?.file === 'string' && typeof r.initramfs?.file === 'string' &&
    typeof r.files === 'object' && r.files !== null
  );
}

/**
 * Reads and checks the runtime in `dir`: a known format, this host's platform, and every
 * listed file present with its recorded size (sizes, not hashes: hashing 66 MB per process
 * would cost more than a boot step; build-runtime.mjs and the package test check the hashes).
 */
export async function loadRuntime(dir: string, env: NodeJS.ProcessEnv = process.env): Promise<LoadedRuntime> {
  const host = platformTag();
  if (!env.BOXLITE_RUNTIME_DIR && !SHIPPED_PLATFORMS.includes(host)) {
    throw new UnsupportedEngineError(
      `boxlite ships a guest runtime for ${SHIPPED_PLATFORMS.join(', ')} only; this host is ${host} ` +
        '(set BOXLITE_RUNTIME_DIR to a runtime built for it)',
    );
  }
  let text: string;
  try {
    text = await readFile(join(dir, 'runtime.json'), 'utf8');
  } catch {
    throw new EngineError(`guest runtime not found: ${join(dir, 'runtime.json')} is missing; ${missingRuntimeHint(env)}`);
  }
  let manifest: unknown;
  try {
    manifest = JSON.parse(text);
  } catch {
    manifest = undefined;
  }
  if (!isManifest(manifest)) {
    throw new EngineError(`guest runtime ${join(dir, 'runtime.json')} is not a valid manifest; ${missingRuntimeHint(env)}`);
  }
  if (manifest.format !== RUNTIME_FORMAT) {
    throw new EngineError(
      `guest runtime in ${dir} has format ${manifest.format}, this boxlite reads format ${RUNTIME_FORMAT}; ${missingRuntimeHint(env)}`,
    );
  }
  if (manifest.platform !== host) {
    throw new UnsupportedEngineError(`guest runtime in ${dir} is for ${manifest.platform}, this host is ${host}`);
  }
  for (const [name, { size }] of Object.entries(manifest.files)) {
    if (!/^[\w.-]+$/.test(name)) throw new EngineError(`guest runtime ${join(dir, 'runtime.json')} lists a bad file name "${name}"`);
    let actual: number;
    try {
      actual = (await stat(join(dir, name))).size;
    } catch {
      throw new EngineError(`guest runtime in ${dir} is incomplete: ${name} is missing; ${missingRuntimeHint(env)}`);
    }
    if (actual !== size) {
      throw new EngineError(`guest runtime in ${dir} is damaged: ${name} has ${actual} bytes, runtime.json says ${size}; ${missingRuntimeHint(env)}`);
    }
  }
  for (const f of [manifest.kernel.file, manifest.initramfs.file]) {
    if (!(f in manifest.files)) throw new EngineError(`guest runtime ${join(dir, 'runtime.json')} does not list ${f} in files`);
  }
  return { dir, manifest };
}

async function readableFile(path: string, what: string): Promise<string> {
  try {
    await access(path, constants.R_OK);
  } catch {
    throw new EngineError(`${what} not found at ${path}`);
  }
  return path;
}

/**
 * The kernel and initramfs to boot. From the runtime as shipped; when `BOXLITE_GUEST_AGENT`
 * (or `BOXLITE_BUSYBOX`) names another binary, an initramfs with it swapped in is derived
 * once into the per-user runtime cache.
 */
export async function locateGuestAssets(env: NodeJS.ProcessEnv = process.env): Promise<GuestAssets> {
  const { dir, manifest } = await loadRuntime(runtimeDirFor(env), env);
  const base = join(dir, manifest.initramfs.file);
  const agentBinary = env.BOXLITE_GUEST_AGENT ? await readableFile(env.BOXLITE_GUEST_AGENT, 'guest agent (BOXLITE_GUEST_AGENT)') : undefined;
  const busyboxBinary = env.BOXLITE_BUSYBOX ? await readableFile(env.BOXLITE_BUSYBOX, 'toolbox busybox (BOXLITE_BUSYBOX)') : undefined;
  let initrdPath = base;
  if (agentBinary || busyboxBinary) {
    const outDir = runtimeCacheDir(manifest, env);
    try {
      initrdPath = await deriveInitramfs({ base, agentBinary, busyboxBinary, outDir });
    } catch (err) {
      throw new EngineError(`cannot derive an initramfs in ${outDir}: ${(err as Error).message}`, { cause: err });
    }
  }
  return {
    kernelPath: join(dir, manifest.kernel.file),
    initrdPath,
    kernelVersion: manifest.kernel.version || 'unknown',
    kernelRelease: manifest.kernel.kernelRelease,
    runtimeDir: dir,
  };
}
