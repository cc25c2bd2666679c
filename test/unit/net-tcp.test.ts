// Scripted TCP exchanges between a fake Linux guest (net-guest.ts) and the NetStack: handshake,
// windows both ways, zero window, FIN/RST from each side, retransmission on a fake clock.
import crypto from 'node:crypto';
import net from 'node:net';
import tls from 'node:tls';
import { describe, expect, it } from 'vitest';
import { createBoxCa } from '../../src/net/ca.js';
import { GuestPeer, GuestTcp, Harness, settle, udpFrame, TCP_ACK, TCP_FIN, TCP_PSH, TCP_RST, TCP_SYN, type OutTcp } from './net-guest.js';

function endSeq(s: OutTcp): number {
  return (s.seq + s.payload.length + (s.flags & TCP_SYN ? 1 : 0) + (s.flags & TCP_FIN ? 1 : 0)) >>> 0;
}

describe('TCP handshake', () => {
  it('holds the SYN for a verdict, absorbs retransmitted SYNs, then SYN-ACKs with MSS and window scale', () => {
    const h = new Harness();
    const g = new GuestTcp(h, { dstPort: 443, wscale: 7 });
    g.syn();
    expect(h.pendings).toHaveLength(1);
    expect(h.take()).toHaveLength(0); // nothing until the verdict
    g.send(TCP_SYN, Buffer.alloc(0), { seq: 1000 }); // retransmitted SYN
    expect(h.pendings).toHaveLength(1);
    expect(h.stack.stats()).toMatchObject({ tcpFlows: 1, halfOpen: 1 });
    const p = h.pendings[0]!;
    expect(p.flow).toEqual({ proto: 'tcp', srcIp: '192.168.127.2', srcPort: g.srcPort, dstIp: '198.18.0.10', dstPort: 443 });
    const stream = p.accept();
    const [sa] = h.takeTcp();
    expect(sa!.flags).toBe(TCP_SYN | TCP_ACK);
    expect(sa!.ack).toBe(1001);
    expect(sa!.mss).toBe(65480);
    expect(sa!.wscale).toBeGreaterThan(0);
    expect(sa!.srcPort).toBe(443);
    expect(sa!.dstPort).toBe(g.srcPort);
    g.ack = (sa!.seq + 1) >>> 0;
    g.send(TCP_ACK);
    expect(h.stack.stats()).toMatchObject({ tcpFlows: 1, halfOpen: 0 });
    expect(stream.flow.dstPort).toBe(443);
  });

  it('does not scale windows when the guest offers no window scale', () => {
    const h = new Harness();
    const g = new GuestTcp(h, { wscale: undefined });
    const { synAck } = g.handshake();
    expect(synAck.wscale).toBeUndefined();
    expect(synAck.window).toBe(0xffff);
  });

  it("reject('refused') answers RST, reject('unreachable') ICMP host unreachable, and both free the flow", () => {
    const h = new Harness();
    const a = new GuestTcp(h);
    a.syn();
    h.pendings.pop()!.reject('refused');
    const [rst] = h.takeTcp();
    expect(rst!.flags & TCP_RST).toBeTruthy();
    expect(rst!.ack).toBe(1001);
    const b = new GuestTcp(h);
    b.syn();
    h.pendings.pop()!.reject('unreachable');
    const [icmp] = h.take();
    expect(icmp![14 + 9]).toBe(1); // IP proto ICMP
    expect(icmp![34]).toBe(3); // destination unreachable
    expect(icmp![35]).toBe(1); // host unreachable
    expect(h.stack.stats()).toMatchObject({ tcpFlows: 0, halfOpen: 0 });
  });
});

