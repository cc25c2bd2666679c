import { spawn, type ChildProcess } from 'node:child_process';
import fs from 'node:fs';
import net from 'node:net';
import { fileURLToPath } from 'node:url';
import {
  ConfigError,
  EngineError,
  PortalError,
  TimeoutError,
  UnsupportedError,
  errorFromWire,
  type BoxliteError,
} from '../errors/index.js';
import { encode, MAX_PAYLOAD, OUTPUT_WINDOW, PROTOCOL_MAJOR, PROTOCOL_MINOR, STDIN_WINDOW, type Message } from '../protocol/codec.js';
import { execFeatures, HOST_FEATURES, HOST_VERSION, missingFeatures } from '../protocol/features.js';
import { Link, LinkProtocolError } from '../protocol/link.js';
import { readTail } from '../util/fs.js';
import {
  CONTROL_TIMEOUT_MS,
  parseControlReply,
  type ControlOp,
  type ControlReplies,
  type ControlReply,
  type ControlRequest,
} from './control.js';
import { boxPaths, type ShimConfig, type ShimReadyLine, type ShimState } from './config.js';
import type { Hello } from './handshake.js';

const SHIM_ENTRY = fileURLToPath(new URL('./boxlite-shim.js', import.meta.url));

export interface LaunchedShim {
  state: ShimState;
  /** Our end of the watchdog pipe (non-detached boxes): the box lives while this is open. */
  watchdog?: net.Socket;
}

/**
 * Starts a shim for a box and waits until its VM is ready (or failed to boot). `spare`: a shim
 * process already started (fast start, src/runtime/faststart.ts) that waits for its config.
 */
export async function launchShim(config: ShimConfig, spare?: ChildProcess): Promise<LaunchedShim> {
  const paths = boxPaths(config.boxDir);
  fs.mkdirSync(paths.logsDir, { recursive: true });
  const logFd = fs.openSync(paths.shimLog, 'a');
  const child =
    spare ??
    spawn(process.execPath, [SHIM_ENTRY], {
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
    // On a loaded host 'exit' can be handled before the last stdout bytes are read: a shim
    // that announced why it failed must not be reported as one that died silently. So the
    // verdict waits for stdout to end (the shim's exit closes it), bounded in case it does not.
    const exited = new Promise<string>((r) => child.once('exit', (code, signal) => r(signal ? `signal ${signal}` : `code ${code}`)));
    const silent = async () => {
      if (buf.includes('\n')) return;
      const how = await Promise.race([exited, new Promise<string>((r) => setTimeout(() => r('stdout closed'), 2_000).unref())]);
      // Node writes a crash (a module that fails to load, an uncaught error) to fd 2, which is shim.log.
      const said = readTail(paths.shimLog, 15);
      reject(new EngineError(`box shim exited during start (${how}): ${said ? `last lines of ${paths.shimLog}:\n${said}` : `${paths.shimLog} is empty`}`));
    };
    child.stdout!.once('close', () => void silent());
  });
  child.stdout!.destroy();
  let ready: ShimReadyLine;
  try {
    ready = JSON.parse(line) as ShimReadyLine;
  } catch (err) {
    throw new EngineError(`box shim answered ${JSON.stringify(line.slice(0, 200))} instead of its readiness line; see ${paths.shimLog}`, { cause: err });
  }
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
  /** Output bytes the shim may still deliver on fd 1 and fd 2 (docs/protocol.md §5). */
  private readonly outputCredit = { 1: OUTPUT_WINDOW, 2: OUTPUT_WINDOW };
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
    if (this.finished || bytes <= 0) return;
    this.outputCredit[fd] += bytes;
    void this.client.send({ type: 'WINDOW', stream: this.stream, fd, bytes });
  }

  /** Accounts for received output; false when it exceeds the credit granted. */
  takeOutput(fd: 1 | 2, bytes: number): boolean {
    if (bytes > this.outputCredit[fd]) return false;
    this.outputCredit[fd] -= bytes;
    return true;
  }

  /** Called by the client for WINDOW fd=0 and at the end. */
  addStdinCredit(bytes: number): void {
    this.stdinCredit += bytes;
    const waiters = this.creditWaiters;
    this.creditWaiters = [];
    for (const w of waiters) w();
  }
}

/** One open execution of this client. */
interface ExecEntry {
  channel: ExecChannel;
  handlers: ExecHandlers;
}

interface PendingReply {
  op: ControlOp;
  resolve(body: ControlReply): void;
  reject(err: BoxliteError): void;
}

