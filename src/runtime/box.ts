import fs from 'node:fs';
import {
  BoxliteError,
  ConfigError,
  ExecutionError,
  InvalidArgumentError,
  InvalidStateError,
  PortalError,
  StoppedError,
  StorageError,
  toBoxliteError,
  UnsupportedError,
} from '../errors/index.js';
import type { Message } from '../protocol/codec.js';
import { launchShim, ShimClient, type LaunchedShim } from '../shim/client.js';
import { isProcessAlive } from '../util/fs.js';
import { boxPaths, type ExitRecord, type MainSpec, type ShimConfig } from '../shim/config.js';
import { readJson } from '../util/fs.js';
import type { BoxRecord, BoxStatus } from '../store/boxes.js';
import { Execution, type ExecResult } from './execution.js';
import { validateExec, type ExecOptions, type NormalizedBoxOptions } from './options.js';
import type { RuntimeContext } from './context.js';
import { cachedHostTscKhz, type AccelKind } from '../vmm/accel.js';
import type { GuestAssets } from '../vmm/assets.js';
import type { VmPlan } from '../vmm/plan.js';
import { GUEST_NET, STREAM_LINK } from '../vmm/qemu.js';
import type { NetConfig, NetTestSeam, SecretSpec } from '../net/types.js';
import { guestPolicy } from './capabilities.js';
import type { BoxPaths } from '../store/home.js';
import type { BoxImage } from './image.js';
import { defaultCommand, execEnvironment } from './image.js';
import { readSecretValues, secretEnvironment } from './secrets.js';
import { copyIn, copyOut, type CopyOptions } from './copy.js';
import { BoxNetwork } from '../sdk/network.js';
import type { BoxNetworkHandle, CloneOptions, ExportOptions, SnapshotHandle } from './handles.js';
import { BoxSnapshots, cloneRecord, collectBases } from './snapshots.js';
import { exportArchive } from './archive.js';
import { forkRecord } from './fork.js';
import { launchWithFallback, withFastStart } from './faststart.js';
import { healthStatusOf, lifecycleConfig, pauseBox } from './lifecycle.js';

export type BoxRecordT = BoxRecord<NormalizedBoxOptions, BoxImage>;

export interface BoxStateInfo {
  status: BoxStatus;
  running: boolean;
  pid?: number;
  /**
   * How the main process's last run ended (the reference's `JsBoxStateInfo.exitCode`, docker's
   * State.ExitCode): its exit status, 128+N for death by signal N (137 when the box was stopped
   * under it). Absent while it runs, before it first ran, and for a box without one.
   */
  exitCode?: number;
}

export interface PublishedPort {
  guestPort: number;
  hostIp: string;
  hostPort: number;
  protocol: 'tcp' | 'udp';
}

export interface NetworkInfo {
  outbound: { mode: 'enabled' | 'disabled'; allowNet: string[] };
  inbound: { mode: 'enabled' | 'disabled'; allowNet: string[] };
  mode: 'enabled' | 'disabled';
  allowNet: string[];
  publishedPorts: PublishedPort[] | null;
}

/** `JsBoxInfo` of @boxlite-ai/boxlite. */
export interface BoxInfo {
  id: string;
  name?: string;
  state: BoxStateInfo;
  createdAt: string;
  startedAt?: string;
  image: string;
  cpus: number;
  memoryMib: number;
  network: NetworkInfo | null;
  autoStop: number;
  autoDelete: number;
  autoResume: boolean;
  healthStatus: { state: 'None' | 'Starting' | 'Healthy' | 'Unhealthy'; failures: number; lastCheck?: string };
}

/** The box as a VM, in terms that name no hypervisor (only src/vmm/ turns it into QEMU arguments). */
export function vmPlan(
  options: NormalizedBoxOptions,
  paths: Pick<BoxPaths, 'disk' | 'agentSocket' | 'consoleLog'> & Partial<Pick<BoxPaths, 'qmpSocket'>>,
  assets: Pick<GuestAssets, 'kernelPath' | 'initrdPath'>,
  accel: AccelKind,
  mainProcess = false,
  /** The box's own stack on this socket (the runtime's choice); absent: QEMU's slirp. */
  stream?: { socketPath: string },
): VmPlan {
  const ports = (options.ports ?? []).map((p) => ({
    protocol: p.protocol,
    hostAddress: p.hostIp,
    hostPort: p.hostPort,
    guestPort: p.guestPort,
  }));
  return {
    accel,
    resources: { cpus: options.cpus, memoryMib: options.memoryMib },
    boot: {
      kernelPath: assets.kernelPath,
      initrdPath: assets.initrdPath,
      tscKhz: accel === 'tcg' ? cachedHostTscKhz() : null,
    },
    disks: [{ path: paths.disk, format: 'qcow2' }],
    shares: (options.volumes ?? []).map((v) => ({ hostPath: v.hostPath, guestPath: v.guestPath, readOnly: v.readOnly })),
    nics:
      options.network === 'enabled'
        ? [
            stream
              ? { kind: 'stream', socketPath: stream.socketPath, mac: STREAM_LINK.guestMac, mtu: STREAM_LINK.mtu, ports }
              : { kind: 'user', ports },
          ]
        : [],
    console: { logPath: paths.consoleLog },
    agent: { socketPath: paths.agentSocket },
    // QMP: pause/resume (src/runtime/lifecycle.ts) ask the shim, which asks QEMU here.
    ...(paths.qmpSocket ? { controlSocketPath: paths.qmpSocket } : {}),
    ...guestPolicy(options),
    ...(options.seccomp ? { seccomp: true } : {}),
    ...(options.jail ? { jail: true } : {}),
    ...(mainProcess ? { mainProcess: true } : {}),
    // Secrets: the box CA comes over the agent link (TRUST) and the container waits for it.
    ...(stream && options.secrets?.length ? { trust: true } : {}),
  };
}

