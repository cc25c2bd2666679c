import fs from 'node:fs';
import { BoxliteError, ExecutionError, InvalidStateError, PortalError, toBoxliteError } from '../errors/index.js';
import type { Message } from '../protocol/codec.js';
import { launchShim, ShimClient, type LaunchedShim } from '../shim/client.js';
import { isProcessAlive } from '../util/fs.js';
import { boxPaths, type ShimConfig } from '../shim/config.js';
import type { BoxRecord, BoxStatus } from '../store/boxes.js';
import { Execution, type ExecResult } from './execution.js';
import { validateExec, type ExecOptions, type NormalizedBoxOptions } from './options.js';
import type { RuntimeContext } from './context.js';
import { cachedHostTscKhz } from '../vmm/accel.js';
import type { BoxImage } from './image.js';
import { defaultCommand, execEnvironment } from './image.js';
import { copyIn, copyOut, type CopyOptions } from './copy.js';

export type BoxRecordT = BoxRecord<NormalizedBoxOptions, BoxImage>;

export interface BoxStateInfo {
  status: BoxStatus;
  running: boolean;
  pid?: number;
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
  if (status !== 'running' && status !== 'stopping') return [];
  return live ? live.map((p) => ({ ...p })) : null;
}

export function boxInfo(
  record: BoxRecordT,
  status: BoxStatus,
  pid?: number,
  startedAt?: string,
  livePorts?: PublishedPort[],
): BoxInfo {
  const mode = record.options.network;
  return {
    id: record.id,
    name: record.name,
    state: { status, running: status === 'running', pid },
    createdAt: record.createdAt,
    startedAt,
    image: record.image.reference,
    cpus: record.options.cpus,
    memoryMib: record.options.memoryMib,
    network: {
      outbound: { mode, allowNet: [] },
      inbound: { mode: 'disabled', allowNet: [] },
      mode,
      allowNet: [],
      publishedPorts: publishedPortsOf(record, status, livePorts),
    },
    autoStop: 0,
    autoDelete: record.options.autoRemove ? 0 : -1,
    autoResume: false,
    healthStatus: { state: 'None', failures: 0 },
  };
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

  async info(): Promise<BoxInfo> {
    const { state, shim } = this.ctx.store.status(this.id);
    return boxInfo(this.record, state.status, shim?.qemuPid, state.startedAt, shim?.publishedPorts);
  }

  /**
   * Boots the VM if it is not running; attaches to it if another process started it.
   * `detach` overrides the box option for this boot (the CLI's `start` uses it).
   */
  async start(options?: { detach?: boolean }): Promise<void> {
    await this.connect(options?.detach);
  }

  /** The command `run` uses when given none: entrypoint + cmd with docker's override rules. */
  defaultCommand(): string[] {
    return defaultCommand(this.record.image.config, this.record.options);
  }

  private connect(detach?: boolean): Promise<ShimClient> {
    if (this.client && !this.client.isClosed) return Promise.resolve(this.client);
    this.starting ??= this.attachOrBoot(detach ?? this.record.options.detach).finally(() => {
      this.starting = undefined;
    });
    return this.starting;
  }

  private async attachOrBoot(detach: boolean): Promise<ShimClient> {
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
    const t0 = performance.now();
    const assets = await this.ctx.guestAssets();
    const accel = this.ctx.accelerator();
    const t1 = performance.now();
    const options = this.record.options;
    const config: ShimConfig = {
      boxId: this.id,
      boxDir: this.ctx.store.dir(this.id),
      qemu: {
        accel: accel.kind,
        cpus: options.cpus,
        memoryMib: options.memoryMib,
        kernelPath: assets.kernelPath,
        initrdPath: assets.initrdPath,
        rootDiskPath: paths.disk,
        volumes: options.volumes ?? [],
        agentSocketPath: paths.agentSocket,
        consoleLogPath: paths.consoleLog,
        network:
          options.network === 'enabled'
            ? {
                hostfwd: (options.ports ?? []).map((p) => ({
                  protocol: p.protocol,
                  hostAddress: p.hostIp,
                  hostPort: p.hostPort,
                  guestPort: p.guestPort,
                })),
              }
            : null,
        tscKhz: accel.kind === 'tcg' ? cachedHostTscKhz() : null,
      },
      accelReason: accel.reason,
      agentTimeoutMs: this.ctx.agentTimeoutMs(accel.kind),
      stopTimeoutMs: 10_000,
      detach,
    };
    const t2 = performance.now();
    let launched: LaunchedShim | undefined;
    try {
      try {
        launched = await launchShim(config);
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
      this.ctx.onBoxStarted(this);
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

  /** Copies a host file or directory into the box (docker cp semantics). */
  async copyIn(hostPath: string, guestDest: string, options?: CopyOptions): Promise<void> {
    await copyIn(this, hostPath, guestDest, options);
  }

  /** Copies a file or directory out of the box (docker cp semantics); never follows a symlink on the host. */
  async copyOut(guestSrc: string, hostDest: string, options?: CopyOptions): Promise<void> {
    await copyOut(this, guestSrc, hostDest, options);
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
    // A configured box boots on its first exec; one that was stopped stays stopped until start().
    if (!this.client || this.client.isClosed) {
      const { state } = this.ctx.store.status(this.id);
      if (state.status === 'stopped') {
        throw new InvalidStateError(`cannot execute on stopped box ${this.id}; call start() first`);
      }
    }
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
          env: execEnvironment(image.Env, options.env, env ?? []),
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
              });
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
  async stop(): Promise<void> {
    const { shim, state } = this.ctx.store.status(this.id);
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
    this.client?.close();
    this.client = undefined;
    this.watchdog?.destroy();
    this.watchdog = undefined;
    this.ctx.onBoxStopped(this);
    if (this.record.options.autoRemove) this.ctx.store.remove(this.id);
  }

  /** @internal Force the VM down now (used by remove(force) and shutdown). */
  async kill(): Promise<void> {
    const { shim } = this.ctx.store.status(this.id);
    if (shim) {
      // Only processes proven to be this box's (pid + start time): a stale pid may be anyone's.
      killProcess(shim.shimPid, shim.shimStartTime);
      if (shim.qemuPid) killProcess(shim.qemuPid, shim.qemuStartTime);
      await waitForExit(shim.shimPid, 5_000);
    }
    this.client?.close();
    this.client = undefined;
    this.watchdog?.destroy();
    this.watchdog = undefined;
    this.ctx.onBoxStopped(this);
  }

  /**
   * Counters kept by this handle plus live figures of the VM process (host view):
   * cpuPercent over a 200 ms sample (100 = one host core busy), memoryBytes = resident set.
   */
  async metrics(): Promise<BoxMetrics> {
    const out: BoxMetrics = { ...this.metricsState };
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
    const client = await this.connect();
    const reply = await client.request('ping');
    return reply.rttMs as number;
  }

  async [Symbol.asyncDispose](): Promise<void> {
    await this.stop();
  }
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
