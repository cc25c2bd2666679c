import { StringDecoder } from 'node:string_decoder';
import { ExitReason, type Message } from '../protocol/codec.js';
import { InvalidStateError, type BoxliteError } from '../errors/index.js';
import type { ExecChannel } from '../shim/client.js';

export interface ExecResult {
  /** Exit status; `-N` when the process was killed by signal N. */
  exitCode: number;
  /** Set when the process did not exit on its own (timeout, box lost). */
  errorMessage?: string;
}

/** Unread output the SDK buffers per stream before it stops granting the guest more credit. */
const BUFFER_HIGH_WATER = 4 * 1024 * 1024;

/**
 * One output stream (stdout or stderr) of an execution.
 * Credit goes back to the guest as the data is consumed, so a slow reader
 * slows the process down instead of filling memory.
 */
export class ExecOutput {
  private readonly chunks: Buffer[] = [];
  private buffered = 0;
  private owed = 0;
  private ended = false;
  private error?: BoxliteError;
  private waiters: Array<() => void> = [];
  private readonly decoder = new StringDecoder('utf8');
  /** Once wait() ran and nobody asked for this stream, output is dropped (not buffered forever). */
  discard = false;
  claimed = false;

  constructor(private readonly grant: (bytes: number) => void) {}

  /** @internal */
  push(data: Buffer): void {
    if (data.length === 0) {
      this.end();
      return;
    }
    if (this.discard) {
      this.grant(data.length);
      return;
    }
    this.chunks.push(data);
    this.buffered += data.length;
    if (this.buffered <= BUFFER_HIGH_WATER) this.grant(data.length);
    else this.owed += data.length;
    this.wake();
  }

  /** @internal */
  end(error?: BoxliteError): void {
    if (this.ended) return;
    this.ended = true;
    this.error = error;
    this.wake();
  }

  private wake(): void {
    const w = this.waiters;
    this.waiters = [];
    for (const f of w) f();
  }

  /** Next chunk of raw bytes, or null at the end of the stream. */
  async nextBuffer(): Promise<Buffer | null> {
    while (this.chunks.length === 0) {
      if (this.ended) {
        if (this.error) throw this.error;
        return null;
      }
      await new Promise<void>((r) => this.waiters.push(r));
    }
    const chunk = this.chunks.shift()!;
    this.buffered -= chunk.length;
    if (this.owed > 0 && this.buffered <= BUFFER_HIGH_WATER) {
      this.grant(this.owed);
      this.owed = 0;
    }
    return chunk;
  }

  /** Next chunk as UTF-8 text (multi-byte characters are never split), or null at the end. */
  async next(): Promise<string | null> {
    for (;;) {
      const chunk = await this.nextBuffer();
      if (chunk === null) {
        const rest = this.decoder.end();
        return rest.length ? rest : null;
      }
      const text = this.decoder.write(chunk);
      if (text.length) return text;
    }
  }

  async *[Symbol.asyncIterator](): AsyncIterator<Buffer> {
    for (;;) {
      const chunk = await this.nextBuffer();
      if (chunk === null) return;
      yield chunk;
    }
  }

  /** @internal Drop whatever is buffered (used when nobody will read it). */
  drain(): void {
    this.discard = true;
    this.chunks.length = 0;
    this.buffered = 0;
    if (this.owed) this.grant(this.owed);
    this.owed = 0;
  }
}

export class ExecInput {
  private closed = false;
  /** Writes and close go out strictly in call order, even when a write waits for credit. */
  private queue: Promise<void> = Promise.resolve();

  constructor(
    private readonly channel: ExecChannel,
    private readonly onWrite: (bytes: number) => void,
  ) {}

  private enqueue(op: () => Promise<void>): Promise<void> {
    const next = this.queue.then(op);
    this.queue = next.catch(() => {});
    return next;
  }

