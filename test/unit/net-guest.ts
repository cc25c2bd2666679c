// A scripted guest for the NetStack unit tests (net-stack, net-tcp, net-fuzz): builds the frames
// a Linux guest would send and parses what the stack sends back. Not a test file itself.
import { Duplex } from 'node:stream';
import { NetStack, type StackLimits } from '../../src/net/stack.js';
import type { FlowHandler, GuestDatagram, GuestStream, LinkAddressing, PendingTcp } from '../../src/net/types.js';
import {
  buildTcp,
  buildUdp,
  ETHERTYPE_IPV4,
  ipToInt,
  macToBuf,
  parseEth,
  parseIpv4,
  parseTcp,
  parseUdp,
  PROTO_TCP,
  PROTO_UDP,
  seqAdd,
  TCP_ACK,
  TCP_FIN,
  TCP_PSH,
  TCP_RST,
  TCP_SYN,
  type Ipv4Packet,
  type TcpSegment,
} from '../../src/net/frames.js';

export const LINK: LinkAddressing = {
  guestIp: '192.168.127.2',
  gatewayIp: '192.168.127.1',
  hostAliasIp: '192.168.127.254',
  prefixLength: 24,
  guestMac: '52:54:00:12:34:56',
  gatewayMac: '52:54:00:12:34:01',
  mtu: 65520,
};
export const GUEST_MAC = macToBuf(LINK.guestMac);
export const GW_MAC = macToBuf(LINK.gatewayMac);
export const GUEST_IP = ipToInt(LINK.guestIp);
export const GW_IP = ipToInt(LINK.gatewayIp);

export { TCP_ACK, TCP_FIN, TCP_PSH, TCP_RST, TCP_SYN };

export interface OutTcp extends TcpSegment {
  ip: Ipv4Packet;
  payload: Buffer;
  frame: Buffer;
}

/** Parse a frame the stack sent as TCP (null if it is something else). */
export function asTcp(frame: Buffer): OutTcp | null {
  const eth = parseEth(frame);
  if (!eth || eth.type !== ETHERTYPE_IPV4) return null;
  const ip = parseIpv4(frame, eth.off);
  if (typeof ip === 'string' || ip.proto !== PROTO_TCP) return null;
  const seg = parseTcp(frame, ip);
  if (!seg) throw new Error('stack sent a TCP segment with a bad checksum');
  return { ...seg, ip, payload: frame.subarray(seg.payloadOff, seg.end), frame };
}

export function asUdp(frame: Buffer): { srcIp: number; dstIp: number; srcPort: number; dstPort: number; payload: Buffer } | null {
  const eth = parseEth(frame);
  if (!eth || eth.type !== ETHERTYPE_IPV4) return null;
  const ip = parseIpv4(frame, eth.off);
  if (typeof ip === 'string' || ip.proto !== PROTO_UDP) return null;
  const u = parseUdp(frame, ip);
  if (!u) throw new Error('stack sent a UDP datagram with a bad checksum');
  return { srcIp: ip.src, dstIp: ip.dst, srcPort: u.srcPort, dstPort: u.dstPort, payload: frame.subarray(u.payloadOff, u.end) };
}

/** The stack plus a recorder of what it sends, a fake clock and a scriptable handler. */
export class Harness {
  readonly out: Buffer[] = [];
  clock = 1_000_000;
  readonly pendings: PendingTcp[] = [];
  readonly datagrams: GuestDatagram[] = [];
  onTcp: (p: PendingTcp) => void = (p) => this.pendings.push(p);
  onUdp: (d: GuestDatagram) => void = (d) => this.datagrams.push(d);
  readonly counters = new BigInt64Array(9);
  readonly stack: NetStack;
  readonly logs: string[] = [];

  constructor(limits?: Partial<StackLimits>, link: LinkAddressing = LINK, random?: () => number) {
    const handler: FlowHandler = { onTcp: (p) => this.onTcp(p), onUdp: (d) => this.onUdp(d) };
    this.stack = new NetStack({ link, handler, send: (f) => this.out.push(f), limits, counters: this.counters, now: () => this.clock, log: (l) => this.logs.push(l), random });
  }