/**
 * Which NIC boxes get: the box's own stack (default), or QEMU's slirp with BOXLITE_NET=slirp,
 * kept only so the benchmark can compare the two in one run.
 */
export function netBackend(env: NodeJS.ProcessEnv = process.env): 'stack' | 'slirp' {
  const v = env.BOXLITE_NET;
  if (!v || v === 'stack') return 'stack';
  if (v === 'slirp') return 'slirp';
  throw new ConfigError(`BOXLITE_NET=${v}: expected "stack" (default) or "slirp"`);
}

/**
 * The network part of a box's ShimConfig, from its normalized options: the fixed link
 * addressing (GUEST_NET), its sockets, allowNet, secrets and published ports, and the internal
 * test seam named by BOXLITE_INTERNAL_NET_SEAM (tests only). Undefined without a network.
 */
export function netConfig(
  options: NormalizedBoxOptions,
  paths: Pick<BoxPaths, 'netSocket' | 'tunnelSocket'>,
  secrets: SecretSpec[],
  env: NodeJS.ProcessEnv = process.env,
): NetConfig | undefined {
  // Parts B (allowNet) and C (secrets) add these to the normalized options.
  const allowNet = (options as { allowNet?: string[] }).allowNet ?? [];
  if (options.network !== 'enabled') return undefined;
  if (netBackend(env) === 'slirp') {
    if (allowNet.length || secrets.length) {
      throw new ConfigError(
        `network.allowNet and secrets need the box's own network stack; BOXLITE_NET=slirp (QEMU's slirp, for benchmarks) cannot enforce them`,
      );
    }
    return undefined;
  }
  const seam = readNetSeam(env);
  return {
    link: {
      guestIp: GUEST_NET.ip.split('/')[0]!,
      gatewayIp: GUEST_NET.gateway,
      hostAliasIp: GUEST_NET.hostAlias,
      prefixLength: Number(GUEST_NET.ip.split('/')[1]),
      guestMac: STREAM_LINK.guestMac,
      gatewayMac: STREAM_LINK.gatewayMac,
      mtu: STREAM_LINK.mtu,
    },
    socketPath: paths.netSocket,
    tunnelSocketPath: paths.tunnelSocket,
    allowNet: [...allowNet],
    secrets,
    ports: (options.ports ?? []).map((p) => ({ hostIp: p.hostIp ?? '', hostPort: p.hostPort, guestPort: p.guestPort, protocol: p.protocol })),
    ...(seam ? { testSeam: seam } : {}),
  };
}

/** @internal The test seam (NetTestSeam JSON) named by BOXLITE_INTERNAL_NET_SEAM; tests only, never public API. */
function readNetSeam(env: NodeJS.ProcessEnv): NetTestSeam | undefined {
  const file = env.BOXLITE_INTERNAL_NET_SEAM;
  if (!file) return undefined;
  let seam: unknown;
  try {
    seam = JSON.parse(fs.readFileSync(file, 'utf8'));
  } catch (err) {
    throw new ConfigError(`BOXLITE_INTERNAL_NET_SEAM=${file}: ${(err as Error).message}`);
  }
  const isMap = (v: unknown) => typeof v === 'object' && v !== null && !Array.isArray(v);
  const s = seam as NetTestSeam;
  if (!isMap(s) || !isMap(s.names) || !isMap(s.dial) || (s.upstreamCa !== undefined && !Array.isArray(s.upstreamCa))) {
    throw new ConfigError(`BOXLITE_INTERNAL_NET_SEAM=${file}: expected {names: {...}, dial: {...}, upstreamCa?: [...]}`);
  }
  return { names: s.names, dial: s.dial, ...(s.upstreamCa ? { upstreamCa: s.upstreamCa } : {}) };
}

/** How a boot is asked for: by start()/attach() (explicit), held for an attach, with a TTY. */
interface BootIntent {
  explicit?: boolean;
  hold?: boolean;
  tty?: boolean;
}

/** `JsBoxMetrics` of @boxlite-ai/boxlite (the fields measured so far). */
export interface BoxMetrics {
  commandsExecutedTotal: number;
  execErrorsTotal: number;
  bytesSentTotal: number;
  bytesReceivedTotal: number;
  totalCreateDurationMs?: number;
  guestBootDurationMs?: number;
  cpuPercent?: number;
  memoryBytes?: number;
  /** Payload bytes the box's guest flows sent out (guest → host and upstream), from its network stack. */
  networkBytesSent?: number;
  /** Payload bytes that came back to the guest. */
  networkBytesReceived?: number;
  /** Guest TCP connections established upstream. */
  networkTcpConnections?: number;
  /** Guest TCP connections refused, timed out, reset or blocked by the policy. */
  networkTcpErrors?: number;
  stageFilesystemSetupMs?: number;
  stageImagePrepareMs?: number;
  stageGuestRootfsMs?: number;
  stageBoxConfigMs?: number;
  stageBoxSpawnMs?: number;
  stageContainerInitMs?: number;
}

/**
 * The ports a box publishes: the running shim's (host port 0 resolved), null while it boots
 * (not known yet), [] when it publishes none or is not running.
 */
function publishedPortsOf(record: BoxRecordT, status: BoxStatus, live?: PublishedPort[]): PublishedPort[] | null {
  if (record.options.network !== 'enabled' || !(record.options.ports ?? []).length) return [];
  if (status !== 'running' && status !== 'stopping' && status !== 'paused') return [];
  return live ? live.map((p) => ({ ...p })) : null;
}

