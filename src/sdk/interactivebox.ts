/**
 * InteractiveBox: a shell on a pseudo-terminal in the box, wired to this process's terminal
 * (`docker exec -it`). A port of the reference's `interactivebox.js`: same options, fields,
 * start/wait/stop and tty/non-tty paths. Beyond the reference, the host terminal's window size
 * is given to the guest at start and on every SIGWINCH, and the host terminal leaves raw mode
 * as soon as the shell exits, on stop(), on process.exit() and on SIGTERM/SIGHUP/SIGQUIT.
 */
import type { ExecInput, ExecOutput, Execution } from '../runtime/execution.js';
import { SimpleBox, type SimpleBoxOptions } from './simplebox.js';

/** Options of an InteractiveBox: SimpleBox's plus the shell and the terminal mode. */
export interface InteractiveBoxOptions extends SimpleBoxOptions {
  /** Shell to run (default: '/bin/sh'). */
  shell?: string;
  /**
   * Terminal I/O forwarding:
   * - undefined (default): forward when this process's stdin is a TTY;
   * - true: forward (still only when stdin really is a TTY, as the reference);
   * - false: no forwarding; a subclass drives `_stdin` / `_stdout` itself.
   */
  tty?: boolean;
}

/** The host-side streams an interactive session talks to (process.stdin/stdout/stderr, or stand-ins in tests). */
export interface HostTerminal {
  stdin: NodeJS.ReadStream;
  stdout: NodeJS.WriteStream;
  stderr: NodeJS.WriteStream;
}

/** Signals that end this process by default: the terminal must leave raw mode before they do. */
const FATAL_SIGNALS = ['SIGTERM', 'SIGHUP', 'SIGQUIT'] as const;

/**
 * Raw mode, window size and input forwarding of one session on the host terminal. Everything it
 * installs (stdin listener, resize and signal handlers, the exit hook) is removed again by
 * restore(), which is idempotent: it runs when the shell exits, on stop(), and on the way out of
 * the process, whichever comes first.
 */
class TerminalSession {
  private active = false;
  private readonly onData: (data: Buffer) => void;
  private readonly onResize = () => this.sendSize();
  private readonly onExit = () => this.restore();
  private readonly onSignal = (signal: NodeJS.Signals) => {
    this.restore();
    // Our listener replaced Node's default action; with the terminal back in cooked mode, die of
    // the same signal as the program would have without us (unless the program handles it too).
    if (process.listenerCount(signal) === 0) process.kill(process.pid, signal);
  };

  constructor(
    private readonly host: HostTerminal,
    private readonly execution: Execution,
    forward: (data: Buffer) => void,
  ) {
    this.onData = forward;
  }

  enter(): void {
    const { stdin } = this.host;
    stdin.setRawMode(true);
    this.active = true;
    stdin.on('data', this.onData);
    stdin.resume();
    this.sizeSource()?.on('resize', this.onResize);
    process.on('exit', this.onExit);
    for (const s of FATAL_SIGNALS) process.on(s, this.onSignal);
    this.sendSize();
  }

  /** The stream whose `rows`/`columns` describe the window: stdout, else stderr, when a TTY. */
  private sizeSource(): NodeJS.WriteStream | undefined {
    if (this.host.stdout.isTTY) return this.host.stdout;
    if (this.host.stderr.isTTY) return this.host.stderr;
    return undefined;
  }

  /** Gives the guest PTY the host window's size (the PTY starts at 24x80). */
  sendSize(): void {
    const src = this.sizeSource();
    if (!this.active || !src) return;
    const { rows, columns } = src;
    // A terminal that reports no size (0x0, e.g. a pty nobody sized) keeps the guest's default.
    if (!(rows > 0 && columns > 0)) return;
    // The shell may exit while a resize is on its way; a lost resize is harmless.
    this.execution.resizeTty(rows, columns).catch(() => {});
  }

  restore(): void {
    if (!this.active) return;
    this.active = false;
    const { stdin } = this.host;
    stdin.off('data', this.onData);
    this.sizeSource()?.off('resize', this.onResize);
    process.off('exit', this.onExit);
    for (const s of FATAL_SIGNALS) process.off(s, this.onSignal);
    try {
      stdin.setRawMode(false);
      stdin.pause();
    } catch {
      // The terminal went away (hang-up): nothing left to restore.
    }
  }
}

/**
 * Interactive box with automatic PTY and terminal forwarding.
 *
 * ```ts
 * await using box = new InteractiveBox({ image: 'alpine:latest' });
 * await box.start(); // the shell now owns this terminal (raw mode)
 * await box.wait();  // until the user types `exit`
 * ```
 */
