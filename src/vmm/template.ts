// Fast start (docs/fast-start.md): a template is a saved VM of one shape (kernel, initramfs with
// its agent, QEMU, CPU/memory, disk size, device layout, image) whose guest booted with
// `boxlite.template` up to the point where the agent answers and nothing box-specific has
// happened (no root mount, no container). A box of that shape then starts with QEMU's
// `-incoming fd:` from the saved state, with its own disk overlay, sockets and network, and the
// shim's RESUME gives the agent the boot words it would have read on its command line, plus the
// host's clock and fresh entropy. Cold boot stays the fallback whenever anything is off.
import { spawn } from 'node:child_process';
import { createHash, randomBytes } from 'node:crypto';
import fs from 'node:fs';
import fsp from 'node:fs/promises';
import net from 'node:net';
import path from 'node:path';
import { ConfigError, EngineError } from '../errors/index.js';
import { Feature } from '../protocol/codec.js';
import { Link } from '../protocol/link.js';
import { agentHandshake } from '../shim/handshake.js';
import { QmpClient } from '../shim/qmp.js';
import { readTail } from '../util/fs.js';
import type { VmPlan } from './plan.js';
import { buildKernelCmdline, qemuArgs } from './qemu.js';

/** Bump when the template's layout, the resume words or the key's inputs change. */
export const TEMPLATE_FORMAT = 2;

/**
 * BOXLITE_FAST_START: unset, empty or `auto` — on: a shape's first box boots cold and its
 * template is made in the background once that box is up; `1`/`on`/`true` — on, and the first
 * box of a shape makes the template, then restores from it (what `boxlite warm` does);
 * `0`/`off`/`false` — off: every box boots cold.
 */
export type FastStartMode = 'auto' | 'eager' | 'off';

export function fastStartMode(env: NodeJS.ProcessEnv = process.env): FastStartMode {
  const v = (env.BOXLITE_FAST_START ?? '').trim().toLowerCase();
  if (v === '' || v === 'auto') return 'auto';
  if (v === '1' || v === 'true' || v === 'on') return 'eager';
  if (v === '0' || v === 'false' || v === 'off') return 'off';
  throw new ConfigError(`invalid BOXLITE_FAST_START ${JSON.stringify(env.BOXLITE_FAST_START)}: expected 0 (off), 1 (on, the first box makes the template) or auto (the default)`);
}

export function fastStartEnabled(env: NodeJS.ProcessEnv = process.env): boolean {
  return fastStartMode(env) !== 'off';
}

/** Why this plan cannot start from a template, or null when it can. */
export function templateIneligible(plan: VmPlan): string | null {
  if ((plan.arch ?? 'x86_64') !== 'x86_64') return 'only x86_64 guests are restorable (tested)';
  if (plan.nics.some((n) => n.kind === 'user')) return "slirp's NAT state would be shared (BOXLITE_NET=slirp)";
  if (plan.disks.length !== 1) return 'only boxes with exactly one disk';
  // QEMU 7.2 opens a template's RAM file read-write (it maps it private): from inside the jail
  // a compromised QEMU could write every later box's memory.
  if (plan.jail) return 'jailed boxes (the template RAM file would be writable from the jail)';
  if (plan.boot.extraCmdline && [plan.boot.extraCmdline].flat().join('').trim()) return 'extra kernel command line words';
  return null;
}

/** What a template is made of; two plans with the same key restore each other's state. */
export interface TemplateKeyInputs {
  /** sha256 of the kernel and of the initramfs (the agent is in it). */
  kernelSha256: string;
  initrdSha256: string;
  /** QEMU binary identity: path, size, mtime (a changed QEMU is a changed template). */
  qemu: string;
  /** Virtual size of the box's disk in bytes: the guest read it at probe time. */
  diskBytes: number;
  /** The image's manifest digest. */
  imageDigest: string;
  /**
   * Set for a template saved with the root file system mounted (only for boxes whose disk was
   * never booted): the absolute base the overlays' backing file names point at.
   */
  mounted?: { base: string };
}

