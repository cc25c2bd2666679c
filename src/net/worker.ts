// The box's network worker (a worker_threads thread of the shim). It owns every socket of the
// box's network: QEMU's NIC socket (`-netdev stream`, Ethernet frames), the published ports,
// the tunnel socket; it runs the NetStack over the frames and hands each guest flow to the
// FlowHandler (dispatch.ts), which is the only path to host sockets. A thread of its own keeps
// the per-frame work off the shim's event loop (the agent link), and its heap is capped
// (resourceLimits in src/shim/network.ts), so a hostile guest can at worst kill its own box's
// network, which ends the box with a clear error.
//
// Messages to the parent (WorkerMessage): ready {ports, caPem?}, fatal {message}, log {line},
// snapshot {data} (answering a snapshot request). From the parent: snapshot, stop.
//
// The tunnel socket (boxes/<id>/tunnel.sock, 0600): each connection sends one header line
// `PORT <n>\n`; the worker opens a connection to guest port n through the stack and answers
// `OK\n` or `ERR <message>\n`; after OK the connection carries the bytes both ways, with
// half-close (a client FIN is a FIN to the guest and back).
import dgram from 'node:dgram';
import fs from 'node:fs';
import net from 'node:net';
import { isMainThread, parentPort, workerData } from 'node:worker_threads';
import { COUNTER, type GuestStream, type NetConfig } from './types.js';
import { NetStack } from './stack.js';
import { createFlowHandler } from './dispatch.js';
import { createDialer } from './dialer.js';
import { NetPolicy } from './policy.js';
import { createBoxCa } from './ca.js';
import { SecretInterceptor } from './mitm.js';

/** Ethernet header; every frame carries at least it. */
const ETH_HEADER = 14;
/** Largest frame the link can carry: a 65535-byte MTU payload + the Ethernet header. */
export const MAX_FRAME = 65535 + ETH_HEADER;

/** What workerData holds (built by src/shim/network.ts). */
export interface WorkerInit {
  kind: 'boxlite-net';
  config: NetConfig;
  /** COUNTER_SLOTS BigInt64 slots, shared with the shim. */
  counters: SharedArrayBuffer;
}

export interface PublishedNetPort {
  guestPort: number;
  hostIp: string;
  hostPort: number;
  protocol: 'tcp' | 'udp';
}

export type WorkerMessage =
  | { type: 'ready'; ports: PublishedNetPort[]; caPem?: string }
  | { type: 'fatal'; message: string }
  | { type: 'log'; line: string }
  | { type: 'snapshot'; id: number; data: unknown };

export type ParentMessage = { type: 'snapshot'; id: number } | { type: 'stop' };

/** A frame stream the worker cannot continue (QEMU and the worker disagree on the framing). */
export class FrameError extends Error {}

/**
 * Splits QEMU's `-netdev stream` byte stream into Ethernet frames: each is a 4-byte big-endian
 * length + the frame. A frame within one chunk is handed on as a view of the chunk (no copy);
 * only a frame split across chunks is copied once. A length outside [14, MAX_FRAME] means the
 * stream is out of step and cannot be resynchronised: push() throws FrameError then.
 */
export class FrameReader {
  private header = Buffer.alloc(4);
  private headerHave = 0;
  /** Length of the frame being assembled, 0 while reading a header. */
  private need = 0;
  private parts: Buffer[] = [];
  private have = 0;
  private failed = false;

  constructor(private readonly onFrame: (frame: Buffer) => void) {}

  push(chunk: Buffer): void {
    if (this.failed) throw new FrameError('frame stream already failed');
    let off = 0;
    while (off < chunk.length) {
      if (this.need === 0) {
        // Fast path: a whole header in this chunk.
        if (this.headerHave === 0 && chunk.length - off >= 4) {
          this.start(chunk.readUInt32BE(off));
          off += 4;
        } else {
          const n = Math.min(4 - this.headerHave, chunk.length - off);
          chunk.copy(this.header, this.headerHave, off, off + n);
          this.headerHave += n;
          off += n;
          if (this.headerHave < 4) return;
          this.headerHave = 0;
          this.start(this.header.readUInt32BE(0));
        }
        continue;
      }
      const want = this.need - this.have;
      if (this.have === 0 && chunk.length - off >= want) {
        const frame = chunk.subarray(off, off + want);
        off += want;
        this.need = 0;
        this.onFrame(frame);
        continue;
      }
      const n = Math.min(want, chunk.length - off);
      this.parts.push(chunk.subarray(off, off + n));
      this.have += n;
      off += n;
      if (this.have === this.need) {
        const frame = Buffer.concat(this.parts, this.have);
        this.parts = [];
        this.have = 0;
        this.need = 0;
        this.onFrame(frame);
      }
    }
  }

