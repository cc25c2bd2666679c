// NetStack demux without a VM: ARP, ICMP echo, dropping foreign and malformed frames, UDP to the
// handler, unknown-flow RSTs, the caps under a SYN flood, and active opens towards the guest.
import { describe, expect, it } from 'vitest';
import { COUNTER } from '../../src/net/types.js';
import {
  buildArp,
  buildTcp,
  checksum,
  ETHERTYPE_ARP,
  intToIp,
  ipToInt,
  parseArp,
  parseEth,
  seqAdd,
} from '../../src/net/frames.js';
import { asUdp, GUEST_IP, GUEST_MAC, GuestTcp, GW_IP, GW_MAC, Harness, settle, TCP_ACK, TCP_FIN, TCP_PSH, TCP_RST, TCP_SYN, udpFrame } from './net-guest.js';

const ZERO_MAC = Buffer.alloc(6);

function arpRequest(target: string, senderIp = GUEST_IP, senderMac = GUEST_MAC): Buffer {
  return buildArp(1, Buffer.alloc(6, 0xff), senderMac, senderIp, ZERO_MAC, ipToInt(target));
}

/** ICMP echo request frame from the guest. */
function ping(dst: string, id = 0x1234, seq = 1, data = Buffer.from('boxlite ping')): Buffer {
  const icmpLen = 8 + data.length;
  const f = Buffer.alloc(14 + 20 + icmpLen);
  GW_MAC.copy(f, 0);
  GUEST_MAC.copy(f, 6);
  f.writeUInt16BE(0x0800, 12);
  f[14] = 0x45;
  f.writeUInt16BE(20 + icmpLen, 16);
  f[22] = 64;
  f[23] = 1;
  f.writeUInt32BE(GUEST_IP, 26);
  f.writeUInt32BE(ipToInt(dst), 30);
  f.writeUInt16BE(checksum(f, 14, 34), 24);
  f[34] = 8;
  f.writeUInt16BE(id, 38);
  f.writeUInt16BE(seq, 40);
  data.copy(f, 42);
  f.writeUInt16BE(checksum(f, 34, f.length), 36);
  return f;
}

function dropped(h: Harness): number {
  return Number(h.counters[COUNTER.droppedFrames]);
}

describe('ARP', () => {
  it('answers every address but the guest own with the gateway MAC', () => {
    const h = new Harness();
    for (const target of ['192.168.127.1', '192.168.127.254', '192.168.127.77', '10.1.2.3']) {
      h.stack.input(arpRequest(target));
      const [reply] = h.take();
      const eth = parseEth(reply!)!;
      expect(eth.type).toBe(ETHERTYPE_ARP);
      expect(eth.dst.equals(GUEST_MAC)).toBe(true);
      const a = parseArp(reply!, eth.off)!;
      expect(a.op).toBe(2);
      expect(a.senderMac.equals(GW_MAC)).toBe(true);
      expect(intToIp(a.senderIp)).toBe(target);
      expect(a.targetMac.equals(GUEST_MAC)).toBe(true);
      expect(a.targetIp).toBe(GUEST_IP);
    }
  });

  it('stays silent for the guest own address (duplicate address detection) and for foreign senders', () => {
    const h = new Harness();
    h.stack.input(arpRequest('192.168.127.2'));
    h.stack.input(arpRequest('192.168.127.1', ipToInt('192.168.127.9')));
    expect(h.take()).toHaveLength(0);
    expect(dropped(h)).toBe(1);
  });
});

describe('ICMP', () => {
  it('echoes pings to the gateway and the host alias, not to other hosts', () => {
    const h = new Harness();
    h.stack.input(ping('192.168.127.1', 7, 9));
    h.stack.input(ping('192.168.127.254', 7, 10));
    const replies = h.take();
    expect(replies).toHaveLength(2);
    const r = replies[0]!;
    expect(checksum(r, 14, 34)).toBe(0);
    expect(checksum(r, 34, r.length)).toBe(0);
    expect(r[34]).toBe(0); // echo reply
    expect(r.readUInt16BE(38)).toBe(7);
    expect(r.readUInt16BE(40)).toBe(9);
    expect(r.subarray(42).toString()).toBe('boxlite ping');
    expect(r.readUInt32BE(26)).toBe(GW_IP);
    expect(r.readUInt32BE(30)).toBe(GUEST_IP);
    h.stack.input(ping('8.8.8.8'));
    expect(h.take()).toHaveLength(0);
  });
});

