// Files routes in-process (app.inject) on the FakeRuntime, whose box's guest filesystem is a host
// directory: the 0.10 client's tar shapes both ways (§3.5), single-file vs directory rules,
// overwrite, path escapes, the size limit (413), 404 for a missing path.
import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import http from 'node:http';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { Readable } from 'node:stream';
import { afterEach, beforeEach, describe, expect, it, vi } from 'vitest';
import type { FastifyInstance } from 'fastify';
import tar from 'tar-stream';
import { CopyLimitError } from '../../src/runtime/copy.js';
import { buildRestApp } from '../../src/rest/server/app.js';
import * as S from '../../src/rest/schemas.js';
import { FakeRuntime, type FakeBox } from './rest-fake-runtime.js';
import { checkResponses } from './rest-server-helpers.js';

let rt: FakeRuntime;
let app: FastifyInstance;
let box: FakeBox;
let logs: string[];

async function setup(maxFileBytes?: number, more: { maxFileEntries?: number } = {}): Promise<void> {
  rt = new FakeRuntime();
  logs = [];
  app = checkResponses(buildRestApp(rt, { ...(maxFileBytes ? { maxFileBytes } : {}), ...more, log: (l) => logs.push(l) }));
  await app.ready();
  box = await rt.create({ image: 'alpine:latest' }, 'b1');
}
// Staging directories go to os.tmpdir(): a private one per test, so a test can see none is left.
let tmp: string;
const savedTmp = process.env.TMPDIR;
beforeEach(() => {
  tmp = fs.mkdtempSync(path.join(savedTmp ?? '/tmp', 'boxlite-files-test-'));
  process.env.TMPDIR = tmp;
  return setup();
});
afterEach(async () => {
  await app.close();
  rt.dispose();
  process.env.TMPDIR = savedTmp;
  fs.rmSync(tmp, { recursive: true, force: true });
});
const stagingLeft = () => fs.readdirSync(tmp).filter((n) => n.startsWith('boxlite-rest-files-'));

type Entry = { name: string; type?: 'file' | 'directory' | 'symlink'; body?: string | Buffer; linkname?: string };
async function tarOf(entries: Entry[]): Promise<Buffer> {
  const p = tar.pack();
  for (const e of entries) {
    const type = e.type ?? 'file';
    if (type === 'file') p.entry({ name: e.name, mode: 0o644 }, e.body ?? '');
    else p.entry({ name: e.name, type, mode: 0o755, linkname: e.linkname });
  }
  p.finalize();
  const parts: Buffer[] = [];
  for await (const c of p) parts.push(c as Buffer);
  return Buffer.concat(parts);
}
async function entriesOf(buf: Buffer): Promise<Array<{ name: string; type: string; body: string }>> {
  const ex = tar.extract();
  Readable.from([buf]).pipe(ex);
  const out: Array<{ name: string; type: string; body: string }> = [];
  for await (const e of ex) {
    const parts: Buffer[] = [];
    for await (const c of e) parts.push(c as Buffer);
    out.push({ name: e.header.name, type: e.header.type ?? 'file', body: Buffer.concat(parts).toString('utf8') });
  }
  return out;
}
const put = (q: string, body: Buffer, headers: Record<string, string> = {}) =>
  app.inject({ method: 'PUT', url: `/v1/boxes/${box.id}/files?${q}`, headers: { 'content-type': 'application/x-tar', ...headers }, payload: body });
const get = (q: string) => app.inject({ method: 'GET', url: `/v1/boxes/${box.id}/files?${q}`, headers: { accept: 'application/x-tar' } });
const guest = (p: string) => path.join(box.root, p);
const err = (r: { json(): unknown }) => S.ErrorResponse.parse(r.json()).error;

