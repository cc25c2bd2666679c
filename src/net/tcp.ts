// One TCP connection between the guest and the stack, exposed as a GuestStream (a Duplex).
//
// The virtual link is lossless and in order and the peer is always Linux, so this is RFC 793
// with the RFC 5681 basics only: real windows both ways (ours follows the Duplex's readable
// buffer, theirs bounds what we send), MSS + window scaling, FIN/half-close both ways, RST both
// ways, a fixed-start exponential RTO with go-back-N resend and slow restart (the guest drops
// only when its own buffers are full), 3-dup-ACK fast resend, zero-window probes, a short
// TIME_WAIT. No SACK, no timestamps (never offered), out-of-order segments dropped (the guest
// retransmits). Host memory is bounded whatever the guest claims: bytes in flight per flow,
// bytes queued towards the guest over all flows, and unread guest bytes over all flows each
// have a budget (TcpEnv). Nothing here throws on guest input.
import { Duplex } from 'node:stream';
import { NetworkError } from '../errors/index.js';
import type { FlowKey, GuestStream, PendingTcp } from './types.js';
import {
  buildTcp,
  seqAdd,
  seqDiff,
  seqLe,
  seqLt,
  TCP_ACK,
  TCP_FIN,
  TCP_PSH,
  TCP_RST,
  TCP_SYN,
  type TcpHeaderSpec,
  type TcpSegment,
} from './frames.js';

export type TcpState =
  | 'PENDING' // guest SYN received, waiting for the handler's verdict
  | 'SYN_SENT' // our SYN sent (connectToGuest)
  | 'SYN_RCVD' // accepted, SYN-ACK sent
  | 'ESTABLISHED'
  | 'FIN_WAIT_1'
  | 'FIN_WAIT_2'
  | 'CLOSE_WAIT'
  | 'CLOSING'
  | 'LAST_ACK'
  | 'TIME_WAIT'
  | 'CLOSED';

const HALF_OPEN: ReadonlySet<TcpState> = new Set(['PENDING', 'SYN_SENT', 'SYN_RCVD']);
/** States in which we may send data. */
const CAN_SEND: ReadonlySet<TcpState> = new Set(['ESTABLISHED', 'CLOSE_WAIT']);
/** States in which the guest may still send data. */
const CAN_RECEIVE: ReadonlySet<TcpState> = new Set(['ESTABLISHED', 'FIN_WAIT_1', 'FIN_WAIT_2']);

export function isHalfOpen(s: TcpState): boolean {
  return HALF_OPEN.has(s);
}

/** What a connection needs from the stack that owns it. */
export interface TcpEnv {
  now(): number;
  /** Uniform in [0, 1): initial sequence numbers (the fuzz test seeds it). */
  random(): number;
  /** Hand one frame to the link. */
  emit(frame: Buffer): void;
  guestMac: Buffer;
  gatewayMac: Buffer;
  guestIp: number;
  /** Our MSS (link MTU - 40). */
  mss: number;
  /** Receive buffer per flow: the most we advertise (and so the most the guest can queue on us). */
  rcvBuffer: number;
  /** Bytes queued towards the guest beyond its window before write() callbacks are held. */
  maxBuffered: number;
  /** Most bytes in flight per flow whatever window the guest advertises (it may lie: 1 GiB). */
  maxInFlight: number;
  /** Bytes queued towards the guest over all flows (in flight + waiting), kept by the connections. */
  queued: { bytes: number; max: number };
  /** A connection holds a write callback because of the total budget (the stack wakes it later). */
  onHeld(conn: TcpConnection): void;
  /** Queued bytes were freed: the stack may wake connections held on the total budget. */
  onFreed(): void;
  /** Guest bytes buffered unread over all flows, and the budget that shrinks every window. */
  received: { bytes: number; max: number };
  /** The link's writer is backed up: send no data segments until it drains. */
  linkBlocked(): boolean;
  /** Writable high-water mark of each GuestStream. */
  writeHighWater: number;
  rto: { initialMs: number; maxMs: number; maxRetries: number };
  timeWaitMs: number;
  log(line: string): void;
  /** State transitions (the stack counts half-open flows and removes CLOSED ones). */
  onState(conn: TcpConnection, from: TcpState, to: TcpState): void;
}

export interface TcpEndpoints {
  flow: FlowKey;
  /** The non-guest end (as the guest addresses it). */
  remoteIp: number;
  remotePort: number;
  guestPort: number;
}

export class GuestStreamImpl extends Duplex implements GuestStream {
  readonly flow: FlowKey;
  /** @internal */
  readonly conn: TcpConnection;

  constructor(conn: TcpConnection, flow: FlowKey, rcvBuffer: number, writeHighWater: number) {
    super({ readableHighWaterMark: rcvBuffer, writableHighWaterMark: writeHighWater, allowHalfOpen: true });
    this.conn = conn;
    this.flow = flow;
  }

  reset(): void {
    this.destroy();
  }

  override _read(): void {
    this.conn.onRead();
  }

