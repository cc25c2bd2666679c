// Learning the name a guest connection is for, from its first bytes: the TLS ClientHello's SNI
// or the HTTP/1 Host header. dispatch.ts holds the bytes (at most PEEK_MAX_BYTES, for at most
// PEEK_TIMEOUT_MS), then dials the NAME it found if the policy allows it, never the IP the guest
// chose. Pure functions over a Buffer: bounds-checked, never throw on guest bytes.

export const PEEK_MAX_BYTES = 16 * 1024;
export const PEEK_TIMEOUT_MS = 10_000;

export type PeekResult =
  /** More bytes are needed to decide. */
  | { kind: 'more' }
  /** A TLS ClientHello; `sni` absent when it carries no (valid) server_name. */
  | { kind: 'tls'; sni?: string }
  /** An HTTP/1 request head; `host` absent when there is no (valid) Host header. */
  | { kind: 'http'; host?: string }
  /** Neither TLS nor HTTP, or malformed. */
  | { kind: 'unknown'; why: string }
  /**
   * An HTTP/1 request an upstream could route by another name than the one we would check:
   * two Host headers, or a request target (absolute-form, CONNECT's authority) naming another
   * host or port than Host. Refused whatever the policy.
   */
  | { kind: 'invalid'; why: string };

const HTTP_METHODS = ['GET', 'HEAD', 'POST', 'PUT', 'DELETE', 'OPTIONS', 'PATCH', 'CONNECT', 'TRACE', 'PROPFIND', 'PROPPATCH', 'MKCOL', 'COPY', 'MOVE', 'LOCK', 'UNLOCK', 'REPORT', 'SEARCH', 'PURGE'];

/** A host name as SNI/Host may carry it: letters, digits, '-', '_', '.', at most 253 bytes. */
function validHost(h: string): boolean {
  return h.length > 0 && h.length <= 253 && /^[a-z0-9_.-]+$/i.test(h) && !h.includes('..') && !h.startsWith('.');
}

/** Classifies the first bytes of a guest connection and extracts its name. */
export function peek(buf: Buffer): PeekResult {
  if (buf.length === 0) return { kind: 'more' };
  if (buf[0] === 0x16) return peekTls(buf);
  return peekHttp(buf);
}

/**
 * TLS: handshake records (type 22) carrying a ClientHello (type 1). The handshake message may
 * span several records; their fragments are joined until the message is complete.
 */
export function peekTls(buf: Buffer): PeekResult {
  const chunks: Buffer[] = [];
  let have = 0;
  let need = -1; // handshake message length incl. its 4-byte header, once known
  let off = 0;
  while (need < 0 || have < need) {
    if (off + 5 > buf.length) return buf.length >= PEEK_MAX_BYTES ? { kind: 'unknown', why: 'ClientHello too long' } : { kind: 'more' };
    if (buf[off] !== 0x16) return { kind: 'unknown', why: 'not a TLS handshake record' };
    if (buf[off + 1] !== 0x03) return { kind: 'unknown', why: 'not a TLS record version' };
    const len = buf.readUInt16BE(off + 3);
    if (len === 0 || len > 16384 + 2048) return { kind: 'unknown', why: 'bad TLS record length' };
    // The ClientHello is read whole (the SNI may be its last extension): wait for the record.
    if (off + 5 + len > buf.length) return buf.length >= PEEK_MAX_BYTES ? { kind: 'unknown', why: 'ClientHello too long' } : { kind: 'more' };
    chunks.push(buf.subarray(off + 5, off + 5 + len));
    have += len;
    off += 5 + len;
    if (need < 0 && have >= 4) {
      const head = Buffer.concat(chunks);
      if (head[0] !== 0x01) return { kind: 'unknown', why: 'not a ClientHello' };
      need = 4 + readU24(head, 1);
    }
  }
  const hs = Buffer.concat(chunks);
  if (hs[0] !== 0x01) return { kind: 'unknown', why: 'not a ClientHello' };
  return { kind: 'tls', sni: sniOf(hs.subarray(4, need)) };
}

function readU24(b: Buffer, off: number): number {
  return (b[off]! << 16) | (b[off + 1]! << 8) | b[off + 2]!;
}

/** The server_name of a ClientHello body (after the 4-byte handshake header), if any. */
export function sniOf(body: Buffer): string | undefined {
  let p = 2 + 32; // client_version, random
  if (p + 1 > body.length) return undefined;
  p += 1 + body[p]!; // session_id
  if (p + 2 > body.length) return undefined;
  p += 2 + body.readUInt16BE(p); // cipher_suites
  if (p + 1 > body.length) return undefined;
  p += 1 + body[p]!; // compression_methods
  if (p + 2 > body.length) return undefined;
  const extEnd = Math.min(body.length, p + 2 + body.readUInt16BE(p));
  p += 2;
  while (p + 4 <= extEnd) {
    const type = body.readUInt16BE(p);
    const len = body.readUInt16BE(p + 2);
    p += 4;
    if (p + len > extEnd) return undefined;
    if (type === 0) {
      // server_name: list length, then entries of (type, length, name); host_name is type 0.
      let q = p + 2;
      const end = Math.min(p + len, p + 2 + (len >= 2 ? body.readUInt16BE(p) : 0));
      while (q + 3 <= end) {
        const nt = body[q]!;
        const nl = body.readUInt16BE(q + 1);
        q += 3;
        if (q + nl > end) return undefined;
        if (nt === 0) {
          const name = body.toString('latin1', q, q + nl).toLowerCase().replace(/\.$/, '');
          return validHost(name) ? name : undefined;
        }
        q += nl;
      }
      return undefined;
    }
    p += len;
  }
  return undefined;
}