describe('dropping', () => {
  it('drops and counts frames from a foreign MAC or IP, fragments, bad checksums, IPv6 and runts', () => {
    const h = new Harness();
    const good = ping('192.168.127.1');
    const foreignMac = Buffer.from(good);
    foreignMac[11] ^= 1;
    const foreignIp = ping('192.168.127.1');
    foreignIp.writeUInt32BE(ipToInt('192.168.127.3'), 26);
    foreignIp.writeUInt16BE(0, 24);
    foreignIp.writeUInt16BE(checksum(foreignIp, 14, 34), 24);
    const frag = Buffer.from(good);
    frag.writeUInt16BE(0x2000, 20); // MF
    frag.writeUInt16BE(0, 24);
    frag.writeUInt16BE(checksum(frag, 14, 34), 24);
    const fragOff = Buffer.from(good);
    fragOff.writeUInt16BE(0x0010, 20);
    fragOff.writeUInt16BE(0, 24);
    fragOff.writeUInt16BE(checksum(fragOff, 14, 34), 24);
    const badSum = Buffer.from(good);
    badSum[24] ^= 0xff;
    const v6 = Buffer.from(good);
    v6.writeUInt16BE(0x86dd, 12);
    const badTcp = new GuestTcp(h).frame(TCP_SYN);
    badTcp[badTcp.length - 1] ^= 0x55;
    for (const f of [foreignMac, foreignIp, frag, fragOff, badSum, v6, good.subarray(0, 10), good.subarray(0, 30), Buffer.alloc(0), badTcp]) h.stack.input(f);
    expect(h.take()).toHaveLength(0);
    expect(h.pendings).toHaveLength(0);
    expect(dropped(h)).toBe(10);
    expect(h.stack.stats().droppedFrames).toBe(10);
    h.stack.input(good);
    expect(h.take()).toHaveLength(1);
  });

  it('accepts IPv4 options and trims Ethernet padding', () => {
    const h = new Harness();
    const p = ping('192.168.127.1');
    // Rebuild with a 4-byte NOP option block (IHL 6) and 10 bytes of trailing padding.
    const withOpt = Buffer.alloc(p.length + 4 + 10);
    p.copy(withOpt, 0, 0, 34);
    withOpt.fill(1, 34, 38);
    p.copy(withOpt, 38, 34);
    withOpt[14] = 0x46;
    withOpt.writeUInt16BE(p.length - 14 + 4, 16);
    withOpt.writeUInt16BE(0, 24);
    withOpt.writeUInt16BE(checksum(withOpt, 14, 38), 24);
    h.stack.input(withOpt);
    const [r] = h.take();
    expect(r!.subarray(42).toString()).toBe('boxlite ping');
  });

  it('drops TCP/UDP towards broadcast, multicast, loopback and the guest itself', () => {
    const h = new Harness();
    for (const dst of ['255.255.255.255', '192.168.127.255', '224.0.0.251', '127.0.0.1', '192.168.127.2', '0.0.0.0']) {
      h.stack.input(udpFrame(5353, dst, 5353, Buffer.from('x')));
      h.stack.input(new GuestTcp(h, { dstIp: dst }).frame(TCP_SYN));
    }
    expect(h.datagrams).toHaveLength(0);
    expect(h.pendings).toHaveLength(0);
    expect(h.take()).toHaveLength(0);
    expect(dropped(h)).toBe(12);
  });
});

