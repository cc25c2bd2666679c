import net from 'node:net';
import tls from 'node:tls';
import { describe, expect, it } from 'vitest';
import { PEEK_MAX_BYTES, peek, peekHttp, peekTls } from '../../src/net/peek.js';

/** The first bytes a real `tls.connect` sends (its ClientHello), recorded by a plain TCP server. */
async function captureClientHello(opts: tls.ConnectionOptions): Promise<Buffer> {
  const server = net.createServer();
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', () => r()));
  const port = (server.address() as net.AddressInfo).port;
  const got = new Promise<Buffer>((resolve) => {
    server.once('connection', (s) => {
      const chunks: Buffer[] = [];
      s.on('data', (c) => {
        chunks.push(c);
        const b = Buffer.concat(chunks);
        // Complete once the record's length is in.
        if (b.length >= 5 && b.length >= 5 + b.readUInt16BE(3)) {
          resolve(b);
          s.destroy();
        }
      });
    });
  });
  const client = tls.connect({ host: '127.0.0.1', port, rejectUnauthorized: false, ...opts });
  client.on('error', () => {});
  const hello = await got;
  client.destroy();
  server.close();
  return hello;
}

/** Re-frames a ClientHello's handshake message into records of at most `size` bytes each. */
function splitRecords(hello: Buffer, size: number): Buffer {
  const hs = hello.subarray(5, 5 + hello.readUInt16BE(3));
  const out: Buffer[] = [];
  for (let o = 0; o < hs.length; o += size) {
    const frag = hs.subarray(o, o + size);
    const h = Buffer.from([0x16, 0x03, 0x01, 0, 0]);
    h.writeUInt16BE(frag.length, 3);
    out.push(h, frag);
  }
  return Buffer.concat(out);
}

describe('TLS ClientHello SNI', () => {
  it('reads the SNI of a real node:tls ClientHello (TLS 1.3 and 1.2), at every truncation "more" until complete', async () => {
    for (const v of [{}, { maxVersion: 'TLSv1.2' as const }]) {
      const hello = await captureClientHello({ servername: 'API.Allowed.Test', ...v });
      expect(peek(hello)).toEqual({ kind: 'tls', sni: 'api.allowed.test' });
      for (let n = 1; n < hello.length; n += 7) expect(peek(hello.subarray(0, n)).kind).toBe('more');
      // Bytes after the ClientHello (pipelined data) do not matter.
      expect(peek(Buffer.concat([hello, Buffer.from('junk')]))).toEqual({ kind: 'tls', sni: 'api.allowed.test' });
    }
  });

  it('joins a ClientHello fragmented over several records', async () => {
    const hello = await captureClientHello({ servername: 'deep.sub.allowed.test' });
    const split = splitRecords(hello, 40);
    expect(split.length).toBeGreaterThan(hello.length);
    expect(peekTls(split)).toEqual({ kind: 'tls', sni: 'deep.sub.allowed.test' });
    expect(peekTls(split.subarray(0, split.length - 1)).kind).toBe('more');
  });

  it('a ClientHello without SNI (an IP as servername) is TLS without a name', async () => {
    const hello = await captureClientHello({ servername: '' });
    expect(peek(hello)).toEqual({ kind: 'tls', sni: undefined });
  });

  it('refuses non-handshake records, huge lengths, and never throws on mutations', async () => {
    const hello = await captureClientHello({ servername: 'a.test' });
    expect(peek(Buffer.from([0x17, 3, 3, 0, 5, 1, 2, 3, 4, 5])).kind).toBe('unknown');
    const bad = Buffer.from(hello);
    bad[1] = 0x02;
    expect(peek(bad).kind).toBe('unknown');
    const notHello = Buffer.from(hello);
    notHello[5] = 0x02;
    expect(peek(notHello)).toMatchObject({ kind: 'unknown', why: 'not a ClientHello' });
    // A handshake claiming 16 MiB: "more" until the peek limit, then unknown.
    const big = Buffer.from(hello);
    big[6] = 0xff;
    expect(peek(big).kind).toBe('more');
    let seed = 1;
    const rand = () => ((seed = (seed * 1103515245 + 12345) >>> 0) / 2 ** 32);
    for (let i = 0; i < 5000; i++) {
      const m = Buffer.from(hello.subarray(0, 5 + Math.floor(rand() * (hello.length - 5))));
      for (let k = 0; k < 4; k++) m[5 + Math.floor(rand() * (m.length - 5))] = Math.floor(rand() * 256);
      const r = peek(m);
      if (r.kind === 'tls' && r.sni) expect(r.sni).toMatch(/^[a-z0-9_.-]+$/);
    }
    const pad = Buffer.concat([Buffer.from([0x16, 3, 1, 0x3f, 0xff]), Buffer.alloc(PEEK_MAX_BYTES)]);
    pad[5] = 1;
    pad[6] = 0x7f; // a 8 MiB ClientHello: never completes inside the limit
    expect(peek(pad).kind).toBe('unknown');
  });
});

