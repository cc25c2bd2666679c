// A remote execution (rest-contract §3.4): `POST exec` answered with an id, then the attach
// WebSocket: binary frames [1|2]+bytes, text frames exit/error; stdin as binary frames and
// `{"type":"stdin_eof"}` (re-sent after a reconnect). First frame within 10 s of the upgrade, a
// 45 s watchdog after that, a client Ping every 15 s. A socket that ends without an exit frame
// leads to a status probe, then reconnects after 15 s, then every 30 s, within a 270 s budget; a
// finished exec is re-attached at once for the output the server replays (then its exit frame), and
// frames replayed that we already had are skipped (our server's first Ping names the replay start). Output is buffered without bound per stream and decoded by
// a stateful UTF-8 decoder (ExecOutput), so a character cut across frames arrives whole.
import WebSocket from 'ws';
import type { BoxliteError } from '../../errors/index.js';
import { ExecOutput, type ExecResult } from '../../runtime/execution.js';
import type { RestTransport } from './transport.js';

/** The reference's timings; tests shorten them. */
export const restTimings = {
  firstFrameMs: 10_000,
  watchdogMs: 45_000,
  pingMs: 15_000,
  probeMs: 5_000,
  reconnectFirstMs: 15_000,
  reconnectMaxMs: 30_000,
  reconnectBudgetMs: 270_000,
  handshakeMs: 30_000,
};

const FINISHED = new Set(['completed', 'killed', 'timed_out']);

/** The stdin of a remote execution: binary frames, then `stdin_eof`; queued while no socket is open. */
export class RestExecInput {
  closed = false;
  constructor(private readonly exec: RestExecution) {}

  async write(data: Buffer | Uint8Array): Promise<void> {
    if (this.closed) return;
    this.exec.sendFrame(Buffer.from(data), true);
  }

  writeString(text: string): Promise<void> {
    return this.write(Buffer.from(text, 'utf8'));
  }

  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    this.exec.sendFrame(JSON.stringify({ type: 'stdin_eof' }), false);
  }
}

export class RestExecution {
  private readonly out = new ExecOutput(() => {});
  private readonly err = new ExecOutput(() => {});
  private readonly input = new RestExecInput(this);
  private readonly result: Promise<ExecResult>;
  private settle!: (r: ExecResult) => void;
  private done = false;
  private socket?: WebSocket;
  private open = false;
  /** Frames written while no socket is open: sent, in order, on the next open. */
  private queue: Array<[Buffer | string, boolean]> = [];
  private lastError?: string;
  private everConnected = false;
  private reconnectStarted?: number;
  private attempts = 0;
  /** The exit code the status probe reported once the execution had finished (re-attaching for its output). */
  private finishedExit?: number;
  /**
   * Output frames handed to the streams (by the server's sequence numbers). Our server's first Ping on
   * a socket carries (replay start - 1), before any frame: a re-attach then skips the frames it replays
   * that we already had (the in-flight window), so output arrives exactly once. A server whose first
   * Ping is not a number gets no de-duplication (seqTracking off).
   */
  private delivered = 0;
  private seqTracking = true;
  private timers = new Set<NodeJS.Timeout>();

  /** @internal */
  constructor(
    private readonly transport: RestTransport,
    private readonly boxPath: string,
    private readonly execId: string,
    private readonly tty: boolean,
  ) {
    this.result = new Promise((resolve) => (this.settle = resolve));
    this.connect();
  }

  private get execPath(): string {
    return `${this.boxPath}/executions/${encodeURIComponent(this.execId)}`;
  }

  private timer(ms: number, f: () => void): NodeJS.Timeout {
    const t = setTimeout(() => {
      this.timers.delete(t);
      f();
    }, ms);
    this.timers.add(t);
    return t;
  }

  private clear(t?: NodeJS.Timeout): void {
    if (!t) return;
    clearTimeout(t);
    this.timers.delete(t);
  }

  private connect(): void {
    void this.transport.authHeaders().then(
      (headers) => this.attach(headers),
      (err: BoxliteError) => this.failConnect(err.message),
    );
  }

