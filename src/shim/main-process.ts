// The box's main process (docs/decisions/0003-main-process.md): the image's Entrypoint + Cmd,
// started by the shim as the container's init (EXEC flag MAIN) and owned by it, not by any
// client, so it outlives the process that started the box. Its stdin stays open (nobody writes
// to it unless a client attaches), its stdout and stderr go to logs/main.log as they come, and
// its end is written to exit.json; the shim then stops the box.
import fs from 'node:fs';
import { ExitReason, OUTPUT_WINDOW, type Message } from '../protocol/codec.js';
import { EXEC_FLAG_MAIN, EXEC_FLAG_TTY } from '../protocol/features.js';
import { writeFileAtomic } from '../util/fs.js';
import type { ExitRecord, MainSpec } from './config.js';
import type { ControlReplies } from './control.js';
import type { BoxPaths } from '../store/home.js';
import type { RoutedClient, StreamRouter } from './router.js';

interface Attachment {
  client: RoutedClient;
  stream: number;
  /** Output the client granted (docs/protocol.md §5); output beyond it is not sent to it (the log keeps it). */
  credit: { 1: number; 2: number };
}

type AttachReply = ControlReplies['attach'];

const MAX_CREDIT = 2 ** 31;
/**
 * docker's json-file driver keeps everything by default (max-size -1) and its `local` driver
 * 100 MB; a sandbox runs code nobody reviewed, so the log is bounded: at most this much in
 * main.log plus as much in main.log.1.
 */
export const MAIN_LOG_MAX_BYTES = 64 * 1024 * 1024;

export class MainProcess {
  private agentStream?: number;
  private state: 'idle' | 'starting' | 'running' | 'exited' = 'idle';
  /** Started by adopt(): the stream was opened without an EXEC. */
  private adopting = false;
  private pid = 0;
  private startedAt?: string;
  private exit?: ExitRecord;
  private logFd?: number;
  private logBytes = 0;
  private readonly attachments: Attachment[] = [];
  /** Attach requests waiting for the process to have started (or failed to). */
  private waiters: Array<() => void> = [];

  constructor(
    private readonly router: StreamRouter,
    private readonly paths: Pick<BoxPaths, 'mainLog' | 'exitFile'>,
    private readonly spec: MainSpec,
    private readonly log: (line: string) => void,
    private readonly onExit: (record: ExitRecord) => void,
  ) {}

  get hasExited(): boolean {
    return this.state === 'exited';
  }

  start(tty = this.spec.tty): void {
    if (this.state !== 'idle') return;
    this.state = 'starting';
    this.adopting = false;
    // A new run: the last one's record and output go (docker start resets ExitCode; the log is this run's).
    fs.rmSync(this.paths.exitFile, { force: true });
    fs.rmSync(`${this.paths.mainLog}.1`, { force: true });
    if (this.logFd === undefined) this.openLog();
    this.log(`starting the main process: ${JSON.stringify(this.spec.argv)}${tty ? ' (tty)' : ''}`);
    this.agentStream = this.router.openInternal(
      {
        flags: EXEC_FLAG_MAIN | (tty ? EXEC_FLAG_TTY : 0),
        rows: 24,
        cols: 80,
        timeoutMs: 0,
        user: this.spec.user,
        cwd: this.spec.cwd,
        argv: this.spec.argv,
        env: this.spec.env,
      },
      (m) => this.fromAgent(m),
    );
  }

  /**
   * box.fork(): the source's main process runs on in the copied memory. Its stream is opened
   * without an EXEC; the agent re-keys the process onto it (RESUME word `boxlite.fork.main=`,
   * src/shim/fork.ts) and sends STARTED again. Returns that stream id. The fork's log starts here.
   */
  adopt(): number {
    if (this.state !== 'idle') throw new Error('the main process was already started');
    this.state = 'starting';
    this.adopting = true;
    fs.rmSync(this.paths.exitFile, { force: true });
    fs.rmSync(`${this.paths.mainLog}.1`, { force: true });
    this.openLog();
    this.log(`adopting the forked source's main process: ${JSON.stringify(this.spec.argv)}`);
    this.agentStream = this.router.openInternal(null, (m) => this.fromAgent(m));
    return this.agentStream;
  }

  private fromAgent(m: Message): void {
    switch (m.type) {
      case 'STARTED':
        this.state = 'running';
        this.pid = m.pid;
        this.startedAt = new Date().toISOString();
        this.wake();
        return;
      case 'STDOUT':
      case 'STDERR': {
        if (m.data.length === 0) {
          this.forward(m);
          return;
        }
        this.appendLog(m.data);
        const fd = m.type === 'STDOUT' ? 1 : 2;
        for (const a of this.attachments) {
          if (m.data.length > a.credit[fd]) continue; // a client that stopped reading misses output, the process never waits for it
          a.credit[fd] -= m.data.length;
          a.client.link.send({ ...m, stream: a.stream });
        }
        return;
      }
      case 'WINDOW':
        // Credit for what attached clients wrote to its stdin.
        if (m.fd === 0) this.forward(m);
        return;
      case 'EXIT': {
        const reason = m.reason === ExitReason.SIGNALED || m.reason === ExitReason.TIMED_OUT ? 'signaled' : m.reason === ExitReason.SPAWN_FAILED ? 'failed' : 'exited';
        this.finish({
          exitCode: m.code,
          reason,
          ...(m.signal ? { signal: m.signal } : {}),
          ...(m.message ? { message: m.message } : {}),
          ...(this.startedAt ? { startedAt: this.startedAt } : {}),
          finishedAt: new Date().toISOString(),
        });
        this.forward(m);
        this.attachments.length = 0;
        this.onExit(this.exit!);
        return;
      }
      case 'ERROR':
        this.log(`agent error on the main process's stream: ${m.message}`);
        if (this.state === 'starting' && this.adopting) {
          // Nothing to adopt (the source held its main process for an attach): start it here.
          this.router.closeInternal(this.agentStream!);
          this.state = 'idle';
          this.start();
          return;
        }
        if (this.state === 'starting') {
          // Refused before it ran (e.g. an agent that cannot start a main process).
          this.finish({ exitCode: 125, reason: 'failed', message: m.message, finishedAt: new Date().toISOString() });
          this.onExit(this.exit!);
        }
        return;
    }
  }

