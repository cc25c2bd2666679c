#!/usr/bin/env node
// Writes a small OCI image layout for tests and the offline quick start.
//
//   node scripts/make-test-image.mjs OUTDIR [--variant busybox|layers|multiarch|python]
//                                    [--busybox PATH] [--ref NAME] [--debs DIR]
//
// busybox (default): Debian's static /bin/busybox with all applet symlinks,
//   users root/boxuser(1000)/nobody, ownership/mode/setuid/device/hard-link
//   fixtures and tiny helper programs in /usr/local/bin:
//     exit-with N        exit with status N
//     ignore-term [S]    ignore SIGTERM, print "ready", sleep S seconds (default 3600)
//     flood BYTES        write exactly BYTES bytes ("x\n" repeated) to stdout
//     orphans N [S]      leave N background `sleep S` orphans behind, then exit
// layers: three tiny layers exercising whiteouts, an opaque directory, a file
//   replaced by a directory (and back), a symlink and hard links.
// multiarch: index.json holds one image index with linux/amd64 (busybox + /arch
//   "amd64") and linux/arm64 (only /arch "arm64"), for `skopeo copy --all`.
// python: busybox + a second layer with Debian's python3.11 (dpkg-deb -x of the
//   .debs `apt-get download`ed into .cache/debs/, or --debs DIR; offline once
//   cached), Cmd ["python3"]. Checked with chroot before it is written.
//
// Output is deterministic (fixed mtimes, sorted entries, fixed gzip header), so
// digests only change when the inputs (e.g. the busybox binary, the .debs) change.
// Self-contained: needs only tar-stream, no build step (python: also dpkg-deb,
// apt-get, tar, chroot).

import { execFileSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';
import * as zlib from 'node:zlib';
import tar from 'tar-stream';

export const MTIME = 1704067200; // 2024-01-01T00:00:00Z
const PATH_ENV = 'PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin';

const OCI_ARCH = { x64: 'amd64', arm64: 'arm64', arm: 'arm', ia32: '386', ppc64: 'ppc64le', s390x: 's390x', riscv64: 'riscv64' };
export const hostArch = () => OCI_ARCH[process.arch] ?? process.arch;

// ---------- generic layout writer ----------

/**
 * Entry: { name, type?: 'file'|'directory'|'symlink'|'link'|'character-device'|'block-device'|'fifo',
 *          mode?, uid?, gid?, mtime? (seconds), content?: Buffer|string, linkname?, devmajor?, devminor?,
 *          pax?: {key: string} }
 */
export async function tarLayer(entries) {
  const pack = tar.pack();
  const chunks = [];
  const done = (async () => {
    for await (const c of pack) chunks.push(c);
  })();
  for (const e of entries) {
    const type = e.type ?? 'file';
    const content = e.content === undefined ? undefined : Buffer.from(e.content);
    const header = {
      name: e.name,
      type,
      mode: e.mode ?? (type === 'directory' ? 0o755 : type === 'symlink' ? 0o777 : 0o644),
      uid: e.uid ?? 0,
      gid: e.gid ?? 0,
      uname: '',
      gname: '',
      mtime: new Date((e.mtime ?? MTIME) * 1000),
      ...(e.linkname !== undefined ? { linkname: e.linkname } : {}),
      ...(e.devmajor !== undefined ? { devmajor: e.devmajor, devminor: e.devminor ?? 0 } : {}),
      ...(e.pax ? { pax: e.pax } : {}),
    };
    await new Promise((resolve, reject) => {
      const cb = (err) => (err ? reject(err) : resolve());
      if (type === 'file') pack.entry({ ...header, size: content?.length ?? 0 }, content ?? Buffer.alloc(0), cb);
      else pack.entry(header, cb);
    });
  }
  pack.finalize();
  await done;
  return Buffer.concat(chunks);
}

/** gzip with a fixed header (mtime 0, OS = Unix) so the bytes do not depend on the host. */
export function gzipDeterministic(buf) {
  const gz = zlib.gzipSync(buf, { level: 9 });
  gz.writeUInt32LE(0, 4);
  gz[9] = 3;
  return gz;
}

const sha256 = (buf) => 'sha256:' + createHash('sha256').update(buf).digest('hex');

function writeBlob(outDir, buf) {
  const digest = sha256(buf);
  const file = path.join(outDir, 'blobs', 'sha256', digest.slice(7));
  fs.mkdirSync(path.dirname(file), { recursive: true });
  if (!fs.existsSync(file)) fs.writeFileSync(file, buf);
  return { digest, size: buf.length };
}

/** Empties outDir for a new layout (refusing to clobber a directory that is not one). */
function resetLayoutDir(outDir) {
  if (fs.existsSync(outDir)) {
    const names = fs.readdirSync(outDir);
    if (names.length > 0 && !names.includes('oci-layout')) {
      throw new Error(`${outDir} exists and is not an OCI layout; refusing to overwrite`);
    }
    fs.rmSync(outDir, { recursive: true, force: true });
  }
  fs.mkdirSync(path.join(outDir, 'blobs', 'sha256'), { recursive: true });
}

/**
 * Writes the layer, config and manifest blobs of one image into outDir/blobs.
 * Returns { manifest: descriptor, manifestDigest, configDigest }.
 */
export function writeImageBlobs(outDir, { layers, config, architecture = hostArch(), created = '2024-01-01T00:00:00Z' }) {
  const layerDescs = [];
  const diffIds = [];
  for (const l of layers) {
    diffIds.push(sha256(l.tar));
    const body = l.compression === 'gzip' ? gzipDeterministic(l.tar) : l.tar;
    const { digest, size } = writeBlob(outDir, body);
    layerDescs.push({
      mediaType: l.compression === 'gzip' ? 'application/vnd.oci.image.layer.v1.tar+gzip' : 'application/vnd.oci.image.layer.v1.tar',
      digest,
      size,
    });
  }
  const configBlob = Buffer.from(
    JSON.stringify({
      created,
      architecture,
      os: 'linux',
      config,
      rootfs: { type: 'layers', diff_ids: diffIds },
      history: layers.map(() => ({ created, created_by: 'scripts/make-test-image.mjs' })),
    }),
  );
  const cfg = writeBlob(outDir, configBlob);
  const manifestBlob = Buffer.from(
    JSON.stringify({
      schemaVersion: 2,
      mediaType: 'application/vnd.oci.image.manifest.v1+json',
      config: { mediaType: 'application/vnd.oci.image.config.v1+json', ...cfg },
      layers: layerDescs,
    }),
  );
  const man = writeBlob(outDir, manifestBlob);
  return {
    manifest: { mediaType: 'application/vnd.oci.image.manifest.v1+json', ...man },
    manifestDigest: man.digest,
    configDigest: cfg.digest,
  };
}

function writeIndexJson(outDir, manifests) {
  const index = { schemaVersion: 2, mediaType: 'application/vnd.oci.image.index.v1+json', manifests };
  fs.writeFileSync(path.join(outDir, 'index.json'), JSON.stringify(index));
  fs.writeFileSync(path.join(outDir, 'oci-layout'), JSON.stringify({ imageLayoutVersion: '1.0.0' }));
}

/**
 * Writes an OCI layout. layers: [{ tar: Buffer, compression: 'gzip'|'none' }].
 * config: the `config` object of the image config. Returns { manifestDigest, configDigest }.
 */
export function writeOciLayout(outDir, { layers, config, refName = 'latest', architecture = hostArch(), created = '2024-01-01T00:00:00Z' }) {
  resetLayoutDir(outDir);
  const img = writeImageBlobs(outDir, { layers, config, architecture, created });
  writeIndexJson(outDir, [
    {
      ...img.manifest,
      annotations: { 'org.opencontainers.image.ref.name': refName },
      platform: { architecture, os: 'linux' },
    },
  ]);
  return { manifestDigest: img.manifestDigest, configDigest: img.configDigest };
}

// ---------- variants ----------

const HELPERS = {
  'exit-with': '#!/bin/sh\n# exit-with N: exit with status N\nexit "${1:-0}"\n',
  'ignore-term':
    '#!/bin/sh\n# ignore-term [SECONDS]: ignore SIGTERM (inherited by sleep), say "ready", sleep\n' +
    "trap '' TERM\necho ready\nexec sleep \"${1:-3600}\"\n",
  flood: '#!/bin/sh\n# flood BYTES: write BYTES bytes ("x\\n" repeated) to stdout\nyes x | head -c "${1:?usage: flood BYTES}"\n',
  orphans:
    '#!/bin/sh\n# orphans N [SECONDS]: leave N background sleeps behind (reparented to PID 1), then exit\n' +
    'i=0\nwhile [ "$i" -lt "${1:-3}" ]; do\n  (sleep "${2:-30}" &)\n  i=$((i + 1))\ndone\n',
};

export function busyboxEntries(busyboxPath = '/bin/busybox') {
  if (!fs.existsSync(busyboxPath)) {
    throw new Error(`${busyboxPath} not found: install busybox-static (Debian) or pass --busybox PATH to a static busybox`);
  }
  const binary = fs.readFileSync(busyboxPath);
  const applets = execFileSync(busyboxPath, ['--list-full'], { encoding: 'utf8' })
    .split('\n')
    .map((s) => s.trim())
    .filter(Boolean);

  const files = new Map(); // name -> entry
  const add = (e) => files.set(e.name, e);
  const dir = (name, mode = 0o755, uid = 0, gid = 0) => add({ name, type: 'directory', mode, uid, gid });

  for (const d of ['bin', 'dev', 'etc', 'home', 'opt', 'proc', 'run', 'sbin', 'sys', 'usr', 'usr/bin', 'usr/sbin', 'usr/local', 'usr/local/bin', 'usr/local/sbin', 'var', 'dev-fixture']) dir(d);
  dir('root', 0o700);
  dir('tmp', 0o1777);
  dir('var/tmp', 0o1777);
  dir('home/boxuser', 0o755, 1000, 1000);

  add({ name: 'bin/busybox', mode: 0o755, content: binary });
  const links = new Set([...applets, 'bin/sh', 'usr/bin/env']);
  links.delete('bin/busybox');
  links.delete('linuxrc'); // initrd-only applet name, not wanted in a container root
  for (const rel of links) {
    const parent = path.posix.dirname(rel);
    if (parent !== '.' && !files.has(parent)) dir(parent);
    add({ name: rel, type: 'symlink', linkname: '/bin/busybox' });
  }

  add({
    name: 'etc/passwd',
    content:
      'root:x:0:0:root:/root:/bin/sh\n' +
      'boxuser:x:1000:1000:boxuser:/home/boxuser:/bin/sh\n' +
      'nobody:x:65534:65534:nobody:/nonexistent:/bin/false\n',
  });
  add({ name: 'etc/group', content: 'root:x:0:\nboxuser:x:1000:\nnogroup:x:65534:\n' });
  add({ name: 'etc/hosts', content: '127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n' });
  add({ name: 'etc/hostname', content: 'boxlite\n' });
  add({ name: 'etc/resolv.conf', content: '' });

  add({ name: 'usr/local/bin/suid-probe', mode: 0o4755, content: binary });
  for (const [name, body] of Object.entries(HELPERS)) add({ name: `usr/local/bin/${name}`, mode: 0o755, content: body });
  add({ name: 'opt/owned-by-1000', mode: 0o644, uid: 1000, gid: 1000, content: 'owned by uid 1000\n' });
  add({ name: 'opt/hardlink-a', mode: 0o644, content: 'one inode, two names\n' });
  add({ name: 'opt/hardlink-b', type: 'link', linkname: 'opt/hardlink-a' });
  add({ name: 'opt/xattr-probe', mode: 0o644, content: 'has a user xattr\n', pax: { 'SCHILY.xattr.user.boxlite': 'probe' } });
  add({ name: 'dev-fixture/null', type: 'character-device', mode: 0o666, devmajor: 1, devminor: 3 });

  // Parents first, then lexical order; hard links after their targets.
  return [...files.values()].sort((a, b) => (a.type === 'link') - (b.type === 'link') || cmp(a.name, b.name));
}

const cmp = (a, b) => (a < b ? -1 : a > b ? 1 : 0);

export async function makeBusyboxImage(outDir, opts = {}) {
  const layer = await tarLayer(busyboxEntries(opts.busybox));
  return writeOciLayout(outDir, {
    layers: [{ tar: layer, compression: 'gzip' }],
    config: { Env: [PATH_ENV], Cmd: ['sh'], WorkingDir: '/' },
    refName: opts.ref ?? 'latest',
  });
}

/**
 * Expected result of the `layers` variant:
 *   /etc/keep "v3"  /etc/added  (no /etc/remove-me)
 *   /data (0750) with only /data/new  (opaque: /data/a, /data/sub hidden)
 *   /replace-me/ dir with /replace-me/inner (was a file)
 *   /swap file (was a directory)
 *   /link-to-keep -> etc/keep
 *   (no /gone)
 *   /hl/orig "new" (nlink 1), /hl/link "old" (the hard link of the old /hl/orig)
 *   /hl/pair-a + /hl/pair-b hard links (nlink 2)
 */
export function layersVariantLayers() {
  const L1 = [
    { name: 'etc/', type: 'directory' },
    { name: 'etc/keep', content: 'v1\n' },
    { name: 'etc/remove-me', content: 'bye\n' },
    { name: 'data/', type: 'directory' },
    { name: 'data/a', content: 'a\n' },
    { name: 'data/sub/', type: 'directory' },
    { name: 'data/sub/c', content: 'c\n' },
    { name: 'replace-me', content: 'file\n' },
    { name: 'gone/', type: 'directory' },
    { name: 'gone/x', content: 'x\n' },
    { name: 'swap/', type: 'directory' },
    { name: 'swap/y', content: 'y\n' },
    { name: 'hl/', type: 'directory' },
    { name: 'hl/orig', content: 'old\n' },
    { name: 'hl/link', type: 'link', linkname: 'hl/orig' },
    { name: 'hl/pair-a', content: 'pair\n', mode: 0o600, uid: 7, gid: 8 },
    { name: 'hl/pair-b', type: 'link', linkname: 'hl/pair-a' },
  ];
  const L2 = [
    { name: 'etc/.wh.remove-me' },
    { name: 'data/', type: 'directory', mode: 0o750 },
    { name: 'data/.wh..wh..opq' },
    { name: 'data/new', content: 'new\n' },
    { name: 'replace-me/', type: 'directory' },
    { name: 'replace-me/inner', content: 'inner\n' },
    { name: 'link-to-keep', type: 'symlink', linkname: 'etc/keep' },
    { name: '.wh.gone' },
  ];
  const L3 = [
    { name: 'etc/keep', content: 'v3\n' },
    { name: 'etc/added', content: 'added\n' },
    { name: 'hl/orig', content: 'new\n' },
    { name: 'swap', content: 'now a file\n' },
  ];
  return [L1, L2, L3];
}

export async function makeLayersImage(outDir, opts = {}) {
  const [l1, l2, l3] = layersVariantLayers();
  return writeOciLayout(outDir, {
    layers: [
      { tar: await tarLayer(l1), compression: 'gzip' },
      { tar: await tarLayer(l2), compression: 'none' },
      { tar: await tarLayer(l3), compression: 'gzip' },
    ],
    config: { Env: [PATH_ENV], Cmd: ['sh'], WorkingDir: '/' },
    refName: opts.ref ?? 'latest',
  });
}

/**
 * `multiarch`: index.json has ONE entry, an image index (ref name `latest` by
 * default) with two platform manifests, so `skopeo copy --all` pushes a
 * multi-arch index:
 *   linux/<host arch> (amd64 here): the busybox image + a layer with /arch = "amd64"
 *   linux/<other>     (arm64 here): one tiny layer with only /arch = "arm64"
 * /arch holds the bare architecture name, no trailing newline. The busybox layer
 * blob is the same as the `busybox` variant's.
 */
export async function makeMultiarchImage(outDir, opts = {}) {
  const host = hostArch();
  const other = host === 'arm64' ? 'amd64' : 'arm64';
  resetLayoutDir(outDir);
  const config = { Env: [PATH_ENV], Cmd: ['sh'], WorkingDir: '/' };
  const archLayer = (arch) => tarLayer([{ name: 'arch', content: arch }]);
  const hostImg = writeImageBlobs(outDir, {
    layers: [
      { tar: await tarLayer(busyboxEntries(opts.busybox)), compression: 'gzip' },
      { tar: await archLayer(host), compression: 'gzip' },
    ],
    config,
    architecture: host,
  });
  const otherImg = writeImageBlobs(outDir, {
    layers: [{ tar: await archLayer(other), compression: 'gzip' }],
    config: { Env: [PATH_ENV], WorkingDir: '/' },
    architecture: other,
  });
  const platforms = [
    { ...hostImg.manifest, platform: { architecture: host, os: 'linux' } },
    { ...otherImg.manifest, platform: { architecture: other, os: 'linux' } },
  ];
  // Spec order: amd64 first.
  if (host !== 'amd64' && other === 'amd64') platforms.reverse();
  const indexBlob = Buffer.from(
    JSON.stringify({ schemaVersion: 2, mediaType: 'application/vnd.oci.image.index.v1+json', manifests: platforms }),
  );
  const idx = writeBlob(outDir, indexBlob);
  writeIndexJson(outDir, [
    {
      mediaType: 'application/vnd.oci.image.index.v1+json',
      ...idx,
      annotations: { 'org.opencontainers.image.ref.name': opts.ref ?? 'latest' },
    },
  ]);
  return {
    manifestDigest: idx.digest,
    indexDigest: idx.digest,
    platforms: {
      [host]: { manifestDigest: hostImg.manifestDigest, configDigest: hostImg.configDigest },
      [other]: { manifestDigest: otherImg.manifestDigest, configDigest: otherImg.configDigest },
    },
  };
}

// ---------- python variant ----------

const REPO_ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');

/**
 * The Debian packages of the python image: python3.11-minimal and the
 * pure-Python stdlib (libpython3.11-stdlib, for json & co.), plus the shared
 * libraries they load that busybox (static) does not have. Not the full apt
 * closure: libpython3.11-stdlib's dependencies on readline, ncurses, db5.3, nis
 * and media-types are left out (those few extension modules fail to import).
 */
export const PYTHON_PACKAGES = [
  'python3.11-minimal',
  'libpython3.11-minimal',
  'libpython3.11-stdlib',
  'libc6',
  'libgcc-s1',
  'zlib1g',
  'libexpat1',
  'libssl3',
  'libffi8',
  'libbz2-1.0',
  'liblzma5',
  'libcrypt1',
  'libuuid1',
  'libsqlite3-0',
];

const run = (cmd, args, opts = {}) => execFileSync(cmd, args, { encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'], ...opts });

function dpkgArch() {
  return run('dpkg', ['--print-architecture']).trim();
}

/** Candidate versions (apt-cache policy, one call: each takes ~1 s); {} when apt knows nothing. */
function candidateVersions(packages) {
  const out = {};
  try {
    let pkg;
    for (const line of run('apt-cache', ['policy', ...packages]).split('\n')) {
      const head = /^(\S+):$/.exec(line);
      if (head) pkg = head[1].replace(/:[a-z0-9]+$/, '');
      const cand = /^\s+Candidate:\s*(\S+)/.exec(line);
      if (pkg && cand && cand[1] !== '(none)') out[pkg] = cand[1];
    }
  } catch {
    // no apt lists: use the cache as is
  }
  return out;
}

/** debs in the cache dir for pkg, newest first (dpkg version order). */
function cachedDebs(debsDir, pkg, arch) {
  const found = fs
    .readdirSync(debsDir)
    .filter((f) => f.startsWith(`${pkg}_`) && (f.endsWith(`_${arch}.deb`) || f.endsWith('_all.deb')))
    .map((f) => ({ file: path.join(debsDir, f), version: decodeURIComponent(f.split('_')[1]) }));
  return found.sort((a, b) => {
    try {
      execFileSync('dpkg', ['--compare-versions', a.version, 'gt', b.version]);
      return -1;
    } catch {
      return 1;
    }
  });
}

/**
 * The .deb files of `packages`, from debsDir (default .cache/debs/) or fetched
 * there with `apt-get download` (the candidate version). Offline, whatever is
 * cached is used (newest version of each package).
 */
export function fetchDebs(packages, debsDir = path.join(REPO_ROOT, '.cache', 'debs')) {
  fs.mkdirSync(debsDir, { recursive: true });
  const arch = dpkgArch();
  const candidates = candidateVersions(packages);
  const out = [];
  for (const pkg of packages) {
    const cand = candidates[pkg];
    let deb = cand && cachedDebs(debsDir, pkg, arch).find((d) => d.version === cand);
    if (!deb) {
      try {
        const sandbox = process.getuid?.() === 0 ? ['-o', 'APT::Sandbox::User=root'] : [];
        run('apt-get', ['download', ...sandbox, '-q', pkg], { cwd: debsDir });
      } catch (err) {
        if (cachedDebs(debsDir, pkg, arch).length === 0) {
          throw new Error(`apt-get download ${pkg} failed and ${debsDir} has no cached copy: ${err.stderr || err.message}`);
        }
      }
      deb = (cand && cachedDebs(debsDir, pkg, arch).find((d) => d.version === cand)) ?? cachedDebs(debsDir, pkg, arch)[0];
    }
    if (!deb) throw new Error(`no .deb for ${pkg} in ${debsDir}`);
    out.push({ pkg, version: deb.version, file: deb.file });
  }
  return out;
}

/** Drops docs (keeping copyright files), man pages, lintian overrides and glibc's iconv modules. */
export function pruneDebRoot(root) {
  for (const rel of ['usr/share/man', 'usr/share/lintian', 'usr/share/info']) fs.rmSync(path.join(root, rel), { recursive: true, force: true });
  const doc = path.join(root, 'usr/share/doc');
  if (fs.existsSync(doc)) {
    for (const pkg of fs.readdirSync(doc)) {
      const d = path.join(doc, pkg);
      if (!fs.lstatSync(d).isDirectory()) continue;
      for (const f of fs.readdirSync(d)) if (f !== 'copyright') fs.rmSync(path.join(d, f), { recursive: true, force: true });
    }
  }
  const usrLib = path.join(root, 'usr/lib');
  if (fs.existsSync(usrLib)) {
    for (const t of fs.readdirSync(usrLib)) fs.rmSync(path.join(usrLib, t, 'gconv'), { recursive: true, force: true });
  }
}

/** Tar entries for every file under root (owner root, fixed mtime, sorted, hard links kept). */
export function treeEntries(root) {
  const entries = [];
  const seen = new Map(); // dev:ino -> first name
  const walk = (rel) => {
    for (const name of fs.readdirSync(path.join(root, rel)).sort(cmp)) {
      const r = rel ? `${rel}/${name}` : name;
      const st = fs.lstatSync(path.join(root, r));
      const mode = st.mode & 0o7777;
      if (st.isDirectory()) {
        entries.push({ name: r, type: 'directory', mode });
        walk(r);
      } else if (st.isSymbolicLink()) {
        entries.push({ name: r, type: 'symlink', linkname: fs.readlinkSync(path.join(root, r)) });
      } else if (st.isFile()) {
        const key = `${st.dev}:${st.ino}`;
        if (st.nlink > 1 && seen.has(key)) entries.push({ name: r, type: 'link', linkname: seen.get(key) });
        else {
          if (st.nlink > 1) seen.set(key, r);
          entries.push({ name: r, mode, content: fs.readFileSync(path.join(root, r)) });
        }
      } else {
        throw new Error(`unexpected file type in a .deb: ${r}`);
      }
    }
  };
  walk('');
  return entries.sort((a, b) => (a.type === 'link') - (b.type === 'link') || cmp(a.name, b.name));
}

/** Runs argv chrooted into root (root via chroot, else an unprivileged user namespace). */
export function chrootRun(root, argv) {
  const [cmd, args] = process.getuid?.() === 0 ? ['chroot', [root, ...argv]] : ['unshare', ['--map-root-user', 'chroot', root, ...argv]];
  return run(cmd, args, { env: { PATH: '/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin', LANG: 'C.UTF-8' } });
}

/**
 * `python`: the busybox layer + a second layer with Debian's python3.11 (see
 * PYTHON_PACKAGES) extracted with `dpkg-deb -x`, and /usr/bin/python3 ->
 * python3.11. Config: Env PATH, Cmd ["python3"]. Deterministic for the same
 * .deb files. Verified by running python3 chrooted into busybox + the layer.
 */
export async function makePythonImage(outDir, opts = {}) {
  const debs = fetchDebs(PYTHON_PACKAGES, opts.debsDir);
  const work = fs.mkdtempSync(path.join(os.tmpdir(), 'boxlite-python-image-'));
  try {
    const debRoot = path.join(work, 'layer');
    fs.mkdirSync(debRoot);
    for (const d of debs) run('dpkg-deb', ['-x', d.file, debRoot]);
    pruneDebRoot(debRoot);
    if (!fs.existsSync(path.join(debRoot, 'usr/bin/python3'))) fs.symlinkSync('python3.11', path.join(debRoot, 'usr/bin/python3'));
    const bbTar = await tarLayer(busyboxEntries(opts.busybox));
    const pyTar = await tarLayer(treeEntries(debRoot));

    if (opts.verify !== false) {
      // The staging root: the busybox layer, then the python layer on top.
      const staging = path.join(work, 'staging');
      fs.mkdirSync(staging);
      fs.writeFileSync(path.join(work, 'busybox.tar'), bbTar);
      fs.writeFileSync(path.join(work, 'python.tar'), pyTar);
      run('tar', ['-xf', path.join(work, 'busybox.tar'), '-C', staging, '--exclude=dev-fixture/*']);
      run('tar', ['-xf', path.join(work, 'python.tar'), '-C', staging]);
      try {
        const one = chrootRun(staging, ['/usr/bin/python3', '-c', 'print(1)']).trim();
        const ver = chrootRun(staging, ['/bin/sh', '-c', "python3 -c 'import json, os, sys; print(sys.version)'"]).trim();
        if (one !== '1' || !ver.startsWith('3.11')) throw new Error(`unexpected output: ${one} / ${ver}`);
      } catch (err) {
        if (err.code === 'ENOENT' || /Operation not permitted|unshare failed/.test(String(err.stderr))) {
          console.error(`make-test-image: cannot chroot to check the python image (${String(err.stderr || err.message).trim()}); skipped`);
        } else {
          throw new Error(`python image does not run: ${String(err.stderr || err.message).trim()}`);
        }
      }
    }

    const res = writeOciLayout(outDir, {
      layers: [
        { tar: bbTar, compression: 'gzip' },
        { tar: pyTar, compression: 'gzip' },
      ],
      config: { Env: [PATH_ENV], Cmd: ['python3'], WorkingDir: '/' },
      refName: opts.ref ?? 'latest',
    });
    return { ...res, debs: debs.map(({ pkg, version }) => ({ pkg, version })) };
  } finally {
    fs.rmSync(work, { recursive: true, force: true });
  }
}

// ---------- CLI ----------

const VARIANTS = 'busybox|layers|multiarch|python|codebox|desktop|skillbox-test|browserbox|browserbox-firefox';

async function main(argv) {
  let out;
  let variant = 'busybox';
  let busybox;
  let ref;
  let debsDir;
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i];
    if (a === '--variant') variant = argv[++i];
    else if (a.startsWith('--variant=')) variant = a.slice(10);
    else if (a === '--busybox') busybox = argv[++i];
    else if (a === '--ref') ref = argv[++i];
    else if (a === '--debs') debsDir = argv[++i];
    else if (a === '-h' || a === '--help') {
      console.log(`usage: make-test-image.mjs OUTDIR [--variant ${VARIANTS}] [--busybox PATH] [--ref NAME] [--debs DIR]`);
      return 0;
    } else if (!out && !a.startsWith('-')) out = a;
    else throw new Error(`unexpected argument: ${a}`);
  }
  if (!out) throw new Error(`usage: make-test-image.mjs OUTDIR [--variant ${VARIANTS}]`);
  let res;
  if (variant === 'busybox') res = await makeBusyboxImage(out, { busybox, ref });
  else if (variant === 'layers') res = await makeLayersImage(out, { ref });
  else if (variant === 'multiarch') res = await makeMultiarchImage(out, { busybox, ref });
  else if (variant === 'python') res = await makePythonImage(out, { busybox, ref, debsDir });
  else if (variant === 'browserbox' || variant === 'browserbox-firefox') res = await (await import('./images/browserbox.mjs')).makeBrowserboxImage(out, { busybox, ref, debsDir, firefox: variant === 'browserbox-firefox' });
  else if (variant === 'codebox') res = await (await import('./images/codebox.mjs')).makeCodeboxImage(out, { busybox, ref, debsDir });
  else if (variant === 'desktop' || variant === 'skillbox-test') res = await (await import('./images/desktop.mjs'))[variant === 'desktop' ? 'makeDesktopImage' : 'makeSkillboxTestImage'](out, { busybox, ref, debsDir });
  else throw new Error(`unknown variant "${variant}" (${VARIANTS})`);
  console.log(`${out}: ${variant} image ${res.manifestDigest}`);
  if (res.debs) console.log(`  debs: ${res.debs.map((d) => `${d.pkg}=${d.version}`).join(' ')}`);
  return 0;
}

if (process.argv[1] && import.meta.url === pathToFileURL(path.resolve(process.argv[1])).href) {
  main(process.argv.slice(2)).then(
    (code) => process.exit(code),
    (err) => {
      console.error(`make-test-image: ${err.message}`);
      process.exit(1);
    },
  );
}