  // _read alone cannot drive window updates: after one _read without a push, Node stops calling
  // it until the next push, and the guest sends nothing into a closed window. Every consumption
  // (flowing mode goes through read() too) checks whether the window is worth reopening.
  override read(size?: number): any {
    const r = super.read(size);
    this.conn.onRead();
    return r;
  }

  override _write(chunk: Buffer, _enc: BufferEncoding, cb: (err?: Error | null) => void): void {
    this.conn.queueData(chunk, cb);
  }

  override _final(cb: (err?: Error | null) => void): void {
    this.conn.queueFin(cb);
  }

  override _destroy(err: Error | null, cb: (err?: Error | null) => void): void {
    this.conn.onStreamDestroyed();
    cb(err);
  }
}

/** Destroy a stream with `err` only when someone listens for it: a guest RST must never become an uncaught 'error' in the worker. */
function destroyStream(s: Duplex, err: Error): void {
  if (s.destroyed) return;
  if (s.listenerCount('error') > 0) s.destroy(err);
  else s.destroy();
}

export class TcpConnection {
  readonly flow: FlowKey;
  readonly remoteIp: number;
  readonly remotePort: number;
  readonly guestPort: number;
  state: TcpState;
  stream: GuestStreamImpl | null = null;

  private readonly env: TcpEnv;
  private readonly hdr: TcpHeaderSpec;

  // Send side (RFC 793 names). Data bytes queued start at sndUna once established.
  private iss: number;
  private sndUna: number;
  private sndNxt: number;
  /** Highest sequence number sent so far (sndNxt goes back on a resend). */
  private sndMax: number;
  private sndWnd = 0;
  private sndWl1 = 0;
  private sndWl2 = 0;
  private sndShift = 0;
  /** Both SYNs carried window scale (RFC 7323): only then are the shifts applied. */
  private wsOk = false;
  private guestMss = 536;
  private sendQ: Buffer[] = [];
  /** Offset of sndUna within sendQ[0]. */
  private sendQOff = 0;
  /** Bytes in sendQ from sndUna on. */
  private sendQLen = 0;
  private heldWriteCb: ((err?: Error | null) => void) | null = null;
  private finQueued = false;
  private finalCb: ((err?: Error | null) => void) | null = null;
  /** Bytes allowed out beyond sndUna after an RTO (slow restart); Infinity otherwise. */
  private cwnd = Infinity;
  private recoverSeq = 0;
  private dupAcks = 0;

  // Receive side.
  private irs = 0;
  private rcvNxt = 0;
  private rcvShift = 0;
  /** The (unscaled) window our last SYN or SYN-ACK offered. */
  private synWindow = 0;
  /** Right edge of the window last advertised (never moved left: RFC 793 "shrinking"). */
  private rcvAdvRight = 0;

  // Timers (absolute ms on env.now(); 0 = off).
  private rtoAt = 0;
  private rto: number;
  private retries = 0;
  private persistAt = 0;
  private persistMs = 0;
  private timeWaitAt = 0;
  /** PENDING: verdict deadline; SYN_SENT / SYN_RCVD: handshake deadline (the stack enforces both). */
  synDeadline = 0;
  /** PENDING: the verdict object handed to the FlowHandler (the stack's timeout uses it). */
  pendingVerdict: PendingTcp | null = null;

  // Deferred stream events (pushed after the segment is fully processed, see segment()).
  private pendingData: Buffer[] = [];
  private pendingEnd = false;
  private ackNeeded = false;
  private inSegment = false;

  /** Active open: settled on ESTABLISHED or failure. */
  private connectWaiter: { resolve(s: GuestStream): void; reject(e: Error): void } | null = null;

  constructor(env: TcpEnv, ends: TcpEndpoints, state: TcpState) {
    this.env = env;
    this.flow = ends.flow;
    this.remoteIp = ends.remoteIp;
    this.remotePort = ends.remotePort;
    this.guestPort = ends.guestPort;
    this.state = state;
    this.iss = (env.random() * 0x100000000) >>> 0;
    this.sndUna = this.iss;
    this.sndNxt = this.iss;
    this.sndMax = this.iss;
    this.rto = env.rto.initialMs;
    this.hdr = {
      ethDst: env.guestMac,
      ethSrc: env.gatewayMac,
      src: ends.remoteIp,
      dst: env.guestIp,
      srcPort: ends.remotePort,
      dstPort: ends.guestPort,
      seq: 0,
      ack: 0,
      flags: 0,
      window: 0,
    };
  }

  // -------------------------------------------------------------------------------------------
  // Opening

  /** Passive open: remember the guest's SYN (state PENDING until accept()). */
  static fromSyn(env: TcpEnv, ends: TcpEndpoints, syn: TcpSegment, verdictMs: number): TcpConnection {
    const c = new TcpConnection(env, ends, 'PENDING');
    c.irs = syn.seq;
    c.rcvNxt = seqAdd(syn.seq, 1);
    c.sndWnd = syn.window; // never scaled in a SYN
    c.sndWl1 = syn.seq;
    c.guestMss = syn.mss ?? 536;
    if (syn.wscale !== undefined) {
      c.wsOk = true;
      c.sndShift = syn.wscale;
      c.rcvShift = shiftFor(env.rcvBuffer);
    }
    c.synDeadline = env.now() + verdictMs;
    return c;
  }

