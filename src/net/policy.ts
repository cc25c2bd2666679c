// The outbound allowlist (`network.allowNet`): parsing the patterns once, when the box is
// created (ConfigError naming the field, before anything starts), and matching names and IPs
// for every guest flow and DNS query (dispatch.ts, dns.ts).
//
// Patterns (canonical form: lower case, no trailing dot):
//   api.example.com   exactly that name
//   *.example.com     any name below example.com, at any depth, NOT example.com itself
//                     (design decision 1: E2B's and the reference's TCP filter semantics)
//   203.0.113.7       that IPv4 address
//   10.0.0.0/8        that IPv4 network; host bits must be zero (10.0.0.1/8 is refused: it is
//                     ambiguous whether one host or the network was meant)
// IPv6 is not supported (the virtual link is IPv4-only; AAAA queries are answered empty).
import { ConfigError } from '../errors/index.js';

/** 169.254.0.0/16: link-local, where clouds serve instance metadata (and credentials). */
const METADATA_NET = { net: ipToInt('169.254.0.0')!, prefix: 16 };

/** Dotted IPv4 → unsigned 32-bit integer; undefined when `s` is not exactly a.b.c.d (no leading zeros). */
export function ipToInt(s: string): number | undefined {
  const parts = s.split('.');
  if (parts.length !== 4) return undefined;
  let n = 0;
  for (const p of parts) {
    // Leading zeros are refused: "010" is octal to inet_aton and decimal to us.
    if (!/^(0|[1-9]\d{0,2})$/.test(p)) return undefined;
    const b = Number(p);
    if (b > 255) return undefined;
    n = n * 256 + b;
  }
  return n >>> 0;
}

function maskOf(prefix: number): number {
  return prefix === 0 ? 0 : (0xffffffff << (32 - prefix)) >>> 0;
}

function inNet(ip: number, net: number, prefix: number): boolean {
  return ((ip & maskOf(prefix)) >>> 0) === net;
}

/** A DNS name as the policy compares it: lower case, without the root's trailing dot. */
export function canonicalName(name: string): string {
  const n = name.toLowerCase();
  return n.endsWith('.') ? n.slice(0, -1) : n;
}

// Letters, digits, '-' and '_' (SRV-style and some real hosts use '_'); no empty label,
// no label starting or ending with '-'. Total length ≤ 253 (RFC 1035 without the root).
const LABEL = /^(?!-)[a-z0-9_-]{1,63}(?<!-)$/;

function isHostname(n: string): boolean {
  if (n.length === 0 || n.length > 253) return false;
  const labels = n.split('.');
  if (!labels.every((l) => LABEL.test(l))) return false;
  // A last label of digits only is a malformed IPv4 literal (999.1.1.1, 1.2.3), not a name.
  return !/^\d+$/.test(labels[labels.length - 1]!);
}

/** Is `name` a syntactically valid DNS host name (the shape the policy can match)? */
export function isValidHostname(name: string): boolean {
  return isHostname(canonicalName(name));
}

/** Why one allowNet entry is refused, or its canonical form. */
function parseEntry(raw: string): { ok: string } | { error: string } {
  if (raw.trim() === '') return { error: 'must not be empty (use [] to allow everything)' };
  if (raw !== raw.trim() || /\s/.test(raw)) return { error: 'must not contain whitespace' };
  if (raw.includes('://')) return { error: 'must be a host name, IP or CIDR, not a URL (drop the scheme and path)' };
  if (raw.includes('\0')) return { error: 'must not contain NUL' };
  const e = canonicalName(raw);
  if (e === '*' || e === '*.') return { error: 'a bare wildcard is not a pattern (use [] to allow everything)' };
  if (e.includes('[') || (e.match(/:/g)?.length ?? 0) > 1) return { error: 'IPv6 is not supported (the box network is IPv4 only)' };
  if (e.includes(':')) return { error: 'must not include a port (rules apply to every port)' };
  if (e.includes('/')) {
    const [addr, len, ...rest] = e.split('/');
    const net = ipToInt(addr!);
    if (rest.length || net === undefined) return { error: 'is not a valid IPv4 CIDR (a.b.c.d/n)' };
    if (!/^(0|[1-9]\d?)$/.test(len!) || Number(len) > 32) return { error: 'has a bad prefix length (0 to 32)' };
    const prefix = Number(len);
    const base = (net & maskOf(prefix)) >>> 0;
    if (base !== net) return { error: `has host bits set: did you mean ${intToIp(base)}/${prefix}?` };
    return { ok: `${addr}/${prefix}` };
  }
  if (ipToInt(e) !== undefined) return { ok: e };
  if (e.startsWith('*.')) {
    const rest = e.slice(2);
    if (!isHostname(rest)) return { error: 'is not a valid wildcard (*.example.com)' };
    return { ok: e };
  }
  if (e.includes('*')) return { error: 'a wildcard is only allowed as the first label (*.example.com)' };
  if (/^[\d.]+$/.test(e)) return { error: 'is not a valid IPv4 address' };
  if (/[^\x00-\x7f]/.test(e)) return { error: 'is not a valid host name (write internationalized names in their xn-- form)' };
  if (!isHostname(e)) return { error: 'is not a valid host name' };
  return { ok: e };
}

