import { InvalidStateError } from '../errors/index.js';
import type { Box, BoxInfo, BoxMetrics } from '../runtime/box.js';
import { BoxTunnel, NetworkHandle, TunnelForwarder } from './network.js';
import type { AdvancedBoxOptions, BoxOptions, ManagedVolumeSpec, NetworkSpec, Secret, SecurityOptions, VolumeSpec } from '../runtime/options.js';
import type { CopyOptions } from '../runtime/copy.js';
import { JsBoxlite } from '../runtime/runtime.js';

export type { SocketAddress } from '../runtime/handles.js';
// The network classes live in ./network.ts (with the tunnel itself); exported here too, as the
// reference's simplebox module has them.
export { BoxTunnel, NetworkHandle, TunnelForwarder };

/** Result of SimpleBox.exec: the whole output, collected. */
export interface ExecResult {
  exitCode: number;
  stdout: string;
  stderr: string;
}

/** `SimpleBoxOptions` of @boxlite-ai/boxlite 0.10: every field is forwarded to the box options. */
export interface SimpleBoxOptions {
  /** Image reference; default `alpine:latest` when neither image nor rootfsPath is given. */
  image?: string;
  /** A local OCI layout directory (wins over image). */
  rootfsPath?: string;
  memoryMib?: number;
  cpus?: number;
  diskSizeGb?: number;
  /** The runtime to create the box in (default: JsBoxlite.withDefaultConfig()). */
  runtime?: JsBoxlite;
  name?: string;
  /** Remove the box when it stops (default true). */
  autoRemove?: boolean;
  /** Reuse an existing box with the same name instead of failing. */
  reuseExisting?: boolean;
  /** The box outlives this process (default false); needs autoRemove: false. */
  detach?: boolean;
  workingDir?: string;
  env?: Record<string, string>;
  /** Host directories (hostPath) or managed volumes (managedVolume: runtime.volumes). */
  volumes?: Array<VolumeSpec | ManagedVolumeSpec>;
  ports?: BoxOptions['ports'];
  network?: NetworkSpec;
  secrets?: Secret[];
  entrypoint?: string[];
  cmd?: string[];
  user?: string;
  advanced?: AdvancedBoxOptions;
  security?: SecurityOptions;
}

interface ExecCallOptions {
  cwd?: string;
  user?: string;
  timeoutSecs?: number;
}

/**
 * The easy way in: a box created on first use, commands that return their
 * whole output, and `await using` clean-up.
 */
export class SimpleBox {
  protected _runtime: JsBoxlite;
  protected _box: Box | null = null;
  protected _boxPromise: Promise<Box> | null = null;
  protected _name?: string;
  protected _boxOpts: BoxOptions;
  protected _reuseExisting: boolean;
  protected _created: boolean | null = null;
  readonly network: NetworkHandle;

  /**
   * Validates the options the way the reference does (same TypeError texts) and stores them;
   * the box itself is created on first use, where the runtime validates the rest.
   */
  constructor(options: SimpleBoxOptions = {}) {
    const security = normalizeSecurityOptions(options.security);
    if ((options as { allowNet?: unknown }).allowNet !== undefined) {
      throw new TypeError('SimpleBoxOptions.allowNet was removed. Use network: { outbound: { mode, allowNet } }.');
    }
    assertNetworkSpecShape(options.network);
    this._runtime = options.runtime ?? JsBoxlite.withDefaultConfig();
    this._boxOpts = {
      image: options.image,
      rootfsPath: options.rootfsPath,
      cpus: options.cpus,
      memoryMib: options.memoryMib,
      diskSizeGb: options.diskSizeGb,
      autoRemove: options.autoRemove ?? true,
      detach: options.detach ?? false,
      workingDir: options.workingDir,
      env: options.env ? Object.entries(options.env).map(([key, value]) => ({ key, value })) : undefined,
      volumes: options.volumes,
      network: options.network,
      ports: options.ports,
      entrypoint: options.entrypoint,
      cmd: options.cmd,
      user: options.user,
      advanced: options.advanced
        ? {
            capabilities: options.advanced.capabilities
              ? { add: [...(options.advanced.capabilities.add ?? [])], drop: [...(options.advanced.capabilities.drop ?? [])] }
              : undefined,
          }
        : undefined,
      security,
      secrets: options.secrets,
    };
    this._name = options.name;
    this._reuseExisting = options.reuseExisting ?? false;
    this.network = new NetworkHandle(() => this._ensureBox());
  }

