// NetStack: the box's end of the virtual Ethernet link. Frames from the guest come in through
// input(); everything the stack says goes out through `send`. It answers ARP for every address
// but the guest's, ICMP echo for the gateway and the host alias, hands each new TCP SYN and
// each UDP datagram to the FlowHandler (dispatch.ts) and runs the TCP connections (tcp.ts).
//
// The guest is hostile: input() never throws, every table is capped (StackLimits), anything
// malformed or not from the guest's MAC/IP is dropped and counted in COUNTER.droppedFrames.
//
// Ownership: input() keeps references into the frame it is given (TCP payloads reach the
// streams as subarrays, without a copy), so the caller must not reuse or overwrite a frame's
// bytes after handing it in.
import { NetworkError } from '../errors/index.js';
import { COUNTER, type FlowHandler, type FlowKey, type GuestDatagram, type GuestStream, type LinkAddressing, type PendingTcp } from './types.js';
import {
  buildArp,
  buildEchoReply,
  buildTcp,
  buildUdp,
  buildUnreachable,
  ETHERTYPE_ARP,
  ETHERTYPE_IPV4,
  ICMP_HOST_UNREACHABLE,
  ICMP_PORT_UNREACHABLE,
  intToIp,
  ipToInt,
  macToBuf,
  parseArp,
  parseEth,
  parseIcmp,
  parseIpv4,
  parseTcp,
  parseUdp,
  PROTO_ICMP,
  PROTO_TCP,
  PROTO_UDP,
  seqAdd,
  TCP_ACK,
  TCP_FIN,
  TCP_RST,
  TCP_SYN,
  type Ipv4Packet,
  type TcpSegment,
} from './frames.js';
import { isHalfOpen, TcpConnection, type TcpEnv, type TcpState } from './tcp.js';

export interface StackLimits {
  /** TCP connections in the table, TIME_WAIT included. */
  maxTcpFlows: number;
  /** Guest SYNs awaiting a verdict or the handshake's last ACK, plus our own open SYNs. */
  maxHalfOpen: number;
  /** Guest UDP flows remembered (within udpIdleMs; a full table evicts the least recently used) plus inbound (published-port) sessions. */
  maxUdpFlows: number;
  /** Bytes queued towards the guest beyond its window before the writer is held (write() → false). */
  maxBufferedPerFlow: number;
  /** Bytes in flight per flow, whatever window the guest advertises. */
  maxInFlightPerFlow: number;
  /** Bytes queued towards the guest over all flows (in flight + waiting) before every writer is held. */
  maxBufferedTotal: number;
  /** Verdict timeout for a guest SYN (then ICMP host unreachable) and handshake timeout for connectToGuest. */
  synTimeoutMs: number;
  /** Receive window per flow (the guest's bytes we buffer while the consumer is slow). */
  rcvBufferPerFlow: number;
  /** Unread guest bytes over all flows; beyond it every window shrinks to 16 KiB. */
  rcvBufferTotal: number;
  /** A UDP flow without traffic this long leaves the table. */
  udpIdleMs: number;
  timeWaitMs: number;
  rtoInitialMs: number;
  rtoMaxMs: number;
  rtoMaxRetries: number;
}

export const DEFAULT_LIMITS: Readonly<StackLimits> = {
  maxTcpFlows: 4096,
  maxHalfOpen: 256,
  maxUdpFlows: 1024,
  maxBufferedPerFlow: 256 * 1024,
  maxInFlightPerFlow: 4 * 1024 * 1024,
  maxBufferedTotal: 64 * 1024 * 1024,
  synTimeoutMs: 30_000,
  rcvBufferPerFlow: 256 * 1024,
  rcvBufferTotal: 64 * 1024 * 1024,
  udpIdleMs: 60_000,
  timeWaitMs: 2_000,
  rtoInitialMs: 1_000,
  rtoMaxMs: 30_000,
  rtoMaxRetries: 10,
};

export interface NetStackOptions {
  link: LinkAddressing;
  handler: FlowHandler;
  send: (frame: Buffer) => void;
  limits?: Partial<StackLimits>;
  /** COUNTER slots; the stack bumps droppedFrames. */
  counters?: BigInt64Array;
  log?: (line: string) => void;
  now?: () => number;
  /** Uniform in [0, 1) for sequence numbers and ports; tests seed it (default Math.random). */
  random?: () => number;
}

