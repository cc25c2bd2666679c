import type { NormalizedBoxOptions } from './options.js';

/** The parts of an OCI image config that shape how commands run. */
export interface ImageRunConfig {
  Env?: string[];
  Entrypoint?: string[] | null;
  Cmd?: string[] | null;
  WorkingDir?: string;
  User?: string;
}

/** What a box records about its image (config.json). */
export interface BoxImage {
  /** What the user asked for: an image reference or `oci:<path>`. */
  reference: string;
  manifestDigest: string;
  /** Read-only ext4 base shared by every box of this image. */
  rootfsBase: string;
  config: ImageRunConfig;
}

const DEFAULT_PATH = '/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin';

/** Image env, then box env, then exec env: later keys win, first position is kept (docker semantics). */
export function execEnvironment(
  imageEnv: string[] | undefined,
  boxEnv: Array<[string, string]>,
  execEnv: Array<[string, string]>,
): string[] {
  const merged = new Map<string, string>();
  for (const entry of imageEnv ?? []) {
    const eq = entry.indexOf('=');
    if (eq > 0) merged.set(entry.slice(0, eq), entry.slice(eq + 1));
  }
  for (const [k, v] of [...boxEnv, ...execEnv]) merged.set(k, v);
  if (!merged.has('PATH')) merged.set('PATH', DEFAULT_PATH);
  if (!merged.has('HOME')) merged.set('HOME', '/root');
  return [...merged].map(([k, v]) => `${k}=${v}`);
}

/** The command a box runs when none is given: entrypoint + cmd with docker override rules. */
export function defaultCommand(image: ImageRunConfig, options: Pick<NormalizedBoxOptions, 'entrypoint' | 'cmd'>): string[] {
  const entrypoint = options.entrypoint ?? image.Entrypoint ?? [];
  // An overridden entrypoint drops the image's CMD, as docker does.
  const cmd = options.cmd ?? (options.entrypoint ? [] : image.Cmd ?? []);
  return [...entrypoint, ...cmd];
}
