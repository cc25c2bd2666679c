// Our REST client's copyOut against a server it must not trust: the archive goes through the
// local SDK's SafeExtractor. Our server on the FakeRuntime, over a real socket; an onSend hook
// swaps in a hostile archive where a test needs one.
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import type { AddressInfo } from 'node:net';
import type { FastifyInstance } from 'fastify';
import tar from 'tar-stream';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { BoxliteRestOptions, ExecutionError, JsBoxlite } from '../../src/index.js';
import { buildRestApp } from '../../src/rest/server/app.js';
import { FakeRuntime } from './rest-fake-runtime.js';

let rt: FakeRuntime;
let app: FastifyInstance;
let client: JsBoxlite;
let tmp: string;
let dest: string;
let outside: string;
let hostile: Buffer | undefined;

type E = { name: string; type?: 'file' | 'directory'; body?: string; mode?: number };
async function tarOf(entries: E[]): Promise<Buffer> {
  const p = tar.pack();
  for (const e of entries) p.entry({ name: e.name, type: e.type ?? 'file', mode: e.mode ?? 0o644 }, e.type === 'directory' ? undefined : (e.body ?? ''));
  p.finalize();
  const parts: Buffer[] = [];
  for await (const c of p) parts.push(c as Buffer);
  return Buffer.concat(parts);
}

beforeEach(async () => {
  rt = new FakeRuntime();
  hostile = undefined;
  app = buildRestApp(rt, {}) as unknown as FastifyInstance;
  app.addHook('onSend', async (req, reply, payload) => {
    if (!hostile || req.method !== 'GET' || !req.url.includes('/files?') || reply.statusCode !== 200) return payload;
    (payload as { destroy?: () => void }).destroy?.(); // the server's own archive is dropped (its staging removed)
    return hostile;
  });
  await app.listen({ host: '127.0.0.1', port: 0 });
  client = JsBoxlite.rest(new BoxliteRestOptions({ url: `http://127.0.0.1:${(app.server.address() as AddressInfo).port}` }));
  tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'boxlite-client-copy-'));
  dest = path.join(tmp, 'dest');
  outside = path.join(tmp, 'ssh');
  fs.mkdirSync(dest);
  fs.mkdirSync(outside);
});
afterEach(async () => {
  await app.close();
  rt.dispose();
  fs.rmSync(tmp, { recursive: true, force: true });
});

describe('RestBox.copyOut extracts safely', () => {
  it('refuses to write through a symlink already in the destination (typed error, nothing outside)', async () => {
    const box = await client.create({ image: 'alpine:latest' }, 'c1');
    fs.mkdirSync(path.join((await rt.get('c1'))!.root, 'out'), { recursive: true }); // the server answers 200, then the hook swaps
    fs.mkdirSync(path.join(dest, 'out'));
    fs.symlinkSync(outside, path.join(dest, 'out', 'cfg')); // ./out/cfg -> ~/.ssh
    hostile = await tarOf([{ name: 'out/cfg/authorized_keys', body: 'ssh-ed25519 AAAA attacker' }]);
    // Two entries, so it is a tree: the first is staged, then both go through the extractor.
    hostile = Buffer.concat([(await tarOf([{ name: 'out/readme', body: 'hi' }])).subarray(0, 1024), hostile]);
    const e = await box.copyOut('/out', dest).then(
      () => null,
      (x: unknown) => x,
    );
    expect(e).toBeInstanceOf(ExecutionError);
    expect((e as ExecutionError).code).toBe('Execution');
    expect((e as Error).message).toMatch(/^Execution error: copyOut: archive entry "out\/cfg\/authorized_keys" would leave .*\(out\/cfg is a symlink\)/);
    expect(fs.readdirSync(outside)).toEqual([]);
    expect(fs.readlinkSync(path.join(dest, 'out', 'cfg'))).toBe(outside);
    expect(fs.readdirSync(tmp).filter((n) => n.includes('boxlite-copy'))).toEqual([]);
  });

  it("the real server's archive (directory entries first): the link is replaced by a directory, as the local copyOut does", async () => {
    const box = await client.create({ image: 'alpine:latest' }, 'c2');
    const fb = (await rt.get('c2'))!;
    fs.mkdirSync(path.join(fb.root, 'out/cfg'), { recursive: true });
    fs.writeFileSync(path.join(fb.root, 'out/cfg/authorized_keys'), 'K');
    fs.mkdirSync(path.join(dest, 'out'));
    fs.symlinkSync(outside, path.join(dest, 'out', 'cfg'));
    await box.copyOut('/out', dest);
    expect(fs.readdirSync(outside)).toEqual([]);
    expect(fs.lstatSync(path.join(dest, 'out/cfg')).isDirectory()).toBe(true);
    expect(fs.readFileSync(path.join(dest, 'out/cfg/authorized_keys'), 'utf8')).toBe('K');
  });

  it('a single file replaces a symlink at hostDest instead of writing through it; into an existing directory', async () => {
    const box = await client.create({ image: 'alpine:latest' }, 'c3');
    const fb = (await rt.get('c3'))!;
    fs.mkdirSync(path.join(fb.root, 'etc'), { recursive: true });
    fs.writeFileSync(path.join(fb.root, 'etc/hostname'), 'box\n');
    fs.writeFileSync(path.join(outside, 'authorized_keys'), 'mine');
    fs.symlinkSync(path.join(outside, 'authorized_keys'), path.join(dest, 'link'));
    await box.copyOut('/etc/hostname', path.join(dest, 'link'));
    expect(fs.readFileSync(path.join(outside, 'authorized_keys'), 'utf8')).toBe('mine');
    expect(fs.lstatSync(path.join(dest, 'link')).isFile()).toBe(true);
    expect(fs.readFileSync(path.join(dest, 'link'), 'utf8')).toBe('box\n');
    fs.mkdirSync(path.join(dest, 'etc'));
    await box.copyOut('/etc/hostname', path.join(dest, 'etc'));
    expect(fs.readFileSync(path.join(dest, 'etc/hostname'), 'utf8')).toBe('box\n');
  });

  it('drops setuid/setgid bits a hostile server sends, for a single file and in a tree', async () => {
    const box = await client.create({ image: 'alpine:latest' }, 'c4');
    const fb = (await rt.get('c4'))!;
    fs.writeFileSync(path.join(fb.root, 'su'), '');
    fs.mkdirSync(path.join(fb.root, 't'));
    hostile = await tarOf([{ name: 'su', body: '#!/bin/sh\n', mode: 0o4755 }]);
    await box.copyOut('/su', path.join(dest, 'su'));
    expect(fs.statSync(path.join(dest, 'su')).mode & 0o7777).toBe(0o755);
    hostile = await tarOf([
      { name: 't/', type: 'directory', mode: 0o2755 },
      { name: 't/sg', body: 'x', mode: 0o6711 },
    ]);
    await box.copyOut('/t', path.join(dest, 'tree'));
    expect(fs.statSync(path.join(dest, 'tree/t/sg')).mode & 0o7777).toBe(0o711);
    expect(fs.statSync(path.join(dest, 'tree/t')).mode & 0o7777).toBe(0o755);
  });
});
