// The shared network test servers (test/fixtures/netservers.ts) really serve what the network
// tests rely on: echoes, deterministic bytes, upload hashes, TLS chained to the test CA with the
// right names, WebSocket echo over ws and wss, TCP and UDP echo on one port, and the seam files.
import { createHash } from 'node:crypto';
import dgram from 'node:dgram';
import fs from 'node:fs';
import http from 'node:http';
import https from 'node:https';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import WebSocket from 'ws';
import {
  DEFAULT_TEST_NAMES,
  patternBytes,
  patternSha256,
  seamFor,
  seamForMany,
  startNetServers,
  writeSeam,
  type NetServers,
} from '../fixtures/netservers.js';

let s: NetServers;
beforeAll(async () => {
  s = await startNetServers({ label: 'unit' });
}, 30_000);
afterAll(async () => {
  await s?.close();
});

function get(
  mod: typeof http | typeof https,
  opts: http.RequestOptions & https.RequestOptions,
  body?: Buffer | string,
): Promise<{ status: number; headers: http.IncomingHttpHeaders; body: Buffer }> {
  return new Promise((resolve, reject) => {
    const req = mod.request({ host: '127.0.0.1', ...opts }, (res) => {
      const parts: Buffer[] = [];
      res.on('data', (c: Buffer) => parts.push(c));
      res.on('end', () => resolve({ status: res.statusCode ?? 0, headers: res.headers, body: Buffer.concat(parts) }));
      res.on('error', reject);
    });
    req.on('error', reject);
    req.end(body);
  });
}