  /** Frames sent since the last take(). */
  take(): Buffer[] {
    return this.out.splice(0);
  }

  takeTcp(): OutTcp[] {
    return this.take().map((f) => {
      const t = asTcp(f);
      if (!t) throw new Error('expected only TCP frames');
      return t;
    });
  }

  advance(ms: number): void {
    this.clock += ms;
    this.stack.tick();
  }
}

export interface GuestTcpOpts {
  dstIp?: string;
  dstPort?: number;
  srcPort?: number;
  mss?: number;
  wscale?: number;
  window?: number;
}

/** One guest-side TCP endpoint, tracking seq/ack like a minimal Linux would. */
export class GuestTcp {
  readonly h: Harness;
  readonly dst: number;
  readonly dstPort: number;
  readonly srcPort: number;
  seq: number;
  ack = 0;
  /** Unscaled window field this guest sends. */
  window: number;
  wscale: number | undefined;
  mss: number;

  constructor(h: Harness, o: GuestTcpOpts = {}) {
    this.h = h;
    this.dst = ipToInt(o.dstIp ?? '198.18.0.10');
    this.dstPort = o.dstPort ?? 443;
    this.srcPort = o.srcPort ?? 40000 + Math.floor(Math.random() * 20000);
    this.seq = 1000;
    this.window = o.window ?? 0xffff;
    this.wscale = 'wscale' in o ? o.wscale : 7;
    this.mss = o.mss ?? 65480;
  }

  frame(flags: number, payload: Buffer = Buffer.alloc(0), over: { seq?: number; ack?: number; window?: number } = {}): Buffer {
    const syn = (flags & TCP_SYN) !== 0;
    return buildTcp(
      {
        ethDst: GW_MAC,
        ethSrc: GUEST_MAC,
        src: GUEST_IP,
        dst: this.dst,
        srcPort: this.srcPort,
        dstPort: this.dstPort,
        seq: over.seq ?? this.seq,
        ack: over.ack ?? (flags & TCP_ACK ? this.ack : 0),
        flags,
        window: over.window ?? this.window,
        mss: syn ? this.mss : undefined,
        wscale: syn ? this.wscale : undefined,
      },
      [payload],
      0,
      payload.length,
    );
  }

  /** Send a segment; SYN/FIN/data advance seq as the guest would. */
  send(flags: number, payload: Buffer = Buffer.alloc(0), over: { seq?: number; ack?: number; window?: number } = {}): void {
    this.h.stack.input(this.frame(flags, payload, over));
    if (over.seq === undefined) this.seq = seqAdd(this.seq, payload.length + (flags & TCP_SYN ? 1 : 0) + (flags & TCP_FIN ? 1 : 0));
  }

  syn(): void {
    this.send(TCP_SYN);
  }

  /** Full passive handshake through the harness's pending list: returns the accepted stream. */
  handshake(): { stream: GuestStream; synAck: OutTcp } {
    this.syn();
    const p = this.h.pendings.pop();
    if (!p) throw new Error('no pending flow');
    const stream = p.accept();
    const [synAck] = this.h.takeTcp();
    if (!synAck) throw new Error('no SYN-ACK');
    this.ack = seqAdd(synAck.seq, 1);
    this.send(TCP_ACK);
    return { stream, synAck };
  }

  /** ACK everything in `segs` (data + FIN) with the current window. */
  ackAll(segs: OutTcp[], window = this.window): void {
    for (const s of segs) {
      const end = seqAdd(s.seq, s.payload.length + (s.flags & TCP_SYN ? 1 : 0) + (s.flags & TCP_FIN ? 1 : 0));
      if (((end - this.ack) | 0) > 0) this.ack = end;
    }
    this.window = window;
    this.send(TCP_ACK);
  }
}

export function udpFrame(srcPort: number, dstIp: string, dstPort: number, payload: Buffer): Buffer {
  return buildUdp(GW_MAC, GUEST_MAC, GUEST_IP, srcPort, ipToInt(dstIp), dstPort, payload);
}

/** Let stream callbacks and nextTick/setImmediate work run. */
export function settle(): Promise<void> {
  return new Promise((r) => setImmediate(r));
}

