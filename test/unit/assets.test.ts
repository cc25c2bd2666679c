import { describe, it, expect, beforeEach, afterEach } from 'vitest';
import { createHash } from 'node:crypto';
import { existsSync, mkdtempSync, mkdirSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { locateGuestAssets, loadRuntime, platformTag, runtimeCacheDir, runtimeDirFor } from '../../src/vmm/assets.js';
import { readNewc, writeNewc, type CpioEntry } from '../../src/vmm/initramfs.js';

const sha = (b: Buffer | string) => createHash('sha256').update(b).digest('hex');

describe('guest runtime', () => {
  let dir: string;
  let runtime: string;
  let env: NodeJS.ProcessEnv;
  const base: CpioEntry[] = [
    { path: 'dev', type: 'dir', perm: 0o755 },
    { path: 'dev/console', type: 'chardev', perm: 0o600, rdevMajor: 5, rdevMinor: 1 },
    { path: 'init', type: 'file', perm: 0o755, data: Buffer.from('shipped agent') },
    { path: 'lib/boxlite/modules/01-a.ko', type: 'file', perm: 0o644, data: Buffer.from('module a') },
  ];

  function writeRuntime(over: Record<string, unknown> = {}) {
    const kernel = Buffer.from('kernel image');
    const initrd = writeNewc(base);
    writeFileSync(join(runtime, 'vmlinux'), kernel);
    writeFileSync(join(runtime, 'initramfs.cpio'), initrd);
    const manifest = {
      format: 1,
      boxliteVersion: '9.8.7',
      platform: platformTag(),
      hash: '0123456789abcdef',
      kernel: { file: 'vmlinux', package: 'linux-image-x', version: '6.1.192-3', kernelRelease: '6.1.0-57-amd64', bootProtocol: 'pvh' },
      initramfs: { file: 'initramfs.cpio' },
      files: {
        vmlinux: { sha256: sha(kernel), size: kernel.length },
        'initramfs.cpio': { sha256: sha(initrd), size: initrd.length },
      },
      ...over,
    };
    writeFileSync(join(runtime, 'runtime.json'), JSON.stringify(manifest));
  }

  beforeEach(() => {
    dir = mkdtempSync(join(tmpdir(), 'assets-test-'));
    runtime = join(dir, 'runtime');
    mkdirSync(runtime);
    env = { BOXLITE_RUNTIME_DIR: runtime, XDG_DATA_HOME: join(dir, 'data'), HOME: join(dir, 'home') };
  });
  afterEach(() => rmSync(dir, { recursive: true, force: true }));

  it('is found next to the package by default and by BOXLITE_RUNTIME_DIR when set', () => {
    expect(runtimeDirFor({})).toMatch(new RegExp(`/runtime/${platformTag()}$`));
    expect(runtimeDirFor({ BOXLITE_RUNTIME_DIR: '/opt/rt' })).toBe('/opt/rt');
  });

  it('gives the shipped kernel and initramfs in place, touching no home and no cache', async () => {
    writeRuntime();
    const a = await locateGuestAssets(env);
    expect(a).toEqual({
      kernelPath: join(runtime, 'vmlinux'),
      initrdPath: join(runtime, 'initramfs.cpio'),
      kernelVersion: '6.1.192-3',
      kernelRelease: '6.1.0-57-amd64',
      runtimeDir: runtime,
    });
    expect(existsSync(join(dir, 'data'))).toBe(false);
  });

  it('derives an initramfs with a BOXLITE_GUEST_AGENT override into the per-user runtime cache', async () => {
    writeRuntime();
    writeFileSync(join(dir, 'dev-agent'), 'development agent');
    const e = { ...env, BOXLITE_GUEST_AGENT: join(dir, 'dev-agent') };
    const a = await locateGuestAssets(e);
    const cache = join(dir, 'data', 'boxlite', 'runtimes', 'v9.8.7-0123456789abcdef');
    expect(runtimeCacheDir({ boxliteVersion: '9.8.7', hash: '0123456789abcdef' }, e)).toBe(cache);
    expect(a.initrdPath).toMatch(new RegExp(`^${cache}/initramfs-[0-9a-f]{16}\\.cpio$`));
    const entries = readNewc(readFileSync(a.initrdPath));
    expect(entries.map((x) => x.path)).toEqual(base.map((x) => x.path));
    expect(entries.find((x) => x.path === 'init')?.data?.toString()).toBe('development agent');
    expect(entries.find((x) => x.path === 'lib/boxlite/modules/01-a.ko')?.data?.toString()).toBe('module a');
    expect(entries.find((x) => x.path === 'dev/console')).toMatchObject({ type: 'chardev', rdevMajor: 5, rdevMinor: 1 });
    // reused, and the shipped one is untouched
    expect((await locateGuestAssets(e)).initrdPath).toBe(a.initrdPath);
    expect(readdirSync(cache)).toHaveLength(1);
    expect(readFileSync(join(runtime, 'initramfs.cpio')).equals(writeNewc(base))).toBe(true);
  });

  it('says how to get it when it is missing', async () => {
    await expect(locateGuestAssets({ ...env })).rejects.toMatchObject({
      code: 'Engine',
      message: expect.stringMatching(/^engine reported an error: guest runtime not found: .*runtime\.json is missing; point BOXLITE_RUNTIME_DIR/),
    });
    const err = await loadRuntime(join(dir, 'nowhere'), {}).catch((e: unknown) => e as Error);
    expect(err.message).toMatch(/in a source checkout run `npm run setup`.*reinstall the package, or set BOXLITE_RUNTIME_DIR/);
  });

  it('rejects a damaged, foreign or incompatible runtime', async () => {
    writeRuntime();
    writeFileSync(join(runtime, 'vmlinux'), 'truncated');
    await expect(locateGuestAssets(env)).rejects.toThrow(/is damaged: vmlinux has 9 bytes, runtime.json says 12/);
    writeRuntime({ platform: 'plan9-mips' });
    await expect(locateGuestAssets(env)).rejects.toMatchObject({ code: 'UnsupportedEngine', message: expect.stringMatching(/is for plan9-mips/) });
    writeRuntime({ format: 99 });
    await expect(locateGuestAssets(env)).rejects.toThrow(/has format 99, this boxlite reads format 1/);
    writeFileSync(join(runtime, 'runtime.json'), '{"format":1}');
    await expect(locateGuestAssets(env)).rejects.toThrow(/is not a valid manifest/);
    writeRuntime();
    await expect(locateGuestAssets({ ...env, BOXLITE_GUEST_AGENT: join(dir, 'missing') })).rejects.toThrow(
      /guest agent \(BOXLITE_GUEST_AGENT\) not found at .*missing$/,
    );
  });

  it('newc round-trips through readNewc', () => {
    expect(readNewc(writeNewc(base))).toEqual(base);
    expect(() => readNewc(Buffer.from('garbage'))).toThrow(/not a newc archive/);
  });

  // The runtime scripts/build-runtime.mjs assembled for this checkout (the one the package ships).
  const built = runtimeDirFor({});
  it.skipIf(!existsSync(join(built, 'runtime.json')))('the built runtime matches its manifest, hashes included', async () => {
    const { manifest } = await loadRuntime(built, {});
    for (const [name, f] of Object.entries(manifest.files)) {
      expect(sha(readFileSync(join(built, name))), name).toBe(f.sha256);
    }
    const entries = readNewc(readFileSync(join(built, manifest.initramfs.file)));
    const names = entries.map((e) => e.path);
    expect(names).toContain('init');
    expect(names).toContain('lib/boxlite/tools/busybox');
    expect(names.filter((n) => n.startsWith('lib/boxlite/modules/') && n.endsWith('.ko')).length).toBeGreaterThan(10);
  });
});