describe('UDP', () => {
  it('hands datagrams to the handler; reply() answers from the original destination or `from`; unreachable() sends ICMP', () => {
    const h = new Harness();
    h.stack.input(udpFrame(33333, '192.168.127.1', 53, Buffer.from('query')));
    expect(h.datagrams).toHaveLength(1);
    const d = h.datagrams[0]!;
    expect(d.flow).toEqual({ proto: 'udp', srcIp: '192.168.127.2', srcPort: 33333, dstIp: '192.168.127.1', dstPort: 53 });
    expect(d.payload.toString()).toBe('query');
    d.reply(Buffer.from('answer'));
    d.reply(Buffer.from('other'), { ip: '10.9.8.7', port: 5300 });
    const [a, b] = h.take().map((f) => asUdp(f)!);
    expect(a).toMatchObject({ srcIp: GW_IP, dstIp: GUEST_IP, srcPort: 53, dstPort: 33333 });
    expect(a!.payload.toString()).toBe('answer');
    expect(b).toMatchObject({ srcIp: ipToInt('10.9.8.7'), srcPort: 5300, dstPort: 33333 });
    d.unreachable();
    const [icmp] = h.take();
    expect(icmp![34]).toBe(3);
    expect(icmp![35]).toBe(3); // port unreachable
    expect(icmp!.readUInt32BE(26)).toBe(GW_IP); // from the original destination
    expect(icmp!.readUInt16BE(42 + 20)).toBe(33333); // quoted UDP header: source port
    expect(h.stack.stats().udpFlows).toBe(1);
  });

  it('drops a datagram with a bad checksum but accepts checksum 0 (none)', () => {
    const h = new Harness();
    const f = udpFrame(1000, '198.18.0.1', 7, Buffer.from('abc'));
    const bad = Buffer.from(f);
    bad[bad.length - 1] ^= 1;
    const none = Buffer.from(bad);
    none.writeUInt16BE(0, 40);
    h.stack.input(bad);
    h.stack.input(none);
    expect(h.datagrams.map((d) => d.payload.toString())).toEqual(['abb']);
  });

  it('caps the UDP flow table by evicting the least recently used flow, never by dropping', () => {
    const h = new Harness({ maxUdpFlows: 10, udpIdleMs: 5000 });
    for (let p = 1; p <= 30; p++) h.stack.input(udpFrame(2000 + p, '198.18.0.1', 9, Buffer.from('x')));
    expect(h.datagrams).toHaveLength(30); // a flood of destinations cannot starve new flows (e.g. DNS)
    expect(h.stack.stats()).toMatchObject({ udpFlows: 10, udpEvicted: 20 });
    h.stack.input(udpFrame(33333, '192.168.127.1', 53, Buffer.from('dns')));
    expect(h.datagrams.at(-1)!.payload.toString()).toBe('dns');
    h.advance(6000);
    expect(h.stack.stats().udpFlows).toBe(0); // idle flows leave
    // Inbound sessions take room too, and guest flows make way for them.
    for (let p = 1; p <= 10; p++) h.stack.input(udpFrame(4000 + p, '198.18.0.1', 9, Buffer.from('x')));
    const sessions = Array.from({ length: 10 }, () => h.stack.openUdpToGuest(53, () => {}));
    expect(h.stack.stats().udpFlows).toBe(10);
    expect(() => h.stack.openUdpToGuest(53, () => {})).toThrow(/^network error: too many UDP sessions/);
    sessions[0]!.close();
    expect(() => h.stack.openUdpToGuest(53, () => {})).not.toThrow();
  });

  it('openUdpToGuest: datagrams from the gateway, replies to onReply (not the handler), close() frees', () => {
    const h = new Harness();
    const replies: string[] = [];
    const s = h.stack.openUdpToGuest(5353, (p) => replies.push(p.toString()));
    s.send(Buffer.from('ping'));
    const [u] = h.take().map((f) => asUdp(f)!);
    expect(u).toMatchObject({ srcIp: GW_IP, dstIp: GUEST_IP, dstPort: 5353 });
    expect(u!.srcPort).toBeGreaterThanOrEqual(49152);
    h.stack.input(udpFrame(5353, '192.168.127.1', u!.srcPort, Buffer.from('pong')));
    expect(replies).toEqual(['pong']);
    expect(h.datagrams).toHaveLength(0);
    s.close();
    h.stack.input(udpFrame(5353, '192.168.127.1', u!.srcPort, Buffer.from('late')));
    expect(replies).toEqual(['pong']);
    expect(h.datagrams).toHaveLength(1); // now an ordinary guest flow
  });
});

