// Ethernet II / ARP / IPv4 / ICMP / UDP / TCP codecs for the box's virtual link (stack.ts, tcp.ts).
//
// Every byte parsed here comes from an untrusted guest: parsers return null on anything
// malformed and never read outside the frame (no exceptions from a socket handler). Builders
// allocate each outgoing frame once and copy the payload into it once; checksums are computed
// over 32-bit words (the link has no checksum offload: QEMU `-netdev stream` carries no vnet
// header, so the guest computes full checksums and so must we).

export const ETH_HLEN = 14;
export const ETHERTYPE_IPV4 = 0x0800;
export const ETHERTYPE_ARP = 0x0806;
export const IP_HLEN = 20;
export const TCP_HLEN = 20;
export const UDP_HLEN = 8;
export const PROTO_ICMP = 1;
export const PROTO_TCP = 6;
export const PROTO_UDP = 17;

export const TCP_FIN = 0x01;
export const TCP_SYN = 0x02;
export const TCP_RST = 0x04;
export const TCP_PSH = 0x08;
export const TCP_ACK = 0x10;
export const TCP_URG = 0x20;

const BROADCAST_MAC = Buffer.from([0xff, 0xff, 0xff, 0xff, 0xff, 0xff]);

// ---------------------------------------------------------------------------------------------
// Addresses

/** Dotted IPv4 → unsigned 32-bit number; throws on malformed input (config only, never guest bytes). */
export function ipToInt(ip: string): number {
  const parts = ip.split('.');
  if (parts.length !== 4) throw new TypeError(`not an IPv4 address: ${ip}`);
  let n = 0;
  for (const p of parts) {
    if (!/^\d{1,3}$/.test(p)) throw new TypeError(`not an IPv4 address: ${ip}`);
    const v = Number(p);
    if (v > 255) throw new TypeError(`not an IPv4 address: ${ip}`);
    n = n * 256 + v;
  }
  return n >>> 0;
}

export function intToIp(n: number): string {
  return `${n >>> 24}.${(n >>> 16) & 255}.${(n >>> 8) & 255}.${n & 255}`;
}

/** "52:54:00:12:34:56" → 6-byte Buffer; throws on malformed input (config only). */
export function macToBuf(mac: string): Buffer {
  const parts = mac.split(/[:-]/);
  if (parts.length !== 6 || parts.some((p) => !/^[0-9a-fA-F]{2}$/.test(p))) throw new TypeError(`not a MAC address: ${mac}`);
  return Buffer.from(parts.map((p) => parseInt(p, 16)));
}

export function bufToMac(b: Buffer, off = 0): string {
  const h: string[] = [];
  for (let i = 0; i < 6; i++) h.push(b[off + i]!.toString(16).padStart(2, '0'));
  return h.join(':');
}

// ---------------------------------------------------------------------------------------------
// Checksums (RFC 1071)

/**
 * Unfolded ones'-complement sum of buf[start, end) as big-endian 16-bit words (an odd tail is
 * padded with zero). Sums 32-bit words into a double (exact up to 2^53, i.e. ~8 MiB of input),
 * folding only at the end: this is the hot loop of bulk transfers.
 */
export function sumWords(buf: Buffer, start: number, end: number, initial = 0): number {
  let sum = initial;
  let i = start;
  const end4 = end - ((end - start) & 3);
  for (; i < end4; i += 4) {
    sum += buf[i]! * 0x1000000 + (buf[i + 1]! << 16) + (buf[i + 2]! << 8) + buf[i + 3]!;
  }
  if (i + 1 < end) {
    sum += (buf[i]! << 8) + buf[i + 1]!;
    i += 2;
  }
  if (i < end) sum += buf[i]! << 8;
  return sum;
}

/** Fold a sumWords result to 16 bits and complement: the checksum field value. */
export function foldChecksum(sum: number): number {
  // Fold 32-bit words first (a double may hold more than 32 bits of carries).
  while (sum > 0xffffffff) sum = (sum % 0x100000000) + Math.floor(sum / 0x100000000);
  sum = (sum & 0xffff) + (sum >>> 16);
  sum = (sum & 0xffff) + (sum >>> 16);
  return ~sum & 0xffff;
}