  private start(len: number): void {
    if (len < ETH_HEADER || len > MAX_FRAME) {
      this.failed = true;
      throw new FrameError(`bad frame length ${len} from the VM's NIC (expected ${ETH_HEADER}..${MAX_FRAME})`);
    }
    this.need = len;
  }

  /** Bytes of an unfinished frame held (bounded by MAX_FRAME). */
  get buffered(): number {
    return this.have + this.headerHave;
  }
}

/** The 4-byte big-endian length prefix of one frame. */
export function frameHeader(len: number): Buffer {
  const h = Buffer.allocUnsafe(4);
  h.writeUInt32BE(len, 0);
  return h;
}

/** Longest tunnel header line accepted (`PORT 65535\n` is 11 bytes). */
const MAX_TUNNEL_HEADER = 64;
const TUNNEL_HEADER_TIMEOUT_MS = 10_000;

/** Parses `PORT <n>` (without the newline); undefined for anything else. */
export function parseTunnelHeader(line: string): number | undefined {
  const m = /^PORT ([0-9]{1,5})$/.exec(line);
  if (!m) return undefined;
  const port = Number(m[1]);
  return port >= 1 && port <= 65535 ? port : undefined;
}

/** Idle published-UDP client mappings are dropped after this long. */
const UDP_CLIENT_IDLE_MS = 60_000;
/** Clients per published UDP port; the oldest mapping goes beyond it. */
const UDP_CLIENTS_PER_PORT = 256;
/** Bytes waiting for QEMU to read beyond which the stack stops sending data segments. */
const QEMU_HIGH_WATER = 4 * 1024 * 1024;
/**
 * Bytes waiting for QEMU to read beyond which frames towards the guest are dropped (counted in
 * droppedFrames; the stack's retransmission recovers them): the last bound if what the stack
 * still sends while blocked (ACKs, ARP, ICMP, UDP) piles up behind a guest that stopped reading.
 */
const MAX_QEMU_BACKLOG = 64 * 1024 * 1024;
/** The worker's log rate: LOG_BURST lines per LOG_WINDOW_MS, the rest counted and summarised. */
const LOG_BURST = 200;
const LOG_WINDOW_MS = 10_000;
/** Stack timer period: RTO, zero-window probes, SYN verdict timeouts, idle flows. */
const TICK_MS = 20;

class NetWorker {
  private readonly counters: BigInt64Array;
  private readonly stack: NetStack;
  private readonly handler: ReturnType<typeof createFlowHandler>;
  private readonly interceptor?: SecretInterceptor;
  private readonly caPem?: string;
  private qemu?: net.Socket;
  private corked = false;
  private linkBlocked = false;
  private readonly servers: Array<net.Server | dgram.Socket> = [];
  private nicServer?: net.Server;
  private tunnelServer?: net.Server;
  private ticker?: NodeJS.Timeout;
  private closed = false;

  constructor(
    private readonly config: NetConfig,
    counters: SharedArrayBuffer,
    private readonly post: (m: WorkerMessage) => void,
  ) {
    this.counters = new BigInt64Array(counters);
    const log = this.log;
    const dialer = createDialer(config.testSeam);
    const policy = new NetPolicy(config.allowNet);
    if (config.secrets.length) {
      // A CA per boot, its key only in this thread's memory (part C).
      const ca = createBoxCa();
      this.caPem = ca.certPem;
      // policy + link: the interceptor refuses the addresses the dispatcher refuses.
      this.interceptor = new SecretInterceptor({ secrets: config.secrets, ca, dialer, counters: this.counters, log, policy, link: config.link });
    }
    this.handler = createFlowHandler({
      link: config.link,
      policy,
      dialer,
      counters: this.counters,
      ...(this.interceptor ? { interceptor: this.interceptor } : {}),
      log,
    });
    this.stack = new NetStack({
      link: config.link,
      handler: this.handler,
      send: (frame) => this.sendFrame(frame),
      counters: this.counters,
      log,
    });
  }

  private logWindowStart = 0;
  private logLines = 0;
  private logSuppressed = 0;
  /**
   * Log lines to the shim log, at most LOG_BURST per LOG_WINDOW_MS: every refused flow is
   * logged, and a guest that floods refused flows must not fill the host's disk.
   */
  private readonly log = (line: string) => {
    const now = Date.now();
    if (now - this.logWindowStart >= LOG_WINDOW_MS) {
      if (this.logSuppressed) this.post({ type: 'log', line: `(${this.logSuppressed} network log lines suppressed)` });
      this.logWindowStart = now;
      this.logLines = 0;
      this.logSuppressed = 0;
    }
    if (++this.logLines > LOG_BURST) {
      this.logSuppressed++;
      return;
    }
    this.post({ type: 'log', line: line.length > 1000 ? `${line.slice(0, 1000)}…` : line });
  };

