// The runtime's side of fast start (docs/fast-start.md): pick, make and use the template of a
// box's shape. On unless BOXLITE_FAST_START=0. Whatever goes wrong here, the box boots cold:
// a missing, damaged or stale template, a failed build, a failed restore.
import { spawn, type ChildProcess } from 'node:child_process';
import fs from 'node:fs';
import fsp from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { BoxliteError, ConfigError, EngineError } from '../errors/index.js';
import { describeFailure, runTool } from '../images/tools.js';
import type { LaunchedShim } from '../shim/client.js';
import type { BoxOptions } from './options.js';
import type { JsBoxlite } from './runtime.js';
import type { ShimConfig } from '../shim/config.js';
import { isProcessAlive } from '../util/fs.js';
import type { VmPlan } from '../vmm/plan.js';
import { locateQemu } from '../vmm/qemu.js';
import {
  buildTemplate,
  digestCacheFile,
  fastStartMode,
  fileSha256,
  findTemplate,
  planShape,
  templateIneligible,
  templateKey,
  templatesDir,
  type TemplateKeyInputs,
  type TemplateManifest,
  type TemplateRef,
  freshOverlay,
} from '../vmm/template.js';

export interface FastStartImage {
  manifestDigest: string;
  rootfsBase: string;
}

const debug = (line: string) => {
  if (/debug|trace/.test(process.env.BOXLITE_LOG ?? '')) process.stderr.write(`boxlite fast-start: ${line}\n`);
};

/** Virtual size of a qcow2 (its header) or raw disk, in bytes. */
export async function diskVirtualBytes(file: string): Promise<number> {
  const fh = await fsp.open(file, 'r');
  try {
    const head = Buffer.alloc(32);
    const { bytesRead } = await fh.read(head, 0, 32, 0);
    if (bytesRead >= 32 && head.readUInt32BE(0) === 0x514649fb) return Number(head.readBigUInt64BE(24));
    return (await fh.stat()).size;
  } finally {
    await fh.close();
  }
}

const qemuIds = new Map<string, string>();
function qemuIdentity(plan: VmPlan): string {
  const bin = plan.binary ?? locateQemu();
  let id = qemuIds.get(bin);
  if (!id) {
    const st = fs.statSync(bin);
    id = `${fs.realpathSync(bin)}:${st.size}:${Math.round(st.mtimeMs)}`;
    qemuIds.set(bin, id);
  }
  return id;
}

export async function templateInputs(plan: VmPlan, image: FastStartImage, homeRoot: string, knownDiskBytes?: number): Promise<TemplateKeyInputs> {
  await fsp.mkdir(templatesDir(homeRoot), { recursive: true, mode: 0o700 });
  const cache = digestCacheFile(homeRoot);
  const [kernelSha256, initrdSha256, diskBytes] = await Promise.all([
    fileSha256(plan.boot.kernelPath, cache),
    fileSha256(plan.boot.initrdPath, cache),
    knownDiskBytes ?? diskVirtualBytes(plan.disks[0]!.path),
  ]);
  return { kernelSha256, initrdSha256, qemu: qemuIdentity(plan), diskBytes, imageDigest: image.manifestDigest };
}

/** templates/<key>.lock, O_EXCL with our pid: one build per key at a time, a dead builder's lock is taken over. */
async function withBuildLock<T>(homeRoot: string, key: string, fn: () => Promise<T>): Promise<T | null> {
  const lock = path.join(templatesDir(homeRoot), `${key}.lock`);
  await fsp.mkdir(path.dirname(lock), { recursive: true, mode: 0o700 });
  for (let attempt = 0; attempt < 2; attempt++) {
    try {
      await fsp.writeFile(lock, String(process.pid), { flag: 'wx' });
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'EEXIST') throw err;
      const pid = Number(await fsp.readFile(lock, 'utf8').catch(() => ''));
      if (pid && isProcessAlive(pid)) return null;
      await fsp.rm(lock, { force: true });
      continue;
    }
    try {
      return await fn();
    } finally {
      await fsp.rm(lock, { force: true });
    }
  }
  return null;
}

export interface EnsureTemplateOptions {
  homeRoot: string;
  plan: VmPlan;
  image: FastStartImage;
  bootTimeoutMs: number;
  /** Build one when there is none (default true). */
  build?: boolean;
  /** The box disk's virtual size, when the disk itself may be gone (a background build). */
  diskBytes?: number;
  /** The variant saved after the root mount (only for never-booted disks; its own key). */
  mounted?: boolean;
}

