// `browserbox` test image: stands in for mcr.microsoft.com/playwright:v1.58.0-jammy, offline.
//
//   node scripts/make-test-image.mjs .cache/images/browserbox --variant browserbox [--debs DIR]
//   node scripts/make-test-image.mjs .cache/images/browserbox-firefox --variant browserbox-firefox   (+ firefox-esr)
//
// BrowserBox (src/sdk/browserbox.ts) runs the reference's fixed shell commands, so this image
// provides exactly what they use (BOXTYPES.md §2.3 "browserbox", verified recipe):
//   - Debian's chromium-headless-shell, nodejs (Debian's 18, not the host's NodeSource build),
//     python3 (the CDP forwarder), curl (the readiness polls), fonts, a CA bundle;
//   - npm 10.9.9 from the registry tarball (Debian's npm is 408 node-* packages) and
//     playwright@1.58.0 installed globally, plus a pre-filled npm cache in /root/.npm and
//     `offline=true` in the global npmrc, so `npx -y playwright@1.58.0 run-server` resolves from
//     the cache and runs the global install instead of hanging in network retries;
//   - /ms-playwright/**/chrome-linux64/chrome (and Playwright's headless-shell path) as regular
//     files (`find -type f` in endpoint()) that exec Debian's chromium-headless-shell;
//   - a `nohup` shim: Debian's busybox-static has none, and every reference command is
//     `sh -c "nohup … &"`.
// The .debs are the apt closure of a few roots onto an empty system (resolved with `apt-get -s`),
// minus what an unpacked image never runs (mesa/LLVM, perl, dpkg, debconf…); they are downloaded
// once into .cache/debs and reused offline. The finished layout is cached by content: a key over
// the .deb files, npm tarballs, busybox and this script is stored in the layout, and a re-run with
// the same key returns at once.

import { createHash } from 'node:crypto';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { busyboxEntries, MTIME, pruneDebRoot, tarLayer, writeOciLayout } from '../make-test-image.mjs';
import { debianNodeVersion, fetchNpmTarball, KEY_FILE, missingLibraries, NOHUP_SHIM, NPM_VERSION, PATH_ENV, recipeHash, REPO_ROOT, run, writeFile } from './common.mjs';

export const PLAYWRIGHT_VERSION = '1.58.0';

/** What the reference's commands and Playwright need; apt resolves the rest. */
export const BROWSERBOX_ROOTS = [
  'chromium-headless-shell',
  'nodejs',
  'python3.11',
  'curl',
  'fonts-liberation',
  'fonts-dejavu-core',
  'libc-bin',
  'ca-certificates',
  'libgmp10', // curl needs it through gnutls
];

/** In the closure but never used by an unpacked headless image (GL drivers, package tools, perl). */
export const BROWSERBOX_DROP = new Set([
  'tar',
  'dpkg',
  'debconf',
  'sysvinit-utils',
  'lsb-base',
  'libgl1-mesa-dri',
  'libglx-mesa0',
  'libllvm15',
  'libz3-4',
  'libsensors5',
  'libsensors-config',
  'xdg-utils',
  'x11-utils',
  'perl',
  'perl-base',
  'perl-modules-5.36',
  'libperl5.36',
]);

/** The firefox variant's extra root (WebDriver BiDi for endpoint(); not Playwright's patched build). */
export const FIREFOX_ROOT = 'firefox-esr';

/** Dropped from the firefox closure besides BROWSERBOX_DROP: init, PAM, dbus and desktop parts. */
export const FIREFOX_DROP = new Set([
  'adduser', 'adwaita-icon-theme', 'dbus', 'dbus-bin', 'dbus-daemon', 'dbus-session-bus-common', 'dbus-system-bus-common',
  'dbus-user-session', 'dconf-service', 'dmsetup', 'init-system-helpers', 'libpam-modules', 'libpam-modules-bin',
  'libpam-runtime', 'libpam-systemd', 'mount', 'passwd', 'procps', 'systemd', 'systemd-sysv', 'usrmerge',
  'libfile-find-rule-perl', 'libnumber-compare-perl', 'libtext-glob-perl', 'gtk-update-icon-cache',
]);

