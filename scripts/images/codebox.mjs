// The `codebox` test image: a stand-in for `python:slim` (CodeBox's default image) built offline
// from Debian 12's python3.11 + python3-pip .debs (docs: ../shared/design/BOXTYPES.md §2.3).
//
//   node scripts/make-test-image.mjs .cache/images/codebox --variant codebox [--debs DIR]
//
// What CodeBox needs from it, as python:slim provides: /usr/local/bin/python (the reference
// hardcodes that path), `pip` on PATH installing as root into a directory on sys.path, no PEP 668
// block, LANG=C.UTF-8, Cmd ["python3"]. The .debs are unpacked without their maintainer scripts, so
// what those scripts would have done is done here (BOXTYPES.md §2.4): precompiled .pyc files
// (py3compile), the CA bundle (update-ca-certificates), and EXTERNALLY-MANAGED removed.
//
// Cached by content: the layout is rebuilt only when the .debs, the busybox binary or this recipe
// change (the key is in OUTDIR/boxlite-build-key), so setup.sh re-runs take about a second.

import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { busyboxEntries, chrootRun, fetchDebs, pruneDebRoot, tarLayer, treeEntries, writeOciLayout } from '../make-test-image.mjs';
import { cachedBuild, compilePycs, PATH_ENV, recipeHash, run, saveBuild, sha256 } from './common.mjs';

/**
 * `apt-get -s install python3.11 python3-pip libc-bin` on an empty system, without recommends,
 * trimmed of what an unpacked image never runs: tar, dpkg, debconf, openssl (the CLI; libssl3
 * stays) and their libraries (libacl1, libmd0, libselinux1, libpcre2-8-0, libzstd1).
 * libc-bin brings the C.utf8 locale, ldd and ldconfig.
 */
export const CODEBOX_PACKAGES = [
  'gcc-12-base', 'libc6', 'libgcc-s1', 'libbz2-1.0', 'liblzma5', 'zlib1g', 'libc-bin', 'libssl3',
  'libpython3.11-minimal', 'libexpat1', 'python3.11-minimal', 'python3-minimal', 'media-types', 'libcrypt1',
  'libdb5.3', 'libffi8', 'libtinfo6', 'libncursesw6', 'libcom-err2', 'libkrb5support0', 'libk5crypto3',
  'libkeyutils1', 'libkrb5-3', 'libgssapi-krb5-2', 'libtirpc-common', 'libtirpc3', 'libnsl2', 'readline-common',
  'libreadline8', 'libsqlite3-0', 'libuuid1', 'libpython3.11-stdlib', 'python3.11', 'libpython3-stdlib', 'python3',
  'ca-certificates', 'python3-lib2to3', 'python3-distutils', 'python3-pkg-resources', 'python3-setuptools',
  'python3-wheel', 'python3-pip',
];

const ENV = [PATH_ENV, 'LANG=C.UTF-8'];

/** The fixups of the maintainer scripts that never ran, on the unpacked .debs in debRoot. */
function fixups(debRoot) {
  // PEP 668: Debian's guard makes `pip install` as root refuse; python:slim has no such file.
  fs.rmSync(path.join(debRoot, 'usr/lib/python3.11/EXTERNALLY-MANAGED'), { force: true });
  // The reference's CodeBox.run runs exactly /usr/local/bin/python (python:slim's path).
  fs.mkdirSync(path.join(debRoot, 'usr/local/bin'), { recursive: true });
  fs.symlinkSync('/usr/bin/python3.11', path.join(debRoot, 'usr/local/bin/python'));
  // update-ca-certificates (postinst) would write the bundle pip and Debian's certifi read.
  const mozilla = path.join(debRoot, 'usr/share/ca-certificates/mozilla');
  const certs = fs.readdirSync(mozilla).filter((f) => f.endsWith('.crt')).sort();
  fs.mkdirSync(path.join(debRoot, 'etc/ssl/certs'), { recursive: true });
  fs.writeFileSync(path.join(debRoot, 'etc/ssl/certs/ca-certificates.crt'), certs.map((f) => fs.readFileSync(path.join(mozilla, f), 'utf8')).join(''));
}

/** The checks a python:slim user relies on, run in the staging root before the layout is written. */
function verify(staging) {
  const out = chrootRun(staging, ['/bin/sh', '-c',
    "/usr/local/bin/python -c 'import sys, json, ssl, sqlite3; print(sys.version_info[:2])' && pip --version && " +
    "test ! -e /usr/lib/python3.11/EXTERNALLY-MANAGED && test -s /etc/ssl/certs/ca-certificates.crt && " +
    'test -f /usr/lib/python3/dist-packages/pip/__pycache__/__init__.cpython-311.pyc && echo ok']);
  if (!/\(3, 11\)/.test(out) || !/^pip \d+/m.test(out) || !/^ok$/m.test(out)) throw new Error(`codebox image check failed:\n${out}`);
}

export async function makeCodeboxImage(outDir, opts = {}) {
  const debs = fetchDebs(CODEBOX_PACKAGES, opts.debsDir);
  const bbPath = opts.busybox ?? '/bin/busybox';
  const key = sha256(
    JSON.stringify({
      recipe: recipeHash(import.meta.url),
      busybox: sha256(fs.readFileSync(bbPath)),
      debs: debs.map((d) => [path.basename(d.file), fs.statSync(d.file).size]),
      ref: opts.ref ?? 'latest',
    }),
  );
  const result = (res) => ({ ...res, debs: debs.map(({ pkg, version }) => ({ pkg, version })) });
  const cached = cachedBuild(outDir, key);
  if (cached) return result(cached);

  const work = fs.mkdtempSync(path.join(os.tmpdir(), 'boxlite-codebox-image-'));
  try {
    const debRoot = path.join(work, 'layer');
    fs.mkdirSync(debRoot);
    for (const d of debs) run('dpkg-deb', ['-x', d.file, debRoot]);
    pruneDebRoot(debRoot);
    fixups(debRoot);
    const bbTar = await tarLayer(busyboxEntries(bbPath));
    const staging = compilePycs(work, bbTar, debRoot);
    verify(staging);
    const pyTar = await tarLayer(treeEntries(debRoot));
    const res = writeOciLayout(outDir, {
      layers: [
        { tar: bbTar, compression: 'gzip' },
        { tar: pyTar, compression: 'gzip' },
      ],
      config: { Env: ENV, Cmd: ['python3'], WorkingDir: '/' },
      refName: opts.ref ?? 'latest',
    });
    saveBuild(outDir, key, res);
    return result(res);
  } finally {
    fs.rmSync(work, { recursive: true, force: true });
  }
}
