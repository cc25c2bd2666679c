// The per-boot certificate authority for secret hosts (ECDSA P-256). Node 20 can parse X.509 but
// not build it, so the DER is assembled here by hand and signed with node:crypto. The private
// keys live only in this process's memory: they are never written anywhere, so a CA dies with the
// shim that made it and a new boot gets a new one.
import crypto from 'node:crypto';
import net from 'node:net';
import tls from 'node:tls';

export interface BoxCa {
  /** The CA certificate the guest trusts (PEM). */
  certPem: string;
  /** A server context with a leaf certificate for `host` signed by this CA (cached per host). */
  secureContextFor(host: string): tls.SecureContext;
}

/** Leaves cached per CA: a leaf + SecureContext costs a few ms; the cap bounds memory. */
const MAX_CACHED_LEAVES = 512;
const CA_LIFETIME_MS = 2 * 365 * 24 * 3600_000;
/** 397 days: the longest leaf lifetime clients (Apple, Chrome) accept. */
const LEAF_LIFETIME_MS = 397 * 24 * 3600_000;
/** Tolerates a guest clock somewhat behind the host's. */
const BACKDATE_MS = 24 * 3600_000;

export function createBoxCa(opts?: { commonName?: string }): BoxCa {
  const caKeys = crypto.generateKeyPairSync('ec', { namedCurve: 'prime256v1' });
  // One key for every leaf of this CA: keys are the expensive part and, being in memory only
  // and per boot, sharing one gains an attacker nothing the CA key would not.
  const leafKeys = crypto.generateKeyPairSync('ec', { namedCurve: 'prime256v1' });
  const caSpki = caKeys.publicKey.export({ type: 'spki', format: 'der' });
  const caKeyId = keyId(caSpki);
  const caName = name(opts?.commonName ?? 'BoxLite per-boot secrets CA');
  const now = Date.now();
  const caNotAfter = now + CA_LIFETIME_MS;

  const caDer = signCert(caKeys.privateKey, {
    serial: serial(),
    issuer: caName,
    subject: caName,
    notBefore: new Date(now - BACKDATE_MS),
    notAfter: new Date(caNotAfter),
    spki: caSpki,
    extensions: [
      ext(OID.basicConstraints, true, seq(bool(true), int(Buffer.from([0])))),
      ext(OID.keyUsage, true, bitString(Buffer.from([0x06]), 1)), // keyCertSign | cRLSign
      ext(OID.subjectKeyIdentifier, false, octets(caKeyId)),
    ],
  });
  const certPem = pem(caDer);
  const leafKeyPem = leafKeys.privateKey.export({ type: 'pkcs8', format: 'pem' }) as string;
  const leafSpki = leafKeys.publicKey.export({ type: 'spki', format: 'der' });
  const cache = new Map<string, tls.SecureContext>();

  return {
    certPem,
    secureContextFor(host: string): tls.SecureContext {
      const h = host.toLowerCase().replace(/\.$/, '');
      const hit = cache.get(h);
      if (hit) {
        // Map order doubles as LRU order.
        cache.delete(h);
        cache.set(h, hit);
        return hit;
      }
      const t = Date.now();
      const leafDer = signCert(caKeys.privateKey, {
        serial: serial(),
        issuer: caName,
        subject: name(h.slice(0, 64) || 'boxlite'),
        notBefore: new Date(t - BACKDATE_MS),
        notAfter: new Date(Math.min(t + LEAF_LIFETIME_MS, caNotAfter)),
        spki: leafSpki,
        extensions: [
          ext(OID.basicConstraints, true, seq()),
          ext(OID.keyUsage, true, bitString(Buffer.from([0x80]), 7)), // digitalSignature
          ext(OID.extKeyUsage, false, seq(oid(OID.serverAuth))),
          ext(OID.subjectAltName, false, seq(sanEntry(h))),
          ext(OID.authorityKeyIdentifier, false, seq(tagged(0x80, caKeyId))),
          ext(OID.subjectKeyIdentifier, false, octets(keyId(leafSpki))),
        ],
      });
      const ctx = tls.createSecureContext({ key: leafKeyPem, cert: pem(leafDer) + certPem });
      cache.set(h, ctx);
      if (cache.size > MAX_CACHED_LEAVES) cache.delete(cache.keys().next().value!);
      return ctx;
    },
  };
}

// --- DER ------------------------------------------------------------------------------------

const OID = {
  ecdsaWithSha256: '1.2.840.10045.4.3.2',
  commonName: '2.5.4.3',
  organization: '2.5.4.10',
  basicConstraints: '2.5.29.19',
  keyUsage: '2.5.29.15',
  extKeyUsage: '2.5.29.37',
  serverAuth: '1.3.6.1.5.5.7.3.1',
  subjectAltName: '2.5.29.17',
  subjectKeyIdentifier: '2.5.29.14',
  authorityKeyIdentifier: '2.5.29.35',
};