/** The checked template for this plan, built first if needed; null when there is none to use. */
export async function ensureTemplate(o: EnsureTemplateOptions): Promise<TemplateRef | null> {
  const why = templateIneligible(o.plan);
  if (why) {
    debug(`cold boot: ${why}`);
    return null;
  }
  const inputs: TemplateKeyInputs = {
    ...(await templateInputs(o.plan, o.image, o.homeRoot, o.diskBytes)),
    ...(o.mounted ? { mounted: { base: path.resolve(o.image.rootfsBase) } } : {}),
  };
  const key = templateKey(o.plan, inputs);
  // A template that is there but does not verify is removed by findTemplate; this box then
  // boots cold (always correct) and the next one of the shape makes a new template.
  const existed = fs.existsSync(path.join(templatesDir(o.homeRoot), key));
  const found = await findTemplate(o.homeRoot, key, debug);
  if (found || existed || o.build === false) return found;
  const diskBytes = inputs.diskBytes;
  return withBuildLock(o.homeRoot, key, async () => {
    // Re-checked under the lock: another process may have just published it.
    const ready = await findTemplate(o.homeRoot, key, debug);
    if (ready) return ready;
    const built = await buildTemplate({
      homeRoot: o.homeRoot,
      key,
      plan: o.plan,
      inputs,
      bootTimeoutMs: o.bootTimeoutMs,
      log: debug,
      // An overlay of the image, as a new box's disk: same size and the same first blocks
      // the guest's partition scan reads (the agent also drops them before mounting).
      makeDisk: async (disk) => {
        const r = await runTool('qemu-img', ['create', '-q', '-f', 'qcow2', '-F', 'raw', '-b', path.resolve(o.image.rootfsBase), disk, String(diskBytes)], {
          timeoutMs: 60_000,
        });
        if (r.code !== 0) throw new Error(describeFailure('qemu-img', r));
      },
    });
    await removeStaleTemplates(o.homeRoot, inputs);
    return built;
  });
}

/**
 * Templates of another kernel, initramfs (agent) or QEMU can never be restored again while
 * this one is installed: removed after a build, so a home does not collect ~75 MiB per upgrade.
 */
export async function removeStaleTemplates(homeRoot: string, current: TemplateKeyInputs): Promise<string[]> {
  const root = templatesDir(homeRoot);
  const removed: string[] = [];
  for (const name of await fsp.readdir(root).catch(() => [] as string[])) {
    if (name.startsWith('.b-')) {
      // A build directory left by a builder that was killed (a live one finishes in seconds).
      const st = await fsp.stat(path.join(root, name)).catch(() => null);
      if (st && Date.now() - st.mtimeMs > 10 * 60_000) await fsp.rm(path.join(root, name), { recursive: true, force: true });
      continue;
    }
    if (!/^[0-9a-f]{32}$/.test(name)) continue;
    let inputs: TemplateKeyInputs | undefined;
    try {
      inputs = (JSON.parse(await fsp.readFile(path.join(root, name, 'manifest.json'), 'utf8')) as TemplateManifest).inputs;
    } catch {
      continue; // being published, or damaged: findTemplate deals with it
    }
    if (inputs && (inputs.kernelSha256 !== current.kernelSha256 || inputs.initrdSha256 !== current.initrdSha256 || inputs.qemu !== current.qemu)) {
      await fsp.rm(path.join(root, name), { recursive: true, force: true });
      removed.push(name);
      debug(`removed template ${name}: made for another kernel, agent or QEMU`);
    }
  }
  return removed;
}

/** Whether the home has any template at all (when not, no key needs computing: none can match). */
function anyTemplate(homeRoot: string): boolean {
  try {
    return fs.readdirSync(templatesDir(homeRoot)).some((n) => /^[0-9a-f]{32}$/.test(n));
  } catch {
    return false;
  }
}

/** Configs whose shape should get a template (or its mounted variant) in the background once the box is up. */
const pendingBuilds = new WeakMap<ShimConfig, Array<{ homeRoot: string; image: FastStartImage; mounted: boolean }>>();

/**
 * BOXLITE_FAST_START_MOUNTED: `1` or unset — a box whose disk was never booted restores the
 * template saved after the root mount (its disk a copy of that template's overlay); `0` — off.
 */
export function mountedTemplatesEnabled(env: NodeJS.ProcessEnv = process.env): boolean {
  const v = (env.BOXLITE_FAST_START_MOUNTED ?? '').trim().toLowerCase();
  if (v === '0' || v === 'off' || v === 'false') return false;
  if (v === '' || v === '1' || v === 'on' || v === 'true') return true;
  throw new ConfigError(`invalid BOXLITE_FAST_START_MOUNTED ${JSON.stringify(env.BOXLITE_FAST_START_MOUNTED)}: expected 0 (off) or 1 (on)`);
}

