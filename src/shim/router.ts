// Stream routing: exec frames between the shim's clients and the agent. Each client has
// its own stream-id space; the router maps it onto agent stream ids and back. It also
// enforces the agent's side of the protocol: output within the credit the host granted
// (docs/protocol.md §5) and only guest→host message types, so a misbehaving guest is cut
// off instead of filling the host's memory.
import { PortalError } from '../errors/index.js';
import { OUTPUT_WINDOW, STDIN_WINDOW, type Message } from '../protocol/codec.js';
import { execFeatures, missingFeatures } from '../protocol/features.js';
import type { Link } from '../protocol/link.js';
import type { Hello } from './handshake.js';

export interface RoutedClient {
  link: Link;
  /** client stream id → agent stream id */
  streams: Map<number, number>;
}

interface AgentStream {
  /** Absent once the client that started it left; output is then credited back and dropped. */
  owner?: { client: RoutedClient; clientStream: number };
  /** A stream the shim itself owns (the main process): every frame goes here, output is credited back at once. */
  sink?: (m: Message) => void;
  /** Bytes the agent may still send on fd 1 and fd 2. */
  credit: { 1: number; 2: number };
  /** STDIN bytes forwarded to the agent that it has not yet returned with WINDOW fd=0. */
  stdinOutstanding: number;
}

const MAX_CREDIT = 2 ** 31;

export class StreamRouter {
  private readonly clients = new Set<RoutedClient>();
  private readonly streams = new Map<number, AgentStream>();
  private nextAgentStream = 1;
  /** PING payload (hex) → its waiter: a PONG answers the PING that carries the same bytes. */
  private readonly pendingPings = new Map<string, (at?: number) => void>();
  private nextPing = 0n;
  /** box.fork(): see dropStaleFramesUntilFence. */
  private staleWindow = false;
  private staleDropped = 0;

  constructor(
    private readonly agent: Link,
    private readonly hello: Hello,
    private readonly hooks: {
      log(line: string): void;
      /** The agent broke the protocol: the box's link must end with this error. */
      onViolation(err: PortalError): void;
      onControl(client: RoutedClient, stream: number, data: Buffer): void;
      /**
       * A STDIN/SIGNAL/RESIZE/WINDOW on a stream the client did not open with EXEC (an
       * attachment to the main process); true when taken.
       */
      onUnrouted?(client: RoutedClient, m: Message): boolean;
      onClientGone?(client: RoutedClient): void;
    },
  ) {}

  /**
   * Starts an execution the shim itself owns (the box's main process). Its output is credited
   * back as soon as `sink` took it, so it never waits for a client.
   */
  openInternal(exec: Omit<Extract<Message, { type: 'EXEC' }>, 'type' | 'stream'> | null, sink: (m: Message) => void): number {
    const agentStream = this.nextAgentStream++;
    this.streams.set(agentStream, { sink, credit: { 1: OUTPUT_WINDOW, 2: OUTPUT_WINDOW }, stdinOutstanding: 0 });
    // null: a process already running in the guest that the agent re-keys onto this stream (box.fork()).
    if (exec) this.agent.send({ type: 'EXEC', stream: agentStream, ...exec });
    return agentStream;
  }

  /** Forgets a shim-owned stream the agent refused (an adoption with nothing to adopt). */
  closeInternal(agentStream: number): void {
    if (this.streams.get(agentStream)?.sink) this.streams.delete(agentStream);
  }

  /**
   * Input for a shim-owned stream (from a client attached to it). False, and nothing sent, when
   * STDIN would overrun the agent's window; the client is then cut off like any other overrun.
   */
  toInternal(client: RoutedClient, agentStream: number, m: Message): void {
    if (m.type !== 'STDIN' && m.type !== 'SIGNAL' && m.type !== 'RESIZE') return;
    const s = this.streams.get(agentStream);
    if (!s?.sink) return;
    if (m.type === 'STDIN' && m.data.length > 0) {
      if (s.stdinOutstanding + m.data.length > STDIN_WINDOW) {
        this.clientViolation(client, `STDIN to the main process overran the ${STDIN_WINDOW} byte window`);
        return;
      }
      s.stdinOutstanding += m.data.length;
    }
    this.agent.send({ ...m, stream: agentStream });
  }