export function intToIp(n: number): string {
  return `${n >>> 24}.${(n >>> 16) & 255}.${(n >>> 8) & 255}.${n & 255}`;
}

/**
 * Validates allowNet entries and returns them in canonical form, deduplicated, in order.
 * Every problem is a ConfigError naming `field[i]`.
 */
export function parseAllowNet(entries: unknown, field: string): string[] {
  if (entries === undefined || entries === null) return [];
  if (!Array.isArray(entries)) throw new ConfigError(`${field} must be an array of strings`);
  const out: string[] = [];
  for (const [i, raw] of entries.entries()) {
    if (typeof raw !== 'string') throw new ConfigError(`${field}[${i}] must be a string`);
    const r = parseEntry(raw);
    if ('error' in r) throw new ConfigError(`${field}[${i}] ${r.error}, got ${JSON.stringify(raw)}`);
    if (!out.includes(r.ok)) out.push(r.ok);
  }
  return out;
}

/** A compiled allowlist. Patterns must come from parseAllowNet (anything else is ignored). */
export class NetPolicy {
  readonly patterns: readonly string[];
  /** [] = everything allowed (the same path and counters, no filtering). */
  readonly isOpen: boolean;
  /** Exact or wildcard name rules exist: DNS filters, 80/443 are peeked, other ports need pins. */
  readonly hasHostnameRules: boolean;
  private readonly exact = new Set<string>();
  /** Suffixes of `*.x` rules, with the leading dot: ".example.com". */
  private readonly suffixes: string[] = [];
  private readonly nets: Array<{ net: number; prefix: number }> = [];

  constructor(patterns: readonly string[] | undefined) {
    // undefined: a config written before the allowlist existed, which allowed everything.
    patterns = patterns ?? [];
    this.patterns = Object.freeze([...patterns]);
    for (const p of patterns) {
      if (p.includes('/')) {
        const [a, l] = p.split('/');
        const net = ipToInt(a!);
        if (net !== undefined) this.nets.push({ net, prefix: Number(l) });
      } else if (ipToInt(p) !== undefined) {
        this.nets.push({ net: ipToInt(p)!, prefix: 32 });
      } else if (p.startsWith('*.')) {
        this.suffixes.push(p.slice(1));
      } else {
        this.exact.add(p);
      }
    }
    this.isOpen = patterns.length === 0;
    this.hasHostnameRules = this.exact.size > 0 || this.suffixes.length > 0;
  }

  /** May the guest resolve / reach this name? An IPv4 literal is judged by ipRule. */
  allowsName(name: string): boolean {
    const n = canonicalName(name);
    if (ipToInt(n) !== undefined) return this.ipRule(n);
    if (this.isOpen) return true;
    if (this.exact.has(n)) return true;
    for (const s of this.suffixes) if (n.length > s.length && n.endsWith(s)) return true;
    return false;
  }

  /** The secret/host matcher semantics (exact or `*.` any depth, not the apex), for one pattern. */
  static nameMatches(pattern: string, name: string): boolean {
    const p = canonicalName(pattern);
    const n = canonicalName(name);
    if (p.startsWith('*.')) return n.length > p.length - 1 && n.endsWith(p.slice(1));
    return p === n;
  }

