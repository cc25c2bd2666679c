// The only code that opens host sockets on behalf of guest flows (see types.ts). Two variants:
// the real dialer (host resolver, any address the dispatcher decided to dial) and the test-seam
// dialer, which resolves only from the seam's name table and dials only through its dial table,
// so a test bug can never send traffic off the machine. Host loopback (127.0.0.0/8) is allowed
// in both: it is where host.boxlite.internal leads, and it stays on the machine.
import dgram from 'node:dgram';
import dns from 'node:dns';
import { readFileSync } from 'node:fs';
import net from 'node:net';
import { NetworkError } from '../errors/index.js';
import type { Dialer, NetTestSeam } from './types.js';
import { ipToInt } from './policy.js';

/** 198.18.0.0/15, where the test seam's guest-visible addresses live (types.ts NetTestSeam). */
const BENCHMARKING_NET = ipToInt('198.18.0.0')!;

/** Resolver failures the DNS server maps to rcodes: NXDOMAIN, empty NOERROR, or SERVFAIL. */
export type ResolveErrorKind = 'nxdomain' | 'nodata' | 'servfail';

export class ResolveError extends NetworkError {
  readonly kind: ResolveErrorKind;
  constructor(name: string, kind: ResolveErrorKind, detail: string) {
    super(`cannot resolve ${name}: ${detail}`);
    this.kind = kind;
  }
}

function isLoopback(ip: string): boolean {
  const n = ipToInt(ip);
  return n !== undefined && n >>> 24 === 127;
}

/** net.connect that resolves on 'connect' (allowHalfOpen: the guest's FIN is forwarded, not a close). */
function connectTo(host: string, port: number, timeoutMs: number, label: string): Promise<net.Socket> {
  return new Promise((resolve, reject) => {
    const sock = net.connect({ host, port, allowHalfOpen: true, family: 4 });
    const timer = setTimeout(() => {
      sock.destroy();
      reject(new NetworkError(`connect to ${label} timed out after ${timeoutMs} ms`));
    }, timeoutMs);
    sock.once('connect', () => {
      clearTimeout(timer);
      sock.removeListener('error', onError);
      resolve(sock);
    });
    const onError = (err: NodeJS.ErrnoException) => {
      clearTimeout(timer);
      sock.destroy();
      reject(new NetworkError(`connect to ${label} failed: ${err.code ?? err.message}`, { cause: err }));
    };
    sock.once('error', onError);
  });
}

function udpTo(host: string, port: number, label: string): Promise<{ socket: dgram.Socket; address: string; port: number }> {
  return new Promise((resolve, reject) => {
    const socket = dgram.createSocket('udp4');
    socket.once('error', (err) => {
      socket.close();
      reject(new NetworkError(`udp to ${label} failed: ${err.message}`, { cause: err }));
    });
    // connect() makes the kernel drop datagrams from any other source: replies come only from
    // the address the policy allowed.
    socket.connect(port, host, () => {
      socket.removeAllListeners('error');
      resolve({ socket, address: host, port });
    });
  });
}

function checkTarget(ip: string, port: number): void {
  if (ipToInt(ip) === undefined) throw new NetworkError(`not an IPv4 address: ${JSON.stringify(ip)}`);
  if (!Number.isInteger(port) || port < 1 || port > 65535) throw new NetworkError(`bad port ${port}`);
}

/**
 * The IPv4 addresses /etc/hosts gives `name` (exact, case-insensitive; comments and IPv6 lines
 * skipped), or [] when it has none or cannot be read. Read here rather than through
 * getaddrinfo: glibc's files backend does not match a fully qualified "name." (see resolve4).
 */