  /** The verdict: SYN-ACK and a stream. */
  accept(): GuestStreamImpl {
    if (this.stream) return this.stream;
    this.stream = new GuestStreamImpl(this, this.flow, this.env.rcvBuffer, this.env.writeHighWater);
    if (this.state !== 'PENDING') {
      // The guest gave up (RST) or the verdict timed out meanwhile: a stream that is already gone.
      const s = this.stream;
      process.nextTick(() => destroyStream(s, new NetworkError(`connection ${flowText(this.flow)} was aborted before it was accepted`)));
      return s;
    }
    this.synDeadline = 0;
    this.setState('SYN_RCVD');
    this.sendSyn();
    return this.stream;
  }

  /** Active open (connectToGuest): send SYN, settle when the guest answers. */
  connect(): Promise<GuestStream> {
    return new Promise((resolve, reject) => {
      this.connectWaiter = { resolve, reject };
      this.rcvShift = shiftFor(this.env.rcvBuffer);
      this.sendSyn();
    });
  }

  private sendSyn(): void {
    const synAck = this.state === 'SYN_RCVD';
    const h = this.hdr;
    h.seq = this.iss;
    h.ack = synAck ? this.rcvNxt : 0;
    h.flags = synAck ? TCP_SYN | TCP_ACK : TCP_SYN;
    h.window = Math.min(0xffff, this.rcvWindow()); // unscaled in a SYN; within the stack-wide budget
    h.mss = this.env.mss;
    // Window scaling only when both sides use it (RFC 7323): always offered in our SYN, echoed
    // in the SYN-ACK only when the guest's SYN carried it.
    h.wscale = !synAck || this.wsOk ? this.rcvShift : undefined;
    this.env.emit(buildTcp(h));
    h.mss = undefined;
    h.wscale = undefined;
    this.rcvAdvRight = seqAdd(this.rcvNxt, h.window);
    this.synWindow = h.window;
    this.countReceived();
    this.sndNxt = seqAdd(this.iss, 1);
    if (seqLt(this.sndMax, this.sndNxt)) this.sndMax = this.sndNxt;
    if (!this.rtoAt) this.rtoAt = this.env.now() + this.rto;
  }

  /** Verdict 'refused' (and SYN caps): RST to the pending SYN. */
  refuse(): void {
    if (this.state !== 'PENDING') return;
    this.sendRaw(0, this.rcvNxt, TCP_RST | TCP_ACK, 0);
    this.close('CLOSED');
  }

  // -------------------------------------------------------------------------------------------
  // Guest segments

  /** One segment of this flow from the guest; `frame` holds the payload bytes. */
  segment(seg: TcpSegment, frame: Buffer): void {
    this.inSegment = true;
    try {
      this.process(seg, frame);
    } finally {
      this.inSegment = false;
    }
    this.flushEvents();
  }