  private attach(headers: Record<string, string>): void {
    if (this.done) return;
    const ws = new WebSocket(this.transport.wsUrl(`${this.execPath}/attach`), {
      headers,
      perMessageDeflate: false,
      handshakeTimeout: restTimings.handshakeMs,
    });
    this.socket = ws;
    let watchdog: NodeJS.Timeout | undefined;
    let ping: NodeJS.Timeout | undefined;
    let gotFrame = false;
    let ended = false;
    let seq: number | undefined;
    let sawOutput = false;
    const alive = () => {
      this.clear(watchdog);
      if (!gotFrame) {
        gotFrame = true;
        // A healthy socket (it delivered a frame): a later drop starts a fresh reconnect budget.
        this.reconnectStarted = undefined;
        this.attempts = 0;
        ping = setInterval(() => ws.readyState === WebSocket.OPEN && ws.ping(), restTimings.pingMs);
      }
      watchdog = this.timer(restTimings.watchdogMs, () => ws.terminate());
    };
    const end = (why: string) => {
      if (ended) return;
      ended = true;
      this.clear(watchdog);
      if (ping) clearInterval(ping);
      this.open = false;
      if (this.socket === ws) this.socket = undefined;
      if (!this.done) void this.afterDrop(why);
    };
    ws.on('open', () => {
      this.open = true;
      this.everConnected = true;
      watchdog = this.timer(restTimings.firstFrameMs, () => ws.terminate());
      // After a reconnect the server has a fresh stdin: re-send stdin_eof if it was closed.
      const pending = this.queue.splice(0);
      if (this.input.closed && !pending.some(([f]) => typeof f === 'string')) pending.push([JSON.stringify({ type: 'stdin_eof' }), false]);
      for (const [f, binary] of pending) ws.send(f, { binary });
    });
    ws.on('ping', (data: Buffer) => {
      if (!sawOutput && seq === undefined && /^-?\d{1,15}$/.test(data.toString('latin1'))) seq = Number(data.toString('latin1')) + 1;
      alive();
    });
    ws.on('pong', alive);
    ws.on('message', (data, isBinary) => {
      alive();
      const buf = Array.isArray(data) ? Buffer.concat(data) : Buffer.isBuffer(data) ? data : Buffer.from(data);
      if (isBinary) {
        if (buf.length < 2) return;
        if (!sawOutput) {
          sawOutput = true;
          if (seq === undefined) this.seqTracking = false;
        }
        if (this.seqTracking && seq !== undefined) {
          const n = seq++;
          if (n < this.delivered) return; // replayed, and already delivered before the drop
          this.delivered = n + 1;
        }
        if (buf[0] === 1) this.out.push(buf.subarray(1));
        else if (buf[0] === 2) this.err.push(buf.subarray(1));
        return;
      }
      let msg: { type?: string; exit_code?: unknown; message?: unknown };
      try {
        msg = JSON.parse(buf.toString('utf8'));
      } catch {
        return;
      }
      if (msg.type === 'exit') {
        const exitCode = typeof msg.exit_code === 'number' ? msg.exit_code : -1;
        // -1 after an error frame: the server ended the execution (its shutdown), not the process.
        this.finish(exitCode === -1 && this.lastError ? { exitCode, errorMessage: this.lastError } : { exitCode });
        ws.close(1000);
      } else if (msg.type === 'error' && typeof msg.message === 'string') this.lastError = msg.message;
    });
    ws.on('unexpected-response', (req, res) => {
      const chunks: Buffer[] = [];
      res.on('data', (c: Buffer) => chunks.push(c));
      res.on('end', () => {
        req.destroy();
        ended = true;
        this.socket = undefined;
        const status = res.statusCode ?? 0;
        const text = Buffer.concat(chunks).toString('utf8').slice(0, 1024);
        const why = status === 401 || status === 403 ? `WS auth rejected (HTTP ${status}): ${text}` : `HTTP ${status}: ${text}`;
        if (!this.everConnected) this.failConnect(why);
        else void this.afterDrop(why, status);
      });
    });
    ws.on('error', (e) => {
      if (!this.open && !this.everConnected && !ended) {
        ended = true;
        this.socket = undefined;
        this.failConnect(e.message);
      } else end(e.message);
    });
    ws.on('close', () => end('socket closed without an exit frame'));
  }

