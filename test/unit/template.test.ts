import { describe, it, expect, beforeEach, afterEach } from 'vitest';
import { execFileSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { qemuArgs, type VmPlan } from '../../src/vmm/qemu.js';
import {
  TEMPLATE_FORMAT,
  fastStartEnabled,
  fastStartMode,
  findTemplate,
  planShape,
  restoreArgs,
  resumeWords,
  templateIneligible,
  templateKey,
  templatePlan,
  stripIgnoreShared,
  type TemplateKeyInputs,
} from '../../src/vmm/template.js';
import { diskVirtualBytes, launchWithFallback, removeStaleTemplates } from '../../src/runtime/faststart.js';
import { EngineError, AlreadyExistsError } from '../../src/errors/index.js';
import type { ShimConfig } from '../../src/shim/config.js';

function plan(over: Partial<VmPlan> = {}): VmPlan {
  return {
    accel: 'tcg',
    arch: 'x86_64',
    resources: { cpus: 1, memoryMib: 256 },
    boot: { kernelPath: '/k/vmlinux', initrdPath: '/k/initramfs.cpio', tscKhz: 2445406 },
    disks: [{ path: '/b/disk.qcow2', format: 'qcow2' }],
    shares: [],
    nics: [{ kind: 'stream', socketPath: '/b/net.sock', mac: '52:54:00:12:34:56', mtu: 65520, ports: [] }],
    console: { logPath: '/b/logs/console.log' },
    agent: { socketPath: '/b/agent.sock' },
    ...over,
  };
}

const inputs: TemplateKeyInputs = {
  kernelSha256: 'a'.repeat(64),
  initrdSha256: 'b'.repeat(64),
  qemu: '/usr/bin/qemu-system-x86_64:123:456',
  diskBytes: 1 << 30,
  imageDigest: 'sha256:' + 'c'.repeat(64),
};

/** The device arguments in order, with every path and per-box value blanked. */
function deviceLayout(p: VmPlan): string[] {
  const args = qemuArgs(p, { env: {}, tscKhz: () => null }).args;
  return args.flatMap((a, i) => (args[i - 1] === '-device' ? [a.replace(/=(\/[^,]*)/g, '=PATH')] : []));
}

describe('template key', () => {
  it('is stable and changes with every input and with the shape', () => {
    const k = templateKey(plan(), inputs);
    expect(k).toMatch(/^[0-9a-f]{32}$/);
    expect(templateKey(plan(), { ...inputs })).toBe(k);
    for (const over of [
      { kernelSha256: 'd'.repeat(64) },
      { initrdSha256: 'e'.repeat(64) },
      { qemu: 'other' },
      { diskBytes: 2 << 30 },
      { imageDigest: 'sha256:' + 'f'.repeat(64) },
    ]) {
      expect(templateKey(plan(), { ...inputs, ...over })).not.toBe(k);
    }
    expect(templateKey(plan({ resources: { cpus: 2, memoryMib: 256 } }), inputs)).not.toBe(k);
    expect(templateKey(plan({ resources: { cpus: 1, memoryMib: 512 } }), inputs)).not.toBe(k);
    expect(templateKey(plan({ nics: [] }), inputs)).not.toBe(k);
    expect(templateKey(plan({ shares: [{ hostPath: '/h', guestPath: '/g', readOnly: false }] }), inputs)).not.toBe(k);
  });

  it('ignores what a restore brings itself: paths, ports, main process, policy, confinement', () => {
    const k = templateKey(plan(), inputs);
    const other = plan({
      disks: [{ path: '/other/disk.qcow2', format: 'qcow2' }],
      nics: [{ kind: 'stream', socketPath: '/x/net.sock', mac: '52:54:00:12:34:56', mtu: 65520, ports: [{ protocol: 'tcp', hostPort: 80, guestPort: 80 }] }],
      console: { logPath: '/x/c.log' },
      agent: { socketPath: '/x/a.sock' },
      mainProcess: true,
      trust: true,
      guest: { capabilities: [0, 1], limits: { openFiles: 10 } },
      seccomp: true,
      jail: true,
    });
    expect(templateKey(other, inputs)).toBe(k);
    expect(planShape(other)).toEqual(planShape(plan()));
  });
});

describe('template plan', () => {
  it('has the box plan\'s device layout in the same order, every path in its own directory', () => {
    const box = plan({ shares: [{ hostPath: '/h/data', guestPath: '/data', readOnly: true }], controlSocketPath: '/b/qmp.sock' });
    const t = templatePlan(box, '/t');
    expect(deviceLayout(t)).toEqual(deviceLayout(box));
    const args = qemuArgs(t, { env: {}, tscKhz: () => null }).args;
    const hostSide = args.filter((_, i) => ['-drive', '-chardev', '-fsdev', '-netdev'].includes(args[i - 1]!));
    const paths = hostSide.join(' ').match(/(?<==)\/[^, ]+/g) ?? [];
    expect(paths.length).toBeGreaterThanOrEqual(6);
    for (const p of paths) expect(p).toMatch(/^\/t\//);
    expect(t.boot.extraCmdline).toEqual(['boxlite.template']);
    expect(t.mainProcess).toBeUndefined();
    expect(t.trust).toBeUndefined();
    expect(t.guest).toBeUndefined();
    expect(t.jail).toBeUndefined();
    expect(t.controlSocketPath).toBe('/t/qmp.sock');
  });

  it('restores from an inherited descriptor', () => {
    expect(restoreArgs(3)).toEqual(['-incoming', 'fd:3']);
  });
});

describe('RESUME words', () => {
  it("carry the box's own boot words, the host clock and fresh entropy", () => {
    const box = plan({ mainProcess: true, trust: true, guest: { capabilities: [0, 21], limits: { openFiles: 1024 } }, shares: [{ hostPath: '/h', guestPath: '/my data', readOnly: true }] });
    const w = resumeWords(box, 1_700_000_000_123_000_000n, Buffer.alloc(64, 0xab)).split(' ');
    expect(w).toContain('boxlite.root=/dev/vda');
    expect(w).toContain('boxlite.ip=192.168.127.2/24');
    expect(w).toContain('boxlite.main');
    expect(w).toContain('boxlite.trust');
    expect(w).toContain('boxlite.vol=0:ro:/my%20data');
    expect(w).toContain('boxlite.rlimit=nofile:1024');
    expect(w).toContain('boxlite.caps=200001');
    expect(w).toContain('boxlite.time=1700000000123000000');
    expect(w).toContain(`boxlite.seed=${'ab'.repeat(64)}`);
    // Only boxlite words: the kernel's own are the template's already.
    expect(w.every((x) => x.startsWith('boxlite.'))).toBe(true);
    expect(w).not.toContain('boxlite.template');
  });

  it('differ in seed from one restore to the next', () => {
    const seed = (s: string) => s.split(' ').find((x) => x.startsWith('boxlite.seed='));
    expect(seed(resumeWords(plan()))).not.toBe(seed(resumeWords(plan())));
  });
});

describe('switch and eligibility', () => {
  it('the mounted variant is on unless BOXLITE_FAST_START_MOUNTED=0; a bad value is a Config error', async () => {
    const { mountedTemplatesEnabled } = await import('../../src/runtime/faststart.js');
    expect(mountedTemplatesEnabled({})).toBe(true);
    for (const v of ['', '1', 'on', 'true']) expect(mountedTemplatesEnabled({ BOXLITE_FAST_START_MOUNTED: v })).toBe(true);
    for (const v of ['0', 'off', 'false']) expect(mountedTemplatesEnabled({ BOXLITE_FAST_START_MOUNTED: v })).toBe(false);
    expect(() => mountedTemplatesEnabled({ BOXLITE_FAST_START_MOUNTED: 'maybe' })).toThrow(/^configuration error: invalid BOXLITE_FAST_START_MOUNTED/);
  });

  it('is on unless BOXLITE_FAST_START=0; 1 makes the first box build, the default builds in the background', () => {
    expect(fastStartEnabled({})).toBe(true);
    expect(fastStartMode({})).toBe('auto');
    expect(fastStartMode({ BOXLITE_FAST_START: '' })).toBe('auto');
    expect(fastStartMode({ BOXLITE_FAST_START: 'auto' })).toBe('auto');
    for (const v of ['1', 'on', 'true', 'ON']) expect(fastStartMode({ BOXLITE_FAST_START: v })).toBe('eager');
    for (const v of ['0', 'off', 'false']) {
      expect(fastStartMode({ BOXLITE_FAST_START: v })).toBe('off');
      expect(fastStartEnabled({ BOXLITE_FAST_START: v })).toBe(false);
    }
    try {
      fastStartMode({ BOXLITE_FAST_START: 'maybe' });
      expect.unreachable();
    } catch (err) {
      expect((err as { code?: string }).code).toBe('Config');
      expect((err as Error).message).toMatch(/^configuration error: invalid BOXLITE_FAST_START "maybe": expected 0 \(off\), 1/);
    }
  });

  it('refuses what a template cannot carry', () => {
    expect(templateIneligible(plan())).toBeNull();
    expect(templateIneligible(plan({ nics: [] }))).toBeNull();
    expect(templateIneligible(plan({ nics: [{ kind: 'user', ports: [] }] }))).toMatch(/slirp/);
    expect(templateIneligible(plan({ arch: 'aarch64' }))).toMatch(/x86_64/);
    expect(templateIneligible(plan({ boot: { kernelPath: '/k', initrdPath: '/i', extraCmdline: 'boxlite.debug' } }))).toMatch(/command line/);
  });
});

describe('findTemplate', () => {
  let home: string;
  const key = '0123456789abcdef0123456789abcdef';
  beforeEach(() => {
    home = fs.mkdtempSync(path.join(os.tmpdir(), 'tmpl-'));
  });
  afterEach(() => fs.rmSync(home, { recursive: true, force: true }));

  function publish(state: Buffer, over: Record<string, unknown> = {}): string {
    const dir = path.join(home, 'templates', key);
    fs.mkdirSync(dir, { recursive: true });
    fs.writeFileSync(path.join(dir, 'state.bin'), state);
    const ram = Buffer.from('guest RAM');
    fs.writeFileSync(path.join(dir, 'ram.bin'), ram);
    const manifest = {
      format: TEMPLATE_FORMAT,
      key,
      createdAt: new Date().toISOString(),
      state: { file: 'state.bin', size: state.length, sha256: createHash('sha256').update(state).digest('hex') },
      ram: { file: 'ram.bin', size: ram.length, sha256: createHash('sha256').update(ram).digest('hex') },
      shape: {},
      inputs,
      bootMs: 1,
      saveMs: 1,
      ...over,
    };
    fs.writeFileSync(path.join(dir, 'manifest.json'), JSON.stringify(manifest));
    return dir;
  }

  it('returns a template whose state matches its manifest', async () => {
    const dir = publish(Buffer.from('QEVM state'));
    const ref = await findTemplate(home, key);
    expect(ref).toEqual({
      key,
      statePath: path.join(dir, 'state.bin'),
      size: 10,
      sha256: createHash('sha256').update('QEVM state').digest('hex'),
      ramPath: path.join(dir, 'ram.bin'),
    });
  });

  it('drops a template whose RAM file is missing, of another size or corrupted in place', async () => {
    for (const damage of [
      (d: string) => fs.rmSync(path.join(d, 'ram.bin')),
      (d: string) => fs.appendFileSync(path.join(d, 'ram.bin'), 'x'),
      (d: string) => fs.writeFileSync(path.join(d, 'ram.bin'), 'guest RAX'),
    ]) {
      const dir = publish(Buffer.from('QEVM state'));
      damage(dir);
      const logs: string[] = [];
      expect(await findTemplate(home, key, (l) => logs.push(l))).toBeNull();
      expect(logs.join()).toMatch(/RAM file/);
      expect(fs.existsSync(dir)).toBe(false);
    }
  });

  it('makes an x-ignore-shared stream loadable without the capability, and refuses any other layout', () => {
    const be32 = (n: number) => Buffer.from([n >>> 24, (n >>> 16) & 255, (n >>> 8) & 255, n & 255]);
    const be64 = (n: bigint) => {
      const b = Buffer.alloc(8);
      b.writeBigUInt64BE(n);
      return b;
    };
    const str = (s: string) => Buffer.concat([Buffer.from([s.length]), Buffer.from(s, 'latin1')]);
    const block = (id: string, size: bigint, addr: bigint) => Buffer.concat([str(id), be64(size), be64(addr)]);
    const head = Buffer.concat([Buffer.from('QEVM', 'latin1'), be32(3), Buffer.from([7]), be32(7), Buffer.from('microvm')]);
    const caps = Buffer.concat([Buffer.from([5]), str('configuration/capabilities'), be32(1), be32(1), str('x-ignore-shared')]);
    const ramStart = Buffer.concat([Buffer.from([1]), be32(2), str('ram'), be32(0), be32(4)]);
    const list = Buffer.concat([be64((0x20000000n + 0x1000n) | 4n), block('microvm.ram', 0x20000000n, 0n), block('pc.bios', 0x1000n, 0xfffff000n)]);
    const rest = Buffer.from('rest of the stream');
    const out = stripIgnoreShared(Buffer.concat([head, caps, ramStart, list, rest]));
    const want = Buffer.concat([head, ramStart, be64((0x20000000n + 0x1000n) | 4n), str('microvm.ram'), be64(0x20000000n), str('pc.bios'), be64(0x1000n), rest]);
    expect(out.equals(want)).toBe(true);
    // Not saved with x-ignore-shared (no capabilities subsection): refused, the build fails.
    expect(() => stripIgnoreShared(Buffer.concat([head, ramStart, list, rest]))).toThrow(/unexpected migration stream layout/);
  });

  it('is null for a missing template', async () => {
    expect(await findTemplate(home, key)).toBeNull();
  });

  it('drops a truncated state', async () => {
    const dir = publish(Buffer.alloc(4096, 1));
    fs.truncateSync(path.join(dir, 'state.bin'), 100);
    const logs: string[] = [];
    expect(await findTemplate(home, key, (l) => logs.push(l))).toBeNull();
    expect(logs.join()).toMatch(/100 bytes, expected 4096/);
    expect(fs.existsSync(dir)).toBe(false);
  });

  it('drops a state corrupted in place (same size)', async () => {
    const dir = publish(Buffer.alloc(4096, 1));
    expect(await findTemplate(home, key)).not.toBeNull();
    const fd = fs.openSync(path.join(dir, 'state.bin'), 'r+');
    fs.writeSync(fd, Buffer.from([2]), 0, 1, 2000);
    fs.closeSync(fd);
    const logs: string[] = [];
    expect(await findTemplate(home, key, (l) => logs.push(l))).toBeNull();
    expect(logs.join()).toMatch(/checksum mismatch/);
  });

  it('drops a template of another format, or whose state file name escapes it', async () => {
    publish(Buffer.from('x'), { format: TEMPLATE_FORMAT + 1 });
    expect(await findTemplate(home, key)).toBeNull();
    publish(Buffer.from('x'), { state: { file: '../../etc/passwd', size: 1, sha256: 'x' } });
    expect(await findTemplate(home, key)).toBeNull();
  });
});

describe('diskVirtualBytes', () => {
  it('reads a qcow2 header and a raw file size', async () => {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'tmpl-disk-'));
    try {
      const q = path.join(dir, 'd.qcow2');
      execFileSync('qemu-img', ['create', '-q', '-f', 'qcow2', q, '3221225472']);
      expect(await diskVirtualBytes(q)).toBe(3221225472);
      const r = path.join(dir, 'd.raw');
      fs.writeFileSync(r, Buffer.alloc(8192));
      expect(await diskVirtualBytes(r)).toBe(8192);
    } finally {
      fs.rmSync(dir, { recursive: true, force: true });
    }
  });
});