  private process(seg: TcpSegment, frame: Buffer): void {
    const flags = seg.flags;
    const len = seg.end - seg.payloadOff;
    switch (this.state) {
      case 'CLOSED':
        return;
      case 'PENDING':
        // Retransmitted SYNs while the handler decides are absorbed; a RST means the guest
        // gave up (the verdict then finds the flow gone). Anything else waits too.
        if (flags & TCP_RST && seg.seq === this.rcvNxt) this.close('CLOSED');
        return;
      case 'SYN_SENT':
        this.processSynSent(seg);
        return;
      default:
        break;
    }

    // Synchronized states. 1. Sequence acceptability (RFC 793 p. 69, in-order only).
    const wnd = seqDiff(this.rcvAdvRight, this.rcvNxt);
    const seqOff = seqDiff(seg.seq, this.rcvNxt); // < 0: starts with old bytes
    if (flags & TCP_RST) {
      // RFC 5961: only an RST at exactly rcvNxt resets; one elsewhere in the window earns a
      // challenge ACK, outside it is dropped.
      if (seqOff === 0) this.resetByGuest();
      else if (seqOff > 0 && seqOff < Math.max(wnd, 1)) this.ackNeeded = true;
      return;
    }
    if (flags & TCP_SYN) {
      if (this.state === 'SYN_RCVD' && seg.seq === this.irs && !(flags & TCP_ACK)) {
        this.sendSyn(); // our SYN-ACK was lost or slow: say it again
        return;
      }
      this.ackNeeded = true; // RFC 5961 challenge ACK for a SYN in a synchronized state
      return;
    }
    if (!(flags & TCP_ACK)) return;
    // Segments beyond the right edge of our window, or entirely old ones (duplicates, the
    // guest's zero-window probes and keepalives at rcvNxt - 1), are answered with an ACK and
    // otherwise ignored: their ACK and window fields must not move our send state (RFC 793).
    const segSpan = len + (flags & TCP_FIN ? 1 : 0);
    if (seqOff > Math.max(wnd, 0) || (seqOff < 0 && seqOff + segSpan <= 0)) {
      this.ackNeeded = true;
      return;
    }

    // 2. ACK.
    if (this.state === 'SYN_RCVD') {
      if (seg.ack !== seqAdd(this.iss, 1)) {
        this.sendRaw(seg.ack, 0, TCP_RST, 0);
        return;
      }
      this.sndUna = seg.ack;
      this.rtoAt = 0;
      this.retries = 0;
      this.rto = this.env.rto.initialMs;
      this.sndWnd = seg.window << this.sndShift;
      this.sndWl1 = seg.seq;
      this.sndWl2 = seg.ack;
      this.setState('ESTABLISHED');
    } else if (!this.processAck(seg, len)) {
      return;
    }
    if ((this.state as TcpState) === 'CLOSED') return; // our FIN acked in LAST_ACK

    // 3. Data and FIN, in order only.
    let dataOff = seg.payloadOff;
    let dataLen = len;
    let fin = (flags & TCP_FIN) !== 0;
    if (seqOff < 0) {
      const old = -seqOff;
      if (old >= dataLen + (fin ? 1 : 0)) {
        // Entirely old: a duplicate, or (zero length at rcvNxt - 1) a zero-window probe or a
        // keepalive. All of them want our ACK with the current window (RFC 793 p. 69).
        this.ackNeeded = true;
        return;
      }
      if (old > dataLen) {
        dataLen = 0;
      } else {
        dataOff += old;
        dataLen -= old;
      }
    } else if (seqOff > 0) {
      if (dataLen > 0 || fin) this.ackNeeded = true; // out of order: drop, dup-ACK
      return;
    }
    if (dataLen > 0) {
      if (!CAN_RECEIVE.has(this.state)) {
        this.ackNeeded = true;
        return;
      }
      const room = seqDiff(this.rcvAdvRight, this.rcvNxt);
      if (dataLen > room) {
        // Beyond the window we advertised: keep what fits, the guest resends the rest (a
        // zero-window probe lands here too and is answered with our current window).
        dataLen = Math.max(0, room);
        fin = false;
      }
      if (dataLen > 0) {
        this.pendingData.push(this.ownPayload(frame, dataOff, dataLen));
        this.rcvNxt = seqAdd(this.rcvNxt, dataLen);
      }
      this.ackNeeded = true;
    }
    if (fin) {
      this.rcvNxt = seqAdd(this.rcvNxt, 1);
      this.ackNeeded = true;
      switch (this.state) {
        case 'ESTABLISHED':
          this.pendingEnd = true;
          this.setState('CLOSE_WAIT');
          break;
        case 'FIN_WAIT_1':
          this.pendingEnd = true;
          this.setState('CLOSING');
          break;
        case 'FIN_WAIT_2':
          this.pendingEnd = true;
          this.enterTimeWait();
          break;
        case 'TIME_WAIT':
          this.rcvNxt = seqAdd(this.rcvNxt, -1); // a resent FIN: ACK it again, restart the wait
          this.enterTimeWait();
          break;
        default:
          this.rcvNxt = seqAdd(this.rcvNxt, -1); // FIN already counted (CLOSE_WAIT, CLOSING, LAST_ACK)
          break;
      }
    }
  }

  private processSynSent(seg: TcpSegment): void {
    const flags = seg.flags;
    const ackOk = (flags & TCP_ACK) !== 0 && seg.ack === seqAdd(this.iss, 1);
    if (flags & TCP_ACK && !ackOk) {
      if (!(flags & TCP_RST)) this.sendRaw(seg.ack, 0, TCP_RST, 0);
      return;
    }
    if (flags & TCP_RST) {
      if (ackOk) this.failConnect(new NetworkError(`connection refused by the guest on port ${this.guestPort}`));
      return;
    }
    if (!(flags & TCP_SYN) || !ackOk) return; // simultaneous open: never from a Linux guest we dial
    this.irs = seg.seq;
    this.rcvNxt = seqAdd(seg.seq, 1);
    this.guestMss = seg.mss ?? 536;
    if (seg.wscale !== undefined) {
      this.wsOk = true;
      this.sndShift = seg.wscale;
    } else {
      this.rcvShift = 0;
    }
    this.rcvAdvRight = seqAdd(this.rcvNxt, this.synWindow); // what our SYN offered
    this.sndUna = seg.ack;
    this.sndWnd = seg.window; // unscaled in a SYN-ACK
    this.sndWl1 = seg.seq;
    this.sndWl2 = seg.ack;
    this.rtoAt = 0;
    this.retries = 0;
    this.rto = this.env.rto.initialMs;
    this.stream = new GuestStreamImpl(this, this.flow, this.env.rcvBuffer, this.env.writeHighWater);
    this.setState('ESTABLISHED');
    this.countReceived();
    this.ackNeeded = true;
    const w = this.connectWaiter;
    this.connectWaiter = null;
    w?.resolve(this.stream);
  }