describe('TCP data', () => {
  it('delivers guest data to the stream and ACKs it', async () => {
    const h = new Harness();
    const g = new GuestTcp(h);
    const { stream } = g.handshake();
    const got: Buffer[] = [];
    stream.on('data', (d: Buffer) => got.push(d));
    g.send(TCP_ACK | TCP_PSH, Buffer.from('hello '));
    g.send(TCP_ACK | TCP_PSH, Buffer.from('world'));
    await settle();
    expect(Buffer.concat(got).toString()).toBe('hello world');
    const acks = h.takeTcp();
    expect(acks.at(-1)!.ack).toBe(g.seq);
  });

  it('never sends beyond a small guest window and sends the rest as the window opens', async () => {
    const h = new Harness();
    const g = new GuestTcp(h, { wscale: 0, window: 1000 });
    const { stream } = g.handshake();
    h.take();
    const data = crypto.randomBytes(5000);
    stream.write(data);
    let segs = h.takeTcp();
    expect(segs.reduce((n, s) => n + s.payload.length, 0)).toBe(1000);
    const got: Buffer[] = segs.map((s) => s.payload);
    while (got.reduce((n, b) => n + b.length, 0) < 5000) {
      g.ackAll(segs, 1000);
      segs = h.takeTcp();
      expect(segs.reduce((n, s) => n + s.payload.length, 0)).toBeLessThanOrEqual(1000);
      expect(segs.length).toBeGreaterThan(0);
      got.push(...segs.map((s) => s.payload));
    }
    expect(Buffer.concat(got).equals(data)).toBe(true);
  });

  it('coalesces queued data into segments up to the guest MSS', () => {
    const h = new Harness();
    const g = new GuestTcp(h, { wscale: 0, window: 0, mss: 1460 });
    const { stream } = g.handshake();
    h.take();
    for (let i = 0; i < 10; i++) stream.write(Buffer.alloc(300, i));
    g.window = 0xffff;
    g.send(TCP_ACK); // window update
    const segs = h.takeTcp();
    expect(segs.map((s) => s.payload.length)).toEqual([1460, 1460, 80]);
  });

  it('holds write() once the queue beyond the window exceeds the limit and drains as the guest ACKs', async () => {
    const h = new Harness({ maxBufferedPerFlow: 10_000 });
    const g = new GuestTcp(h, { wscale: 0, window: 2000 });
    const { stream } = g.handshake();
    let ok = true;
    let writes = 0;
    while (ok && writes < 100) {
      ok = stream.write(Buffer.alloc(4096));
      writes++;
    }
    expect(ok).toBe(false);
    expect(writes).toBeLessThan(30);
    let drained = false;
    stream.once('drain', () => (drained = true));
    for (let i = 0; i < 200 && !drained; i++) {
      g.ackAll(h.takeTcp(), 60_000);
      await settle();
    }
    expect(drained).toBe(true);
  });
});

describe('TCP close', () => {
  it('guest FIN ends the readable side; our end() FINs after the queued data; then close', async () => {
    const h = new Harness();
    const g = new GuestTcp(h);
    const { stream } = g.handshake();
    h.take();
    const events: string[] = [];
    stream.on('end', () => events.push('end'));
    stream.on('finish', () => events.push('finish'));
    stream.on('close', () => events.push('close'));
    stream.resume();
    g.send(TCP_ACK | TCP_FIN);
    await settle();
    expect(events).toEqual(['end']);
    let segs = h.takeTcp();
    expect(segs.at(-1)!.ack).toBe(g.seq); // FIN acked
    stream.end(Buffer.from('bye'));
    segs = h.takeTcp();
    const last = segs.at(-1)!;
    expect(last.flags & TCP_FIN).toBeTruthy();
    expect(Buffer.concat(segs.map((s) => s.payload)).toString()).toBe('bye');
    g.ack = endSeq(last);
    g.send(TCP_ACK);
    await settle();
    expect(events).toEqual(['end', 'finish', 'close']);
    expect(h.stack.stats().tcpFlows).toBe(0);
  });
});