describe('launchWithFallback', () => {
  const base = { boxId: 'b', boxDir: '/b', plan: plan(), accelReason: '', agentTimeoutMs: 1, stopTimeoutMs: 1, detach: false } as ShimConfig;
  const ref = { key: 'k1', statePath: '/x', size: 1, sha256: 'y' };

  it('boots cold, and removes the template, when the restore fails', async () => {
    const home = fs.mkdtempSync(path.join(os.tmpdir(), 'tmpl-fb-'));
    fs.mkdirSync(path.join(home, 'templates', 'k1'), { recursive: true });
    const seen: Array<string | undefined> = [];
    const launched = await launchWithFallback(
      { ...base, template: ref },
      async (c) => {
        seen.push(c.template?.key);
        if (c.template) throw new EngineError('load of migration failed');
        return { state: { shimPid: 1 } } as never;
      },
      home,
    );
    expect(launched).toEqual({ state: { shimPid: 1 } });
    expect(seen).toEqual(['k1', undefined]);
    expect(fs.existsSync(path.join(home, 'templates', 'k1'))).toBe(false);
    fs.rmSync(home, { recursive: true, force: true });
  });

  it('passes AlreadyExists through (another process boots the box)', async () => {
    await expect(
      launchWithFallback({ ...base, template: ref }, async () => {
        throw new AlreadyExistsError('box b is being started');
      }, '/nonexistent'),
    ).rejects.toMatchObject({ code: 'AlreadyExists' });
  });
});

