// FakeRuntime: the SDK runtime surface the REST server uses (src/rest/server/app.ts RestRuntime /
// RestBox), with no VM. Box options go through the SDK's own normalizeBoxOptions (so validation,
// Config and Unsupported errors are the real ones); executions are the SDK's real Execution class
// over a fake channel, so streams, back-pressure (output credit), wait() and signal/resize
// semantics are the SDK's. A box's guest filesystem is a host temp directory (`box.root`), with the
// SDK's placement rules (placeCopy). VM tests later swap in a real JsBoxlite.
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterAll } from 'vitest';
import {
  AlreadyExistsError,
  ConfigError,
  ExecutionError,
  ImageError,
  InvalidStateError,
  NotFoundError,
  StoppedError,
} from '../../src/errors/index.js';
import type { BoxInfo, BoxMetrics, BoxOptions, CopyOptions, ExecResult, ImageInfo, RuntimeMetrics } from '../../src/index.js';
import { Execution } from '../../src/runtime/execution.js';
import { normalizeBoxOptions, type NormalizedBoxOptions } from '../../src/runtime/options.js';
import { placeCopy, type PathKind } from '../../src/runtime/copy.js';
import { ExitReason, OUTPUT_WINDOW } from '../../src/protocol/codec.js';
import type { RestBox, RestRuntime } from '../../src/rest/server/app.js';
import type { BoxStatus } from '../../src/store/boxes.js';

/** One exec the fake saw. */
export interface ExecCall {
  box: string;
  command: string;
  args: string[];
  env: Array<[string, string]>;
  tty: boolean;
  user: string | null;
  timeoutSecs: number | null;
  workingDir: string | null;
}

/**
 * The fake process behind one Execution: the test (or the default script) drives it. Output
 * respects the SDK's credit window like the real guest: `write` waits until the server consumed
 * enough (so a server that stops reading applies back-pressure instead of dropping).
 */
export class FakeProcess {
  readonly stdin: Buffer[] = [];
  stdinClosed = false;
  readonly signals: number[] = [];
  readonly resizes: Array<{ rows: number; cols: number }> = [];
  readonly credit = { 1: OUTPUT_WINDOW, 2: OUTPUT_WINDOW };
  exited = false;
  private creditWaiters: Array<() => void> = [];
  private stdinWaiters: Array<() => void> = [];
  /** Set by the FakeRuntime: the Execution this process feeds. */
  execution!: Execution;

  constructor(readonly call: ExecCall) {}

  /** Emits `data` on fd 1 or 2, waiting for output credit as the guest does. */
  async write(fd: 1 | 2, data: string | Buffer): Promise<void> {
    let buf = typeof data === 'string' ? Buffer.from(data, 'utf8') : data;
    while (buf.length && !this.exited) {
      while (this.credit[fd] <= 0 && !this.exited) await new Promise<void>((r) => this.creditWaiters.push(r));
      if (this.exited) return;
      const n = Math.min(this.credit[fd], 64 * 1024, buf.length);
      this.credit[fd] -= n;
      this.execution.handle({ type: fd === 1 ? 'STDOUT' : 'STDERR', stream: 1, data: buf.subarray(0, n) });
      buf = buf.subarray(n);
    }
  }

  /** The process exits with `code` (reason: exited). */
  exit(code: number, message = ''): void {
    this.finish({ code, signal: 0, reason: ExitReason.EXITED, message });
  }

  /** The process dies of signal `signo` (exit code -signo, as the SDK reports it). */
  die(signo: number): void {
    this.finish({ code: 0, signal: signo, reason: ExitReason.SIGNALED, message: '' });
  }

  /** The execution's timeout fired (SIGKILL). */
  timeOut(): void {
    this.finish({ code: 0, signal: 9, reason: ExitReason.TIMED_OUT, message: 'timed out' });
  }

  /** Resolves when stdin was closed by the client (or the process ended). */
  stdinEnd(): Promise<void> {
    if (this.stdinClosed || this.exited) return Promise.resolve();
    return new Promise((r) => this.stdinWaiters.push(r));
  }

  stdinText(): string {
    return Buffer.concat(this.stdin).toString('utf8');
  }