  private openLog(): void {
    this.logBytes = 0;
    try {
      this.logFd = fs.openSync(this.paths.mainLog, 'w');
    } catch (err) {
      this.logFd = undefined;
      this.log(`cannot open ${this.paths.mainLog}: ${(err as Error).message}; the main process's output is not kept`);
    }
  }

  /**
   * Written synchronously before the agent gets its credit back, so host memory stays bounded
   * by the window; split across generations at the cap, so disk stays bounded too.
   */
  private appendLog(data: Buffer): void {
    const cap = Math.max(1, this.spec.logMaxBytes ?? MAIN_LOG_MAX_BYTES);
    while (data.length > 0 && this.logFd !== undefined) {
      if (this.logBytes >= cap) {
        // Rotate: the previous generation goes, the current one becomes main.log.1 (box.logs() reads both).
        fs.closeSync(this.logFd);
        try {
          fs.renameSync(this.paths.mainLog, `${this.paths.mainLog}.1`);
        } catch (err) {
          this.log(`cannot rotate ${this.paths.mainLog}: ${(err as Error).message}`);
        }
        this.openLog();
        continue;
      }
      const part = data.subarray(0, cap - this.logBytes);
      try {
        fs.writeSync(this.logFd, part);
      } catch {
        return; // A full disk costs the log, never the box.
      }
      this.logBytes += part.length;
      data = data.subarray(part.length);
    }
  }

  private finish(record: ExitRecord): void {
    this.state = 'exited';
    this.exit = record;
    try {
      writeFileAtomic(this.paths.exitFile, JSON.stringify(record, null, 2));
    } catch (err) {
      this.log(`cannot write ${this.paths.exitFile}: ${(err as Error).message}`);
    }
    if (this.logFd !== undefined) fs.closeSync(this.logFd);
    this.logFd = undefined;
    this.log(`main process ended: ${JSON.stringify(record)}`);
    this.wake();
  }

  /** The box is being stopped under a running main process: the agent SIGKILLs it (docker stop's 137). */
  stopped(): void {
    if (this.state !== 'running' && this.state !== 'starting') return;
    this.finish({
      exitCode: 128 + 9,
      reason: 'stopped',
      signal: 9,
      message: 'the box was stopped',
      ...(this.startedAt ? { startedAt: this.startedAt } : {}),
      finishedAt: new Date().toISOString(),
    });
  }

  private forward(m: Message): void {
    for (const a of this.attachments) a.client.link.send({ ...m, stream: a.stream });
  }

  private wake(): void {
    const w = this.waiters;
    this.waiters = [];
    for (const f of w) f();
  }

  /**
   * A client attaches on `stream`: from the reply on, it gets the process's output and EXIT
   * there and may send STDIN, SIGNAL and RESIZE. A held process starts now (with `tty` if asked).
   */
  attach(client: RoutedClient, stream: number, reply: (body: AttachReply) => void, tty?: boolean): void {
    const answer = () => {
      if (this.state === 'exited') {
        const e = this.exit!;
        reply({ exited: true, exitCode: e.exitCode, ...(e.message ? { message: e.message } : {}) });
        return;
      }
      // Registered in the same tick as the reply goes out: the client misses no frame after it.
      this.attachments.push({ client, stream, credit: { 1: OUTPUT_WINDOW, 2: OUTPUT_WINDOW } });
      reply({ pid: this.pid });
    };
    if (this.state === 'idle') this.start(tty ?? this.spec.tty);
    if (this.state === 'starting') this.waiters.push(answer);
    else answer();
  }

  /** Frames a client sends on its attachment stream; false when `m` is not for one. */
  fromClient(client: RoutedClient, m: Message): boolean {
    const a = this.attachments.find((x) => x.client === client && x.stream === m.stream);
    if (!a || this.agentStream === undefined) return false;
    switch (m.type) {
      case 'STDIN':
      case 'SIGNAL':
      case 'RESIZE':
        this.router.toInternal(client, this.agentStream, m);
        return true;
      case 'WINDOW':
        if (m.fd === 1 || m.fd === 2) a.credit[m.fd] = Math.min(MAX_CREDIT, a.credit[m.fd] + m.bytes);
        return true;
      default:
        return false;
    }
  }

  /** Clients attached to it now: autoStop's busy test. */
  get attachedCount(): number {
    return this.attachments.length;
  }

  detach(client: RoutedClient): void {
    for (let i = this.attachments.length - 1; i >= 0; i--) if (this.attachments[i]!.client === client) this.attachments.splice(i, 1);
  }
}