const debFileName = (pkg, version, arch) => `${pkg}_${version.replace(/:/g, '%3a')}_${arch}.deb`;

/**
 * [{pkg, version, arch}] of the closure, resolved by apt against an empty dpkg status; written to
 * debsDir/browserbox.resolved so that a later offline build (no apt lists) uses the same set.
 */
function resolveClosure(debsDir, firefox) {
  const listFile = path.join(debsDir, firefox ? 'browserbox-firefox.resolved' : 'browserbox.resolved');
  const drop = (name) => BROWSERBOX_DROP.has(name) || (firefox && FIREFOX_DROP.has(name));
  try {
    const empty = path.join(os.tmpdir(), `boxlite-empty-status-${process.pid}`);
    fs.writeFileSync(empty, '');
    const roots = [...BROWSERBOX_ROOTS, ...(firefox ? [FIREFOX_ROOT] : [])].map((p) => (p === 'nodejs' ? `nodejs=${debianNodeVersion()}` : p));
    const out = run('apt-get', ['-s', '-o', `Dir::State::status=${empty}`, '-o', 'APT::Install-Recommends=false', 'install', ...roots]);
    fs.rmSync(empty, { force: true });
    const pkgs = [];
    for (const line of out.split('\n')) {
      // Inst libc6 (2.36-9+deb12u14 Debian-Security:12/stable-security [amd64])
      const m = /^Inst (\S+) \((\S+) .*\[(\S+)\]\)/.exec(line);
      if (m && !drop(m[1])) pkgs.push({ pkg: m[1], version: m[2], arch: m[3] });
    }
    if (pkgs.length < 50) throw new Error(`apt resolved only ${pkgs.length} packages`);
    pkgs.sort((a, b) => (a.pkg < b.pkg ? -1 : 1));
    fs.writeFileSync(listFile, pkgs.map((p) => `${p.pkg} ${p.version} ${p.arch}\n`).join(''));
    return pkgs;
  } catch (err) {
    if (!fs.existsSync(listFile)) throw new Error(`cannot resolve the browserbox packages: ${err.stderr || err.message}`);
    console.error('make-test-image: apt cannot resolve the browserbox packages; using the cached list');
    return fs
      .readFileSync(listFile, 'utf8')
      .trim()
      .split('\n')
      .map((l) => {
        const [pkg, version, arch] = l.split(' ');
        return { pkg, version, arch };
      });
  }
}

/** The .deb files of the closure, downloaded (one apt-get call) only when not cached. */
function fetchClosure(debsDir, firefox) {
  fs.mkdirSync(debsDir, { recursive: true });
  const pkgs = resolveClosure(debsDir, firefox);
  const missing = pkgs.filter((p) => !fs.existsSync(path.join(debsDir, debFileName(p.pkg, p.version, p.arch))));
  if (missing.length) {
    console.error(`make-test-image: downloading ${missing.length} .debs into ${debsDir}`);
    const sandbox = process.getuid?.() === 0 ? ['-o', 'APT::Sandbox::User=root'] : [];
    run('apt-get', ['download', ...sandbox, '-q', ...missing.map((p) => `${p.pkg}=${p.version}`)], { cwd: debsDir, stdio: ['ignore', 'pipe', 'inherit'] });
  }
  return pkgs.map((p) => ({ ...p, file: path.join(debsDir, debFileName(p.pkg, p.version, p.arch)) }));
}

/**
 * npm tarball and a dedicated npm cache with playwright(-core) in it, kept under .cache/npm so a
 * rebuild works offline. Returns { npmTgz, cacheDir }.
 */
function fetchNpmParts() {
  const dir = path.join(REPO_ROOT, '.cache', 'npm');
  const cacheDir = path.join(dir, 'browserbox-cache');
  fs.mkdirSync(cacheDir, { recursive: true });
  const common = ['--cache', cacheDir, '--prefer-offline', '--no-audit', '--no-fund', '--loglevel=error'];
  const npmTgz = fetchNpmTarball(['--cache', cacheDir, '--prefer-offline']);
  // The cache the guest's npx reads: packuments and tarballs of playwright and playwright-core.
  // Filled once: every `npm cache add` appends timestamped index entries, which would change the
  // layer (and the image digest) on each build.
  const filled = path.join(dir, `browserbox-cache-${PLAYWRIGHT_VERSION}.done`);
  if (!fs.existsSync(filled)) {
    run('npm', ['cache', 'add', `playwright@${PLAYWRIGHT_VERSION}`, `playwright-core@${PLAYWRIGHT_VERSION}`, ...common]);
    fs.writeFileSync(filled, '');
  }
  return { npmTgz, cacheDir, common };
}

