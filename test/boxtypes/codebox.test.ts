// CodeBox in real VMs, on the `codebox` image (Debian's python3.11 + pip standing in for
// python:slim, scripts/images/codebox.mjs): Python runs and fails as the reference's users see it,
// pip installs a wheel built here from a simple index on the host (reached as
// host.boxlite.internal, configured only through the box env as a user's mirror would be), a box
// without python fails fast, and the default image name `python:slim` resolves through
// `imageRegistries`. Boxes are shared where the checks do not interfere (TCG boots are slow).
import { execFileSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, inject, it } from 'vitest';
import { CodeBox, ExecError, JsBoxlite } from '../../dist/index.js';
import { startPypi, type Pypi } from '../fixtures/pypi.js';
import { startRegistry, type Registry } from '../fixtures/registry.js';
import { buildWheel } from '../fixtures/wheel.js';
import { scratchHome } from '../integration/helpers.js';

const root = inject('root');
const codeboxImage = path.join(root, '.cache', 'images', 'codebox');
const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'boxlite-codebox-'));
let pypi: Pypi;
let runtime: JsBoxlite;

/** The config digest (image id) of the one image of an OCI layout. */
function layoutConfigDigest(layout: string): string {
  const blob = (digest: string) => JSON.parse(fs.readFileSync(path.join(layout, 'blobs', 'sha256', digest.slice(7)), 'utf8'));
  const index = JSON.parse(fs.readFileSync(path.join(layout, 'index.json'), 'utf8'));
  return blob(index.manifests[0].digest).config.digest;
}

async function rejection(p: Promise<unknown>): Promise<ExecError> {
  try {
    await p;
  } catch (err) {
    return err as ExecError;
  }
  throw new Error('expected a rejection');
}

beforeAll(async () => {
  // Cached by content: ~0.3 s when scripts/setup.sh built it already.
  execFileSync(process.execPath, [path.join(root, 'scripts', 'make-test-image.mjs'), codeboxImage, '--variant', 'codebox'], { stdio: 'inherit' });
  pypi = await startPypi([
    buildWheel({ name: 'boxlite-probe', version: '1.0.0' }),
    buildWheel({ name: 'boxlite-extra-a', version: '2.0.0' }),
    buildWheel({ name: 'boxlite_extra.b', version: '3.0.0' }),
  ]);
  runtime = new JsBoxlite({ homeDir: inject('home') });
});

afterAll(async () => {
  await pypi?.stop();
  fs.rmSync(tmp, { recursive: true, force: true });
});