export function boxInfo(
  record: BoxRecordT,
  status: BoxStatus,
  pid?: number,
  startedAt?: string,
  livePorts?: PublishedPort[],
  exitCode?: number,
): BoxInfo {
  const mode = record.options.network;
  return {
    id: record.id,
    name: record.name,
    state: { status, running: status === 'running', pid, ...(exitCode !== undefined ? { exitCode } : {}) },
    createdAt: record.createdAt,
    startedAt,
    image: record.image.reference,
    cpus: record.options.cpus,
    memoryMib: record.options.memoryMib,
    network: {
      // The policy as normalized at create() (configs older than allowNet have none: []).
      outbound: { mode, allowNet: [...(record.options.allowNet ?? [])] },
      inbound: { mode: 'disabled', allowNet: [] },
      mode,
      allowNet: [...(record.options.allowNet ?? [])],
      publishedPorts: publishedPortsOf(record, status, livePorts),
    },
    autoStop: record.options.autoStop ?? 0,
    autoDelete: record.options.autoDelete ?? 0,
    autoResume: record.options.autoResume ?? false,
    healthStatus: { state: 'None', failures: 0 },
  };
}

/** What `box.inspect()` adds to info(): the box's full configuration and where its files are. */
export interface BoxInspection extends BoxInfo {
  /** The box options as normalized at create(). */
  config: NormalizedBoxOptions;
  /** The image's OCI config (Env, Entrypoint, Cmd, User, WorkingDir, ...). */
  imageConfig: BoxImage['config'];
  /** The main process (the container's init): its command, and how its last run ended. Null for an exec-only box. */
  mainProcess: { command: string[]; exit: ExitRecord | null } | null;
  paths: { dir: string; consoleLog: string; mainLog: string };
  /**
   * The box network's counters (bytes, TCP connections and errors, blocked flows, DNS queries
   * and NXDOMAINs, dropped frames) and live state (flows, blocked by reason, pinned names), while
   * it runs on its own stack; absent otherwise.
   */
  networkStats?: { counters: Record<string, number>; snapshot: unknown };
}

export interface LogOptions {
  /** Only the last N lines of what is there now. */
  tail?: number;
  /** Keep yielding what is written until the box stops (or `signal` aborts). */
  follow?: boolean;
  signal?: AbortSignal;
  /**
   * The guest console (kernel and agent) instead of the main process's output. A box without a
   * main process has only the console, so it is what logs() shows for one either way.
   */
  console?: boolean;
}

/** A box handle (`JsBox`). Several handles, in several processes, may point at one box. */
export class Box {
  private client?: ShimClient;
  private starting?: Promise<ShimClient>;
  private watchdog?: import('node:net').Socket;
  private readonly metricsState: BoxMetrics = {
    commandsExecutedTotal: 0,
    execErrorsTotal: 0,
    bytesSentTotal: 0,
    bytesReceivedTotal: 0,
  };
  private nextExec = 1;
  /** shim.json's identity when it last said "not paused" (see pausedNow). */
  private notPausedStamp?: string;
  private stopping?: Promise<void>;
  private removedByStop?: { status: BoxStatus; startedAt?: string; exitCode?: number };
  /** box.fork(): the next boot restores this saved memory (src/runtime/fork.ts), once. */
  private forkState?: string;
  /** Set by stop() and kill(): this handle is spent, as in the reference (runtime.get() makes a new one). */
  private invalidated = false;

  /** @internal */
  constructor(
    private readonly ctx: RuntimeContext,
    private record: BoxRecordT,
    stages?: Partial<BoxMetrics>,
  ) {
    Object.assign(this.metricsState, stages);
  }

  get id(): string {
    return this.record.id;
  }

  get name(): string | null {
    return this.record.name ?? null;
  }

  /** @internal */
  get config(): BoxRecordT {
    return this.record;
  }

  /** `box.snapshot`: snapshots of the stopped box's disk (src/runtime/snapshots.ts); works on a handle spent by stop(). */
  readonly snapshot: SnapshotHandle = new BoxSnapshots(() => this.ctx, () => this.record.id, () => this.quiesceDisk());
  /** `box.network`: tunnels to ports in the box, over its network worker's tunnel socket (boots the box if needed). */
  readonly network: BoxNetworkHandle = new BoxNetwork(async () => {
    this.assertUsable();
    if (this.record.options.network !== 'enabled') {
      throw new InvalidStateError(`box ${this.id} has no network (network.outbound.mode is disabled): nothing to tunnel to`);
    }
    if (netBackend() === 'slirp') throw new UnsupportedError('tunnels need the box\'s own network stack; BOXLITE_NET=slirp has none');
    await this.connect();
    return boxPaths(this.ctx.store.dir(this.id)).tunnelSocket;
  });

  /** A new box from this stopped one: its config, and its disk shared copy-on-write (src/runtime/snapshots.ts). */
  async cloneBox(_options?: CloneOptions | null, name?: string | null): Promise<Box> {
    const record = await cloneRecord(this.ctx, this.record, name, () => this.quiesceDisk());
    this.ctx.metrics.boxesCreatedTotal++;
    return new Box(this.ctx, record);
  }

  /**
   * A new running box that carries on from this running one's memory: its processes, tmpfs and
   * page cache as they were at one paused instant, its disk shared copy-on-write from then on,
   * its own network stack, clock and random seed; executions open on this box are not carried.
   * An extension: cloneBox() stays the reference's disk-only copy (docs/snapshots.md "Fork").
   */
  async fork(name?: string | null, options?: { detach?: boolean }): Promise<Box> {
    this.assertUsable();
    const { record, statePath } = await forkRecord(this.ctx, this.record, name);
    this.ctx.metrics.boxesCreatedTotal++;
    const box = new Box(this.ctx, record);
    box.forkState = statePath;
    try {
      // detach as for start(): the CLI's fork must outlive the CLI process.
      await box.start(options);
    } catch (err) {
      await box.stop().catch(() => undefined);
      this.ctx.store.remove(record.id);
      collectBases(this.ctx);
      throw err;
    } finally {
      box.forkState = undefined;
      fs.rmSync(statePath, { force: true });
    }
    return box;
  }