export class InteractiveBox extends SimpleBox {
  protected _shell: string;
  protected _interactiveEnv?: Record<string, string>;
  protected _tty: boolean;
  protected _execution?: Execution;
  protected _stdin?: ExecInput;
  protected _stdout?: ExecOutput;
  protected _stderr?: ExecOutput;
  protected _ioTasks: Promise<void>[] = [];
  protected _exited = false;
  /** @internal The terminal the session forwards; process's own unless a test substitutes it. */
  protected _host: HostTerminal = { stdin: process.stdin, stdout: process.stdout, stderr: process.stderr };
  private terminal?: TerminalSession;
  private markExited!: () => void;
  private readonly exitedPromise = new Promise<void>((resolve) => (this.markExited = resolve));

  constructor(options: InteractiveBoxOptions) {
    // Options are required, as in the reference: destructuring undefined throws its TypeError.
    const { shell = '/bin/sh', tty, ...baseOptions } = options;
    // env stays in baseOptions: it is the box's env and, below, the shell's env too (as the reference).
    super(baseOptions);
    this._shell = shell;
    this._interactiveEnv = options.env;
    this._tty = tty === undefined ? (process.stdin.isTTY ?? false) : tty;
  }

  /** Starts the shell on a PTY; with a TTY, puts the terminal in raw mode and forwards I/O. */
  async start(): Promise<void> {
    const box = await this._ensureBox();
    const envArray = this._interactiveEnv
      ? Object.entries(this._interactiveEnv).map(([k, v]): [string, string] => [k, v])
      : undefined;
    this._execution = await box.exec(this._shell, [], envArray, true);
    // Each stream on its own, as the reference: a missing one leaves its field unset.
    try {
      this._stdin = await this._execution.stdin();
    } catch {
      // stdin not available
    }
    try {
      this._stdout = await this._execution.stdout();
    } catch {
      // stdout not available
    }
    try {
      this._stderr = await this._execution.stderr();
    } catch {
      // stderr not available
    }
    if (this._tty && this._host.stdin.isTTY) {
      const stdin = this._stdin;
      this.terminal = new TerminalSession(this._host, this._execution, (data) => {
        // Write errors mean the box is shutting down; the exit task reports the end.
        if (!this._exited && stdin) stdin.write(data).catch(() => {});
      });
      try {
        this.terminal.enter();
      } catch (err) {
        this.terminal.restore();
        throw err;
      }
      this._ioTasks.push(this._forwardStdin(), this._forwardOutput(), this._forwardStderr(), this._waitForExit());
    } else {
      // No forwarding: callers drive _stdin/_stdout themselves (output is not drained).
      this._ioTasks.push(this._waitForExit());
    }
  }

  /** Resolves when the shell has exited and its output has been forwarded. */
  async wait(): Promise<void> {
    await Promise.all(this._ioTasks);
  }

  /** Restores the terminal, gives the I/O tasks up to 3 s to finish, then stops the box. */
  override async stop(): Promise<void> {
    this.terminal?.restore();
    if (this._ioTasks.length > 0) {
      let timer: NodeJS.Timeout | undefined;
      try {
        await Promise.race([
          Promise.all(this._ioTasks),
          new Promise((_, reject) => {
            timer = setTimeout(() => reject(new Error('Timeout')), 3000);
          }),
        ]);
      } catch {
        // Timeout or error: shut down anyway.
      } finally {
        clearTimeout(timer);
      }
      this._ioTasks = [];
    }
    await super.stop();
  }

  override async [Symbol.asyncDispose](): Promise<void> {
    await this.stop();
  }

  /** Input is forwarded by the session's 'data' listener; this task lasts until the shell exits. */
  private async _forwardStdin(): Promise<void> {
    if (!this._stdin) return;
    await this.exitedPromise;
  }

  /** PTY output to stdout, as bytes: a raw terminal gets exactly what the guest wrote. */
  private async _forwardOutput(): Promise<void> {
    if (!this._stdout) return;
    try {
      for (;;) {
        const chunk = await this._stdout.nextBuffer();
        if (chunk === null) break;
        this._host.stdout.write(chunk);
      }
    } catch {
      // The stream ended with the box.
    }
  }

  private async _forwardStderr(): Promise<void> {
    if (!this._stderr) return;
    try {
      for (;;) {
        const chunk = await this._stderr.nextBuffer();
        if (chunk === null) break;
        this._host.stderr.write(chunk);
      }
    } catch {
      // The stream ended with the box.
    }
  }

  private async _waitForExit(): Promise<void> {
    try {
      if (this._execution) await this._execution.wait();
    } catch {
      // The box went away: the session is over all the same.
    } finally {
      this._exited = true;
      this.markExited();
      // The shell is gone: hand the terminal back now, not only at stop().
      this.terminal?.restore();
    }
  }
}