/**
 * A guest-side TCP endpoint as a Duplex, for end-to-end tests: what the test writes goes to the
 * stack in segments that respect the stack's advertised window; what the stack sends in order is
 * readable and ACKed. pump() moves frames; run it with start() until stop().
 */
export class GuestPeer extends Duplex {
  readonly g: GuestTcp;
  private readonly h: Harness;
  private pending: Buffer[] = [];
  private pendingLen = 0;
  private sndUna: number;
  private stackWnd: number;
  private readonly stackShift: number;
  private finWanted = false;
  private finSent = false;
  private timer: NodeJS.Immediate | null = null;
  segmentsIn = 0;
  segmentsOut = 0;
  maxSegmentIn = 0;
  dropped = 0;
  /** Drop this share of the stack's segments (a guest whose buffers overflowed), seeded. */
  dropRate = 0;
  /** Advance the harness clock by this much per pump and tick the stack (RTOs on a fake clock). */
  tickMs = 0;
  private seed = 12345;

  constructor(h: Harness, g: GuestTcp, synAck: OutTcp) {
    super({ allowHalfOpen: true });
    this.h = h;
    this.g = g;
    this.sndUna = g.seq;
    this.stackShift = synAck.wscale ?? 0;
    this.stackWnd = synAck.window;
  }

  override _read(): void {}

  override _write(chunk: Buffer, _e: BufferEncoding, cb: () => void): void {
    this.pending.push(chunk);
    this.pendingLen += chunk.length;
    cb();
  }

  override _final(cb: () => void): void {
    this.finWanted = true;
    cb();
  }

  start(): void {
    const loop = () => {
      this.pump();
      this.timer = setImmediate(loop);
    };
    this.timer = setImmediate(loop);
  }

  stop(): void {
    if (this.timer) clearImmediate(this.timer);
    this.timer = null;
  }

  private rand(): number {
    this.seed = (Math.imul(this.seed, 1103515245) + 12345) >>> 0;
    return this.seed / 4294967296;
  }

  pump(): void {
    if (this.tickMs) this.h.advance(this.tickMs);
    let gotData = false;
    for (const f of this.h.take()) {
      const t = asTcp(f);
      if (!t || t.dstPort !== this.g.srcPort) continue;
      if (this.dropRate > 0 && t.payload.length > 0 && this.rand() < this.dropRate) {
        this.dropped++;
        continue;
      }
      this.segmentsIn++;
      this.maxSegmentIn = Math.max(this.maxSegmentIn, t.payload.length);
      if (t.flags & TCP_RST) {
        this.destroy(new Error('RST from the stack'));
        return;
      }
      if (t.flags & TCP_ACK && ((t.ack - this.sndUna) | 0) >= 0) {
        this.sndUna = t.ack;
        this.stackWnd = t.window << this.stackShift;
      }
      if ((t.payload.length > 0 || t.flags & TCP_FIN) && t.seq === this.g.ack) {
        if (t.payload.length) this.push(Buffer.from(t.payload));
        this.g.ack = seqAdd(this.g.ack, t.payload.length);
        if (t.flags & TCP_FIN) {
          this.g.ack = seqAdd(this.g.ack, 1);
          this.push(null);
        }
        gotData = true;
      } else if (t.payload.length > 0) {
        gotData = true; // out of order or a resend: dup-ACK
      }
    }
    let sent = false;
    while (this.pendingLen > 0) {
      const inFlight = (this.g.seq - this.sndUna) | 0;
      const room = this.stackWnd - inFlight;
      if (room <= 0) break;
      const n = Math.min(room, this.g.mss, this.pendingLen);
      const seg = Buffer.concat(this.pending).subarray(0, n);
      const rest = Buffer.concat(this.pending).subarray(n);
      this.pending = rest.length ? [rest] : [];
      this.pendingLen -= n;
      this.g.send(TCP_ACK | TCP_PSH, seg);
      this.segmentsOut++;
      sent = true;
    }
    if (this.finWanted && !this.finSent && this.pendingLen === 0) {
      this.finSent = true;
      this.g.send(TCP_ACK | TCP_FIN);
      sent = true;
    }
    if (gotData && !sent) this.g.send(TCP_ACK);
  }
}