  private add(slot: number, n: number): void {
    Atomics.add(this.counters, slot, BigInt(n));
  }

  /**
   * One frame to QEMU. Frames produced in one turn of the event loop go out in one writev
   * (cork until the next tick); QEMU applies the back-pressure (it stops reading while the
   * guest's receive ring is full) and the stack never sends beyond the guest's TCP window,
   * so what waits here is bounded by the windows.
   */
  private sendFrame(frame: Buffer): void {
    const s = this.qemu;
    if (!s || s.destroyed || s.writableLength > MAX_QEMU_BACKLOG) {
      // Before QEMU connects, after it left, or while the guest does not drain its ring: a
      // lossy moment of the link that TCP retransmits over.
      this.add(COUNTER.droppedFrames, 1);
      return;
    }
    if (!this.corked) {
      this.corked = true;
      s.cork();
      process.nextTick(() => {
        this.corked = false;
        s.uncork();
      });
    }
    s.write(frameHeader(frame.length));
    s.write(frame);
    if (!this.linkBlocked && s.writableLength > QEMU_HIGH_WATER) {
      // The guest is not draining its NIC: hold the stack's data segments (pure ACKs still go)
      // until QEMU has read what waits.
      this.linkBlocked = true;
      this.stack.setLinkBlocked(true);
      s.once('drain', () => {
        this.linkBlocked = false;
        this.safe('drain', () => this.stack.setLinkBlocked(false));
      });
    }
  }

  async start(): Promise<void> {
    const ports = await this.bindPorts();
    await this.listenNic();
    await this.listenTunnels();
    this.ticker = setInterval(() => this.safe('tick', () => this.stack.tick()), TICK_MS);
    this.post({ type: 'ready', ports, ...(this.caPem ? { caPem: this.caPem } : {}) });
  }

  /** Runs stack code from a timer or socket handler; a throw there is a bug → fatal, not a crash mid-flight. */
  private safe(what: string, fn: () => void): void {
    try {
      fn();
    } catch (err) {
      this.fatal(`network stack failed in ${what}: ${(err as Error).message}`);
    }
  }

  fatal(message: string): void {
    if (this.closed) return;
    this.post({ type: 'fatal', message });
    this.close();
  }

  /** QEMU connects once; a second connection (nobody else should have the path) is refused. */
  private listenNic(): Promise<void> {
    const server = net.createServer({ noDelay: true } as net.ServerOpts, (socket) => {
      if (this.qemu) {
        this.log('refusing a second connection to the NIC socket');
        socket.destroy();
        return;
      }
      this.qemu = socket;
      this.log('VM NIC connected');
      const reader = new FrameReader((frame) => this.stack.input(frame));
      socket.on('data', (chunk: Buffer) => {
        try {
          reader.push(chunk);
        } catch (err) {
          this.fatal(err instanceof FrameError ? err.message : `network stack failed on a guest frame: ${(err as Error).message}`);
        }
      });
      socket.on('error', (err) => this.log(`NIC socket error: ${err.message}`));
      // QEMU leaves with the VM; the shim ends the box for that reason, not this one.
      socket.on('close', () => this.log('VM NIC disconnected'));
    });
    this.nicServer = server;
    return listenUnix(server, this.config.socketPath);
  }

  private async listenTunnels(): Promise<void> {
    const server = net.createServer({ allowHalfOpen: true }, (socket) => this.tunnel(socket));
    this.tunnelServer = server;
    await listenUnix(server, this.config.tunnelSocketPath);
    // Only the box's owner may open connections into the box (the box dir is the owner's too).
    fs.chmodSync(this.config.tunnelSocketPath, 0o600);
  }

