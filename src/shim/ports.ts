// Host side of port publishing for a slirp NIC (BOXLITE_NET=slirp only; the box's own stack
// binds its ports itself in src/net/worker.ts, port 0 included, with no probe race, and reports
// the same PublishedPort shape). QEMU's slirp binds the host ports itself (hostfwd) and cannot
// report a port the OS picked, so the shim picks free ports first (bind 0, read, close: a small
// race with other processes is accepted) and probes explicit ones by binding them, so a busy
// port is a clear NetworkError before QEMU starts rather than a QEMU boot failure.
import dgram from 'node:dgram';
import net from 'node:net';
import { NetworkError } from '../errors/index.js';
import type { PortForward } from '../vmm/qemu.js';

/** One published port as `info().network.publishedPorts` reports it. */
export interface PublishedPort {
  guestPort: number;
  hostIp: string;
  hostPort: number;
  protocol: 'tcp' | 'udp';
}

interface Held {
  port: number;
  close(): Promise<void>;
}

function bindTcp(host: string, port: number): Promise<Held> {
  return new Promise((resolve, reject) => {
    const server = net.createServer();
    server.once('error', reject);
    // exclusive: never share the port with a cluster master; no reuse with another listener.
    server.listen({ host, port, exclusive: true }, () => {
      server.off('error', reject);
      const addr = server.address() as net.AddressInfo;
      resolve({ port: addr.port, close: () => new Promise((r) => server.close(() => r())) });
    });
  });
}

function bindUdp(host: string, port: number): Promise<Held> {
  return new Promise((resolve, reject) => {
    const socket = dgram.createSocket({ type: 'udp4', reuseAddr: false });
    socket.once('error', reject);
    socket.bind({ address: host, port, exclusive: true }, () => {
      socket.off('error', reject);
      resolve({ port: socket.address().port, close: () => new Promise((r) => socket.close(() => r())) });
    });
  });
}

function bindError(f: PortForward, host: string, err: NodeJS.ErrnoException): NetworkError {
  const what = f.hostPort ? `host port ${f.hostPort}` : `a free ${f.protocol} port on ${host}`;
  switch (err.code) {
    case 'EADDRINUSE':
      return new NetworkError(`host port ${f.hostPort} is already in use (${f.protocol}, ${host})`);
    case 'EACCES':
      return new NetworkError(`cannot bind ${what} (${f.protocol}, ${host}): permission denied`);
    case 'EADDRNOTAVAIL':
      return new NetworkError(`cannot bind ${what}: host address ${host} is not available`);
    default:
      return new NetworkError(`cannot bind ${what} (${f.protocol}, ${host}): ${err.message}`);
  }
}

/**
 * Resolves hostPort 0 to a free port and checks that every explicit host port can be bound.
 * All probe sockets are held until every port is resolved (so two "any" ports never get the
 * same number), then released for QEMU to bind.
 */
export async function resolveHostPorts(forwards: readonly PortForward[]): Promise<PortForward[]> {
  const held: Held[] = [];
  try {
    const out: PortForward[] = [];
    for (const f of forwards) {
      const host = f.hostAddress || '0.0.0.0';
      let h: Held;
      try {
        h = await (f.protocol === 'udp' ? bindUdp : bindTcp)(host, f.hostPort);
      } catch (err) {
        throw bindError(f, host, err as NodeJS.ErrnoException);
      }
      held.push(h);
      out.push({ ...f, hostPort: h.port });
    }
    return out;
  } finally {
    await Promise.all(held.map((h) => h.close()));
  }
}

export function publishedPorts(forwards: readonly PortForward[]): PublishedPort[] {
  return forwards.map((f) => ({
    guestPort: f.guestPort,
    hostIp: f.hostAddress || '0.0.0.0',
    hostPort: f.hostPort,
    protocol: f.protocol,
  }));
}

/**
 * QEMU exits during boot when slirp cannot bind a forwarded port (someone took it after the
 * probe). Its stderr then says e.g. `Could not set up host forwarding rule 'tcp:127.0.0.1:8080-:80'`;
 * that is a NetworkError naming the port, not an engine failure.
 */
export function hostForwardFailure(qemuLog: string): NetworkError | undefined {
  const m = /Could not set up host forwarding rule '([^']*)'/.exec(qemuLog);
  if (!m) return undefined;
  const rule = /^(tcp|udp)?:([^:]*):(\d+)-/.exec(m[1]!);
  const port = rule ? rule[3] : '?';
  return new NetworkError(`host port ${port} is already in use (QEMU could not set up host forwarding rule '${m[1]}')`);
}
