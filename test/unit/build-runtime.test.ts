import { describe, it, expect } from 'vitest';
import { spawnSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import { existsSync, mkdtempSync, mkdirSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { readNewc } from '../../src/vmm/initramfs.js';
import { loadRuntime } from '../../src/vmm/assets.js';

const ROOT = resolve(import.meta.dirname, '../..');
const script = join(ROOT, 'scripts', 'build-runtime.mjs');
const agent = join(ROOT, 'guest', 'build', 'boxlite-guest');
const busybox = '/bin/busybox';
const ready = [join(ROOT, 'dist', 'vmm', 'initramfs.js'), agent, busybox].every((p) => existsSync(p));

describe.skipIf(!ready)('scripts/build-runtime.mjs', () => {
  function fixture() {
    const dir = mkdtempSync(join(tmpdir(), 'build-runtime-'));
    const kernel = join(dir, 'kernel');
    mkdirSync(join(kernel, 'modules'), { recursive: true });
    writeFileSync(join(kernel, 'vmlinux'), 'a kernel');
    writeFileSync(join(kernel, 'modules', '01-virtio.ko'), 'module');
    writeFileSync(
      join(kernel, 'kernel.json'),
      JSON.stringify({ package: 'linux-image-test', version: '6.1.1-1', kernelRelease: '6.1.0-1-amd64', kernel: 'vmlinux', bootProtocol: 'pvh' }),
    );
    return { dir, kernel, out: join(dir, 'runtime', 'linux-x64') };
  }
  const build = (args: string[]) => spawnSync(process.execPath, [script, ...args], { encoding: 'utf8' });

  it('assembles kernel, initramfs and a manifest the runtime loader accepts, and skips an unchanged rebuild', async () => {
    const { dir, kernel, out } = fixture();
    try {
      const args = ['--kernel', kernel, '--agent', agent, '--busybox', busybox, '--out', out];
      const first = build(args);
      expect(first.status, first.stderr).toBe(0);
      expect(first.stderr).toMatch(/build-runtime: built .*vmlinux .*initramfs\.cpio .*\(1 modules\), hash [0-9a-f]{16}/);
      const { manifest } = await loadRuntime(out, { BOXLITE_RUNTIME_DIR: out });
      expect(manifest.kernel).toMatchObject({ file: 'vmlinux', version: '6.1.1-1', kernelRelease: '6.1.0-1-amd64' });
      for (const [name, f] of Object.entries(manifest.files)) {
        expect(createHash('sha256').update(readFileSync(join(out, name))).digest('hex')).toBe(f.sha256);
      }
      const entries = readNewc(readFileSync(join(out, 'initramfs.cpio')));
      expect(entries.find((e) => e.path === 'init')?.data?.equals(readFileSync(agent))).toBe(true);
      expect(entries.find((e) => e.path === 'lib/boxlite/tools/busybox')?.data?.equals(readFileSync(busybox))).toBe(true);
      expect(entries.find((e) => e.path === 'lib/boxlite/modules/01-virtio.ko')?.data?.toString()).toBe('module');

      const mtime = statSync(join(out, 'initramfs.cpio')).mtimeMs;
      const again = build(args);
      expect(again.stderr).toMatch(/up to date/);
      expect(statSync(join(out, 'initramfs.cpio')).mtimeMs).toBe(mtime);
      expect(build([...args, '--check']).status).toBe(0);

      // A changed input makes --check fail and a build redo it.
      writeFileSync(join(kernel, 'modules', '01-virtio.ko'), 'module v2');
      const stale = build([...args, '--check']);
      expect(stale.status).toBe(1);
      expect(stale.stderr).toMatch(/is missing or stale; run `npm run setup`/);
      expect(build(args).stderr).toMatch(/build-runtime: built/);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });

  it('refuses a dynamically linked busybox: it would not run in the guest', () => {
    const { dir, kernel, out } = fixture();
    try {
      const r = build(['--kernel', kernel, '--agent', agent, '--busybox', process.execPath, '--out', out]);
      expect(r.status).toBe(1);
      expect(r.stderr).toMatch(/is not a static ELF executable/);
      expect(existsSync(out)).toBe(false);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});