describe('HTTP Host', () => {
  const req = 'GET /path?q=1 HTTP/1.1\r\nUser-Agent: t\r\nHost: Api.Allowed.Test:8080\r\nAccept: */*\r\n\r\nbody';

  it('reads Host (port stripped, lower case) at every split position', () => {
    const b = Buffer.from(req);
    const end = req.indexOf('\r\n\r\n') + 4;
    for (let n = 1; n < end; n++) expect(peek(b.subarray(0, n)).kind, `at ${n}`).toBe('more');
    expect(peek(b)).toEqual({ kind: 'http', host: 'api.allowed.test' });
    expect(peekHttp(Buffer.from('POST / HTTP/1.0\nhost:a.test\n\n'))).toEqual({ kind: 'http', host: 'a.test' });
  });

  it('no Host, IPv6 or junk: no name; two Host headers: invalid', () => {
    expect(peek(Buffer.from('GET / HTTP/1.0\r\n\r\n'))).toEqual({ kind: 'http' });
    expect(peek(Buffer.from('GET / HTTP/1.1\r\nHost: a.test\r\nHost: b.test\r\n\r\n'))).toEqual({ kind: 'invalid', why: 'two Host headers' });
    expect(peek(Buffer.from('GET / HTTP/1.1\r\nHost: [::1]:80\r\n\r\n'))).toEqual({ kind: 'http', host: undefined });
    expect(peek(Buffer.from('GET / HTTP/1.1\r\nHost: a b\r\n\r\n'))).toEqual({ kind: 'http', host: undefined });
    expect(peek(Buffer.from('SSH-2.0-OpenSSH_9.2\r\n')).kind).toBe('unknown');
    expect(peek(Buffer.from('GET /\r\n\r\n')).kind).toBe('unknown');
    expect(peek(Buffer.from('GE')).kind).toBe('more');
    expect(peek(Buffer.from([0, 1, 2])).kind).toBe('unknown');
    const huge = Buffer.from('GET / HTTP/1.1\r\nX: ' + 'a'.repeat(PEEK_MAX_BYTES) + '\r\n\r\n');
    expect(peek(huge)).toMatchObject({ kind: 'unknown', why: 'HTTP request head too long' });
  });

  it('an absolute-form target or CONNECT authority must name what Host names (case, port aware), else invalid', () => {
    const r = (line: string, host?: string) => peek(Buffer.from(`${line}\r\n${host === undefined ? '' : `Host: ${host}\r\n`}\r\n`));
    // Agreeing: the name is Host's.
    expect(r('GET http://Api.Allowed.Test/x HTTP/1.1', 'api.allowed.test')).toEqual({ kind: 'http', host: 'api.allowed.test' });
    expect(r('GET http://api.allowed.test:80/ HTTP/1.1', 'api.allowed.test')).toEqual({ kind: 'http', host: 'api.allowed.test' });
    expect(r('GET http://api.allowed.test/ HTTP/1.1', 'API.allowed.test:80')).toEqual({ kind: 'http', host: 'api.allowed.test' });
    expect(r('GET HTTPS://api.allowed.test?q HTTP/1.1', 'api.allowed.test:443')).toEqual({ kind: 'http', host: 'api.allowed.test' });
    expect(r('CONNECT api.allowed.test:443 HTTP/1.1', 'api.allowed.test:443')).toEqual({ kind: 'http', host: 'api.allowed.test' });
    expect(r('OPTIONS * HTTP/1.1', 'api.allowed.test')).toEqual({ kind: 'http', host: 'api.allowed.test' });
    // Disagreeing or unusable: refused whatever the policy.
    for (const [line, host] of [
      ['GET http://evil.test/ HTTP/1.1', 'api.allowed.test'],
      ['GET http://evil.test/ HTTP/1.0', undefined],
      ['GET http://api.allowed.test:8080/ HTTP/1.1', 'api.allowed.test'],
      ['GET http://api.allowed.test/ HTTP/1.1', 'api.allowed.test:8080'],
      ['GET https://api.allowed.test/ HTTP/1.1', 'api.allowed.test:80'],
      ['GET http://user@evil.test/ HTTP/1.1', 'api.allowed.test'],
      ['GET http:///x HTTP/1.1', 'api.allowed.test'],
      ['GET ftp://api.allowed.test/ HTTP/1.1', 'api.allowed.test'],
      ['GET evil.test HTTP/1.1', 'api.allowed.test'],
      ['GET * HTTP/1.1', 'api.allowed.test'],
      ['CONNECT evil.test:443 HTTP/1.1', 'api.allowed.test'],
      ['CONNECT api.allowed.test:22 HTTP/1.1', 'api.allowed.test:443'],
      ['CONNECT api.allowed.test HTTP/1.1', 'api.allowed.test'],
    ] as Array<[string, string | undefined]>) {
      expect(r(line, host).kind, `${line} / ${host}`).toBe('invalid');
    }
    // A guest's bytes in the reason are quoted, bounded.
    const why = (r('GET http://evil.test/\x1b[31m HTTP/1.1', 'a.test') as { why: string }).why;
    expect(why).not.toMatch(/\x1b/);
  });
});
