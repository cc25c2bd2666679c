#!/usr/bin/env node
// Writes a small OCI image layout for tests and the offline quick start.
//
//   node scripts/make-test-image.mjs OUTDIR [--variant busybox|layers] [--busybox PATH] [--ref NAME]
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
//
// Output is deterministic (fixed mtimes, sorted entries, fixed gzip header), so
// digests only change when the inputs (e.g. the busybox binary) change.
// Self-contained: needs only tar-stream, no build step.

import { execFileSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { pathToFileURL } from 'node:url';
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

/**
 * Writes an OCI layout. layers: [{ tar: Buffer, compression: 'gzip'|'none' }].
 * config: the `config` object of the image config. Returns { manifestDigest, configDigest }.
 */
export function writeOciLayout(outDir, { layers, config, refName = 'latest', architecture = hostArch(), created = '2024-01-01T00:00:00Z' }) {
  if (fs.existsSync(outDir)) {
    const names = fs.readdirSync(outDir);
    if (names.length > 0 && !names.includes('oci-layout')) {
      throw new Error(`${outDir} exists and is not an OCI layout; refusing to overwrite`);
    }
    fs.rmSync(outDir, { recursive: true, force: true });
  }
  fs.mkdirSync(path.join(outDir, 'blobs', 'sha256'), { recursive: true });
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
  const index = {
    schemaVersion: 2,
    mediaType: 'application/vnd.oci.image.index.v1+json',
    manifests: [
      {
        mediaType: 'application/vnd.oci.image.manifest.v1+json',
        ...man,
        annotations: { 'org.opencontainers.image.ref.name': refName },
        platform: { architecture, os: 'linux' },
      },
    ],
  };
  fs.writeFileSync(path.join(outDir, 'index.json'), JSON.stringify(index));
  fs.writeFileSync(path.join(outDir, 'oci-layout'), JSON.stringify({ imageLayoutVersion: '1.0.0' }));
  return { manifestDigest: man.digest, configDigest: cfg.digest };
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

// ---------- CLI ----------

async function main(argv) {
  let out;
  let variant = 'busybox';
  let busybox;
  let ref;
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i];
    if (a === '--variant') variant = argv[++i];
    else if (a.startsWith('--variant=')) variant = a.slice(10);
    else if (a === '--busybox') busybox = argv[++i];
    else if (a === '--ref') ref = argv[++i];
    else if (a === '-h' || a === '--help') {
      console.log('usage: make-test-image.mjs OUTDIR [--variant busybox|layers] [--busybox PATH] [--ref NAME]');
      return 0;
    } else if (!out && !a.startsWith('-')) out = a;
    else throw new Error(`unexpected argument: ${a}`);
  }
  if (!out) throw new Error('usage: make-test-image.mjs OUTDIR [--variant busybox|layers]');
  let res;
  if (variant === 'busybox') res = await makeBusyboxImage(out, { busybox, ref });
  else if (variant === 'layers') res = await makeLayersImage(out, { ref });
  else throw new Error(`unknown variant "${variant}" (busybox|layers)`);
  console.log(`${out}: ${variant} image ${res.manifestDigest}`);
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
