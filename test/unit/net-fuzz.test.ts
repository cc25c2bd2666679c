// Property test of the frame entry point (as test/protocol fuzzes the agent codec): ~20k random,
// truncated and mutated frames — many with their checksums repaired so they reach the TCP/UDP
// state machines — into NetStack.input(). It must never throw, every frame it sends must be
// well formed, and its tables and memory must stay bounded. Seeded, so a failure reproduces.
import { describe, expect, it } from 'vitest';
import { checksum, parseEth, parseIpv4, parseTcp, parseUdp, pseudoSum, PROTO_TCP, PROTO_UDP } from '../../src/net/frames.js';
import type { GuestStream } from '../../src/net/types.js';
import { GuestTcp, GUEST_IP, Harness, TCP_ACK, TCP_FIN, TCP_PSH, TCP_RST, TCP_SYN, udpFrame } from './net-guest.js';

/** mulberry32: small, fast, seedable. */
function rng(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

/** Recompute the IPv4 and L4 checksums of a (possibly mutated) frame where its lengths allow. */
function repair(f: Buffer): void {
  if (f.length < 34 || f.readUInt16BE(12) !== 0x0800) return;
  const ihl = (f[14]! & 15) * 4;
  if (ihl < 20 || f.length < 14 + ihl) return;
  f.writeUInt16BE(0, 24);
  f.writeUInt16BE(checksum(f, 14, 14 + ihl), 24);
  const total = f.readUInt16BE(16);
  if (total < ihl || 14 + total > f.length) return;
  const o = 14 + ihl;
  const len = total - ihl;
  const proto = f[23]!;
  const src = f.readUInt32BE(26);
  const dst = f.readUInt32BE(30);
  if (proto === PROTO_TCP && len >= 20) {
    f.writeUInt16BE(0, o + 16);
    f.writeUInt16BE(checksum(f, o, o + len, pseudoSum(src, dst, PROTO_TCP, len)), o + 16);
  } else if (proto === PROTO_UDP && len >= 8) {
    const ulen = f.readUInt16BE(o + 4);
    if (ulen < 8 || ulen > len) return;
    f.writeUInt16BE(0, o + 6);
    f.writeUInt16BE(checksum(f, o, o + ulen, pseudoSum(src, dst, PROTO_UDP, ulen)) || 0xffff, o + 6);
  } else if (proto === 1 && len >= 4) {
    f.writeUInt16BE(0, o + 2);
    f.writeUInt16BE(checksum(f, o, o + len), o + 2);
  }
}

/** Everything the stack sends must parse back with valid checksums and go to the guest. */
function checkOut(f: Buffer): void {
  const eth = parseEth(f);
  expect(eth).not.toBeNull();
  if (eth!.type === 0x0806) return;
  const ip = parseIpv4(f, 14);
  expect(typeof ip).not.toBe('string');
  if (typeof ip === 'string') return;
  expect(ip.dst).toBe(GUEST_IP);
  expect(f.length).toBeLessThanOrEqual(65520 + 14);
  if (ip.proto === PROTO_TCP) expect(parseTcp(f, ip)).not.toBeNull();
  else if (ip.proto === PROTO_UDP) expect(parseUdp(f, ip)).not.toBeNull();
  else expect(checksum(f, ip.payloadOff, ip.end)).toBe(0);
}

describe('NetStack fuzz', () => {
  it('survives 20k random and mutated frames with bounded tables and memory', async () => {
    // NET_FUZZ_SEED reruns with another seed (the default is fixed so CI failures reproduce).
    const seed = Number(process.env.NET_FUZZ_SEED ?? 0x9b0c5e11);
    const rand = rng(seed);
    const int = (n: number) => Math.floor(rand() * n);
    const limits = { maxTcpFlows: 40, maxHalfOpen: 20, maxUdpFlows: 100, rcvBufferPerFlow: 64 * 1024, maxBufferedPerFlow: 64 * 1024 };
    const h = new Harness(limits, undefined, rng(seed ^ 0x5a5a));
    let outCount = 0;
    const streams: GuestStream[] = [];
    // The handler decides at random: accept (then read, pause, write, end or reset), refuse, ignore.
    h.onTcp = (p) => {
      const r = int(10);
      if (r < 6) {
        const s = p.accept();
        s.on('error', () => {});
        if (int(3)) s.resume();
        if (int(2)) s.write(Buffer.alloc(int(200_000), 0x61));
        if (!int(4)) s.end();
        if (!int(8)) s.destroy();
        streams.push(s);
      } else if (r < 8) {
        p.reject(int(2) ? 'refused' : 'unreachable');
      }
    };
    h.onUdp = (d) => {
      const r = int(3);
      if (r === 0) d.reply(Buffer.alloc(int(1000)));
      else if (r === 1) d.unreachable();
    };
    // Seeds: a few flows' worth of valid frames to mutate.
    const guests = Array.from({ length: 12 }, (_, i) => new GuestTcp(h, { srcPort: 30000 + i, dstPort: [80, 443, 22][i % 3]!, wscale: i % 2 ? 7 : undefined }));
    const seedFrame = (): Buffer => {
      const g = guests[int(guests.length)]!;
      const kind = int(8);
      if (kind === 0) return int(2) ? g.frame(TCP_SYN) : new GuestTcp(h, { srcPort: 1 + int(65535), dstPort: 1 + int(1000) }).frame(TCP_SYN); // a flood
      if (kind === 1) return g.frame(TCP_ACK, Buffer.alloc(0), { seq: g.seq, ack: (g.ack + int(3000)) >>> 0 });
      if (kind === 2) return g.frame(TCP_ACK | TCP_PSH, Buffer.alloc(int(65_480), 0x62), { seq: g.seq, ack: g.ack });
      if (kind === 3) return g.frame(TCP_ACK | TCP_FIN, Buffer.alloc(0), { seq: g.seq, ack: g.ack });
      if (kind === 4) return g.frame(TCP_RST, Buffer.alloc(0), { seq: (g.seq + int(3) - 1) >>> 0 });
      if (kind === 5) return udpFrame(20000 + int(300), `198.18.${int(4)}.${int(250) + 1}`, 53, Buffer.alloc(int(600)));
      if (kind === 6) {
        const f = udpFrame(1, '192.168.127.1', 1, Buffer.alloc(0));
        f.writeUInt16BE(0x0806, 12); // ARP-typed garbage of IPv4 bytes
        return f;
      }
      return g.frame(int(64), Buffer.alloc(int(100)), { seq: (rand() * 2 ** 32) >>> 0, ack: (rand() * 2 ** 32) >>> 0, window: int(65536) });
    };
    const heap0 = process.memoryUsage().heapUsed;
    let maxTcp = 0;
    let maxHalf = 0;
    let maxUdp = 0;
    for (let i = 0; i < 20_000; i++) {
      let f: Buffer;
      const mode = int(10);
      if (mode === 0) {
        f = Buffer.alloc(int(1600));
        for (let j = 0; j < f.length; j++) f[j] = int(256);
      } else {
        f = Buffer.from(seedFrame());
        if (mode <= 4) {
          const flips = 1 + int(6);
          for (let k = 0; k < flips && f.length; k++) f[int(Math.min(f.length, 80))]! ^= 1 << int(8);
          if (int(2)) repair(f);
        } else if (mode <= 6) {
          f = f.subarray(0, int(f.length + 1));
        } else if (mode === 7) {
          f = Buffer.concat([f, Buffer.alloc(int(64), 0xee)]); // trailing junk
        }
        // else: the valid frame as is, to advance the flows
      }
      // Keep the guests roughly in step with what the stack says (so data/ACK/FIN paths are hit).
      expect(() => h.stack.input(f)).not.toThrow();
      for (const o of h.take()) {
        checkOut(o);
        outCount++;
        const eth = parseEth(o)!;
        const ip = parseIpv4(o, eth.off);
        if (typeof ip === 'string' || ip.proto !== PROTO_TCP) continue;
        const t = parseTcp(o, ip)!;
        const g = guests.find((x) => x.srcPort === t.dstPort);
        if (g && t.flags & TCP_SYN) g.ack = (t.seq + 1) >>> 0;
        else if (g && int(2)) g.ack = (t.seq + (t.end - t.payloadOff)) >>> 0;
      }
      if (i % 50 === 0) {
        h.clock += int(3000);
        h.stack.tick();
        await new Promise((r) => setImmediate(r));
      }
      for (const g of guests) if (!int(40)) g.seq = (g.seq + int(70_000)) >>> 0;
      const st = h.stack.stats();
      maxTcp = Math.max(maxTcp, st.tcpFlows);
      maxHalf = Math.max(maxHalf, st.halfOpen);
      maxUdp = Math.max(maxUdp, st.udpFlows);
      expect(st.halfOpen).toBeGreaterThanOrEqual(0);
    }
    expect(maxTcp).toBeLessThanOrEqual(limits.maxTcpFlows);
    expect(maxHalf).toBeLessThanOrEqual(limits.maxHalfOpen);
    expect(maxUdp).toBeLessThanOrEqual(limits.maxUdpFlows);
    expect(maxTcp).toBeGreaterThan(0); // the fuzz did reach the TCP paths
    expect(outCount).toBeGreaterThan(1000);
    expect(h.stack.stats().droppedFrames).toBeGreaterThan(1000);
    // Run every timer out: all flows end, nothing leaks.
    for (let i = 0; i < 40; i++) {
      h.clock += 60_000;
      h.stack.tick();
      await new Promise((r) => setImmediate(r));
    }
    for (const s of streams) s.destroy();
    h.take();
    await new Promise((r) => setImmediate(r));
    h.advance(60_000);
    // …and the byte accounting (send queue, receive budget) returns to zero: no leak in either.
    expect(h.stack.stats()).toMatchObject({ tcpFlows: 0, halfOpen: 0, udpFlows: 0, queuedBytes: 0, receivedBytes: 0 });
    streams.length = 0;
    globalThis.gc?.();
    expect(process.memoryUsage().heapUsed - heap0).toBeLessThan(200 * 1024 * 1024);
  }, 120_000);
});