describe('TCP windows', () => {
  it('scales the guest window by its window-scale shift', () => {
    const h = new Harness();
    const g = new GuestTcp(h, { wscale: 4, window: 100 }); // 1600 bytes
    const { stream } = g.handshake();
    h.take();
    stream.write(Buffer.alloc(10_000));
    expect(h.takeTcp().reduce((n, s) => n + s.payload.length, 0)).toBe(1600);
  });

  it('queues data written before the handshake completes and sends it on the final ACK', () => {
    const h = new Harness();
    const g = new GuestTcp(h);
    g.syn();
    const stream = h.pendings.pop()!.accept();
    stream.write(Buffer.from('banner\r\n'));
    const [sa] = h.takeTcp();
    expect(sa!.flags).toBe(TCP_SYN | TCP_ACK);
    g.ack = (sa!.seq + 1) >>> 0;
    g.send(TCP_ACK);
    const segs = h.takeTcp();
    expect(Buffer.concat(segs.map((s) => s.payload)).toString()).toBe('banner\r\n');
    expect(segs[0]!.seq).toBe(g.ack);
  });

  it('zero guest window: nothing is sent, a probe follows on the timer, data flows when the window reopens', () => {
    const h = new Harness();
    const g = new GuestTcp(h, { wscale: 0, window: 0 });
    const { stream } = g.handshake();
    h.take();
    stream.write(Buffer.from('waiting'));
    expect(h.take()).toHaveLength(0);
    h.advance(999);
    expect(h.take()).toHaveLength(0);
    h.advance(2);
    const [probe] = h.takeTcp();
    expect(probe!.payload.length).toBe(0);
    expect(probe!.seq).toBe((g.ack - 1) >>> 0); // Linux-style probe: one below snd.una
    h.advance(1000);
    expect(h.take()).toHaveLength(0); // backoff: the next probe comes after 2 s
    h.advance(1001);
    expect(h.takeTcp()).toHaveLength(1);
    g.window = 100;
    g.send(TCP_ACK); // the guest's answer to the probe, with an open window
    const segs = h.takeTcp();
    expect(Buffer.concat(segs.map((s) => s.payload)).toString()).toBe('waiting');
    h.advance(10_000);
    expect(h.takeTcp().every((s) => s.payload.length > 0)).toBe(true); // no probes, only RTO resends
  });

  it('a paused consumer shrinks our advertised window to 0; reading reopens it with an update', async () => {
    const h = new Harness({ rcvBufferPerFlow: 64 * 1024 });
    const g = new GuestTcp(h, { wscale: 7 });
    const { stream, synAck } = g.handshake();
    const shift = synAck.wscale!;
    h.take();
    stream.pause();
    const chunk = Buffer.alloc(16 * 1024, 1);
    let lastWnd = -1;
    for (let i = 0; i < 4; i++) {
      g.send(TCP_ACK | TCP_PSH, chunk);
      const acks = h.takeTcp();
      lastWnd = acks.at(-1)!.window << shift;
      expect(acks.at(-1)!.ack).toBe(g.seq);
    }
    expect(lastWnd).toBe(0);
    // A segment beyond the zero window is not accepted (ACKed with the old ack).
    g.send(TCP_ACK | TCP_PSH, Buffer.from('x'));
    const [dup] = h.takeTcp();
    expect(dup!.ack).toBe((g.seq - 1) >>> 0);
    expect(dup!.window).toBe(0);
    g.seq = (g.seq - 1) >>> 0;
    expect(stream.readableLength).toBe(64 * 1024);
    let got = 0;
    stream.on('data', (d: Buffer) => (got += d.length));
    stream.resume();
    await settle();
    expect(got).toBe(64 * 1024);
    const upd = h.takeTcp();
    expect(upd.length).toBeGreaterThan(0);
    expect(upd.at(-1)!.window << shift).toBeGreaterThanOrEqual(32 * 1024);
  });

  it('accepts only what fits in the advertised window of a segment that overruns it', () => {
    const h = new Harness({ rcvBufferPerFlow: 1000 });
    const g = new GuestTcp(h, { wscale: undefined });
    const { stream } = g.handshake();
    h.take();
    stream.pause();
    g.send(TCP_ACK | TCP_PSH, Buffer.alloc(1500, 2));
    const [a] = h.takeTcp();
    expect(a!.ack).toBe((g.seq - 500) >>> 0);
    expect(a!.window).toBe(0);
    expect(stream.readableLength).toBe(1000);
  });
});

describe('TCP ordering', () => {
  it('drops out-of-order data with a duplicate ACK, re-ACKs old data, trims a partial overlap', async () => {
    const h = new Harness();
    const g = new GuestTcp(h);
    const { stream } = g.handshake();
    h.take();
    const got: Buffer[] = [];
    stream.on('data', (d: Buffer) => got.push(d));
    await settle();
    const base = g.seq;
    g.send(TCP_ACK, Buffer.from('world'), { seq: (base + 5) >>> 0 }); // ahead of 'hello '
    let [a] = h.takeTcp();
    expect(a!.ack).toBe(base);
    g.send(TCP_ACK, Buffer.from('hel'), { seq: base });
    g.send(TCP_ACK, Buffer.from('hello'), { seq: base }); // overlaps 'hel'
    g.send(TCP_ACK, Buffer.from('hello'), { seq: base }); // pure duplicate
    [a] = h.takeTcp().slice(-1);
    expect(a!.ack).toBe((base + 5) >>> 0);
    await settle();
    expect(Buffer.concat(got).toString()).toBe('hello');
  });

  it('handles sequence numbers wrapping around 2^32', async () => {
    const h = new Harness();
    const g = new GuestTcp(h);
    g.seq = 0xfffffff0;
    const { stream } = g.handshake();
    const got: Buffer[] = [];
    stream.on('data', (d: Buffer) => got.push(d));
    await settle();
    const data = crypto.randomBytes(100);
    g.send(TCP_ACK | TCP_PSH, data.subarray(0, 60));
    g.send(TCP_ACK | TCP_PSH, data.subarray(60));
    await settle();
    expect(Buffer.concat(got).equals(data)).toBe(true);
    expect(h.takeTcp().at(-1)!.ack).toBe((0xfffffff1 + 100) >>> 0);
  });
});