export interface StackStats {
  tcpFlows: number;
  halfOpen: number;
  udpFlows: number;
  /** Frames dropped (malformed, foreign, unsupported, over a cap) since start. */
  droppedFrames: number;
  /** Guest SYNs answered with RST because a cap was reached. */
  rejectedSyns: number;
  /** Guest UDP flows pushed out of a full table (least recently used first). */
  udpEvicted: number;
  /** Bytes queued towards the guest over all flows (bounded by maxBufferedTotal + one write per flow). */
  queuedBytes: number;
  /** Guest bytes buffered unread over all flows (bounded by about rcvBufferTotal + 16 KiB per flow). */
  receivedBytes: number;
}

const EPHEMERAL_LO = 49152;
const EPHEMERAL_N = 65536 - EPHEMERAL_LO;

/**
 * A UDP payload handed on: a view only when it is at least half the memory it pins (frames are
 * views of socket chunks; a queued 1-byte datagram must not hold a 64 KiB chunk), else a copy
 * with a backing store of its own (not a slab of Node's shared pool).
 */
function compact(frame: Buffer, off: number, end: number): Buffer {
  const len = end - off;
  if (len * 2 >= frame.buffer.byteLength) return frame.subarray(off, end);
  const b = Buffer.allocUnsafeSlow(len);
  frame.copy(b, 0, off, end);
  return b;
}

function tcpKey(remoteIp: number, remotePort: number, guestPort: number): string {
  return `${remoteIp}:${remotePort}:${guestPort}`;
}

export class NetStack {
  private readonly link: LinkAddressing;
  private readonly handler: FlowHandler;
  private readonly sendFrame: (frame: Buffer) => void;
  private readonly limits: StackLimits;
  private readonly counters?: BigInt64Array;
  private readonly log: (line: string) => void;
  private readonly now: () => number;
  private readonly guestIp: number;
  private readonly gatewayIp: number;
  private readonly hostAliasIp: number;
  private readonly netMask: number;
  private readonly guestMac: Buffer;
  private readonly gatewayMac: Buffer;
  private readonly tcpEnv: TcpEnv;

  private readonly tcp = new Map<string, TcpConnection>();
  private halfOpen = 0;
  /** Guest-initiated UDP flows → last datagram time. */
  private readonly udpFlows = new Map<string, number>();
  /** Published-port UDP sessions (openUdpToGuest), keyed like udpFlows. */
  private readonly inboundUdp = new Map<string, (payload: Buffer) => void>();
  private nextEphemeral: number;
  private lastUdpSweep = 0;
  private dropped = 0;
  private rejectedSyns = 0;
  private udpEvicted = 0;
  private closed = false;
  private linkBlocked = false;
  /** Connections whose writers wait for the total budget (maxBufferedTotal). */
  private readonly heldOnTotal = new Set<TcpConnection>();
  private waking = false;
  private sendFailed = false;

  constructor(opts: NetStackOptions) {
    this.link = opts.link;
    this.handler = opts.handler;
    this.sendFrame = opts.send;
    this.limits = { ...DEFAULT_LIMITS, ...opts.limits };
    this.counters = opts.counters;
    this.log = opts.log ?? (() => {});
    this.now = opts.now ?? Date.now;
    const random = opts.random ?? Math.random;
    this.nextEphemeral = Math.floor(random() * EPHEMERAL_N);
    this.guestIp = ipToInt(opts.link.guestIp);
    this.gatewayIp = ipToInt(opts.link.gatewayIp);
    this.hostAliasIp = ipToInt(opts.link.hostAliasIp);
    const p = opts.link.prefixLength;
    this.netMask = p <= 0 ? 0 : (0xffffffff << (32 - Math.min(32, p))) >>> 0;
    this.guestMac = macToBuf(opts.link.guestMac);
    this.gatewayMac = macToBuf(opts.link.gatewayMac);
    const l = this.limits;
    this.tcpEnv = {
      now: this.now,
      random,
      emit: (f) => this.emit(f),
      guestMac: this.guestMac,
      gatewayMac: this.gatewayMac,
      guestIp: this.guestIp,
      mss: Math.max(536, opts.link.mtu - 40),
      rcvBuffer: l.rcvBufferPerFlow,
      maxBuffered: l.maxBufferedPerFlow,
      maxInFlight: l.maxInFlightPerFlow,
      queued: { bytes: 0, max: l.maxBufferedTotal },
      received: { bytes: 0, max: l.rcvBufferTotal },
      onHeld: (c) => this.heldOnTotal.add(c),
      onFreed: () => this.wakeHeld(),
      linkBlocked: () => this.linkBlocked,
      writeHighWater: 64 * 1024,
      rto: { initialMs: l.rtoInitialMs, maxMs: l.rtoMaxMs, maxRetries: l.rtoMaxRetries },
      timeWaitMs: l.timeWaitMs,
      log: this.log,
      onState: (c, from, to) => this.onTcpState(c, from, to),
    };
  }

