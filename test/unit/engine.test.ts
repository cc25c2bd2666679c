import { describe, it, expect } from 'vitest';
import { checkEngine, compareVersions, installHint, MIN_QEMU_VERSION, parseQemuVersion, type EngineProbes } from '../../src/vmm/engine.js';
import { EngineError } from '../../src/errors/index.js';

const QEMU_72 = 'QEMU emulator version 7.2.22 (Debian 1:7.2+dfsg-7+deb12u18+b3)\nCopyright (c) 2003-2022 Fabrice Bellard\n';
const IMG_72 = 'qemu-img version 7.2.22 (Debian 1:7.2+dfsg-7+deb12u18+b3)\n';

function probes(over: Partial<EngineProbes> = {}, outputs: Record<string, string> = {}): EngineProbes {
  const out: Record<string, string> = { '/usr/bin/qemu-system-x86_64': QEMU_72, '/usr/bin/qemu-img': IMG_72, ...outputs };
  return {
    arch: 'x86_64',
    locateQemu: () => '/usr/bin/qemu-system-x86_64',
    findQemuImg: () => '/usr/bin/qemu-img',
    run: async (file) => {
      if (!(file in out)) throw new Error(`spawn ${file} ENOENT`);
      return out[file]!;
    },
    ...over,
  };
}

describe('QEMU version parsing', () => {
  it('reads the versions distributions print', () => {
    expect(parseQemuVersion(QEMU_72)).toEqual([7, 2, 22]);
    expect(parseQemuVersion(IMG_72)).toEqual([7, 2, 22]);
    expect(parseQemuVersion('QEMU emulator version 8.2.2 (Debian 1:8.2.2+ds-0ubuntu1.4)')).toEqual([8, 2, 2]);
    expect(parseQemuVersion('QEMU emulator version 9.1.0')).toEqual([9, 1, 0]);
    expect(parseQemuVersion('QEMU emulator version 10.0')).toEqual([10, 0, 0]);
    expect(parseQemuVersion('qemu-img version 6.2.0 (Debian 1:6.2+dfsg-2ubuntu6.22)')).toEqual([6, 2, 0]);
    expect(parseQemuVersion('no version here')).toBeNull();
  });

  it('compares numerically, not as text', () => {
    expect(compareVersions([10, 0, 0], [9, 2, 0])).toBeGreaterThan(0);
    expect(compareVersions([6, 1, 9], MIN_QEMU_VERSION)).toBeLessThan(0);
    expect(compareVersions([6, 2, 0], MIN_QEMU_VERSION)).toBe(0);
  });
});

describe('engine check', () => {
  const distros = /Debian\/Ubuntu: apt-get install --no-install-recommends qemu-system-x86 qemu-utils; Fedora: dnf install qemu-system-x86-core qemu-img; Arch: pacman -S qemu-base; Homebrew: brew install qemu/;

  it('accepts QEMU 7.2 and reports what it found', async () => {
    await expect(checkEngine(probes())).resolves.toEqual({
      qemu: '/usr/bin/qemu-system-x86_64',
      qemuVersion: '7.2.22',
      qemuImg: '/usr/bin/qemu-img',
      qemuImgVersion: '7.2.22',
    });
  });

  it('names what to install on every distribution when QEMU is missing', async () => {
    const err = await checkEngine(
      probes({
        locateQemu: () => {
          throw new EngineError('qemu-system-x86_64 not found on PATH; install QEMU (Debian: apt-get install qemu-system-x86) or set BOXLITE_QEMU');
        },
      }),
    ).catch((e: unknown) => e as Error & { code: string });
    expect(err.code).toBe('UnsupportedEngine');
    expect(err.name).toBe('UnsupportedEngineError');
    expect(err.message).toMatch(/^unsupported engine kind: QEMU not found: qemu-system-x86_64 not found on PATH; install QEMU 6\.2\.0 or newer/);
    expect(err.message).toMatch(distros);
  });

  it('wants qemu-img too', async () => {
    await expect(checkEngine(probes({ findQemuImg: () => null }))).rejects.toMatchObject({
      code: 'UnsupportedEngine',
      message: expect.stringMatching(/^unsupported engine kind: qemu-img not found on PATH; install QEMU/),
    });
  });

  it('refuses a QEMU that is too old, one that does not run, and one whose version it cannot read', async () => {
    await expect(checkEngine(probes({}, { '/usr/bin/qemu-system-x86_64': 'QEMU emulator version 4.2.1 (Debian 1:4.2-3ubuntu6.30)' }))).rejects.toThrow(
      /^unsupported engine kind: qemu-system-x86_64 4\.2\.1 \(\/usr\/bin\/qemu-system-x86_64\) is too old, boxlite needs 6\.2\.0 or newer; install QEMU/,
    );
    await expect(checkEngine(probes({}, { '/usr/bin/qemu-img': 'qemu-img version 5.2.0' }))).rejects.toThrow(/qemu-img 5\.2\.0 .* is too old/);
    await expect(checkEngine(probes({ locateQemu: () => '/opt/broken-qemu' }))).rejects.toThrow(
      /qemu-system-x86_64 \(\/opt\/broken-qemu\) does not run: spawn \/opt\/broken-qemu ENOENT; install QEMU/,
    );
    await expect(checkEngine(probes({}, { '/usr/bin/qemu-img': 'something else' }))).rejects.toThrow(/cannot tell the version of qemu-img/);
  });

  it('names the arm packages on arm64 hosts', () => {
    expect(installHint('aarch64')).toMatch(/apt-get install --no-install-recommends qemu-system-arm qemu-utils; Fedora: dnf install qemu-system-aarch64-core qemu-img/);
  });
});