describe('TCP demux and caps', () => {
  it('answers a segment of an unknown flow with RST (ACK → seq=ack; no ACK → ack=seq+len)', () => {
    const h = new Harness();
    const g = new GuestTcp(h);
    g.send(TCP_ACK | TCP_PSH, Buffer.from('stale'), { seq: 5000, ack: 777 });
    const [r1] = h.takeTcp();
    expect(r1).toMatchObject({ flags: TCP_RST, seq: 777 });
    g.send(TCP_FIN, Buffer.alloc(0), { seq: 9000 });
    const [r2] = h.takeTcp();
    expect(r2).toMatchObject({ flags: TCP_RST | TCP_ACK, seq: 0, ack: 9001 });
    g.send(TCP_RST, Buffer.alloc(0), { seq: 1 });
    expect(h.take()).toHaveLength(0);
  });

  it('a SYN flood beyond maxHalfOpen gets RSTs and the tables stay bounded', () => {
    const h = new Harness({ maxHalfOpen: 16, maxTcpFlows: 64 });
    h.onTcp = () => {}; // never decides
    for (let i = 0; i < 1000; i++) new GuestTcp(h, { srcPort: 1024 + i }).syn();
    const rsts = h.takeTcp();
    expect(rsts).toHaveLength(1000 - 16);
    expect(rsts.every((r) => r.flags === (TCP_RST | TCP_ACK))).toBe(true);
    expect(h.stack.stats()).toMatchObject({ tcpFlows: 16, halfOpen: 16, rejectedSyns: 984 });
    // No verdict in time: ICMP unreachable and the table drains.
    h.advance(30_001);
    expect(h.take()).toHaveLength(16);
    expect(h.stack.stats()).toMatchObject({ tcpFlows: 0, halfOpen: 0 });
  });

  it('maxTcpFlows caps established flows too', () => {
    const h = new Harness({ maxHalfOpen: 100, maxTcpFlows: 5 });
    for (let i = 0; i < 5; i++) new GuestTcp(h, { srcPort: 2000 + i }).handshake();
    h.take();
    new GuestTcp(h, { srcPort: 3000 }).syn();
    const [r] = h.takeTcp();
    expect(r!.flags & TCP_RST).toBeTruthy();
    expect(h.stack.stats()).toMatchObject({ tcpFlows: 5, halfOpen: 0 });
  });

  it('an accept after the guest gave up yields a stream that closes at once', async () => {
    const h = new Harness();
    const g = new GuestTcp(h);
    g.syn();
    g.send(TCP_RST, Buffer.alloc(0), { seq: 1001 });
    expect(h.stack.stats().tcpFlows).toBe(0);
    const s = h.pendings.pop()!.accept();
    let closed = false;
    s.on('close', () => (closed = true));
    await settle();
    expect(closed).toBe(true);
    expect(h.take()).toHaveLength(0);
  });

  it('a handler that throws is a refusal, not a crash', () => {
    const h = new Harness();
    h.onTcp = () => {
      throw new Error('boom');
    };
    new GuestTcp(h).syn();
    const [r] = h.takeTcp();
    expect(r!.flags & TCP_RST).toBeTruthy();
    expect(h.logs.join('\n')).toMatch(/boom/);
  });

  it('a new SYN on a TIME_WAIT pair starts a fresh connection', () => {
    const h = new Harness();
    const g = new GuestTcp(h, { srcPort: 4444 });
    const { stream } = g.handshake();
    stream.resume();
    stream.end();
    return settle().then(() => {
      const [fin] = h.takeTcp();
      g.ackAll([fin!]);
      g.send(TCP_ACK | TCP_FIN);
      h.take();
      expect(h.stack.stats().tcpFlows).toBe(1);
      g.seq = seqAdd(g.seq, 100_000);
      g.syn();
      expect(h.pendings).toHaveLength(1);
    });
  });
});