/**
 * The box's disk becomes a copy of the mounted template's overlay (same base, so its backing
 * file name resolves to the same image), written next to it and renamed over it before QEMU
 * starts: never the template's file itself, which no box opens.
 */
async function adoptTemplateDisk(ref: TemplateRef, boxDisk: string): Promise<void> {
  const tmp = `${boxDisk}.tpl-${process.pid}.tmp`;
  try {
    await fsp.copyFile(ref.disk!.path, tmp);
    await fsp.chmod(tmp, 0o644);
    await fsp.rename(tmp, boxDisk);
  } catch (err) {
    await fsp.rm(tmp, { force: true }).catch(() => undefined);
    throw err;
  }
}

/**
 * The box's shim config with its template when fast start is on and one is (or, with
 * BOXLITE_FAST_START=1, can be made) ready; the config unchanged otherwise. By default a box
 * without a template boots cold and launchWithFallback has the template made behind it: the
 * first box of a shape is never slower than a cold start.
 */
export async function withFastStart(config: ShimConfig, image: FastStartImage, homeRoot: string, env: NodeJS.ProcessEnv = process.env): Promise<ShimConfig> {
  const mode = fastStartMode(env);
  if (mode === 'off' || config.agentPeer) return config;
  const mountedOn = mountedTemplatesEnabled(env);
  try {
    if (templateIneligible(config.plan)) {
      debug(`cold boot: ${templateIneligible(config.plan)}`);
      return config;
    }
    // A home without templates (a new one, every CI scratch home): no kernel/initramfs hashing
    // (~150 ms for the first box), the background builder does it.
    const noneYet = mode === 'auto' && !anyTemplate(homeRoot);
    const pending: Array<{ homeRoot: string; image: FastStartImage; mounted: boolean }> = [];
    const disk = config.plan.disks[0]!.path;
    // Only a disk nothing was ever written to may take the mounted template's disk copy.
    if (mountedOn && (await freshOverlay(disk, image.rootfsBase, await diskVirtualBytes(disk)))) {
      const mounted = noneYet ? null : await ensureTemplate({ homeRoot, plan: config.plan, image, bootTimeoutMs: config.agentTimeoutMs, build: mode === 'eager', mounted: true });
      if (mounted?.disk) {
        await adoptTemplateDisk(mounted, disk);
        debug(`restoring mounted template ${mounted.key} (disk copied)`);
        return { ...config, template: mounted };
      }
      if (mode === 'auto') pending.push({ homeRoot, image, mounted: true });
    }
    const template = noneYet ? null : await ensureTemplate({ homeRoot, plan: config.plan, image, bootTimeoutMs: config.agentTimeoutMs, build: mode === 'eager' });
    if (!template && mode === 'auto') pending.unshift({ homeRoot, image, mounted: false });
    const out = template ? { ...config, template } : config;
    if (pending.length) pendingBuilds.set(out, pending);
    return out;
  } catch (err) {
    debug(`cold boot: no template (${(err as Error).message})`);
    return config;
  }
}

/**
 * The background template build: one process (src/runtime/template-builder.ts) at a time per
 * SDK process, niced, started a while after the cold box that asked for it is up (not to
 * slow that box's first commands). It dies with the SDK's process (pdeathsig) and with the
 * runtime's shutdown()/close(); a build cut short leaves nothing a box would use (builds
 * publish by rename). A shape whose build failed is not tried again by this process.
 */
const BUILD_DELAY_MS = 1_000;
const BUILDER_ENTRY = fileURLToPath(new URL('./template-builder.js', import.meta.url));
let builder: ChildProcess | undefined;
let builderTimer: NodeJS.Timeout | undefined;
const buildQueue: Array<{ id: string; job: BuildJob }> = [];
const buildsTried = new Set<string>();

export interface BuildJob {
  homeRoot: string;
  plan: VmPlan;
  image: FastStartImage;
  bootTimeoutMs: number;
  diskBytes: number;
  mounted?: boolean;
}

async function queueBackgroundBuild(config: ShimConfig, homeRoot: string, image: FastStartImage, mounted = false): Promise<void> {
  const id = JSON.stringify([path.resolve(homeRoot), planShape(config.plan), image.manifestDigest, config.plan.boot.kernelPath, config.plan.boot.initrdPath, mounted]);
  if (buildsTried.has(id)) return;
  buildsTried.add(id);
  const diskBytes = await diskVirtualBytes(config.plan.disks[0]!.path);
  buildQueue.push({ id, job: { homeRoot, plan: config.plan, image, bootTimeoutMs: config.agentTimeoutMs, diskBytes, ...(mounted ? { mounted } : {}) } });
  if (!builder && !builderTimer) builderTimer = setTimeout(runNextBuild, BUILD_DELAY_MS).unref();
}