/** The device and machine shape of a plan, without any path or per-box value. */
export function planShape(plan: VmPlan): Record<string, unknown> {
  return {
    accel: plan.accel,
    arch: plan.arch ?? 'x86_64',
    cpus: plan.resources.cpus,
    memoryMib: plan.resources.memoryMib,
    tscKhz: plan.boot.tscKhz ?? null,
    disks: plan.disks.map((d) => ({ readOnly: Boolean(d.readOnly) })),
    // 9p devices are part of the layout; their host directories and guest paths are not
    // (nothing is mounted in a template).
    shares: plan.shares.length,
    nics: plan.nics.map((n) => (n.kind === 'stream' ? { kind: n.kind, mac: n.mac, mtu: n.mtu } : { kind: n.kind })),
  };
}

export function templateKey(plan: VmPlan, inputs: TemplateKeyInputs): string {
  const h = createHash('sha256');
  h.update(JSON.stringify({ format: TEMPLATE_FORMAT, shape: planShape(plan), ...inputs }));
  return h.digest('hex').slice(0, 32);
}

/**
 * The template VM's plan for a box plan: the same machine and devices in the same order, every
 * path in the template's build directory, no main process, CA, policy or confinement (those
 * come with RESUME or belong to the restored box's own QEMU), and `boxlite.template`.
 */
export function templatePlan(plan: VmPlan, dir: string, mounted = false): VmPlan {
  return {
    accel: plan.accel,
    ...(plan.arch ? { arch: plan.arch } : {}),
    ...(plan.binary ? { binary: plan.binary } : {}),
    resources: { ...plan.resources },
    boot: { kernelPath: plan.boot.kernelPath, initrdPath: plan.boot.initrdPath, tscKhz: plan.boot.tscKhz, extraCmdline: mounted ? ['boxlite.template', 'boxlite.template.mounted'] : ['boxlite.template'] },
    disks: plan.disks.map((d, i) => ({ path: path.join(dir, `disk${i}.qcow2`), format: 'qcow2' as const, ...(d.readOnly ? { readOnly: true } : {}) })),
    shares: plan.shares.map((s, i) => ({ hostPath: path.join(dir, `share${i}`), guestPath: s.guestPath, readOnly: s.readOnly })),
    nics: plan.nics.map((n) => (n.kind === 'stream' ? { ...n, socketPath: path.join(dir, 'net.sock'), ports: [] } : n)),
    console: { logPath: path.join(dir, 'console.log') },
    agent: { socketPath: path.join(dir, 'agent.sock') },
    controlSocketPath: path.join(dir, 'qmp.sock'),
  };
}

/**
 * RESUME's payload: the `boxlite.*` words of the box's own kernel command line (the agent
 * parses them as at boot), then the host's clock and 64 bytes of entropy.
 */
export function resumeWords(plan: VmPlan, nowNs: bigint = wallClockNs(), seed: Buffer = randomBytes(64)): string {
  const words = buildKernelCmdline({ ...plan, boot: { ...plan.boot, extraCmdline: undefined } })
    .split(' ')
    .filter((w) => w.startsWith('boxlite.'));
  words.push(`boxlite.time=${nowNs}`, `boxlite.seed=${seed.toString('hex')}`);
  return words.join(' ');
}

function wallClockNs(): bigint {
  return BigInt(Date.now()) * 1_000_000n;
}

/**
 * The guest's RAM of a template lives in a file of its own (`ram.bin`, sparse): the template VM
 * maps it shared, and its save skips it (`x-ignore-shared`), so the state stream holds only the
 * devices (~70 KB instead of ~63 MiB). A restored box maps the same file private (copy on
 * write: the file is never written) and its guest reads pages from the host's page cache as it
 * touches them, instead of QEMU copying all of them before the guest runs (~60 -> ~10 ms here).
 * The id is the RAM block name `-m` gives microvm, so a box's later saves (live snapshots)
 * restore into a plain `-m` VM and back.
 */