  /**
   * Resolves once no client's execution is open on the agent any more, or after `ms`. When the
   * main process ends the box stops; executions still in flight (killed with the container's
   * pid namespace in a VM) first deliver their EXIT instead of losing the link.
   */
  async executionsSettled(ms: number): Promise<void> {
    const deadline = Date.now() + ms;
    while ([...this.streams.values()].some((s) => !s.sink) && Date.now() < deadline) {
      await new Promise((r) => setTimeout(r, 20));
    }
  }

  /** Clients' executions open on the agent now (the main process not counted): autoStop's busy test. */
  openExecutions(): number {
    let n = 0;
    for (const s of this.streams.values()) if (!s.sink) n++;
    return n;
  }

  addClient(link: Link): RoutedClient {
    const client: RoutedClient = { link, streams: new Map() };
    this.clients.add(client);
    link.onMessage((m) => this.fromClient(client, m));
    link.onClose(() => {
      this.clients.delete(client);
      this.hooks.onClientGone?.(client);
      // A client that goes away takes its executions with it: nobody can read them any more.
      // They stay known (unowned) until EXIT, so late output is credited back and the agent
      // is never left waiting for a window that only a dead client could open.
      for (const agentStream of client.streams.values()) {
        this.agent.send({ type: 'SIGNAL', stream: agentStream, signo: 9 });
        const s = this.streams.get(agentStream);
        if (!s) continue;
        s.owner = undefined;
        // A client that stopped reading before it left let the windows run dry; the agent
        // forwards what the pipes hold before EXIT, so without new credit it would wait
        // forever and never free the stream (its pipes, its slot). Reopen them.
        for (const fd of [1, 2] as const) {
          const owed = OUTPUT_WINDOW - s.credit[fd];
          if (owed <= 0) continue;
          s.credit[fd] += owed;
          this.agent.send({ type: 'WINDOW', stream: agentStream, fd, bytes: owed });
        }
      }
      client.streams.clear();
    });
    return client;
  }

  /**
   * Tells every client why the box's link ends (a stream-0 ERROR), then closes them once
   * what was queued for them is flushed. Resolves when every client socket is gone.
   */
  closeAll(reason?: string): Promise<void> {
    const gone: Array<Promise<void>> = [];
    for (const c of this.clients) {
      if (reason) c.link.send({ type: 'ERROR', stream: 0, message: reason });
      gone.push(c.link.end());
    }
    const pings = [...this.pendingPings.values()];
    this.pendingPings.clear();
    for (const pending of pings) pending();
    return Promise.all(gone).then(() => undefined);
  }

  /** One PING/PONG over the agent link: the raw round trip that benchmarks compare against. */
  /**
   * box.fork(): output the source's agent had queued for the source's executions reaches this
   * shim right behind HELLO, on streams this shim never opened. The agent answers frames in
   * order, so every such frame arrives before the PONG to a PING sent after the fork RESUME;
   * until then they are dropped instead of being a protocol violation. No stream is opened by
   * a client before this resolves, so no stale frame can land in a new execution.
   */
  async dropStaleFramesUntilFence(timeoutMs: number): Promise<void> {
    this.staleWindow = true;
    try {
      await this.pingAgent(timeoutMs);
    } finally {
      this.staleWindow = false;
      if (this.staleDropped) this.hooks.log(`fork: dropped ${this.staleDropped} frames of the source's executions`);
    }
  }