  private finish(e: { code: number; signal: number; reason: number; message: string }): void {
    if (this.exited) return;
    this.exited = true;
    this.wake();
    this.execution.handle({ type: 'EXIT', stream: 1, ...e });
  }

  private wake(): void {
    for (const w of this.creditWaiters.splice(0)) w();
    for (const w of this.stdinWaiters.splice(0)) w();
  }

  /** The fake ExecChannel the SDK's Execution talks to. */
  channel() {
    return {
      writeStdin: async (data: Buffer) => {
        if (!this.exited) this.stdin.push(Buffer.from(data));
      },
      closeStdin: async () => {
        this.stdinClosed = true;
        this.wake();
      },
      signal: async (signo: number) => {
        if (!Number.isInteger(signo) || signo < 1 || signo > 64) {
          throw new ConfigError(`signal must be an integer between 1 and 64, got ${signo}`);
        }
        this.signals.push(signo);
        this.onSignal(signo);
      },
      resize: async (rows: number, cols: number) => {
        this.resizes.push({ rows, cols });
      },
      grant: (fd: 1 | 2, bytes: number) => {
        if (this.exited || bytes <= 0) return;
        this.credit[fd] += bytes;
        this.wake();
      },
    };
  }

  /** Default signal behaviour: USR1, USR2 and WINCH are survived; others kill the process. */
  onSignal = (signo: number): void => {
    if (signo === 10 || signo === 12 || signo === 28) return;
    this.die(signo);
  };
}

/** What a process does; the default understands a few commands (see defaultScript). */
export type ExecScript = (p: FakeProcess) => void | Promise<void>;

/**
 * echo ARGS… (stdout, exit 0); cat (stdin → stdout until stdin_eof, exit 0); sleep (until a
 * signal); fail N (stderr "failed", exit N); sh -c "exit N"; utf8 (a multi-byte text in 1-byte
 * writes); big N (N bytes of 'x' on stdout); a missing command → ExecutionError 127 at spawn.
 */
export const defaultScript: ExecScript = async (p) => {
  const { command, args } = p.call;
  switch (command) {
    case 'echo':
      await p.write(1, args.join(' ') + '\n');
      return p.exit(0);
    case 'cat':
      for (;;) {
        const before = p.stdin.length;
        await Promise.race([p.stdinEnd(), new Promise((r) => setTimeout(r, 5))]);
        for (const chunk of p.stdin.splice(0, p.stdin.length)) await p.write(1, chunk);
        if (p.stdinClosed && before >= 0 && p.stdin.length === 0) break;
        if (p.exited) return;
      }
      return p.exit(0);
    case 'sleep':
      return;
    case 'fail':
      await p.write(2, 'failed\n');
      return p.exit(Number(args[0] ?? 1));
    case 'sh': {
      const m = /^exit (\d+)$/.exec(args[1] ?? '');
      return p.exit(m ? Number(m[1]) : 0);
    }
    case 'utf8':
      for (const b of Buffer.from('héllo wörld €\n', 'utf8')) await p.write(1, Buffer.from([b]));
      return p.exit(0);
    case 'big':
      await p.write(1, Buffer.alloc(Number(args[0] ?? 1024 * 1024), 'x'));
      return p.exit(0);
    default:
      throw new ExecutionError(`command not found: ${command}`, { exitCode: 127 });
  }
};

interface FakeRecord {
  id: string;
  name?: string;
  createdAt: string;
  startedAt?: string;
  status: BoxStatus;
  options: NormalizedBoxOptions;
  image: string;
  root: string;
  exitCode?: number;
  metrics: BoxMetrics;
}

let seq = 0;
const fakeId = () => `01FAKE${String(++seq).padStart(20, '0')}`;

/** A box handle with the SDK's semantics: spent by stop(); exec and copies boot the box. */
export class FakeBox {
  private spent = false;
  constructor(
    private readonly rt: FakeRuntime,
    private readonly rec: FakeRecord,
  ) {}

  get id(): string {
    return this.rec.id;
  }

  get name(): string | null {
    return this.rec.name ?? null;
  }

  /** The box's guest filesystem on the host (a temp directory). */
  get root(): string {
    return this.rec.root;
  }

