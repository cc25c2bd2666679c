import fs from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { JsBoxTunnel, openTunnel } from '../../src/sdk/network.js';

// The client side of the tunnel socket (src/sdk/network.ts) against a scripted tunnel server
// speaking the worker's protocol: `PORT <n>\n` → `OK\n` | `ERR <message>\n`, then bytes.

const cleanups: Array<() => void> = [];
afterEach(() => {
  for (const c of cleanups.splice(0)) c();
});

/** A tunnel server: `answer(port)` gives the reply line; after OK it upper-cases what it reads until FIN. */
async function tunnelServer(answer: (port: number, line: string) => string | null, extra = ''): Promise<{ sock: string; headers: string[] }> {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'tun-'));
  const sock = path.join(dir, 'tunnel.sock');
  const headers: string[] = [];
  const server = net.createServer({ allowHalfOpen: true }, (s) => {
    let buf = '';
    let open = false;
    let body = '';
    s.on('data', (c) => {
      if (open) return void (body += c);
      buf += c;
      const nl = buf.indexOf('\n');
      if (nl < 0) return;
      const line = buf.slice(0, nl);
      headers.push(line);
      const reply = answer(Number(line.split(' ')[1]), line);
      if (reply === null) return void s.destroy();
      if (reply === '') return; // silent: never answers
      s.write(reply + extra);
      if (reply === 'OK\n') {
        open = true;
        body = buf.slice(nl + 1);
      } else s.end();
    });
    s.on('end', () => {
      if (open) s.end(body.toUpperCase());
    });
    s.on('error', () => {});
  });
  await new Promise<void>((r) => server.listen(sock, r));
  cleanups.push(() => {
    server.close();
    fs.rmSync(dir, { recursive: true, force: true });
  });
  return { sock, headers };
}

describe('tunnel client', () => {
  it('connect(): header, bytes both ways, half-close, bounded reads, EOF as an empty Buffer; one-shot', async () => {
    const { sock, headers } = await tunnelServer(() => 'OK\n', 'early:');
    const t = new JsBoxTunnel(sock, 8080);
    expect(t.uri()).toBeNull();
    const c = await t.connect();
    expect(headers).toEqual(['PORT 8080']);
    expect(await c.write(Buffer.from('abc'))).toBe(3);
    await c.shutdownWrite();
    let got = '';
    for (;;) {
      const chunk = await c.read(2);
      if (!chunk.length) break;
      expect(chunk.length).toBeLessThanOrEqual(2);
      got += chunk.toString();
    }
    expect(got).toBe('early:ABC');
    expect((await c.read(10)).length).toBe(0);
    await expect(c.write(Buffer.from('x'))).rejects.toThrow(/closed for writing/);
    await c.close();
    await expect(t.connect()).rejects.toThrow(/^invalid state: BoxTunnel.connect: the tunnel was already used/);
    await expect(t.forward({ type: 'tcp', port: 0 })).rejects.toThrow(/already used/);
  });

  it('ERR answers, a box that is not running and malformed answers are NetworkErrors naming the port', async () => {
    const err = await tunnelServer(() => 'ERR connection refused by the guest\n');
    await expect(openTunnel(err.sock, 81)).rejects.toThrow('network error: tunnel to guest port 81: connection refused by the guest');
    const junk = await tunnelServer(() => 'WHAT\n');
    await expect(openTunnel(junk.sock, 82)).rejects.toThrow('network error: tunnel to guest port 82: malformed answer from the box');
    const hangup = await tunnelServer(() => null);
    await expect(openTunnel(hangup.sock, 83)).rejects.toThrow(/^network error: tunnel to guest port 83: /);
    await expect(openTunnel('/nonexistent/tunnel.sock', 84)).rejects.toThrow(/the box's network is not running \(ENOENT\)/);
    const silent = await tunnelServer(() => '');
    await expect(openTunnel(silent.sock, 85, 200)).rejects.toThrow('network error: tunnel to guest port 85: no answer within 200 ms');
  });

  it('forward(): a local TCP listener whose every connection is a tunnel; bad listen addresses are refused', async () => {
    const { sock, headers } = await tunnelServer(() => 'OK\n');
    const fwd = await new JsBoxTunnel(sock, 9000).forward({ type: 'tcp', port: 0 });
    const addr = fwd.localAddr() as { type: 'tcp'; host: string; port: number };
    expect(addr.type).toBe('tcp');
    expect(addr.host).toBe('127.0.0.1');
    const exchange = (msg: string) =>
      new Promise<string>((resolve, reject) => {
        const s = net.connect(addr.port, '127.0.0.1');
        let d = '';
        s.on('connect', () => s.end(msg));
        s.on('data', (c) => (d += c));
        s.on('close', () => resolve(d));
        s.on('error', reject);
      });
    expect(await Promise.all([exchange('one'), exchange('two')])).toEqual(['ONE', 'TWO']);
    expect(headers).toEqual(['PORT 9000', 'PORT 9000']);
    let waited = false;
    const w = fwd.wait().then(() => (waited = true));
    await fwd.close();
    await w;
    expect(waited).toBe(true);

    await expect(new JsBoxTunnel(sock, 1).forward({ type: 'tcp', port: 70000 })).rejects.toThrow(/^invalid argument: forward: listen.port/);
    await expect(new JsBoxTunnel(sock, 1).forward({ type: 'udp' } as never)).rejects.toThrow(/^invalid argument: forward: listen.type/);
    await expect(new JsBoxTunnel().connect()).rejects.toThrow(/^invalid argument: BoxTunnel.connect: make tunnels with box.network.tunnel/);
  });

  it('forward(): a refused tunnel resets the local client', async () => {
    const { sock } = await tunnelServer(() => 'ERR nothing listens\n');
    const fwd = await new JsBoxTunnel(sock, 9001).forward({ type: 'tcp', port: 0 });
    const port = (fwd.localAddr() as { port: number }).port;
    const outcome = await new Promise<string>((resolve) => {
      const s = net.connect(port, '127.0.0.1');
      s.on('error', (e: NodeJS.ErrnoException) => resolve(e.code ?? 'error'));
      s.on('close', () => resolve('closed'));
    });
    expect(outcome).toBe('ECONNRESET');
    await fwd.close();
  });
});
