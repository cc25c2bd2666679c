import fs from 'node:fs';
import { describe, expect, it } from 'vitest';
import { ConfigError } from '../../src/errors/index.js';
import { CAPABILITY_NAMES, DEFAULT_CAPABILITIES, guestPolicy, resolveCapabilities } from '../../src/runtime/capabilities.js';
import { normalizeBoxOptions } from '../../src/runtime/options.js';
import { buildKernelCmdline, qemuArgs, type VmPlan } from '../../src/vmm/qemu.js';

const layout = '/';
const num = (...names: string[]) => names.map((n) => CAPABILITY_NAMES.indexOf(n)).sort((a, b) => a - b);
const baseline = num(...DEFAULT_CAPABILITIES);

function plan(guest: VmPlan['guest']): VmPlan {
  return {
    accel: 'kvm',
    arch: 'x86_64',
    resources: { cpus: 1, memoryMib: 512 },
    boot: { kernelPath: '/k', initrdPath: '/i' },
    disks: [],
    shares: [],
    nics: [],
    console: { logPath: '/c' },
    agent: { socketPath: '/a' },
    guest,
  };
}

describe('advanced.capabilities', () => {
  it('canonicalises names (case, CAP_ prefix, duplicates) at create()', () => {
    const o = normalizeBoxOptions({ rootfsPath: layout, advanced: { capabilities: { add: ['net_admin', 'CAP_NET_ADMIN'], drop: ['Cap_Chown'] } } }, 4);
    expect(o.capabilities).toEqual({ add: ['NET_ADMIN'], drop: ['CHOWN'] });
    expect(normalizeBoxOptions({ rootfsPath: layout, advanced: { capabilities: { add: [], drop: [] } } }, 4).capabilities).toBeUndefined();
  });

  it('refuses an unknown name with a ConfigError naming it', () => {
    let err: unknown;
    try {
      normalizeBoxOptions({ rootfsPath: layout, advanced: { capabilities: { drop: ['CHOWN', 'NET_FLY'] } } }, 4);
    } catch (e) {
      err = e;
    }
    expect(err).toBeInstanceOf(ConfigError);
    expect((err as Error).message).toMatch(/^configuration error: advanced\.capabilities\.drop\[1\] "NET_FLY" is not a Linux capability/);
    expect(() => normalizeBoxOptions({ rootfsPath: layout, advanced: { capabilities: { add: ['CAP_'] } } }, 4)).toThrow(/add\[0\] "CAP_"/);
  });

  it("resolves against docker's baseline with the reference's precedence rules", () => {
    expect(baseline).toEqual([0, 1, 3, 4, 5, 6, 7, 8, 10, 13, 18, 27, 29, 31]);
    expect(resolveCapabilities(undefined)).toEqual(baseline);
    expect(resolveCapabilities({ add: ['NET_ADMIN'], drop: ['NET_RAW'] })).toEqual([...baseline.filter((c) => c !== 13), 12].sort((a, b) => a - b));
    // a named addition wins over a named removal
    expect(resolveCapabilities({ add: ['CHOWN'], drop: ['CHOWN'] })).toEqual(baseline);
    // add ALL: named removals win
    expect(resolveCapabilities({ add: ['ALL'], drop: ['SYS_ADMIN'] })).toEqual(CAPABILITY_NAMES.map((_, i) => i).filter((i) => i !== 21));
    // drop ALL: the additions are the whole set
    expect(resolveCapabilities({ add: ['KILL', 'NET_ADMIN'], drop: ['ALL'] })).toEqual([5, 12]);
    expect(resolveCapabilities({ add: [], drop: ['ALL'] })).toEqual([]);
  });

  it("matches the agent's built-in baseline (guest/src/exec.c), used when boxlite.caps is absent", () => {
    const src = fs.readFileSync(new URL('../../guest/src/exec.c', import.meta.url), 'utf8');
    const block = /static const int kept_caps\[\] = \{([^}]*)\}/.exec(src)![1]!;
    const entries = [...block.matchAll(/(\d+),\s*\/\* (\w+) \*\//g)].map((m) => [Number(m[1]), m[2]]);
    expect(entries.map(([n]) => n)).toEqual(baseline);
    expect(entries.map(([n, name]) => CAPABILITY_NAMES[n as number] === name)).not.toContain(false);
  });

  it('reaches the agent as a bit mask on the kernel command line, only when changed', () => {
    const o = normalizeBoxOptions({ rootfsPath: layout, advanced: { capabilities: { drop: ['ALL'], add: ['CHOWN', 'NET_ADMIN', 'CHECKPOINT_RESTORE'] } } }, 4);
    const cmdline = buildKernelCmdline(plan(guestPolicy(o).guest)).split(' ');
    expect(cmdline).toContain(`boxlite.caps=${(2n ** 40n + 2n ** 12n + 1n).toString(16)}`);
    expect(cmdline).toContain('boxlite.caps=10000001001');
    expect(buildKernelCmdline(plan(guestPolicy(normalizeBoxOptions({ rootfsPath: layout }, 4)).guest))).not.toMatch(/boxlite\.(caps|rlimit)/);
    // drop ALL without additions: an empty set is still a set (mask 0), not the default
    const none = normalizeBoxOptions({ rootfsPath: layout, advanced: { capabilities: { drop: ['ALL'] } } }, 4);
    expect(buildKernelCmdline(plan(guestPolicy(none).guest)).split(' ')).toContain('boxlite.caps=0');
  });
});

describe('security resource limits', () => {
  it('become boxlite.rlimit= words, soft = hard, in the agent names', () => {
    const o = normalizeBoxOptions(
      { rootfsPath: layout, security: { maxOpenFiles: 256, maxFileSize: 1048576, maxProcesses: 64, maxMemory: 2 ** 40, maxCpuTime: 0 } },
      4,
    );
    expect(o.limits).toEqual({ maxOpenFiles: 256, maxFileSize: 1048576, maxProcesses: 64, maxMemory: 2 ** 40, maxCpuTime: 0 });
    const words = buildKernelCmdline(plan(guestPolicy(o).guest)).split(' ').filter((w) => w.startsWith('boxlite.rlimit='));
    expect(words).toEqual([
      'boxlite.rlimit=nofile:256',
      'boxlite.rlimit=fsize:1048576',
      'boxlite.rlimit=nproc:64',
      `boxlite.rlimit=as:${2 ** 40}`,
      'boxlite.rlimit=cpu:0',
    ]);
    const one = normalizeBoxOptions({ rootfsPath: layout, security: { maxFileSize: 4096 } }, 4);
    expect(guestPolicy(one)).toEqual({ guest: { limits: { fileSize: 4096 } } });
  });

  it("refuses maxOpenFiles above the guest kernel's fs.nr_open at create", () => {
    expect(() => normalizeBoxOptions({ rootfsPath: layout, security: { maxOpenFiles: 1048577 } }, 4)).toThrow(
      'configuration error: security.maxOpenFiles must be at most 1048576 (the guest kernel\'s fs.nr_open), got 1048577',
    );
    expect(normalizeBoxOptions({ rootfsPath: layout, security: { maxOpenFiles: 1048576 } }, 4).limits).toEqual({ maxOpenFiles: 1048576 });
  });

  it('are checked again by the plan validator', () => {
    expect(() => qemuArgs(plan({ limits: { openFiles: -1 } }), { env: {}, tscKhz: () => null })).toThrow(/invalid limit openFiles -1/);
    expect(() => qemuArgs(plan({ capabilities: [64] }), { env: {}, tscKhz: () => null })).toThrow(/invalid capability number 64/);
  });

  it('security.seccompEnabled puts the VM process under the QEMU sandbox', () => {
    const o = normalizeBoxOptions({ rootfsPath: layout, security: { seccompEnabled: true } }, 4);
    expect(o.seccomp).toBe(true);
    expect(normalizeBoxOptions({ rootfsPath: layout, security: { seccompEnabled: false } }, 4).seccomp).toBeUndefined();
  });
});