  private usable(): void {
    if (this.spent) throw new StoppedError('Handle invalidated after stop(). Use runtime.get() to get a new handle.');
    if (!this.rt.records.has(this.rec.id)) throw new NotFoundError('box', this.rec.id);
  }

  private boot(): void {
    if (this.rec.status !== 'running') {
      this.rec.status = 'running';
      this.rec.startedAt = new Date().toISOString();
      this.rt.boots++;
    }
  }

  async info(): Promise<BoxInfo> {
    return this.rt.infoOf(this.rec);
  }

  async start(_options?: { detach?: boolean }): Promise<void> {
    this.usable();
    this.boot();
  }

  async stop(): Promise<void> {
    if (this.spent) return;
    if (this.rec.status === 'stopped' || this.rec.status === 'configured') return;
    this.spent = true;
    for (const p of this.rt.processes) if (p.call.box === this.rec.id && !p.exited) p.die(9);
    this.rec.status = 'stopped';
  }

  async metrics(): Promise<BoxMetrics> {
    this.usable();
    this.boot();
    return { ...this.rec.metrics, cpuPercent: 1.5, memoryBytes: 64 * 1024 * 1024 };
  }

  async exec(
    command: string,
    args?: string[] | null,
    env?: Array<[string, string]> | null,
    tty?: boolean | null,
    user?: string | null,
    timeoutSecs?: number | null,
    workingDir?: string | null,
  ): Promise<Execution> {
    this.usable();
    this.boot();
    const call: ExecCall = {
      box: this.rec.id,
      command,
      args: args ?? [],
      env: env ?? [],
      tty: !!tty,
      user: user ?? null,
      timeoutSecs: timeoutSecs ?? null,
      workingDir: workingDir ?? null,
    };
    this.rt.execs.push(call);
    const p = new FakeProcess(call);
    const script = this.rt.script;
    this.rec.metrics.commandsExecutedTotal++;
    // The spawn (a missing command fails it) happens before exec() resolves, as in the SDK.
    let running: void | Promise<void>;
    const ex = new Execution(`exec-${++seq}`, p.channel() as never, 1000 + seq, { onExit: () => {}, onStdin: () => {} }, !!tty);
    p.execution = ex;
    try {
      running = script(p);
    } catch (err) {
      this.rec.metrics.execErrorsTotal++;
      throw err;
    }
    if (running instanceof Promise) {
      // A script that throws at once (before its first await) is a spawn failure.
      const early = await Promise.race([running.then(() => 'done' as const, (e: unknown) => e), new Promise<'pending'>((r) => setImmediate(() => r('pending')))]);
      if (early !== 'pending' && early !== 'done') {
        this.rec.metrics.execErrorsTotal++;
        throw early;
      }
    }
    this.rt.processes.push(p);
    if (timeoutSecs) setTimeout(() => p.timeOut(), timeoutSecs * 1000).unref();
    return ex;
  }

  async attach(options?: { tty?: boolean }): Promise<Execution> {
    this.usable();
    // (S2) A runtime given a main command runs it as the box's main process (through the exec script).
    if (this.rt.mainCommand) return this.exec(this.rt.mainCommand[0]!, this.rt.mainCommand.slice(1), null, !!options?.tty);
    throw new InvalidStateError(`box ${this.id} has no main process (FakeRuntime boxes have none)`);
  }

  async copyIn(hostPath: string, guestDest: string, options?: CopyOptions): Promise<void> {
    this.usable();
    this.boot();
    const st = options?.followSymlinks ? fs.statSync(hostPath) : fs.lstatSync(hostPath);
    const place = placeCopy({ name: path.basename(hostPath), isDir: st.isDirectory() }, guestDest, this.kind(guestDest), { includeParent: options?.includeParent ?? true }, 'copyIn');
    const dir = this.host(place.dir);
    fs.mkdirSync(dir, { recursive: true });
    const target = place.top ? path.join(dir, place.top) : dir;
    if (options?.overwrite === false && place.top && fs.existsSync(target) && !st.isDirectory()) {
      throw new AlreadyExistsError(`copyIn: ${path.posix.join(place.dir, place.top)} exists and overwrite is false`);
    }
    fs.cpSync(hostPath, target, { recursive: true, dereference: !!options?.followSymlinks, force: options?.overwrite !== false, errorOnExist: false });
  }