describe('connectToGuest', () => {
  it('SYN from the gateway, SYN-ACK, ACK → a stream carrying data both ways', async () => {
    const h = new Harness();
    const p = h.stack.connectToGuest(8080);
    const [syn] = h.takeTcp();
    expect(syn).toMatchObject({ flags: TCP_SYN, dstPort: 8080, mss: 65480 });
    expect(syn!.wscale).toBeGreaterThan(0);
    expect(syn!.ip.src).toBe(GW_IP);
    expect(syn!.srcPort).toBeGreaterThanOrEqual(49152);
    expect(h.stack.stats().halfOpen).toBe(1);
    // The guest's SYN-ACK.
    const synAck = buildTcp(
      { ethDst: GW_MAC, ethSrc: GUEST_MAC, src: GUEST_IP, dst: GW_IP, srcPort: 8080, dstPort: syn!.srcPort, seq: 5000, ack: seqAdd(syn!.seq, 1), flags: TCP_SYN | TCP_ACK, window: 0xffff, mss: 1460, wscale: 7 },
    );
    h.stack.input(synAck);
    const stream = await p;
    const [ack] = h.takeTcp();
    expect(ack).toMatchObject({ flags: TCP_ACK, ack: 5001 });
    expect(stream.flow).toEqual({ proto: 'tcp', srcIp: '192.168.127.1', srcPort: syn!.srcPort, dstIp: '192.168.127.2', dstPort: 8080 });
    expect(h.stack.stats()).toMatchObject({ tcpFlows: 1, halfOpen: 0 });
    stream.write(Buffer.alloc(3000, 1));
    expect(h.takeTcp().map((s) => s.payload.length)).toEqual([1460, 1460, 80]); // guest MSS 1460
    const got: Buffer[] = [];
    stream.on('data', (d: Buffer) => got.push(d));
    await settle();
    h.stack.input(
      buildTcp({ ethDst: GW_MAC, ethSrc: GUEST_MAC, src: GUEST_IP, dst: GW_IP, srcPort: 8080, dstPort: syn!.srcPort, seq: 5001, ack: seqAdd(syn!.seq, 3001), flags: TCP_ACK | TCP_PSH, window: 100 }, [Buffer.from('hi')], 0, 2),
    );
    await settle();
    expect(Buffer.concat(got).toString()).toBe('hi');
  });

  it('rejects with a NetworkError when the guest answers RST, and on timeout', async () => {
    const h = new Harness({ synTimeoutMs: 5000 });
    const p = h.stack.connectToGuest(9999);
    const [syn] = h.takeTcp();
    h.stack.input(buildTcp({ ethDst: GW_MAC, ethSrc: GUEST_MAC, src: GUEST_IP, dst: GW_IP, srcPort: 9999, dstPort: syn!.srcPort, seq: 0, ack: seqAdd(syn!.seq, 1), flags: TCP_RST | TCP_ACK, window: 0 }));
    await expect(p).rejects.toThrow(/^network error: connection refused by the guest on port 9999/);
    expect(h.stack.stats()).toMatchObject({ tcpFlows: 0, halfOpen: 0 });
    const q = h.stack.connectToGuest(9998);
    h.advance(1000);
    expect(h.takeTcp().filter((s) => s.flags === TCP_SYN)).toHaveLength(2); // the SYN, resent once
    h.advance(4001);
    await expect(q).rejects.toThrow(/timed out/);
    expect(h.stack.stats().tcpFlows).toBe(0);
    await expect(h.stack.connectToGuest(0)).rejects.toThrow(/^network error: invalid guest port/);
  });

  it('close() ends every stream and refuses new work', async () => {
    const h = new Harness();
    const g = new GuestTcp(h);
    const { stream } = g.handshake();
    const errs: Error[] = [];
    stream.on('error', (e) => errs.push(e));
    h.stack.close();
    await settle();
    expect(stream.destroyed).toBe(true);
    expect(errs[0]?.message).toMatch(/network stack closed/);
    expect(h.stack.stats().tcpFlows).toBe(0);
    h.take();
    h.stack.input(new GuestTcp(h).frame(TCP_SYN));
    expect(h.take()).toHaveLength(0);
    await expect(h.stack.connectToGuest(80)).rejects.toThrow(/closed/);
  });
});

describe('TCP table full of TIME_WAIT', () => {
  it('evicts a TIME_WAIT connection to admit a new SYN', async () => {
    const h = new Harness({ maxTcpFlows: 2 });
    for (const port of [1001, 1002]) {
      const g = new GuestTcp(h, { srcPort: port });
      const { stream } = g.handshake();
      stream.resume();
      stream.end();
      await settle();
      const fin = h.takeTcp().at(-1)!;
      g.ackAll([fin]);
      g.send(TCP_ACK | TCP_FIN);
    }
    h.take();
    expect(h.stack.stats().tcpFlows).toBe(2); // both in TIME_WAIT
    new GuestTcp(h, { srcPort: 1003 }).syn();
    expect(h.pendings).toHaveLength(1);
    expect(h.take()).toHaveLength(0); // no RST
    expect(h.stack.stats().tcpFlows).toBe(2);
  });
});
