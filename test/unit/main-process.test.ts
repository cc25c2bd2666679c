// The main process on the host side, without a VM (docs/decisions/0003-main-process.md): which
// boxes have one, what the VM plan and kernel command line say, the attach control op.
import { describe, expect, it } from 'vitest';
import { vmPlan } from '../../src/runtime/box.js';
import { defaultCommand } from '../../src/runtime/image.js';
import { normalizeBoxOptions } from '../../src/runtime/options.js';
import { buildKernelCmdline } from '../../src/vmm/qemu.js';
import { parseControlRequest } from '../../src/shim/control.js';
import { execFeatures, EXEC_FLAG_MAIN } from '../../src/protocol/features.js';
import { decode, encode, Feature } from '../../src/protocol/codec.js';

const paths = { disk: '/b/disk.qcow2', agentSocket: '/b/agent.sock', consoleLog: '/b/logs/console.log' };
const assets = { kernelPath: '/r/vmlinux', initrdPath: '/r/initramfs.cpio' };

describe('the main process (host side)', () => {
  it("is the image's Entrypoint + Cmd after the overrides; entrypoint: [] makes an exec-only box", () => {
    const image = { Entrypoint: ['/init'], Cmd: ['--serve'] };
    expect(defaultCommand(image, {})).toEqual(['/init', '--serve']);
    expect(defaultCommand(image, { cmd: ['sh'] })).toEqual(['/init', 'sh']);
    expect(defaultCommand(image, { entrypoint: [] })).toEqual([]);
    expect(defaultCommand({ Cmd: ['python3'] }, {})).toEqual(['python3']);
    expect(defaultCommand({}, {})).toEqual([]);
  });

  it('puts boxlite.main on the kernel command line of a box that has one, and only then', () => {
    const o = normalizeBoxOptions({ rootfsPath: process.cwd() }, 4);
    const withMain = vmPlan(o, paths, assets, 'tcg', true);
    expect(withMain.mainProcess).toBe(true);
    expect(buildKernelCmdline({ ...withMain, boot: { ...withMain.boot, tscKhz: null } }).split(' ')).toContain('boxlite.main');
    const execOnly = vmPlan(o, paths, assets, 'tcg');
    expect(execOnly.mainProcess).toBeUndefined();
    expect(buildKernelCmdline({ ...execOnly, boot: { ...execOnly.boot, tscKhz: null } })).not.toMatch(/boxlite\.main/);
  });

  it('encodes the MAIN EXEC flag, which needs the agent feature MAIN', () => {
    const m = { type: 'EXEC', stream: 1, flags: EXEC_FLAG_MAIN, rows: 0, cols: 0, timeoutMs: 0, user: '', cwd: '/', argv: ['sh'], env: [] } as const;
    expect(decode(encode(m))).toMatchObject({ flags: 4, argv: ['sh'] });
    expect(execFeatures(m) & Feature.MAIN).toBe(Feature.MAIN);
  });

  it('parses the attach control op (tty only when true)', () => {
    expect(parseControlRequest(Buffer.from('{"op":"attach","tty":true}'))).toEqual({ op: 'attach', tty: true });
    expect(parseControlRequest(Buffer.from('{"op":"attach","tty":"yes"}'))).toEqual({ op: 'attach' });
  });
});
