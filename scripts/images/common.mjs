// Helpers shared by the box-type image recipes (codebox.mjs, desktop.mjs, browserbox.mjs): the
// maintainer-script fixups every .deb-based image needs (BOXTYPES.md §2.4), the content-keyed
// layout cache, and the downloads more than one recipe makes (Debian's nodejs, npm's tarball).
// A change here changes every recipe's build key (recipeHash), so cached layouts are rebuilt.

import { execFileSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { fileURLToPath } from 'node:url';
import { chrootRun } from '../make-test-image.mjs';

export const REPO_ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../..');
export const PATH_ENV = 'PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin';
/** npm from the registry's tarball (Debian's npm is 408 node-* packages); one file for all images. */
export const NPM_VERSION = '10.9.9';
/** Where a layout stores the key it was built from. */
export const KEY_FILE = 'boxlite-build-key';

// busybox-static has no nohup, and every reference command is `sh -c "nohup … &"`.
export const NOHUP_SHIM = '#!/bin/sh\n# busybox-static has no nohup: ignore SIGHUP, run the command\ntrap "" HUP\nexec "$@"\n';

export const run = (cmd, args, opts = {}) =>
  execFileSync(cmd, args, { encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'], maxBuffer: 64 << 20, ...opts });
export const sha256 = (buf) => createHash('sha256').update(buf).digest('hex');

/** Hash of a recipe (its import.meta.url) together with this module, for the build key. */
export const recipeHash = (recipeUrl) => sha256(fs.readFileSync(fileURLToPath(recipeUrl)) + fs.readFileSync(fileURLToPath(import.meta.url)));

/** Writes root/rel (replacing whatever a .deb put there, a symlink included) with mode. */
export function writeFile(root, rel, content, mode = 0o644) {
  const file = path.join(root, rel);
  fs.mkdirSync(path.dirname(file), { recursive: true });
  fs.rmSync(file, { force: true });
  fs.writeFileSync(file, content, { mode });
  fs.chmodSync(file, mode);
}

/** The result stored in outDir for this key ({ ...res, cached: true }), or null: build. */
export function cachedBuild(outDir, key) {
  try {
    const cached = JSON.parse(fs.readFileSync(path.join(outDir, KEY_FILE), 'utf8'));
    if (cached.key === key && fs.existsSync(path.join(outDir, 'index.json'))) return { ...cached.res, cached: true };
  } catch {
    // no (readable) key: build
  }
  return null;
}

/** Records that outDir holds the build of key (read back by cachedBuild). */
export function saveBuild(outDir, key, res) {
  fs.writeFileSync(path.join(outDir, KEY_FILE), JSON.stringify({ key, res }));
}

/** Every directory named __pycache__ under root, relative to it. */
function pycacheDirs(root, rel = '') {
  const out = [];
  for (const d of fs.readdirSync(path.join(root, rel), { withFileTypes: true })) {
    if (!d.isDirectory()) continue;
    const r = rel ? `${rel}/${d.name}` : d.name;
    if (d.name === '__pycache__') out.push(r);
    else out.push(...pycacheDirs(root, r));
  }
  return out;
}

/**
 * Makes work/staging (busybox + debRoot), compiles there the .pyc files py3compile (a postinst)
 * would have written, copies them back into debRoot, and returns the staging root. unchecked-hash
 * pycs: our tar layers reset every mtime, which would make timestamp pycs stale, and every fresh
 * box would recompile what it imports (pip, PIL: seconds under TCG). PYTHONDONTWRITEBYTECODE and
 * -f: without them the modules compileall itself imports get timestamp pycs first, carrying this
 * build's mtimes (fs.cpSync does not keep them), which compileall then keeps — stale in the box
 * and a different image digest on every build.
 */
export function compilePycs(work, bbTar, debRoot) {
  const staging = path.join(work, 'staging');
  fs.mkdirSync(staging);
  fs.writeFileSync(path.join(work, 'busybox.tar'), bbTar);
  run('tar', ['-xf', path.join(work, 'busybox.tar'), '-C', staging, '--exclude=dev-fixture/*']);
  fs.cpSync(debRoot, staging, { recursive: true, verbatimSymlinks: true });
  chrootRun(staging, ['/usr/bin/env', 'PYTHONHASHSEED=0', 'PYTHONDONTWRITEBYTECODE=1', '/usr/bin/python3.11', '-m', 'compileall', '-q', '-f', '-j1',
    '--invalidation-mode', 'unchecked-hash', '/usr/lib/python3.11', '/usr/lib/python3/dist-packages']);
  for (const rel of pycacheDirs(path.join(staging, 'usr/lib'))) {
    fs.cpSync(path.join(staging, 'usr/lib', rel), path.join(debRoot, 'usr/lib', rel), { recursive: true });
  }
  return staging;
}

/** The ELF files among `globs` in the staging root whose libraries its own loader cannot find. */
export function missingLibraries(staging, globs) {
  return chrootRun(staging, ['/bin/sh', '-c',
    `for f in ${globs.join(' ')}; do ` +
    '[ -f "$f" ] && [ ! -L "$f" ] && head -c 4 "$f" | grep -q ELF && ' +
    '/lib64/ld-linux-x86-64.so.2 --list "$f" 2>&1 | grep "not found" | sed "s|^|$f: |"; done; true']).trim();
}

/** Debian's own nodejs version: the host may have NodeSource's, which no enabled source ships. */
export function debianNodeVersion() {
  for (const line of run('apt-cache', ['madison', 'nodejs']).split('\n')) {
    const m = /^\s*nodejs\s*\|\s*(\S+)\s*\|\s*(\S+)/.exec(line);
    if (m && /debian\.org/.test(m[2])) return m[1];
  }
  throw new Error('no Debian nodejs version in apt-cache madison (apt-get update?)');
}

/** npm's registry tarball in .cache/npm, downloaded once (offline rebuilds afterwards). */
export function fetchNpmTarball(npmArgs = []) {
  const dir = path.join(REPO_ROOT, '.cache', 'npm');
  const tgz = path.join(dir, `npm-${NPM_VERSION}.tgz`);
  if (!fs.existsSync(tgz)) {
    fs.mkdirSync(dir, { recursive: true });
    run('npm', ['pack', `npm@${NPM_VERSION}`, '--pack-destination', dir, '--no-audit', '--no-fund', '--loglevel=error', ...npmArgs]);
  }
  return tgz;
}
