import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { describe, expect, inject, it } from 'vitest';
import { JsBoxlite } from '../../dist/index.js';
import { run, scratchHome } from './helpers.js';

// The guest runtime lives outside every home, and QEMU is checked before a boot.

describe('any home', () => {
  it('boots a box in a brand-new homeDir, and the home holds nothing of the guest runtime', async () => {
    const home = scratchHome('boxlite-anyhome-');
    try {
      expect(fs.readdirSync(home)).toEqual([]);
      const runtime = new JsBoxlite({ homeDir: home });
      const box = await runtime.create({ rootfsPath: inject('image'), memoryMib: 256 });
      const r = await run(box, 'sh', ['-c', 'echo hi from $(uname -r)']);
      expect(r.exitCode).toBe(0);
      expect(r.stdout).toMatch(/^hi from \d+\.\d+\.\d+-\d+-amd64\n$/);
      await runtime.remove(box.id, true);
      expect(fs.readdirSync(home).filter((f) => !['boxes', 'db', 'images', 'logs', 'tmp'].includes(f))).toEqual([]);
    } finally {
      fs.rmSync(home, { recursive: true, force: true });
    }
  });
});

describe('QEMU missing or too old', () => {
  // A child process per case: the engine check is cached per process.
  function attempt(env: Record<string, string>) {
    const home = scratchHome('boxlite-engine-');
    const script = `
      import { JsBoxlite } from ${JSON.stringify(path.join(inject('root'), 'dist', 'index.js'))};
      const rt = new JsBoxlite({ homeDir: ${JSON.stringify(home)} });
      const box = await rt.create({ rootfsPath: ${JSON.stringify(inject('image'))} });
      const info = await rt.systemInfo();
      try {
        await box.exec('true');
        console.log(JSON.stringify({ ok: true }));
      } catch (e) {
        console.log(JSON.stringify({ name: e.name, code: e.code, message: e.message, kernel: info.guestKernel }));
      }
      await rt.remove(box.id, true);`;
    try {
      const r = spawnSync(process.execPath, ['--input-type=module', '-e', script], {
        env: { ...process.env, ...env },
        encoding: 'utf8',
        timeout: 60_000,
      });
      expect(r.stderr).toBe('');
      return JSON.parse(r.stdout.trim().split('\n').pop()!) as { name: string; code: string; message: string; kernel: string };
    } finally {
      fs.rmSync(home, { recursive: true, force: true });
    }
  }

  it('a missing QEMU is an UnsupportedEngine error that says what to install, before any VM starts', () => {
    const r = attempt({ BOXLITE_QEMU: '/nonexistent/qemu-system-x86_64' });
    // systemInfo needs no QEMU: it still reports the shipped kernel.
    const shipped = JSON.parse(fs.readFileSync(path.join(inject('root'), 'runtime', `${process.platform}-${process.arch}`, 'runtime.json'), 'utf8'));
    expect(r).toMatchObject({ name: 'UnsupportedEngineError', code: 'UnsupportedEngine', kernel: shipped.kernel.version });
    expect(r.message).toMatch(/^unsupported engine kind: QEMU not found: BOXLITE_QEMU=\/nonexistent\/qemu-system-x86_64 is not an executable file; install QEMU 6\.2\.0 or newer/);
    for (const hint of ['apt-get install --no-install-recommends qemu-system-x86 qemu-utils', 'dnf install qemu-system-x86-core qemu-img', 'pacman -S qemu-base', 'brew install qemu']) {
      expect(r.message).toContain(hint);
    }
  });

  it('a QEMU older than 6.2 is refused with its version', () => {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'boxlite-oldqemu-'));
    try {
      const fake = path.join(dir, 'qemu-system-x86_64');
      fs.writeFileSync(fake, '#!/bin/sh\necho "QEMU emulator version 5.2.0 (Debian 1:5.2+dfsg-11+deb11u3)"\n', { mode: 0o755 });
      const r = attempt({ BOXLITE_QEMU: fake });
      expect(r.code).toBe('UnsupportedEngine');
      expect(r.message).toContain(`qemu-system-x86_64 5.2.0 (${fake}) is too old, boxlite needs 6.2.0 or newer; install QEMU`);
    } finally {
      fs.rmSync(dir, { recursive: true, force: true });
    }
  });
});