  /** Before a running box's disk is captured: the guest writes its page cache out (docs/snapshots.md). */
  private async quiesceDisk(): Promise<void> {
    const r = await this.exec('sync')
      .then((ex) => ex.wait())
      .catch((err: unknown) => {
        // A paused or stopping box says so (InvalidState); anything else means no usable `sync`.
        if (err instanceof BoxliteError && err.code === 'InvalidState') throw err;
        throw new StorageError(`cannot run sync in box ${this.id} (${(err as Error).message}): its disk cannot be captured consistently`, { cause: err });
      });
    if (r.exitCode !== 0) throw new StorageError(`sync in box ${this.id} failed (exit code ${r.exitCode}): its disk cannot be captured consistently`);
  }

  /** Writes this box (stopped, or running: paused a moment, docs/snapshots.md) to one `.boxlite` archive; resolves with its path. */
  export(dest: string, _options?: ExportOptions | null): Promise<string> {
    return exportArchive(this.ctx, this.record, dest, () => this.quiesceDisk());
  }

  async info(): Promise<BoxInfo> {
    // A box its own stop() removed (autoRemove) reads as the reference's handle shows it: stopped.
    if (this.removedByStop) {
      return boxInfo(this.record, this.removedByStop.status, undefined, this.removedByStop.startedAt, undefined, this.removedByStop.exitCode);
    }
    const { state, shim } = this.ctx.store.status(this.id);
    const info = boxInfo(this.record, state.status, shim?.qemuPid, state.startedAt, shim?.publishedPorts, this.lastExit()?.exitCode);
    info.healthStatus = healthStatusOf(this.record.options, boxPaths(this.ctx.store.dir(this.id)), !!shim?.qemuPid);
    return info;
  }

  /**
   * Freezes the running VM (every vCPU stopped over QMP; memory, processes and connections kept):
   * status `paused`, exec and copies refused with InvalidState until resume(). Not in the
   * reference's JsBox (its local runtime pauses only inside snapshot/export).
   */
  async pause(): Promise<void> {
    this.assertUsable();
    await pauseBox(this.ctx.store, this.id, true);
  }

  /** Thaws a paused VM: everything in it carries on where it was. */
  async resume(): Promise<void> {
    this.assertUsable();
    await pauseBox(this.ctx.store, this.id, false);
  }

  /** The shim stopped this box for autoStop (its last run ended that way). */
  private autoStopped(): boolean {
    return fs.existsSync(boxPaths(this.ctx.store.dir(this.id)).autoStopFile);
  }

  /** How the main process's last run ended (exit.json, written by the shim), if it has. */
  private lastExit(): ExitRecord | undefined {
    return readJson<ExitRecord>(boxPaths(this.ctx.store.dir(this.id)).exitFile) ?? undefined;
  }

  /** The running box's network counters and state, for inspect(); nothing when it has no stack of its own. */
  private async networkStats(): Promise<{ networkStats?: BoxInspection['networkStats'] }> {
    if (this.record.options.network !== 'enabled' || !this.ctx.store.liveShim(this.id)?.qemuPid) return {};
    const client = await ShimClient.connect(boxPaths(this.ctx.store.dir(this.id)).controlSocket).catch(() => undefined);
    if (!client) return {};
    try {
      return { networkStats: await client.request('network') };
    } catch {
      return {};
    } finally {
      client.close();
    }
  }

  /** The main process's argv: the image's Entrypoint + Cmd after the box's overrides; [] = an exec-only box. */
  private mainCommand(): string[] {
    return defaultCommand(this.record.image.config, this.record.options);
  }

  /**
   * Boots the VM if it is not running; attaches to it if another process started it.
   * `detach` overrides the box option for this boot (the CLI's `start` uses it).
   */
  async start(options?: { detach?: boolean }): Promise<void> {
    this.assertUsable();
    await this.connect(options?.detach, { explicit: true });
  }

  /**
   * Attaches to the box's main process (the container's init: the image's Entrypoint + Cmd
   * after the box's overrides) and returns it as an Execution: its output from now on, its
   * stdin, signals, and its exit through wait(). A box that is not running boots for it, and
   * its main process then starts only once attached, so no output is missed (docker's create,
   * attach, start); `tty` gives it a terminal then. Rejects with an Execution error when the
   * command cannot start (exit code 127 or 126), InvalidState for a box without one.
   */
  async attach(options?: { tty?: boolean }): Promise<Execution> {
    this.assertUsable();
    if (!this.mainCommand().length) {
      throw new InvalidStateError(`box ${this.id} has no main process (its image has no Entrypoint or Cmd, and the box sets neither)`);
    }
    if (this.ctx.store.status(this.id).state.status === 'paused') {
      throw new InvalidStateError(`box ${this.id} is paused; resume() it first`);
    }
    const tty = Boolean(options?.tty);
    const client = await this.connect(undefined, { explicit: true, hold: true, tty });
    let execution: Execution | undefined;
    let pending: Message[] = [];
    let lostEarly: BoxliteError | undefined;
    const { channel, reply } = client.attachMain(tty, {
      onMessage: (m) => {
        if (execution) execution.handle(m);
        else pending.push(m);
      },
      onLost: (err) => {
        if (execution) execution.lost(err);
        else lostEarly = err;
      },
    });
    const answer = await reply;
    if ('exited' in answer) {
      if (answer.message) throw new ExecutionError(answer.message, { exitCode: answer.exitCode });
      throw new InvalidStateError(`box ${this.id}'s main process already exited with code ${answer.exitCode}`);
    }
    execution = new Execution(`${this.id}-main`, channel, answer.pid, { onExit: () => {}, onStdin: () => {} }, tty);
    for (const m of pending) execution.handle(m);
    pending = [];
    if (lostEarly) execution.lost(lostEarly);
    return execution;
  }

