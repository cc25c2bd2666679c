// The box's DNS server: every query the guest sends to port 53, to any address (the guest may
// ask 8.8.8.8 directly; the frames end in our stack all the same), is answered here. Names
// outside the allowlist get NXDOMAIN (design decision 3); allowed names are resolved on the
// host and their A records recorded in the pin set, which is what lets other ports reach them.
// No query is ever forwarded as bytes: the guest controls only a name and a type, and only A
// lookups of allowed names reach the host resolver.
//
// The codec is bounds-checked throughout and never throws on guest bytes (parseQuery returns
// an error shape instead).
import { COUNTER, type Dialer } from './types.js';
import { canonicalName, ipToInt, type NetPolicy } from './policy.js';
import { ResolveError } from './dialer.js';

export const QTYPE = { A: 1, NS: 2, CNAME: 5, SOA: 6, PTR: 12, MX: 15, TXT: 16, AAAA: 28, SRV: 33, OPT: 41, ANY: 255 } as const;
export const RCODE = { NOERROR: 0, FORMERR: 1, SERVFAIL: 2, NXDOMAIN: 3, NOTIMP: 4, REFUSED: 5 } as const;

export interface DnsQuery {
  id: number;
  /** The RD bit, copied into the answer. */
  rd: boolean;
  /** Lower-cased, without a trailing dot; '' for the root. */
  name: string;
  qtype: number;
  qclass: number;
  /** The question section exactly as sent (QNAME with its original case, QTYPE, QCLASS). */
  question: Buffer;
}

export type ParseResult = { ok: DnsQuery } | { error: number; id: number; rd: boolean } | { drop: true };

const MAX_POINTER_JUMPS = 16;
const MAX_NAME = 255;

/**
 * Reads a (possibly compressed) name at `off`. Returns the name and the offset just past it in
 * the original position, or undefined when malformed (loops, out of bounds, too long).
 */
export function readName(buf: Buffer, off: number): { name: string; end: number } | undefined {
  const labels: string[] = [];
  let pos = off;
  let end = -1;
  let jumps = 0;
  let total = 0;
  for (;;) {
    if (pos >= buf.length) return undefined;
    const len = buf[pos]!;
    if (len === 0) {
      if (end < 0) end = pos + 1;
      break;
    }
    const kind = len & 0xc0;
    if (kind === 0xc0) {
      if (pos + 1 >= buf.length) return undefined;
      if (++jumps > MAX_POINTER_JUMPS) return undefined;
      const target = ((len & 0x3f) << 8) | buf[pos + 1]!;
      if (end < 0) end = pos + 2;
      // Pointers must go backwards: a forward pointer is how a loop starts.
      if (target >= pos) return undefined;
      pos = target;
      continue;
    }
    if (kind !== 0) return undefined; // 0x40/0x80 label types are obsolete/unassigned
    if (pos + 1 + len > buf.length) return undefined;
    total += len + 1;
    if (total > MAX_NAME) return undefined;
    // A '.' or a control/non-ASCII byte inside a label would make the dotted name mean
    // something else to the policy than to a resolver: malformed.
    for (let i = pos + 1; i < pos + 1 + len; i++) {
      const c = buf[i]!;
      if (c <= 0x20 || c >= 0x7f || c === 0x2e) return undefined;
    }
    labels.push(buf.toString('latin1', pos + 1, pos + 1 + len));
    pos += 1 + len;
  }
  return { name: labels.join('.'), end };
}

/**
 * Can `name` (dotted, as readName returns it) be looked up on the host? Labels of letters,
 * digits, '-' and '_' only, none empty; '' is the root. Anything else ('\\', '*', '"', ...)
 * could mean another name to the host's resolver than to the policy (c-ares and glibc read
 * "\\." as an escaped dot inside a label, "\\065" as 'A'): such a name gets NXDOMAIN and is
 * never looked up.
 */
export function isLookupableName(name: string): boolean {
  if (name === '') return true;
  if (name.length > 253) return false;
  return name.split('.').every((l) => /^[A-Za-z0-9_-]{1,63}$/.test(l));
}