describe('PUT …/files (upload)', () => {
  it('one regular entry lands AT path, or INTO an existing directory / a path ending in /', async () => {
    const one = await tarOf([{ name: 'up.txt', body: 'hello' }]);
    expect((await put('path=%2Ftmp%2Fx.txt', one)).statusCode).toBe(204);
    expect(fs.readFileSync(guest('tmp/x.txt'), 'utf8')).toBe('hello');
    fs.mkdirSync(guest('data'), { recursive: true });
    expect((await put('path=/data', one)).statusCode).toBe(204);
    expect(fs.readFileSync(guest('data/up.txt'), 'utf8')).toBe('hello');
    expect((await put('path=/new/', one)).statusCode).toBe(204);
    expect(fs.readFileSync(guest('new/up.txt'), 'utf8')).toBe('hello');
  });

  it("a tree (the 0.10 client's ./ shape) is extracted under path, created", async () => {
    const tree = await tarOf([
      { name: './', type: 'directory' },
      { name: 'a.txt', body: 'A' },
      { name: 'sub', type: 'directory' },
      { name: 'sub/b.txt', body: 'B' },
    ]);
    expect((await put('path=/dst', tree)).statusCode).toBe(204);
    expect(fs.readFileSync(guest('dst/a.txt'), 'utf8')).toBe('A');
    expect(fs.readFileSync(guest('dst/sub/b.txt'), 'utf8')).toBe('B');
    // One file inside a directory entry is a tree, not a single file.
    expect((await put('path=/d2', await tarOf([{ name: 'only', type: 'directory' }, { name: 'only/f', body: 'F' }]))).statusCode).toBe(204);
    expect(fs.readFileSync(guest('d2/only/f'), 'utf8')).toBe('F');
  });

  it('refuses path escapes in entries and in path (400), keeps existing files with overwrite=false (409)', async () => {
    for (const bad of [[{ name: '../evil', body: 'x' }, { name: 'b', body: 'y' }], [{ name: '/abs', body: 'x' }, { name: 'c', body: 'z' }]] as Entry[][]) {
      const r = await put('path=/tmp', await tarOf(bad));
      expect(r.statusCode).toBe(400);
      expect(err(r).code).toBe('invalid_argument');
    }
    const through = await tarOf([{ name: 'l', type: 'symlink', linkname: '/etc' }, { name: 'l/passwd', body: 'pwned' }]);
    expect((await put('path=/tmp', through)).statusCode).toBe(400);
    for (const q of ['path=relative', 'path=/tmp/../etc', '']) {
      const r = await put(q, await tarOf([{ name: 'f', body: 'x' }]));
      expect(r.statusCode, q).toBe(400);
      expect(err(r).message).toMatch(/path/);
    }
    fs.mkdirSync(guest('keep'), { recursive: true });
    fs.writeFileSync(guest('keep/f.txt'), 'old');
    const r = await put('path=/keep/f.txt&overwrite=false', await tarOf([{ name: 'f.txt', body: 'new' }]));
    expect(r.statusCode).toBe(409);
    expect(err(r).code).toBe('already_exists');
    expect(fs.readFileSync(guest('keep/f.txt'), 'utf8')).toBe('old');
    expect((await put('path=/keep/f.txt', await tarOf([{ name: 'f.txt', body: 'new' }]))).statusCode).toBe(204);
    expect(fs.readFileSync(guest('keep/f.txt'), 'utf8')).toBe('new');
  });

  it('enforces the maximum (413 payload_too_large) and takes a 1 MiB file under it', async () => {
    await app.close();
    rt.dispose();
    await setup(2 * 1024 * 1024);
    const big = await tarOf([{ name: 'big.bin', body: Buffer.alloc(3 * 1024 * 1024, 1) }]);
    const r = await put('path=/tmp/big.bin', big);
    expect(r.statusCode).toBe(413);
    expect(err(r)).toMatchObject({ code: 'payload_too_large', type: 'PayloadTooLargeError' });
    const mib = await tarOf([{ name: 'mib.bin', body: Buffer.alloc(1024 * 1024, 7) }]);
    expect((await put('path=/tmp/mib.bin', mib)).statusCode).toBe(204);
    expect(fs.statSync(guest('tmp/mib.bin')).size).toBe(1024 * 1024);
    expect((await put('path=/tmp/x', Buffer.from('not a tar at all, just some bytes'.repeat(40)))).statusCode).toBe(400);
  });

  it('404 for an unknown box', async () => {
    const r = await app.inject({ method: 'PUT', url: '/v1/boxes/nope/files?path=/tmp', headers: { 'content-type': 'application/x-tar' }, payload: await tarOf([{ name: 'f' }]) });
    expect(r.statusCode).toBe(404);
  });
});

