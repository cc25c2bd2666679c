// The contracts between the parts of the box's user-space network stack (src/net/). Each part
// owns its own file; they meet only through these types:
//
//   worker.ts   QEMU `-netdev stream` socket → length-prefixed Ethernet frames → NetStack,
//               published ports, the tunnel socket, counters (a worker thread of the shim)
//   stack.ts    NetStack: ARP, IPv4, ICMP echo, UDP demux, TCP (tcp.ts) over frames.ts
//   dispatch.ts FlowHandler: what happens to each guest flow (policy.ts, dns.ts, peek.ts,
//               mitm.ts for secret hosts), always through a Dialer
//   dialer.ts   the only code that opens host sockets for guest flows (real, or the test seam)
//
// One-way imports: worker → stack → tcp → frames; worker → dispatch → {policy, dns, peek, mitm,
// dialer}; everything may import types.ts; nothing in src/net imports shim/, runtime/ or sdk/.
import type { Duplex } from 'node:stream';
import type net from 'node:net';
import type dgram from 'node:dgram';

/** The guest-visible addressing of the virtual link (fixed: the guest needs no DHCP). */
export interface LinkAddressing {
  guestIp: string;
  /** Gateway and DNS server as the guest sees them. */
  gatewayIp: string;
  /** host.boxlite.internal: every port maps to the host's loopback. */
  hostAliasIp: string;
  prefixLength: number;
  /** The MAC QEMU gives the guest NIC (frames from any other source MAC are dropped). */
  guestMac: string;
  /** The MAC the stack answers ARP with for every address that is not the guest's. */
  gatewayMac: string;
  /** MTU of the virtual link (virtio-net host_mtu); the stack's own MSS is mtu - 40. */
  mtu: number;
}

/** One guest transport flow, addresses as dotted IPv4 strings. */
export interface FlowKey {
  proto: 'tcp' | 'udp';
  srcIp: string;
  srcPort: number;
  dstIp: string;
  dstPort: number;
}

/**
 * The guest side of one TCP connection as a Node Duplex: bytes written are sent to the guest
 * (respecting the guest's window: write() returns false and 'drain' follows, as for a socket),
 * bytes the guest sends are readable (the stack stops ACKing/opens no window while the reader
 * is paused), end() sends FIN, destroy() sends RST. 'end' = guest FIN; 'close' after both.
 * It can be handed to `new tls.TLSSocket(stream, { isServer: true })` or piped to a net.Socket.
 */
export interface GuestStream extends Duplex {
  readonly flow: FlowKey;
  /** Abort with RST towards the guest. */
  reset(): void;
}

/**
 * A guest SYN waiting for a verdict. The stack answers nothing until the handler calls one of
 * these: accept() sends SYN-ACK and returns the stream; reject('refused') sends RST, reject
 * ('unreachable') sends ICMP host unreachable. A verdict not given within the stack's SYN
 * timeout is a reject('unreachable').
 */
export interface PendingTcp {
  readonly flow: FlowKey;
  accept(): GuestStream;
  reject(how: 'refused' | 'unreachable'): void;
}

/** A UDP datagram from the guest; reply() sends one back with src/dst swapped. */
export interface GuestDatagram {
  readonly flow: FlowKey;
  readonly payload: Buffer;
  reply(payload: Buffer, from?: { ip: string; port: number }): void;
  /** ICMP port unreachable to the guest. */
  unreachable(): void;
}

/** What the stack calls for each new guest flow (dispatch.ts implements it). */
export interface FlowHandler {
  onTcp(pending: PendingTcp): void;
  onUdp(datagram: GuestDatagram): void;
}

/** The only way guest flows reach host sockets. */
export interface Dialer {
  /** IPv4 addresses of a name, resolved on the host (or from the test seam's name table). */
  resolve4(name: string): Promise<Array<{ address: string; ttl: number }>>;
  /** A TCP connection to ip:port; 'connect' has fired when the promise resolves. */
  connectTcp(ip: string, port: number, timeoutMs: number): Promise<net.Socket>;
  /** A UDP socket for datagrams to ip:port; send() through it only. */
  udp(ip: string, port: number): Promise<{ socket: dgram.Socket; address: string; port: number }>;
  /** Extra CA certificates (PEM) trusted for upstream TLS; the test seam's test CA. */
  readonly upstreamCa?: string[];
  /**
   * @internal Test seam only: true for the seam's own guest-visible addresses (198.18.0.0/15,
   * which stand for public servers), so policy.ts isDialableUpstream does not refuse them as private.
   */
  isSeamAddress?(ip: string): boolean;
}

/** A secret as the shim holds it (values never leave the host). */
export interface SecretSpec {
  name: string;
  value: string;
  /** Host patterns (exact or `*.wildcard`) whose HTTPS carries the substitution. */
  hosts: string[];
  placeholder: string;
}

/**
 * @internal Test seam (never public API): the shim resolves only from `names` and dials only
 * through `dial`; any other dial fails, so a test cannot send traffic off the machine.
 */
export interface NetTestSeam {
  /** name → guest-visible IPv4 addresses (198.18.0.0/15). */
  names: Record<string, string[]>;
  /** "ip:port" or "ip" (any port) → host address on 127.0.0.0/8, e.g. "127.0.0.1:43211". */
  dial: Record<string, string>;
  /** PEM CA certificates the test servers' TLS chains to. */
  upstreamCa?: string[];
}

/** The network part of the ShimConfig, handed to the worker. */
export interface NetConfig {
  link: LinkAddressing;
  /** boxes/<id>/net.sock: the worker listens, QEMU connects (`-netdev stream,server=off`). */
  socketPath: string;
  /** boxes/<id>/tunnel.sock: one connection per tunnel, see worker.ts for the header. */
  tunnelSocketPath: string;
  /** Validated allowNet patterns (policy.ts parses them); [] = everything allowed. */
  allowNet: string[];
  secrets: SecretSpec[];
  ports: Array<{ hostIp: string; hostPort: number; guestPort: number; protocol: 'tcp' | 'udp' }>;
  testSeam?: NetTestSeam;
}

/**
 * Counters shared between the worker and the shim as a BigInt64Array over a
 * SharedArrayBuffer, indexed by these slots (Atomics.add on the worker side).
 */
export const COUNTER = {
  bytesSent: 0, // payload bytes guest → upstream
  bytesReceived: 1, // payload bytes upstream → guest
  tcpConnections: 2, // guest TCP flows established upstream
  tcpErrors: 3, // refused, timed out, reset, blocked
  blockedFlows: 4,
  dnsQueries: 5,
  dnsNxdomain: 6,
  udpDatagrams: 7,
  droppedFrames: 8,
} as const;
export const COUNTER_SLOTS = 9;