  async copyOut(guestSrc: string, hostDest: string, options?: CopyOptions): Promise<void> {
    this.usable();
    this.boot();
    const src = this.host(guestSrc);
    let st: fs.Stats;
    try {
      st = options?.followSymlinks ? fs.statSync(src) : fs.lstatSync(src);
    } catch {
      throw new NotFoundError('path', guestSrc);
    }
    let kind: PathKind = 'none';
    if (fs.existsSync(hostDest)) kind = fs.statSync(hostDest).isDirectory() ? 'dir' : 'other';
    const place = placeCopy({ name: path.posix.basename(guestSrc.replace(/\/+$/, '')) || 'root', isDir: st.isDirectory() }, hostDest, kind, { includeParent: options?.includeParent ?? true }, 'copyOut');
    fs.mkdirSync(place.dir, { recursive: true });
    fs.cpSync(src, place.top ? path.join(place.dir, place.top) : place.dir, { recursive: true, dereference: !!options?.followSymlinks, verbatimSymlinks: !options?.followSymlinks });
  }

  /** Host path of a guest path inside this box's root (never outside it). */
  host(guestPath: string): string {
    if (!guestPath.startsWith('/')) throw new ConfigError(`guest path must be absolute: ${guestPath}`);
    const rel = path.posix.normalize(guestPath).replace(/^\/+/, '');
    return path.join(this.rec.root, rel);
  }

  private kind(guestPath: string): PathKind {
    const p = this.host(guestPath.replace(/\/+$/, '') || '/');
    if (!fs.existsSync(p)) return 'none';
    return fs.statSync(p).isDirectory() ? 'dir' : 'other';
  }
}

export interface FakeRuntimeOptions {
  /** Images that "exist in the registry" (pull succeeds); anything else is an ImageError. */
  images?: string[];
  /** What every exec does (default: defaultScript). */
  script?: ExecScript;
}

/** A JsBoxlite stand-in for the REST server's unit tests. */
/** Every fake made by this test file: their temp directories go when the file's tests are done. */
const made = new Set<FakeRuntime>();
afterAll(() => {
  for (const rt of made) rt.dispose();
  made.clear();
});

