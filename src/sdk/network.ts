// Tunnels into a box, as the reference's types have them: `box.network.tunnel(port)` →
// a one-shot BoxTunnel whose connect() gives one byte stream (read/write/shutdownWrite/close)
// to a port in the guest, or whose forward(listen) serves a local listener, each accepted
// connection its own stream. Locally, a tunnel is a connection to the box's tunnel socket
// (boxes/<id>/tunnel.sock, served by the shim's network worker, src/net/worker.ts): one header
// line `PORT <n>\n`, answered `OK\n` or `ERR <message>\n`, then the guest connection's bytes.
// Nothing is published on a host port unless forward() is asked for it.
import fs from 'node:fs';
import net from 'node:net';
import type { Box } from '../runtime/box.js';
import { InvalidArgumentError, InvalidStateError, NetworkError } from '../errors/index.js';
import type { BoxConnection, BoxNetworkHandle, BoxTunnelHandle, SocketAddress, TunnelForwarderHandle } from '../runtime/handles.js';

export type { SocketAddress, BoxConnection } from '../runtime/handles.js';

/** Bound on the worker's answer to a tunnel header (it connects to the guest port first). */
const TUNNEL_OPEN_TIMEOUT_MS = 30_000;
/** A connection's bytes read ahead of read() calls before the socket is paused. */
const READ_AHEAD = 1 << 20;

function checkPort(port: number): void {
  if (!Number.isInteger(port) || port < 1 || port > 65535) {
    throw new RangeError('port must be an integer between 1 and 65535');
  }
}

/**
 * Opens one tunnel: connects to the box's tunnel socket and asks for `port`. Resolves with the
 * socket (paused, header answered) and any guest bytes that came with the answer.
 */
export function openTunnel(socketPath: string, port: number, timeoutMs = TUNNEL_OPEN_TIMEOUT_MS): Promise<{ socket: net.Socket; head: Buffer }> {
  return new Promise((resolve, reject) => {
    const socket = net.createConnection({ path: socketPath, allowHalfOpen: true });
    let buf = Buffer.alloc(0);
    let done = false;
    const fail = (err: Error) => {
      if (done) return;
      done = true;
      clearTimeout(timer);
      socket.destroy();
      reject(err);
    };
    const timer = setTimeout(() => fail(new NetworkError(`tunnel to guest port ${port}: no answer within ${timeoutMs} ms`)), timeoutMs);
    socket.once('connect', () => socket.write(`PORT ${port}\n`));
    socket.on('error', (err: NodeJS.ErrnoException) =>
      fail(
        new NetworkError(
          err.code === 'ENOENT' || err.code === 'ECONNREFUSED'
            ? `tunnel to guest port ${port}: the box's network is not running (${err.code})`
            : `tunnel to guest port ${port}: ${err.message}`,
        ),
      ),
    );
    socket.on('end', () => fail(new NetworkError(`tunnel to guest port ${port}: the box closed the tunnel before answering`)));
    const onData = (chunk: Buffer) => {
      buf = Buffer.concat([buf, chunk]);
      const nl = buf.indexOf(0x0a);
      if (nl < 0) {
        if (buf.length > 512) fail(new NetworkError(`tunnel to guest port ${port}: malformed answer from the box`));
        return;
      }
      const line = buf.subarray(0, nl).toString('utf8');
      if (line !== 'OK') {
        return fail(new NetworkError(`tunnel to guest port ${port}: ${line.startsWith('ERR ') ? line.slice(4) : 'malformed answer from the box'}`));
      }
      done = true;
      clearTimeout(timer);
      socket.off('data', onData);
      socket.removeAllListeners('end');
      socket.removeAllListeners('error');
      socket.pause();
      resolve({ socket, head: buf.subarray(nl + 1) });
    };
    socket.on('data', onData);
  });
}

/** `NativeBoxConnection` over a tunnel socket: pull-style reads, awaited writes. */
export class TunnelConnection implements BoxConnection {
  private readonly queue: Buffer[] = [];
  private queued = 0;
  private ended = false;
  private error?: Error;
  private waiter?: () => void;

  /** @internal */
  constructor(
    private readonly socket: net.Socket,
    head: Buffer,
    private readonly port: number,
  ) {
    if (head.length) this.push(head);
    socket.on('data', (c: Buffer) => this.push(c));
    socket.on('end', () => {
      this.ended = true;
      this.wake();
    });
    socket.on('error', (err) => {
      this.error = new NetworkError(`tunnel to guest port ${port}: ${err.message}`);
      this.wake();
    });
    socket.on('close', () => {
      this.ended = true;
      this.wake();
    });
    socket.resume();
  }

  private push(c: Buffer): void {
    this.queue.push(c);
    this.queued += c.length;
    if (this.queued >= READ_AHEAD) this.socket.pause();
    this.wake();
  }