describe('netservers', () => {
  it('http echoes and records method, url, headers and body', async () => {
    const r = await get(http, { port: s.http.port, method: 'POST', path: '/echo?q=1', headers: { 'x-k': 'v1', host: 'api.allowed.test' } }, 'hello body');
    expect(r.status).toBe(200);
    expect(r.headers['x-test-server']).toBe('unit');
    const echo = JSON.parse(r.body.toString());
    expect(echo).toMatchObject({ server: 'unit', proto: 'http', method: 'POST', url: '/echo?q=1', body: 'hello body', bodyBytes: 10 });
    expect(echo.headers['x-k']).toBe('v1');
    expect(echo.headers.host).toBe('api.allowed.test');
    expect(s.requests.at(-1)).toMatchObject({ url: '/echo?q=1', body: 'hello body' });
    expect((await get(http, { port: s.http.port, path: '/status/404' })).status).toBe(404);
  });

  it('/bytes/<n> streams the deterministic pattern and /upload hashes the body', async () => {
    const n = 300_001;
    const r = await get(http, { port: s.http.port, path: `/bytes/${n}` });
    expect(r.body.length).toBe(n);
    expect(r.body.equals(patternBytes(n))).toBe(true);
    expect(createHash('sha256').update(r.body).digest('hex')).toBe(patternSha256(n));
    expect(patternSha256(n)).not.toBe(patternSha256(n - 1));
    const up = patternBytes(200_000);
    const u = JSON.parse((await get(http, { port: s.http.port, method: 'POST', path: '/upload' }, up)).body.toString());
    expect(u).toEqual({ server: 'unit', bytes: 200_000, sha256: createHash('sha256').update(up).digest('hex') });
  });

  it('/reset drops the connection without a response', async () => {
    await expect(get(http, { port: s.http.port, path: '/reset' })).rejects.toThrow();
  });

  it('https chains to the test CA for the listed names only, and records the SNI', async () => {
    const r = await get(https, { port: s.https.port, path: '/x', servername: 'api.allowed.test', ca: s.testCa.certPem, headers: { host: 'api.allowed.test' } });
    const echo = JSON.parse(r.body.toString());
    expect(echo).toMatchObject({ proto: 'https', url: '/x', servername: 'api.allowed.test' });
    // A name outside httpsHosts fails hostname verification; without the CA the chain fails.
    await expect(get(https, { port: s.https.port, path: '/', servername: 'evil.test', ca: s.testCa.certPem, headers: { host: 'evil.test' } })).rejects.toThrow(/altnames|Hostname/i);
    await expect(get(https, { port: s.https.port, path: '/', servername: 'api.allowed.test', headers: { host: 'api.allowed.test' } })).rejects.toThrow(/certificate/i);
  });

  it('WebSocket echo over ws and wss, handshake and messages recorded', async () => {
    for (const [url, opts] of [
      [`ws://127.0.0.1:${s.ws.port}/chat?t=1`, {}],
      [`wss://127.0.0.1:${s.wss.port}/chat?t=1`, { ca: s.testCa.certPem, servername: 'secret.test', headers: { host: 'secret.test' } }],
    ] as const) {
      const ws = new WebSocket(url, { ...opts, headers: { ...('headers' in opts ? opts.headers : {}), 'x-token': 'abc' } });
      const reply = await new Promise<string>((resolve, reject) => {
        ws.on('open', () => ws.send('ping-1'));
        ws.on('message', (d) => resolve(d.toString()));
        ws.on('error', reject);
      });
      ws.close();
      expect(reply).toBe('ping-1');
      const hs = s.requests.filter((r) => r.proto === (url.startsWith('wss') ? 'wss' : 'ws')).at(-1);
      expect(hs?.headers['x-token']).toBe('abc');
      expect(hs?.url).toBe('/chat?t=1');
    }
    expect(s.requests.find((r) => r.proto === 'wss')?.servername).toBe('secret.test');
    expect(s.wsMessages.map((m) => `${m.proto}:${m.data}`)).toEqual(['ws:ping-1', 'wss:ping-1']);
  });

  it('tcp and udp echo share one port', async () => {
    expect(s.udpEcho.port).toBe(s.tcpEcho.port);
    const tcp = await new Promise<string>((resolve, reject) => {
      const c = net.connect(s.tcpEcho.port, '127.0.0.1', () => c.end('tcp-echo'));
      let got = '';
      c.on('data', (d) => (got += d));
      c.on('end', () => resolve(got));
      c.on('error', reject);
    });
    expect(tcp).toBe('tcp-echo');
    const u = dgram.createSocket('udp4');
    const udp = await new Promise<string>((resolve, reject) => {
      u.on('message', (m) => resolve(m.toString()));
      u.on('error', reject);
      u.send('udp-echo', s.udpEcho.port, '127.0.0.1');
    });
    u.close();
    expect(udp).toBe('udp-echo');
    expect(s.stats).toMatchObject({ tcpEchoConnections: 1, udpEchoDatagrams: 1 });
  });

  it('seam helpers map names and ports onto the servers and write a 0600 JSON file', async () => {
    const seam = seamFor(s);
    expect(seam.names).toEqual(DEFAULT_TEST_NAMES);
    expect(seam.dial['198.18.0.10:443']).toBe(`127.0.0.1:${s.https.port}`);
    expect(seam.dial['198.18.0.10:80']).toBe(`127.0.0.1:${s.http.port}`);
    expect(seam.dial['198.18.0.21:7']).toBe(`127.0.0.1:${s.tcpEcho.port}`);
    expect(seam.upstreamCa).toEqual([s.testCa.certPem]);
    const other = await startNetServers({ label: 'other', httpsHosts: ['x.test'] });
    try {
      const many = seamForMany([
        { names: ['a.test'], ips: ['198.18.1.1'], servers: s },
        { ips: ['198.18.1.2'], servers: other, extraPorts: { 8080: other.http.port } },
      ]);
      expect(many.names).toEqual({ 'a.test': ['198.18.1.1'] });
      expect(many.dial['198.18.1.2:8080']).toBe(`127.0.0.1:${other.http.port}`);
      // One CA per process: both instances chain to it.
      expect(many.upstreamCa).toEqual([s.testCa.certPem]);
    } finally {
      await other.close();
    }
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'seam-'));
    const file = writeSeam(dir, seam);
    expect(JSON.parse(fs.readFileSync(file, 'utf8'))).toEqual(seam);
    expect(fs.statSync(file).mode & 0o777).toBe(0o600);
    fs.rmSync(dir, { recursive: true });
  });
});