  /** The reference's rule: once stop() ran on a handle, exec/start/copy/metrics on it refuse (info, inspect, logs and stop still work). */
  private assertUsable(): void {
    if (this.invalidated) {
      throw new StoppedError('Handle invalidated after stop(). Use runtime.get() to get a new handle.');
    }
  }

  /** info() plus the full configuration and the box's file locations (`boxlite inspect`). */
  async inspect(): Promise<BoxInspection> {
    const paths = boxPaths(this.ctx.store.dir(this.id));
    return {
      ...(await this.info()),
      config: this.record.options,
      imageConfig: this.record.image.config,
      mainProcess: this.mainCommand().length ? { command: this.mainCommand(), exit: this.lastExit() ?? null } : null,
      paths: { dir: paths.dir, consoleLog: paths.consoleLog, mainLog: paths.mainLog },
      ...(await this.networkStats()),
    };
  }

  /**
   * The box's log as raw chunks: the main process's stdout and stderr as they came (docker
   * logs), or the guest console (kernel and agent messages) with `console` and for a box without
   * a main process. What is there (its last `tail` lines), then with `follow` whatever is
   * appended until the box is no longer running. Works on a handle spent by stop(): the log
   * outlives the VM.
   */
  async *logs(options: LogOptions = {}): AsyncGenerator<Buffer> {
    const paths = boxPaths(this.ctx.store.dir(this.id));
    const file = options.console || !this.mainCommand().length ? paths.consoleLog : paths.mainLog;
    const size = () => {
      try {
        return fs.statSync(file).size;
      } catch {
        return 0;
      }
    };
    const readRange = (from: number, to: number, source = file): Buffer => {
      let fd: number;
      try {
        fd = fs.openSync(source, 'r');
      } catch {
        return Buffer.alloc(0);
      }
      try {
        const buf = Buffer.alloc(Math.max(0, to - from));
        const n = fs.readSync(fd, buf, 0, buf.length, from);
        return buf.subarray(0, n);
      } finally {
        fs.closeSync(fd);
      }
    };
    // main.log is rotated to main.log.1 by the shim (bounded, src/shim/main-process.ts): older output first.
    const rotated = file === paths.mainLog ? `${file}.1` : undefined;
    const rotatedSize = () => {
      try {
        return rotated ? fs.statSync(rotated).size : 0;
      } catch {
        return 0;
      }
    };
    const inode = () => {
      try {
        return fs.statSync(file).ino;
      } catch {
        return 0;
      }
    };
    let ino = inode();
    let offset = size();
    let first = offset > 0 ? readRange(0, offset) : Buffer.alloc(0);
    if (rotated && rotatedSize() > 0) first = Buffer.concat([readRange(0, rotatedSize(), rotated), first]);
    if (options.tail !== undefined) {
      if (!Number.isInteger(options.tail) || options.tail < 0) {
        throw new InvalidArgumentError(`logs: tail must be a non-negative integer, got ${String(options.tail)}`);
      }
      first = lastLines(first, options.tail);
    }
    if (first.length) yield first;
    if (!options.follow) return;
    for (;;) {
      const running = ['running', 'paused'].includes(this.ctx.store.status(this.id).state.status);
      const nowIno = inode();
      const now = size();
      if (now < offset || (rotated && nowIno !== ino && offset > 0)) {
        // Rotated (what was written after our last read is at the end of main.log.1), or
        // truncated by a new run: start over.
        if (rotated) {
          const rest = readRange(offset, rotatedSize(), rotated);
          if (rest.length) yield rest;
        }
        offset = 0;
      }
      ino = nowIno;
      if (now > offset) {
        yield readRange(offset, now);
        offset = now;
      }
      if (!running || options.signal?.aborted) return;
      await new Promise((r) => setTimeout(r, 250));
    }
  }

  /** The command `run` uses when given none: entrypoint + cmd with docker's override rules. */
  defaultCommand(): string[] {
    return defaultCommand(this.record.image.config, this.record.options);
  }

  private connect(detach?: boolean, boot: BootIntent = {}): Promise<ShimClient> {
    if (this.client && !this.client.isClosed) return Promise.resolve(this.client);
    this.starting ??= this.attachOrBoot(detach ?? this.record.options.detach, boot)
      .then((client) => {
        // Booted here or attached to a VM another handle or process started: either way this
        // runtime now runs it, so shutdown() stops it (the reference's runtime does the same).
        this.ctx.onBoxStarted(this);
        client.onClose(() => this.onVmGone());
        return client;
      })
      .finally(() => {
        this.starting = undefined;
      });
    return this.starting;
  }

  /**
   * The link to the VM ended. A box whose main process ended stopped itself: with autoRemove it
   * is removed, as by its own stop() (docs/decisions/0003-main-process.md).
   */
  private onVmGone(): void {
    if (!this.record.options.autoRemove || this.invalidated || !(this.lastExit() || this.autoStopped())) return;
    void this.stop().catch(() => undefined);
  }