export function checksum(buf: Buffer, start: number, end: number, initial = 0): number {
  return foldChecksum(sumWords(buf, start, end, initial));
}

/** Pseudo-header sum for TCP/UDP over IPv4. */
export function pseudoSum(src: number, dst: number, proto: number, length: number): number {
  return (src >>> 16) + (src & 0xffff) + (dst >>> 16) + (dst & 0xffff) + proto + length;
}

// ---------------------------------------------------------------------------------------------
// Ethernet

export interface EthFrame {
  dst: Buffer;
  src: Buffer;
  type: number;
  /** Offset of the payload in the frame. */
  off: number;
}

export function parseEth(frame: Buffer): EthFrame | null {
  if (frame.length < ETH_HLEN) return null;
  const type = frame.readUInt16BE(12);
  // 802.1Q tags or 802.3 lengths: not something a Linux guest with a plain virtio NIC sends us.
  return { dst: frame.subarray(0, 6), src: frame.subarray(6, 12), type, off: ETH_HLEN };
}

function writeEth(out: Buffer, dst: Buffer, src: Buffer, type: number): void {
  dst.copy(out, 0, 0, 6);
  src.copy(out, 6, 0, 6);
  out.writeUInt16BE(type, 12);
}

// ---------------------------------------------------------------------------------------------
// ARP (Ethernet/IPv4 only)

export interface ArpPacket {
  op: number;
  senderMac: Buffer;
  senderIp: number;
  targetMac: Buffer;
  targetIp: number;
}

export function parseArp(frame: Buffer, off: number): ArpPacket | null {
  if (frame.length < off + 28) return null;
  if (frame.readUInt16BE(off) !== 1 || frame.readUInt16BE(off + 2) !== ETHERTYPE_IPV4) return null;
  if (frame[off + 4] !== 6 || frame[off + 5] !== 4) return null;
  return {
    op: frame.readUInt16BE(off + 6),
    senderMac: frame.subarray(off + 8, off + 14),
    senderIp: frame.readUInt32BE(off + 14),
    targetMac: frame.subarray(off + 18, off + 24),
    targetIp: frame.readUInt32BE(off + 24),
  };
}

export function buildArp(op: number, ethDst: Buffer, senderMac: Buffer, senderIp: number, targetMac: Buffer, targetIp: number): Buffer {
  const out = Buffer.alloc(ETH_HLEN + 28);
  writeEth(out, ethDst, senderMac, ETHERTYPE_ARP);
  const o = ETH_HLEN;
  out.writeUInt16BE(1, o);
  out.writeUInt16BE(ETHERTYPE_IPV4, o + 2);
  out[o + 4] = 6;
  out[o + 5] = 4;
  out.writeUInt16BE(op, o + 6);
  senderMac.copy(out, o + 8, 0, 6);
  out.writeUInt32BE(senderIp >>> 0, o + 14);
  targetMac.copy(out, o + 18, 0, 6);
  out.writeUInt32BE(targetIp >>> 0, o + 24);
  return out;
}

export function arpRequestFrame(senderMac: Buffer, senderIp: number, targetIp: number): Buffer {
  return buildArp(1, BROADCAST_MAC, senderMac, senderIp, Buffer.alloc(6), targetIp);
}

// ---------------------------------------------------------------------------------------------
// IPv4

export interface Ipv4Packet {
  /** Offset of the IP header in the frame. */
  off: number;
  ihl: number;
  totalLength: number;
  id: number;
  /** More-fragments flag or a non-zero fragment offset. */
  fragment: boolean;
  ttl: number;
  proto: number;
  src: number;
  dst: number;
  /** Payload [payloadOff, end) in the frame (Ethernet padding excluded). */
  payloadOff: number;
  end: number;
}

export type Ipv4Error = 'short' | 'version' | 'length' | 'checksum';