/**
 * A client connection to a box's shim. Keeps the Node event loop alive only
 * while something is in flight, so an idle box never holds a program open.
 * Nothing the shim sends can throw into the socket handlers: a malformed frame or
 * reply, a message type a shim never sends, or output beyond the granted credit
 * ends this connection, and every pending call rejects with a Portal error.
 */
export class ShimClient {
  private nextStream = 1;
  private readonly execs = new Map<number, ExecEntry>();
  private readonly replies = new Map<number, PendingReply>();
  private hello?: Hello;
  private inFlight = 0;
  /** The shim's last word (a stream-0 ERROR) before it closed the link. */
  private linkError?: string;
  /** Why the link ended, once it has: every later call rejects with it at once. */
  private lost?: PortalError;

  private constructor(
    private readonly link: Link,
    readonly socketPath: string,
  ) {
    link.socket.unref();
    link.onMessage((m) => this.dispatch(m));
    link.onClose((err) => {
      const reason = (this.linkError ?? err?.message)?.replace(/^portal error: /, '');
      const lost = new PortalError(
        reason ? `lost the connection to the box: ${reason}` : 'lost the connection to the box (the box stopped)',
        { cause: err },
      );
      this.lost = lost;
      for (const { channel, handlers } of this.execs.values()) {
        channel.finished = true;
        channel.addStdinCredit(0);
        handlers.onLost(lost);
      }
      this.execs.clear();
      for (const pending of this.replies.values()) {
        // The shim closes every connection once it stopped: for `stop` that is the answer.
        if (pending.op === 'stop' && !err && !this.linkError) pending.resolve({ ok: true });
        else pending.reject(lost);
      }
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
      client.hello = await new Promise<Hello>((resolve, reject) => {
        const timer = setTimeout(() => {
          reject(new PortalError(`box did not answer HELLO within ${timeoutMs} ms`));
          client.close();
        }, timeoutMs);
        client.helloWaiter = (m) => {
          clearTimeout(timer);
          if (m.major !== PROTOCOL_MAJOR) {
            reject(new PortalError(`box speaks protocol ${m.major}.${m.minor}, this client needs ${PROTOCOL_MAJOR}.x`));
            client.close();
          } else resolve(m);
        };
        client.link.onClose((err) => {
          clearTimeout(timer);
          reject(new PortalError(`box closed the connection during HELLO${err ? `: ${err.message}` : ''}`, { cause: err }));
        });
        void client.send({ type: 'HELLO', stream: 0, major: PROTOCOL_MAJOR, minor: PROTOCOL_MINOR, features: HOST_FEATURES, version: HOST_VERSION });
      });
    } finally {
      client.release();
    }
    return client;
  }

  private helloWaiter?: (m: Hello) => void;

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

  /** Resolves at the next drain (or close); one listener pair however many senders wait. */
  private drained?: Promise<void>;

  send(m: Message): Promise<void> {
    if (this.link.isClosed) return Promise.resolve();
    if (this.link.send(m)) return Promise.resolve();
    this.drained ??= new Promise<void>((resolve) => {
      const done = () => {
        this.link.socket.off('drain', done);
        this.link.socket.off('close', done);
        this.drained = undefined;
        resolve();
      };
      this.link.socket.once('drain', done);
      this.link.socket.once('close', done);
    });
    return this.drained;
  }

  /** A CONTROL request answered by the shim itself, bounded by the op's timeout. */
  async request<K extends ControlOp>(
    op: K,
    timeoutMs: number = CONTROL_TIMEOUT_MS[op],
    args?: Omit<Extract<ControlRequest, { op: K }>, 'op'>,
  ): Promise<ControlReplies[K]> {
    this.assertOpen();
    const stream = this.nextStream++;
    this.hold();
    let timer: NodeJS.Timeout | undefined;
    try {
      const body = await new Promise<ControlReply>((resolve, reject) => {
        timer = setTimeout(() => {
          this.replies.delete(stream);
          reject(new TimeoutError(`box did not answer the ${op} request within ${timeoutMs} ms`));
        }, timeoutMs);
        this.replies.set(stream, { op, resolve, reject });
        const request = { ...args, op } as ControlRequest;
        void this.send({ type: 'CONTROL', stream, data: Buffer.from(JSON.stringify(request)) });
      });
      if (!body.ok) throw errorFromWire(body);
      return body as unknown as ControlReplies[K];
    } finally {
      clearTimeout(timer);
      this.release();
    }
  }

  /**
   * Attaches to the box's main process on a new stream: resolves with the shim's answer (its
   * pid, or how it already ended). From the answer on, `handlers` get its STDOUT, STDERR and
   * EXIT, and the channel sends it STDIN, SIGNAL and RESIZE. A held main process starts now.
   */
  attachMain(tty: boolean, handlers: ExecHandlers): { channel: ExecChannel; reply: Promise<ControlReplies['attach']> } {
    this.assertOpen();
    const stream = this.nextStream++;
    const channel = new ExecChannel(this, stream);
    channel.started = true;
    this.execs.set(stream, { channel, handlers });
    this.hold();
    const drop = () => {
      if (this.execs.delete(stream)) {
        channel.finished = true;
        this.release();
      }
    };
    const timeoutMs = CONTROL_TIMEOUT_MS.attach;
    let timer: NodeJS.Timeout | undefined;
    const reply = new Promise<ControlReply>((resolve, reject) => {
      timer = setTimeout(() => {
        this.replies.delete(stream);
        reject(new TimeoutError(`box did not answer the attach request within ${timeoutMs} ms`));
      }, timeoutMs);
      this.replies.set(stream, { op: 'attach', resolve, reject });
      const request: ControlRequest = tty ? { op: 'attach', tty } : { op: 'attach' };
      void this.send({ type: 'CONTROL', stream, data: Buffer.from(JSON.stringify(request)) });
    })
      .then((body) => {
        if (!body.ok) throw errorFromWire(body);
        const answer = body as unknown as ControlReplies['attach'];
        if ('exited' in answer) drop();
        return answer;
      })
      .catch((err: unknown) => {
        drop();
        throw err;
      })
      .finally(() => clearTimeout(timer));
    return { channel, reply };
  }

  /** Called once when the link to the shim ends (the box stopped, or the connection was lost). */
  onClose(cb: () => void): void {
    this.link.onClose(() => cb());
  }

  /** A closed link answers nothing: a call registered on it would wait forever. */
  private assertOpen(): void {
    if (this.link.isClosed) throw this.lost ?? new PortalError('lost the connection to the box (the box stopped)');
  }

  /**
   * Throws ConfigError (and registers nothing) when the request does not fit one frame,
   * UnsupportedError when the box's agent lacks a feature the request needs, PortalError
   * when the link to the box is already gone.
   */
  openExec(exec: Omit<Extract<Message, { type: 'EXEC' }>, 'stream' | 'type'>, handlers: ExecHandlers): ExecChannel {
    this.assertOpen();
    const missing = missingFeatures(execFeatures(exec), this.agentFeatures);
    if (missing.length) {
      throw new UnsupportedError(`the box's guest agent (${this.hello?.version ?? 'unknown version'}) lacks ${missing.join(', ')}`);
    }
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

  private protocolError(detail: string): void {
    this.link.close(new LinkProtocolError(`protocol violation by the box shim: ${detail}`));
  }

  private dispatch(m: Message): void {
    switch (m.type) {
      case 'HELLO':
        this.helloWaiter?.(m);
        return;
      case 'PING':
        void this.send({ type: 'PONG', stream: 0, data: m.data });
        return;
      case 'PONG':
        return;
      case 'ERROR':
        if (m.stream === 0) {
          this.linkError = m.message;
          return;
        }
        break;
      case 'REPLY': {
        const pending = this.replies.get(m.stream);
        if (!pending) return; // answered after its timeout
        this.replies.delete(m.stream);
        let body: ControlReply;
        try {
          body = parseControlReply(m.data);
        } catch (err) {
          pending.reject(err as BoxliteError);
          this.protocolError((err as Error).message);
          return;
        }
        pending.resolve(body);
        return;
      }
      case 'STARTED':
      case 'STDOUT':
      case 'STDERR':
      case 'EXIT':
      case 'WINDOW':
        break;
      default:
        this.protocolError(`it sent ${m.type}, which only a client may send`);
        return;
    }
    const entry = this.execs.get(m.stream);
    if (!entry) return;
    if (m.type === 'WINDOW') {
      if (m.fd === 0) entry.channel.addStdinCredit(m.bytes);
      return;
    }
    if ((m.type === 'STDOUT' || m.type === 'STDERR') && !entry.channel.takeOutput(m.type === 'STDOUT' ? 1 : 2, m.data.length)) {
      this.protocolError(`${m.type} on stream ${m.stream} overran the granted window`);
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