export const RAM_ID = 'microvm.ram';
export function templateRamArgs(memPath: string, memoryMib: number, share: boolean): string[] {
  return [
    '-machine', `memory-backend=${RAM_ID}`,
    '-object', `memory-backend-file,id=${RAM_ID},size=${memoryMib}M,mem-path=${memPath.replace(/,/g, ',,')},share=${share ? 'on' : 'off'}`,
  ];
}

/**
 * A stream saved with `x-ignore-shared`, made loadable by a QEMU 7.2 started with a plain
 * `-incoming fd:` (which cannot enable that capability: no `-global` for it, and the shim
 * restores without a monitor round trip): drops the `configuration/capabilities` subsection
 * (the destination would insist on the capability) and the guest address the RAM section's
 * setup adds after each block (the only other difference; the ignored block's pages are not in
 * the stream at all, so the private mapping of the RAM file is what the guest sees). Anything
 * not laid out exactly so throws: the build fails and boxes boot cold.
 */
export function stripIgnoreShared(d: Buffer): Buffer {
  const fail = (why: string): never => {
    throw new EngineError(`unexpected migration stream layout (${why}); QEMU 7.2's expected`);
  };
  let p = 8;
  if (d.readUInt32BE(0) !== 0x5145564d || d.readUInt32BE(4) !== 3) fail('magic/version');
  if (d[p] !== 0x07) fail('no configuration section');
  p += 1;
  p += 4 + d.readUInt32BE(p);
  const out: Buffer[] = [d.subarray(0, p)];
  const sub = 'configuration/capabilities';
  if (d[p] !== 0x05 || d[p + 1] !== sub.length || d.toString('latin1', p + 2, p + 2 + sub.length) !== sub) fail('no capabilities subsection');
  let q = p + 2 + sub.length + 4;
  const count = d.readUInt32BE(q);
  q += 4;
  const caps: string[] = [];
  for (let i = 0; i < count; i++) {
    caps.push(d.toString('latin1', q + 1, q + 1 + d[q]!));
    q += 1 + d[q]!;
  }
  if (caps.join() !== 'x-ignore-shared') fail(`capabilities ${caps.join()}`);
  p = q;
  if (d[p] !== 0x01) fail('no section start after the configuration');
  const idLen = d[p + 5]!;
  if (d.toString('latin1', p + 6, p + 6 + idLen) !== 'ram') fail('first section is not ram');
  const hdr = 5 + 1 + idLen + 8;
  out.push(d.subarray(p, p + hdr + 8));
  p += hdr;
  let total = d.readBigUInt64BE(p);
  if (!(total & 4n)) fail('no RAM block list');
  total &= ~0xfffn;
  p += 8;
  while (total > 0n) {
    const l = d[p]!;
    out.push(d.subarray(p, p + 1 + l + 8));
    total -= d.readBigUInt64BE(p + 1 + l);
    p += 1 + l + 8 + 8;
    if (p > d.length) fail('RAM block list runs past the end');
  }
  if (total !== 0n) fail('RAM block sizes do not add up');
  out.push(d.subarray(p));
  return Buffer.concat(out);
}

/**
 * QEMU arguments that restore the saved state from an inherited descriptor instead of booting;
 * with the template's RAM file on another inherited descriptor when it has one.
 */
export function restoreArgs(fd: number, ram?: { fd: number; memoryMib: number }): string[] {
  return [...(ram ? templateRamArgs(`/proc/self/fd/${ram.fd}`, ram.memoryMib, false) : []), '-incoming', `fd:${fd}`];
}

/**
 * Whether a box's disk is the fresh overlay create() made and never booted: a qcow2 backed
 * directly by `base` (absolute name, as createOverlay writes it), of `virtualBytes`, without
 * internal snapshots, encryption or incompatible features (dirty bit, external data), and with
 * every L1 entry zero (not one cluster written). Only such a disk may take a mounted template's
 * disk copy: anything else (booted, snapshot/restore/clone/import history) is read as not fresh.
 */
