import { InvalidStateError } from '../errors/index.js';
import type { Box, BoxInfo, BoxMetrics } from '../runtime/box.js';
import type { BoxOptions } from '../runtime/options.js';
import type { CopyOptions } from '../runtime/copy.js';
import { JsBoxlite } from '../runtime/runtime.js';

/** Result of SimpleBox.exec: the whole output, collected. */
export interface ExecResult {
  exitCode: number;
  stdout: string;
  stderr: string;
}

/** `SimpleBoxOptions` of @boxlite-ai/boxlite (the fields this runtime implements). */
export interface SimpleBoxOptions {
  image?: string;
  rootfsPath?: string;
  memoryMib?: number;
  cpus?: number;
  diskSizeGb?: number;
  runtime?: JsBoxlite;
  name?: string;
  /** Remove the box when it stops (default true). */
  autoRemove?: boolean;
  /** Reuse an existing box with the same name instead of failing. */
  reuseExisting?: boolean;
  /** The box outlives this process (default false). */
  detach?: boolean;
  workingDir?: string;
  env?: Record<string, string>;
  network?: BoxOptions['network'];
  ports?: BoxOptions['ports'];
  entrypoint?: string[];
  cmd?: string[];
  user?: string;
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

  constructor(options: SimpleBoxOptions = {}) {
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
      network: options.network,
      ports: options.ports,
      entrypoint: options.entrypoint,
      cmd: options.cmd,
      user: options.user,
    };
    this._name = options.name;
    this._reuseExisting = options.reuseExisting ?? false;
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
    if (!this._box) throw new InvalidStateError('box not yet created; call exec() first or use getId()');
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
    if (!this._box) throw new InvalidStateError('box not yet created; call exec() first or use getInfo()');
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
      const last = rest[rest.length - 1];
      if (last !== null && typeof last === 'object') {
        env = last as Record<string, string>;
        rest = rest.slice(0, -1);
      }
      args = rest.filter((a): a is string => typeof a === 'string');
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

  /** Stops the box (and removes it when autoRemove, the default). Nothing to do if it was never created. */
  /** Copies a host file or directory into the box (creates the box on first use). */
  async copyIn(hostPath: string, guestDest: string, options?: CopyOptions): Promise<void> {
    await (await this._ensureBox()).copyIn(hostPath, guestDest, options);
  }

  /** Copies a file or directory out of the box (creates the box on first use). */
  async copyOut(guestSrc: string, hostDest: string, options?: CopyOptions): Promise<void> {
    await (await this._ensureBox()).copyOut(guestSrc, hostDest, options);
  }

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