describe('TCP retransmission', () => {
  it('resends unacknowledged data after the RTO, backing off, and resets after too many tries', async () => {
    const h = new Harness({ rtoMaxRetries: 3 });
    const g = new GuestTcp(h);
    const { stream } = g.handshake();
    h.take();
    const errors: Error[] = [];
    stream.on('error', (e) => errors.push(e));
    stream.write(Buffer.from('lost once'));
    const [first] = h.takeTcp();
    h.advance(999);
    expect(h.take()).toHaveLength(0);
    h.advance(1);
    const [again] = h.takeTcp();
    expect(again!.seq).toBe(first!.seq);
    expect(again!.payload.toString()).toBe('lost once');
    h.advance(1999);
    expect(h.take()).toHaveLength(0); // doubled
    h.advance(1);
    expect(h.takeTcp()).toHaveLength(1);
    h.advance(4000);
    expect(h.takeTcp()).toHaveLength(1);
    h.advance(8000);
    const [rst] = h.takeTcp();
    expect(rst!.flags & TCP_RST).toBeTruthy();
    await settle();
    expect(errors[0]?.message).toMatch(/^network error: .*timed out/);
    expect(stream.destroyed).toBe(true);
    expect(h.stack.stats().tcpFlows).toBe(0);
  });

  it('goes back to snd.una on an RTO and restarts with one segment, doubling per ACK', () => {
    const h = new Harness();
    const g = new GuestTcp(h, { mss: 1000, wscale: 0, window: 0xffff });
    const { stream } = g.handshake();
    h.take();
    stream.write(Buffer.alloc(8000, 3));
    const sent = h.takeTcp();
    expect(sent).toHaveLength(8);
    h.advance(1000);
    const r1 = h.takeTcp();
    expect(r1.map((s) => s.seq)).toEqual([sent[0]!.seq]);
    g.ackAll(r1);
    const r2 = h.takeTcp();
    expect(r2.map((s) => s.seq)).toEqual([sent[1]!.seq, sent[2]!.seq]);
    g.ackAll(sent); // the guest had the rest after all
    expect(h.takeTcp()).toHaveLength(0);
  });

  it('resends on three duplicate ACKs', () => {
    const h = new Harness();
    const g = new GuestTcp(h, { mss: 1000, wscale: 0 });
    const { stream } = g.handshake();
    h.take();
    stream.write(Buffer.alloc(4000, 4));
    const sent = h.takeTcp();
    g.send(TCP_ACK);
    g.send(TCP_ACK);
    expect(h.take()).toHaveLength(0);
    g.send(TCP_ACK);
    const r = h.takeTcp();
    expect(r[0]!.seq).toBe(sent[0]!.seq);
  });

  it('resends the SYN-ACK while the handshake is incomplete, and on a retransmitted SYN', () => {
    const h = new Harness();
    const g = new GuestTcp(h);
    g.syn();
    h.pendings.pop()!.accept();
    const [sa] = h.takeTcp();
    g.send(TCP_SYN, Buffer.alloc(0), { seq: 1000 });
    const [sa2] = h.takeTcp();
    expect(sa2!.flags).toBe(TCP_SYN | TCP_ACK);
    expect(sa2!.seq).toBe(sa!.seq);
    h.advance(1000);
    const [sa3] = h.takeTcp();
    expect(sa3!.flags).toBe(TCP_SYN | TCP_ACK);
    g.send(TCP_ACK, Buffer.alloc(0), { ack: (sa!.seq + 7) >>> 0 }); // a bogus ACK: RST at its ack
    const [rst] = h.takeTcp();
    expect(rst!.flags).toBe(TCP_RST);
    expect(rst!.seq).toBe((sa!.seq + 7) >>> 0);
  });
});