  pingAgent(timeoutMs = 10_000): Promise<number> {
    // Each PING carries its own number: a PONG that never came (or came after its
    // timeout) must not be taken for the answer to a later PING.
    const data = Buffer.alloc(8);
    data.writeBigUInt64BE(++this.nextPing);
    const key = data.toString('hex');
    const sent = performance.now();
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => {
        this.pendingPings.delete(key);
        reject(new PortalError(`agent did not answer PING within ${timeoutMs} ms`));
      }, timeoutMs);
      this.pendingPings.set(key, (at) => {
        clearTimeout(timer);
        if (at === undefined) reject(new PortalError('agent link lost'));
        else resolve(at - sent);
      });
      this.agent.send({ type: 'PING', stream: 0, data });
    });
  }

  private fromClient(client: RoutedClient, m: Message): void {
    switch (m.type) {
      case 'HELLO':
        client.link.send({ ...this.hello, stream: 0 });
        return;
      case 'PING':
        client.link.send({ type: 'PONG', stream: 0, data: m.data });
        return;
      case 'PONG':
        return;
      case 'CONTROL':
        this.hooks.onControl(client, m.stream, m.data);
        return;
      case 'EXEC': {
        if (client.streams.has(m.stream)) {
          client.link.send({ type: 'ERROR', stream: m.stream, message: `stream ${m.stream} is already in use` });
          return;
        }
        // Clients check this too; the shim refuses for any client that did not, because the
        // agent would drop the request with a stream-0 ERROR and the client would wait forever.
        const missing = missingFeatures(execFeatures(m), this.hello.features);
        if (missing.length) {
          client.link.send({ type: 'ERROR', stream: m.stream, message: `unsupported: the guest agent lacks ${missing.join(', ')}` });
          return;
        }
        const agentStream = this.nextAgentStream++;
        client.streams.set(m.stream, agentStream);
        this.streams.set(agentStream, {
          owner: { client, clientStream: m.stream },
          credit: { 1: OUTPUT_WINDOW, 2: OUTPUT_WINDOW },
          stdinOutstanding: 0,
        });
        this.agent.send({ ...m, stream: agentStream });
        return;
      }
      case 'STDIN':
      case 'SIGNAL':
      case 'RESIZE':
      case 'WINDOW': {
        const agentStream = client.streams.get(m.stream);
        if (agentStream === undefined && this.hooks.onUnrouted?.(client, m)) return;
        if (agentStream === undefined) {
          // Credit returned just after EXIT is normal; an ERROR for it could hit a reused id.
          if (m.type !== 'WINDOW') {
            client.link.send({ type: 'ERROR', stream: m.stream, message: `unknown stream ${m.stream}` });
          }
          return;
        }
        const s = this.streams.get(agentStream)!;
        if (m.type === 'STDIN' && m.data.length > 0) {
          // The agent drops STDIN beyond its window with only a stream-0 ERROR, which would
          // silently cut this execution's input: refuse the client that overran instead.
          if (s.stdinOutstanding + m.data.length > STDIN_WINDOW) {
            this.clientViolation(
              client,
              `STDIN on stream ${m.stream} overran the ${STDIN_WINDOW} byte window ` +
                `(${s.stdinOutstanding} bytes outstanding, ${m.data.length} more sent)`,
            );
            return;
          }
          s.stdinOutstanding += m.data.length;
        }
        if (m.type === 'WINDOW' && (m.fd === 1 || m.fd === 2)) {
          // The agent treats credit beyond 2^31 as a protocol error (§5): refuse it here,
          // so one confused client cannot break the link every other client shares.
          if (s.credit[m.fd] + m.bytes > MAX_CREDIT) {
            client.link.send({ type: 'ERROR', stream: m.stream, message: `WINDOW would exceed ${MAX_CREDIT} bytes of credit` });
            return;
          }
          s.credit[m.fd] += m.bytes;
        }
        this.agent.send({ ...m, stream: agentStream });
        return;
      }
      default:
        client.link.send({ type: 'ERROR', stream: m.stream, message: `unexpected ${m.type} from client` });
    }
  }

  /** Every frame from the agent after its HELLO. */
  fromAgent(m: Message): void {
    switch (m.type) {
      case 'PONG': {
        const key = m.data.toString('hex');
        const pending = this.pendingPings.get(key);
        this.pendingPings.delete(key);
        pending?.(performance.now());
        return;
      }
      case 'PING':
        this.agent.send({ type: 'PONG', stream: 0, data: m.data });
        return;
      case 'HELLO': // the answer to the shim's own HELLO
        return;
      case 'ERROR':
        if (m.stream === 0) {
          this.hooks.log(`agent error: ${m.message}`);
          return;
        }
        break;
      case 'STARTED':
      case 'STDOUT':
      case 'STDERR':
      case 'EXIT':
      case 'WINDOW':
        break;
      default:
        this.violation(`the guest agent sent ${m.type}, which only a host may send`);
        return;
    }
    const s = this.streams.get(m.stream);
    if (!s) {
      // A late ERROR (a SIGNAL that crossed EXIT) or WINDOW is harmless; anything else on a
      // stream the host never opened, or that already exited, is the agent losing track.
      if (m.type === 'ERROR' || m.type === 'WINDOW') return;
      if (this.staleWindow) {
        this.staleDropped++;
        return;
      }
      this.violation(`the guest agent sent ${m.type} on stream ${m.stream}, which is not open`);
      return;
    }
    if (s.sink) {
      if ((m.type === 'STDOUT' || m.type === 'STDERR') && m.data.length > 0) {
        const fd = m.type === 'STDOUT' ? 1 : 2;
        if (m.data.length > s.credit[fd]) {
          // The adopted main process of a fork may share its id with the source's stream.
          if (this.staleWindow) {
            this.staleDropped++;
            return;
          }
          this.violation(`the guest agent overran its ${m.type} window on stream ${m.stream} (${m.data.length} bytes sent, ${s.credit[fd]} granted)`);
          return;
        }
        s.sink(m);
        this.agent.send({ type: 'WINDOW', stream: m.stream, fd, bytes: m.data.length });
        return;
      }
      if (m.type === 'WINDOW' && m.fd === 0) s.stdinOutstanding = Math.max(0, s.stdinOutstanding - m.bytes);
      if (m.type === 'EXIT') this.streams.delete(m.stream);
      s.sink(m);
      return;
    }
    if ((m.type === 'STDOUT' || m.type === 'STDERR') && m.data.length > 0) {
      const fd = m.type === 'STDOUT' ? 1 : 2;
      if (m.data.length > s.credit[fd]) {
        this.violation(
          `the guest agent overran its ${m.type} window on stream ${m.stream} ` +
            `(${m.data.length} bytes sent, ${s.credit[fd]} granted)`,
        );
        return;
      }
      s.credit[fd] -= m.data.length;
      if (!s.owner) {
        // Output of an execution whose client left: keep the agent's window open so it can finish.
        s.credit[fd] += m.data.length;
        this.agent.send({ type: 'WINDOW', stream: m.stream, fd, bytes: m.data.length });
        return;
      }
    }
    if (m.type === 'WINDOW' && m.fd === 0) s.stdinOutstanding = Math.max(0, s.stdinOutstanding - m.bytes);
    if (m.type === 'EXIT') {
      this.streams.delete(m.stream);
      s.owner?.client.streams.delete(s.owner.clientStream);
    }
    s.owner?.client.link.send({ ...m, stream: s.owner.clientStream });
  }

  /** A client broke the protocol: it loses its own connection (and so its executions), told why. */
  clientViolation(client: RoutedClient, detail: string): void {
    const err = new PortalError(`protocol violation by a client: ${detail}`);
    this.hooks.log(err.message);
    client.link.send({ type: 'ERROR', stream: 0, message: err.message });
    void client.link.end();
  }

  private violation(detail: string): void {
    const err = new PortalError(`protocol violation: ${detail}`);
    this.hooks.log(err.message);
    this.hooks.onViolation(err);
  }
}