const sha256File = (h, file) => h.update(fs.readFileSync(file));

function buildKey(debs, npmTgz, busyboxPath, firefox, ref) {
  const h = createHash('sha256');
  h.update(firefox ? 'firefox\n' : 'chromium\n');
  // The ref name is in index.json: a layout built under another --ref is not this build.
  h.update(`ref ${ref}\n`);
  h.update(recipeHash(import.meta.url));
  for (const d of debs) h.update(`${path.basename(d.file)}\n`);
  sha256File(h, npmTgz);
  sha256File(h, busyboxPath);
  h.update(`${PLAYWRIGHT_VERSION} ${NPM_VERSION}\n`);
  return h.digest('hex');
}

/** Deterministic tar of a directory tree (GNU tar: sorted, fixed mtime and owner, no atime/ctime). */
function tarTree(root, outFile) {
  const names = fs.readdirSync(root).sort();
  run('tar', [
    '--sort=name',
    `--mtime=@${MTIME}`,
    '--owner=0',
    '--group=0',
    '--numeric-owner',
    '--format=posix',
    '--pax-option=exthdr.name=%d/PaxHeaders/%f,delete=atime,delete=ctime',
    '--no-acls',
    '--no-xattrs',
    '-C',
    root,
    '-cf',
    outFile,
    ...names,
  ]);
  return fs.readFileSync(outFile);
}

/** The ELF files of the image whose libraries its own loader cannot find. */
const BROWSERBOX_ELF_GLOBS = ['/usr/bin/*', '/usr/lib/chromium/*', '/usr/lib/firefox-esr/firefox-esr', '/usr/lib/x86_64-linux-gnu/*.so*'];

/** Offline smoke test in the build root: the reference's run-server command answers /json. */
function smokeRunServer(staging) {
  const script =
    'mount -t proc proc /proc; mount -t tmpfs tmpfs /tmp; ip link set lo up 2>/dev/null || ifconfig lo up; ' +
    'cd /; export HOME=/root PLAYWRIGHT_BROWSERS_PATH=/ms-playwright; ' +
    'nohup npx -y playwright@1.58.0 run-server --port 3000 --host 0.0.0.0 > /tmp/playwright.log 2>&1 & ' +
    'i=0; while [ $i -lt 120 ]; do curl -sf http://127.0.0.1:3000/json && exit 0; sleep 0.5; i=$((i+1)); done; ' +
    'cat /tmp/playwright.log; exit 1';
  // An empty network namespace: only loopback, so any registry access would fail.
  return run('unshare', ['--net', '--mount', '--pid', '--fork', 'chroot', staging, '/bin/sh', '-c', script], {
    env: { PATH: PATH_ENV.slice(5), LANG: 'C.UTF-8' },
    timeout: 120_000,
  });
}

/** The reference's firefox command in the build root: WebDriver BiDi must come up. */
function smokeFirefox(staging) {
  const script =
    'mount -t proc proc /proc; mount -t tmpfs tmpfs /tmp; ip link set lo up 2>/dev/null || ifconfig lo up; export HOME=/root; ' +
    'FF=$(find /ms-playwright -name firefox -type f | head -1); mkdir -p /tmp/firefox-profile; ' +
    'nohup $FF --headless --no-remote --profile /tmp/firefox-profile --remote-debugging-port 9222 > /tmp/firefox-bidi.log 2>&1 & ' +
    'i=0; while [ $i -lt 120 ]; do grep -q "WebDriver BiDi listening" /tmp/firefox-bidi.log && exit 0; sleep 0.5; i=$((i+1)); done; ' +
    'cat /tmp/firefox-bidi.log; exit 1';
  try {
    run('unshare', ['--net', '--mount', '--pid', '--fork', 'chroot', staging, '/bin/sh', '-c', script], {
      env: { PATH: PATH_ENV.slice(5), LANG: 'C.UTF-8' },
      timeout: 120_000,
    });
  } catch (err) {
    throw new Error(`firefox BiDi did not start in the build root: ${err.stdout || ''}${err.stderr || err.message}`);
  }
}