  // -------------------------------------------------------------------------------------------
  // Input

  /** One Ethernet frame from the guest. Never throws; malformed/foreign frames are counted and dropped. */
  input(frame: Buffer): void {
    if (this.closed) return;
    try {
      if (!this.dispatchFrame(frame)) this.drop();
    } catch (e) {
      // A bug of ours (or of a handler) must not take the worker down with a guest's frame.
      this.drop();
      this.log(`net stack: frame handling failed: ${(e as Error)?.message ?? String(e)}`);
    }
  }

  /** false = drop and count. */
  private dispatchFrame(frame: Buffer): boolean {
    const eth = parseEth(frame);
    if (!eth || !eth.src.equals(this.guestMac)) return false;
    if (eth.type === ETHERTYPE_ARP) return this.onArp(frame, eth.off);
    if (eth.type !== ETHERTYPE_IPV4) return false; // IPv6 and the rest: the link is IPv4 only
    const ip = parseIpv4(frame, eth.off);
    if (typeof ip === 'string') return false;
    if (ip.src !== this.guestIp || ip.fragment || ip.ttl === 0) return false;
    if (!this.unicastRemote(ip.dst)) return false;
    switch (ip.proto) {
      case PROTO_TCP: {
        const seg = parseTcp(frame, ip);
        return seg !== null && this.onTcp(frame, ip, seg);
      }
      case PROTO_UDP: {
        const udp = parseUdp(frame, ip);
        if (!udp || udp.srcPort === 0 || udp.dstPort === 0) return false;
        return this.onUdp(frame, ip, udp.srcPort, udp.dstPort, udp.payloadOff, udp.end);
      }
      case PROTO_ICMP:
        return this.onIcmp(frame, ip);
      default:
        return false;
    }
  }

  /** A destination a flow can go to: not the guest itself, broadcast, multicast, 0/8 or loopback. */
  private unicastRemote(dst: number): boolean {
    if (dst === this.guestIp) return false;
    const top = dst >>> 24;
    if (top === 0 || top === 127 || top >= 224) return false;
    const m = this.netMask;
    if (m !== 0 && m !== 0xffffffff && ((dst & ~m) >>> 0) === ((~m) >>> 0) && ((dst & m) >>> 0) === ((this.guestIp & m) >>> 0)) return false;
    return true;
  }

  private onArp(frame: Buffer, off: number): boolean {
    const arp = parseArp(frame, off);
    if (!arp) return false;
    if (arp.op === 2) return true; // a reply (to nobody: we never ask) or a gratuitous one
    if (arp.op !== 1) return false;
    // Requests from the guest's address for any other address (gateway, host alias, anything
    // off-link the guest thinks is on-link) resolve to us. A probe for the guest's own address
    // (duplicate address detection) gets no answer, so the guest keeps it.
    if (arp.senderIp !== this.guestIp || !arp.senderMac.equals(this.guestMac)) return false;
    if (arp.targetIp === this.guestIp) return true;
    this.emit(buildArp(2, this.guestMac, this.gatewayMac, arp.targetIp, this.guestMac, this.guestIp));
    return true;
  }