  private wake(): void {
    const w = this.waiter;
    this.waiter = undefined;
    w?.();
  }

  /** Up to maxBytes of what the guest sent; an empty Buffer once it closed its side. */
  async read(maxBytes: number): Promise<Buffer> {
    if (!Number.isInteger(maxBytes) || maxBytes < 1) throw new InvalidArgumentError('read: maxBytes must be a positive integer');
    while (!this.queue.length) {
      if (this.error) throw this.error;
      if (this.ended) return Buffer.alloc(0);
      await new Promise<void>((r) => (this.waiter = r));
    }
    const first = this.queue[0]!;
    let out: Buffer;
    if (first.length <= maxBytes) {
      out = first;
      this.queue.shift();
    } else {
      out = first.subarray(0, maxBytes);
      this.queue[0] = first.subarray(maxBytes);
    }
    this.queued -= out.length;
    if (this.queued < READ_AHEAD && !this.ended) this.socket.resume();
    return out;
  }

  /** Resolves with the byte count once the bytes are handed to the box. */
  write(data: Buffer): Promise<number> {
    if (this.error) return Promise.reject(this.error);
    if (this.socket.destroyed || this.socket.writableEnded) {
      return Promise.reject(new InvalidStateError(`tunnel to guest port ${this.port}: the connection is closed for writing`));
    }
    const buf = Buffer.from(data);
    return new Promise((resolve, reject) => {
      this.socket.write(buf, (err) => (err ? reject(new NetworkError(`tunnel to guest port ${this.port}: ${err.message}`)) : resolve(buf.length)));
    });
  }

  /** Sends FIN to the guest; reading goes on until the guest closes its side. */
  shutdownWrite(): Promise<void> {
    if (this.socket.destroyed || this.socket.writableEnded) return Promise.resolve();
    return new Promise((resolve) => this.socket.end(() => resolve()));
  }

  close(): Promise<void> {
    if (this.socket.destroyed) return Promise.resolve();
    return new Promise((resolve) => {
      this.socket.once('close', () => resolve());
      this.socket.destroy();
    });
  }
}

/** `NativeTunnelForwarder`: a local listener whose every connection is a tunnel to the port. */
export class LocalTunnelForwarder implements TunnelForwarderHandle {
  private readonly sockets = new Set<net.Socket>();
  private readonly closed: Promise<void>;

  /** @internal */
  constructor(
    private readonly server: net.Server,
    private readonly addr: SocketAddress,
  ) {
    this.closed = new Promise((r) => server.once('close', () => r()));
  }

  /** @internal */
  track(s: net.Socket): void {
    this.sockets.add(s);
    s.once('close', () => this.sockets.delete(s));
  }

  localAddr(): SocketAddress {
    return { ...this.addr };
  }

  /** Resolves once the forwarder is closed. */
  wait(): Promise<void> {
    return this.closed;
  }

  async close(): Promise<void> {
    this.server.close();
    for (const s of this.sockets) s.destroy();
    if (this.addr.type === 'unix') fs.rmSync(this.addr.path, { force: true });
    await this.closed;
  }
}

/**
 * Opens one connection of a tunnel: the socket (paused, past its handshake) and any guest bytes
 * that came with the answer. A remote (REST) tunnel is one of these instead of a socket path.
 */
export type TunnelOpener = () => Promise<{ socket: net.Socket; head: Buffer }>;

/**
 * The reference's `JsBoxTunnel` (native-contracts `NativeBoxTunnel`): prepared for one guest
 * port of one box, consumed by connect() or forward(). Local tunnels have no URI.
 */
export class JsBoxTunnel implements BoxTunnelHandle {
  private consumed = false;

  /** @internal Made by `box.network.tunnel(port)`; `remote` by the REST client's. */
  constructor(
    private readonly socketPath?: string,
    private readonly port?: number,
    private readonly remote?: { open: TunnelOpener; uri: string },
  ) {}

  uri(): string | null {
    return this.remote?.uri ?? null;
  }

  private take(what: string): { open: TunnelOpener; port: number } {
    const { socketPath, port, remote } = this;
    if (port === undefined || (socketPath === undefined && !remote)) {
      throw new InvalidArgumentError(`BoxTunnel.${what}: make tunnels with box.network.tunnel(port)`);
    }
    if (this.consumed) throw new InvalidStateError(`BoxTunnel.${what}: the tunnel was already used (a tunnel is one-shot; ask box.network.tunnel(port) for another)`);
    this.consumed = true;
    return { open: remote?.open ?? (() => openTunnel(socketPath!, port)), port };
  }

  async connect(): Promise<BoxConnection> {
    const { open, port } = this.take('connect');
    const { socket, head } = await open();
    return new TunnelConnection(socket, head, port);
  }

