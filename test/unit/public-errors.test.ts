// Bad inputs through the public entry (src/index.ts) that reach the image layer: every
// rejection is a BoxliteError with the documented code and prefix, never a raw errno,
// SyntaxError or tar-stream error, and nothing is left half-recorded.

import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { BoxliteError, JsBoxlite, type ErrorCode } from '../../src/index.js';
import { scratchDir } from '../fixtures/images.js';

const PREFIX: Partial<Record<ErrorCode, string>> = {
  Config: 'configuration error: ',
  Storage: 'storage error: ',
  Image: 'images error: ',
  NotFound: 'image not found: ',
};

async function expectCode(p: Promise<unknown>, code: ErrorCode, match?: RegExp): Promise<BoxliteError> {
  const err = await p.then(
    () => {
      throw new Error(`expected a ${code} rejection`);
    },
    (e: unknown) => e,
  );
  expect(err).toBeInstanceOf(BoxliteError);
  expect((err as BoxliteError).code).toBe(code);
  expect((err as Error).message.startsWith(PREFIX[code]!)).toBe(true);
  if (match) expect((err as Error).message).toMatch(match);
  return err as BoxliteError;
}

const scratch = scratchDir('public-errors');
let rt: JsBoxlite;
let file: string;
let emptyDir: string;
beforeAll(() => {
  rt = new JsBoxlite({ homeDir: path.join(scratch.dir, 'home') });
  file = path.join(scratch.dir, 'not-an-archive');
  fs.writeFileSync(file, 'plain text, neither a tar nor an OCI layout\n'.repeat(40));
  emptyDir = path.join(scratch.dir, 'empty-dir');
  fs.mkdirSync(emptyDir);
});
afterAll(() => {
  rt.close();
  scratch.cleanup();
});

describe('runtime.images with bad input', () => {
  it('pull of malformed references is Image ("invalid reference format")', async () => {
    for (const ref of ['::bad', 'Upper', 'x@sha256:short', '', 'a'.repeat(300)]) {
      await expectCode(rt.images.pull(ref), 'Image', /invalid reference format/);
    }
    expect(await rt.images.list()).toEqual([]);
  });

  it('load of a non-archive, a missing file, a directory and an empty file is Image', async () => {
    await expectCode(rt.images.load(file), 'Image', new RegExp(`cannot read archive ${file}`));
    await expectCode(rt.images.load(path.join(scratch.dir, 'missing.tar')), 'Image', /archive not found/);
    await expectCode(rt.images.load(emptyDir), 'Image', /is a directory, not an image archive/);
    const empty = path.join(scratch.dir, 'empty.tar');
    fs.writeFileSync(empty, '');
    await expectCode(rt.images.load(empty), 'Image', /neither an OCI archive nor a docker save archive/);
    expect(await rt.images.list()).toEqual([]);
  });

  it('remove of an unknown image is NotFound', async () => {
    await expectCode(rt.images.remove('docker.io/library/never-pulled:1'), 'NotFound');
  });

  it('a home under a regular file makes every image call a Storage error', async () => {
    // Short (unix socket paths are bounded): a regular file in the temp dir, a home below it.
    const short = fs.mkdtempSync(path.join(os.tmpdir(), 'bl-'));
    fs.writeFileSync(path.join(short, 'f'), '');
    const bad = new JsBoxlite({ homeDir: path.join(short, 'f', 'home') });
    try {
      for (const call of [() => bad.images.pull('busybox'), () => bad.images.list(), () => bad.images.load(file)]) {
        const err = await expectCode(call(), 'Storage', /not a directory|EEXIST|ENOTDIR/);
        expect((err.cause as NodeJS.ErrnoException).code).toMatch(/^(ENOTDIR|EEXIST)$/);
      }
    } finally {
      bad.close();
      fs.rmSync(short, { recursive: true, force: true });
    }
  });
});

describe('create({ rootfsPath }) with bad input', () => {
  it('a regular file is Image (not a directory)', async () => {
    await expectCode(rt.create({ rootfsPath: file }), 'Image', /OCI layout path is not a directory/);
  });

  it('a missing directory is Config, checked before anything starts', async () => {
    await expectCode(rt.create({ rootfsPath: path.join(scratch.dir, 'nope') }), 'Config', /rootfsPath does not exist/);
    await expectCode(rt.create({ rootfsPath: path.join(file, 'below-a-file') }), 'Config', /rootfsPath does not exist/);
  });

  it('a directory that is not an OCI layout is Image, and so is a layout with a broken index.json', async () => {
    await expectCode(rt.create({ rootfsPath: emptyDir }), 'Image', /oci-layout file not found/);
    const broken = path.join(scratch.dir, 'broken-layout');
    fs.mkdirSync(broken);
    fs.writeFileSync(path.join(broken, 'oci-layout'), '{"imageLayoutVersion":"1.0.0"}');
    fs.writeFileSync(path.join(broken, 'index.json'), '{"manifests": [');
    const err = await expectCode(rt.create({ rootfsPath: broken }), 'Image', /index\.json .* is not valid JSON/);
    expect(err.cause).toBeInstanceOf(SyntaxError);
    expect(await rt.listInfo()).toEqual([]);
  });
});
