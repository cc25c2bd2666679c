// A minimal QMP client (QEMU's JSON monitor on the plan's controlSocketPath): the greeting,
// `qmp_capabilities`, then one command at a time. Events are read and dropped. QEMU's QMP
// chardev serves one connection at a time, so the shim keeps a single client for everything
// it asks QEMU (pause/resume today; snapshots and templates may share it).
import net from 'node:net';
import { EngineError, TimeoutError } from '../errors/index.js';

interface Pending {
  resolve(value: unknown): void;
  reject(err: Error): void;
  timer: NodeJS.Timeout;
  command: string;
}

export class QmpClient {
  private buffer = '';
  private readonly queue: Pending[] = [];
  private chain: Promise<unknown> = Promise.resolve();
  private closedError?: Error;

  private constructor(private readonly socket: net.Socket) {
    socket.setEncoding('utf8');
    socket.on('data', (chunk: string) => this.onData(chunk));
    const gone = (err?: Error) => {
      this.closedError ??= new EngineError(`QMP connection closed${err ? `: ${err.message}` : ''}`);
      for (const p of this.queue.splice(0)) {
        clearTimeout(p.timer);
        p.reject(this.closedError);
      }
    };
    socket.on('error', gone);
    socket.on('close', () => gone());
  }

  /** Connects, reads the greeting and leaves capabilities negotiation mode. */
  static async connect(socketPath: string, timeoutMs = 5_000): Promise<QmpClient> {
    const socket = await new Promise<net.Socket>((resolve, reject) => {
      const s = net.createConnection(socketPath);
      const timer = setTimeout(() => {
        s.destroy();
        reject(new TimeoutError(`QMP socket ${socketPath} did not accept within ${timeoutMs} ms`));
      }, timeoutMs);
      s.once('connect', () => {
        clearTimeout(timer);
        resolve(s);
      });
      s.once('error', (err) => {
        clearTimeout(timer);
        reject(new EngineError(`cannot connect to QMP socket ${socketPath}: ${err.message}`, { cause: err }));
      });
    });
    const client = new QmpClient(socket);
    // The greeting arrives first, unasked; it is queued like a reply.
    await client.await('greeting', timeoutMs);
    await client.execute('qmp_capabilities', undefined, timeoutMs);
    return client;
  }

  get isClosed(): boolean {
    return this.closedError !== undefined;
  }

  /** Runs one command (serialized after the previous one) and resolves with its `return`. */
  execute(command: string, args?: Record<string, unknown>, timeoutMs = 10_000): Promise<unknown> {
    const run = this.chain.then(
      () => this.send(command, args, timeoutMs),
      () => this.send(command, args, timeoutMs),
    );
    this.chain = run.catch(() => undefined);
    return run;
  }

  close(): void {
    this.socket.destroy();
  }

  private send(command: string, args: Record<string, unknown> | undefined, timeoutMs: number): Promise<unknown> {
    if (this.closedError) return Promise.reject(this.closedError);
    const reply = this.await(command, timeoutMs);
    this.socket.write(JSON.stringify(args ? { execute: command, arguments: args } : { execute: command }) + '\n');
    return reply;
  }

  private await(command: string, timeoutMs: number): Promise<unknown> {
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => {
        const i = this.queue.findIndex((p) => p.timer === timer);
        if (i >= 0) this.queue.splice(i, 1);
        reject(new TimeoutError(`QEMU did not answer QMP ${command} within ${timeoutMs} ms`));
        // A reply that comes late would be taken for the next command's: this link is done.
        this.socket.destroy();
      }, timeoutMs);
      this.queue.push({ resolve, reject, timer, command });
    });
  }

  private onData(chunk: string): void {
    this.buffer += chunk;
    let nl: number;
    while ((nl = this.buffer.indexOf('\n')) >= 0) {
      const line = this.buffer.slice(0, nl).trim();
      this.buffer = this.buffer.slice(nl + 1);
      if (line) this.onMessage(line);
    }
    if (this.buffer.length > 1 << 20) this.socket.destroy(new Error('QMP message over 1 MiB'));
  }

  private onMessage(line: string): void {
    let msg: Record<string, unknown>;
    try {
      msg = JSON.parse(line) as Record<string, unknown>;
    } catch {
      this.socket.destroy(new Error(`malformed QMP message: ${line.slice(0, 200)}`));
      return;
    }
    if ('event' in msg) return;
    const pending = this.queue.shift();
    if (!pending) return;
    clearTimeout(pending.timer);
    if ('QMP' in msg) pending.resolve(msg.QMP);
    else if ('return' in msg) pending.resolve(msg.return);
    else if ('error' in msg) {
      const e = msg.error as { class?: string; desc?: string };
      pending.reject(new EngineError(`QMP ${pending.command} failed: ${e.desc ?? 'unknown error'}${e.class ? ` (${e.class})` : ''}`));
    } else pending.reject(new EngineError(`unexpected QMP reply to ${pending.command}: ${line.slice(0, 200)}`));
  }
}