function tlv(tag: number, body: Buffer): Buffer {
  const n = body.length;
  let len: Buffer;
  if (n < 0x80) len = Buffer.from([n]);
  else if (n < 0x100) len = Buffer.from([0x81, n]);
  else if (n < 0x10000) len = Buffer.from([0x82, n >> 8, n & 0xff]);
  else len = Buffer.from([0x83, n >> 16, (n >> 8) & 0xff, n & 0xff]);
  return Buffer.concat([Buffer.from([tag]), len, body]);
}
const seq = (...items: Buffer[]) => tlv(0x30, Buffer.concat(items));
const set = (...items: Buffer[]) => tlv(0x31, Buffer.concat(items));
const octets = (b: Buffer) => tlv(0x04, b);
const bool = (v: boolean) => tlv(0x01, Buffer.from([v ? 0xff : 0x00]));
const tagged = (tag: number, b: Buffer) => tlv(tag, b);
const explicit = (n: number, b: Buffer) => tlv(0xa0 | n, b);

/** A DER INTEGER from unsigned big-endian bytes (a leading 0 keeps it positive). */
function int(b: Buffer): Buffer {
  let i = 0;
  while (i < b.length - 1 && b[i] === 0 && (b[i + 1]! & 0x80) === 0) i++;
  const v = b.subarray(i);
  return tlv(0x02, v[0]! & 0x80 ? Buffer.concat([Buffer.from([0]), v]) : v);
}

function bitString(b: Buffer, unusedBits = 0): Buffer {
  return tlv(0x03, Buffer.concat([Buffer.from([unusedBits]), b]));
}

function oid(dotted: string): Buffer {
  const parts = dotted.split('.').map(Number);
  const out = [40 * parts[0]! + parts[1]!];
  for (const p of parts.slice(2)) {
    const stack = [p & 0x7f];
    for (let v = p >>> 7; v > 0; v >>>= 7) stack.unshift((v & 0x7f) | 0x80);
    out.push(...stack);
  }
  return tlv(0x06, Buffer.from(out));
}

function time(d: Date): Buffer {
  const y = d.getUTCFullYear();
  const p = (n: number) => String(n).padStart(2, '0');
  const rest = `${p(d.getUTCMonth() + 1)}${p(d.getUTCDate())}${p(d.getUTCHours())}${p(d.getUTCMinutes())}${p(d.getUTCSeconds())}Z`;
  // RFC 5280 §4.1.2.5: UTCTime through 2049, GeneralizedTime from 2050.
  return y < 2050 ? tlv(0x17, Buffer.from(`${p(y % 100)}${rest}`)) : tlv(0x18, Buffer.from(`${y}${rest}`));
}

function name(cn: string): Buffer {
  return seq(
    set(seq(oid(OID.organization), tlv(0x0c, Buffer.from('BoxLite')))),
    set(seq(oid(OID.commonName), tlv(0x0c, Buffer.from(cn)))),
  );
}

function ext(id: string, critical: boolean, value: Buffer): Buffer {
  return critical ? seq(oid(id), bool(true), octets(value)) : seq(oid(id), octets(value));
}

/** dNSName [2] or, for an IPv4 literal, iPAddress [7]. */
function sanEntry(host: string): Buffer {
  if (net.isIPv4(host)) return tagged(0x87, Buffer.from(host.split('.').map(Number)));
  return tagged(0x82, Buffer.from(host, 'ascii'));
}

/** RFC 5280 method 1: SHA-1 of the subjectPublicKey bits. */
function keyId(spki: Buffer): Buffer {
  // SPKI = SEQ { SEQ alg, BIT STRING key }: the key is the tail after the BIT STRING header
  // (65 bytes of uncompressed P-256 point + the unused-bits byte).
  return crypto.createHash('sha1').update(spki.subarray(spki.length - 65)).digest();
}

function serial(): Buffer {
  const b = crypto.randomBytes(16);
  b[0] = (b[0]! & 0x7f) | 0x01; // positive, never zero, always 16 bytes
  return b;
}

interface CertFields {
  serial: Buffer;
  issuer: Buffer;
  subject: Buffer;
  notBefore: Date;
  notAfter: Date;
  spki: Buffer;
  extensions: Buffer[];
}

function signCert(key: crypto.KeyObject, f: CertFields): Buffer {
  const alg = seq(oid(OID.ecdsaWithSha256));
  const tbs = seq(
    explicit(0, int(Buffer.from([2]))), // v3
    int(f.serial),
    alg,
    f.issuer,
    seq(time(f.notBefore), time(f.notAfter)),
    f.subject,
    f.spki,
    explicit(3, seq(...f.extensions)),
  );
  const sig = crypto.sign('sha256', tbs, { key, dsaEncoding: 'der' });
  return seq(tbs, alg, bitString(sig));
}

function pem(der: Buffer): string {
  const b64 = der.toString('base64').replace(/(.{64})/g, '$1\n').replace(/\n$/, '');
  return `-----BEGIN CERTIFICATE-----\n${b64}\n-----END CERTIFICATE-----\n`;
}