  /** The very first upgrade failed: exec() has resolved; wait() gets the probe's answer. */
  private failConnect(why: string): void {
    if (this.done) return;
    void this.probe().then((s) => {
      const exitCode = s && typeof s.exit_code === 'number' ? s.exit_code : -1;
      this.finish({ exitCode, errorMessage: `WS connect failed: ${why}` });
    });
  }

  private async probe(): Promise<{ status?: string; exit_code?: number | null; gone?: boolean } | undefined> {
    try {
      const res = await this.transport.raw('GET', this.execPath, { timeoutMs: restTimings.probeMs });
      const text = await res.body.text();
      if (res.status === 404) return { gone: true };
      if (res.status < 200 || res.status >= 300) return undefined;
      return JSON.parse(text);
    } catch {
      return undefined;
    }
  }

  private async afterDrop(why: string, status?: number): Promise<void> {
    if (this.done) return;
    // The server refused a re-attach to an execution known to be finished: its exit code is final.
    if (status !== undefined && this.finishedExit !== undefined) return this.finish({ exitCode: this.finishedExit });
    const s = status === 404 ? { gone: true } : await this.probe();
    if (this.done) return;
    if (s?.gone) return this.finish({ exitCode: -1, errorMessage: `execution ${this.execId} is gone (session reaped): ${why}` });
    let delay = Math.min(this.attempts === 0 ? restTimings.reconnectFirstMs : restTimings.reconnectMaxMs, restTimings.reconnectMaxMs);
    if (s?.status && FINISHED.has(s.status)) {
      // Finished while we were away: attach again (at once the first time), so the server replays
      // what it had not seen acknowledged, then the exit frame. A refusal (409: the exit frame was
      // delivered) ends it with the probe's exit code.
      const exitCode = typeof s.exit_code === 'number' ? s.exit_code : -1;
      if (this.finishedExit === undefined) delay = 0;
      this.finishedExit = exitCode;
    }
    this.reconnectStarted ??= Date.now();
    if (Date.now() + delay - this.reconnectStarted > restTimings.reconnectBudgetMs) {
      const last = await this.probe();
      const exitCode = last && typeof last.exit_code === 'number' ? last.exit_code : -1;
      return this.finish({ exitCode, errorMessage: `attach lost and reconnecting failed for ${Math.round(restTimings.reconnectBudgetMs / 1000)} s: ${why}` });
    }
    this.attempts++;
    this.timer(delay, () => this.connect());
  }

  private finish(r: ExecResult): void {
    if (this.done) return;
    this.done = true;
    for (const t of this.timers) clearTimeout(t);
    this.timers.clear();
    this.out.end();
    this.err.end();
    if (!r.errorMessage && this.lastError && r.exitCode === -1) r.errorMessage = this.lastError;
    this.settle(r);
  }

  /** @internal A stdin frame: sent now when the socket is open, else queued for the next open. */
  sendFrame(frame: Buffer | string, binary: boolean): void {
    if (this.done) return;
    if (this.open && this.socket?.readyState === WebSocket.OPEN) this.socket.send(frame, { binary });
    else this.queue.push([frame, binary]);
  }

  async id(): Promise<string> {
    return this.execId;
  }

  async stdin(): Promise<RestExecInput> {
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

  /** Resolves with the exit frame's code, or what the status probe says after a lost socket. */
  wait(): Promise<ExecResult> {
    if (!this.out.claimed) this.out.drain();
    if (!this.err.claimed) this.err.drain();
    return this.result;
  }

  /** `DELETE …/executions/{id}`: SIGKILL on the server. */
  async kill(): Promise<void> {
    await this.transport.call('DELETE', this.execPath);
  }

  /** `POST …/signal {"signal":n}`; the server checks the allowed set. */
  async signal(signal: number): Promise<void> {
    await this.transport.call('POST', `${this.execPath}/signal`, { json: { signal } });
  }

  /** `POST …/resize {"cols","rows"}`; a non-TTY exec is the server's 409, as with the reference. */
  async resizeTty(rows: number, cols: number): Promise<void> {
    void this.tty;
    await this.transport.call('POST', `${this.execPath}/resize`, { json: { cols, rows } });
  }
}