  private tunnel(socket: net.Socket): void {
    socket.on('error', () => socket.destroy());
    let head = Buffer.alloc(0);
    const timer = setTimeout(() => socket.destroy(), TUNNEL_HEADER_TIMEOUT_MS);
    const onData = (chunk: Buffer) => {
      head = Buffer.concat([head, chunk]);
      const nl = head.indexOf(0x0a);
      if (nl < 0) {
        if (head.length > MAX_TUNNEL_HEADER) {
          clearTimeout(timer);
          socket.off('data', onData);
          socket.end('ERR header line too long\n');
        }
        return;
      }
      clearTimeout(timer);
      socket.off('data', onData);
      socket.pause();
      const line = head.subarray(0, nl).toString('latin1');
      const rest = head.subarray(nl + 1);
      if (line === 'CRASH' && this.config.testSeam) {
        // @internal Test seam only: proves a worker crash ends the box with a network error.
        setImmediate(() => {
          throw new Error('test seam: network worker crash requested');
        });
        return;
      }
      const port = parseTunnelHeader(line);
      if (port === undefined) {
        socket.end('ERR expected "PORT <1-65535>"\n');
        return;
      }
      this.stack.connectToGuest(port).then(
        (guest) => {
          if (socket.destroyed) return guest.reset();
          socket.write('OK\n');
          if (rest.length) guest.write(rest);
          this.splice(socket, guest);
        },
        (err: Error) => {
          if (!socket.destroyed) socket.end(`ERR ${oneLine(err.message)}\n`);
        },
      );
    };
    socket.on('data', onData);
  }

  /**
   * Pipes a host socket and a guest stream both ways with back-pressure and half-close: a FIN
   * either way is passed on, an error either way resets the other side. Bytes count as the
   * box's traffic (sent = guest → host).
   */
  private splice(host: net.Socket, guest: GuestStream): void {
    guest.on('data', (c: Buffer) => this.add(COUNTER.bytesSent, c.length));
    host.on('data', (c: Buffer) => this.add(COUNTER.bytesReceived, c.length));
    host.pipe(guest);
    guest.pipe(host);
    host.on('error', () => guest.reset());
    guest.on('error', () => {
      if (!host.destroyed) host.resetAndDestroy();
    });
    host.on('close', () => {
      if (!guest.destroyed && !guest.writableFinished) guest.end();
    });
    host.resume();
  }

  private async bindPorts(): Promise<PublishedNetPort[]> {
    const out: PublishedNetPort[] = [];
    for (const p of this.config.ports) {
      const hostIp = p.hostIp || '0.0.0.0';
      if (p.protocol === 'udp') out.push({ ...p, hostIp, hostPort: await this.bindUdp(hostIp, p.hostPort, p.guestPort) });
      else out.push({ ...p, hostIp, hostPort: await this.bindTcp(hostIp, p.hostPort, p.guestPort) });
    }
    return out;
  }

  private bindTcp(host: string, port: number, guestPort: number): Promise<number> {
    const server = net.createServer({ allowHalfOpen: true, pauseOnConnect: true }, (socket) => {
      socket.on('error', () => socket.destroy());
      this.stack.connectToGuest(guestPort).then(
        (guest) => {
          if (socket.destroyed) return guest.reset();
          this.splice(socket, guest);
        },
        // Nothing listens in the guest (RST) or it does not answer: the host client sees a reset,
        // as it would connecting to a closed port.
        () => {
          if (!socket.destroyed) socket.resetAndDestroy();
        },
      );
    });
    this.servers.push(server);
    return new Promise((resolve, reject) => {
      server.once('error', (err) => reject(bindError('tcp', host, port, err as NodeJS.ErrnoException)));
      server.listen({ host, port, exclusive: true }, () => {
        server.removeAllListeners('error');
        server.on('error', (err) => this.log(`port ${host}:${port}/tcp: ${err.message}`));
        resolve((server.address() as net.AddressInfo).port);
      });
    });
  }