  private async attachOrBoot(detach: boolean, boot: BootIntent): Promise<ShimClient> {
    const paths = boxPaths(this.ctx.store.dir(this.id));
    if (!fs.existsSync(paths.config)) throw new InvalidStateError(`box ${this.id} was removed`);
    const { state, shim } = this.ctx.store.status(this.id);
    if (shim) {
      if (state.status === 'stopping') throw new InvalidStateError(`box ${this.id} is stopping`);
      if (!shim.qemuPid) return this.attachWhenReady(this.ctx.agentTimeoutMs(this.ctx.accelerator().kind));
      this.client = await ShimClient.connect(paths.controlSocket);
      return this.client;
    }
    if (state.status === 'stopping') throw new InvalidStateError(`box ${this.id} is stopping`);
    const argv = this.mainCommand();
    const ownCommand = this.record.options.cmd !== undefined || this.record.options.entrypoint !== undefined;
    const exit = this.lastExit();
    if (!boot.explicit && ownCommand && exit) {
      // Booting runs the main process, and this one is the user's own command (cmd or
      // entrypoint): exec/copy/metrics must not run a finished job a second time behind the
      // user's back (the reference's rule). start() runs it again on purpose.
      throw new InvalidStateError(
        `box ${this.id}'s main command exited (exit code ${exit.exitCode}); start() runs it again, exec does not`,
      );
    }
    const t0 = performance.now();
    const assets = await this.ctx.guestAssets();
    const accel = this.ctx.accelerator();
    const t1 = performance.now();
    const options = this.record.options;
    const image = this.record.image.config;
    // A fork's main process is the source's, already running in the saved memory: its shim adopts it.
    const main: MainSpec | undefined = argv.length
      ? {
          argv,
          env: execEnvironment(image.Env, [...options.env, ...secretEnvironment(options.secrets)], []),
          user: options.user ?? image.User ?? '',
          cwd: options.workingDir ?? (image.WorkingDir || '/'),
          tty: Boolean(boot.tty),
          hold: Boolean(boot.hold),
        }
      : undefined;
    const net = netConfig(options, paths, this.secretSpecs());
    const config: ShimConfig = {
      boxId: this.id,
      boxDir: this.ctx.store.dir(this.id),
      plan: vmPlan(options, paths, assets, accel.kind, Boolean(main) || (!!this.forkState && argv.length > 0), net ? { socketPath: net.socketPath } : undefined),
      ...(net ? { net } : {}),
      accelReason: accel.reason,
      agentTimeoutMs: this.ctx.agentTimeoutMs(accel.kind),
      stopTimeoutMs: 10_000,
      detach,
      ...(main ? { main } : {}),
      ...lifecycleConfig(options),
      ...(this.forkState ? { fork: { statePath: this.forkState } } : {}),
    };
    const t2 = performance.now();
    let launched: LaunchedShim | undefined;
    try {
      try {
        launched = config.fork
          ? await launchShim(config)
          : await launchWithFallback(await withFastStart(config, this.record.image, this.ctx.home.root), launchShim, this.ctx.home.root);
      } catch (err) {
        // Another process (or handle) is booting this box right now: use its VM.
        if (err instanceof BoxliteError && err.code === 'AlreadyExists') return await this.attachWhenReady(config.agentTimeoutMs);
        throw err;
      }
      const t3 = performance.now();
      this.watchdog = launched.watchdog;
      this.client = await ShimClient.connect(paths.controlSocket);
      const t4 = performance.now();
      this.ctx.store.writeState(this.id, { status: 'running', startedAt: launched.state.startedAt });
      Object.assign(this.metricsState, {
        stageGuestRootfsMs: Math.round(t1 - t0) + (this.metricsState.stageGuestRootfsMs ?? 0),
        stageBoxConfigMs: Math.round(t2 - t1) + (this.metricsState.stageBoxConfigMs ?? 0),
        stageBoxSpawnMs: Math.round(t3 - t2),
        stageContainerInitMs: Math.round(t4 - t3),
        guestBootDurationMs: launched.state.bootMs,
      });
      this.metricsState.totalCreateDurationMs = Math.round(
        (this.metricsState.stageFilesystemSetupMs ?? 0) +
          (this.metricsState.stageImagePrepareMs ?? 0) +
          (t4 - t0),
      );
      return this.client;
    } catch (err) {
      if (launched) {
        // The VM booted but we cannot use it: do not leave it running unreachable.
        killProcess(launched.state.shimPid, launched.state.shimStartTime);
        this.watchdog?.destroy();
        this.watchdog = undefined;
      }
      this.ctx.store.writeState(this.id, { status: 'failed', lastError: (err as Error).message });
      this.ctx.onBoxFailed();
      throw toBoxliteError(err, 'Engine');
    }
  }

  /**
   * The box's secrets with their values, for its network stack (part C keeps the values out of
   * config.json and the database; this is where the boot gets them back).
   */
  private secretSpecs(): SecretSpec[] {
    return readSecretValues(this.ctx.store.dir(this.id), this.id, this.record.options.secrets);
  }

  private async attachWhenReady(timeoutMs: number): Promise<ShimClient> {
    const deadline = Date.now() + timeoutMs;
    const paths = boxPaths(this.ctx.store.dir(this.id));
    while (Date.now() < deadline) {
      if (this.ctx.store.liveShim(this.id)?.qemuPid) {
        this.client = await ShimClient.connect(paths.controlSocket);
        return this.client;
      }
      if (!fs.existsSync(paths.shimLock)) break; // the other boot gave up
      await new Promise((r) => setTimeout(r, 100));
    }
    throw new InvalidStateError(`box ${this.id} was being started by another process, which did not finish`);
  }

  /**
   * Runs a command in the box. Resolves once the process started; rejects with
   * an Execution error (exitCode 127) when the command does not exist.
   */
  async exec(
    command: string,
    args?: string[] | null,
    env?: Array<[string, string]> | null,
    tty?: boolean | null,
    user?: string | null,
    timeoutSecs?: number | null,
    workingDir?: string | null,
  ): Promise<Execution> {
    this.assertUsable();
    const opts: ExecOptions = { env, tty, user, timeoutSecs, workingDir };
    validateExec(command, args, opts);
    return this.spawn(command, args, env, tty, user, timeoutSecs, workingDir, false);
  }

  /**
   * @internal Runs a program of the agent's toolbox (EXEC flag TOOL, docs/protocol.md) as the
   * box's user: the agent opens it before joining the container, so the image cannot replace it.
   */
  execTool(tool: string, args: string[], workingDir = '/'): Promise<Execution> {
    return this.spawn(tool, args, null, false, null, null, workingDir, true);
  }

