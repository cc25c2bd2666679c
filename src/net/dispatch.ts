// The FlowHandler: what happens to every new guest flow (NETWORK.md "Policy"). The stack hands
// over each guest SYN as a PendingTcp (no SYN-ACK yet) and each UDP datagram; this decides,
// always before any upstream contact for a refused flow, and dials through the Dialer only.
//
//   any port 53 (UDP, TCP)           → our DNS server (dns.ts), whatever address the guest asked
//   host.boxlite.internal / gateway  → host loopback, same port (always allowed)
//   0/8, 127/8, 224/4, 240/4         → refused (never dialed, whatever the policy)
//   169.254.0.0/16                   → refused unless an IP/CIDR rule lists it (decision 4)
//   80/443 with hostname rules       → accept, peek SNI/Host, dial the NAME as resolved on the
//                                      host (never the guest's dst IP); 443 + a secret host →
//                                      the interceptor (mitm.ts)
//   IP/CIDR rule or open policy      → connect upstream first, then accept (refused upstream =
//                                      RST to the guest)
//   other ports with hostname rules  → only IPs this box's DNS answered for allowed names
//   a name's answer in 10/8, 172.16/12,  → refused unless an IP/CIDR rule lists it (an allowed
//   192.168/16, 100.64/10, 198.18/15,      wildcard over a zone an attacker controls must not
//   192.0.0/24 (policy.ts)                 reach the host's LAN: DNS rebinding)
//   everything else                  → RST (TCP) / ICMP port unreachable (UDP), counted, logged
import type dgram from 'node:dgram';
import type net from 'node:net';
import { COUNTER, type Dialer, type FlowHandler, type FlowKey, type GuestDatagram, type GuestStream, type LinkAddressing, type PendingTcp } from './types.js';
import { NetPolicy, ipToInt, isDialableUpstream, isNeverDialed, isPrivateAddress } from './policy.js';
import { DnsServer, PinSet, type DnsLimits } from './dns.js';
import { PEEK_MAX_BYTES, PEEK_TIMEOUT_MS, peek, type PeekResult } from './peek.js';

export const HOST_ALIAS_NAME = 'host.boxlite.internal';

export interface DispatchLimits {
  /** Bytes held while looking for SNI/Host (≤ 16 KiB). */
  peekBytes: number;
  peekTimeoutMs: number;
  /** Connections being peeked at once; beyond: refused. */
  maxPeeking: number;
  connectTimeoutMs: number;
  /** NAT'd UDP flows (host sockets) at once; beyond: the least recently used one is closed. */
  maxUdpFlows: number;
  udpIdleMs: number;
  /** Datagrams queued while a flow's host socket opens. */
  maxQueuedUdp: number;
  /** TCP DNS: idle time before the connection is closed. */
  tcpDnsIdleMs: number;
  maxPins: number;
  /** Log lines per second (a hostile guest must not be able to flood the shim's log). */
  logPerSecond: number;
  dns?: Partial<DnsLimits>;
}

export const DEFAULT_DISPATCH_LIMITS: DispatchLimits = {
  peekBytes: PEEK_MAX_BYTES,
  peekTimeoutMs: PEEK_TIMEOUT_MS,
  maxPeeking: 256,
  connectTimeoutMs: 10_000,
  maxUdpFlows: 256,
  udpIdleMs: 60_000,
  maxQueuedUdp: 16,
  tcpDnsIdleMs: 10_000,
  maxPins: 4096,
  logPerSecond: 20,
};

/** Why a flow was refused (the keys of snapshot().blocked). */
export type BlockReason = 'not-allowed' | 'name-not-allowed' | 'no-name' | 'bad-request' | 'metadata' | 'never-dialed' | 'private' | 'limit' | 'peek-timeout';

export interface Interceptor {
  matches(sni: string): boolean;
  handle(guest: GuestStream, head: Buffer, sni: string, port: number): void;
  close?(): void;
}

export interface FlowHandlerOptions {
  link: LinkAddressing;
  policy: NetPolicy;
  dialer: Dialer;
  counters: BigInt64Array;
  /** Part C's secrets MITM: TLS on 443 whose SNI is a secret host. */
  interceptor?: Interceptor;
  log: (line: string) => void;
  limits?: Partial<DispatchLimits>;
  now?: () => number;
}