export async function freshOverlay(file: string, base: string, virtualBytes: number): Promise<boolean> {
  let fh: fsp.FileHandle | undefined;
  try {
    fh = await fsp.open(file, 'r');
    const h = Buffer.alloc(104);
    if ((await fh.read(h, 0, h.length, 0)).bytesRead < h.length) return false;
    if (h.readUInt32BE(0) !== 0x514649fb || h.readUInt32BE(4) !== 3) return false;
    if (Number(h.readBigUInt64BE(24)) !== virtualBytes) return false;
    if (h.readUInt32BE(32) !== 0 || h.readUInt32BE(60) !== 0 || h.readBigUInt64BE(72) !== 0n) return false;
    const boff = Number(h.readBigUInt64BE(8));
    const blen = h.readUInt32BE(16);
    if (!boff || blen === 0 || blen > 4096) return false;
    const name = Buffer.alloc(blen);
    await fh.read(name, 0, blen, boff);
    if (name.toString('utf8') !== path.resolve(base)) return false;
    const l1Size = h.readUInt32BE(36);
    if (l1Size > 1 << 20) return false;
    const l1 = Buffer.alloc(l1Size * 8);
    if ((await fh.read(l1, 0, l1.length, Number(h.readBigUInt64BE(40)))).bytesRead < l1.length) return false;
    return l1.every((b) => b === 0);
  } catch {
    return false;
  } finally {
    await fh?.close();
  }
}

/** What the shim needs to restore one: the state file and what it must be. */
export interface TemplateRef {
  key: string;
  statePath: string;
  size: number;
  sha256: string;
  /** The guest RAM file (format 2). */
  ramPath?: string;
  /**
   * A template saved with the root mounted: its disk overlay (the page cache in its RAM
   * describes exactly this disk). A box restored from it gets a copy as its disk.
   */
  disk?: { path: string; size: number; sha256: string };
}

export interface TemplateManifest {
  format: number;
  key: string;
  createdAt: string;
  state: { file: string; size: number; sha256: string };
  ram: { file: string; size: number; sha256: string };
  /** Mounted templates only: the template VM's disk overlay, synced by the guest before the save. */
  disk?: { file: string; size: number; sha256: string };
  shape: Record<string, unknown>;
  inputs: TemplateKeyInputs;
  bootMs: number;
  saveMs: number;
}

export function templatesDir(homeRoot: string): string {
  return path.join(homeRoot, 'templates');
}

/**
 * sha256 of a file, remembered per (device, inode, size, mtime, ctime): any write or
 * replacement changes the identity and the file is hashed again. In this process always; with
 * `persistFile` also across processes (one JSON map, replaced atomically), so a CLI that starts
 * one box does not hash the kernel, initramfs and state (~140 MB) every time.
 */
const digestCache = new Map<string, string>();
const loadedPersist = new Set<string>();
export async function fileSha256(file: string, persistFile?: string): Promise<string> {
  const st = await fsp.stat(file, { bigint: true });
  const id = `${path.resolve(file)}\0${st.dev}:${st.ino}:${st.size}:${st.mtimeNs}:${st.ctimeNs}`;
  if (persistFile && !loadedPersist.has(persistFile)) {
    loadedPersist.add(persistFile);
    try {
      const saved = JSON.parse(await fsp.readFile(persistFile, 'utf8')) as Record<string, string>;
      for (const [k, v] of Object.entries(saved)) if (typeof v === 'string' && /^[0-9a-f]{64}$/.test(v)) digestCache.set(k, v);
    } catch {
      // none yet, or unreadable: hash again
    }
  }
  const hit = digestCache.get(id);
  if (hit) return hit;
  const h = createHash('sha256');
  await new Promise<void>((resolve, reject) => {
    fs.createReadStream(file, { highWaterMark: 1 << 20 })
      .on('data', (c) => h.update(c))
      .on('end', resolve)
      .on('error', reject);
  });
  const d = h.digest('hex');
  await adoptDigest(file, d, persistFile, id);
  return d;
}