/** Parses a guest query. Only standard queries with one question are answered. */
export function parseQuery(buf: Buffer): ParseResult {
  if (buf.length < 12) return { drop: true };
  const id = buf.readUInt16BE(0);
  const flags = buf.readUInt16BE(2);
  const rd = (flags & 0x0100) !== 0;
  if (flags & 0x8000) return { drop: true }; // a response: never answer those (reflection loops)
  const opcode = (flags >> 11) & 0xf;
  if (opcode !== 0) return { error: RCODE.NOTIMP, id, rd };
  const qd = buf.readUInt16BE(4);
  if (qd !== 1) return { error: RCODE.FORMERR, id, rd };
  const n = readName(buf, 12);
  if (!n || n.end + 4 > buf.length) return { error: RCODE.FORMERR, id, rd };
  const qtype = buf.readUInt16BE(n.end);
  const qclass = buf.readUInt16BE(n.end + 2);
  // The echoed question carries the name uncompressed: a pointer in it would point into our
  // answer's layout, not the query's.
  const question = Buffer.concat([encodeName(n.name), buf.subarray(n.end, n.end + 4)]);
  return { ok: { id, rd, name: canonicalName(n.name), qtype, qclass, question } };
}

/** A name in wire format (labels of at most 63 bytes; longer ones are cut, names come from readName). */
export function encodeName(name: string): Buffer {
  const parts: Buffer[] = [];
  for (const label of name.split('.')) {
    if (!label) continue;
    const b = Buffer.from(label, 'latin1').subarray(0, 63);
    parts.push(Buffer.from([b.length]), b);
  }
  parts.push(Buffer.from([0]));
  return Buffer.concat(parts);
}

/** Builds a query (tests, and the DNS counterpart of a `dig` invocation). */
export function buildQuery(id: number, name: string, qtype: number, opts: { rd?: boolean; edns?: boolean } = {}): Buffer {
  const h = Buffer.alloc(12);
  h.writeUInt16BE(id, 0);
  h.writeUInt16BE(opts.rd === false ? 0 : 0x0100, 2);
  h.writeUInt16BE(1, 4);
  if (opts.edns) h.writeUInt16BE(1, 10);
  const q = Buffer.alloc(4);
  q.writeUInt16BE(qtype, 0);
  q.writeUInt16BE(1, 2);
  // EDNS0 OPT pseudo-record as dig sends it: root name, type 41, UDP size 1232, no options.
  const opt = opts.edns ? Buffer.from([0, 0, 41, 0x04, 0xd0, 0, 0, 0, 0, 0, 0]) : Buffer.alloc(0);
  return Buffer.concat([h, encodeName(name), q, opt]);
}

/** A response: the question echoed, then A records (name as a pointer to the question). */
export function buildResponse(q: { id: number; rd: boolean; question?: Buffer }, rcode: number, answers: Array<{ address: string; ttl: number }> = []): Buffer {
  const h = Buffer.alloc(12);
  h.writeUInt16BE(q.id, 0);
  // QR=1, RD copied, RA=1 (we recurse on the host), rcode.
  h.writeUInt16BE(0x8000 | (q.rd ? 0x0100 : 0) | 0x0080 | (rcode & 0xf), 2);
  h.writeUInt16BE(q.question ? 1 : 0, 4);
  h.writeUInt16BE(q.question ? answers.length : 0, 6);
  const parts: Buffer[] = [h];
  if (q.question) {
    parts.push(q.question);
    for (const a of answers) {
      const rr = Buffer.alloc(16);
      rr.writeUInt16BE(0xc00c, 0); // pointer to the question's name at offset 12
      rr.writeUInt16BE(QTYPE.A, 2);
      rr.writeUInt16BE(1, 4);
      rr.writeUInt32BE(Math.max(0, Math.min(0x7fffffff, Math.floor(a.ttl))), 6);
      rr.writeUInt16BE(4, 10);
      const o = a.address.split('.').map(Number);
      for (let i = 0; i < 4; i++) rr[12 + i] = o[i]! & 255;
      parts.push(rr);
    }
  }
  return Buffer.concat(parts);
}