  /** @internal The user executions run as by default: box option, image User, else root. */
  defaultUser(): string {
    return this.record.options.user ?? this.record.image.config.User ?? '';
  }

  /** Copies a host file or directory into the box (the reference's placement rules: copy.ts placeCopy); boots the box if needed. */
  async copyIn(hostPath: string, guestDest: string, options?: CopyOptions): Promise<void> {
    this.assertUsable();
    await copyIn(this, hostPath, guestDest, options);
  }

  /** Copies a file or directory out of the box (same rules); boots the box if needed; never follows a symlink on the host. */
  async copyOut(guestSrc: string, hostDest: string, options?: CopyOptions): Promise<void> {
    this.assertUsable();
    await copyOut(this, guestSrc, hostDest, options);
  }

  /**
   * store.status(id) says 'paused' only from shim.json's flag, and the shim rewrites that file
   * by rename (a new inode) to change it: while it is the file that last said "not paused", the
   * answer stands, without the database query and /proc reads (~0.1 ms of every exec).
   */
  private pausedNow(): boolean {
    const file = boxPaths(this.ctx.store.dir(this.id)).shimState;
    let stamp: string | undefined;
    try {
      const st = fs.statSync(file, { bigint: true });
      stamp = `${st.dev}:${st.ino}:${st.size}:${st.mtimeNs}`;
    } catch {
      stamp = undefined;
    }
    if (stamp !== undefined && stamp === this.notPausedStamp) return false;
    const paused = this.ctx.store.status(this.id).state.status === 'paused';
    this.notPausedStamp = !paused && stamp !== undefined && readJson<{ paused?: boolean }>(file)?.paused !== true ? stamp : undefined;
    return paused;
  }

  private async spawn(
    command: string,
    args: string[] | null | undefined,
    env: Array<[string, string]> | null | undefined,
    tty: boolean | null | undefined,
    user: string | null | undefined,
    timeoutSecs: number | null | undefined,
    workingDir: string | null | undefined,
    tool: boolean,
  ): Promise<Execution> {
    this.assertUsable();
    if (this.pausedNow()) {
      throw new InvalidStateError(`box ${this.id} is paused; resume() it first`);
    }
    // A configured or stopped box boots on its first exec, as in the reference.
    const client = await this.connect();
    const image = this.record.image.config;
    const options = this.record.options;
    const execNo = this.nextExec++;
    this.metricsState.commandsExecutedTotal++;
    this.ctx.metrics.totalCommandsExecuted++;
    let execution: Execution | undefined;
    let pending: Message[] = [];
    return new Promise<Execution>((resolve, reject) => {
      const failStart = (err: BoxliteError) => {
        this.metricsState.execErrorsTotal++;
        this.ctx.metrics.totalExecErrors++;
        reject(err);
      };
      const channel = client.openExec(
        {
          flags: (tty ? 1 : 0) | (tool ? 2 : 0),
          rows: 24,
          cols: 80,
          timeoutMs: timeoutSecs ? Math.ceil(timeoutSecs * 1000) : 0,
          user: user ?? options.user ?? image.User ?? '',
          cwd: workingDir ?? options.workingDir ?? (image.WorkingDir || '/'),
          argv: [command, ...(args ?? [])],
          env: execEnvironment(image.Env, [...options.env, ...secretEnvironment(options.secrets)], env ?? []),
        },
        {
          onMessage: (m) => {
            if (m.type === 'STDOUT' || m.type === 'STDERR') this.metricsState.bytesReceivedTotal += m.data.length;
            if (execution) {
              execution.handle(m);
              return;
            }
            if (m.type === 'STARTED') {
              execution = new Execution(`${this.id}-${execNo}`, channel, m.pid, {
                onExit: (r: ExecResult) => {
                  if (r.exitCode !== 0) this.metricsState.execErrorsTotal++;
                },
                onStdin: (bytes) => {
                  this.metricsState.bytesSentTotal += bytes;
                },
              }, !!tty);
              for (const early of pending) execution.handle(early);
              pending = [];
              resolve(execution);
            } else if (m.type === 'EXIT') {
              failStart(new ExecutionError(m.message || `cannot start ${command}`, { exitCode: m.code }));
            } else if (m.type === 'ERROR') {
              failStart(new PortalError(`the guest agent refused the command: ${m.message}`));
            } else {
              pending.push(m);
            }
          },
          onLost: (err) => {
            if (execution) execution.lost(err);
            else failStart(err);
          },
        },
      );
    });
  }

  /** Gracefully powers the VM off (bounded, then forced). Removes the box when autoRemove is set. */
  stop(): Promise<void> {
    // A second stop() while one runs (shutdown() racing an explicit stop, `await using` after a
    // stop that was not awaited) resolves when the VM is down, not before.
    if (this.stopping) return this.stopping;
    if (this.invalidated) return Promise.resolve();
    this.stopping = this.stopOnce().finally(() => {
      this.stopping = undefined;
    });
    return this.stopping;
  }

