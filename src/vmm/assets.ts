// Where the guest kernel and initramfs live under $BOXLITE_HOME/init, and keeping the
// initramfs current with the agent binary and the installed modules.
import { constants } from 'node:fs';
import { access, readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { EngineError } from '../errors/index.js';
import { buildInitramfs } from './initramfs.js';

export interface GuestAssets {
  kernelPath: string;
  initrdPath: string;
  /** Debian package version of the kernel (kernel.json `version`), or "unknown". */
  kernelVersion: string;
}

interface KernelManifest {
  version?: unknown;
  kernel?: unknown;
}

async function readable(path: string): Promise<boolean> {
  try {
    await access(path, constants.R_OK);
    return true;
  } catch {
    return false;
  }
}

export function kernelDirOf(homeDir: string): string {
  return join(homeDir, 'init', 'kernel');
}

/**
 * Resolves the kernel installed by scripts/fetch-kernel.sh and the initramfs for
 * `agentBinary`, building the initramfs when it is missing or stale (its name is a content
 * hash, so a changed agent or module set gives a new file).
 */
export async function locateGuestAssets(homeDir: string, agentBinary: string): Promise<GuestAssets> {
  const kernelDir = kernelDirOf(homeDir);
  let manifest: KernelManifest = {};
  try {
    manifest = JSON.parse(await readFile(join(kernelDir, 'kernel.json'), 'utf8')) as KernelManifest;
  } catch {
    // no manifest: take whichever image is there
  }
  const names = [manifest.kernel, 'vmlinux', 'vmlinuz'].filter(
    (f): f is string => typeof f === 'string' && /^[\w.-]+$/.test(f),
  );
  let kernelPath: string | undefined;
  for (const f of names) {
    if (await readable(join(kernelDir, f))) {
      kernelPath = join(kernelDir, f);
      break;
    }
  }
  if (!kernelPath) {
    throw new EngineError(`guest kernel not found at ${kernelDir}; run \`npm run setup\``);
  }
  if (!(await readable(agentBinary))) {
    throw new EngineError(`guest agent not found at ${agentBinary}; run \`npm run setup\``);
  }
  const initrdPath = await buildInitramfs({ agentBinary, kernelDir, outDir: join(homeDir, 'init') });
  return {
    kernelPath,
    initrdPath,
    kernelVersion: typeof manifest.version === 'string' ? manifest.version : 'unknown',
  };
}