export async function makeBrowserboxImage(outDir, opts = {}) {
  const debsDir = opts.debsDir ?? path.join(REPO_ROOT, '.cache', 'debs');
  const busyboxPath = opts.busybox ?? '/bin/busybox';
  const firefox = opts.firefox === true;
  const debs = fetchClosure(debsDir, firefox);
  const { npmTgz, cacheDir, common } = fetchNpmParts();
  const key = buildKey(debs, npmTgz, busyboxPath, firefox, opts.ref ?? 'latest');
  const keyFile = path.join(outDir, KEY_FILE);
  if (fs.existsSync(keyFile) && fs.readFileSync(keyFile, 'utf8').trim() === key && fs.existsSync(path.join(outDir, 'index.json'))) {
    const index = JSON.parse(fs.readFileSync(path.join(outDir, 'index.json'), 'utf8'));
    // No `debs` in the result: the CLI lists them only for a fresh build.
    return { manifestDigest: index.manifests[0].digest, cached: true };
  }

  const work = fs.mkdtempSync(path.join(REPO_ROOT, '.cache', 'browserbox-build-'));
  try {
    const stage = path.join(work, 'layer');
    fs.mkdirSync(stage);
    for (const d of debs) run('dpkg-deb', ['-x', d.file, stage]);
    pruneDebRoot(stage);
    // Vulkan's debug layer (23 MB) is only loaded when a developer asks for it.
    fs.rmSync(path.join(stage, 'usr/lib/chromium/libVkLayer_khronos_validation.so'), { force: true });
    const shell = path.join(stage, 'usr/lib/chromium/chromium-headless-shell');
    if (!fs.existsSync(shell)) throw new Error('chromium-headless-shell .deb has no /usr/lib/chromium/chromium-headless-shell');
    // python3.11 alone ships no python3 name; the CDP forwarder runs `python3`.
    if (!fs.existsSync(path.join(stage, 'usr/bin/python3'))) fs.symlinkSync('python3.11', path.join(stage, 'usr/bin/python3'));
    // update-ca-certificates (a maintainer script) never ran: build its bundle.
    const moz = path.join(stage, 'usr/share/ca-certificates/mozilla');
    const bundle = fs
      .readdirSync(moz)
      .sort()
      .map((f) => fs.readFileSync(path.join(moz, f), 'utf8').trimEnd() + '\n')
      .join('');
    writeFile(stage, 'etc/ssl/certs/ca-certificates.crt', bundle);

    // npm from its registry tarball, linked as Debian's npm would be.
    const npmDir = path.join(stage, 'usr/lib/node_modules/npm');
    fs.mkdirSync(npmDir, { recursive: true });
    run('tar', ['-xzf', npmTgz, '-C', npmDir, '--strip-components=1', '--no-same-owner']);
    for (const [name, target] of [
      ['npm', '../lib/node_modules/npm/bin/npm-cli.js'],
      ['npx', '../lib/node_modules/npm/bin/npx-cli.js'],
    ]) {
      fs.rmSync(path.join(stage, 'usr/bin', name), { force: true });
      fs.symlinkSync(target, path.join(stage, 'usr/bin', name));
    }
    // playwright@1.58.0 in the global tree (/usr/lib/node_modules, /usr/bin/playwright), where
    // npx finds it; neither playwright nor playwright-core has install scripts.
    run('npm', ['install', '-g', '--prefix', path.join(stage, 'usr'), '--ignore-scripts', `playwright@${PLAYWRIGHT_VERSION}`, ...common]);
    fs.cpSync(cacheDir, path.join(stage, 'root/.npm'), { recursive: true });
    fs.rmSync(path.join(stage, 'root/.npm/_logs'), { recursive: true, force: true });
    writeFile(stage, 'usr/etc/npmrc', 'offline=true\nupdate-notifier=false\nfund=false\naudit=false\n');

    writeFile(stage, 'usr/local/bin/nohup', NOHUP_SHIM, 0o755);

    // Playwright's browser paths as regular files running Debian's chromium (revision from
    // playwright-core's browsers.json, as `playwright install` would lay them out).
    const browsersJson = [
      'usr/lib/node_modules/playwright/node_modules/playwright-core/browsers.json',
      'usr/lib/node_modules/playwright-core/browsers.json',
    ]
      .map((p) => path.join(stage, p))
      .find((p) => fs.existsSync(p));
    if (!browsersJson) throw new Error('playwright-core/browsers.json not found in the global install');
    const browsers = JSON.parse(fs.readFileSync(browsersJson, 'utf8')).browsers;
    const rev = (name) => browsers.find((b) => b.name === name)?.revision;
    const wrapper = '#!/bin/sh\nexec /usr/lib/chromium/chromium-headless-shell "$@"\n';
    writeFile(stage, `ms-playwright/chromium_headless_shell-${rev('chromium-headless-shell')}/chrome-headless-shell-linux64/chrome-headless-shell`, wrapper, 0o755);
    writeFile(stage, `ms-playwright/chromium-${rev('chromium')}/chrome-linux64/chrome`, wrapper, 0o755);
    if (firefox) {
      if (!fs.existsSync(path.join(stage, 'usr/lib/firefox-esr/firefox-esr'))) throw new Error('firefox-esr .deb has no /usr/lib/firefox-esr/firefox-esr');
      writeFile(stage, `ms-playwright/firefox-${rev('firefox')}/firefox/firefox`, '#!/bin/sh\nexec /usr/lib/firefox-esr/firefox-esr "$@"\n', 0o755);
    }

    const bbTar = await tarLayer(busyboxEntries(busyboxPath));
    const mainTar = tarTree(stage, path.join(work, 'layer.tar'));

    if (opts.verify !== false) {
      const staging = path.join(work, 'staging');
      fs.mkdirSync(staging);
      fs.writeFileSync(path.join(work, 'busybox.tar'), bbTar);
      run('tar', ['-xf', path.join(work, 'busybox.tar'), '-C', staging, '--exclude=dev-fixture/*']);
      run('tar', ['-xf', path.join(work, 'layer.tar'), '-C', staging]);
      for (const d of ['null', 'zero', 'urandom', 'random']) fs.cpSync(`/dev/${d}`, path.join(staging, 'dev', d));
      const missing = missingLibraries(staging, BROWSERBOX_ELF_GLOBS);
      if (missing) throw new Error(`browserbox image: missing libraries:\n${missing}`);
      const versions = run('chroot', [staging, '/bin/sh', '-c', 'node -v && npm -v && chromium-headless-shell --version 2>/dev/null || /usr/lib/chromium/chromium-headless-shell --version; python3 -c "import socket, threading, re; print(3)"; curl --version | head -1']);
      console.error(`make-test-image: browserbox: ${versions.trim().replace(/\n/g, ' | ')}`);
      const json = smokeRunServer(staging).trim();
      if (!json.includes('wsEndpointPath')) throw new Error(`run-server did not answer /json offline: ${json}`);
      if (firefox) smokeFirefox(staging);
    }

    const res = writeOciLayout(outDir, {
      layers: [
        { tar: bbTar, compression: 'gzip' },
        // Uncompressed: gzip -9 of ~500 MB takes minutes, and the layout stays on this disk.
        { tar: mainTar, compression: 'none' },
      ],
      config: {
        Env: [PATH_ENV, 'LANG=C.UTF-8', 'PLAYWRIGHT_BROWSERS_PATH=/ms-playwright', 'HOME=/root'],
        Cmd: ['/bin/sh'],
        WorkingDir: '/',
      },
      refName: opts.ref ?? 'latest',
    });
    fs.writeFileSync(keyFile, key + '\n');
    return { ...res, debs };
  } finally {
    fs.rmSync(work, { recursive: true, force: true });
  }
}