  async forward(listen: SocketAddress): Promise<TunnelForwarderHandle> {
    const options = listenOptions(listen);
    const { open } = this.take('forward');
    const server = net.createServer({ allowHalfOpen: true, pauseOnConnect: true });
    let forwarder: LocalTunnelForwarder | undefined;
    server.on('connection', (local) => {
      forwarder?.track(local);
      local.on('error', () => local.destroy());
      open().then(
        ({ socket, head }) => {
          forwarder?.track(socket);
          if (local.destroyed) return socket.destroy();
          if (head.length) local.write(head);
          socket.on('error', () => local.resetAndDestroy());
          local.on('error', () => socket.destroy());
          local.pipe(socket);
          socket.pipe(local);
          socket.resume();
          local.resume();
        },
        // The guest port refused or the box is gone: the local client sees a reset, as for a closed port.
        () => {
          if (!local.destroyed) local.resetAndDestroy();
        },
      );
    });
    if (listen.type === 'unix') fs.rmSync(listen.path, { force: true });
    await new Promise<void>((resolve, reject) => {
      server.once('error', (err: NodeJS.ErrnoException) =>
        reject(new NetworkError(`tunnel forward: cannot listen on ${describe(listen)}: ${err.code === 'EADDRINUSE' ? 'address already in use' : err.message}`)),
      );
      server.listen(options, () => resolve());
    });
    server.removeAllListeners('error');
    const a = server.address();
    const addr: SocketAddress =
      listen.type === 'unix' ? { type: 'unix', path: listen.path } : { type: 'tcp', host: (a as net.AddressInfo).address, port: (a as net.AddressInfo).port };
    forwarder = new LocalTunnelForwarder(server, addr);
    return forwarder;
  }
}

function describe(a: SocketAddress): string {
  return a.type === 'unix' ? a.path : `${a.host ?? '127.0.0.1'}:${a.port}`;
}

function listenOptions(listen: SocketAddress): net.ListenOptions {
  if (!listen || typeof listen !== 'object') throw new InvalidArgumentError('forward: listen must be {type: "tcp", host?, port} or {type: "unix", path}');
  if (listen.type === 'unix') {
    if (typeof listen.path !== 'string' || !listen.path) throw new InvalidArgumentError('forward: listen.path must be a non-empty path');
    return { path: listen.path };
  }
  if (listen.type === 'tcp') {
    if (!Number.isInteger(listen.port) || listen.port < 0 || listen.port > 65535) {
      throw new InvalidArgumentError('forward: listen.port must be an integer between 0 and 65535');
    }
    // Loopback unless asked otherwise: a tunnel reaches into the box without any policy.
    return { host: listen.host ?? '127.0.0.1', port: listen.port, exclusive: true };
  }
  throw new InvalidArgumentError(`forward: listen.type must be "tcp" or "unix", got ${JSON.stringify((listen as { type?: unknown }).type)}`);
}

/** `box.network` of a Box (`JsNetworkHandle`): tunnels, on the box's tunnel socket. */
export class BoxNetwork implements BoxNetworkHandle {
  /** @internal `running` boots the box if needed and returns its tunnel socket path. */
  constructor(private readonly running: () => Promise<string>) {}

  async tunnel(port: number): Promise<JsBoxTunnel> {
    checkPort(port);
    return new JsBoxTunnel(await this.running(), port);
  }
}

/** Box-scoped network operations of a SimpleBox (`box.network`). */
export class NetworkHandle {
  /** @internal */
  constructor(private readonly ensureBox: () => Promise<Box>) {}

  /** Establish and return a one-shot tunnel for a port inside this box. */
  async tunnel(port: number): Promise<BoxTunnel> {
    checkPort(port);
    const box = await this.ensureBox();
    return new BoxTunnel(await box.network.tunnel(port));
  }
}

/** A local listener that forwards each connection through a tunnel. */
export class TunnelForwarder {
  constructor(private readonly forwarder: TunnelForwarderHandle) {}

  localAddr(): SocketAddress {
    return this.forwarder.localAddr();
  }

  wait(): Promise<void> {
    return this.forwarder.wait();
  }

  close(): Promise<void> {
    return this.forwarder.close();
  }
}

/** A prepared tunnel to a port in a box. */
export class BoxTunnel {
  /** Wrap a prepared native tunnel handle. */
  constructor(private readonly tunnel: BoxTunnelHandle) {}

  /** Public URL of a remotely served tunnel, or null for a local one. */
  uri(): string | null {
    return this.tunnel.uri();
  }

  /** Consume the tunnel and return its bidirectional byte stream. */
  async connect(): Promise<BoxConnection> {
    return this.tunnel.connect();
  }

  async forward(listen: SocketAddress): Promise<TunnelForwarder> {
    return new TunnelForwarder(await this.tunnel.forward(listen));
  }
}