  private async stopOnce(): Promise<void> {
    // A boot in flight on this handle finishes first: stopping under it would leave its VM
    // running unowned (and autoRemove would delete the box directory beneath it). Calls made
    // meanwhile are refused at once: after a boot the box is not 'stopped', so this stop is real.
    if (this.starting) {
      this.invalidated = true;
      await this.starting.catch(() => undefined);
    }
    const { shim, state } = this.ctx.store.status(this.id);
    if (!shim && state.status === 'stopped') {
      // The reference: stop() of a stopped box is a no-op that leaves the handle usable. A VM
      // that died under this handle still has its connection and runtime entry to drop.
      this.release();
      const exit = this.lastExit();
      if (this.record.options.autoRemove && (exit || this.autoStopped())) {
        // It stopped itself (its main process ended, or autoStop): autoRemove applies as to any stop.
        this.invalidated = true;
        this.removedByStop = { status: 'stopped', startedAt: state.startedAt, exitCode: exit?.exitCode };
        this.ctx.store.remove(this.id);
        collectBases(this.ctx);
      }
      return;
    }
    this.invalidated = true;
    if (shim) {
      this.ctx.store.writeState(this.id, { ...state, status: 'stopping' });
      try {
        const client =
          this.client && !this.client.isClosed
            ? this.client
            : await ShimClient.connect(boxPaths(this.ctx.store.dir(this.id)).controlSocket).catch(() => undefined);
        if (client) await client.request('stop').catch(() => undefined);
        if (!(await waitForExit(shim.shimPid, 15_000))) killProcess(shim.shimPid, shim.shimStartTime);
        await waitForExit(shim.shimPid, 5_000);
      } finally {
        if (fs.existsSync(this.ctx.store.dir(this.id))) {
          const alive = this.ctx.store.liveShim(this.id);
          this.ctx.store.writeState(
            this.id,
            alive ? state : { status: 'stopped', startedAt: state.startedAt, stoppedAt: new Date().toISOString() },
          );
        }
      }
    }
    this.release();
    if (this.record.options.autoRemove) {
      this.removedByStop = { status: shim ? 'stopped' : state.status, startedAt: state.startedAt, exitCode: this.lastExit()?.exitCode };
      this.ctx.store.remove(this.id);
      collectBases(this.ctx);
    }
  }

  /** Drops this handle's link to the VM and its place among the runtime's running boxes. */
  private release(): void {
    this.client?.close();
    this.client = undefined;
    this.watchdog?.destroy();
    this.watchdog = undefined;
    this.ctx.onBoxStopped(this);
  }

  /** @internal Force the VM down now (used by remove(force) and shutdown). */
  async kill(): Promise<void> {
    this.invalidated = true;
    const { shim } = this.ctx.store.status(this.id);
    if (shim) {
      // Only processes proven to be this box's (pid + start time): a stale pid may be anyone's.
      killProcess(shim.shimPid, shim.shimStartTime);
      if (shim.qemuPid) killProcess(shim.qemuPid, shim.qemuStartTime);
      await waitForExit(shim.shimPid, 5_000);
    }
    this.release();
  }

  /**
   * Counters kept by this handle plus live figures of the VM process (host view):
   * cpuPercent over a 200 ms sample (100 = one host core busy), memoryBytes = resident set.
   */
  async metrics(): Promise<BoxMetrics> {
    this.assertUsable();
    const client = await this.connect();
    const out: BoxMetrics = { ...this.metricsState };
    if (this.record.options.network === 'enabled') {
      // Undefined (as before) when the box runs on slirp, which counts nothing.
      const net = await client.request('network').catch(() => undefined);
      if (net) {
        out.networkBytesSent = net.counters.bytesSent;
        out.networkBytesReceived = net.counters.bytesReceived;
        out.networkTcpConnections = net.counters.tcpConnections;
        out.networkTcpErrors = net.counters.tcpErrors;
      }
    }
    const shim = this.ctx.store.liveShim(this.id);
    if (shim?.qemuPid) {
      const before = cpuTicks(shim.qemuPid);
      const t0 = performance.now();
      await new Promise((r) => setTimeout(r, 200));
      const after = cpuTicks(shim.qemuPid);
      if (before !== undefined && after !== undefined) {
        out.cpuPercent = Math.round(((after - before) / CLOCK_TICKS / ((performance.now() - t0) / 1000)) * 1000) / 10;
      }
      out.memoryBytes = residentBytes(shim.qemuPid);
    }
    return out;
  }

  /** Round trip of one PING between the shim and the guest agent (the raw link baseline). */
  async pingAgent(): Promise<number> {
    this.assertUsable();
    const client = await this.connect();
    const reply = await client.request('ping');
    return reply.rttMs as number;
  }

  async [Symbol.asyncDispose](): Promise<void> {
    await this.stop();
  }
}

/** The last n lines of a log (a final line without '\n' counts as one). */
export function lastLines(buf: Buffer, n: number): Buffer {
  if (n === 0) return Buffer.alloc(0);
  let end = buf.length;
  if (end > 0 && buf[end - 1] === 0x0a) end--;
  let start = end;
  for (let seen = 0; start > 0; start--) {
    if (buf[start - 1] === 0x0a && ++seen === n) break;
  }
  return buf.subarray(start);
}

/** USER_HZ: 100 on every Linux architecture BoxLite runs on. */
const CLOCK_TICKS = 100;

function cpuTicks(pid: number): number | undefined {
  try {
    const stat = fs.readFileSync(`/proc/${pid}/stat`, 'utf8');
    const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
    return Number(fields[11]) + Number(fields[12]); // utime + stime
  } catch {
    return undefined;
  }
}

function residentBytes(pid: number): number | undefined {
  try {
    const m = /^VmRSS:\s+(\d+) kB/m.exec(fs.readFileSync(`/proc/${pid}/status`, 'utf8'));
    return m ? Number(m[1]) * 1024 : undefined;
  } catch {
    return undefined;
  }
}

/** Resolves true once the process is gone, false on timeout. */
async function waitForExit(pid: number, timeoutMs: number): Promise<boolean> {
  const deadline = Date.now() + timeoutMs;
  while (Date.now() < deadline) {
    if (!isProcessAlive(pid)) return true;
    await new Promise((r) => setTimeout(r, 25));
  }
  return false;
}

function killProcess(pid: number, startTime?: string): void {
  if (!isProcessAlive(pid, startTime)) return;
  try {
    process.kill(pid, 'SIGKILL');
  } catch {
    // gone meanwhile
  }
}
