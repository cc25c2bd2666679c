// `boxlite serve`: the bind/key policy, a real listening server on a FakeRuntime, and the CLI
// itself (dist) on an empty temp home: it refuses a keyless non-loopback bind, serves, and exits 0
// on SIGTERM. No VM is booted.
import { spawn } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import * as S from '../../src/rest/schemas.js';
import { checkServeOptions, startServer } from '../../src/cli/serve.js';
import { isLoopback } from '../../src/rest/server/app.js';
import { FakeRuntime } from './rest-fake-runtime.js';

const ROOT = path.resolve(__dirname, '../..');
const CLI = path.join(ROOT, 'dist', 'cli', 'main.js');

describe('serve policy', () => {
  it('knows loopback addresses', () => {
    for (const h of ['127.0.0.1', '127.1.2.3', 'localhost', '::1', '[::1]']) expect(isLoopback(h)).toBe(true);
    for (const h of ['0.0.0.0', '::', '192.168.1.5', 'example.com']) expect(isLoopback(h)).toBe(false);
  });

  it('refuses a non-loopback bind without a key unless --insecure', () => {
    expect(() => checkServeOptions({ host: '0.0.0.0', port: 8100 })).toThrow(/without an API key/);
    expect(() => checkServeOptions({ host: '0.0.0.0', port: 8100, insecure: true })).not.toThrow();
    expect(() => checkServeOptions({ host: '0.0.0.0', port: 8100, apiKey: 'k'.repeat(16) })).not.toThrow();
    expect(() => checkServeOptions({ host: '127.0.0.1', port: 8100 })).not.toThrow();
    expect(() => checkServeOptions({ host: '127.0.0.1', port: 8100, apiKey: 'short' })).toThrow(/at least 8/);
    expect(() => checkServeOptions({ host: '127.0.0.1', port: 70000 })).toThrow(/--port/);
  });
});

describe('startServer', () => {
  it('listens, answers over real HTTP with auth, and closes', async () => {
    const rt = new FakeRuntime();
    const server = await startServer(rt, { host: '127.0.0.1', port: 0, apiKey: 'k'.repeat(16) });
    try {
      const cfg = await fetch(`${server.url}/v1/config`);
      expect(cfg.status).toBe(200);
      S.ServerConfig.parse(await cfg.json());
      const denied = await fetch(`${server.url}/v1/boxes`);
      expect(denied.status).toBe(401);
      S.ErrorResponse.parse(await denied.json());
      const created = await fetch(`${server.url}/v1/boxes`, {
        method: 'POST',
        headers: { authorization: `Bearer ${'k'.repeat(16)}`, 'content-type': 'application/json' },
        body: JSON.stringify({ image: 'alpine:latest', network: { outbound: { mode: 'enabled' }, inbound: { mode: 'enabled' } }, detach: false }),
      });
      expect(created.status).toBe(201);
      S.Box.parse(await created.json());
    } finally {
      await server.close();
      rt.dispose();
    }
    await expect(fetch(`${server.url}/v1/config`)).rejects.toThrow();
  });
});

function run(args: string[], env: NodeJS.ProcessEnv) {
  const child = spawn(process.execPath, [CLI, ...args], { env: { ...process.env, ...env }, stdio: ['ignore', 'pipe', 'pipe'] });
  let stderr = '';
  child.stderr.on('data', (d) => (stderr += d));
  const exited = new Promise<number | null>((r) => child.on('exit', (code) => r(code)));
  return { child, exited, stderr: () => stderr };
}

describe.skipIf(!fs.existsSync(CLI))('boxlite serve (the CLI, built)', () => {
  it('refuses 0.0.0.0 without a key (exit 1, a clear message)', async () => {
    const home = fs.mkdtempSync(path.join(os.tmpdir(), 'serve-home-'));
    const p = run(['serve', '--host', '0.0.0.0', '--port', '0'], { BOXLITE_HOME: home, BOXLITE_SERVE_API_KEY: '' });
    expect(await p.exited).toBe(1);
    expect(p.stderr()).toMatch(/refusing to serve on 0\.0\.0\.0 without an API key/);
    fs.rmSync(home, { recursive: true, force: true });
  }, 20_000);

  it('serves with the key from BOXLITE_SERVE_API_KEY and exits 0 on SIGTERM', async () => {
    const home = fs.mkdtempSync(path.join(os.tmpdir(), 'serve-home-'));
    const key = 'serve-test-key-123';
    const p = run(['--home', home, 'serve', '--port', '0'], { BOXLITE_SERVE_API_KEY: key });
    try {
      const url = await new Promise<string>((resolve, reject) => {
        const t = setTimeout(() => reject(new Error(`no listening line: ${p.stderr()}`)), 15_000);
        p.child.stderr.on('data', () => {
          const m = /listening on (http:\/\/[^\s]+)\/v1/.exec(p.stderr());
          if (m) {
            clearTimeout(t);
            resolve(m[1]!);
          }
        });
      });
      const denied = await fetch(`${url}/v1/boxes`);
      expect(denied.status).toBe(401);
      const list = await fetch(`${url}/v1/boxes`, { headers: { authorization: `Bearer ${key}` } });
      expect(S.ListBoxesResponse.parse(await list.json())).toEqual({ boxes: [] });
      p.child.kill('SIGTERM');
      expect(await p.exited).toBe(0);
      expect(p.stderr()).toMatch(/SIGTERM: closing connections/);
      expect(p.stderr()).not.toContain(key);
    } finally {
      p.child.kill('SIGKILL');
      fs.rmSync(home, { recursive: true, force: true });
    }
  }, 30_000);
});