describe('GET …/files (download)', () => {
  it('a file is one regular entry named by its basename', async () => {
    fs.mkdirSync(guest('etc'), { recursive: true });
    fs.writeFileSync(guest('etc/hostname'), 'box\n');
    const r = await get('path=/etc/hostname');
    expect(r.statusCode).toBe(200);
    expect(r.headers['content-type']).toMatch(/application\/x-tar/);
    expect(await entriesOf(r.rawPayload)).toEqual([{ name: 'hostname', type: 'file', body: 'box\n' }]);
  });

  it('a directory is basename/ plus its tree, directory entries included (one file still reads as a directory)', async () => {
    fs.mkdirSync(guest('srv/dir/sub'), { recursive: true });
    fs.writeFileSync(guest('srv/dir/a.txt'), 'A');
    fs.writeFileSync(guest('srv/dir/sub/b.txt'), 'B');
    const list = await entriesOf((await get('path=/srv/dir')).rawPayload);
    expect(list.map((e) => [e.name, e.type])).toEqual([
      ['dir/', 'directory'],
      ['dir/a.txt', 'file'],
      ['dir/sub/', 'directory'],
      ['dir/sub/b.txt', 'file'],
    ]);
    fs.mkdirSync(guest('one'), { recursive: true });
    fs.writeFileSync(guest('one/f'), 'F');
    expect((await entriesOf((await get('path=/one')).rawPayload)).map((e) => e.name)).toEqual(['one/', 'one/f']);
  });

  it('follow_symlinks: a link is sent as a link by default, as its target when true', async () => {
    fs.mkdirSync(guest('real'), { recursive: true });
    fs.writeFileSync(guest('real/t.txt'), 'T');
    fs.symlinkSync('real', guest('lnk')); // relative: the fake's guest root is a host directory
    const asLink = await entriesOf((await get('path=/lnk')).rawPayload);
    expect(asLink.map((e) => [e.name, e.type])).toEqual([['lnk', 'symlink']]);
    const followed = await entriesOf((await get('path=/lnk&follow_symlinks=true')).rawPayload);
    expect(followed.map((e) => [e.name, e.type])).toEqual([['lnk/', 'directory'], ['lnk/t.txt', 'file']]);
    expect((await get('path=/lnk&follow_symlinks=maybe')).statusCode).toBe(400);
  });

  it('404 for a missing path, 400 for a bad one, 413 over the maximum', async () => {
    let r = await get('path=/no/such');
    expect(r.statusCode).toBe(404);
    expect(err(r).code).toBe('not_found');
    for (const q of ['path=rel', 'path=/a/../b', 'path=/', '']) expect((await get(q)).statusCode, q).toBe(400);
    await app.close();
    rt.dispose();
    await setup(1000);
    fs.writeFileSync(guest('big'), Buffer.alloc(2000));
    r = await get('path=/big');
    expect(r.statusCode).toBe(413);
    expect(err(r).code).toBe('payload_too_large');
  });
});

describe('files over a real socket', () => {
  it('a chunked upload (no Content-Length) past the maximum gets 413 and the server keeps serving', async () => {
    await app.close();
    rt.dispose();
    rt = new FakeRuntime();
    app = checkResponses(buildRestApp(rt, { maxFileBytes: 64 * 1024 }));
    await app.listen({ host: '127.0.0.1', port: 0 });
    box = await rt.create({ image: 'alpine:latest' }, 'b1');
    const port = (app.server.address() as { port: number }).port;
    const big = await tarOf([{ name: 'big.bin', body: Buffer.alloc(512 * 1024, 3) }]);
    const status = await new Promise<number>((resolve, reject) => {
      const req = http.request({ host: '127.0.0.1', port, method: 'PUT', path: `/v1/boxes/${box.id}/files?path=/tmp/big.bin`, headers: { 'content-type': 'application/x-tar', 'transfer-encoding': 'chunked' } }, (res) => {
        res.resume();
        resolve(res.statusCode!);
      });
      req.on('error', reject);
      for (let i = 0; i < big.length; i += 16 * 1024) req.write(big.subarray(i, i + 16 * 1024));
      req.end();
    });
    expect(status).toBe(413);
    expect(fs.existsSync(guest('tmp/big.bin'))).toBe(false);
    // Same with a declared Content-Length over the maximum (refused before any byte is read).
    const declared = await fetch(`http://127.0.0.1:${port}/v1/boxes/${box.id}/files?path=/tmp/big.bin`, { method: 'PUT', headers: { 'content-type': 'application/x-tar' }, body: big });
    expect(declared.status).toBe(413);
    expect((await declared.json()).error.code).toBe('payload_too_large');
    const small = await tarOf([{ name: 's.txt', body: 'ok' }]);
    const r = await fetch(`http://127.0.0.1:${port}/v1/boxes/${box.id}/files?path=/tmp/s.txt`, { method: 'PUT', headers: { 'content-type': 'application/x-tar' }, body: small });
    expect(r.status).toBe(204);
    expect(fs.readFileSync(guest('tmp/s.txt'), 'utf8')).toBe('ok');
  });
});