export function hostsFileLookup(name: string, hostsPath = '/etc/hosts'): string[] {
  let text: string;
  try {
    text = readFileSync(hostsPath, 'latin1');
  } catch {
    return [];
  }
  const want = name.toLowerCase().replace(/\.$/, '');
  const out: string[] = [];
  for (const raw of text.split('\n')) {
    const fields = raw.replace(/#.*/, '').trim().split(/\s+/);
    if (fields.length < 2 || ipToInt(fields[0]!) === undefined) continue;
    if (fields.slice(1).some((f) => f.toLowerCase().replace(/\.$/, '') === want) && !out.includes(fields[0]!)) out.push(fields[0]!);
  }
  return out;
}

class RealDialer implements Dialer {
  private readonly resolver = new dns.promises.Resolver({ timeout: 5000, tries: 2 });
  constructor(private readonly hostsPath = '/etc/hosts') {}

  /**
   * The host's DNS servers first (c-ares: they give TTLs); when they do not know the name or
   * cannot be reached, the host's /etc/hosts, then getaddrinfo (the rest of nsswitch: mDNS,
   * systemd-resolved, ...), with the pin set's minimum TTL.
   *
   * Both resolver calls get the name fully qualified ("name."): the guest's name must be looked
   * up as it is, never with the host's search domains appended (`nope.example.com`, allowed by
   * `*.example.com`, must not become `nope.example.com.corp.internal`, an internal host).
   */
  async resolve4(name: string): Promise<Array<{ address: string; ttl: number }>> {
    const fqdn = name.endsWith('.') ? name : `${name}.`;
    let first: NodeJS.ErrnoException;
    try {
      return await this.resolver.resolve4(fqdn, { ttl: true });
    } catch (err) {
      first = err as NodeJS.ErrnoException;
      if (first.code === dns.NODATA) throw new ResolveError(name, 'nodata', dns.NODATA);
    }
    const hosts = hostsFileLookup(name, this.hostsPath);
    if (hosts.length) return hosts.map((address) => ({ address, ttl: 30 }));
    try {
      const found = await dns.promises.lookup(fqdn, { family: 4, all: true, verbatim: true });
      if (found.length) return found.map((a) => ({ address: a.address, ttl: 30 }));
    } catch (err) {
      // getaddrinfo's ENOTFOUND is the host's final word that the name does not exist;
      // anything else (EAI_AGAIN, ...) is a temporary failure.
      const code = (err as NodeJS.ErrnoException).code;
      if (code === 'ENOTFOUND') throw new ResolveError(name, 'nxdomain', `${first.code ?? 'error'}, then ${code}`);
    }
    throw new ResolveError(name, 'servfail', String(first.code ?? first.message));
  }

  async connectTcp(ip: string, port: number, timeoutMs: number): Promise<net.Socket> {
    checkTarget(ip, port);
    return connectTo(ip, port, timeoutMs, `${ip}:${port}`);
  }

  async udp(ip: string, port: number) {
    checkTarget(ip, port);
    return udpTo(ip, port, `${ip}:${port}`);
  }
}

/** @internal The test seam's dialer: names and dials only from the tables, or host loopback. */
class SeamDialer implements Dialer {
  readonly upstreamCa?: string[];
  /** The seam's 198.18.0.0/15 addresses (its names' answers and dial keys). */
  private readonly own = new Set<string>();
  constructor(private readonly seam: NetTestSeam) {
    this.upstreamCa = seam.upstreamCa?.length ? [...seam.upstreamCa] : undefined;
    const benchmarking = (ip: string) => {
      const n = ipToInt(ip);
      return n !== undefined && (n & 0xfffe0000) >>> 0 === BENCHMARKING_NET;
    };
    for (const ips of Object.values(seam.names)) for (const ip of ips) if (benchmarking(ip)) this.own.add(ip);
    for (const key of Object.keys(seam.dial)) {
      const ip = key.replace(/:\d+$/, '');
      if (benchmarking(ip)) this.own.add(ip);
    }
  }

  /**
   * The seam's test addresses stand for public servers: the private-range refusal for
   * hostname-derived dials (policy.ts isDialableUpstream) must not apply to them. Only
   * 198.18.0.0/15 (the seam's documented range): a seam entry on 10/8 stays private, so the
   * refusal itself is testable through the seam.
   */
  isSeamAddress(ip: string): boolean {
    return this.own.has(ip);
  }

  async resolve4(name: string): Promise<Array<{ address: string; ttl: number }>> {
    const key = name.toLowerCase().replace(/\.$/, '');
    const addrs = Object.prototype.hasOwnProperty.call(this.seam.names, key) ? this.seam.names[key] : undefined;
    if (!addrs) throw new ResolveError(name, 'nxdomain', 'not in the test seam name table');
    if (!addrs.length) throw new ResolveError(name, 'nodata', 'no addresses in the test seam name table');
    return addrs.map((address) => ({ address, ttl: 60 }));
  }

  /** The host address for a guest-visible ip:port, or loopback as is; anything else fails. */
  private target(ip: string, port: number): { host: string; port: number } {
    checkTarget(ip, port);
    const mapped = this.seam.dial[`${ip}:${port}`] ?? this.seam.dial[ip];
    if (mapped !== undefined) {
      const m = /^(\d+\.\d+\.\d+\.\d+)(?::(\d+))?$/.exec(mapped);
      if (!m || !isLoopback(m[1]!)) throw new NetworkError(`test seam: dial target ${mapped} is not on 127.0.0.0/8`);
      return { host: m[1]!, port: m[2] ? Number(m[2]) : port };
    }
    if (isLoopback(ip)) return { host: ip, port };
    throw new NetworkError(`test seam: no dial entry for ${ip}:${port} (test mode dials nothing else)`);
  }

  async connectTcp(ip: string, port: number, timeoutMs: number): Promise<net.Socket> {
    const t = this.target(ip, port);
    return connectTo(t.host, t.port, timeoutMs, `${ip}:${port} (seam → ${t.host}:${t.port})`);
  }

  async udp(ip: string, port: number) {
    const t = this.target(ip, port);
    const r = await udpTo(t.host, t.port, `${ip}:${port} (seam → ${t.host}:${t.port})`);
    return { socket: r.socket, address: ip, port };
  }
}

/** The real dialer, or the test seam's when one is given (internal, tests only). */
export function createDialer(seam?: NetTestSeam, internal: { hostsPath?: string } = {}): Dialer {
  return seam ? new SeamDialer(seam) : new RealDialer(internal.hostsPath);
}