function runNextBuild(): void {
  builderTimer = undefined;
  const next = buildQueue.shift();
  if (!next) return;
  let logFd: number | undefined;
  try {
    fs.mkdirSync(templatesDir(next.job.homeRoot), { recursive: true, mode: 0o700 });
    logFd = fs.openSync(path.join(templatesDir(next.job.homeRoot), 'build.log'), 'a');
    const setpriv = ['/usr/bin/setpriv', '/bin/setpriv'].find((p) => fs.existsSync(p));
    const argv = [process.execPath, BUILDER_ENTRY];
    const child = setpriv
      ? spawn(setpriv, ['--pdeathsig', 'KILL', '--', ...argv], { stdio: ['pipe', 'ignore', logFd] })
      : spawn(argv[0]!, argv.slice(1), { stdio: ['pipe', 'ignore', logFd] });
    builder = child;
    try {
      // Below the boxes it is built for: on 2 cores a build must not slow the boxes running.
      if (child.pid) os.setPriority(child.pid, 10);
    } catch {
      // not allowed here: runs at normal priority
    }
    child.stdin!.on('error', () => {});
    child.stdin!.end(JSON.stringify(next.job));
    const done = () => {
      if (builder !== child) return;
      builder = undefined;
      if (buildQueue.length) builderTimer = setTimeout(runNextBuild, BUILD_DELAY_MS).unref();
    };
    child.once('exit', (code, signal) => {
      debug(`background template build ${code === 0 ? 'done' : `failed (${signal ?? code}, see templates/build.log)`}`);
      done();
    });
    child.once('error', done);
    child.unref();
  } catch (err) {
    debug(`no background template build: ${(err as Error).message}`);
  } finally {
    if (logFd !== undefined) fs.closeSync(logFd);
  }
}

/** The background build under way, if any (host tests). */
export function backgroundBuilder(): ChildProcess | undefined {
  return builder;
}

function stopBackgroundBuilds(): void {
  clearTimeout(builderTimer);
  builderTimer = undefined;
  buildQueue.length = 0;
  builder?.kill('SIGKILL');
  builder = undefined;
}

const SHIM_ENTRY = fileURLToPath(new URL('../shim/boxlite-shim.js', import.meta.url));

/**
 * A shim process started ahead of the next restored box: Node's own start and the shim's module
 * graph (~80 ms here, a quarter of a restored start) are paid while nothing waits. It idles
 * reading its stdin for a config; it is used only for a box that is not detached (a detached
 * shim is spawned in its own session), and only if the environment it inherited is still ours.
 */
interface SpareShim {
  child: ChildProcess;
  env: string;
}
let spare: SpareShim | undefined;
/** After a restored box is ready, how long the next spare waits (see launchWithFallback). */
const SPARE_DELAY_MS = 300;
let spareTimer: NodeJS.Timeout | undefined;
/** What the shim inherits; the two switches of this file are the SDK's own, the shim reads neither. */
const envIdentity = () =>
  JSON.stringify(
    Object.entries(process.env)
      .filter(([k]) => k !== 'BOXLITE_FAST_START' && k !== 'BOXLITE_FAST_START_MOUNTED' && k !== 'BOXLITE_SPARE_SHIM')
      .sort(([a], [b]) => (a < b ? -1 : 1)),
  );
const spareWanted = () => process.env.BOXLITE_SPARE_SHIM !== '0';

/** Exported for the host tests; the runtime calls it after a restored box's launch. */
export function spawnSpareShim(homeRoot: string): ChildProcess | undefined {
  if (spare) return spare.child;
  let logFd: number | undefined;
  try {
    // What Node itself would print on a crash before the shim opens its box's log.
    fs.mkdirSync(templatesDir(homeRoot), { recursive: true, mode: 0o700 });
    logFd = fs.openSync(path.join(templatesDir(homeRoot), 'spare-shim.log'), 'a');
    const child = spawn(process.execPath, [SHIM_ENTRY], { stdio: ['pipe', 'pipe', logFd, 'pipe'] });
    const mine: SpareShim = { child, env: envIdentity() };
    child.once('exit', () => {
      if (spare === mine) spare = undefined;
    });
    child.once('error', () => {
      if (spare === mine) spare = undefined;
    });
    setRef(child, false);
    spare = mine;
    return child;
  } catch (err) {
    debug(`no spare shim: ${(err as Error).message}`);
    return undefined;
  } finally {
    if (logFd !== undefined) fs.closeSync(logFd);
  }
}