  /** ACK field processing in synchronized states; false = drop the rest of the segment. */
  private processAck(seg: TcpSegment, len: number): boolean {
    const ack = seg.ack;
    if (seqLt(this.sndMax, ack)) {
      this.ackNeeded = true; // acks something never sent (RFC 793): ACK and drop
      return false;
    }
    const newWnd = seg.window << this.sndShift;
    if (seqLt(this.sndUna, ack)) {
      this.ackedUpTo(ack);
      this.dupAcks = 0;
    } else if (ack === this.sndUna && len === 0 && !(seg.flags & TCP_FIN) && newWnd === this.sndWnd && this.sndMax !== this.sndUna) {
      // RFC 5681 duplicate ACK: the guest is missing the segment at sndUna.
      // Not again while recovering: the dup-ACKs of segments already in flight say nothing new.
      if (++this.dupAcks === 3 && this.cwnd === Infinity) this.goBackN();
    }
    // Window update (RFC 793 SND.WL1/WL2 rule, so old segments do not move the window back).
    if (seqLt(this.sndWl1, seg.seq) || (this.sndWl1 === seg.seq && seqLe(this.sndWl2, ack))) {
      this.sndWnd = newWnd;
      this.sndWl1 = seg.seq;
      this.sndWl2 = ack;
    }
    return true;
  }

  private ackedUpTo(ack: number): void {
    const n = seqDiff(ack, this.sndUna);
    const finSeq = this.finQueued ? seqAdd(this.sndUna, this.sendQLen) : -1;
    const finAcked = this.finQueued && ack === seqAdd(finSeq, 1);
    let dataN = Math.min(n, this.sendQLen);
    const dataN0 = dataN;
    this.sendQLen -= dataN;
    this.env.queued.bytes -= dataN;
    while (dataN > 0) {
      const head = this.sendQ[0]!;
      const avail = head.length - this.sendQOff;
      if (dataN >= avail) {
        this.sendQ.shift();
        this.sendQOff = 0;
        dataN -= avail;
      } else {
        this.sendQOff += dataN;
        dataN = 0;
      }
    }
    this.sndUna = ack;
    if (seqLt(this.sndNxt, ack)) this.sndNxt = ack;
    this.retries = 0;
    this.rto = this.env.rto.initialMs;
    this.rtoAt = this.sndMax === this.sndUna ? 0 : this.env.now() + this.rto;
    if (this.cwnd !== Infinity) {
      this.cwnd = seqLe(this.recoverSeq, ack) ? Infinity : this.cwnd * 2;
    }
    this.releaseHeldWrite();
    if (dataN0 > 0) this.env.onFreed();
    if (finAcked) {
      const cb = this.finalCb;
      this.finalCb = null;
      switch (this.state) {
        case 'FIN_WAIT_1':
          this.setState('FIN_WAIT_2');
          break;
        case 'CLOSING':
          this.enterTimeWait();
          break;
        case 'LAST_ACK':
          this.close('CLOSED');
          break;
        default:
          break;
      }
      cb?.();
    }
  }

  private resetByGuest(): void {
    const err = new NetworkError(`connection ${flowText(this.flow)} reset by the guest`);
    this.failConnect(err);
    const s = this.stream;
    this.close('CLOSED');
    if (s) destroyStream(s, err);
  }

  private failConnect(err: Error): void {
    const w = this.connectWaiter;
    this.connectWaiter = null;
    if (w) {
      this.close('CLOSED');
      w.reject(err);
    }
  }

  // -------------------------------------------------------------------------------------------
  // Stream side

  /** _write: queue for the guest; the callback is held while too much waits beyond its window. */
  queueData(chunk: Buffer, cb: (err?: Error | null) => void): void {
    if (this.state === 'CLOSED' || this.finQueued) {
      // The connection is gone (a guest RST raced the writer, or the flow died before accept):
      // the stream is being destroyed; an error here could be unhandled, so just finish it.
      cb();
      if (this.stream) destroyStream(this.stream, new NetworkError(`connection ${flowText(this.flow)} is closed`));
      return;
    }
    if (chunk.length > 0) {
      this.sendQ.push(chunk);
      this.sendQLen += chunk.length;
      this.env.queued.bytes += chunk.length;
    }
    this.trySend();
    if (this.mustHold()) {
      this.heldWriteCb = cb;
      if (this.env.queued.bytes > this.env.queued.max) this.env.onHeld(this);
    } else {
      cb();
    }
    this.flushAck();
  }

  /** _final: FIN after the queued data; the callback runs when the guest ACKs our FIN. */
  queueFin(cb: (err?: Error | null) => void): void {
    if (this.state === 'CLOSED' || this.finQueued) {
      cb();
      return;
    }
    this.finQueued = true;
    this.finalCb = cb;
    this.trySend();
    this.flushAck();
  }

