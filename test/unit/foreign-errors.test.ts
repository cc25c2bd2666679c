// Foreign errors (errno, child_process, undici, JSON, tar-stream, zlib) are translated where
// they leave src/images and src/util: a coded BoxliteError saying what was being done to
// which path or reference, with the foreign error as `cause`. Every failure here is real:
// paths under a regular file (ENOTDIR), directories where files belong (EISDIR), a PATH
// without the tool, a truncated gzip layer, a bad JSON config served by docker-registry,
// a refused TCP port.

import { execFileSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as http from 'node:http';
import type { AddressInfo } from 'node:net';
import * as path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { BoxliteError, type ErrorCode } from '../../src/errors/index.js';
import { importArchive } from '../../src/images/archive.js';
import { applyLayers, imageLayerSources } from '../../src/images/layers.js';
import { readOciLayout } from '../../src/images/oci-layout.js';
import { pullImage } from '../../src/images/pull.js';
import { createOverlay, prepareRootfs } from '../../src/images/rootfs.js';
import { ImageStore } from '../../src/images/store.js';
import { writeFileAtomic } from '../../src/util/fs.js';
import { gzip, makeBusyboxImage, scratchDir, sha256, tarLayer, writeOciLayout } from '../fixtures/images.js';
import { freePort } from '../fixtures/net.js';
import { startRegistry } from '../fixtures/registry.js';

const PREFIX: Partial<Record<ErrorCode, string>> = {
  Storage: 'storage error: ',
  Image: 'images error: ',
  Network: 'network error: ',
};

type Coded = BoxliteError & { cause?: { code?: unknown; name?: unknown; cause?: unknown } };

async function rejection(p: Promise<unknown> | (() => unknown)): Promise<Coded> {
  try {
    await (typeof p === 'function' ? p() : p);
  } catch (err) {
    return err as Coded;
  }
  throw new Error('expected a rejection');
}

/** The error is `code`, carries its prefix once, names `mentions`, and keeps a foreign cause. */
function expectTranslated(err: Coded, code: ErrorCode, mentions: string | RegExp): void {
  expect(err).toBeInstanceOf(BoxliteError);
  expect(err.code).toBe(code);
  expect(err.message.startsWith(PREFIX[code]!)).toBe(true);
  expect(err.message.indexOf(PREFIX[code]!, 1)).toBe(-1);
  if (typeof mentions === 'string') expect(err.message).toContain(mentions);
  else expect(err.message).toMatch(mentions);
  expect(err.cause).toBeDefined();
  expect(err.cause).not.toBeInstanceOf(BoxliteError);
}

/** Errno code somewhere down the cause chain (undici nests them). */
function causeCode(err: unknown): unknown {
  let e = (err as { cause?: unknown }).cause as { code?: unknown; cause?: unknown } | undefined;
  for (let i = 0; e && i < 5; i++) {
    if (typeof e.code === 'string' && e.code.startsWith('E')) return e.code;
    e = e.cause as typeof e;
  }
  return undefined;
}

const scratch = scratchDir('foreign');
let plainFile: string;
let busybox: string;
beforeAll(async () => {
  plainFile = path.join(scratch.dir, 'plain-file');
  fs.writeFileSync(plainFile, 'a regular file, so paths under it are ENOTDIR');
  busybox = path.join(scratch.dir, 'busybox');
  await makeBusyboxImage(busybox);
});
afterAll(() => scratch.cleanup());

function withPath<T>(dir: string, fn: () => Promise<T>): Promise<T> {
  const saved = process.env.PATH;
  process.env.PATH = dir;
  return fn().finally(() => {
    process.env.PATH = saved;
  });
}

describe('fs (errno) errors', () => {
  it('writeFileAtomic under a regular file is a StorageError naming the file (ENOTDIR)', async () => {
    const target = path.join(plainFile, 'config.json');
    const err = await rejection(() => writeFileAtomic(target, '{}'));
    expectTranslated(err, 'Storage', `cannot write ${target}`);
    expect(err.cause?.code).toBe('ENOTDIR');
  });

  it('an image store under a regular file: pull, load and list are StorageErrors before any network', async () => {
    const store = new ImageStore(path.join(plainFile, 'images'), path.join(plainFile, 'db'));
    for (const call of [
      () => store.pull('127.0.0.1:1/never/contacted:latest'),
      () => store.load(plainFile),
      () => store.list(),
    ]) {
      const err = await rejection(call);
      expectTranslated(err, 'Storage', /cannot create image store directory .*plain-file\/images/);
      expect(err.cause?.code).toBe('ENOTDIR');
    }
  });

  it('prepareRootfs with its cache dir under a regular file is a StorageError (ENOTDIR)', async () => {
    const err = await rejection(prepareRootfs({ layoutDir: busybox, imagesDir: path.join(plainFile, 'images') }));
    expectTranslated(err, 'Storage', path.join(plainFile, 'images', 'rootfs'));
    expect(err.cause?.code).toBe('ENOTDIR');
  });

  it('a layout whose config blob is a directory is an ImageError naming the blob (EISDIR)', async () => {
    const dir = path.join(scratch.dir, 'eisdir');
    const { manifestDigest } = writeOciLayout(dir, { layers: [{ tar: await tarLayer([{ name: 'a', content: 'a' }]), compression: 'none' }], config: {} });
    const manifest = JSON.parse(fs.readFileSync(path.join(dir, 'blobs', 'sha256', manifestDigest.slice(7)), 'utf8'));
    const cfg = path.join(dir, 'blobs', 'sha256', (manifest.config.digest as string).slice(7));
    fs.rmSync(cfg);
    fs.mkdirSync(cfg);
    const err = await rejection(readOciLayout(dir));
    expectTranslated(err, 'Image', cfg);
    expect(err.cause?.code).toBe('EISDIR');
  });
});

describe('archives (tar-stream, JSON)', () => {
  const opts = () => {
    const root = fs.mkdtempSync(path.join(scratch.dir, 'store-'));
    return { blobsDir: path.join(root, 'blobs', 'sha256'), tmpDir: path.join(root, 'tmp') };
  };
  const tarOf = (dir: string, out: string) => execFileSync('tar', ['-cf', out, '-C', dir, '.']);

  it('a file that is not a tar is an ImageError with the tar-stream error as cause', async () => {
    const err = await rejection(importArchive(plainFile, opts()));
    expectTranslated(err, 'Image', `cannot read archive ${plainFile}`);
    expect(err.cause).toBeInstanceOf(Error);
  });

  it('an archive whose index.json is not JSON is an ImageError with the SyntaxError as cause', async () => {
    const dir = path.join(scratch.dir, 'bad-index');
    fs.mkdirSync(dir);
    fs.writeFileSync(path.join(dir, 'index.json'), '{"manifests": [');
    const tar = path.join(scratch.dir, 'bad-index.tar');
    tarOf(dir, tar);
    const err = await rejection(importArchive(tar, opts()));
    expectTranslated(err, 'Image', /index\.json of the archive is not valid JSON/);
    expect(err.cause).toBeInstanceOf(SyntaxError);
  });

  it('a docker save archive missing a layer it lists is an ImageError naming the file (ENOENT)', async () => {
    const dir = path.join(scratch.dir, 'docker-save');
    fs.mkdirSync(dir);
    fs.writeFileSync(path.join(dir, 'config.json'), '{}');
    fs.writeFileSync(path.join(dir, 'manifest.json'), JSON.stringify([{ Config: 'config.json', RepoTags: ['x/y:1'], Layers: ['abc/layer.tar'] }]));
    const tar = path.join(scratch.dir, 'docker-save.tar');
    tarOf(dir, tar);
    const err = await rejection(importArchive(tar, opts()));
    expectTranslated(err, 'Image', 'the archive has no file abc/layer.tar');
    expect(err.cause?.code).toBe('ENOENT');
  });

  it('loading into a blob store under a regular file is a StorageError (ENOTDIR)', async () => {
    const layout = path.join(scratch.dir, 'named');
    writeOciLayout(layout, { layers: [{ tar: await tarLayer([{ name: 'a', content: 'a' }]), compression: 'gzip' }], config: {}, refName: 'test/named:1' });
    const tar = path.join(scratch.dir, 'named.tar');
    tarOf(layout, tar);
    // The archive itself is fine: it loads into a usable store.
    expect((await importArchive(tar, opts())).map((i) => i.reference)).toEqual(['test/named:1']);
    const err = await rejection(importArchive(tar, { blobsDir: path.join(plainFile, 'blobs'), tmpDir: path.join(scratch.dir, 'tmp-ok') }));
    expectTranslated(err, 'Storage', path.join(plainFile, 'blobs'));
    expect(['ENOTDIR', 'EEXIST']).toContain(err.cause?.code);
    const err2 = await rejection(importArchive(tar, { blobsDir: path.join(scratch.dir, 'blobs-ok'), tmpDir: path.join(plainFile, 'tmp') }));
    expectTranslated(err2, 'Storage', path.join(plainFile, 'tmp'));
    expect(err2.cause?.code).toBe('ENOTDIR');
  });
});

describe('layers (zlib, zstd tool)', () => {
  it('a truncated gzip layer is an ImageError naming the layer, with the zlib error as cause', async () => {
    const dir = path.join(scratch.dir, 'truncated');
    const full = gzip(await tarLayer([{ name: 'big', content: Buffer.alloc(256 * 1024, 7) }, { name: 'small', content: 'x' }]));
    // Stored as is, so the blob's digest matches: only decompression can notice.
    writeOciLayout(dir, { layers: [{ tar: full.subarray(0, Math.floor(full.length / 2)), compression: 'none' }], config: {} });
    const image = await readOciLayout(dir);
    const layer = image.layers[0]!.digest;
    const err = await rejection(applyLayers(path.join(scratch.dir, 'truncated-root'), imageLayerSources(image)));
    expectTranslated(err, 'Image', layer);
    expect(err.message).toMatch(/gzip/);
    expect(String(err.cause?.code)).toMatch(/^Z_/);
  });

  it('a zstd layer without the zstd tool on PATH is an ImageError with the spawn error as cause', async () => {
    const dir = path.join(scratch.dir, 'zstd');
    const tar = await tarLayer([{ name: 'f', content: 'zstd content' }]);
    const zst = execFileSync('zstd', ['-q', '-c'], { input: tar });
    writeOciLayout(dir, { layers: [{ tar: zst, compression: 'none' }], config: {} });
    const image = await readOciLayout(dir);
    const empty = fs.mkdtempSync(path.join(scratch.dir, 'nopath-'));
    const err = await withPath(empty, () => rejection(applyLayers(path.join(scratch.dir, 'zstd-root'), imageLayerSources(image))));
    expectTranslated(err, 'Image', /zstd tool is not available/);
    expect(err.cause?.code).toBe('ENOENT');
  });
});

describe('external tools (qemu-img)', () => {
  const base = () => {
    const f = path.join(scratch.dir, 'base.ext4');
    fs.writeFileSync(f, Buffer.alloc(4096));
    return f;
  };

  it('qemu-img missing from PATH is a StorageError that says how to get it', async () => {
    const empty = fs.mkdtempSync(path.join(scratch.dir, 'nopath-'));
    const overlay = path.join(scratch.dir, 'overlay-missing.qcow2');
    const err = await withPath(empty, () => rejection(createOverlay(base(), overlay)));
    expect(err).toBeInstanceOf(BoxliteError);
    expect(err.code).toBe('Storage');
    expect(err.message).toMatch(/^storage error: qemu-img not found in PATH .*install qemu-utils/);
    expect(fs.existsSync(overlay)).toBe(false);
  });

  it('a qemu-img that cannot be started is a StorageError with the spawn error as cause', async () => {
    const bin = fs.mkdtempSync(path.join(scratch.dir, 'badbin-'));
    // Executable, but its interpreter does not exist: spawn fails with ENOENT.
    fs.writeFileSync(path.join(bin, 'qemu-img'), '#!/nonexistent/interpreter\n', { mode: 0o755 });
    const overlay = path.join(scratch.dir, 'overlay-bad.qcow2');
    const err = await withPath(bin, () => rejection(createOverlay(base(), overlay)));
    expectTranslated(err, 'Storage', `failed to run ${path.join(bin, 'qemu-img')}`);
    expect(err.cause?.code).toBe('ENOENT');
  });

  it('an overlay under a regular file is a StorageError (ENOTDIR)', async () => {
    const overlay = path.join(plainFile, 'disk.qcow2');
    const err = await rejection(createOverlay(base(), overlay));
    expectTranslated(err, 'Storage', path.dirname(overlay));
    // mkdir -p reports a regular file in the way as EEXIST.
    expect(['ENOTDIR', 'EEXIST']).toContain(err.cause?.code);
  });
});

describe('registry transport and content', () => {
  const store = () => {
    const root = fs.mkdtempSync(path.join(scratch.dir, 'pull-'));
    return new ImageStore(path.join(root, 'images'), path.join(root, 'db'));
  };

  it('a refused TCP port is a NetworkError naming the registry, with ECONNREFUSED as cause', async () => {
    const port = await freePort();
    const host = `127.0.0.1:${port}`;
    const s = store();
    try {
      const err = await rejection(
        pullImage(`${host}/nobody/home:1`, {
          blobsDir: s.blobsDir,
          tmpDir: s.tmpDir,
          registries: [{ host, transport: 'http' }],
          http: { retry: { attempts: 1 } },
        }),
      );
      expectTranslated(err, 'Network', `cannot reach registry ${host}`);
      expect(causeCode(err)).toBe('ECONNREFUSED');
    } finally {
      s.close();
    }
  });

  it('a cancelled pull is an ImageError ("pull cancelled") with the abort reason as cause', async () => {
    const port = await freePort();
    const host = `127.0.0.1:${port}`;
    const s = store();
    try {
      const reason = new Error('user gave up');
      const err = await rejection(s.pull(`${host}/a/b:1`, { registries: [{ host, transport: 'http' }], signal: AbortSignal.abort(reason) }));
      expect(err).toBeInstanceOf(BoxliteError);
      expect(err.code).toBe('Image');
      expect(err.message).toBe('images error: pull cancelled');
      expect(err.cause).toBe(reason);
    } finally {
      s.close();
    }
  });

  it('a token server answering non-JSON is an ImageError with the SyntaxError as cause', async () => {
    const server = http.createServer((req, res) => {
      if (req.url?.startsWith('/token')) {
        res.writeHead(200, { 'content-type': 'application/json' }).end('<html>not a token</html>');
        return;
      }
      const { port } = server.address() as AddressInfo;
      res
        .writeHead(401, { 'www-authenticate': `Bearer realm="http://127.0.0.1:${port}/token",service="test"` })
        .end();
    });
    await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
    const host = `127.0.0.1:${(server.address() as AddressInfo).port}`;
    const s = store();
    try {
      const err = await rejection(s.pull(`${host}/a/b:1`, { registries: [{ host, transport: 'http' }] }));
      expectTranslated(err, 'Image', /token server .* returned an answer that is not JSON/);
      expect(err.cause).toBeInstanceOf(SyntaxError);
    } finally {
      s.close();
      await new Promise((r) => server.close(r));
    }
  });

  it('a config blob that is not JSON, served by docker-registry, is an ImageError with the SyntaxError as cause', async () => {
    const reg = await startRegistry();
    const s = store();
    try {
      const repo = 'broken/config';
      const put = async (body: Buffer): Promise<{ digest: string; size: number }> => {
        const digest = sha256(body);
        const start = await fetch(`${reg.url}/v2/${repo}/blobs/uploads/`, { method: 'POST' });
        expect(start.status).toBe(202);
        const loc = new URL(start.headers.get('location')!, reg.url);
        loc.searchParams.set('digest', digest);
        const done = await fetch(loc, { method: 'PUT', body, headers: { 'content-type': 'application/octet-stream' } });
        expect(done.status).toBe(201);
        return { digest, size: body.length };
      };
      const config = await put(Buffer.from('{"architecture": "amd64", "os": '));
      const layer = await put(gzip(await tarLayer([{ name: 'f', content: 'x' }])));
      const manifest = JSON.stringify({
        schemaVersion: 2,
        mediaType: 'application/vnd.oci.image.manifest.v1+json',
        config: { mediaType: 'application/vnd.oci.image.config.v1+json', ...config },
        layers: [{ mediaType: 'application/vnd.oci.image.layer.v1.tar+gzip', ...layer }],
      });
      const res = await fetch(`${reg.url}/v2/${repo}/manifests/v1`, {
        method: 'PUT',
        body: manifest,
        headers: { 'content-type': 'application/vnd.oci.image.manifest.v1+json' },
      });
      expect(res.status).toBe(201);

      const err = await rejection(s.pull(`${reg.host}/${repo}:v1`, { registries: [{ host: reg.host, transport: 'http' }] }));
      expectTranslated(err, 'Image', `config ${config.digest}`);
      expect(err.message).toMatch(/is not valid JSON/);
      expect(err.cause).toBeInstanceOf(SyntaxError);
    } finally {
      s.close();
      await reg.stop();
    }
  }, 60_000);
});