/** Parse and verify an IPv4 header; a string names why the packet is invalid. */
export function parseIpv4(frame: Buffer, off: number): Ipv4Packet | Ipv4Error {
  if (frame.length < off + IP_HLEN) return 'short';
  const vihl = frame[off]!;
  if (vihl >> 4 !== 4) return 'version';
  const ihl = (vihl & 15) * 4;
  if (ihl < IP_HLEN || frame.length < off + ihl) return 'short';
  const totalLength = frame.readUInt16BE(off + 2);
  if (totalLength < ihl || off + totalLength > frame.length) return 'length';
  if (checksum(frame, off, off + ihl) !== 0) return 'checksum';
  const fl = frame.readUInt16BE(off + 6);
  return {
    off,
    ihl,
    totalLength,
    id: frame.readUInt16BE(off + 4),
    fragment: (fl & 0x2000) !== 0 || (fl & 0x1fff) !== 0,
    ttl: frame[off + 8]!,
    proto: frame[off + 9]!,
    src: frame.readUInt32BE(off + 12),
    dst: frame.readUInt32BE(off + 16),
    payloadOff: off + ihl,
    end: off + totalLength,
  };
}

let ipId = 0;

/** Write Ethernet + a 20-byte IPv4 header (DF set, TTL 64) into out; returns the L4 offset. */
function writeEthIp(out: Buffer, ethDst: Buffer, ethSrc: Buffer, src: number, dst: number, proto: number, l4Length: number): number {
  writeEth(out, ethDst, ethSrc, ETHERTYPE_IPV4);
  const o = ETH_HLEN;
  out[o] = 0x45;
  out[o + 1] = 0;
  out.writeUInt16BE(IP_HLEN + l4Length, o + 2);
  ipId = (ipId + 1) & 0xffff;
  out.writeUInt16BE(ipId, o + 4);
  out.writeUInt16BE(0x4000, o + 6); // DF: we never fragment, and the guest never needs to
  out[o + 8] = 64;
  out[o + 9] = proto;
  out.writeUInt16BE(0, o + 10);
  out.writeUInt32BE(src >>> 0, o + 12);
  out.writeUInt32BE(dst >>> 0, o + 16);
  out.writeUInt16BE(checksum(out, o, o + IP_HLEN), o + 10);
  return o + IP_HLEN;
}

// ---------------------------------------------------------------------------------------------
// ICMP

export interface IcmpPacket {
  type: number;
  code: number;
  /** ICMP message [off, end) in the frame. */
  off: number;
  end: number;
}

export function parseIcmp(frame: Buffer, ip: Ipv4Packet): IcmpPacket | null {
  if (ip.end - ip.payloadOff < 8) return null;
  if (checksum(frame, ip.payloadOff, ip.end) !== 0) return null;
  return { type: frame[ip.payloadOff]!, code: frame[ip.payloadOff + 1]!, off: ip.payloadOff, end: ip.end };
}

function buildIcmp(ethDst: Buffer, ethSrc: Buffer, src: number, dst: number, type: number, code: number, rest: Buffer, body: Buffer): Buffer {
  const len = 4 + rest.length + body.length;
  const out = Buffer.allocUnsafe(ETH_HLEN + IP_HLEN + len);
  const o = writeEthIp(out, ethDst, ethSrc, src, dst, PROTO_ICMP, len);
  out[o] = type;
  out[o + 1] = code;
  out.writeUInt16BE(0, o + 2);
  rest.copy(out, o + 4);
  body.copy(out, o + 4 + rest.length);
  out.writeUInt16BE(checksum(out, o, o + len), o + 2);
  return out;
}

/** Echo reply for an echo request (type 8) parsed from `frame`: same id, sequence and data. */
export function buildEchoReply(frame: Buffer, ip: Ipv4Packet, icmp: IcmpPacket, ethDst: Buffer, ethSrc: Buffer): Buffer {
  return buildIcmp(ethDst, ethSrc, ip.dst, ip.src, 0, 0, frame.subarray(icmp.off + 4, icmp.off + 8), frame.subarray(icmp.off + 8, icmp.end));
}