/** A parsed response (tests and the VM test's guest-side checks). */
export function parseResponse(buf: Buffer): { id: number; rcode: number; answers: Array<{ address: string; ttl: number }> } | undefined {
  if (buf.length < 12) return undefined;
  const id = buf.readUInt16BE(0);
  const rcode = buf.readUInt16BE(2) & 0xf;
  const qd = buf.readUInt16BE(4);
  const an = buf.readUInt16BE(6);
  let off = 12;
  for (let i = 0; i < qd; i++) {
    const n = readName(buf, off);
    if (!n || n.end + 4 > buf.length) return undefined;
    off = n.end + 4;
  }
  const answers: Array<{ address: string; ttl: number }> = [];
  for (let i = 0; i < an; i++) {
    const n = readName(buf, off);
    if (!n || n.end + 10 > buf.length) return undefined;
    const type = buf.readUInt16BE(n.end);
    const ttl = buf.readUInt32BE(n.end + 4);
    const len = buf.readUInt16BE(n.end + 8);
    const data = n.end + 10;
    if (data + len > buf.length) return undefined;
    if (type === QTYPE.A && len === 4) answers.push({ address: [...buf.subarray(data, data + 4)].join('.'), ttl });
    off = data + len;
  }
  return { id, rcode, answers };
}

export const MIN_PIN_TTL_S = 30;
export const MAX_PIN_TTL_S = 600;

interface Pin {
  name: string;
  expires: number;
  refs: number;
}

/**
 * IPs this box's DNS answers returned for allowed names: the only addresses non-80/443 ports
 * may reach under hostname rules. TTL clamped to 30 s–10 min; an expired pin stays while a flow
 * holds it. Bounded: when full, expired and then the oldest unreferenced pins go first.
 */
export class PinSet {
  private readonly pins = new Map<string, Pin>();
  constructor(
    private readonly max = 4096,
    private readonly now: () => number = Date.now,
  ) {}

  add(ip: string, name: string, ttlS: number): void {
    const ttl = Math.min(MAX_PIN_TTL_S, Math.max(MIN_PIN_TTL_S, Number.isFinite(ttlS) ? ttlS : MIN_PIN_TTL_S));
    const expires = this.now() + ttl * 1000;
    const old = this.pins.get(ip);
    if (old) {
      old.name = name;
      old.expires = Math.max(old.expires, expires);
      // Re-insert: Map order is the eviction order (oldest first).
      this.pins.delete(ip);
      this.pins.set(ip, old);
      return;
    }
    if (this.pins.size >= this.max) this.evict();
    if (this.pins.size >= this.max) return; // every pin is in use: the new answer is not pinned
    this.pins.set(ip, { name, expires, refs: 0 });
  }

  private evict(): void {
    const t = this.now();
    for (const [ip, p] of this.pins) if (p.refs === 0 && p.expires <= t) this.pins.delete(ip);
    if (this.pins.size < this.max) return;
    for (const [ip, p] of this.pins) {
      if (p.refs === 0) {
        this.pins.delete(ip);
        if (this.pins.size < this.max) return;
      }
    }
  }

  /** The allowed name an IP was answered for, when the pin is live (or held by a flow). */
  lookup(ip: string): string | undefined {
    const p = this.pins.get(ip);
    if (!p) return undefined;
    if (p.expires > this.now() || p.refs > 0) return p.name;
    this.pins.delete(ip);
    return undefined;
  }

  /** Holds a pin for a flow's lifetime; returns the release function (idempotent). */
  hold(ip: string): () => void {
    const p = this.pins.get(ip);
    if (!p) return () => {};
    p.refs++;
    let done = false;
    return () => {
      if (done) return;
      done = true;
      p.refs--;
    };
  }

  get size(): number {
    return this.pins.size;
  }

  snapshot(limit = 64): Array<{ ip: string; name: string; ttl: number; flows: number }> {
    const t = this.now();
    const out: Array<{ ip: string; name: string; ttl: number; flows: number }> = [];
    for (const [ip, p] of this.pins) {
      if (out.length >= limit) break;
      out.push({ ip, name: p.name, ttl: Math.max(0, Math.round((p.expires - t) / 1000)), flows: p.refs });
    }
    return out;
  }
}