describe('removeStaleTemplates', () => {
  it('removes the templates of another kernel, agent or QEMU and keeps the current ones', async () => {
    const home = fs.mkdtempSync(path.join(os.tmpdir(), 'tmpl-gc-'));
    const put = (name: string, over: Partial<TemplateKeyInputs>) => {
      fs.mkdirSync(path.join(home, 'templates', name), { recursive: true });
      fs.writeFileSync(path.join(home, 'templates', name, 'manifest.json'), JSON.stringify({ inputs: { ...inputs, ...over } }));
    };
    put('a'.repeat(32), {});
    put('b'.repeat(32), { diskBytes: 5 }); // another shape of the same runtime: kept
    put('c'.repeat(32), { initrdSha256: 'old' });
    put('d'.repeat(32), { kernelSha256: 'old' });
    put('e'.repeat(32), { qemu: 'old' });
    fs.mkdirSync(path.join(home, 'templates', '.b-building'));
    const removed = await removeStaleTemplates(home, inputs);
    expect(removed.sort()).toEqual(['c'.repeat(32), 'd'.repeat(32), 'e'.repeat(32)]);
    expect(fs.readdirSync(path.join(home, 'templates')).sort()).toEqual(['.b-building', 'a'.repeat(32), 'b'.repeat(32)]);
    fs.rmSync(home, { recursive: true, force: true });
  });
});