  private bindUdp(host: string, port: number, guestPort: number): Promise<number> {
    const socket = dgram.createSocket({ type: 'udp4', reuseAddr: false });
    this.servers.push(socket);
    // One stack UDP flow per host client address, so the guest's replies find their client.
    const clients = new Map<string, { flow: ReturnType<NetStack['openUdpToGuest']>; last: number }>();
    const sweep = setInterval(() => {
      const now = Date.now();
      for (const [k, c] of clients) {
        if (now - c.last > UDP_CLIENT_IDLE_MS) {
          c.flow.close();
          clients.delete(k);
        }
      }
    }, 10_000);
    sweep.unref();
    socket.on('close', () => {
      clearInterval(sweep);
      for (const c of clients.values()) c.flow.close();
      clients.clear();
    });
    let refusedLogged = 0;
    socket.on('message', (msg, rinfo) => {
      this.safe('udp port', () => {
        const key = `${rinfo.address}:${rinfo.port}`;
        let c = clients.get(key);
        if (!c) {
          if (clients.size >= UDP_CLIENTS_PER_PORT) {
            const [oldest, o] = clients.entries().next().value as [string, { flow: { close(): void } }];
            o.flow.close();
            clients.delete(oldest);
          }
          let flow: ReturnType<NetStack['openUdpToGuest']>;
          try {
            flow = this.stack.openUdpToGuest(guestPort, (reply) => {
              this.add(COUNTER.bytesSent, reply.length);
              try {
                socket.send(reply, rinfo.port, rinfo.address);
              } catch {
                // the port is closing
              }
            });
          } catch (err) {
            // The stack's UDP flow cap (shared with the guest's own flows): a flood of host
            // clients loses datagrams, it does not end the box.
            this.add(COUNTER.droppedFrames, 1);
            if (Date.now() - refusedLogged > 10_000) {
              refusedLogged = Date.now();
              this.log(`port ${host}:${port}/udp: datagram from ${key} dropped: ${(err as Error).message}`);
            }
            return;
          }
          c = { flow, last: 0 };
          clients.set(key, c);
        } else {
          // Map order = recency, for the eviction above.
          clients.delete(key);
          clients.set(key, c);
        }
        c.last = Date.now();
        this.add(COUNTER.bytesReceived, msg.length);
        c.flow.send(msg);
      });
    });
    return new Promise((resolve, reject) => {
      socket.once('error', (err) => reject(bindError('udp', host, port, err as NodeJS.ErrnoException)));
      socket.bind({ address: host, port, exclusive: true }, () => {
        socket.removeAllListeners('error');
        socket.on('error', (err) => this.log(`port ${host}:${port}/udp: ${err.message}`));
        resolve(socket.address().port);
      });
    });
  }

  snapshot(): unknown {
    return {
      stack: this.stack.stats(),
      flows: this.handler.snapshot(),
      qemuWriteQueue: this.qemu?.writableLength ?? 0,
      memory: process.memoryUsage(),
    };
  }

  close(): void {
    if (this.closed) return;
    this.closed = true;
    clearInterval(this.ticker);
    for (const s of this.servers) {
      try {
        s.close();
      } catch {
        // already closed
      }
    }
    this.nicServer?.close();
    this.tunnelServer?.close();
    this.qemu?.destroy();
    for (const f of [this.config.socketPath, this.config.tunnelSocketPath]) fs.rmSync(f, { force: true });
    for (const c of [() => this.handler.close(), () => this.interceptor?.close(), () => this.stack.close()]) {
      try {
        c();
      } catch {
        // closing: nothing left to tell
      }
    }
  }
}

function oneLine(s: string): string {
  return s.replace(/[\r\n]+/g, ' ').slice(0, 200);
}

/** A published port the worker cannot bind: the message the shim turns into a NetworkError. */
class BindError extends Error {}

function bindError(proto: 'tcp' | 'udp', host: string, port: number, err: NodeJS.ErrnoException): BindError {
  const what = port ? `host port ${port}` : `a free ${proto} port on ${host}`;
  switch (err.code) {
    case 'EADDRINUSE':
      return new BindError(`host port ${port} is already in use (${proto}, ${host})`);
    case 'EACCES':
      return new BindError(`cannot bind ${what} (${proto}, ${host}): permission denied`);
    case 'EADDRNOTAVAIL':
      return new BindError(`cannot bind ${what}: host address ${host} is not available`);
    default:
      return new BindError(`cannot bind ${what} (${proto}, ${host}): ${err.message}`);
  }
}

/** Listens on a unix socket, removing a stale one a crashed shim left behind first. */
function listenUnix(server: net.Server, socketPath: string): Promise<void> {
  fs.rmSync(socketPath, { force: true });
  return new Promise((resolve, reject) => {
    server.once('error', reject);
    server.listen(socketPath, () => {
      server.off('error', reject);
      resolve();
    });
  });
}

export function runWorker(init: WorkerInit): void {
  const port = parentPort!;
  const post = (m: WorkerMessage) => port.postMessage(m);
  let worker: NetWorker | undefined;
  try {
    worker = new NetWorker(init.config, init.counters, post);
  } catch (err) {
    post({ type: 'fatal', message: `network stack could not start: ${(err as Error).message}` });
    return;
  }
  port.on('message', (m: ParentMessage) => {
    if (m.type === 'snapshot') post({ type: 'snapshot', id: m.id, data: worker!.snapshot() });
    else if (m.type === 'stop') {
      worker!.close();
      port.close();
    }
  });
  worker.start().catch((err: Error) => worker!.fatal(err.message));
}

if (!isMainThread && (workerData as WorkerInit | undefined)?.kind === 'boxlite-net') runWorker(workerData as WorkerInit);