export interface DnsLimits {
  /** Sustained queries per second per box (token bucket refill). */
  queriesPerSecond: number;
  /** Token bucket size. */
  burst: number;
  /** Host lookups awaiting an answer at once; queries beyond get SERVFAIL. */
  maxInflight: number;
  /** Cached host answers (by name). */
  maxCache: number;
  /** A records per answer. */
  maxAnswers: number;
}

export const DEFAULT_DNS_LIMITS: DnsLimits = { queriesPerSecond: 200, burst: 400, maxInflight: 64, maxCache: 1024, maxAnswers: 16 };

/** The A answers of a name, or the rcode the name gets (resolution shared with dispatch). */
export type Lookup = { addresses: Array<{ address: string; ttl: number }> } | { rcode: number };

export class DnsServer {
  readonly stats = { queries: 0, answered: 0, nxdomain: 0, servfail: 0, refused: 0, rateLimited: 0, malformed: 0, hostLookups: 0 };
  private readonly limits: DnsLimits;
  private tokens: number;
  private lastRefill: number;
  private inflight = 0;
  private readonly cache = new Map<string, { addresses: Array<{ address: string; ttl: number }>; expires: number }>();
  /** Lookups in flight by name: concurrent queries for one name share one host lookup. */
  private readonly pending = new Map<string, Promise<Lookup>>();
  private closed = false;

  constructor(
    private readonly opts: {
      policy: NetPolicy;
      dialer: Dialer;
      pins: PinSet;
      hostAlias: { name: string; ip: string };
      counters?: BigInt64Array;
      limits?: Partial<DnsLimits>;
      log?: (line: string) => void;
      now?: () => number;
    },
  ) {
    this.limits = { ...DEFAULT_DNS_LIMITS, ...opts.limits };
    this.tokens = this.limits.burst;
    this.lastRefill = this.now();
  }

  private now(): number {
    return this.opts.now ? this.opts.now() : Date.now();
  }

  private bump(slot: number): void {
    if (this.opts.counters) Atomics.add(this.opts.counters, slot, 1n);
  }

  private takeToken(): boolean {
    const t = this.now();
    const add = ((t - this.lastRefill) / 1000) * this.limits.queriesPerSecond;
    if (add > 0) {
      this.tokens = Math.min(this.limits.burst, this.tokens + add);
      this.lastRefill = t;
    }
    if (this.tokens < 1) return false;
    this.tokens -= 1;
    return true;
  }

  /**
   * Resolves an allowed name on the host (cached, TTL clamped like the pins) and pins the
   * answers. Also what dispatch uses to dial a peeked SNI/Host name.
   */
  lookup(name: string): Promise<Lookup> {
    const n = canonicalName(name);
    if (n === this.opts.hostAlias.name) return Promise.resolve({ addresses: [{ address: this.opts.hostAlias.ip, ttl: MAX_PIN_TTL_S }] });
    // An IPv4 literal "resolves" to itself (the IP rules judge it; resolvers answer NXDOMAIN).
    if (ipToInt(n) !== undefined) return Promise.resolve({ addresses: [{ address: n, ttl: MAX_PIN_TTL_S }] });
    if (!isLookupableName(n)) return Promise.resolve({ rcode: RCODE.NXDOMAIN });
    const hit = this.cache.get(n);
    const t = this.now();
    if (hit && hit.expires > t) {
      const ttl = Math.max(1, Math.round((hit.expires - t) / 1000));
      for (const a of hit.addresses) this.opts.pins.add(a.address, n, ttl);
      return Promise.resolve({ addresses: hit.addresses.map((a) => ({ address: a.address, ttl })) });
    }
    const shared = this.pending.get(n);
    if (shared) return shared;
    if (this.inflight >= this.limits.maxInflight) return Promise.resolve({ rcode: RCODE.SERVFAIL });
    this.inflight++;
    this.stats.hostLookups++;
    const p = this.opts.dialer
      .resolve4(n)
      .then((addrs): Lookup => {
        const addresses = addrs
          .filter((a) => /^\d+\.\d+\.\d+\.\d+$/.test(a.address))
          .slice(0, this.limits.maxAnswers)
          .map((a) => ({ address: a.address, ttl: Math.min(MAX_PIN_TTL_S, Math.max(MIN_PIN_TTL_S, a.ttl)) }));
        if (!addresses.length) return { addresses };
        const ttl = Math.min(...addresses.map((a) => a.ttl));
        if (this.cache.size >= this.limits.maxCache) this.cache.delete(this.cache.keys().next().value!);
        this.cache.set(n, { addresses, expires: this.now() + ttl * 1000 });
        for (const a of addresses) this.opts.pins.add(a.address, n, a.ttl);
        return { addresses };
      })
      .catch((err): Lookup => {
        const kind = err instanceof ResolveError ? err.kind : 'servfail';
        if (kind === 'nodata') return { addresses: [] };
        return { rcode: kind === 'nxdomain' ? RCODE.NXDOMAIN : RCODE.SERVFAIL };
      })
      .finally(() => {
        this.inflight--;
        this.pending.delete(n);
      });
    this.pending.set(n, p);
    return p;
  }