  private onIcmp(frame: Buffer, ip: Ipv4Packet): boolean {
    const icmp = parseIcmp(frame, ip);
    if (!icmp) return false;
    if (icmp.type === 8 && icmp.code === 0 && (ip.dst === this.gatewayIp || ip.dst === this.hostAliasIp)) {
      this.emit(buildEchoReply(frame, ip, icmp, this.guestMac, this.gatewayMac));
      return true;
    }
    return false; // echo to other hosts, and ICMP errors the guest sends about our segments
  }

  // -------------------------------------------------------------------------------------------
  // TCP

  private onTcp(frame: Buffer, ip: Ipv4Packet, seg: TcpSegment): boolean {
    if (seg.srcPort === 0 || seg.dstPort === 0) return false;
    const key = tcpKey(ip.dst, seg.dstPort, seg.srcPort);
    let conn = this.tcp.get(key);
    const syn = (seg.flags & (TCP_SYN | TCP_ACK | TCP_RST)) === TCP_SYN;
    if (conn && syn && conn.state === 'TIME_WAIT') {
      // A new incarnation of a closed pair (Linux reuses ports quickly): the old one is done.
      conn.forget();
      conn = undefined;
    }
    if (conn) {
      conn.segment(seg, frame);
      return true;
    }
    if (seg.flags & TCP_RST) return true; // never answer a RST
    if (!syn) {
      this.rstFor(ip, seg);
      return true;
    }
    const l = this.limits;
    if (this.tcp.size >= l.maxTcpFlows && this.halfOpen < l.maxHalfOpen) this.evictTimeWait();
    if (this.halfOpen >= l.maxHalfOpen || this.tcp.size >= l.maxTcpFlows) {
      this.rejectedSyns++;
      this.rstFor(ip, seg);
      return false;
    }
    const flow: FlowKey = { proto: 'tcp', srcIp: this.link.guestIp, srcPort: seg.srcPort, dstIp: intToIp(ip.dst), dstPort: seg.dstPort };
    conn = TcpConnection.fromSyn(this.tcpEnv, { flow, remoteIp: ip.dst, remotePort: seg.dstPort, guestPort: seg.srcPort }, seg, l.synTimeoutMs);
    this.tcp.set(key, conn);
    this.halfOpen++;
    // The quoted header for a later ICMP unreachable (the frame may be long gone by then).
    const quote = Buffer.from(frame.subarray(ip.off, Math.min(ip.end, ip.payloadOff + 8)));
    const c = conn;
    let decided = false;
    const pending: PendingTcp = {
      flow,
      accept: () => {
        const first = !decided;
        decided = true;
        const s = c.accept();
        if (first && c.state === 'SYN_RCVD') c.synDeadline = this.now() + l.synTimeoutMs;
        return s;
      },
      reject: (how) => {
        if (decided) {
          // A reject after accept: abort what was accepted.
          c.stream?.reset();
          return;
        }
        decided = true;
        if (c.state !== 'PENDING') return;
        if (how === 'unreachable') this.unreachableFor(c, quote);
        else c.refuse();
      },
    };
    conn.pendingVerdict = pending;
    try {
      this.handler.onTcp(pending);
    } catch (e) {
      this.log(`net stack: tcp handler failed for ${flow.dstIp}:${flow.dstPort}: ${(e as Error)?.message ?? String(e)}`);
      if (!decided) pending.reject('refused');
    }
    return true;
  }

  /** A full table makes room by dropping one TIME_WAIT connection (both sides are done with it). */
  private evictTimeWait(): void {
    for (const c of this.tcp.values()) {
      if (c.state === 'TIME_WAIT') {
        c.forget();
        return;
      }
    }
  }

  private unreachableFor(c: TcpConnection, quote: Buffer): void {
    this.emit(buildUnreachable(ICMP_HOST_UNREACHABLE, quote, this.gatewayIp, this.guestIp, this.guestMac, this.gatewayMac));
    c.shutdown(new NetworkError('destination unreachable'));
  }