  /** _read: the consumer wants more; reopen our window if it grew enough to be worth an update. */
  onRead(): void {
    if (this.inSegment) return;
    this.countReceived();
    if (!CAN_RECEIVE.has(this.state)) return;
    const advertised = seqDiff(this.rcvAdvRight, this.rcvNxt);
    const wnd = this.rcvWindow();
    // Receiver-side silly-window avoidance (RFC 1122 4.2.3.3): update only when the window
    // grows by at least min(buffer/2, MSS); smaller growth rides on the next ACK we send anyway.
    if (wnd - advertised >= Math.min(this.env.rcvBuffer >>> 1, this.env.mss)) {
      this.sendAck();
    }
  }

  onStreamDestroyed(): void {
    this.env.received.bytes -= this.rcvCounted;
    this.rcvCounted = 0;
    this.finalCb = null;
    const held = this.heldWriteCb;
    this.heldWriteCb = null;
    held?.(new NetworkError(`connection ${flowText(this.flow)} was destroyed`));
    if (this.state === 'CLOSED' || this.state === 'TIME_WAIT') return;
    // destroy()/reset() before an orderly close: abort with RST.
    this.sendRaw(this.sndNxt, this.rcvNxt, TCP_RST | TCP_ACK, 0);
    this.close('CLOSED');
  }

  private unsentBeyondWindow(): number {
    const inFlight = Math.max(0, seqDiff(this.sndNxt, this.sndUna));
    const inWindow = Math.max(0, Math.min(this.sndWnd, this.env.maxInFlight) - inFlight);
    return this.sendQLen - inFlight - inWindow;
  }

  /** Hold the writer: too much waits beyond this guest's window, or over all flows. */
  private mustHold(): boolean {
    return this.unsentBeyondWindow() > this.env.maxBuffered || this.env.queued.bytes > this.env.queued.max;
  }

  /** Send what is allowed and release a held writer if it may go on (the stack calls it on wake-ups). */
  kick(): void {
    if (this.state === 'CLOSED') return;
    this.trySend();
    this.releaseHeldWrite();
    this.flushAck();
  }

  private releaseHeldWrite(): void {
    if (!this.heldWriteCb) return;
    if (!this.mustHold()) {
      const cb = this.heldWriteCb;
      this.heldWriteCb = null;
      cb();
    } else if (this.env.queued.bytes > this.env.queued.max) {
      this.env.onHeld(this); // our own ACKs may not come again: wait for the stack's wake-up
    }
  }

  // -------------------------------------------------------------------------------------------
  // Sending

  private rcvWindow(): number {
    const used = this.stream ? this.stream.readableLength : 0;
    const max = this.rcvShift === 0 ? 0xffff : this.env.rcvBuffer;
    let wnd = Math.min(max, this.env.rcvBuffer - used);
    // Over all flows, guest bytes buffered unread plus the windows promised for more share one
    // budget; past it each flow may still hold a small floor of its own (so flows that are read
    // keep moving and their ACKs reopen the windows later) and a paused flow gets nothing more.
    const r = this.env.received;
    const mine = Math.max(r.max - (r.bytes - this.rcvCounted), Math.min(RCV_FLOOR, this.env.rcvBuffer));
    wnd = Math.min(wnd, mine - used);
    return Math.max(0, wnd);
  }

  /** Our share of received.bytes: readable buffer + window still promised. */
  private rcvCounted = 0;

  private countReceived(): void {
    const s = this.stream;
    let now = 0;
    if (s && !s.destroyed) {
      now = s.readableLength;
      if (CAN_RECEIVE.has(this.state) || this.state === 'SYN_RCVD') now += Math.max(0, seqDiff(this.rcvAdvRight, this.rcvNxt));
    }
    this.env.received.bytes += now - this.rcvCounted;
    this.rcvCounted = now;
  }

  /** Window field for an outgoing segment; never moves the right edge left. */
  private windowField(): number {
    let wnd = this.rcvWindow();
    const promised = seqDiff(this.rcvAdvRight, this.rcvNxt);
    if (wnd < promised) wnd = promised;
    const field = Math.min(0xffff, wnd >>> this.rcvShift);
    const right = seqAdd(this.rcvNxt, field << this.rcvShift);
    if (seqLt(this.rcvAdvRight, right)) {
      this.rcvAdvRight = right;
      this.countReceived();
    }
    return field;
  }

  private sendRaw(seq: number, ack: number, flags: number, window: number): void {
    const h = this.hdr;
    h.seq = seq;
    h.ack = ack;
    h.flags = flags;
    h.window = window;
    this.env.emit(buildTcp(h));
  }

  private sendAck(): void {
    this.ackNeeded = false;
    this.sendRaw(this.sndNxt, this.rcvNxt, TCP_ACK, this.windowField());
  }

  private flushAck(): void {
    if (this.ackNeeded && this.state !== 'CLOSED') this.sendAck();
  }