describe('staging directories are bounded and always removed', () => {
  it('a PUT cut off mid-body removes its staging directory and logs a line', async () => {
    await app.close();
    rt.dispose();
    rt = new FakeRuntime();
    logs = [];
    app = checkResponses(buildRestApp(rt, { log: (l) => logs.push(l) }));
    await app.listen({ host: '127.0.0.1', port: 0 });
    box = await rt.create({ image: 'alpine:latest' }, 'b1');
    const port = (app.server.address() as { port: number }).port;
    const big = await tarOf([{ name: 'big.bin', body: Buffer.alloc(4 * 1024 * 1024, 5) }]);
    const sock = net.connect(port, '127.0.0.1');
    await new Promise((r) => sock.once('connect', r));
    sock.write(
      `PUT /v1/boxes/${box.id}/files?path=/tmp/big.bin HTTP/1.1\r\nHost: 127.0.0.1:${port}\r\n` +
        `Content-Type: application/x-tar\r\nContent-Length: ${big.length}\r\n\r\n`,
    );
    sock.write(big.subarray(0, 1024 * 1024));
    // Wait until the server is staging the body, then go away.
    for (let i = 0; i < 200 && !fs.readdirSync(tmp).some((n) => n.startsWith('boxlite-rest-files-')); i++) await new Promise((r) => setTimeout(r, 10));
    expect(stagingLeft().length).toBe(1);
    sock.destroy();
    for (let i = 0; i < 300 && !logs.some((l) => /aborted by the client/.test(l)); i++) await new Promise((r) => setTimeout(r, 10));
    expect(logs.find((l) => /aborted by the client/.test(l))).toMatch(/files: upload to "\/tmp\/big\.bin" aborted by the client; its staging directory is removed/);
    for (let i = 0; i < 100 && stagingLeft().length; i++) await new Promise((r) => setTimeout(r, 10));
    expect(stagingLeft()).toEqual([]);
    expect(fs.existsSync(guest('tmp/big.bin'))).toBe(false);
    // The server still serves.
    const r = await fetch(`http://127.0.0.1:${port}/v1/boxes/${box.id}/files?path=/tmp/s.txt`, { method: 'PUT', headers: { 'content-type': 'application/x-tar' }, body: await tarOf([{ name: 's.txt', body: 'ok' }]) });
    expect(r.status).toBe(204);
  });

  it("a download past the limits: copyOut gets them, its CopyLimitError is 413, the staging is gone", async () => {
    await app.close();
    rt.dispose();
    await setup(4096, { maxFileEntries: 7 });
    const seen: unknown[] = [];
    for (const limit of ['bytes', 'entries'] as const) {
      // The server gets its own handle of the box: replace the method on the class.
      const spy = vi.spyOn(Object.getPrototypeOf(box) as FakeBox, 'copyOut').mockImplementation(async (_src: string, dest: string, o?: Record<string, unknown>) => {
        seen.push({ maxBytes: o?.maxBytes, maxEntries: o?.maxEntries });
        fs.mkdirSync(path.join(dest, 'out'), { recursive: true });
        fs.writeFileSync(path.join(dest, 'out', 'part'), Buffer.alloc(4096));
        throw new CopyLimitError(`copyOut: over the ${limit} limit`, limit, limit === 'bytes' ? 4096 : 7);
      });
      const r = await get('path=/out').finally(() => spy.mockRestore());
      expect(r.statusCode).toBe(413);
      expect(err(r)).toMatchObject({ code: 'payload_too_large', type: 'PayloadTooLargeError' });
      expect(err(r).message).toMatch(limit === 'bytes' ? /exceeds the server's file transfer limit of 4096 bytes/ : /more than the server's limit of 7 entries/);
      expect(stagingLeft()).toEqual([]);
    }
    expect(seen).toEqual([
      { maxBytes: 4096, maxEntries: 7 },
      { maxBytes: 4096, maxEntries: 7 },
    ]);
  });

  it('an archive too big for an upload is 413 by entries as well as by bytes', async () => {
    await app.close();
    rt.dispose();
    await setup(undefined, { maxFileEntries: 5 });
    const r = await put('path=/many', await tarOf(Array.from({ length: 6 }, (_, i) => ({ name: `f${i}`, body: 'x' }))));
    expect(r.statusCode).toBe(413);
    expect(err(r).message).toMatch(/more than the server's limit of 5 entries/);
    expect(stagingLeft()).toEqual([]);
  });

  it('directories without owner access (0o500, 0o001) download with their modes; the staging is removed', async () => {
    fs.mkdirSync(guest('out/ro'), { recursive: true });
    fs.mkdirSync(guest('out/none'), { recursive: true });
    fs.writeFileSync(guest('out/ro/f'), 'F');
    fs.writeFileSync(guest('out/none/g'), 'G');
    fs.chmodSync(guest('out/ro'), 0o500);
    fs.chmodSync(guest('out/none'), 0o001);
    try {
      const r = await get('path=/out');
      expect(r.statusCode).toBe(200);
      const ex = tar.extract();
      Readable.from([r.rawPayload]).pipe(ex);
      const modes: Record<string, number> = {};
      const bodies: Record<string, string> = {};
      for await (const e of ex) {
        modes[e.header.name] = e.header.mode! & 0o7777;
        const parts: Buffer[] = [];
        for await (const c of e) parts.push(c as Buffer);
        if (e.header.type === 'file') bodies[e.header.name] = Buffer.concat(parts).toString();
      }
      expect(modes['out/ro/']).toBe(0o500);
      expect(modes['out/none/']).toBe(0o001);
      expect(bodies).toEqual({ 'out/none/g': 'G', 'out/ro/f': 'F' });
      for (let i = 0; i < 100 && stagingLeft().length; i++) await new Promise((res) => setTimeout(res, 10));
      expect(stagingLeft()).toEqual([]);
    } finally {
      fs.chmodSync(guest('out/ro'), 0o755);
      fs.chmodSync(guest('out/none'), 0o755);
    }
  });

  // As root EACCES never happens, so the cleanup is proven in a child running as nobody.
  it.runIf(process.getuid?.() === 0)('as non-root, removeStaging empties a 0o500 directory that fs.rm cannot', () => {
    fs.chmodSync(tmp, 0o777);
    const files = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../../src/rest/server/files.ts');
    const probe = path.join(tmp, 'probe.ts');
    fs.writeFileSync(
      probe,
      `import fs from 'node:fs'; import path from 'node:path';
import { removeStaging } from ${JSON.stringify(files)};
const base = fs.mkdtempSync(path.join(process.env.TMPDIR, 's-'));
fs.mkdirSync(path.join(base, 'ro/deep'), { recursive: true }); fs.writeFileSync(path.join(base, 'ro/deep/f'), 'x');
fs.chmodSync(path.join(base, 'ro/deep'), 0o500); fs.chmodSync(path.join(base, 'ro'), 0o100);
let plain = 'removed'; try { fs.rmSync(base, { recursive: true, force: true }); } catch (e) { plain = e.code; }
await removeStaging(base);
console.log(JSON.stringify({ uid: process.getuid(), plain, left: fs.existsSync(base) }));
`,
    );
    const bin = path.resolve(path.dirname(files), '../../../node_modules/.bin/vite-node');
    const r = spawnSync(bin, [probe], { uid: 65534, gid: 65534, env: { ...process.env, TMPDIR: tmp, HOME: tmp }, encoding: 'utf8', timeout: 60_000 });
    expect(r.status, r.stderr).toBe(0);
    expect(JSON.parse(r.stdout.trim().split('\n').pop()!)).toEqual({ uid: 65534, plain: 'EACCES', left: false });
  }, 60_000);
});