  /** RST for a segment that belongs to no connection (RFC 793 "reset generation"). */
  private rstFor(ip: Ipv4Packet, seg: TcpSegment): void {
    const len = seg.end - seg.payloadOff + (seg.flags & TCP_SYN ? 1 : 0) + (seg.flags & TCP_FIN ? 1 : 0);
    const ack = (seg.flags & TCP_ACK) !== 0;
    this.emit(
      buildTcp({
        ethDst: this.guestMac,
        ethSrc: this.gatewayMac,
        src: ip.dst,
        dst: this.guestIp,
        srcPort: seg.dstPort,
        dstPort: seg.srcPort,
        seq: ack ? seg.ack : 0,
        ack: ack ? 0 : seqAdd(seg.seq, len),
        flags: ack ? TCP_RST : TCP_RST | TCP_ACK,
        window: 0,
      }),
    );
  }

  private onTcpState(c: TcpConnection, from: TcpState, to: TcpState): void {
    const was = isHalfOpen(from);
    const is = isHalfOpen(to);
    if (was && !is) this.halfOpen--;
    else if (!was && is) this.halfOpen++;
    if (to === 'CLOSED') {
      this.heldOnTotal.delete(c);
      const key = tcpKey(c.remoteIp, c.remotePort, c.guestPort);
      if (this.tcp.get(key) === c) this.tcp.delete(key);
    }
  }

  /** Active open towards the guest (published ports, tunnels). */
  connectToGuest(guestPort: number, from?: { ip: string; port?: number }): Promise<GuestStream> {
    if (this.closed) return Promise.reject(new NetworkError('network stack is closed'));
    if (!Number.isInteger(guestPort) || guestPort < 1 || guestPort > 65535) {
      return Promise.reject(new NetworkError(`invalid guest port ${String(guestPort)}`));
    }
    let remoteIp: number;
    try {
      remoteIp = ipToInt(from?.ip ?? this.link.gatewayIp);
    } catch {
      return Promise.reject(new NetworkError(`invalid source address ${String(from?.ip)}`));
    }
    const l = this.limits;
    if (this.tcp.size >= l.maxTcpFlows || this.halfOpen >= l.maxHalfOpen) {
      return Promise.reject(new NetworkError(`too many connections to the guest (limits: ${l.maxTcpFlows} flows, ${l.maxHalfOpen} opening)`));
    }
    let remotePort: number;
    if (from?.port !== undefined) {
      remotePort = from.port;
      if (!Number.isInteger(remotePort) || remotePort < 1 || remotePort > 65535 || this.tcp.has(tcpKey(remoteIp, remotePort, guestPort))) {
        return Promise.reject(new NetworkError(`source port ${remotePort} is not available`));
      }
    } else {
      const p = this.ephemeral((port) => this.tcp.has(tcpKey(remoteIp, port, guestPort)));
      if (p === 0) return Promise.reject(new NetworkError('no free source port towards the guest'));
      remotePort = p;
    }
    const flow: FlowKey = { proto: 'tcp', srcIp: intToIp(remoteIp), srcPort: remotePort, dstIp: this.link.guestIp, dstPort: guestPort };
    const conn = new TcpConnection(this.tcpEnv, { flow, remoteIp, remotePort, guestPort }, 'SYN_SENT');
    conn.synDeadline = this.now() + l.synTimeoutMs;
    this.tcp.set(tcpKey(remoteIp, remotePort, guestPort), conn);
    this.halfOpen++;
    return conn.connect();
  }

  /** A free port in the ephemeral range, or 0. */
  private ephemeral(used: (port: number) => boolean): number {
    for (let i = 0; i < EPHEMERAL_N; i++) {
      const port = EPHEMERAL_LO + ((this.nextEphemeral + i) % EPHEMERAL_N);
      if (!used(port)) {
        this.nextEphemeral = (this.nextEphemeral + i + 1) % EPHEMERAL_N;
        return port;
      }
    }
    return 0;
  }

  // -------------------------------------------------------------------------------------------
  // UDP