/** An idle spare must not keep the SDK's process alive; one in use must, as a fresh spawn does. */
function setRef(child: ChildProcess, ref: boolean): void {
  for (const h of [child, child.stdin, child.stdout, child.stdio[3]] as Array<{ ref?: () => void; unref?: () => void } | null>) {
    if (ref) h?.ref?.();
    else h?.unref?.();
  }
}

/** The spare shim for this box, when there is a usable one (it is then no longer the spare). */
export function takeSpareShim(config: ShimConfig): ChildProcess | undefined {
  if (!spareWanted()) return undefined;
  const s = spare;
  spare = undefined;
  if (!s) return undefined;
  if (config.detach || s.env !== envIdentity() || s.child.exitCode !== null || s.child.signalCode !== null) {
    s.child.kill('SIGKILL');
    return undefined;
  }
  setRef(s.child, true);
  return s.child;
}

/** Ends the spare shim (runtime shutdown/close: no process of ours may outlive the runtime's use). */
export function discardSpareShim(): void {
  stopBackgroundBuilds();
  // A spare still to come would outlive the runtime that shut down.
  clearTimeout(spareTimer);
  spareTimer = undefined;
  spare?.child.kill('SIGKILL');
  spare = undefined;
}

/**
 * Launches the shim; a restore that fails (QEMU refuses the state, the agent does not answer)
 * costs the template and the box boots cold instead.
 */
export async function launchWithFallback(
  config: ShimConfig,
  launch: (c: ShimConfig, spare?: ChildProcess) => Promise<LaunchedShim>,
  homeRoot: string,
): Promise<LaunchedShim> {
  const queuePending = async () => {
    for (const p of pendingBuilds.get(config) ?? []) {
      await queueBackgroundBuild(config, p.homeRoot, p.image, p.mounted).catch((err: Error) => debug(`no background template build: ${err.message}`));
    }
  };
  if (!config.template) {
    const launched = await launch(config);
    await queuePending();
    return launched;
  }
  try {
    const launched = await launch(config, takeSpareShim(config));
    await queuePending();
    // Not at once: Node's start would take CPU from this box's guest, which is mounting its
    // disk and building its container right now (on 2 cores that cost the box ~60 ms).
    if (spareWanted() && !spareTimer) {
      spareTimer = setTimeout(() => {
        spareTimer = undefined;
        spawnSpareShim(homeRoot);
      }, SPARE_DELAY_MS).unref();
    }
    return launched;
  } catch (err) {
    if (err instanceof BoxliteError && err.code === 'AlreadyExists') throw err;
    debug(`restore from template ${config.template.key} failed (${(err as Error).message}); removing it and booting cold`);
    await fsp.rm(path.join(templatesDir(homeRoot), config.template.key), { recursive: true, force: true }).catch(() => undefined);
    const { template: _unused, ...cold } = config;
    return launch(cold);
  }
}

/** What `warmTemplate` made: the key, and what the proof restore took. */
export interface WarmResult {
  key: string;
  /** Whole call: image, template build (or none when it existed), one restore. */
  totalMs: number;
  /** The proof restore: QEMU spawn → agent HELLO. */
  restoreMs: number;
}

/**
 * Makes the template of the shape these box options give (the SDK's `boxlite warm`): starts
 * one box of that shape with fast start on (which makes the template if needed, then restores
 * it — the proof that it works) and removes it. Throws when no template can be made.
 */
export async function warmTemplate(runtime: JsBoxlite, options: BoxOptions): Promise<WarmResult> {
  const saved = process.env.BOXLITE_FAST_START;
  process.env.BOXLITE_FAST_START = '1';
  const t0 = performance.now();
  try {
    const box = await runtime.create(options);
    try {
      await box.start();
      const shim = JSON.parse(fs.readFileSync(path.join(runtime.home.boxes, box.id, 'shim.json'), 'utf8')) as { template?: string; bootMs: number };
      if (!shim.template) {
        throw new EngineError('no fast-start template could be made for this box shape (BOXLITE_LOG=debug says why); its boxes boot cold');
      }
      return { key: shim.template, totalMs: Math.round(performance.now() - t0), restoreMs: shim.bootMs };
    } finally {
      await runtime.remove(box.id, true);
    }
  } finally {
    if (saved === undefined) delete process.env.BOXLITE_FAST_START;
    else process.env.BOXLITE_FAST_START = saved;
  }
}
