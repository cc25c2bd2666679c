import { describe, expect, it } from 'vitest';
import { qemuArgs, type VmPlan } from '../../src/vmm/qemu.js';

// Host memory knobs of the QEMU command line (docs/perf.md): the TCG translation cache size.

const plan = (accel: VmPlan['accel']): VmPlan => ({
  accel,
  arch: 'x86_64',
  resources: { cpus: 1, memoryMib: 256 },
  boot: { kernelPath: '/k/vmlinux', initrdPath: '/k/initrd', tscKhz: null },
  disks: [],
  shares: [],
  nics: [],
  console: { logPath: '/b/logs/console.log' },
  agent: { socketPath: '/b/agent.sock' },
});
const accelOf = (env: NodeJS.ProcessEnv, accel: VmPlan['accel'] = 'tcg') => {
  const { args } = qemuArgs(plan(accel), { env, tscKhz: () => null });
  return args[args.indexOf('-accel') + 1];
};

describe('qemuArgs: BOXLITE_TCG_TB_MIB', () => {
  it("leaves QEMU's own translation cache size unless asked", () => {
    expect(accelOf({})).toBe('tcg');
    expect(accelOf({ BOXLITE_TCG_TB_MIB: '' })).toBe('tcg');
  });

  it('caps it under TCG only', () => {
    expect(accelOf({ BOXLITE_TCG_TB_MIB: '32' })).toBe('tcg,tb-size=32');
    expect(accelOf({ BOXLITE_TCG_TB_MIB: '0064' })).toBe('tcg,tb-size=64');
    expect(accelOf({ BOXLITE_TCG_TB_MIB: '32' }, 'kvm')).toBe('kvm');
  });

  it('rejects what is not a size in MiB with a ConfigError', () => {
    for (const bad of ['0', '-1', '32M', '1.5', '4096', '32,split-wx=on']) {
      expect(() => accelOf({ BOXLITE_TCG_TB_MIB: bad })).toThrow(
        expect.objectContaining({ code: 'Config', message: expect.stringContaining('invalid BOXLITE_TCG_TB_MIB') }),
      );
    }
  });
});