  private onUdp(frame: Buffer, ip: Ipv4Packet, srcPort: number, dstPort: number, off: number, end: number): boolean {
    const key = tcpKey(ip.dst, dstPort, srcPort);
    const inbound = this.inboundUdp.get(key);
    if (inbound) {
      try {
        inbound(compact(frame, off, end));
      } catch (e) {
        this.log(`net stack: udp reply handler failed: ${(e as Error)?.message ?? String(e)}`);
      }
      return true;
    }
    const now = this.now();
    if (this.udpFlows.has(key)) this.udpFlows.delete(key); // re-insert: Map order stays oldest-first
    else this.makeUdpRoom(now);
    this.udpFlows.set(key, now);
    const flow: FlowKey = { proto: 'udp', srcIp: this.link.guestIp, srcPort, dstIp: intToIp(ip.dst), dstPort };
    const origDst = ip.dst;
    const quote = Buffer.from(frame.subarray(ip.off, Math.min(ip.end, ip.payloadOff + 8)));
    const maxPayload = this.link.mtu - 28;
    const dg: GuestDatagram = {
      flow,
      payload: compact(frame, off, end),
      reply: (payload, from) => {
        if (this.closed) return;
        let src = origDst;
        let sport = dstPort;
        if (from) {
          try {
            src = ipToInt(from.ip);
          } catch {
            this.log(`net stack: udp reply from invalid address ${String(from.ip)} dropped`);
            return;
          }
          sport = from.port;
        }
        if (payload.length > maxPayload || !Number.isInteger(sport) || sport < 1 || sport > 65535) {
          this.log(`net stack: udp reply of ${payload.length} bytes from port ${sport} dropped (link MTU ${this.link.mtu}, no fragmentation)`);
          return;
        }
        this.emit(buildUdp(this.guestMac, this.gatewayMac, src, sport, this.guestIp, srcPort, payload));
      },
      unreachable: () => {
        if (this.closed) return;
        this.emit(buildUnreachable(ICMP_PORT_UNREACHABLE, quote, origDst, this.guestIp, this.guestMac, this.gatewayMac));
      },
    };
    try {
      this.handler.onUdp(dg);
    } catch (e) {
      this.log(`net stack: udp handler failed for ${flow.dstIp}:${flow.dstPort}: ${(e as Error)?.message ?? String(e)}`);
    }
    return true;
  }

  /**
   * Room for one more UDP flow: a guest flow entry holds no resource here (dispatch caps its host
   * sockets), so a full table evicts the least recently used guest flow rather than dropping the
   * datagram — a flood of destinations must not starve the box's own DNS queries.
   */
  private makeUdpRoom(now: number): boolean {
    const max = this.limits.maxUdpFlows;
    if (this.udpFlows.size + this.inboundUdp.size < max) return true;
    this.sweepUdp(now, true);
    while (this.udpFlows.size > 0 && this.udpFlows.size + this.inboundUdp.size >= max) {
      const oldest = this.udpFlows.keys().next().value as string;
      this.udpFlows.delete(oldest);
      this.udpEvicted++;
    }
    return this.udpFlows.size + this.inboundUdp.size < max;
  }

  /** Drop UDP flows idle for udpIdleMs (all of them past the first still-fresh one: Map order is by last use). */
  private sweepUdp(now: number, force = false): void {
    if (!force && now - this.lastUdpSweep < 1000) return;
    this.lastUdpSweep = now;
    const idle = this.limits.udpIdleMs;
    for (const [key, at] of this.udpFlows) {
      if (now - at < idle) break;
      this.udpFlows.delete(key);
    }
  }

  /** Inbound UDP (published udp ports): datagrams to guestIp:guestPort from gatewayIp:<ephemeral>. */
  openUdpToGuest(guestPort: number, onReply: (payload: Buffer) => void): { send(payload: Buffer): void; close(): void } {
    if (this.closed) throw new NetworkError('network stack is closed');
    if (!Number.isInteger(guestPort) || guestPort < 1 || guestPort > 65535) throw new NetworkError(`invalid guest port ${String(guestPort)}`);
    if (!this.makeUdpRoom(this.now())) throw new NetworkError(`too many UDP sessions into the guest (limit ${this.limits.maxUdpFlows})`);
    const gw = this.gatewayIp;
    const port = this.ephemeral((p) => this.inboundUdp.has(tcpKey(gw, p, guestPort)) || this.udpFlows.has(tcpKey(gw, p, guestPort)));
    if (port === 0) throw new NetworkError('no free source port towards the guest');
    const key = tcpKey(gw, port, guestPort);
    this.inboundUdp.set(key, onReply);
    const maxPayload = this.link.mtu - 28;
    let open = true;
    return {
      send: (payload: Buffer) => {
        if (!open || this.closed) return;
        if (payload.length > maxPayload) {
          this.log(`net stack: inbound udp datagram of ${payload.length} bytes dropped (link MTU ${this.link.mtu})`);
          return;
        }
        this.emit(buildUdp(this.guestMac, this.gatewayMac, gw, port, this.guestIp, guestPort, payload));
      },
      close: () => {
        if (!open) return;
        open = false;
        if (this.inboundUdp.get(key) === onReply) this.inboundUdp.delete(key);
      },
    };
  }