  /**
   * Answers one query (UDP payload or one TCP message). `reply` is called at most once, maybe
   * later; nothing is sent for packets that are not queries. Never throws.
   */
  handle(packet: Buffer, reply: (answer: Buffer) => void): void {
    this.stats.queries++;
    this.bump(COUNTER.dnsQueries);
    if (!this.takeToken()) {
      // Over the rate: dropped without an answer, so a flood costs no work and no output.
      this.stats.rateLimited++;
      return;
    }
    let parsed: ParseResult;
    try {
      parsed = parseQuery(packet);
    } catch {
      parsed = { drop: true };
    }
    if ('drop' in parsed) {
      this.stats.malformed++;
      return;
    }
    if ('error' in parsed) {
      this.stats.malformed++;
      this.send(reply, buildResponse(parsed, parsed.error));
      return;
    }
    const q = parsed.ok;
    void this.answer(q).then(
      (res) => this.send(reply, res),
      () => this.send(reply, buildResponse(q, RCODE.SERVFAIL)),
    );
  }

  private send(reply: (b: Buffer) => void, answer: Buffer): void {
    if (this.closed) return;
    const rcode = answer.length >= 4 ? answer.readUInt16BE(2) & 0xf : 0;
    if (rcode === RCODE.NXDOMAIN) {
      this.stats.nxdomain++;
      this.bump(COUNTER.dnsNxdomain);
    } else if (rcode === RCODE.SERVFAIL) this.stats.servfail++;
    else if (rcode === RCODE.REFUSED) this.stats.refused++;
    this.stats.answered++;
    try {
      reply(answer);
    } catch {
      /* the flow went away */
    }
  }

  private async answer(q: DnsQuery): Promise<Buffer> {
    if (q.qclass !== 1 && q.qclass !== 255) return buildResponse(q, RCODE.REFUSED);
    const isAlias = q.name === this.opts.hostAlias.name;
    if (!isLookupableName(q.name)) {
      this.opts.log?.(`dns: NXDOMAIN for ${JSON.stringify(q.name)} (not a plain host name)`);
      return buildResponse(q, RCODE.NXDOMAIN);
    }
    if (!isAlias && !this.opts.policy.allowsName(q.name)) {
      this.opts.log?.(`dns: NXDOMAIN for ${JSON.stringify(q.name)} (not in allowNet)`);
      return buildResponse(q, RCODE.NXDOMAIN);
    }
    // AAAA and every other type: an empty NOERROR (the name exists; the link is IPv4 only, and
    // no other record type is fetched from the host: less to leak through).
    if (q.qtype !== QTYPE.A && q.qtype !== QTYPE.ANY) return buildResponse(q, RCODE.NOERROR);
    if (q.name === '') return buildResponse(q, RCODE.NOERROR);
    const r = await this.lookup(q.name);
    if ('rcode' in r) return buildResponse(q, r.rcode);
    return buildResponse(q, RCODE.NOERROR, r.addresses);
  }

  snapshot(): object {
    return { ...this.stats, inflight: this.inflight, cached: this.cache.size };
  }

  close(): void {
    this.closed = true;
    this.cache.clear();
  }
}