export const ICMP_HOST_UNREACHABLE = 1;
export const ICMP_PORT_UNREACHABLE = 3;

/**
 * Destination unreachable (type 3) quoting the offending datagram's IP header + first 8 bytes
 * of its payload (`quoted` starts at that IP header), as RFC 792 asks.
 */
export function buildUnreachable(code: number, quoted: Buffer, from: number, to: number, ethDst: Buffer, ethSrc: Buffer): Buffer {
  const ihl = quoted.length >= 1 ? (quoted[0]! & 15) * 4 : 0;
  const body = quoted.subarray(0, Math.min(quoted.length, ihl + 8));
  return buildIcmp(ethDst, ethSrc, from, to, 3, code, Buffer.alloc(4), body);
}

// ---------------------------------------------------------------------------------------------
// UDP

export interface UdpDatagram {
  srcPort: number;
  dstPort: number;
  payloadOff: number;
  end: number;
}

/** Parse a UDP header; verifies the checksum when the guest set one (0 = none, legal on IPv4). */
export function parseUdp(frame: Buffer, ip: Ipv4Packet): UdpDatagram | null {
  const o = ip.payloadOff;
  if (ip.end - o < UDP_HLEN) return null;
  const len = frame.readUInt16BE(o + 4);
  if (len < UDP_HLEN || o + len > ip.end) return null;
  const ck = frame.readUInt16BE(o + 6);
  if (ck !== 0 && checksum(frame, o, o + len, pseudoSum(ip.src, ip.dst, PROTO_UDP, len)) !== 0) return null;
  return { srcPort: frame.readUInt16BE(o), dstPort: frame.readUInt16BE(o + 2), payloadOff: o + UDP_HLEN, end: o + len };
}

export function buildUdp(ethDst: Buffer, ethSrc: Buffer, src: number, srcPort: number, dst: number, dstPort: number, payload: Buffer): Buffer {
  const len = UDP_HLEN + payload.length;
  const out = Buffer.allocUnsafe(ETH_HLEN + IP_HLEN + len);
  const o = writeEthIp(out, ethDst, ethSrc, src, dst, PROTO_UDP, len);
  out.writeUInt16BE(srcPort, o);
  out.writeUInt16BE(dstPort, o + 2);
  out.writeUInt16BE(len, o + 4);
  out.writeUInt16BE(0, o + 6);
  payload.copy(out, o + UDP_HLEN);
  const ck = checksum(out, o, o + len, pseudoSum(src, dst, PROTO_UDP, len));
  out.writeUInt16BE(ck === 0 ? 0xffff : ck, o + 6);
  return out;
}

// ---------------------------------------------------------------------------------------------
// TCP

export interface TcpSegment {
  srcPort: number;
  dstPort: number;
  seq: number;
  ack: number;
  flags: number;
  /** Raw (unscaled) window field. */
  window: number;
  /** MSS option, when present (SYN only by RFC; we read it anywhere). */
  mss?: number;
  /** Window-scale shift option, when present (clamped to 14 as RFC 7323 says). */
  wscale?: number;
  /** Payload [payloadOff, end) in the frame. */
  payloadOff: number;
  end: number;
}