  protected async _ensureBox(): Promise<Box> {
    if (this._box) return this._box;
    this._boxPromise ??= (async () => {
      if (this._reuseExisting) {
        const result = await this._runtime.getOrCreate(this._boxOpts, this._name);
        this._created = result.created;
        return result.box;
      }
      this._created = true;
      return this._runtime.create(this._boxOpts, this._name);
    })();
    try {
      this._box = await this._boxPromise;
    } catch (err) {
      this._boxPromise = null;
      throw err;
    }
    return this._box;
  }

  /** The box id (ULID). Throws before the box exists; use getId() to create it. */
  get id(): string {
    if (!this._box) throw new InvalidStateError('Box not yet created. Call exec() first or use getId() async method.');
    return this._box.id;
  }

  async getId(): Promise<string> {
    return (await this._ensureBox()).id;
  }

  get name(): string | undefined {
    return this._name;
  }

  /** true when newly created, false when an existing box was reused, null before creation. */
  get created(): boolean | null {
    return this._created;
  }

  async info(): Promise<BoxInfo> {
    if (!this._box) throw new InvalidStateError('Box not yet created. Call exec() first.');
    return this._box.info();
  }

  async getInfo(): Promise<BoxInfo> {
    return (await this._ensureBox()).info();
  }

  exec(cmd: string, ...args: string[]): Promise<ExecResult>;
  exec(cmd: string, args: string[], env: Record<string, string>): Promise<ExecResult>;
  exec(cmd: string, args: string[], env: Record<string, string> | undefined, options?: ExecCallOptions): Promise<ExecResult>;
  async exec(cmd: string, ...rest: unknown[]): Promise<ExecResult> {
    let args: string[];
    let env: Record<string, string> | undefined;
    let options: ExecCallOptions = {};
    if (Array.isArray(rest[0])) {
      args = rest[0] as string[];
      env = rest[1] as Record<string, string> | undefined;
      options = (rest[2] as ExecCallOptions | undefined) ?? {};
    } else {
      // As the reference: undefined arguments are dropped first, then a trailing plain object is the env.
      const given = rest.filter((a) => a !== undefined);
      const last = given[given.length - 1];
      if (last !== null && typeof last === 'object' && !Array.isArray(last)) {
        env = last as Record<string, string>;
        given.pop();
      }
      args = given.filter((a): a is string => typeof a === 'string');
    }
    const box = await this._ensureBox();
    const execution = await box.exec(
      cmd,
      args,
      env ? Object.entries(env) : undefined,
      false,
      options.user,
      options.timeoutSecs,
      options.cwd,
    );
    const [stdout, stderr] = await Promise.all([
      collect(await execution.stdout()),
      collect(await execution.stderr()),
    ]);
    const result = await execution.wait();
    return { exitCode: result.exitCode, stdout, stderr };
  }

  async metrics(): Promise<BoxMetrics> {
    return (await this._ensureBox()).metrics();
  }

  /** A one-shot tunnel to a port inside this box (same as `network.tunnel(port)`). */
  async tunnel(port: number): Promise<BoxTunnel> {
    return this.network.tunnel(port);
  }

  /** Copies a host file or directory into the box (creates the box on first use). */
  async copyIn(hostPath: string, guestDest: string, options?: CopyOptions): Promise<void> {
    await (await this._ensureBox()).copyIn(hostPath, guestDest, options);
  }

  /** Copies a file or directory out of the box (creates the box on first use). */
  async copyOut(guestSrc: string, hostDest: string, options?: CopyOptions): Promise<void> {
    await (await this._ensureBox()).copyOut(guestSrc, hostDest, options);
  }