  /**
   * May the guest reach this IP by address (an IP/CIDR rule, or the open policy)?
   * 169.254.0.0/16 only when a rule at least as specific as /16 covers it (0.0.0.0/0 does
   * not unlock cloud metadata; design decision 4).
   */
  ipRule(ip: string): boolean {
    const n = ipToInt(ip);
    if (n === undefined) return false;
    const metadata = inNet(n, METADATA_NET.net, METADATA_NET.prefix);
    if (metadata) return this.nets.some((r) => r.prefix >= METADATA_NET.prefix && inNet(n, r.net, r.prefix));
    if (this.isOpen) return true;
    return this.nets.some((r) => inNet(n, r.net, r.prefix));
  }

  /** Is the address in 169.254.0.0/16 (for the blocked-by-reason counters)? */
  static isMetadata(ip: string): boolean {
    const n = ipToInt(ip);
    return n !== undefined && inNet(n, METADATA_NET.net, METADATA_NET.prefix);
  }
}

/**
 * Destinations no guest flow is ever dialed to, whatever the policy: "this network" 0/8, the
 * host's own loopback 127/8 (only host.boxlite.internal maps there, on purpose), multicast
 * 224/4, reserved 240/4 and broadcast. A guest root crafting such packets gets nothing.
 */
export function isNeverDialed(ip: string): boolean {
  const n = ipToInt(ip);
  if (n === undefined) return true;
  const top = n >>> 24;
  return top === 0 || top === 127 || top >= 224;
}

/**
 * Private and shared address space a host name's DNS answer must not lead to under a policy
 * with rules: an attacker who controls the DNS of a name inside an allowed wildcard (a
 * nip.io-style `*.example.com`, or any domain whose zone they own) could otherwise point it at
 * the host's LAN/VPC (DNS rebinding). 198.18.0.0/15 (benchmarking) is where the test seam lives:
 * its own addresses are exempted through the dialer (isSeamAddress), no others.
 */
const PRIVATE_NETS: ReadonlyArray<{ net: number; prefix: number }> = [
  ['10.0.0.0', 8], // RFC 1918
  ['172.16.0.0', 12], // RFC 1918
  ['192.168.0.0', 16], // RFC 1918 (the virtual link's subnet too)
  ['100.64.0.0', 10], // carrier-grade NAT, also Tailscale's tailnet addresses
  ['198.18.0.0', 15], // benchmarking (RFC 2544); the test seam's range
  ['192.0.0.0', 24], // IETF protocol assignments (RFC 6890)
].map(([a, p]) => ({ net: ipToInt(a as string)!, prefix: p as number }));

/** Is the address in a private/shared range (PRIVATE_NETS)? */
export function isPrivateAddress(ip: string): boolean {
  const n = ipToInt(ip);
  return n !== undefined && PRIVATE_NETS.some((r) => inNet(n, r.net, r.prefix));
}

/**
 * May a flow be dialed to `ip` when the address came from resolving an allowed NAME (a DNS
 * answer, a peeked SNI/Host, the interceptor's upstream) rather than from an IP/CIDR rule?
 *  - never: 0/8, 127/8, 224/4 and above (isNeverDialed);
 *  - 169.254.0.0/16 only when an IP/CIDR rule of /16 or narrower lists it (ipRule);
 *  - private ranges (isPrivateAddress) only when an IP/CIDR rule covers the address, or the
 *    policy is open (allowNet [] allows every address anyway, like the reference);
 *  - the test seam's own addresses (198.18.0.0/15 entries of its tables) always: they stand
 *    for public servers (`dialer.isSeamAddress`, set by the seam dialer only);
 *  - every other (public) address: yes, the name was allowed.
 * The dispatcher additionally refuses the virtual link's own subnet (it knows the link).
 */
export function isDialableUpstream(ip: string, policy: NetPolicy, seam?: { isSeamAddress?(ip: string): boolean }): boolean {
  if (ipToInt(ip) === undefined || isNeverDialed(ip)) return false;
  if (NetPolicy.isMetadata(ip)) return policy.ipRule(ip);
  if (seam?.isSeamAddress?.(ip)) return true;
  if (isPrivateAddress(ip)) return policy.ipRule(ip);
  return true;
}