export interface DispatchSnapshot {
  allowNet: string[];
  blocked: Record<string, number>;
  tcpErrors: Record<string, number>;
  dns: object;
  pins: Array<{ ip: string; name: string; ttl: number; flows: number }>;
  /** udpEvicted: NAT'd UDP flows closed to make room (least recently used first). */
  flows: { tcp: number; peeking: number; udp: number; udpEvicted: number };
}

export type DispatchHandler = FlowHandler & { close(): void; snapshot(): DispatchSnapshot; readonly dns: DnsServer; readonly pins: PinSet };

/**
 * The virtual link's own subnet: only the gateway and the host alias live there, so any other
 * address in it is nobody (dialing it on the host would reach whatever the host's LAN has
 * at that address instead).
 */
export function onLink(ip: string, link: LinkAddressing): boolean {
  const a = ipToInt(ip);
  const g = ipToInt(link.guestIp);
  if (a === undefined || g === undefined) return false;
  const mask = link.prefixLength === 0 ? 0 : (0xffffffff << (32 - link.prefixLength)) >>> 0;
  return ((a & mask) >>> 0) === ((g & mask) >>> 0);
}

const fmt = (f: FlowKey) => `${f.proto} ${f.srcIp}:${f.srcPort} -> ${f.dstIp}:${f.dstPort}`;