describe('TCP close and reset', () => {
  it('our FIN first: FIN_WAIT_2, the guest FIN is ACKed, TIME_WAIT expires', async () => {
    const h = new Harness({ timeWaitMs: 500 });
    const g = new GuestTcp(h);
    const { stream } = g.handshake();
    h.take();
    const events: string[] = [];
    for (const e of ['end', 'finish', 'close']) stream.on(e, () => events.push(e));
    stream.resume();
    stream.end();
    const [fin] = h.takeTcp();
    expect(fin!.flags & TCP_FIN).toBeTruthy();
    g.ackAll([fin!]);
    await settle();
    expect(events).toEqual(['finish']);
    g.send(TCP_ACK | TCP_FIN);
    const [ack] = h.takeTcp();
    expect(ack!.ack).toBe(g.seq);
    await settle();
    expect(events).toEqual(['finish', 'end', 'close']);
    expect(h.stack.stats().tcpFlows).toBe(1); // TIME_WAIT
    g.send(TCP_ACK | TCP_FIN, Buffer.alloc(0), { seq: (g.seq - 1) >>> 0 }); // resent FIN: re-ACKed
    expect(h.takeTcp()[0]!.ack).toBe(g.seq);
    h.advance(501);
    expect(h.stack.stats().tcpFlows).toBe(0);
  });

  it('simultaneous close: both FINs cross, CLOSING, then TIME_WAIT', async () => {
    const h = new Harness({ timeWaitMs: 100 });
    const g = new GuestTcp(h);
    const { stream } = g.handshake();
    h.take();
    const events: string[] = [];
    for (const e of ['end', 'finish', 'close']) stream.on(e, () => events.push(e));
    stream.resume();
    stream.end(Buffer.from('a'));
    await settle();
    const fin = h.takeTcp().at(-1);
    expect(fin!.flags & TCP_FIN).toBeTruthy();
    g.send(TCP_ACK | TCP_FIN); // guest FIN, not yet acking ours
    const [a] = h.takeTcp();
    expect(a!.ack).toBe(g.seq);
    g.ackAll([fin!]);
    await settle();
    expect(events.sort()).toEqual(['close', 'end', 'finish']);
    h.advance(101);
    expect(h.stack.stats().tcpFlows).toBe(0);
  });

  it('guest RST destroys the stream with an error; without an error listener it just closes', async () => {
    const h = new Harness();
    const g1 = new GuestTcp(h);
    const s1 = g1.handshake().stream;
    const errs: Error[] = [];
    s1.on('error', (e) => errs.push(e));
    g1.send(TCP_RST | TCP_ACK);
    await settle();
    expect(s1.destroyed).toBe(true);
    expect(errs[0]?.message).toMatch(/^network error: .*reset by the guest/);
    const g2 = new GuestTcp(h);
    const s2 = g2.handshake().stream;
    let closed = false;
    s2.on('close', () => (closed = true));
    g2.send(TCP_RST, Buffer.alloc(0));
    await settle();
    expect(closed).toBe(true);
    expect(h.stack.stats().tcpFlows).toBe(0);
    expect(h.take().filter((f) => f.length > 0 && (f[47]! & TCP_RST) !== 0)).toHaveLength(0); // never answer a RST
  });

  it('an RST outside the exact sequence earns a challenge ACK, not a reset (RFC 5961)', async () => {
    const h = new Harness();
    const g = new GuestTcp(h);
    const { stream } = g.handshake();
    h.take();
    g.send(TCP_RST, Buffer.alloc(0), { seq: (g.seq + 10) >>> 0 });
    const [c] = h.takeTcp();
    expect(c!.flags).toBe(TCP_ACK);
    expect(stream.destroyed).toBe(false);
  });

  it('destroy() and reset() send RST to the guest', async () => {
    const h = new Harness();
    const g = new GuestTcp(h);
    const { stream } = g.handshake();
    h.take();
    stream.reset();
    await settle();
    const [rst] = h.takeTcp();
    expect(rst!.flags & TCP_RST).toBeTruthy();
    expect(rst!.seq).toBe(g.ack);
    expect(h.stack.stats().tcpFlows).toBe(0);
    g.send(TCP_ACK, Buffer.from('late'));
    const [rst2] = h.takeTcp();
    expect(rst2!.flags).toBe(TCP_RST); // unknown flow now
  });
});

describe('TCP end to end through a real socket', () => {
  async function echoServer(): Promise<{ port: number; close(): Promise<void> }> {
    const server = net.createServer((s) => s.pipe(s));
    await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
    return { port: (server.address() as net.AddressInfo).port, close: () => new Promise((r) => server.close(() => r())) };
  }

  for (const [label, mss, bytes] of [
    ['64 KiB segments', 65480, 16 * 1024 * 1024],
    ['1460-byte segments', 1460, 2 * 1024 * 1024],
  ] as const) {
    it(`echoes ${bytes >> 20} MiB both ways with matching sha256 (${label})`, async () => {
      const echo = await echoServer();
      const h = new Harness();
      const g = new GuestTcp(h, { mss, wscale: 7, window: 2048 }); // guest window 256 KiB
      const { stream, synAck } = g.handshake();
      const up = net.connect(echo.port, '127.0.0.1');
      stream.pipe(up).pipe(stream);
      const peer = new GuestPeer(h, g, synAck);
      peer.start();
      const data = crypto.randomBytes(bytes);
      const want = crypto.createHash('sha256').update(data).digest('hex');
      const hash = crypto.createHash('sha256');
      let got = 0;
      const done = new Promise<void>((resolve, reject) => {
        peer.on('data', (d: Buffer) => {
          hash.update(d);
          got += d.length;
        });
        peer.on('end', resolve);
        peer.on('error', reject);
      });
      for (let off = 0; off < bytes; off += 1 << 20) peer.write(data.subarray(off, off + (1 << 20)));
      peer.end(); // guest FIN → upstream half-close → echo ends → FIN back to the guest
      await done;
      peer.stop();
      expect(got).toBe(bytes);
      expect(hash.digest('hex')).toBe(want);
      expect(peer.maxSegmentIn).toBeLessThanOrEqual(mss);
      if (mss > 60000) expect(peer.maxSegmentIn).toBeGreaterThan(60000); // coalesced up to the MSS
      await echo.close();
      h.stack.close();
    }, 60_000);
  }
});