/** HTTP/1: a request line with a known method, then headers up to the blank line. */
export function peekHttp(buf: Buffer): PeekResult {
  const probe = buf.toString('latin1', 0, Math.min(buf.length, 12));
  const sp = probe.indexOf(' ');
  const method = sp >= 0 ? probe.slice(0, sp) : probe;
  if (sp >= 0 ? !HTTP_METHODS.includes(method) : !HTTP_METHODS.some((m) => m.startsWith(method))) {
    return { kind: 'unknown', why: 'neither TLS nor an HTTP/1 request' };
  }
  const limit = Math.min(buf.length, PEEK_MAX_BYTES);
  const text = buf.toString('latin1', 0, limit);
  let end = text.indexOf('\r\n\r\n');
  if (end < 0) end = text.indexOf('\n\n');
  if (end < 0) return buf.length >= PEEK_MAX_BYTES ? { kind: 'unknown', why: 'HTTP request head too long' } : { kind: 'more' };
  const lines = text.slice(0, end).split(/\r?\n/);
  if (!/^[A-Z]+ \S+ HTTP\/1\.[01]$/.test(lines[0]!)) return { kind: 'unknown', why: 'bad HTTP request line' };
  const [verb, target] = lines[0]!.split(' ') as [string, string];
  let host: string | undefined;
  let hosts = 0;
  for (const line of lines.slice(1)) {
    const m = /^host[ \t]*:[ \t]*(.*?)[ \t]*$/i.exec(line);
    if (!m) continue;
    hosts++;
    host = m[1];
  }
  // Two Host headers are a request smuggling shape: the upstream might pick the other one.
  if (hosts > 1) return { kind: 'invalid', why: 'two Host headers' };
  const h = host === undefined ? undefined : authorityOf(host);
  // The request target. origin-form "/path" and asterisk-form "*" name no host. absolute-form
  // "http://a/…" (RFC 9112 3.2.2: a server MUST then ignore Host) and CONNECT's authority-form
  // "a:443" name one themselves: a front end or proxy upstream would route by them, so they
  // must name what Host names (case-insensitively, same port), or the check is void.
  if (target === '*' || target.startsWith('/')) {
    if (target === '*' && verb !== 'OPTIONS') return { kind: 'invalid', why: `request target * with ${quote(verb)}` };
  } else if (verb === 'CONNECT') {
    const t = authorityOf(target);
    if (!t || t.port === undefined) return { kind: 'invalid', why: 'bad CONNECT target' };
    if (!h || h.name !== t.name || (h.port ?? t.port) !== t.port) return { kind: 'invalid', why: `CONNECT target ${quote(target)} is not Host ${quote(host)}` };
  } else {
    const m = /^(https?):\/\/([^/?#]*)/i.exec(target);
    if (!m) return { kind: 'invalid', why: 'request target is neither a path nor an http(s) URL' };
    const t = authorityOf(m[2]!);
    if (!t) return { kind: 'invalid', why: 'bad authority in the request target' };
    const dflt = m[1]!.toLowerCase() === 'https' ? 443 : 80;
    if (!h || h.name !== t.name || (h.port ?? dflt) !== (t.port ?? dflt)) {
      return { kind: 'invalid', why: `request target ${quote(target)} is not Host ${quote(host)}` };
    }
  }
  if (host === undefined) return { kind: 'http' };
  return { kind: 'http', host: h?.name };
}

/** Guest bytes as they may appear in a log line: quoted (control bytes escaped), bounded. */
function quote(s: string | undefined): string {
  return s === undefined ? '(none)' : JSON.stringify(s.length > 100 ? `${s.slice(0, 100)}…` : s);
}

/** "name", "name:port" → lower-case name and port; IPv6 literals, userinfo, port 0 or > 65535 → undefined. */
function authorityOf(a: string): { name: string; port?: number } | undefined {
  if (a.startsWith('[')) return undefined;
  const m = /^([^:@]+)(?::(\d{1,5}))?$/.exec(a);
  if (!m) return undefined;
  if (m[2] !== undefined && (Number(m[2]) > 65535 || Number(m[2]) === 0)) return undefined;
  const name = m[1]!.toLowerCase().replace(/\.$/, '');
  return validHost(name) ? { name, ...(m[2] !== undefined ? { port: Number(m[2]) } : {}) } : undefined;
}