/** Records `digest` as the sha256 of `file` as it is now (a file just renamed into place). */
export async function adoptDigest(file: string, digest: string, persistFile?: string, knownId?: string): Promise<void> {
  let id = knownId;
  if (!id) {
    const st = await fsp.stat(file, { bigint: true });
    id = `${path.resolve(file)}\0${st.dev}:${st.ino}:${st.size}:${st.mtimeNs}:${st.ctimeNs}`;
  }
  const d = digest;
  digestCache.set(id, d);
  if (persistFile) {
    // Entries of files that are gone or changed are dropped: only live identities are kept.
    const live: Record<string, string> = {};
    for (const [k, v] of digestCache) {
      if (fs.existsSync(k.slice(0, k.indexOf('\0')))) live[k] = v;
    }
    const tmp = `${persistFile}.${process.pid}.tmp`;
    await fsp.writeFile(tmp, JSON.stringify(live)).then(() => fsp.rename(tmp, persistFile)).catch(() => fsp.rm(tmp, { force: true }));
  }
}

/** Where fileSha256 keeps digests across processes for a home. */
export function digestCacheFile(homeRoot: string): string {
  return path.join(templatesDir(homeRoot), 'digests.json');
}

/**
 * The template of this key, checked: manifest readable and of this format and key, state file
 * of the recorded size and sha256. Anything else is null (and a damaged one is removed), so the
 * caller boots cold; a template is never restored on trust.
 */
export async function findTemplate(homeRoot: string, key: string, log: (l: string) => void = () => {}): Promise<TemplateRef | null> {
  const dir = path.join(templatesDir(homeRoot), key);
  let manifest: TemplateManifest;
  try {
    manifest = JSON.parse(await fsp.readFile(path.join(dir, 'manifest.json'), 'utf8')) as TemplateManifest;
  } catch {
    return null;
  }
  const bad = async (why: string) => {
    log(`template ${key} unusable (${why}); removed, booting cold`);
    await fsp.rm(dir, { recursive: true, force: true }).catch(() => undefined);
    return null;
  };
  if (manifest.format !== TEMPLATE_FORMAT || manifest.key !== key || !manifest.state || path.basename(manifest.state.file) !== manifest.state.file) {
    return bad('manifest of another format or key');
  }
  const statePath = path.join(dir, manifest.state.file);
  let size: number;
  try {
    size = (await fsp.stat(statePath)).size;
  } catch {
    return bad('state file missing');
  }
  if (size !== manifest.state.size) return bad(`state file is ${size} bytes, expected ${manifest.state.size}`);
  if ((await fileSha256(statePath, digestCacheFile(homeRoot))) !== manifest.state.sha256) return bad('state file checksum mismatch');
  if (!manifest.ram || path.basename(manifest.ram.file) !== manifest.ram.file) return bad('manifest without a RAM file');
  const ramPath = path.join(dir, manifest.ram.file);
  let ramSize: number;
  try {
    ramSize = (await fsp.stat(ramPath)).size;
  } catch {
    return bad('RAM file missing');
  }
  if (ramSize !== manifest.ram.size) return bad(`RAM file is ${ramSize} bytes, expected ${manifest.ram.size}`);
  if ((await fileSha256(ramPath, digestCacheFile(homeRoot))) !== manifest.ram.sha256) return bad('RAM file checksum mismatch');
  const ref: TemplateRef = { key, statePath, size, sha256: manifest.state.sha256, ramPath };
  if (manifest.inputs?.mounted || manifest.disk) {
    if (!manifest.disk || !manifest.inputs?.mounted || path.basename(manifest.disk.file) !== manifest.disk.file) return bad('mounted template without its disk');
    const diskPath = path.join(dir, manifest.disk.file);
    const diskSize = await fsp.stat(diskPath).then((st) => st.size, () => -1);
    if (diskSize !== manifest.disk.size) return bad(`disk file is ${diskSize} bytes, expected ${manifest.disk.size}`);
    if ((await fileSha256(diskPath, digestCacheFile(homeRoot))) !== manifest.disk.sha256) return bad('disk file checksum mismatch');
    ref.disk = { path: diskPath, size: diskSize, sha256: manifest.disk.sha256 };
  }
  return ref;
}