describe('TCP probes from the guest', () => {
  it('answers a zero-window probe / keepalive (seq = rcv.nxt - 1, no data) with an ACK and the window', () => {
    const h = new Harness();
    const g = new GuestTcp(h);
    g.handshake();
    h.take();
    g.send(TCP_ACK, Buffer.alloc(0), { seq: (g.seq - 1) >>> 0 });
    const [a] = h.takeTcp();
    expect(a).toMatchObject({ flags: TCP_ACK, ack: g.seq });
    expect(a!.window).toBeGreaterThan(0);
    g.send(TCP_ACK); // a plain ACK at rcv.nxt earns nothing
    expect(h.take()).toHaveLength(0);
  });
});

describe('TCP host memory bounds', () => {
  it('keeps at most maxInFlightPerFlow in flight whatever window the guest claims', () => {
    const h = new Harness({ maxInFlightPerFlow: 100_000 });
    const g = new GuestTcp(h, { wscale: 14, window: 0xffff }); // a claimed 1 GiB window
    const { stream } = g.handshake();
    h.take();
    stream.write(Buffer.alloc(1_000_000));
    const n = h.takeTcp().reduce((n, s) => n + s.payload.length, 0);
    expect(n).toBeGreaterThan(60_000);
    expect(n).toBeLessThanOrEqual(100_000);
  });

  it('setLinkBlocked(true) stops data segments (ACKs still go), false resumes', () => {
    const h = new Harness();
    const g = new GuestTcp(h);
    const { stream } = g.handshake();
    h.take();
    h.stack.setLinkBlocked(true);
    stream.write(Buffer.from('later'));
    expect(h.take()).toHaveLength(0);
    g.send(TCP_ACK | TCP_PSH, Buffer.from('in'));
    const [a] = h.takeTcp();
    expect(a!.payload.length).toBe(0);
    expect(a!.ack).toBe(g.seq);
    h.stack.setLinkBlocked(false);
    const segs = h.takeTcp();
    expect(Buffer.concat(segs.map((s) => s.payload)).toString()).toBe('later');
  });

  it('holds every writer once maxBufferedTotal is queued, and wakes them as any flow drains', async () => {
    const h = new Harness({ maxBufferedTotal: 50_000, maxBufferedPerFlow: 1_000_000 });
    const a = new GuestTcp(h, { srcPort: 1111, wscale: 0, window: 0 }); // a guest that never reads
    const b = new GuestTcp(h, { srcPort: 2222, wscale: 0, window: 0xffff });
    const sa = a.handshake().stream;
    const bb = b.handshake();
    h.take();
    let aDone = false;
    sa.write(Buffer.alloc(60_000), () => (aDone = true)); // over the total: held
    expect(sa.write(Buffer.alloc(10_000))).toBe(false); // the held write counts against the high-water mark
    await settle();
    expect(aDone).toBe(false);
    expect(h.stack.stats().queuedBytes).toBe(60_000);
    let bDrained = false;
    const okB = bb.stream.write(Buffer.alloc(10_000), () => (bDrained = true));
    expect(okB).toBe(true); // below its high-water mark, but its callback waits for the budget
    await settle();
    expect(bDrained).toBe(false);
    const bSegs = h.takeTcp().filter((s) => s.dstPort === 2222);
    expect(bSegs.reduce((n, s) => n + s.payload.length, 0)).toBe(10_000); // in-window data still flows
    b.ackAll(bSegs); // frees 10k: total 60k, still over
    await settle();
    expect(bDrained).toBe(false);
    sa.destroy(); // frees a's 60k: everyone wakes
    await settle();
    expect(bDrained).toBe(true);
    expect(h.stack.stats().queuedBytes).toBe(0);
  });
});