/** Parse a TCP header + options and verify the checksum. */
export function parseTcp(frame: Buffer, ip: Ipv4Packet, verifyChecksum = true): TcpSegment | null {
  const o = ip.payloadOff;
  const len = ip.end - o;
  if (len < TCP_HLEN) return null;
  const doff = (frame[o + 12]! >> 4) * 4;
  if (doff < TCP_HLEN || doff > len) return null;
  if (verifyChecksum && checksum(frame, o, ip.end, pseudoSum(ip.src, ip.dst, PROTO_TCP, len)) !== 0) return null;
  const seg: TcpSegment = {
    srcPort: frame.readUInt16BE(o),
    dstPort: frame.readUInt16BE(o + 2),
    seq: frame.readUInt32BE(o + 4),
    ack: frame.readUInt32BE(o + 8),
    flags: frame[o + 13]! & 0x3f,
    window: frame.readUInt16BE(o + 14),
    payloadOff: o + doff,
    end: ip.end,
  };
  // Options: only MSS and window scale matter; SACK-permitted and timestamps are ignored (we do
  // not offer them, so the guest must not use them).
  let i = o + TCP_HLEN;
  const oend = o + doff;
  while (i < oend) {
    const kind = frame[i]!;
    if (kind === 0) break;
    if (kind === 1) {
      i++;
      continue;
    }
    if (i + 1 >= oend) break;
    const olen = frame[i + 1]!;
    if (olen < 2 || i + olen > oend) break;
    if (kind === 2 && olen === 4) seg.mss = frame.readUInt16BE(i + 2);
    else if (kind === 3 && olen === 3) seg.wscale = Math.min(14, frame[i + 2]!);
    i += olen;
  }
  return seg;
}

export interface TcpHeaderSpec {
  ethDst: Buffer;
  ethSrc: Buffer;
  src: number;
  dst: number;
  srcPort: number;
  dstPort: number;
  seq: number;
  ack: number;
  flags: number;
  window: number;
  /** SYN options: MSS and (when set) window scale. */
  mss?: number;
  wscale?: number;
}

/**
 * Build one TCP segment. The payload is gathered from `chunks` starting `skip` bytes into the
 * first chunk, `length` bytes in all, and copied straight into the frame (the only copy).
 */
export function buildTcp(h: TcpHeaderSpec, chunks: readonly Buffer[] = [], skip = 0, length = 0): Buffer {
  const optLen = h.mss !== undefined ? (h.wscale !== undefined ? 8 : 4) : 0;
  const thl = TCP_HLEN + optLen;
  const l4 = thl + length;
  const out = Buffer.allocUnsafe(ETH_HLEN + IP_HLEN + l4);
  const o = writeEthIp(out, h.ethDst, h.ethSrc, h.src, h.dst, PROTO_TCP, l4);
  out.writeUInt16BE(h.srcPort, o);
  out.writeUInt16BE(h.dstPort, o + 2);
  out.writeUInt32BE(h.seq >>> 0, o + 4);
  out.writeUInt32BE(h.ack >>> 0, o + 8);
  out[o + 12] = (thl / 4) << 4;
  out[o + 13] = h.flags;
  out.writeUInt16BE(h.window & 0xffff, o + 14);
  out.writeUInt32BE(0, o + 16); // checksum + urgent pointer
  if (optLen) {
    out[o + 20] = 2;
    out[o + 21] = 4;
    out.writeUInt16BE(h.mss! & 0xffff, o + 22);
    if (h.wscale !== undefined) {
      out[o + 24] = 1; // NOP, then the 3-byte window-scale option
      out[o + 25] = 3;
      out[o + 26] = 3;
      out[o + 27] = h.wscale;
    }
  }
  let w = o + thl;
  let left = length;
  for (let c = 0; c < chunks.length && left > 0; c++) {
    const ch = chunks[c]!;
    const from = c === 0 ? skip : 0;
    const n = Math.min(left, ch.length - from);
    if (n <= 0) continue;
    ch.copy(out, w, from, from + n);
    w += n;
    left -= n;
  }
  if (left > 0) throw new RangeError('buildTcp: chunks shorter than length'); // a bug of ours, never guest input
  out.writeUInt16BE(checksum(out, o, o + l4, pseudoSum(h.src, h.dst, PROTO_TCP, l4)), o + 16);
  return out;
}

// ---------------------------------------------------------------------------------------------
// Sequence-number arithmetic (mod 2^32)

export function seqLt(a: number, b: number): boolean {
  return ((a - b) | 0) < 0;
}
export function seqLe(a: number, b: number): boolean {
  return ((a - b) | 0) <= 0;
}
export function seqDiff(a: number, b: number): number {
  return (a - b) | 0;
}
export function seqAdd(a: number, n: number): number {
  return (a + n) >>> 0;
}