  /** Send what the guest's window (and after an RTO the restart window) allows, in MSS-sized segments. */
  trySend(): void {
    if (!CAN_SEND.has(this.state) && !(this.finQueued && (this.state === 'FIN_WAIT_1' || this.state === 'LAST_ACK' || this.state === 'CLOSING'))) return;
    const mss = Math.max(1, Math.min(this.guestMss, this.env.mss));
    if (this.env.linkBlocked()) return; // kick() resumes when the link drains
    const limit = Math.min(this.sndWnd, this.cwnd, this.env.maxInFlight);
    for (;;) {
      const off = seqDiff(this.sndNxt, this.sndUna);
      const unsent = this.sendQLen - off;
      if (unsent > 0) {
        const room = limit - off;
        if (room <= 0) break;
        const n = Math.min(unsent, room, mss);
        // Silly-window avoidance, sender side, tuned for a Linux receiver: hold a short segment
        // only while two full segments are in flight (the guest then ACKs soon for sure). With
        // less in flight a held tail could wait for the guest's delayed ACK (40 ms+), so fill the
        // window as Linux itself does (tcp_mss_split_point).
        if (n < mss && n < unsent && off >= 2 * mss) break;
        const fin = this.finQueued && n === unsent;
        this.emitData(off, n, fin);
        this.sndNxt = seqAdd(this.sndNxt, n + (fin ? 1 : 0));
        if (fin) this.finSent();
      } else if (this.finQueued && off === this.sendQLen) {
        this.emitData(off, 0, true);
        this.sndNxt = seqAdd(this.sndNxt, 1);
        this.finSent();
        break;
      } else {
        break;
      }
      if (seqLt(this.sndMax, this.sndNxt)) this.sndMax = this.sndNxt;
      if (!this.rtoAt) this.rtoAt = this.env.now() + this.rto;
    }
    if (seqLt(this.sndMax, this.sndNxt)) this.sndMax = this.sndNxt;
    if (this.sndMax !== this.sndUna && !this.rtoAt) this.rtoAt = this.env.now() + this.rto;
    // Zero-window probing: data waits, nothing is in flight, the guest's window is shut.
    const waiting = this.sendQLen - seqDiff(this.sndNxt, this.sndUna) > 0;
    if (waiting && this.sndNxt === this.sndUna && this.sndWnd === 0) {
      if (!this.persistAt) {
        this.persistMs = this.env.rto.initialMs;
        this.persistAt = this.env.now() + this.persistMs;
      }
    } else {
      this.persistAt = 0;
    }
  }

  private emitData(off: number, n: number, fin: boolean): void {
    const h = this.hdr;
    h.seq = this.sndNxt;
    h.ack = this.rcvNxt;
    h.flags = TCP_ACK | (n > 0 && off + n === this.sendQLen ? TCP_PSH : 0) | (fin ? TCP_FIN : 0);
    h.window = this.windowField();
    // Locate byte `off` in the queue (usually the head chunk: bulk sends advance in order).
    let c = 0;
    let skip = this.sendQOff + off;
    while (c < this.sendQ.length && skip >= this.sendQ[c]!.length) {
      skip -= this.sendQ[c]!.length;
      c++;
    }
    this.env.emit(buildTcp(h, c === 0 ? this.sendQ : this.sendQ.slice(c), skip, n));
    this.ackNeeded = false;
  }

  private finSent(): void {
    if (this.state === 'ESTABLISHED') this.setState('FIN_WAIT_1');
    else if (this.state === 'CLOSE_WAIT') this.setState('LAST_ACK');
  }

  /** Resend from sndUna, restarting with one segment's worth and doubling per ACK (RFC 5681 after an RTO). */
  private goBackN(): void {
    this.recoverSeq = this.sndMax;
    this.cwnd = Math.max(1, Math.min(this.guestMss, this.env.mss));
    this.sndNxt = this.sndUna;
    this.dupAcks = 0;
    this.trySend();
  }

  // -------------------------------------------------------------------------------------------
  // Timers