  /** Resolves once the data is on its way; waits for guest credit (back-pressure). */
  write(data: Buffer | Uint8Array): Promise<void> {
    if (this.closed) return Promise.resolve();
    const copy = Buffer.from(data);
    this.onWrite(copy.length);
    return this.enqueue(() => this.channel.writeStdin(copy));
  }

  writeString(text: string): Promise<void> {
    return this.write(Buffer.from(text, 'utf8'));
  }

  /** End of input (after everything written before it): the process sees EOF on stdin. */
  close(): Promise<void> {
    if (this.closed) return this.queue;
    this.closed = true;
    return this.enqueue(() => this.channel.closeStdin());
  }
}

/** A running command in a box (`JsExecution` in @boxlite-ai/boxlite). */
export class Execution {
  private readonly out: ExecOutput;
  private readonly err: ExecOutput;
  private readonly input: ExecInput;
  private readonly result: Promise<ExecResult>;
  private settle!: (r: ExecResult) => void;
  private fail!: (e: BoxliteError) => void;
  private exited = false;

  /** @internal */
  constructor(
    private readonly execId: string,
    private readonly channel: ExecChannel,
    readonly pid: number,
    private readonly hooks: { onExit(r: ExecResult): void; onStdin(bytes: number): void },
    private readonly tty = false,
  ) {
    this.out = new ExecOutput((n) => channel.grant(1, n));
    this.err = new ExecOutput((n) => channel.grant(2, n));
    this.input = new ExecInput(channel, hooks.onStdin);
    this.result = new Promise((resolve, reject) => {
      this.settle = resolve;
      this.fail = reject;
    });
    // wait() may never be called; an unobserved rejection must not crash the program.
    this.result.catch(() => {});
  }

  /** @internal Frames for this execution after STARTED. */
  handle(m: Message): void {
    switch (m.type) {
      case 'STDOUT':
        this.out.push(m.data);
        return;
      case 'STDERR':
        this.err.push(m.data);
        return;
      case 'EXIT': {
        this.exited = true;
        this.out.end();
        this.err.end();
        const r = exitResult(m);
        this.hooks.onExit(r);
        this.settle(r);
        return;
      }
      case 'ERROR':
        // A refused request (bad signal, late stdin); the process itself runs on.
        return;
    }
  }

  /** @internal The box went away before the command finished. */
  lost(err: BoxliteError): void {
    if (this.exited) return;
    this.exited = true;
    this.out.end(err);
    this.err.end(err);
    this.fail(err);
  }

  async id(): Promise<string> {
    return this.execId;
  }

  async stdin(): Promise<ExecInput> {
    return this.input;
  }

  async stdout(): Promise<ExecOutput> {
    this.out.claimed = true;
    return this.out;
  }

  async stderr(): Promise<ExecOutput> {
    this.err.claimed = true;
    return this.err;
  }

  /** Resolves when the process exits. Output nobody asked for is discarded from here on. */
  wait(): Promise<ExecResult> {
    if (!this.out.claimed) this.out.drain();
    if (!this.err.claimed) this.err.drain();
    return this.result;
  }

  kill(): Promise<void> {
    return this.signal(9);
  }

  async signal(signal: number): Promise<void> {
    if (!this.exited) await this.channel.signal(signal);
  }

  /**
   * Resizes the execution's pseudo-terminal. Without one there is nothing to resize: the
   * reference's guest rejects that request too, so it is an error, not a silent no-op.
   */
  async resizeTty(rows: number, cols: number): Promise<void> {
    if (!this.tty) throw new InvalidStateError(`execution ${this.execId} has no TTY (started without tty: true); cannot resize it`);
    if (!this.exited) await this.channel.resize(rows, cols);
  }
}

function exitResult(m: Extract<Message, { type: 'EXIT' }>): ExecResult {
  switch (m.reason) {
    case ExitReason.SIGNALED:
      return { exitCode: -m.signal };
    case ExitReason.TIMED_OUT:
      return { exitCode: -m.signal, errorMessage: m.message || 'timed out' };
    default:
      return m.message ? { exitCode: m.code, errorMessage: m.message } : { exitCode: m.code };
  }
}