describe('CodeBox on the codebox image', () => {
  let box: CodeBox;
  beforeAll(() => {
    box = new CodeBox({
      runtime,
      rootfsPath: codeboxImage,
      // pip reads its options from PIP_* variables: the box env reaches the reference's env-less
      // `pip install`. Plain http is trusted only for listed hosts; no retries so a miss is quick.
      env: {
        PIP_INDEX_URL: pypi.urlFor('host.boxlite.internal'),
        PIP_TRUSTED_HOST: 'host.boxlite.internal',
        PIP_RETRIES: '0',
        PIP_TIMEOUT: '2',
      },
    });
  });
  afterAll(async () => {
    await box?.stop();
  });

  it("run() returns stdout; a non-zero exit and an exception are ExecError('run()') with Python's stderr", async () => {
    expect(await box.run('print(6*7)')).toBe('42\n');
    const exit = await rejection(box.run('import sys; print("out"); sys.exit(3)'));
    expect(exit).toBeInstanceOf(ExecError);
    expect([exit.command, exit.exitCode]).toEqual(['run()', 3]);
    const raised = await rejection(box.run("raise ValueError('bad value')"));
    expect([raised.command, raised.exitCode]).toEqual(['run()', 1]);
    expect(raised.stderr).toMatch(/Traceback[\s\S]*ValueError: bad value/);
    expect(raised.message).toMatch(/^Command 'run\(\)' failed with exit code 1: Traceback/);
  });

  it('runScript() runs a host file (UTF-8)', async () => {
    const script = path.join(tmp, 'script.py');
    fs.writeFileSync(script, "import sys\nprint('héllo', sys.version_info[:2])\n");
    expect(await box.runScript(script)).toBe('héllo (3, 11)\n');
  });

  it('installPackage() installs a wheel from the simple index on the host; the package then imports', async () => {
    const out = await box.installPackage('boxlite-probe');
    expect(out).toMatch(/Successfully installed boxlite-probe-1\.0\.0/);
    expect(pypi.requests).toContain('/simple/boxlite-probe/');
    expect(pypi.requests).toContain('/files/boxlite_probe-1.0.0-py3-none-any.whl');
    expect(await box.run('import boxlite_probe as b; print(b.__version__)')).toBe('1.0.0\n');
  });

  it('installPackages() installs several in one pip run', async () => {
    const out = await box.installPackages('boxlite-extra-a', 'boxlite_extra.b');
    expect(out).toMatch(/Successfully installed (?=.*boxlite-extra-a-2\.0\.0)(?=.*boxlite.extra.b-3\.0\.0)/);
    expect(await box.run('import boxlite_extra_a as a, boxlite_extra_b as b; print(a.__version__, b.__version__)')).toBe('2.0.0 3.0.0\n');
  });

  it("installPackage() of an unknown package is ExecError(\"installPackage('does-not-exist')\") with pip's message", async () => {
    const err = await rejection(box.installPackage('does-not-exist'));
    expect(err).toBeInstanceOf(ExecError);
    expect([err.command, err.exitCode]).toEqual(["installPackage('does-not-exist')", 1]);
    expect(err.stderr).toMatch(/No matching distribution found for does-not-exist/);
    expect(pypi.requests).toContain('/simple/does-not-exist/');
  });
});

describe('CodeBox images', () => {
  it('a box without python (busybox) fails with ExecError 127, promptly', async () => {
    const box = new CodeBox({ runtime, rootfsPath: inject('image') });
    try {
      await box.exec('true'); // boot first, so the time below is the run() alone
      const t0 = Date.now();
      const err = await rejection(box.run('print(1)'));
      expect(Date.now() - t0).toBeLessThan(30_000);
      expect(err).toBeInstanceOf(ExecError);
      expect([err.command, err.exitCode]).toEqual(['run()', 127]);
      expect(err.stderr).toMatch(/usr\/local\/bin\/python/);
    } finally {
      await box.stop();
    }
  });

  it("with no image option, 'python:slim' is pulled from the registry listed (search: true) in imageRegistries", async () => {
    let registry: Registry | undefined;
    let rt: JsBoxlite | undefined;
    let box: CodeBox | undefined;
    const home = scratchHome();
    try {
      registry = await startRegistry({});
      await registry.push(codeboxImage, 'python:slim');
      rt = new JsBoxlite({ homeDir: home, imageRegistries: [{ host: registry.host, transport: 'http', search: true }] });
      box = new CodeBox({ runtime: rt });
      expect(await box.run('import sys; print(sys.executable, sys.version_info[:2])')).toBe('/usr/local/bin/python (3, 11)\n');
      // The box records the name asked for (normalised); the images list where it was found.
      expect((await box.info()).image).toBe('docker.io/library/python:slim');
      // ...and it is the codebox layout's image, fetched from the test registry (no docker.io here).
      const images = await rt.images.list();
      expect(images.map((i) => [i.reference, i.id])).toEqual([['docker.io/library/python:slim', layoutConfigDigest(codeboxImage)]]);
      expect(registry.logs()).toMatch(/GET \/v2\/(library\/)?python\/manifests\/slim/);
    } finally {
      await box?.stop();
      rt?.close();
      await registry?.stop();
      fs.rmSync(home, { recursive: true, force: true });
    }
  });
});