  tick(now: number): void {
    if (this.state === 'CLOSED') return;
    if (this.state === 'TIME_WAIT') {
      if (now >= this.timeWaitAt) this.close('CLOSED');
      return;
    }
    if (this.rtoAt && now >= this.rtoAt && this.env.linkBlocked()) {
      // Our own writer is backed up: the guest's ACKs are late because our frames are, not
      // lost. Wait without spending a retry (or resending into the backlog).
      this.rtoAt = now + this.rto;
    } else if (this.rtoAt && now >= this.rtoAt && this.sndWnd === 0 && CAN_SEND.has(this.state)) {
      // Bytes in flight into a window the guest has since shut: probe it like a persist timer
      // (no retry spent: a guest that is slow to read is not a dead one).
      this.sendRaw(seqAdd(this.sndUna, -1), this.rcvNxt, TCP_ACK, this.windowField());
      this.rto = Math.min(this.env.rto.maxMs, this.rto * 2);
      this.rtoAt = now + this.rto;
    } else if (this.rtoAt && now >= this.rtoAt) {
      if (++this.retries > this.env.rto.maxRetries) {
        this.abort(new NetworkError(`connection ${flowText(this.flow)} timed out: the guest stopped acknowledging`));
        return;
      }
      this.rto = Math.min(this.env.rto.maxMs, this.rto * 2);
      this.rtoAt = now + this.rto;
      if (this.state === 'SYN_RCVD' || this.state === 'SYN_SENT') this.sendSyn();
      else this.goBackN();
      this.flushAck();
    }
    if (this.persistAt && now >= this.persistAt) {
      // Linux's own probe: an ACK one below sndUna is outside the guest's window, so it answers
      // with an ACK carrying its current window.
      this.sendRaw(seqAdd(this.sndUna, -1), this.rcvNxt, TCP_ACK, this.windowField());
      this.persistMs = Math.min(this.env.rto.maxMs, this.persistMs * 2);
      this.persistAt = now + this.persistMs;
    }
  }

  /** Give up: RST to the guest, stream destroyed with `err`. */
  abort(err: Error): void {
    if (this.state === 'CLOSED') return;
    if (this.state !== 'PENDING') this.sendRaw(this.sndNxt, this.rcvNxt, TCP_RST | TCP_ACK, 0);
    this.failConnect(err);
    const s = this.stream;
    this.close('CLOSED');
    if (s) destroyStream(s, err);
  }

  /** Stack shutdown: drop silently (the link is going away). */
  shutdown(err: Error): void {
    this.failConnect(err);
    const s = this.stream;
    this.close('CLOSED');
    if (s) destroyStream(s, err);
  }

  /** Drop a TIME_WAIT connection whose address pair a new SYN reuses (the stream is done already). */
  forget(): void {
    this.close('CLOSED');
  }

  private enterTimeWait(): void {
    this.rtoAt = 0;
    this.persistAt = 0;
    this.timeWaitAt = this.env.now() + this.env.timeWaitMs;
    if (this.state !== 'TIME_WAIT') this.setState('TIME_WAIT');
  }

  private close(to: 'CLOSED'): void {
    if (this.state === 'CLOSED') return;
    this.rtoAt = 0;
    this.persistAt = 0;
    this.timeWaitAt = 0;
    this.sendQ = [];
    const freed = this.sendQLen;
    this.sendQLen = 0;
    this.env.queued.bytes -= freed;
    this.setState(to);
    this.countReceived(); // no window promised any more
    if (freed > 0) this.env.onFreed();
  }

  private setState(to: TcpState): void {
    const from = this.state;
    if (from === to) return;
    this.state = to;
    this.env.onState(this, from, to);
  }

  /**
   * The payload as it will sit in the stream's buffer. A view is kept only when it is at least
   * half of the memory it pins (frames are views of socket chunks of up to 64 KiB, so a 1-byte
   * segment would otherwise hold a whole chunk: the windows count payload bytes, not chunks).
   * Smaller payloads are copied into this flow's own receive blocks (not Node's shared pool,
   * whose 8 KiB slabs a stray byte could pin too), so what a flow retains stays within about
   * twice what it is counted for, plus one block.
   */
  private ownPayload(frame: Buffer, off: number, len: number): Buffer {
    if (len * 2 >= frame.buffer.byteLength) return frame.subarray(off, off + len);
    let b = this.rxBlock;
    if (!b || this.rxBlockOff + len > b.length) {
      b = this.rxBlock = Buffer.allocUnsafeSlow(Math.max(RX_BLOCK, len));
      this.rxBlockOff = 0;
    }
    const at = this.rxBlockOff;
    frame.copy(b, at, off, off + len);
    this.rxBlockOff = at + len;
    return b.subarray(at, at + len);
  }

  private rxBlock: Buffer | null = null;
  private rxBlockOff = 0;

  /** Deliver data/FIN to the stream after the segment's state changes, then send what is due. */
  private flushEvents(): void {
    const s = this.stream;
    if (s && !s.destroyed) {
      const data = this.pendingData;
      if (data.length) {
        this.pendingData = [];
        for (const d of data) s.push(d);
      }
      if (this.pendingEnd) {
        this.pendingEnd = false;
        s.push(null);
      }
      this.countReceived();
    } else {
      this.pendingData = [];
      this.pendingEnd = false;
    }
    this.trySend();
    this.flushAck();
  }
}

/** Receive block for copied small payloads (see ownPayload). */
const RX_BLOCK = 4096;

/** The smallest receive window a flow gets when the stack-wide budget is spent. */
const RCV_FLOOR = 16 * 1024;

/** Smallest shift that fits the buffer into the 16-bit window field. */
function shiftFor(bytes: number): number {
  let s = 0;
  while (s < 14 && bytes >>> s > 0xffff) s++;
  return s;
}

export function flowText(f: FlowKey): string {
  return `${f.srcIp}:${f.srcPort} → ${f.dstIp}:${f.dstPort}`;
}