export function createFlowHandler(opts: FlowHandlerOptions): DispatchHandler {
  const limits: DispatchLimits = { ...DEFAULT_DISPATCH_LIMITS, ...opts.limits };
  const now = opts.now ?? Date.now;
  const { link, policy, dialer, counters, interceptor } = opts;
  const pins = new PinSet(limits.maxPins, now);
  const blocked: Record<string, number> = {};
  const tcpErrors: Record<string, number> = {};
  const active = new Set<{ close(): void }>();
  let peeking = 0;
  let closed = false;

  // Rate-limited log: at most logPerSecond lines, then one line saying how many were dropped.
  let logTokens = limits.logPerSecond;
  let logRefill = now();
  let suppressed = 0;
  const log = (line: string) => {
    const t = now();
    logTokens = Math.min(limits.logPerSecond, logTokens + ((t - logRefill) / 1000) * limits.logPerSecond);
    logRefill = t;
    if (logTokens < 1) {
      suppressed++;
      return;
    }
    logTokens--;
    if (suppressed) {
      opts.log(`net: ${suppressed} log lines suppressed (rate limit)`);
      suppressed = 0;
    }
    opts.log(line);
  };

  const add = (slot: number, n: number | bigint) => {
    Atomics.add(counters, slot, typeof n === 'bigint' ? n : BigInt(n));
  };

  const dns = new DnsServer({
    policy,
    dialer,
    pins,
    hostAlias: { name: HOST_ALIAS_NAME, ip: link.hostAliasIp },
    counters,
    limits: limits.dns,
    log,
    now,
  });

  const tcpError = (why: string) => {
    tcpErrors[why] = (tcpErrors[why] ?? 0) + 1;
    add(COUNTER.tcpErrors, 1);
  };

  const block = (flow: FlowKey, reason: BlockReason, detail = '') => {
    blocked[reason] = (blocked[reason] ?? 0) + 1;
    add(COUNTER.blockedFlows, 1);
    if (flow.proto === 'tcp') tcpError(`blocked:${reason}`);
    log(`net: blocked ${fmt(flow)} (${reason}${detail ? `: ${detail}` : ''})`);
  };

  /** Guest stream ⇄ upstream socket, back-pressure both ways, half-close, payload counted. */
  const pipeFlow = (guest: GuestStream, upstream: net.Socket, head: Buffer | undefined, release: () => void) => {
    const entry = {
      close: () => {
        upstream.destroy();
        if (!guest.destroyed) guest.reset();
      },
    };
    active.add(entry);
    let finished = false;
    const finish = () => {
      if (finished) return;
      finished = true;
      active.delete(entry);
      release();
    };
    add(COUNTER.tcpConnections, 1);
    if (head?.length) {
      add(COUNTER.bytesSent, head.length);
      upstream.write(head);
    }
    guest.on('data', (c: Buffer) => add(COUNTER.bytesSent, c.length));
    upstream.on('data', (c: Buffer) => add(COUNTER.bytesReceived, c.length));
    guest.pipe(upstream);
    upstream.pipe(guest);
    upstream.on('error', (err: NodeJS.ErrnoException) => {
      tcpError(`upstream:${err.code ?? 'error'}`);
      if (!guest.destroyed) guest.reset();
    });
    guest.on('error', () => upstream.destroy());
    upstream.on('close', () => {
      if (!guest.destroyed && !guest.writableEnded) guest.reset();
      if (guest.destroyed) finish();
    });
    guest.on('close', () => {
      // A clean close has already ended upstream's writable side (pipe); an abort resets it.
      if (!guest.readableEnded) upstream.destroy();
      if (upstream.destroyed) finish();
      else upstream.once('close', finish);
    });
  };

  /** May an address that came from resolving an allowed name be dialed (policy.ts)? */
  const upstreamOk = (ip: string) => !onLink(ip, link) && isDialableUpstream(ip, policy, dialer);
  const unsafeReason = (ip: string): BlockReason => {
    if (NetPolicy.isMetadata(ip)) return 'metadata';
    if (isNeverDialed(ip) || onLink(ip, link)) return 'never-dialed';
    return isPrivateAddress(ip) ? 'private' : 'never-dialed';
  };

  /** IP/CIDR, open policy, pinned IP or host alias: connect upstream first, then accept. */
  const direct = (pending: PendingTcp, ip: string, port: number, release: () => void = () => {}) => {
    dialer.connectTcp(ip, port, limits.connectTimeoutMs).then(
      (upstream) => {
        if (closed) {
          upstream.destroy();
          release();
          return;
        }
        let guest: GuestStream;
        try {
          guest = pending.accept();
        } catch {
          // The stack gave up on the SYN meanwhile (its verdict timeout).
          upstream.destroy();
          release();
          tcpError('syn-timeout');
          return;
        }
        pipeFlow(guest, upstream, undefined, release);
      },
      (err: Error) => {
        release();
        tcpError('connect');
        log(`net: ${fmt(pending.flow)} upstream ${ip}:${port} failed: ${err.message}`);
        try {
          pending.reject('refused');
        } catch {
          /* already timed out in the stack */
        }
      },
    );
  };

  /** Dials an allowed name as resolved on the host (never the guest's dst), then pipes. */
  const dialName = (guest: GuestStream, name: string, port: number, head: Buffer) => {
    const flow = guest.flow;
    dns.lookup(name).then(
      (r) => {
        if (closed || guest.destroyed) return;
        if (!('addresses' in r) || r.addresses.length === 0) {
          tcpError('resolve');
          log(`net: ${fmt(flow)} cannot resolve ${name} on the host`);
          guest.reset();
          return;
        }
        // The guest's choice first when it is one of the host's answers (consistent with what
        // its own DNS answered), then the host's other answers. Never an address no flow may
        // reach: an allowed name resolving to 127.0.0.1, 169.254.169.254 or, unless an IP/CIDR
        // rule lists it, a private address (DNS rebinding onto the host's LAN).
        const all = r.addresses.map((a) => a.address);
        const ordered = [...all.filter((a) => a === flow.dstIp), ...all.filter((a) => a !== flow.dstIp)];
        const safe = ordered.filter((ip) => upstreamOk(ip));
        if (!safe.length) {
          const ip = ordered[0]!;
          block(flow, unsafeReason(ip), `${name} resolves to ${ip}`);
          guest.reset();
          return;
        }
        // At most three of the name's addresses, like a browser's fallback.
        const attempt = (k: number): void => {
          const ip = safe[k]!;
          const next = () => {
            if (k + 1 >= Math.min(3, safe.length) || closed || guest.destroyed) return false;
            attempt(k + 1);
            return true;
          };
          dialTo(guest, ip, port, head, pins.hold(ip), next, `${name} (${ip}:${port})`);
        };
        attempt(0);
      },
      () => guest.reset(),
    );
  };

  /** Accepts, holds the first bytes until SNI/Host is known, then decides by NAME. */
  const peekThenDial = (pending: PendingTcp, ipOk: boolean) => {
    if (peeking >= limits.maxPeeking) {
      block(pending.flow, 'limit', 'too many connections being peeked');
      pending.reject('refused');
      return;
    }
    const flow = pending.flow;
    let guest: GuestStream;
    try {
      guest = pending.accept();
    } catch {
      return;
    }
    peeking++;
    const chunks: Buffer[] = [];
    let len = 0;
    let done = false;
    const entry = { close: () => finish({ kind: 'unknown', why: 'closing' }) };
    active.add(entry);
    const timer = setTimeout(() => finish({ kind: 'unknown', why: 'timeout' }), limits.peekTimeoutMs);
    const onData = (c: Buffer) => {
      chunks.push(c);
      len += c.length;
      const buf = chunks.length === 1 ? chunks[0]! : Buffer.concat(chunks);
      const r = len > limits.peekBytes ? peek(buf.subarray(0, limits.peekBytes)) : peek(buf);
      if (r.kind !== 'more') finish(r);
      else if (len >= limits.peekBytes) finish({ kind: 'unknown', why: `no name within ${limits.peekBytes} bytes` });
    };
    const onEnd = () => finish({ kind: 'unknown', why: 'guest closed before sending a name' });
    const onError = () => finish({ kind: 'unknown', why: 'guest reset' });
    guest.on('data', onData);
    guest.once('end', onEnd);
    guest.once('error', onError);

    function finish(r: PeekResult) {
      if (done) return;
      done = true;
      peeking--;
      active.delete(entry);
      clearTimeout(timer);
      // Pause before removing the listener, or a flowing stream would drop what comes next.
      guest.pause();
      guest.removeListener('data', onData);
      guest.removeListener('end', onEnd);
      guest.removeListener('error', onError);
      const head = chunks.length === 1 ? chunks[0]! : Buffer.concat(chunks);
      if (closed || guest.destroyed) {
        if (!guest.destroyed) guest.reset();
        return;
      }
      decide(r, head);
    }

    function decide(r: PeekResult, head: Buffer) {
      if (r.kind === 'invalid') {
        // Refused whatever the rules: an upstream could act on another name than the one
        // checked (an absolute-form target or a second Host naming an unlisted site).
        block(flow, 'bad-request', r.why);
        guest.reset();
        return;
      }
      const name = r.kind === 'tls' ? r.sni : r.kind === 'http' ? r.host : undefined;
      if (r.kind === 'unknown' || r.kind === 'more' || !name) {
        if (ipOk) return dialGuestDst(head);
        const why = r.kind === 'unknown' ? r.why : r.kind === 'tls' ? 'ClientHello without SNI' : 'HTTP request without one Host header';
        block(flow, r.kind === 'unknown' && r.why === 'timeout' ? 'peek-timeout' : 'no-name', why);
        guest.reset();
        return;
      }
      const nameOk = name === HOST_ALIAS_NAME || policy.allowsName(name);
      if (nameOk && r.kind === 'tls' && flow.dstPort === 443 && interceptor?.matches(name)) {
        // The interceptor counts this flow itself (tcpConnections once its upstream is up,
        // payload bytes, tcpErrors): only it sees the upstream side.
        try {
          interceptor.handle(guest, head, name, flow.dstPort);
        } catch (err) {
          tcpError('interceptor');
          log(`net: ${fmt(flow)} interceptor failed for ${name}: ${(err as Error).message}`);
          guest.reset();
        }
        return;
      }
      if (ipOk && (policy.isOpen || !nameOk)) return dialGuestDst(head);
      if (!nameOk) {
        block(flow, 'name-not-allowed', `${r.kind === 'tls' ? 'SNI' : 'Host'} ${name}`);
        guest.reset();
        return;
      }
      if (name === HOST_ALIAS_NAME) return dialTo(guest, '127.0.0.1', flow.dstPort, head, () => {});
      dialName(guest, name, flow.dstPort, head);
    }

    function dialGuestDst(head: Buffer) {
      dialTo(guest, flow.dstIp, flow.dstPort, head, () => {});
    }
  };

  /**
   * An accepted guest stream to an already-decided address (after a peek). `fallback` may try
   * another address instead of failing the flow (it returns true when it did).
   */
  const dialTo = (
    guest: GuestStream,
    ip: string,
    port: number,
    head: Buffer,
    release: () => void,
    fallback: () => boolean = () => false,
    label = `${ip}:${port}`,
  ) => {
    dialer.connectTcp(ip, port, limits.connectTimeoutMs).then(
      (upstream) => {
        if (closed || guest.destroyed) {
          upstream.destroy();
          release();
          return;
        }
        pipeFlow(guest, upstream, head, release);
      },
      (err: Error) => {
        release();
        log(`net: ${fmt(guest.flow)} upstream ${label} failed: ${err.message}`);
        if (fallback()) return;
        tcpError('connect');
        guest.reset();
      },
    );
  };

  /** DNS over TCP (length-prefixed messages), answered by the same server. */
  const tcpDns = (pending: PendingTcp) => {
    let guest: GuestStream;
    try {
      guest = pending.accept();
    } catch {
      return;
    }
    let buf: Buffer = Buffer.alloc(0);
    const entry = { close: () => guest.destroy() };
    active.add(entry);
    const idle = () => guest.end();
    let timer = setTimeout(idle, limits.tcpDnsIdleMs);
    let unanswered = 0;
    let guestEnded = false;
    guest.on('data', (c: Buffer) => {
      clearTimeout(timer);
      timer = setTimeout(idle, limits.tcpDnsIdleMs);
      buf = buf.length ? Buffer.concat([buf, c]) : c;
      if (buf.length > 2 + 4096 + 4096) {
        guest.reset();
        return;
      }
      while (buf.length >= 2) {
        const n = buf.readUInt16BE(0);
        if (n > 4096) {
          guest.reset();
          return;
        }
        if (buf.length < 2 + n) break;
        const msg = buf.subarray(2, 2 + n);
        buf = buf.subarray(2 + n);
        // Bounded like UDP: the server's rate limit and in-flight cap apply per message.
        if (unanswered >= 16) {
          guest.reset();
          return;
        }
        unanswered++;
        let once = false;
        const done = () => {
          if (once) return;
          once = true;
          unanswered--;
          if (guestEnded && unanswered === 0 && !guest.destroyed && !guest.writableEnded) guest.end();
        };
        dns.handle(Buffer.from(msg), (ans) => {
          if (!guest.destroyed && !guest.writableEnded) {
            const hdr = Buffer.alloc(2);
            hdr.writeUInt16BE(ans.length, 0);
            guest.write(Buffer.concat([hdr, ans]));
          }
          done();
        });
        // A query dropped by the rate limit gets no answer: do not wait for one forever.
        setTimeout(done, 6000).unref();
      }
    });
    guest.on('end', () => {
      // The guest's FIN: answer what is pending, then close our side.
      guestEnded = true;
      if (unanswered === 0) guest.end();
    });
    guest.on('error', () => {});
    guest.on('close', () => {
      clearTimeout(timer);
      active.delete(entry);
    });
  };

  const onTcp = (pending: PendingTcp) => {
    try {
      if (closed) return pending.reject('refused');
      const f = pending.flow;
      const dst = f.dstIp;
      const port = f.dstPort;
      if (port === 53) return tcpDns(pending);
      if (dst === link.hostAliasIp || dst === link.gatewayIp) return direct(pending, '127.0.0.1', port);
      if (isNeverDialed(dst) || onLink(dst, link)) {
        block(f, 'never-dialed');
        return pending.reject('refused');
      }
      const ipOk = policy.ipRule(dst);
      if (!ipOk && NetPolicy.isMetadata(dst)) {
        block(f, 'metadata');
        return pending.reject('refused');
      }
      const web = port === 80 || port === 443;
      if (web && ((policy.hasHostnameRules && !ipOk) || (interceptor && port === 443))) return peekThenDial(pending, ipOk);
      if (ipOk) return direct(pending, dst, port);
      if (policy.hasHostnameRules && pins.lookup(dst) !== undefined) {
        // Pinned by an allowed name's answer: the address is the name's DNS's choice, not ours.
        if (!upstreamOk(dst)) {
          block(f, unsafeReason(dst), `pinned for ${pins.lookup(dst)}`);
          return pending.reject('refused');
        }
        return direct(pending, dst, port, pins.hold(dst));
      }
      block(f, 'not-allowed');
      pending.reject('refused');
    } catch (err) {
      // Never let a bug here escape into the stack's frame handler.
      log(`net: internal error on ${fmt(pending.flow)}: ${(err as Error).message}`);
      try {
        pending.reject('refused');
      } catch {
        /* already decided */
      }
    }
  };

  // ---- UDP ---------------------------------------------------------------------------------
  interface UdpFlow {
    socket?: dgram.Socket;
    queue: Buffer[];
    last: number;
    release: () => void;
    close(): void;
  }
  const udpFlows = new Map<string, UdpFlow>();
  let evictedUdp = 0;

  const openUdp = (d: GuestDatagram, ip: string, port: number, release: () => void) => {
    // The payload is a view into the guest's frame: copied before it outlives this call.
    const payload = Buffer.from(d.payload);
    const key = `${d.flow.srcPort}|${d.flow.dstIp}:${d.flow.dstPort}`;
    const existing = udpFlows.get(key);
    if (existing) {
      release();
      existing.last = now();
      add(COUNTER.bytesSent, payload.length);
      if (existing.socket) existing.socket.send(payload);
      else if (existing.queue.length < limits.maxQueuedUdp) existing.queue.push(payload);
      return;
    }
    if (udpFlows.size >= limits.maxUdpFlows) {
      // Full: the least recently used flow gives way (its host socket closes), so a box that
      // talked to many peers keeps working; the number of host sockets stays bounded.
      let lru: UdpFlow | undefined;
      for (const f of udpFlows.values()) if (!lru || f.last < lru.last) lru = f;
      lru?.close();
      evictedUdp++;
    }
    const flow: UdpFlow = {
      queue: [payload],
      last: now(),
      release,
      close() {
        udpFlows.delete(key);
        flow.release();
        try {
          flow.socket?.close();
        } catch {
          /* already closed */
        }
        flow.socket = undefined;
      },
    };
    udpFlows.set(key, flow);
    add(COUNTER.bytesSent, payload.length);
    dialer.udp(ip, port).then(
      ({ socket }) => {
        if (closed || udpFlows.get(key) !== flow) {
          socket.close();
          return;
        }
        flow.socket = socket;
        socket.on('message', (msg) => {
          flow.last = now();
          add(COUNTER.udpDatagrams, 1);
          add(COUNTER.bytesReceived, msg.length);
          try {
            d.reply(msg);
          } catch {
            /* the stack dropped the flow */
          }
        });
        socket.on('error', () => flow.close());
        for (const p of flow.queue) socket.send(p);
        flow.queue = [];
      },
      (err: Error) => {
        log(`net: ${fmt(d.flow)} udp to ${ip}:${port} failed: ${err.message}`);
        flow.close();
        d.unreachable();
      },
    );
  };

  const sweep = setInterval(() => {
    const t = now();
    for (const f of [...udpFlows.values()]) if (t - f.last > limits.udpIdleMs) f.close();
  }, Math.min(5000, limits.udpIdleMs));
  sweep.unref();

  const onUdp = (d: GuestDatagram) => {
    try {
      if (closed) return;
      const f = d.flow;
      add(COUNTER.udpDatagrams, 1);
      if (f.dstPort === 53) {
        dns.handle(d.payload, (ans) => d.reply(ans));
        return;
      }
      const dst = f.dstIp;
      if (dst === link.hostAliasIp || dst === link.gatewayIp) return openUdp(d, '127.0.0.1', f.dstPort, () => {});
      if (isNeverDialed(dst) || onLink(dst, link)) {
        block(f, 'never-dialed');
        return d.unreachable();
      }
      const ipOk = policy.ipRule(dst);
      if (!ipOk && NetPolicy.isMetadata(dst)) {
        block(f, 'metadata');
        return d.unreachable();
      }
      if (ipOk) return openUdp(d, dst, f.dstPort, () => {});
      if (policy.hasHostnameRules && pins.lookup(dst) !== undefined) {
        if (!upstreamOk(dst)) {
          block(f, unsafeReason(dst), `pinned for ${pins.lookup(dst)}`);
          return d.unreachable();
        }
        return openUdp(d, dst, f.dstPort, pins.hold(dst));
      }
      block(f, 'not-allowed');
      d.unreachable();
    } catch (err) {
      log(`net: internal error on ${fmt(d.flow)}: ${(err as Error).message}`);
    }
  };

  return {
    onTcp,
    onUdp,
    dns,
    pins,
    snapshot(): DispatchSnapshot {
      return {
        allowNet: [...policy.patterns],
        blocked: { ...blocked },
        tcpErrors: { ...tcpErrors },
        dns: dns.snapshot(),
        pins: pins.snapshot(),
        flows: { tcp: active.size - peeking, peeking, udp: udpFlows.size, udpEvicted: evictedUdp },
      };
    },
    close() {
      if (closed) return;
      closed = true;
      clearInterval(sweep);
      for (const e of [...active]) e.close();
      active.clear();
      for (const f of [...udpFlows.values()]) f.close();
      dns.close(); // the interceptor is its creator's (worker.ts) to close
    },
  };
}
