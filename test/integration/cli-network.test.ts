import { spawn, type ChildProcessWithoutNullStreams } from 'node:child_process';
import fs from 'node:fs';
import http from 'node:http';
import os from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, inject, it } from 'vitest';
import { freePort } from '../fixtures/net.js';
import { boxlite } from './helpers.js';

// `boxlite network tunnel BOX PORT [--listen ...]`: a local port forwarded to a busybox httpd in
// the guest through the box's own network stack (the tunnel socket), until Ctrl-C.

const NAME = `cli-tunnel-${process.pid}`;

/** The tunnel command as a long-running child; resolves with the address it printed. */
function startTunnel(args: string[]): Promise<{ child: ChildProcessWithoutNullStreams; addr: string; stderr: () => string }> {
  const bin = path.join(inject('root'), 'dist', 'cli', 'main.js');
  const child = spawn(process.execPath, [bin, '--home', inject('home'), 'network', 'tunnel', ...args], { stdio: 'pipe' });
  let out = '';
  let err = '';
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`no address printed; stderr: ${err}`)), 60_000);
    // Ready once the address is on stdout and the human line on stderr (two pipes: either first).
    const check = () => {
      const nl = out.indexOf('\n');
      if (nl >= 0 && err.includes('\n')) {
        clearTimeout(timer);
        resolve({ child, addr: out.slice(0, nl), stderr: () => err });
      }
    };
    child.stdout.on('data', (c) => {
      out += c;
      check();
    });
    child.stderr.on('data', (c) => {
      err += c;
      check();
    });
    child.on('exit', (code) => {
      clearTimeout(timer);
      reject(new Error(`tunnel exited early (${code}): ${err}`));
    });
  });
}

function get(port: number, urlPath = '/', socketPath?: string): Promise<{ status: number; body: string }> {
  return new Promise((resolve, reject) => {
    const where = socketPath ? { socketPath } : { host: '127.0.0.1', port };
    const req = http.get({ ...where, path: urlPath, agent: false, timeout: 30_000 }, (res) => {
      let body = '';
      res.on('data', (c) => (body += c));
      res.on('end', () => resolve({ status: res.statusCode ?? 0, body }));
    });
    req.on('timeout', () => req.destroy(new Error('timeout')));
    req.on('error', reject);
  });
}

function exited(child: ChildProcessWithoutNullStreams, ms = 20_000): Promise<number | null> {
  if (child.exitCode !== null) return Promise.resolve(child.exitCode);
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error('the tunnel did not exit')), ms);
    child.once('exit', (code) => {
      clearTimeout(timer);
      resolve(code);
    });
  });
}

describe('boxlite network tunnel', () => {
  beforeAll(async () => {
    const r = await boxlite(['run', '-d', '--name', NAME, '--rootfs', inject('image')]);
    expect(r.code, r.stderr).toBe(0);
    // busybox httpd daemonizes; it serves before exec returns.
    const h = await boxlite(['exec', NAME, '--', 'sh', '-c', 'mkdir -p /www && echo tunnel-ok > /www/index.html && httpd -p 8000 -h /www']);
    expect(h.code, h.stderr).toBe(0);
  });

  afterAll(async () => {
    await boxlite(['rm', '-f', NAME]);
  });

  it('forwards a local free port to the guest port, many connections, until Ctrl-C', async () => {
    const t = await startTunnel([NAME, '8000']);
    try {
      expect(t.addr).toMatch(/^127\.0\.0\.1:\d+$/);
      const port = Number(t.addr.split(':')[1]);
      expect(t.stderr()).toMatch(new RegExp(`forwarding 127\\.0\\.0\\.1:${port} to port 8000 of box`));
      expect(await get(port)).toEqual({ status: 200, body: 'tunnel-ok\n' });
      // Each local connection is its own tunnel: several at once all reach the guest.
      const many = await Promise.all(Array.from({ length: 5 }, () => get(port)));
      expect(many.map((r) => r.body)).toEqual(Array(5).fill('tunnel-ok\n'));
      expect((await get(port, '/missing')).status).toBe(404);
      t.child.kill('SIGINT');
      expect(await exited(t.child)).toBe(0);
      await expect(get(port)).rejects.toThrow(/ECONNREFUSED/);
    } finally {
      t.child.kill('SIGKILL');
    }
  });

  it('listens where --listen says (HOST:PORT, unix:PATH); a guest port with no listener fails that connection only', async () => {
    const want = await freePort();
    const t = await startTunnel([NAME, '8000', '--listen', `127.0.0.1:${want}`]);
    try {
      expect(t.addr).toBe(`127.0.0.1:${want}`);
      expect((await get(want)).body).toBe('tunnel-ok\n');
      // A second tunnel to a guest port where nothing listens: its connections fail, the
      // forwarder keeps serving.
      const dead = await startTunnel([NAME, '8001']);
      try {
        await expect(get(Number(dead.addr.split(':')[1]))).rejects.toThrow();
        expect(dead.child.exitCode).toBe(null);
      } finally {
        dead.child.kill('SIGTERM');
        expect(await exited(dead.child)).toBe(0);
      }
      expect((await get(want)).body).toBe('tunnel-ok\n');
      // A unix socket listener (the reference's SocketAddress {type: 'unix'}).
      const sock = path.join(os.tmpdir(), `boxlite-tunnel-${process.pid}.sock`);
      const u = await startTunnel([NAME, '8000', '--listen', `unix:${sock}`]);
      try {
        expect(u.addr).toBe(`unix:${sock}`);
        expect((await get(0, '/', sock)).body).toBe('tunnel-ok\n');
      } finally {
        u.child.kill('SIGINT');
        expect(await exited(u.child)).toBe(0);
      }
      expect(fs.existsSync(sock)).toBe(false);
      t.child.kill('SIGTERM');
      expect(await exited(t.child)).toBe(0);
    } finally {
      t.child.kill('SIGKILL');
    }
  });

  it('refuses bad arguments and boxes that are not there or not running', async () => {
    const bad = await boxlite(['network', 'tunnel', NAME, '70000']);
    expect(bad.code).toBe(1);
    expect(bad.stderr).toMatch(/^Error: configuration error: PORT must be an integer 1-65535/);
    const listen = await boxlite(['network', 'tunnel', NAME, '80', '--listen', 'a:b:c']);
    expect(listen.code).toBe(1);
    expect(listen.stderr).toMatch(/configuration error: --listen/);
    const missing = await boxlite(['network', 'tunnel', 'no-such-box', '80']);
    expect(missing.code).toBe(1);
    expect(missing.stderr).toMatch(/not found/);
    const created = await boxlite(['create', '--name', `${NAME}-idle`, '--rootfs', inject('image')]);
    expect(created.code).toBe(0);
    try {
      const idle = await boxlite(['network', 'tunnel', `${NAME}-idle`, '80']);
      expect(idle.code).toBe(1);
      expect(idle.stderr).toMatch(/is not running/);
    } finally {
      await boxlite(['rm', '-f', `${NAME}-idle`]);
    }
  });

  it('ends with a network error when the box stops under it', async () => {
    const t = await startTunnel([NAME, '8000']);
    try {
      expect((await get(Number(t.addr.split(':')[1]))).body).toBe('tunnel-ok\n');
      expect((await boxlite(['stop', NAME])).code).toBe(0);
      expect(await exited(t.child, 60_000)).toBe(1);
      expect(t.stderr()).toMatch(/Error: network error: box \S+ stopped; the tunnel to port 8000 ended/);
    } finally {
      t.child.kill('SIGKILL');
    }
  });
});
