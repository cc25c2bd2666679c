import { spawn } from 'node:child_process';
import fs from 'node:fs';
import net from 'node:net';
import { fileURLToPath } from 'node:url';
import { ConfigError, EngineError, PortalError, errorFromWire, type BoxliteError } from '../errors/index.js';
import { encode, MAX_PAYLOAD, PROTOCOL_MAJOR, PROTOCOL_MINOR, STDIN_WINDOW, type Message } from '../protocol/codec.js';
import { Link } from '../protocol/link.js';
import { boxPaths, type ShimConfig, type ShimReadyLine, type ShimState } from './config.js';

const SHIM_ENTRY = fileURLToPath(new URL('./boxlite-shim.js', import.meta.url));

export interface LaunchedShim {
  state: ShimState;
  /** Our end of the watchdog pipe (non-detached boxes): the box lives while this is open. */
  watchdog?: net.Socket;
}

/** Starts a shim for a box and waits until its VM is ready (or failed to boot). */
export async function launchShim(config: ShimConfig): Promise<LaunchedShim> {
  const paths = boxPaths(config.boxDir);
  fs.mkdirSync(paths.logsDir, { recursive: true });
  const logFd = fs.openSync(paths.shimLog, 'a');
  const child = spawn(process.execPath, [SHIM_ENTRY], {
    stdio: ['pipe', 'pipe', logFd, config.detach ? 'ignore' : 'pipe'],
    detached: config.detach,
  });
  fs.closeSync(logFd);
  child.stdin!.end(JSON.stringify(config));

  const line = await new Promise<string>((resolve, reject) => {
    let buf = '';
    child.stdout!.on('data', (c: Buffer) => {
      buf += c.toString('utf8');
      const nl = buf.indexOf('\n');
      if (nl >= 0) resolve(buf.slice(0, nl));
    });
    child.once('error', (err) => reject(new EngineError(`cannot start the box shim: ${err.message}`)));
    child.once('exit', (code, signal) =>
      reject(new EngineError(`box shim exited during start (code ${code}, signal ${signal}); see ${paths.shimLog}`)),
    );
  });
  child.stdout!.destroy();
  const ready = JSON.parse(line) as ShimReadyLine;
  if (!ready.ready) throw errorFromWire(ready.error);

  child.unref();
  const watchdog = config.detach ? undefined : (child.stdio[3] as net.Socket);
  watchdog?.unref();
  return { state: ready.state, watchdog };
}

export interface ExecHandlers {
  onMessage(m: Message): void;
  /** The link to the shim closed before EXIT. */
  onLost(err: BoxliteError): void;
}

/** One execution's view of the control link. */
export class ExecChannel {
  private stdinCredit = STDIN_WINDOW;
  private creditWaiters: Array<() => void> = [];
  finished = false;
  started = false;

  constructor(
    private readonly client: ShimClient,
    readonly stream: number,
  ) {}

  /** Sends stdin respecting the agent's credit window; resolves when handed to the socket. */
  async writeStdin(data: Buffer): Promise<void> {
    let off = 0;
    while (off < data.length) {
      while (this.stdinCredit <= 0) {
        if (this.finished) return;
        await new Promise<void>((r) => this.creditWaiters.push(r));
      }
      if (this.finished) return;
      const n = Math.min(this.stdinCredit, 64 * 1024, data.length - off);
      this.stdinCredit -= n;
      await this.client.send({ type: 'STDIN', stream: this.stream, data: data.subarray(off, off + n) });
      off += n;
    }
  }

  closeStdin(): Promise<void> {
    return this.client.send({ type: 'STDIN', stream: this.stream, data: Buffer.alloc(0) });
  }

  signal(signo: number): Promise<void> {
    if (!Number.isInteger(signo) || signo < 1 || signo > 64) {
      return Promise.reject(new ConfigError(`signal must be an integer between 1 and 64, got ${signo}`));
    }
    return this.client.send({ type: 'SIGNAL', stream: this.stream, signo });
  }

  resize(rows: number, cols: number): Promise<void> {
    for (const [name, v] of [['rows', rows], ['cols', cols]] as const) {
      if (!Number.isInteger(v) || v < 1 || v > 65535) {
        return Promise.reject(new ConfigError(`${name} must be an integer between 1 and 65535, got ${v}`));
      }
    }
    return this.client.send({ type: 'RESIZE', stream: this.stream, rows, cols });
  }

  grant(fd: 1 | 2, bytes: number): void {
    if (!this.finished && bytes > 0) void this.client.send({ type: 'WINDOW', stream: this.stream, fd, bytes });
  }

  /** Called by the client for WINDOW fd=0 and at the end. */
  addStdinCredit(bytes: number): void {
    this.stdinCredit += bytes;
    const waiters = this.creditWaiters;
    this.creditWaiters = [];
    for (const w of waiters) w();
  }
}

/**
 * A client connection to a box's shim. Keeps the Node event loop alive only
 * while something is in flight, so an idle box never holds a program open.
 */
export class ShimClient {
  private nextStream = 1;
  private readonly execs = new Map<number, { channel: ExecChannel; handlers: ExecHandlers }>();
  private readonly replies = new Map<number, (body: Record<string, unknown>) => void>();
  private hello?: Extract<Message, { type: 'HELLO' }>;
  private inFlight = 0;