export interface BuildTemplateOptions {
  homeRoot: string;
  key: string;
  /** The box plan the template is for (its shape; its paths are not used). */
  plan: VmPlan;
  inputs: TemplateKeyInputs;
  /** Makes the template's scratch disk: same virtual size as the box's (e.g. an overlay of the image). */
  makeDisk(diskPath: string): Promise<void>;
  /** Bound on boot to HELLO. */
  bootTimeoutMs: number;
  log?: (line: string) => void;
}

/**
 * Boots a template VM, saves it once the agent answered, and publishes it atomically under
 * templates/<key>/ (a build directory renamed into place: no half-written template is ever
 * found). Resolves with the checked reference.
 */
export async function buildTemplate(o: BuildTemplateOptions): Promise<TemplateRef> {
  const log = o.log ?? (() => {});
  const root = templatesDir(o.homeRoot);
  await fsp.mkdir(root, { recursive: true, mode: 0o700 });
  // Short: unix socket paths live in it.
  const dir = await fsp.mkdtemp(path.join(root, '.b-'));
  const mounted = Boolean(o.inputs.mounted);
  const plan = templatePlan(o.plan, dir, mounted);
  const servers: net.Server[] = [];
  const sockets = new Set<net.Socket>();
  let child: ReturnType<typeof spawn> | undefined;
  let qmp: QmpClient | undefined;
  try {
    await o.makeDisk(plan.disks[0]!.path);
    for (const s of plan.shares) await fsp.mkdir(s.hostPath, { recursive: true });
    const track = (s: net.Socket) => {
      sockets.add(s);
      s.on('error', () => {});
      s.on('close', () => sockets.delete(s));
    };
    const agentServer = net.createServer(track);
    servers.push(agentServer);
    const agentConn = new Promise<net.Socket>((r) => agentServer.once('connection', r));
    await listenOn(agentServer, plan.agent.socketPath);
    for (const nic of plan.nics) {
      if (nic.kind !== 'stream') continue;
      // A peer that takes the frames and drops them: the template's guest only brings its link
      // up; nothing is sent to the network before the save.
      const netServer = net.createServer((s) => {
        track(s);
        s.resume();
      });
      servers.push(netServer);
      await listenOn(netServer, nic.socketPath);
    }
    const cmd = qemuArgs(plan);
    const ramPath = path.join(dir, 'ram.bin');
    cmd.args.push(...templateRamArgs(ramPath, plan.resources.memoryMib, true));
    const qemuLog = fs.openSync(path.join(dir, 'qemu.log'), 'w');
    const t0 = performance.now();
    // Dies with this process (as a box's QEMU dies with its shim): a build cut short must not
    // leave a template VM running.
    const setpriv = ['/usr/bin/setpriv', '/bin/setpriv'].find((p) => fs.existsSync(p));
    child = setpriv
      ? spawn(setpriv, ['--pdeathsig', 'KILL', '--', cmd.binary, ...cmd.args], { stdio: ['ignore', qemuLog, qemuLog] })
      : spawn(cmd.binary, cmd.args, { stdio: ['ignore', qemuLog, qemuLog] });
    fs.closeSync(qemuLog);
    const exited = new Promise<never>((_, reject) =>
      child!.once('exit', (code) =>
        reject(new EngineError(`template VM exited (code ${code}): ${readTail(path.join(dir, 'qemu.log'), 5)} ${readTail(plan.console.logPath, 10)}`)),
      ),
    );
    exited.catch(() => undefined);
    const bounded = <T>(p: Promise<T>, ms: number, what: string) =>
      Promise.race([
        p,
        exited,
        new Promise<never>((_, reject) => setTimeout(() => reject(new EngineError(`template VM: ${what} within ${ms} ms`)), ms).unref()),
      ]);

    const link = new Link(await bounded(agentConn, o.bootTimeoutMs, 'QEMU did not connect to the agent socket'));
    const { hello } = await bounded(agentHandshake(link), o.bootTimeoutMs, 'the agent did not say HELLO');
    const bootMs = Math.round(performance.now() - t0);
    if (!(hello.features & Feature.RESUME)) {
      throw new EngineError(`the guest agent (${hello.version}) cannot be restored from a template (no RESUME in its HELLO)`);
    }
    // Hang up before the save: the saved guest then waits for a host, and the restored VM's
    // connected chardev is a change the agent sees (it says HELLO to the new host).
    link.close();
    await bounded(waitForText(plan.console.logPath, 'host disconnected', 3_000), 5_000, 'the agent did not notice the hang-up');
    // Printed before the agent's HELLO, after syncfs + fsync of the disk: a mounted template is
    // never saved unless the guest mounted its root and synced it.
    if (mounted && !fs.readFileSync(plan.console.logPath, 'utf8').includes('template boot: root mounted and synced')) {
      throw new EngineError('template VM: the guest did not mount and sync its root disk');
    }

    const t1 = performance.now();
    qmp = await QmpClient.connect(plan.controlSocketPath!);
    // QEMU 7.2 throttles migration to 32 MiB/s by default; a local file takes what it gets.
    await qmp.execute('migrate-set-parameters', { 'max-bandwidth': 64 * 1024 ** 3 });
    await qmp.execute('migrate-set-capabilities', { capabilities: [{ capability: 'x-ignore-shared', state: true }] });
    const statePath = path.join(dir, 'state.bin');
    const migSock = path.join(dir, 'mig.sock');
    const received = receiveInto(migSock, statePath);
    await received.listening;
    // The guest keeps running while it is saved: a paused source would restore paused.
    await qmp.execute('migrate', { uri: `unix:${migSock}` });
    for (;;) {
      const st = (await qmp.execute('query-migrate')) as { status?: string; 'error-desc'?: string };
      if (st.status === 'completed') break;
      if (st.status === 'failed' || st.status === 'cancelled') throw new EngineError(`saving the template failed: ${st['error-desc'] ?? st.status}`);
      await sleep(10);
    }
    const written = await bounded(received.done, 30_000, 'the saved state did not arrive');
    const saveMs = Math.round(performance.now() - t1);
    await qmp.execute('quit').catch(() => undefined);
    qmp.close();
    qmp = undefined;
    await Promise.race([new Promise((r) => child!.once('exit', r)), sleep(2_000)]);
    // A mounted template's disk is only trusted once QEMU closed it (flushed) after the save.
    if (mounted && child.exitCode !== 0) throw new EngineError(`template VM did not quit cleanly after the save (exit ${child.exitCode ?? child.signalCode ?? 'pending'})`);
    if (child.exitCode === null) child.kill('SIGKILL');

    const loadable = stripIgnoreShared(await fsp.readFile(statePath));
    await fsp.writeFile(statePath, loadable, { mode: 0o600 });
    const sf = fs.openSync(statePath, 'r');
    fs.fsyncSync(sf);
    fs.closeSync(sf);
    const sha256 = await fileSha256(statePath);
    // The guest's RAM as it was when the save completed (the VM stopped then): durable before
    // it is published, never written again (restores map it private). Owner read-write: QEMU
    // 7.2 opens a memory-backend-file O_RDWR even when it maps it private (a jailed QEMU is
    // no CAP_DAC_OVERRIDE root; jailed boxes are not restored, templateIneligible).
    const ramFd = fs.openSync(ramPath, 'r');
    fs.fsyncSync(ramFd);
    fs.closeSync(ramFd);
    await fsp.chmod(ramPath, 0o600);
    const ramSize = (await fsp.stat(ramPath)).size;
    const ramSha256 = await fileSha256(ramPath, digestCacheFile(o.homeRoot));
    const manifest: TemplateManifest = {
      format: TEMPLATE_FORMAT,
      key: o.key,
      createdAt: new Date().toISOString(),
      state: { file: 'state.bin', size: loadable.length, sha256 },
      ram: { file: 'ram.bin', size: ramSize, sha256: ramSha256 },
      shape: planShape(o.plan),
      inputs: o.inputs,
      bootMs,
      saveMs,
    };
    const keep = ['state.bin', 'ram.bin', 'console.log'];
    if (mounted) {
      const diskPath = plan.disks[0]!.path;
      const df = fs.openSync(diskPath, 'r');
      fs.fsyncSync(df);
      fs.closeSync(df);
      // Read-only from now on: boxes copy it, nothing writes it.
      await fsp.chmod(diskPath, 0o400);
      manifest.disk = { file: path.basename(diskPath), size: (await fsp.stat(diskPath)).size, sha256: await fileSha256(diskPath) };
      keep.push(manifest.disk.file);
    }
    // Only the state, RAM and manifest are kept (and a mounted template's disk): a pre-mount
    // template's scratch disk was never mounted, each box restored from it brings its own.
    for (const f of await fsp.readdir(dir)) {
      if (!keep.includes(f)) await fsp.rm(path.join(dir, f), { recursive: true, force: true });
    }
    await fsp.writeFile(path.join(dir, 'manifest.json'), JSON.stringify(manifest, null, 2));
    const final = path.join(root, o.key);
    try {
      await fsp.rename(dir, final);
      await adoptDigest(path.join(final, 'ram.bin'), ramSha256, digestCacheFile(o.homeRoot)).catch(() => undefined);
      if (manifest.disk) await adoptDigest(path.join(final, manifest.disk.file), manifest.disk.sha256, digestCacheFile(o.homeRoot)).catch(() => undefined);
    } catch (err) {
      // Another process published the same key first: theirs is as good as ours.
      if ((err as NodeJS.ErrnoException).code !== 'ENOTEMPTY' && (err as NodeJS.ErrnoException).code !== 'EEXIST') throw err;
      await fsp.rm(dir, { recursive: true, force: true });
    }
    log(`template ${o.key} saved: boot ${bootMs} ms, save ${saveMs} ms, ${written} bytes`);
    const ref = await findTemplate(o.homeRoot, o.key, log);
    if (!ref) throw new EngineError(`template ${o.key} did not verify after saving`);
    return ref;
  } finally {
    qmp?.close();
    if (child && child.exitCode === null && child.signalCode === null) child.kill('SIGKILL');
    for (const s of sockets) s.destroy();
    for (const s of servers) s.close();
    await fsp.rm(dir, { recursive: true, force: true }).catch(() => undefined);
  }
}

