// The per-boot CA and its leaves, checked by real TLS clients (node:tls and openssl verify).
import { execFileSync } from 'node:child_process';
import crypto from 'node:crypto';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import tls from 'node:tls';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createBoxCa, type BoxCa } from '../../dist/net/ca.js';

let ca: BoxCa;
let server: tls.Server;
let port: number;

beforeAll(async () => {
  ca = createBoxCa();
  server = tls.createServer({ SNICallback: (name, cb) => cb(null, ca.secureContextFor(name)) }, (s) => s.end('ok'));
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  port = (server.address() as { port: number }).port;
});
afterAll(() => server?.close());

function connect(servername: string, opts: tls.ConnectionOptions = {}): Promise<{ authorized: boolean; cert: tls.PeerCertificate; data: string }> {
  return new Promise((resolve, reject) => {
    const s = tls.connect({ host: '127.0.0.1', port, servername, ca: ca.certPem, ...opts }, () => {
      let data = '';
      s.on('data', (d) => (data += d));
      s.on('end', () => resolve({ authorized: s.authorized, cert: s.getPeerCertificate(), data }));
    });
    s.on('error', reject);
  });
}

describe('createBoxCa', () => {
  it('is a P-256 CA certificate with CA:TRUE, fresh per call', () => {
    const x = new crypto.X509Certificate(ca.certPem);
    expect(x.ca).toBe(true);
    expect(x.publicKey.asymmetricKeyType).toBe('ec');
    expect(x.publicKey.asymmetricKeyDetails?.namedCurve).toBe('prime256v1');
    expect(x.verify(x.publicKey)).toBe(true); // self-signed
    expect(x.checkIssued(x)).toBe(true);
    expect(new Date(x.validFrom).getTime()).toBeLessThan(Date.now());
    expect(new Date(x.validTo).getTime()).toBeGreaterThan(Date.now() + 365 * 86400_000);
    const other = createBoxCa({ commonName: 'x' });
    expect(other.certPem).not.toBe(ca.certPem);
    expect(new crypto.X509Certificate(other.certPem).subject).toContain('CN=x');
  });

  it('serves a leaf that a TLS client trusting only the CA accepts for that host', async () => {
    const r = await connect('api.secret.test');
    expect(r.authorized).toBe(true);
    expect(r.data).toBe('ok');
    expect(r.cert.subjectaltname).toBe('DNS:api.secret.test');
    const leaf = new crypto.X509Certificate(r.cert.raw);
    expect(leaf.ca).toBe(false);
    expect(leaf.checkIssued(new crypto.X509Certificate(ca.certPem))).toBe(true);
    expect(leaf.verify(new crypto.X509Certificate(ca.certPem).publicKey)).toBe(true);
    expect(leaf.keyUsage ?? []).toContain('1.3.6.1.5.5.7.3.1');
  });

  it('fails the hostname check for another host, and fails without the CA', async () => {
    await expect(connect('api.secret.test', { checkServerIdentity: (_h, cert) => tls.checkServerIdentity('other.test', cert) })).rejects.toMatchObject({ code: 'ERR_TLS_CERT_ALTNAME_INVALID' });
    // The chain carries the CA, so an untrusting client sees a self-signed certificate in it.
    await expect(connect('api.secret.test', { ca: undefined })).rejects.toMatchObject({ code: 'SELF_SIGNED_CERT_IN_CHAIN' });
    await expect(connect('api.secret.test', { ca: createBoxCa().certPem })).rejects.toMatchObject({ code: 'SELF_SIGNED_CERT_IN_CHAIN' });
  });

  it('caches the context per host (case and trailing dot folded)', () => {
    const a = ca.secureContextFor('Cache.Test.');
    expect(ca.secureContextFor('cache.test')).toBe(a);
    expect(ca.secureContextFor('other.cache.test')).not.toBe(a);
  });

  it('openssl verify -x509_strict accepts CA and leaf for serverAuth', async () => {
    const r = await connect('strict.secret.test');
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'boxca-'));
    try {
      fs.writeFileSync(path.join(dir, 'ca.pem'), ca.certPem);
      fs.writeFileSync(path.join(dir, 'leaf.pem'), new crypto.X509Certificate(r.cert.raw).toString());
      const out = execFileSync('openssl', ['verify', '-x509_strict', '-purpose', 'sslserver', '-verify_hostname', 'strict.secret.test', '-CAfile', path.join(dir, 'ca.pem'), path.join(dir, 'leaf.pem')], { encoding: 'utf8' });
      expect(out).toContain(': OK');
      expect(() => execFileSync('openssl', ['verify', '-verify_hostname', 'wrong.test', '-CAfile', path.join(dir, 'ca.pem'), path.join(dir, 'leaf.pem')], { stdio: 'pipe' })).toThrow();
    } finally {
      fs.rmSync(dir, { recursive: true, force: true });
    }
  });

  it('an IPv4 name gets an iPAddress SAN', async () => {
    // Clients send no IP as SNI: a server with the leaf as its only context instead.
    const srv = tls.createServer({ SNICallback: (_n, cb) => cb(null, ca.secureContextFor('198.18.0.30')) }, (s) => s.end());
    await new Promise<void>((res) => srv.listen(0, '127.0.0.1', res));
    const p = (srv.address() as { port: number }).port;
    const cert = await new Promise<tls.PeerCertificate>((resolve, reject) => {
      const s = tls.connect({ host: '127.0.0.1', port: p, servername: 'any.test', ca: ca.certPem, checkServerIdentity: (_h, c) => tls.checkServerIdentity('198.18.0.30', c) }, () => resolve(s.getPeerCertificate()));
      s.on('error', reject);
    });
    srv.close();
    expect(cert.subjectaltname).toBe('IP Address:198.18.0.30');
  });
});