  private constructor(
    private readonly link: Link,
    readonly socketPath: string,
  ) {
    link.socket.unref();
    link.onMessage((m) => this.dispatch(m));
    link.onClose((err) => {
      const lost = new PortalError(`lost the connection to the box${err ? `: ${err.message}` : ''} (the box stopped)`);
      for (const { channel, handlers } of this.execs.values()) {
        channel.finished = true;
        channel.addStdinCredit(0);
        handlers.onLost(lost);
      }
      this.execs.clear();
      for (const resolve of this.replies.values()) resolve({ ok: false, code: 'Engine', message: lost.message, closed: true });
      this.replies.clear();
    });
  }

  static async connect(socketPath: string, timeoutMs = 10_000): Promise<ShimClient> {
    const socket = await new Promise<net.Socket>((resolve, reject) => {
      const s = net.createConnection(socketPath);
      s.once('connect', () => resolve(s));
      s.once('error', (err) => reject(new PortalError(`cannot reach the box at ${socketPath}: ${err.message}`)));
    });
    const client = new ShimClient(new Link(socket), socketPath);
    client.hold();
    try {
      client.hello = await new Promise<Extract<Message, { type: 'HELLO' }>>((resolve, reject) => {
        const timer = setTimeout(() => reject(new PortalError(`box did not answer HELLO within ${timeoutMs} ms`)), timeoutMs);
        client.helloWaiter = (m) => {
          clearTimeout(timer);
          resolve(m);
        };
        client.link.onClose(() => {
          clearTimeout(timer);
          reject(new PortalError('box closed the connection during HELLO'));
        });
        void client.send({ type: 'HELLO', stream: 0, major: PROTOCOL_MAJOR, minor: PROTOCOL_MINOR, features: 0xf, version: '0.1.0' });
      });
    } finally {
      client.release();
    }
    return client;
  }

  private helloWaiter?: (m: Extract<Message, { type: 'HELLO' }>) => void;

  get agentFeatures(): number {
    return this.hello?.features ?? 0;
  }

  get isClosed(): boolean {
    return this.link.isClosed;
  }

  private hold(): void {
    if (this.inFlight++ === 0) this.link.socket.ref();
  }

  private release(): void {
    if (--this.inFlight === 0) this.link.socket.unref();
  }

  send(m: Message): Promise<void> {
    if (this.link.isClosed) return Promise.resolve();
    if (this.link.send(m)) return Promise.resolve();
    return new Promise((resolve) => {
      const done = () => {
        this.link.socket.off('drain', done);
        this.link.socket.off('close', done);
        resolve();
      };
      this.link.socket.once('drain', done);
      this.link.socket.once('close', done);
    });
  }

  /** A CONTROL request answered by the shim itself (info, stop, ping). */
  async request(op: string): Promise<Record<string, unknown>> {
    const stream = this.nextStream++;
    this.hold();
    try {
      const body = await new Promise<Record<string, unknown>>((resolve) => {
        this.replies.set(stream, resolve);
        void this.send({ type: 'CONTROL', stream, data: Buffer.from(JSON.stringify({ op })) });
      });
      if (body.ok === false && !(op === 'stop' && body.closed)) throw errorFromWire(body);
      return body;
    } finally {
      this.release();
    }
  }

  /** Throws ConfigError (and registers nothing) when the request does not fit one frame. */
  openExec(exec: Omit<Extract<Message, { type: 'EXEC' }>, 'stream' | 'type'>, handlers: ExecHandlers): ExecChannel {
    const stream = this.nextStream;
    let size: number;
    try {
      size = encode({ type: 'EXEC', stream, ...exec }).length;
    } catch {
      size = Infinity;
    }
    if (size > MAX_PAYLOAD) {
      throw new ConfigError(`command, arguments and environment must fit in ${MAX_PAYLOAD / 1024} KiB; pass large input on stdin`);
    }
    this.nextStream++;
    const channel = new ExecChannel(this, stream);
    this.execs.set(stream, { channel, handlers });
    this.hold();
    void this.send({ type: 'EXEC', stream, ...exec });
    return channel;
  }

  private dispatch(m: Message): void {
    if (m.type === 'HELLO') {
      this.helloWaiter?.(m);
      return;
    }
    if (m.type === 'REPLY') {
      const resolve = this.replies.get(m.stream);
      this.replies.delete(m.stream);
      resolve?.(JSON.parse(m.data.toString('utf8')) as Record<string, unknown>);
      return;
    }
    const entry = this.execs.get(m.stream);
    if (!entry) return;
    if (m.type === 'WINDOW' && m.fd === 0) {
      entry.channel.addStdinCredit(m.bytes);
      return;
    }
    // ERROR ends an execution only before it started (the EXEC was refused); after
    // STARTED it reports a refused request (e.g. a bad signal) and the process runs on.
    if (m.type === 'EXIT' || (m.type === 'ERROR' && !entry.channel.started)) {
      this.execs.delete(m.stream);
      entry.channel.finished = true;
      entry.channel.addStdinCredit(0);
      this.release();
    }
    if (m.type === 'STARTED') entry.channel.started = true;
    entry.handlers.onMessage(m);
  }

  close(): void {
    this.link.close();
  }
}