function listenOn(server: net.Server, socketPath: string): Promise<void> {
  return new Promise((resolve, reject) => {
    server.once('error', reject);
    server.listen(socketPath, () => {
      server.off('error', reject);
      resolve();
    });
  });
}

/** Accepts one connection on socketPath and writes all it sends to file; resolves with the byte count. */
export function receiveInto(socketPath: string, file: string): { listening: Promise<void>; done: Promise<number> } {
  const server = net.createServer();
  const listening = listenOn(server, socketPath);
  const done = new Promise<number>((resolve, reject) => {
    server.once('connection', (s) => {
      server.close();
      const out = fs.createWriteStream(file, { mode: 0o600 });
      let n = 0;
      s.on('data', (c: Buffer) => (n += c.length));
      s.pipe(out);
      out.once('close', () => {
        // Durable before it is published: a crash must not leave a short state under a good manifest.
        try {
          const fd = fs.openSync(file, 'r');
          fs.fsyncSync(fd);
          fs.closeSync(fd);
          resolve(n);
        } catch (err) {
          reject(err as Error);
        }
      });
      out.once('error', reject);
      s.once('error', reject);
    });
  });
  done.catch(() => undefined);
  return { listening, done };
}

async function waitForText(file: string, text: string, ms: number): Promise<void> {
  const deadline = Date.now() + ms;
  while (Date.now() < deadline) {
    try {
      if (fs.readFileSync(file, 'utf8').includes(text)) return;
    } catch {
      // not there yet
    }
    await sleep(10);
  }
  throw new EngineError(`"${text}" did not appear in ${file}`);
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