  // -------------------------------------------------------------------------------------------
  // Back-pressure

  /**
   * The worker's writer towards QEMU is backed up (true) or drained (false). While blocked no
   * data segments are sent (ACKs still are), so host memory stays bounded even when a guest
   * advertises huge windows and stops reading its NIC.
   */
  setLinkBlocked(blocked: boolean): void {
    if (this.linkBlocked === blocked) return;
    this.linkBlocked = blocked;
    if (!blocked && !this.closed) {
      for (const c of [...this.tcp.values()]) c.kick();
    }
  }

  private wakeHeld(): void {
    if (this.waking || this.heldOnTotal.size === 0) return;
    const q = this.tcpEnv.queued;
    if (q.bytes > q.max) return;
    this.waking = true;
    try {
      for (const c of [...this.heldOnTotal]) {
        this.heldOnTotal.delete(c);
        c.kick();
        if (q.bytes > q.max) break;
      }
    } finally {
      this.waking = false;
    }
  }

  // -------------------------------------------------------------------------------------------
  // Timers, stats, shutdown

  /** Timers (RTO, zero-window probe, SYN verdict timeout, idle UDP/TIME_WAIT cleanup). */
  tick(): void {
    if (this.closed) return;
    const now = this.now();
    try {
      for (const c of [...this.tcp.values()]) {
        if (c.synDeadline && now >= c.synDeadline) {
          if (c.state === 'PENDING') {
            // No verdict in time: as reject('unreachable').
            c.pendingVerdict?.reject('unreachable');
            if (c.state === 'PENDING') c.shutdown(new NetworkError('no verdict'));
            continue;
          }
          if (c.state === 'SYN_SENT' || c.state === 'SYN_RCVD') {
            c.abort(new NetworkError(`TCP handshake with guest port ${c.guestPort} timed out`));
            continue;
          }
          c.synDeadline = 0;
        }
        c.tick(now);
      }
      this.sweepUdp(now);
    } catch (e) {
      this.log(`net stack: timer failed: ${(e as Error)?.message ?? String(e)}`);
    }
  }

  stats(): StackStats {
    return {
      tcpFlows: this.tcp.size,
      halfOpen: this.halfOpen,
      udpFlows: this.udpFlows.size + this.inboundUdp.size,
      droppedFrames: this.dropped,
      rejectedSyns: this.rejectedSyns,
      udpEvicted: this.udpEvicted,
      queuedBytes: this.tcpEnv.queued.bytes,
      receivedBytes: this.tcpEnv.received.bytes,
    };
  }

  close(): void {
    if (this.closed) return;
    this.closed = true;
    const err = new NetworkError('network stack closed');
    for (const c of [...this.tcp.values()]) c.shutdown(err);
    this.tcp.clear();
    this.udpFlows.clear();
    this.inboundUdp.clear();
    this.halfOpen = 0;
  }

  private emit(frame: Buffer): void {
    if (this.closed) return;
    try {
      this.sendFrame(frame);
    } catch (e) {
      // The link is going away (the worker reports that itself); never unwind into a stream.
      if (!this.sendFailed) this.log(`net stack: sending a frame failed: ${(e as Error)?.message ?? String(e)}`);
      this.sendFailed = true;
    }
  }

  private drop(): void {
    this.dropped++;
    if (this.counters) Atomics.add(this.counters, COUNTER.droppedFrames, 1n);
  }
}