describe('TCP timers under back-pressure', () => {
  it('spends no retries while the link is blocked or the guest window is shut', () => {
    const h = new Harness({ rtoMaxRetries: 2 });
    const g = new GuestTcp(h, { wscale: 0, window: 1000 });
    const { stream } = g.handshake();
    h.take();
    stream.write(Buffer.alloc(500));
    h.takeTcp();
    h.stack.setLinkBlocked(true);
    for (let i = 0; i < 10; i++) h.advance(30_000);
    expect(h.take()).toHaveLength(0);
    expect(stream.destroyed).toBe(false);
    h.stack.setLinkBlocked(false);
    g.window = 0;
    g.send(TCP_ACK); // the window shuts with 500 bytes in flight
    for (let i = 0; i < 10; i++) h.advance(30_000);
    const probes = h.takeTcp();
    expect(probes.length).toBeGreaterThan(3);
    expect(probes.every((p) => p.payload.length === 0 && p.seq === ((g.ack - 1) >>> 0))).toBe(true);
    expect(stream.destroyed).toBe(false);
    g.ack = (g.ack + 500) >>> 0; // the guest reads and acknowledges the 500 bytes at last
    g.window = 1000;
    g.send(TCP_ACK);
    expect(h.stack.stats()).toMatchObject({ tcpFlows: 1, queuedBytes: 0 });
  });
});

describe('TCP sender silly-window rules', () => {
  it('fills a window smaller than two segments (no stall on the guest delayed ACK), holds tails when plenty is in flight', () => {
    const h = new Harness();
    const g = new GuestTcp(h, { wscale: 0, window: 50_000, mss: 30_000 });
    const { stream } = g.handshake();
    h.take();
    stream.write(Buffer.alloc(200_000));
    expect(h.takeTcp().map((s) => s.payload.length)).toEqual([30_000, 20_000]);
    const h2 = new Harness();
    const g2 = new GuestTcp(h2, { wscale: 0, window: 50_000, mss: 10_000 });
    const s2 = g2.handshake().stream;
    h2.take();
    s2.write(Buffer.alloc(200_000));
    const segs = h2.takeTcp();
    expect(segs.map((s) => s.payload.length)).toEqual([10_000, 10_000, 10_000, 10_000, 10_000]);
    // ACK 5 000 bytes: 5 000 of room with 45 000 in flight: a short segment waits for more room.
    g2.ack = (segs[0]!.seq + 5000) >>> 0;
    g2.send(TCP_ACK);
    expect(h2.take()).toHaveLength(0);
    g2.ack = (segs[0]!.seq + 10_000) >>> 0;
    g2.send(TCP_ACK);
    expect(h2.takeTcp().map((s) => s.payload.length)).toEqual([10_000]);
  });
});

describe('TCP unacceptable segments', () => {
  it('a segment beyond our window is ACKed but its ACK and window fields are ignored', () => {
    const h = new Harness();
    const g = new GuestTcp(h, { wscale: 0, window: 1000 });
    const { stream } = g.handshake();
    h.take();
    g.send(TCP_ACK, Buffer.alloc(0), { seq: (g.seq + 10_000_000) >>> 0, window: 0xffff });
    const [a] = h.takeTcp();
    expect(a).toMatchObject({ flags: TCP_ACK, ack: g.seq });
    stream.write(Buffer.alloc(5000));
    expect(h.takeTcp().reduce((n, s) => n + s.payload.length, 0)).toBe(1000);
  });
});

describe('GuestStream under node:tls (as the secrets interception uses it)', () => {
  it('carries a TLS server socket over the guest flow: handshake, 1 MiB echoed, orderly close', async () => {
    const ca = createBoxCa();
    const h = new Harness();
    const g = new GuestTcp(h, { mss: 65480, wscale: 7, window: 2048 });
    const { stream, synAck } = g.handshake();
    const server = new tls.TLSSocket(stream, { isServer: true, secureContext: ca.secureContextFor('secret.test') });
    server.pipe(server); // echo inside TLS
    const peer = new GuestPeer(h, g, synAck);
    peer.start();
    const client = tls.connect({ socket: peer, ca: ca.certPem, servername: 'secret.test' });
    const data = crypto.randomBytes(1 << 20);
    const got: Buffer[] = [];
    await new Promise<void>((resolve, reject) => {
      client.on('secureConnect', () => {
        client.write(data);
        client.end();
      });
      client.on('data', (d: Buffer) => got.push(d));
      client.on('end', resolve);
      client.on('error', reject);
    });
    peer.stop();
    expect(client.authorized).toBe(true);
    expect(Buffer.concat(got).equals(data)).toBe(true);
    h.stack.close();
  }, 30_000);
});

describe('TCP recovery from guest-side drops', () => {
  it('delivers 4 MiB intact when the guest drops 5% of our segments (fast resend + RTO)', async () => {
    const h = new Harness();
    const g = new GuestTcp(h, { mss: 8000, wscale: 7, window: 1024 }); // 128 KiB window
    const { stream, synAck } = g.handshake();
    const peer = new GuestPeer(h, g, synAck);
    peer.dropRate = 0.05;
    peer.tickMs = 20;
    peer.start();
    const data = crypto.randomBytes(4 << 20);
    const got: Buffer[] = [];
    const done = new Promise<void>((resolve) => {
      peer.on('data', (d: Buffer) => got.push(d));
      peer.on('end', resolve);
    });
    stream.end(data);
    await done;
    peer.stop();
    expect(peer.dropped).toBeGreaterThan(10);
    expect(Buffer.concat(got).equals(data)).toBe(true);
  }, 60_000);
});