export class FakeRuntime implements RestRuntime {
  readonly records = new Map<string, FakeRecord>();
  readonly execs: ExecCall[] = [];
  readonly processes: FakeProcess[] = [];
  /** Every create() call's options and name, as the server passed them. */
  readonly creates: Array<{ options: BoxOptions; name: string | null | undefined }> = [];
  boots = 0;
  script: ExecScript;
  /** (S2) When set, box.attach() runs this as the main process; otherwise attach is InvalidState. */
  mainCommand?: string[];
  private readonly known: Set<string>;
  private readonly pulled = new Map<string, ImageInfo>();
  private readonly counters: RuntimeMetrics = { boxesCreatedTotal: 0, boxesFailedTotal: 0, numRunningBoxes: 0, totalCommandsExecuted: 0, totalExecErrors: 0 };
  private readonly tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'boxlite-fake-rt-'));

  constructor(options: FakeRuntimeOptions = {}) {
    this.known = new Set(options.images ?? ['alpine:latest', 'alpine', 'busybox:latest', 'busybox', 'python:3.12-slim']);
    this.script = options.script ?? defaultScript;
    made.add(this);
  }

  readonly images = {
    pull: async (reference: string) => {
      const info = this.resolve(reference);
      return { reference, configDigest: info.id, layerCount: 1, resolvedReference: info.reference };
    },
    list: async (): Promise<ImageInfo[]> => [...this.pulled.values()],
  };

  private resolve(reference: string): ImageInfo {
    if (!this.known.has(reference)) throw new ImageError(`failed to pull ${reference}: manifest unknown`);
    const [repo, tag = 'latest'] = reference.split(':') as [string, string?];
    const full = `docker.io/library/${repo}:${tag}`;
    let info = this.pulled.get(full);
    if (!info) {
      const id = `sha256:${Buffer.from(full).toString('hex').padEnd(64, '0').slice(0, 64)}`;
      info = { reference: full, repository: `docker.io/library/${repo}`, tag, id, cachedAt: new Date().toISOString(), sizeBytes: 4096 };
      this.pulled.set(full, info);
    }
    return info;
  }

  async create(options: BoxOptions, name?: string | null): Promise<FakeBox> {
    this.creates.push({ options, name });
    const normalized = normalizeBoxOptions(options);
    const image = normalized.rootfsPath ? `oci:${path.resolve(normalized.rootfsPath)}` : this.resolve(normalized.image ?? 'alpine:latest').reference;
    if (name && [...this.records.values()].some((r) => r.name === name)) {
      throw new AlreadyExistsError(`a box named ${JSON.stringify(name)} already exists`);
    }
    const id = fakeId();
    const root = path.join(this.tmp, id);
    fs.mkdirSync(root, { recursive: true });
    const rec: FakeRecord = {
      id,
      name: name ?? undefined,
      createdAt: new Date().toISOString(),
      status: 'configured',
      options: normalized,
      image,
      root,
      metrics: { commandsExecutedTotal: 0, execErrorsTotal: 0, bytesSentTotal: 0, bytesReceivedTotal: 0, stageImagePrepareMs: 3, stageFilesystemSetupMs: 2 },
    };
    this.records.set(id, rec);
    this.counters.boxesCreatedTotal++;
    return new FakeBox(this, rec);
  }

  private find(idOrName: string): FakeRecord | undefined {
    return this.records.get(idOrName) ?? [...this.records.values()].find((r) => r.name === idOrName);
  }

  async get(idOrName: string): Promise<FakeBox | null> {
    const rec = this.find(idOrName);
    return rec ? new FakeBox(this, rec) : null;
  }

  infoOf(rec: FakeRecord): BoxInfo {
    return {
      id: rec.id,
      name: rec.name,
      state: { status: rec.status, running: rec.status === 'running', ...(rec.status === 'running' ? { pid: 4242 } : {}), ...(rec.exitCode !== undefined ? { exitCode: rec.exitCode } : {}) },
      createdAt: rec.createdAt,
      startedAt: rec.startedAt,
      image: rec.image,
      cpus: rec.options.cpus,
      memoryMib: rec.options.memoryMib,
      network: null,
      autoStop: 0,
      autoDelete: rec.options.autoDelete ?? 0,
      autoResume: rec.options.autoResume ?? false,
      healthStatus: { state: 'None', failures: 0 },
    };
  }

  async getInfo(idOrName: string): Promise<BoxInfo | null> {
    const rec = this.find(idOrName);
    return rec ? this.infoOf(rec) : null;
  }

  async listInfo(): Promise<BoxInfo[]> {
    return [...this.records.values()].map((r) => this.infoOf(r));
  }

  async remove(idOrName: string, force?: boolean | null): Promise<void> {
    const rec = this.find(idOrName);
    if (!rec) throw new NotFoundError('box', idOrName);
    if (rec.status === 'running') {
      if (!force) throw new InvalidStateError(`box ${rec.id} is running; stop it first or remove it with force`);
      for (const p of this.processes) if (p.call.box === rec.id && !p.exited) p.die(9);
    }
    this.records.delete(rec.id);
    fs.rmSync(rec.root, { recursive: true, force: true });
  }

  async metrics(): Promise<RuntimeMetrics> {
    let cmds = 0;
    let errs = 0;
    for (const r of this.records.values()) {
      cmds += r.metrics.commandsExecutedTotal;
      errs += r.metrics.execErrorsTotal;
    }
    return { ...this.counters, numRunningBoxes: [...this.records.values()].filter((r) => r.status === 'running').length, totalCommandsExecuted: cmds, totalExecErrors: errs };
  }

  /** Test helper: the box's main process "exited" with `code` and the box stopped by itself. */
  exitMain(idOrName: string, code: number): void {
    const rec = this.find(idOrName);
    if (!rec) throw new Error(`no fake box ${idOrName}`);
    rec.exitCode = code;
    rec.status = 'stopped';
  }

  /** Removes the temp directories. */
  dispose(): void {
    fs.rmSync(this.tmp, { recursive: true, force: true });
  }
}

/** Compile-time check: the fakes expose what the server uses of the SDK. */
export const asRestBox = (b: FakeBox): RestBox => b;
export type { ExecResult };
