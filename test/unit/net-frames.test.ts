// The frame codecs (src/net/frames.ts): checksums against RFC 1071 and a reference loop, header
// round trips, TCP options, and every parser's refusal of truncated or inconsistent input.
import crypto from 'node:crypto';
import { describe, expect, it } from 'vitest';
import {
  buildTcp,
  buildUdp,
  buildUnreachable,
  checksum,
  intToIp,
  ipToInt,
  macToBuf,
  bufToMac,
  parseEth,
  parseIpv4,
  parseTcp,
  parseUdp,
  pseudoSum,
  seqLt,
  seqAdd,
  TCP_ACK,
  TCP_SYN,
  type Ipv4Packet,
} from '../../src/net/frames.js';

const A = ipToInt('192.168.127.2');
const B = ipToInt('198.18.0.10');
const M1 = macToBuf('52:54:00:12:34:56');
const M2 = macToBuf('52:54:00:12:34:01');

/** The textbook 16-bit loop, as an independent reference. */
function refChecksum(buf: Buffer, init = 0): number {
  let s = init;
  for (let i = 0; i < buf.length; i += 2) s += (buf[i]! << 8) + (i + 1 < buf.length ? buf[i + 1]! : 0);
  while (s > 0xffff) s = (s & 0xffff) + Math.floor(s / 0x10000);
  return ~s & 0xffff;
}

function ipOf(frame: Buffer): Ipv4Packet {
  const ip = parseIpv4(frame, 14);
  if (typeof ip === 'string') throw new Error(ip);
  return ip;
}

describe('checksum', () => {
  it('matches the RFC 1071 example and a reference loop on random lengths and offsets', () => {
    // RFC 1071 §3: 00 01 f2 03 f4 f5 f6 f7 sums to ddf2 → checksum 220d.
    expect(checksum(Buffer.from('0001f203f4f5f6f7', 'hex'), 0, 8)).toBe(0x220d);
    for (let i = 0; i < 300; i++) {
      const b = crypto.randomBytes(crypto.randomInt(0, 3000));
      const start = b.length ? crypto.randomInt(0, Math.min(b.length, 7) + 1) : 0;
      const init = crypto.randomInt(0, 0x3ffff);
      expect(checksum(b, start, b.length, init)).toBe(refChecksum(b.subarray(start), init));
    }
    const big = Buffer.alloc(65535, 0xff);
    expect(checksum(big, 0, big.length)).toBe(refChecksum(big));
  });
});

describe('addresses and sequence numbers', () => {
  it('converts IPv4 and MAC text both ways and refuses malformed text', () => {
    expect(intToIp(ipToInt('255.0.10.1'))).toBe('255.0.10.1');
    expect(ipToInt('0.0.0.1')).toBe(1);
    for (const bad of ['1.2.3', '1.2.3.256', 'a.b.c.d', '1.2.3.4.5', '']) expect(() => ipToInt(bad)).toThrow();
    expect(bufToMac(macToBuf('AA:bb:01:02:03:04'))).toBe('aa:bb:01:02:03:04');
    expect(() => macToBuf('aa:bb')).toThrow();
  });

  it('compares sequence numbers modulo 2^32', () => {
    expect(seqLt(0xfffffff0, 5)).toBe(true);
    expect(seqLt(5, 0xfffffff0)).toBe(false);
    expect(seqAdd(0xffffffff, 2)).toBe(1);
  });
});