  /** Stops the box (and removes it when autoRemove, the default). Nothing to do if it was never created. */
  async stop(): Promise<void> {
    if (!this._box) return;
    await this._box.stop();
  }

  async [Symbol.asyncDispose](): Promise<void> {
    await this.stop();
  }
}

async function collect(stream: { next(): Promise<string | null> }): Promise<string> {
  let out = '';
  for (;;) {
    const chunk = await stream.next();
    if (chunk === null) return out;
    out += chunk;
  }
}

function isRecord(value: unknown): value is Record<string, unknown> {
  return typeof value === 'object' && value !== null && !Array.isArray(value);
}

/** The reference's shape check of `network`, with its TypeError texts. */
function assertNetworkSpecShape(value: unknown): void {
  if (value === undefined || value === null) return;
  if (!isRecord(value)) {
    throw new TypeError('SimpleBoxOptions.network must be an object. Use network: { outbound, inbound }.');
  }
  const hasLegacyFields = 'mode' in value || 'allowNet' in value;
  if (hasLegacyFields && 'outbound' in value) {
    throw new TypeError(
      'SimpleBoxOptions.network cannot mix outbound with the deprecated mode/allowNet. Use network: { outbound: { mode, allowNet }, inbound }.',
    );
  }
  if (!hasLegacyFields && !('outbound' in value) && !('inbound' in value)) {
    throw new TypeError('SimpleBoxOptions.network must include outbound or inbound.');
  }
  if ('mode' in value && typeof value.mode !== 'string') {
    throw new TypeError('SimpleBoxOptions.network.mode must be "enabled" or "disabled".');
  }
  if ('allowNet' in value && !Array.isArray(value.allowNet)) {
    throw new TypeError('SimpleBoxOptions.network.allowNet must be an array.');
  }
  for (const direction of ['outbound', 'inbound'] as const) {
    if (!(direction in value)) continue;
    const policy = value[direction];
    if (!isRecord(policy)) throw new TypeError(`SimpleBoxOptions.network.${direction} must be an object.`);
    if (typeof policy.mode !== 'string') {
      throw new TypeError(`SimpleBoxOptions.network.${direction}.mode is required and must be "enabled" or "disabled".`);
    }
  }
}

/** The reference's u64 check of a security limit, with its TypeError texts. */
function normalizeU64Limit(value: number | undefined, field: string): number | undefined {
  if (value === undefined) return undefined;
  if (!Number.isFinite(value)) throw new TypeError(`Invalid security option \`${field}\`: number must be finite`);
  if (!Number.isInteger(value)) throw new TypeError(`Invalid security option \`${field}\`: number must be an integer`);
  if (value < 0) throw new TypeError(`Invalid security option \`${field}\`: number must be >= 0`);
  if (!Number.isSafeInteger(value)) throw new TypeError(`Invalid security option \`${field}\`: number exceeds Number.MAX_SAFE_INTEGER`);
  return value;
}

function normalizeSecurityOptions(security: SecurityOptions | undefined): SecurityOptions | undefined {
  if (!security) return undefined;
  const out: SecurityOptions = {
    jailerEnabled: security.jailerEnabled,
    seccompEnabled: security.seccompEnabled,
    maxOpenFiles: normalizeU64Limit(security.maxOpenFiles, 'security.maxOpenFiles'),
    maxFileSize: normalizeU64Limit(security.maxFileSize, 'security.maxFileSize'),
    maxProcesses: normalizeU64Limit(security.maxProcesses, 'security.maxProcesses'),
    maxMemory: normalizeU64Limit(security.maxMemory, 'security.maxMemory'),
    maxCpuTime: normalizeU64Limit(security.maxCpuTime, 'security.maxCpuTime'),
    networkEnabled: security.networkEnabled,
    closeFds: security.closeFds,
  };
  // Unset fields stay absent, so the runtime's strict schema sees only what the caller set.
  for (const k of Object.keys(out) as Array<keyof SecurityOptions>) if (out[k] === undefined) delete out[k];
  return out;
}
