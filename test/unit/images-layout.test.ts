// OCI image layout reading: index → (nested index) → manifest → config, with
// every blob checked against its digest and size.

import { execFileSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { BoxliteError } from '../../src/errors/index.js';
import { hostPlatform, openLayer, readOciLayout } from '../../src/images/oci-layout.js';
import {
  gzip,
  hostArch,
  makeBusyboxImage,
  scratchDir,
  sha256,
  tarLayer,
  writeOciLayout,
} from '../fixtures/images.js';

const scratch = scratchDir('layout');
afterAll(() => scratch.cleanup());

let busybox: string;
beforeAll(async () => {
  busybox = path.join(scratch.dir, 'busybox');
  await makeBusyboxImage(busybox);
});

async function expectImageError(p: Promise<unknown>, match: RegExp): Promise<BoxliteError> {
  const err = await p.then(
    () => null,
    (e: unknown) => e,
  );
  expect(err).toBeInstanceOf(BoxliteError);
  expect((err as BoxliteError).code).toBe('Image');
  expect((err as Error).message).toMatch(/^images error: /);
  expect((err as Error).message).toMatch(match);
  return err as BoxliteError;
}

async function drain(s: NodeJS.ReadableStream): Promise<number> {
  let n = 0;
  for await (const c of s) n += (c as Buffer).length;
  return n;
}

/** Copies a layout so a test can damage it. */
function copyLayout(src: string, name: string): string {
  const dst = path.join(scratch.dir, name);
  fs.cpSync(src, dst, { recursive: true });
  return dst;
}

function blobFile(dir: string, digest: string): string {
  return path.join(dir, 'blobs', 'sha256', digest.slice(7));
}

function writeBlob(dir: string, data: Buffer | string): { digest: string; size: number } {
  const buf = Buffer.from(data);
  const digest = sha256(buf);
  fs.writeFileSync(blobFile(dir, digest), buf);
  return { digest, size: buf.length };
}

describe('readOciLayout', () => {
  it('reads the busybox test image: config, platform and one gzip layer', async () => {
    const img = await readOciLayout(busybox);
    expect(img.manifestDigest).toMatch(/^sha256:[0-9a-f]{64}$/);
    expect(img.configDigest).toMatch(/^sha256:[0-9a-f]{64}$/);
    expect(img.manifestMediaType).toBe('application/vnd.oci.image.manifest.v1+json');
    expect(img.platform).toEqual({ os: 'linux', architecture: hostArch() });
    expect(img.config).toMatchObject({
      Env: ['PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin'],
      Cmd: ['sh'],
      Entrypoint: null,
      WorkingDir: '/',
      User: '',
    });
    expect(img.layers).toHaveLength(1);
    const [layer] = img.layers;
    expect(layer!.compression).toBe('gzip');
    expect(layer!.path).toBe(blobFile(path.resolve(busybox), layer!.digest));
    expect(layer!.size).toBe(fs.statSync(layer!.path).size);
    expect(layer!.diffId).toMatch(/^sha256:/);
    // The layer opens as an uncompressed tar whose hash is the diff_id.
    const s = await openLayer(layer!);
    const chunks: Buffer[] = [];
    for await (const c of s) chunks.push(c as Buffer);
    expect(sha256(Buffer.concat(chunks))).toBe(layer!.diffId);
  });

  it('maps the host platform like OCI does', () => {
    const p = hostPlatform();
    expect(p.os).toBe('linux');
    if (process.arch === 'x64') expect(p.architecture).toBe('amd64');
  });

  it('resolves a nested index by platform and skips attestation manifests', async () => {
    const dir = copyLayout(busybox, 'nested');
    const inner = JSON.parse(fs.readFileSync(path.join(dir, 'index.json'), 'utf8')).manifests[0];
    const other = writeBlob(dir, JSON.stringify({ schemaVersion: 2, mediaType: 'application/vnd.oci.image.manifest.v1+json', config: inner, layers: [] }));
    const nested = writeBlob(
      dir,
      JSON.stringify({
        schemaVersion: 2,
        mediaType: 'application/vnd.oci.image.index.v1+json',
        manifests: [
          { mediaType: 'application/vnd.oci.image.manifest.v1+json', ...other, platform: { os: 'linux', architecture: 'not-this-arch' } },
          {
            mediaType: 'application/vnd.oci.image.manifest.v1+json',
            ...other,
            platform: { os: 'unknown', architecture: 'unknown' },
            annotations: { 'vnd.docker.reference.type': 'attestation-manifest' },
          },
          { mediaType: 'application/vnd.oci.image.manifest.v1+json', digest: inner.digest, size: inner.size, platform: { os: 'linux', architecture: hostArch() } },
        ],
      }),
    );
    fs.writeFileSync(
      path.join(dir, 'index.json'),
      JSON.stringify({
        schemaVersion: 2,
        manifests: [{ mediaType: 'application/vnd.oci.image.index.v1+json', ...nested, annotations: { 'org.opencontainers.image.ref.name': 'v1' } }],
      }),
    );
    const img = await readOciLayout(dir, { reference: 'v1' });
    expect(img.manifestDigest).toBe(inner.digest);

    await expectImageError(readOciLayout(dir, { reference: 'nope' }), /reference "nope" not found.*available: v1/);
    await expectImageError(
      readOciLayout(dir, { platform: { os: 'linux', architecture: 's390x' } }),
      /no manifest for linux\/s390x \(available: linux\/not-this-arch, linux\//,
    );
  });

  it('accepts Docker schema2 media types and uncompressed layers', async () => {
    const dir = path.join(scratch.dir, 'docker');
    const tar = await tarLayer([{ name: 'hello', content: 'hi\n' }]);
    writeOciLayout(dir, { layers: [{ tar, compression: 'none' }], config: { Cmd: ['sh'] } });
    // Rewrite manifest and config descriptors with Docker media types.
    const idx = JSON.parse(fs.readFileSync(path.join(dir, 'index.json'), 'utf8'));
    const man = JSON.parse(fs.readFileSync(blobFile(dir, idx.manifests[0].digest), 'utf8'));
    man.mediaType = 'application/vnd.docker.distribution.manifest.v2+json';
    man.config.mediaType = 'application/vnd.docker.container.image.v1+json';
    man.layers[0].mediaType = 'application/vnd.docker.image.rootfs.diff.tar';
    const d = writeBlob(dir, JSON.stringify(man));
    idx.manifests[0] = { mediaType: man.mediaType, ...d };
    fs.writeFileSync(path.join(dir, 'index.json'), JSON.stringify(idx));
    const img = await readOciLayout(dir);
    expect(img.manifestMediaType).toBe('application/vnd.docker.distribution.manifest.v2+json');
    expect(img.layers[0]!.compression).toBe('none');
    expect(await drain(await openLayer(img.layers[0]!))).toBe(tar.length);
  });

  it('fails clearly for a missing directory, a missing oci-layout and bad JSON', async () => {
    await expectImageError(readOciLayout(path.join(scratch.dir, 'does-not-exist')), /OCI layout directory not found/);
    const empty = path.join(scratch.dir, 'empty');
    fs.mkdirSync(empty);
    await expectImageError(readOciLayout(empty), /oci-layout file not found/);
    const bad = copyLayout(busybox, 'badjson');
    fs.writeFileSync(path.join(bad, 'index.json'), '{"schemaVersion": 2, "manifests": [');
    await expectImageError(readOciLayout(bad), /index\.json .* is not valid JSON/);
    fs.writeFileSync(path.join(bad, 'index.json'), '{"schemaVersion": 2, "manifests": [{"digest": "sha256:../../etc", "size": 1}]}');
    await expectImageError(readOciLayout(bad), /invalid digest "sha256:\.\.\/\.\.\/etc"/);
  });

  it('detects a tampered manifest, config and missing blob', async () => {
    const dir = copyLayout(busybox, 'tampered');
    const img = await readOciLayout(dir);
    const cfgFile = blobFile(dir, img.configDigest);
    const cfg = fs.readFileSync(cfgFile);
    fs.writeFileSync(cfgFile, Buffer.from(cfg.toString().replace('"sh"', '"zz"')));
    await expectImageError(readOciLayout(dir), new RegExp(`digest mismatch for config ${img.configDigest}`));
    fs.writeFileSync(cfgFile, Buffer.concat([cfg, Buffer.from(' ')]));
    await expectImageError(readOciLayout(dir), /size mismatch for config/);
    fs.rmSync(cfgFile);
    await expectImageError(readOciLayout(dir), /config .*blob is missing/);
    fs.writeFileSync(blobFile(dir, img.manifestDigest), '{}');
    await expectImageError(readOciLayout(dir), /size mismatch for manifest|digest mismatch for manifest/);
  });

  it('detects a damaged layer while streaming it', async () => {
    const dir = copyLayout(busybox, 'badlayer');
    const img = await readOciLayout(dir);
    const layer = img.layers[0]!;
    const buf = fs.readFileSync(layer.path);
    const orig = Buffer.from(buf);
    buf[5] ^= 0xff; // same size, gzip header mtime changed: gunzip does not care, only the digest catches it
    fs.writeFileSync(layer.path, buf);
    await expectImageError(drain(await openLayer(layer)), new RegExp(`digest mismatch for blob ${layer.digest}`));
    const mid = Buffer.from(orig);
    for (let i = 1000; i < 1100; i++) mid[i] ^= 0x5a; // damaged deflate data: gunzip or digest fails first
    fs.writeFileSync(layer.path, mid);
    await expectImageError(drain(await openLayer(layer)), /digest mismatch for blob|failed to decompress/);
    buf.set(orig);
    fs.writeFileSync(layer.path, Buffer.concat([buf, Buffer.alloc(10)]));
    await expectImageError(drain(await openLayer(layer)), /size mismatch for blob/);
    fs.rmSync(layer.path);
    await expectImageError(openLayer(layer), /is missing/);
  });

  it('decompresses zstd layers (zlib on new Nodes, the zstd tool on Node 20)', async () => {
    const dir = path.join(scratch.dir, 'zstd');
    const tar = await tarLayer([{ name: 'hello', content: 'zstd works' }]);
    const compressed = execFileSync('zstd', ['-q', '-c'], { input: tar });
    writeOciLayout(dir, { layers: [{ tar: compressed, compression: 'none' }], config: {} });
    const img = await readOciLayout(dir);
    expect(await drain(await openLayer(img.layers[0]!))).toBe(tar.length);
  });

  it('reports a damaged zstd layer as an Image error', async () => {
    const dir = path.join(scratch.dir, 'zstd-bad');
    const fake = Buffer.concat([Buffer.from([0x28, 0xb5, 0x2f, 0xfd]), Buffer.alloc(60)]);
    writeOciLayout(dir, { layers: [{ tar: fake, compression: 'none' }], config: {} });
    const img = await readOciLayout(dir);
    await expectImageError(drain(await openLayer(img.layers[0]!)), /failed to decompress \(zstd\)/);
  });

  it('gunzips a gzip layer even when its media type says plain tar', async () => {
    const dir = path.join(scratch.dir, 'mislabelled');
    const tar = await tarLayer([{ name: 'x', content: 'x' }]);
    writeOciLayout(dir, { layers: [{ tar: gzip(tar), compression: 'none' }], config: {} });
    const img = await readOciLayout(dir);
    expect(await drain(await openLayer(img.layers[0]!))).toBe(tar.length);
  });

  it('refuses images for another architecture and unknown layer types', async () => {
    const dir = path.join(scratch.dir, 'arch');
    const tar = await tarLayer([{ name: 'x', content: 'x' }]);
    const other = hostArch() === 'amd64' ? 'arm64' : 'amd64';
    writeOciLayout(dir, { layers: [{ tar, compression: 'none' }], config: {}, architecture: other });
    // The index entry says the host arch was not checked (no platform filter); the config does it.
    const idx = JSON.parse(fs.readFileSync(path.join(dir, 'index.json'), 'utf8'));
    delete idx.manifests[0].platform;
    fs.writeFileSync(path.join(dir, 'index.json'), JSON.stringify(idx));
    await expectImageError(readOciLayout(dir), new RegExp(`is for linux/${other}`));
    const img = await readOciLayout(dir, { platform: { os: 'linux', architecture: other } });
    expect(img.platform.architecture).toBe(other);

    const man = JSON.parse(fs.readFileSync(blobFile(dir, idx.manifests[0].digest), 'utf8'));
    man.layers[0].mediaType = 'application/vnd.example.weird';
    const d = writeBlob(dir, JSON.stringify(man));
    fs.writeFileSync(path.join(dir, 'index.json'), JSON.stringify({ schemaVersion: 2, manifests: [{ mediaType: man.mediaType, ...d }] }));
    await expectImageError(
      readOciLayout(dir, { platform: { os: 'linux', architecture: other } }),
      /unsupported media type "application\/vnd\.example\.weird"/,
    );
  });
});
