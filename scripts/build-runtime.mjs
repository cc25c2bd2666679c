#!/usr/bin/env node
// Assembles the guest runtime the package ships: runtime/<platform>/ with the uncompressed
// kernel, the initramfs (static agent as /init, the kernel modules, Debian's static busybox as
// the toolbox) and runtime.json. Run by scripts/setup.sh after `make -C guest` and
// scripts/fetch-kernel.sh; idempotent (a no-op when every input is unchanged).
//
//   node scripts/build-runtime.mjs [--kernel DIR] [--agent FILE] [--busybox FILE] [--out DIR]
//   node scripts/build-runtime.mjs --check     exit 1 unless the runtime is complete and current
//
// Defaults: --kernel .cache/kernel (fetch-kernel.sh), --agent guest/build/boxlite-guest,
// --busybox $BOXLITE_BUSYBOX or /bin/busybox (package busybox-static), --out runtime/<platform>.
import { createHash } from 'node:crypto';
import { copyFileSync, existsSync, mkdirSync, readFileSync, readdirSync, renameSync, rmSync, statSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';

const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
const PLATFORM = `${process.platform}-${process.arch}`;
const { values: opt } = parseArgs({
  options: {
    kernel: { type: 'string', default: path.join(ROOT, '.cache', 'kernel') },
    agent: { type: 'string', default: path.join(ROOT, 'guest', 'build', 'boxlite-guest') },
    busybox: { type: 'string', default: process.env.BOXLITE_BUSYBOX || '/bin/busybox' },
    out: { type: 'string', default: path.join(ROOT, 'runtime', PLATFORM) },
    check: { type: 'boolean', default: false },
  },
});

const die = (msg) => {
  console.error(`build-runtime: error: ${msg}`);
  process.exit(1);
};
const sha256 = (buf) => createHash('sha256').update(buf).digest('hex');

// Must match src/vmm/assets.ts RUNTIME_FORMAT.
const RUNTIME_FORMAT = 1;

const distInitramfs = path.join(ROOT, 'dist', 'vmm', 'initramfs.js');
if (!existsSync(distInitramfs)) die('dist/ is missing: run `npx tsc -p tsconfig.json` first');
const { buildInitramfs, INITRAMFS_FORMAT_VERSION } = await import(distInitramfs);
const { version: boxliteVersion } = JSON.parse(readFileSync(path.join(ROOT, 'package.json'), 'utf8'));

/** True for an ELF with no program interpreter (PT_INTERP): it runs in a guest with no libc. */
function isStaticElf(buf) {
  if (buf.length < 64 || buf.readUInt32BE(0) !== 0x7f454c46 || buf[4] !== 2 || buf[5] !== 1) return false; // ELF64 LE
  const phoff = Number(buf.readBigUInt64LE(0x20));
  const phentsize = buf.readUInt16LE(0x36);
  const phnum = buf.readUInt16LE(0x38);
  for (let i = 0; i < phnum; i++) {
    if (buf.readUInt32LE(phoff + i * phentsize) === 3) return false;
  }
  return true;
}

function readInput(file, what, hint) {
  if (!existsSync(file)) die(`${what} not found at ${file} (${hint})`);
  return readFileSync(file);
}

const kernelJsonPath = path.join(opt.kernel, 'kernel.json');
const kernelJsonBuf = readInput(kernelJsonPath, 'kernel manifest', 'run scripts/fetch-kernel.sh');
const kernel = JSON.parse(kernelJsonBuf.toString('utf8'));
const agent = readInput(opt.agent, 'guest agent', 'run `make -C guest`');
const busybox = readInput(opt.busybox, 'static busybox', 'install busybox-static, or set BOXLITE_BUSYBOX');
if (!isStaticElf(agent)) die(`${opt.agent} is not a static x86_64/arm64 ELF executable`);
if (!isStaticElf(busybox)) die(`${opt.busybox} is not a static ELF executable (Debian: install busybox-static, not busybox)`);
const kernelFile = kernel.kernel;
if (typeof kernelFile !== 'string' || !/^[\w.-]+$/.test(kernelFile)) die(`${kernelJsonPath} names no kernel file`);
const modules = existsSync(path.join(opt.kernel, 'modules')) ? readdirSync(path.join(opt.kernel, 'modules')).filter((f) => f.endsWith('.ko')).sort() : [];

// Everything that goes in; equal inputs give an equal runtime, so the build is skipped.
const inputs = {
  boxliteVersion,
  initramfsFormat: INITRAMFS_FORMAT_VERSION,
  kernelJson: sha256(kernelJsonBuf),
  agent: sha256(agent),
  busybox: sha256(busybox),
  modules: sha256(modules.map((m) => `${m} ${sha256(readFileSync(path.join(opt.kernel, 'modules', m)))}`).join('\n')),
};

function current() {
  try {
    const m = JSON.parse(readFileSync(path.join(opt.out, 'runtime.json'), 'utf8'));
    if (m.format !== RUNTIME_FORMAT || JSON.stringify(m.inputs) !== JSON.stringify(inputs)) return null;
    for (const [name, { size }] of Object.entries(m.files)) if (statSync(path.join(opt.out, name)).size !== size) return null;
    return m;
  } catch {
    return null;
  }
}

const have = current();
if (have) {
  console.error(`build-runtime: up to date: ${path.relative(ROOT, opt.out) || opt.out} (kernel ${have.kernel.version}, hash ${have.hash})`);
  process.exit(0);
}
if (opt.check) die(`${opt.out} is missing or stale; run \`npm run setup\` (or node scripts/build-runtime.mjs)`);

const parent = path.dirname(opt.out);
mkdirSync(parent, { recursive: true });
const work = path.join(parent, `.${path.basename(opt.out)}.tmp-${process.pid}`);
rmSync(work, { recursive: true, force: true });
mkdirSync(work);
try {
  copyFileSync(path.join(opt.kernel, kernelFile), path.join(work, kernelFile));
  const built = await buildInitramfs({ agentBinary: opt.agent, kernelDir: opt.kernel, outDir: work, busyboxBinary: opt.busybox });
  renameSync(built, path.join(work, 'initramfs.cpio'));

  const files = {};
  for (const name of [kernelFile, 'initramfs.cpio']) {
    const buf = readFileSync(path.join(work, name));
    files[name] = { sha256: sha256(buf), size: buf.length };
  }
  const hash = sha256(Object.entries(files).map(([n, f]) => `${n} ${f.sha256}`).join('\n')).slice(0, 16);
  const manifest = {
    format: RUNTIME_FORMAT,
    boxliteVersion,
    platform: PLATFORM,
    hash,
    kernel: {
      file: kernelFile,
      package: kernel.package,
      version: kernel.version,
      kernelRelease: kernel.kernelRelease,
      bootProtocol: kernel.bootProtocol,
      debSha256: kernel.debSha256,
    },
    initramfs: { file: 'initramfs.cpio', modules: modules.length, agentSha256: inputs.agent, busyboxSha256: inputs.busybox },
    files,
    inputs,
  };
  writeFileSync(path.join(work, 'runtime.json'), `${JSON.stringify(manifest, null, 2)}\n`);

  // Swap the whole directory: a reader sees the old runtime or the new one, never a mix
  // (running VMs keep their open files).
  const old = `${work}.old`;
  if (existsSync(opt.out)) renameSync(opt.out, old);
  renameSync(work, opt.out);
  rmSync(old, { recursive: true, force: true });
  const mib = (n) => (n / 1048576).toFixed(1);
  console.error(
    `build-runtime: built ${path.relative(ROOT, opt.out) || opt.out}: ${kernelFile} ${mib(files[kernelFile].size)} MiB ` +
      `(${kernel.package} ${kernel.version}), initramfs.cpio ${mib(files['initramfs.cpio'].size)} MiB (${modules.length} modules), hash ${hash}`,
  );
} catch (err) {
  rmSync(work, { recursive: true, force: true });
  die(err.message);
}