describe('TCP codec', () => {
  it('round-trips a SYN with MSS and window scale and a data segment gathered from chunks', () => {
    const syn = buildTcp({ ethDst: M2, ethSrc: M1, src: A, dst: B, srcPort: 40000, dstPort: 443, seq: 0xfffffffe, ack: 0, flags: TCP_SYN, window: 64240, mss: 65480, wscale: 7 });
    const eth = parseEth(syn)!;
    expect(eth.src.equals(M1)).toBe(true);
    const ip = ipOf(syn);
    expect(ip).toMatchObject({ proto: 6, src: A, dst: B, fragment: false, ttl: 64 });
    const t = parseTcp(syn, ip)!;
    expect(t).toMatchObject({ srcPort: 40000, dstPort: 443, seq: 0xfffffffe, flags: TCP_SYN, window: 64240, mss: 65480, wscale: 7 });
    const chunks = [Buffer.from('abc'), Buffer.from('defg'), Buffer.from('hij')];
    const data = buildTcp({ ethDst: M2, ethSrc: M1, src: A, dst: B, srcPort: 1, dstPort: 2, seq: 5, ack: 6, flags: TCP_ACK, window: 1 }, chunks, 2, 6);
    const dt = parseTcp(data, ipOf(data))!;
    expect(data.subarray(dt.payloadOff, dt.end).toString()).toBe('cdefgh');
    expect(dt.mss).toBeUndefined();
  });

  it('skips SACK-permitted, timestamps and NOPs; clamps wscale to 14; stops at malformed options', () => {
    const base = buildTcp({ ethDst: M2, ethSrc: M1, src: A, dst: B, srcPort: 1, dstPort: 2, seq: 0, ack: 0, flags: TCP_SYN, window: 0 });
    // Linux's SYN options: MSS, SACK-permitted, timestamps, NOP, wscale (20 bytes).
    const opts = Buffer.from('020405b4' + '0402' + '080a0000000100000000' + '01' + '03030f', 'hex');
    const withOpts = (o: Buffer): Buffer => {
      const f = Buffer.alloc(base.length + o.length);
      base.copy(f, 0, 0, 54);
      o.copy(f, 54);
      f.writeUInt16BE(40 + o.length, 16);
      f.writeUInt16BE(0, 24);
      f.writeUInt16BE(checksum(f, 14, 34), 24);
      f[46] = ((20 + o.length) / 4) << 4;
      f.writeUInt16BE(0, 50);
      f.writeUInt16BE(checksum(f, 34, f.length, pseudoSum(A, B, 6, 20 + o.length)), 50);
      return f;
    };
    const f = withOpts(opts);
    expect(parseTcp(f, ipOf(f))).toMatchObject({ mss: 1460, wscale: 14 });
    // A length byte running past the header, a zero length, and an option cut short.
    for (const bad of ['020405b40310ffff', '0200000000000000', '02040101000000']) {
      const padded = Buffer.concat([Buffer.from(bad, 'hex'), Buffer.alloc((4 - (bad.length / 2) % 4) % 4)]);
      const g = withOpts(padded);
      const seg = parseTcp(g, ipOf(g));
      expect(seg).not.toBeNull();
    }
  });

  it('refuses truncated headers, bad data offsets and bad checksums', () => {
    const f = buildTcp({ ethDst: M2, ethSrc: M1, src: A, dst: B, srcPort: 1, dstPort: 2, seq: 0, ack: 0, flags: TCP_ACK, window: 0 }, [Buffer.from('xyz')], 0, 3);
    const ip = ipOf(f);
    expect(parseTcp(f, { ...ip, end: ip.payloadOff + 19 })).toBeNull();
    const off = Buffer.from(f);
    off[46] = 0x40; // data offset 16 < 20
    expect(parseTcp(off, ipOf(off), false)).toBeNull();
    off[46] = 0xf0; // 60 > segment length
    expect(parseTcp(off, ipOf(off), false)).toBeNull();
    const sum = Buffer.from(f);
    sum[sum.length - 1] ^= 1;
    expect(parseTcp(sum, ipOf(sum))).toBeNull();
    expect(parseTcp(sum, ipOf(sum), false)).not.toBeNull();
  });
});

describe('IPv4, UDP, ICMP codecs', () => {
  it('refuses short, wrong-version, inconsistent-length and bad-checksum IPv4 headers', () => {
    const f = buildUdp(M2, M1, A, 1000, B, 53, Buffer.from('q'));
    expect(parseIpv4(f.subarray(0, 30), 14)).toBe('short');
    const v = Buffer.from(f);
    v[14] = 0x65;
    expect(parseIpv4(v, 14)).toBe('version');
    const ihl = Buffer.from(f);
    ihl[14] = 0x44;
    expect(parseIpv4(ihl, 14)).toBe('short');
    const len = Buffer.from(f);
    len.writeUInt16BE(200, 16);
    expect(parseIpv4(len, 14)).toBe('length');
    len.writeUInt16BE(10, 16);
    expect(parseIpv4(len, 14)).toBe('length');
    const ck = Buffer.from(f);
    ck[22] = 1;
    expect(parseIpv4(ck, 14)).toBe('checksum');
  });

  it('builds UDP with a valid checksum and refuses bad UDP lengths', () => {
    const f = buildUdp(M2, M1, A, 1000, B, 53, Buffer.from('hello'));
    const ip = ipOf(f);
    const u = parseUdp(f, ip)!;
    expect(u).toMatchObject({ srcPort: 1000, dstPort: 53 });
    expect(f.subarray(u.payloadOff, u.end).toString()).toBe('hello');
    const short = Buffer.from(f);
    short.writeUInt16BE(7, 38);
    expect(parseUdp(short, ipOf(short))).toBeNull();
    const long = Buffer.from(f);
    long.writeUInt16BE(100, 38);
    expect(parseUdp(long, ipOf(long))).toBeNull();
  });

  it('unreachable quotes the offending IP header and 8 bytes of its payload', () => {
    const orig = buildUdp(M2, M1, A, 1234, B, 9, Buffer.alloc(100, 7));
    const u = buildUnreachable(3, orig.subarray(14), B, A, M1, M2);
    const ip = ipOf(u);
    expect(ip.end - ip.payloadOff).toBe(8 + 20 + 8);
    expect(checksum(u, ip.payloadOff, ip.end)).toBe(0);
    expect(u.subarray(ip.payloadOff + 8).equals(orig.subarray(14, 14 + 28))).toBe(true);
  });
});