describe('TCP receive budget over all flows', () => {
  it('paused flows stop getting window once rcvBufferTotal is buffered; a flow that is read keeps moving', async () => {
    const h = new Harness({ rcvBufferTotal: 100_000, rcvBufferPerFlow: 256 * 1024 });
    const paused = [1, 2, 3].map((i) => {
      const g = new GuestTcp(h, { srcPort: 5000 + i, wscale: 7 });
      const { stream, synAck } = g.handshake();
      stream.pause();
      return { g, stream, shift: synAck.wscale! };
    });
    h.take();
    // Each guest sends as much as its window allows, until every window is shut.
    for (let round = 0; round < 40; round++) {
      for (const p of paused) p.g.send(TCP_ACK | TCP_PSH, Buffer.alloc(8000, 1));
    }
    h.take();
    const total = paused.reduce((n, p) => n + p.stream.readableLength, 0);
    expect(total).toBeGreaterThan(50_000);
    expect(total).toBeLessThanOrEqual(100_000 + 3 * 16 * 1024);
    expect(h.stack.stats().receivedBytes).toBeLessThanOrEqual(100_000 + 3 * 16 * 1024);
    // A fresh flow whose consumer reads still gets a window and its data through.
    const g = new GuestTcp(h, { srcPort: 6000, wscale: 7 });
    const { stream, synAck } = g.handshake();
    let got = 0;
    stream.on('data', (d: Buffer) => (got += d.length));
    await settle();
    h.take();
    for (let i = 0; i < 10; i++) g.send(TCP_ACK | TCP_PSH, Buffer.alloc(8000, 2));
    await settle();
    expect(got).toBe(80_000);
    const acks = h.takeTcp().filter((s) => s.dstPort === 6000);
    expect(acks.at(-1)!.window << synAck.wscale!).toBeGreaterThan(0);
    // Reading a paused flow frees budget.
    for (const p of paused) p.stream.resume();
    await settle();
    expect(paused.every((p) => p.stream.readableLength === 0)).toBe(true);
    for (const p of [...paused.map((x) => x.stream), stream]) p.destroy();
    await settle();
    expect(h.stack.stats().receivedBytes).toBe(0);
  });
});

describe('TCP retained memory vs counted bytes', () => {
  it('1-byte segments inside 64 KiB socket chunks do not pin the chunks (paused flows)', async () => {
    const h = new Harness();
    const flows = [1, 2, 3, 4].map((i) => {
      const g = new GuestTcp(h, { srcPort: 7000 + i });
      const { stream } = g.handshake();
      stream.pause();
      return { g, stream };
    });
    h.take();
    const N = 2000;
    for (let k = 0; k < N; k++) {
      for (const { g } of flows) {
        // As the worker hands frames on: a view into a 64 KiB socket read chunk.
        const chunk = Buffer.alloc(65536);
        const f = g.frame(TCP_ACK | TCP_PSH, Buffer.from([k & 255]));
        f.copy(chunk, 100);
        g.seq = (g.seq + 1) >>> 0;
        h.stack.input(chunk.subarray(100, 100 + f.length));
      }
      h.take();
    }
    const backing = new Set<ArrayBufferLike>();
    let counted = 0;
    for (const { stream } of flows) {
      expect(stream.readableLength).toBe(N);
      counted += stream.readableLength;
      stream.on('data', (d: Buffer) => backing.add(d.buffer));
      stream.resume();
    }
    await settle();
    const retained = [...backing].reduce((n, b) => n + b.byteLength, 0);
    expect(retained).toBeLessThanOrEqual(2 * counted + flows.length * 4096);
    expect(retained).toBeLessThan(N * 65536); // what views of the chunks would have pinned: 500x more
  });

  it('small UDP payloads are handed on as copies, large ones as views', () => {
    const h = new Harness();
    const small = Buffer.alloc(65536);
    const f = udpFrame(1000, '198.18.0.1', 53, Buffer.from('tiny'));
    f.copy(small);
    h.stack.input(small.subarray(0, f.length));
    const big = udpFrame(1001, '198.18.0.1', 53, Buffer.alloc(40_000, 1));
    h.stack.input(big);
    const [a, b] = h.datagrams;
    expect(a!.payload.toString()).toBe('tiny');
    expect(a!.payload.buffer.byteLength).toBe(4);
    expect(b!.payload.buffer).toBe(big.buffer);
  });
});
