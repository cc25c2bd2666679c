import { describe, it, expect } from 'vitest';
import { mkdtempSync, mkdirSync, writeFileSync, readFileSync, readdirSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { detectAccelerator, hostTscKhz, type AccelProbes } from '../../src/vmm/accel.js';
import { buildQemuCommand, buildKernelCmdline, qemuOptValue, type QemuSpec } from '../../src/vmm/qemu.js';
import { buildInitramfs, writeNewc } from '../../src/vmm/initramfs.js';
import { locateGuestAssets } from '../../src/vmm/assets.js';

const noHost = { env: {}, tscKhz: () => null };

function spec(over: Partial<QemuSpec> = {}): QemuSpec {
  return {
    accel: 'tcg',
    cpus: 2,
    memoryMib: 512,
    kernelPath: '/k/vmlinux',
    initrdPath: '/k/initramfs-abc.cpio',
    rootDiskPath: '/b/disk.qcow2',
    agentSocketPath: '/b/agent.sock',
    consoleLogPath: '/b/logs/console.log',
    network: null,
    tscKhz: 2445406,
    arch: 'x86_64',
    ...over,
  };
}

/** Value following `flag` (first occurrence). */
function opt(args: string[], flag: string): string | undefined {
  const i = args.indexOf(flag);
  return i >= 0 ? args[i + 1] : undefined;
}
function all(args: string[], flag: string): string[] {
  return args.flatMap((a, i) => (a === flag ? [args[i + 1]!] : []));
}

describe('buildQemuCommand', () => {
  it('builds the measured TCG microvm recipe', () => {
    const { binary, args } = buildQemuCommand(spec(), noHost);
    expect(binary).toBe('qemu-system-x86_64');
    expect(opt(args, '-M')).toBe('microvm,acpi=on,rtc=on');
    for (const f of ['-nodefaults', '-no-user-config', '-nographic', '-no-reboot']) expect(args).toContain(f);
    expect(opt(args, '-accel')).toBe('tcg');
    expect(opt(args, '-cpu')).toBe('max,-erms,-fsrm');
    expect(opt(args, '-smp')).toBe('2');
    expect(opt(args, '-m')).toBe('512');
    expect(opt(args, '-kernel')).toBe('/k/vmlinux');
    expect(opt(args, '-initrd')).toBe('/k/initramfs-abc.cpio');
    const append = opt(args, '-append')!.split(' ');
    for (const w of ['console=ttyS0', 'quiet', 'panic=-1', 'cryptomgr.notests', 'mitigations=off', 'nokaslr', 'boxlite.root=/dev/vda']) {
      expect(append).toContain(w);
    }
  });

  it('passes the host TSC rate under TCG', () => {
    const append = opt(buildQemuCommand(spec(), noHost).args, '-append')!.split(' ');
    expect(append).toContain('tsc_early_khz=2445406');
    expect(append).toContain('tsc=reliable');
    expect(append).toContain('no_timer_check');
  });

  it('reads the TSC rate from the host when the spec leaves it out', () => {
    const append = buildKernelCmdline(spec({ tscKhz: undefined }), { tscKhz: () => 3000000 });
    expect(append).toContain('tsc_early_khz=3000000');
    const unknown = buildKernelCmdline(spec({ tscKhz: null }), { tscKhz: () => 3000000 });
    expect(unknown).not.toContain('tsc_early_khz');
    expect(unknown).toContain('tsc=reliable');
  });

  it('uses KVM with the host CPU and no TSC workaround', () => {
    const { args } = buildQemuCommand(spec({ accel: 'kvm' }), noHost);
    expect(opt(args, '-accel')).toBe('kvm');
    expect(opt(args, '-cpu')).toBe('host');
    const append = opt(args, '-append')!;
    expect(append).not.toMatch(/tsc_early_khz|tsc=reliable|no_timer_check/);
  });

  it('wires the agent port as a socket client named boxlite.agent', () => {
    const { args } = buildQemuCommand(spec(), noHost);
    const chardevs = all(args, '-chardev');
    expect(chardevs).toContain('socket,id=agent,path=/b/agent.sock');
    expect(chardevs.find((c) => c.startsWith('socket,id=agent'))).not.toMatch(/server/);
    const devices = all(args, '-device');
    expect(devices).toContain('virtio-serial-device');
    expect(devices).toContain('virtserialport,chardev=agent,name=boxlite.agent');
    expect(chardevs).toContain('file,id=console,path=/b/logs/console.log,append=on');
    expect(opt(args, '-serial')).toBe('chardev:console');
  });

  it('attaches the qcow2 overlay as virtio-blk on virtio-mmio', () => {
    const { args } = buildQemuCommand(spec(), noHost);
    expect(opt(args, '-drive')).toBe('id=root,file=/b/disk.qcow2,format=qcow2,if=none,discard=unmap');
    expect(all(args, '-device')).toContain('virtio-blk-device,drive=root');
    const noDisk = buildQemuCommand(spec({ rootDiskPath: null }), noHost).args;
    expect(noDisk).not.toContain('-drive');
    expect(opt(noDisk, '-append')).not.toContain('boxlite.root');
  });

  it('shares volumes over virtio-9p and names them on the kernel command line', () => {
    const { args } = buildQemuCommand(
      spec({
        volumes: [
          { hostPath: '/h/data', guestPath: '/data', readOnly: false },
          { hostPath: '/h/a,b', guestPath: '/mnt/my dir:x', readOnly: true },
        ],
      }),
      noHost,
    );
    expect(all(args, '-fsdev')).toEqual([
      'local,id=v0,path=/h/data,security_model=mapped-xattr',
      'local,id=v1,path=/h/a,,b,security_model=mapped-xattr,readonly=on',
    ]);
    expect(all(args, '-device')).toContain('virtio-9p-device,fsdev=v0,mount_tag=boxlite-v0');
    expect(all(args, '-device')).toContain('virtio-9p-device,fsdev=v1,mount_tag=boxlite-v1');
    const append = opt(args, '-append')!.split(' ');
    expect(append).toContain('boxlite.vol=0:rw:/data');
    expect(append).toContain('boxlite.vol=1:ro:/mnt/my%20dir%3Ax');
    expect(buildQemuCommand(spec(), noHost).args).not.toContain('-fsdev');
  });

    it('has no NIC at all when the network is off', () => {
    const { args } = buildQemuCommand(spec({ network: null }), noHost);
    expect(args).not.toContain('-netdev');
    expect(all(args, '-device').some((d) => d.startsWith('virtio-net'))).toBe(false);
    expect(opt(args, '-append')).not.toContain('boxlite.ip');
  });

  it('adds slirp with a fixed address and port forwards when the network is on', () => {
    const { args } = buildQemuCommand(
      spec({
        network: {
          hostfwd: [
            { protocol: 'tcp', hostPort: 8080, guestPort: 80 },
            { protocol: 'udp', hostAddress: '127.0.0.1', hostPort: 5353, guestPort: 53 },
          ],
        },
      }),
      noHost,
    );
    expect(opt(args, '-netdev')).toBe(
      'user,id=net0,net=10.0.2.0/24,host=10.0.2.2,dns=10.0.2.3,hostfwd=tcp::8080-:80,hostfwd=udp:127.0.0.1:5353-:53',
    );
    expect(all(args, '-device')).toContain('virtio-net-device,netdev=net0');
    const append = opt(args, '-append')!.split(' ');
    expect(append).toEqual(expect.arrayContaining(['boxlite.ip=10.0.2.15/24', 'boxlite.gw=10.0.2.2', 'boxlite.dns=10.0.2.3']));
  });

  it('adds QMP, seccomp and extra kernel arguments on request', () => {
    const { args } = buildQemuCommand(
      spec({ qmpSocketPath: '/b/qmp.sock', seccomp: true, extraCmdline: ['loglevel=7', 'foo=bar'] }),
      noHost,
    );
    expect(all(args, '-chardev')).toContain('socket,id=qmp,path=/b/qmp.sock,server=on,wait=off');
    expect(opt(args, '-mon')).toBe('chardev=qmp,mode=control');
    expect(opt(args, '-sandbox')).toBe('on,obsolete=deny,elevateprivileges=deny,spawn=deny,resourcecontrol=deny');
    expect(opt(args, '-append')).toMatch(/ loglevel=7 foo=bar$/);
  });

  it('escapes commas in paths inside option strings', () => {
    expect(qemuOptValue('/a,b/c')).toBe('/a,,b/c');
    const { args } = buildQemuCommand(spec({ agentSocketPath: '/x,y/agent.sock' }), noHost);
    expect(all(args, '-chardev')).toContain('socket,id=agent,path=/x,,y/agent.sock');
  });

  it('honours BOXLITE_QEMU and an explicit binary', () => {
    expect(buildQemuCommand(spec(), { ...noHost, env: { BOXLITE_QEMU: '/opt/q/qemu' } }).binary).toBe('/opt/q/qemu');
    expect(buildQemuCommand(spec({ binary: '/usr/bin/q' }), { ...noHost, env: { BOXLITE_QEMU: '/opt/q/qemu' } }).binary).toBe('/usr/bin/q');
  });

  it('targets virt + hvf on arm64 macOS', () => {
    const { binary, args } = buildQemuCommand(spec({ accel: 'hvf', arch: 'aarch64' }), noHost);
    expect(binary).toBe('qemu-system-aarch64');
    expect(opt(args, '-M')).toMatch(/^virt/);
    expect(opt(args, '-accel')).toBe('hvf');
    expect(opt(args, '-append')).toContain('console=ttyAMA0');
  });

  it('rejects invalid resources with a configuration error', () => {
    expect(() => buildQemuCommand(spec({ cpus: 0 }), noHost)).toThrow(/^configuration error: /);
    expect(() => buildQemuCommand(spec({ memoryMib: 1.5 }), noHost)).toThrow(/^configuration error: /);
    expect(() =>
      buildQemuCommand(spec({ network: { hostfwd: [{ protocol: 'tcp', hostPort: 70000, guestPort: 80 }] } }), noHost),
    ).toThrow(/^configuration error: invalid port/);
    expect(() =>
      buildQemuCommand(spec({ network: { hostfwd: [{ protocol: 'tcp', hostAddress: 'a,b', hostPort: 1, guestPort: 80 }] } }), noHost),
    ).toThrow(/^configuration error: invalid host address/);
  });
});

function probes(over: { platform?: NodeJS.Platform; files?: string[]; openError?: string }): Partial<AccelProbes> {
  const files = new Set(over.files ?? []);
  return {
    platform: over.platform ?? 'linux',
    exists: (p) => files.has(p),
    openReadWrite: () => {
      if (over.openError) throw Object.assign(new Error(over.openError), { code: over.openError });
    },
  };
}

describe('detectAccelerator', () => {
  it('treats a nested PVM host as having no usable KVM', () => {
    const a = detectAccelerator({}, probes({ files: ['/dev/kvm', '/sys/module/kvm_pvm'] }));
    expect(a.kind).toBe('tcg');
    expect(a.reason).toBe('KVM is a nested PVM hypervisor (/sys/module/kvm_pvm), which cannot boot stock kernels');
  });

  it('uses KVM when /dev/kvm opens read-write', () => {
    expect(detectAccelerator({}, probes({ files: ['/dev/kvm'] }))).toEqual({ kind: 'kvm', reason: '/dev/kvm is usable' });
  });

  it('falls back to TCG without /dev/kvm or without access to it', () => {
    const missing = detectAccelerator({}, probes({ files: [] }));
    expect(missing.kind).toBe('tcg');
    expect(missing.reason).toMatch(/\/dev\/kvm does not exist/);
    const denied = detectAccelerator({}, probes({ files: ['/dev/kvm'], openError: 'EACCES' }));
    expect(denied.kind).toBe('tcg');
    expect(denied.reason).toMatch(/EACCES.*kvm group/);
  });

  it('uses HVF on macOS', () => {
    expect(detectAccelerator({}, probes({ platform: 'darwin' })).kind).toBe('hvf');
  });

  it('honours BOXLITE_ACCEL and validates it', () => {
    const pvm = probes({ files: ['/dev/kvm', '/sys/module/kvm_pvm'] });
    expect(detectAccelerator({ BOXLITE_ACCEL: 'kvm' }, pvm)).toEqual({ kind: 'kvm', reason: 'forced by BOXLITE_ACCEL=kvm' });
    expect(detectAccelerator({ BOXLITE_ACCEL: 'tcg' }, probes({ files: ['/dev/kvm'] })).kind).toBe('tcg');
    expect(detectAccelerator({ BOXLITE_ACCEL: 'auto' }, pvm).kind).toBe('tcg');
    expect(() => detectAccelerator({ BOXLITE_ACCEL: 'xen' }, pvm)).toThrow(/^configuration error: BOXLITE_ACCEL/);
    expect(() => detectAccelerator({ BOXLITE_ACCEL: 'hvf' }, pvm)).toThrow(/^configuration error: /);
    try {
      detectAccelerator({ BOXLITE_ACCEL: 'bogus' }, pvm);
    } catch (err) {
      expect((err as { code?: string }).code).toBe('Config');
    }
  });
});

describe('hostTscKhz', () => {
  const none = { readFile: () => null, kernelLog: () => null };
  it('prefers sysfs', () => {
    expect(hostTscKhz({ ...none, readFile: (p) => (p.endsWith('tsc_freq_khz') ? '2100000\n' : null) })).toBe(2100000);
  });
  it('reads the kernel log, refined calibration first', () => {
    const log = '[0.0] tsc: Detected 2445.406 MHz processor\n[1.2] tsc: Refined TSC clocksource calibration: 2445.399 MHz\n';
    expect(hostTscKhz({ ...none, kernelLog: () => log })).toBe(2445399);
    expect(hostTscKhz({ ...none, kernelLog: () => '6,12,0,-;tsc: Detected 2445.406 MHz processor\n' })).toBe(2445406);
    expect(hostTscKhz({ ...none, kernelLog: () => 'tsc: Detected 2400.000 MHz processor\ntsc: Detected 2399.968 MHz TSC\n' })).toBe(2399968);
  });
  it('falls back to cpu MHz only with constant_tsc', () => {
    const cpuinfo = (flags: string) => (p: string) => (p === '/proc/cpuinfo' ? `cpu MHz\t\t: 2445.406\nflags\t\t: fpu ${flags} sse\n` : null);
    expect(hostTscKhz({ ...none, readFile: cpuinfo('constant_tsc nonstop_tsc') })).toBe(2445406);
    expect(hostTscKhz({ ...none, readFile: cpuinfo('tsc') })).toBeNull();
  });
});

describe('initramfs', () => {
  function fixture() {
    const dir = mkdtempSync(join(tmpdir(), 'vmm-test-'));
    const kernelDir = join(dir, 'kernel');
    mkdirSync(join(kernelDir, 'modules'), { recursive: true });
    writeFileSync(join(kernelDir, 'modules', '02-b.ko'), 'module b');
    writeFileSync(join(kernelDir, 'modules', '01-a.ko'), 'module a!');
    writeFileSync(join(kernelDir, 'vmlinux'), 'kernel');
    writeFileSync(join(kernelDir, 'kernel.json'), JSON.stringify({ version: '6.1.192-2', kernel: 'vmlinux', files: {} }));
    const agent = join(dir, 'agent');
    writeFileSync(agent, '#!agent');
    return { dir, kernelDir, agent };
  }

  /** Minimal newc reader for the assertions. */
  function readNewc(buf: Buffer) {
    const out: Array<{ name: string; mode: number; uid: number; gid: number; rmaj: number; rmin: number; data: string }> = [];
    let off = 0;
    for (;;) {
      expect(buf.toString('ascii', off, off + 6)).toBe('070701');
      const f = (i: number) => parseInt(buf.toString('ascii', off + 6 + i * 8, off + 14 + i * 8), 16);
      const [mode, uid, gid, size, rmaj, rmin, nameSize] = [1, 2, 3, 6, 9, 10, 11].map(f) as [number, number, number, number, number, number, number];
      const name = buf.toString('utf8', off + 110, off + 110 + nameSize - 1);
      off += 110 + nameSize;
      off += (4 - (off % 4)) % 4;
      const data = buf.toString('utf8', off, off + size);
      off += size + ((4 - (size % 4)) % 4);
      if (name === 'TRAILER!!!') break;
      out.push({ name, mode, uid, gid, rmaj, rmin, data });
    }
    return out;
  }

  it('writes a root-owned newc archive with /init, modules in order and the mount points', async () => {
    const { dir, kernelDir, agent } = fixture();
    try {
      const path = await buildInitramfs({ agentBinary: agent, kernelDir, outDir: join(dir, 'init') });
      expect(path).toMatch(/initramfs-[0-9a-f]{16}\.cpio$/);
      const buf = readFileSync(path);
      expect(buf.length % 512).toBe(0);
      const entries = readNewc(buf);
      const byName = new Map(entries.map((e) => [e.name, e]));
      expect(entries.every((e) => e.uid === 0 && e.gid === 0)).toBe(true);
      expect(byName.get('init')).toMatchObject({ mode: 0o100755, data: '#!agent' });
      for (const d of ['proc', 'sys', 'dev', 'run', 'mnt/root', 'tmp', 'lib/boxlite/modules']) {
        expect(byName.get(d)?.mode! & 0o170000).toBe(0o040000);
      }
      expect(byName.get('dev/console')).toMatchObject({ mode: 0o020600, rmaj: 5, rmin: 1 });
      const mods = entries.filter((e) => e.name.startsWith('lib/boxlite/modules/')).map((e) => e.name);
      expect(mods).toEqual(['lib/boxlite/modules/01-a.ko', 'lib/boxlite/modules/02-b.ko']);
      expect(byName.get('lib/boxlite/modules/01-a.ko')?.data).toBe('module a!');
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });

  it('reuses an unchanged build and rebuilds when the agent changes', async () => {
    const { dir, kernelDir, agent } = fixture();
    try {
      const outDir = join(dir, 'init');
      const a = await buildInitramfs({ agentBinary: agent, kernelDir, outDir });
      const b = await buildInitramfs({ agentBinary: agent, kernelDir, outDir });
      expect(b).toBe(a);
      writeFileSync(agent, '#!agent v2');
      const c = await buildInitramfs({ agentBinary: agent, kernelDir, outDir });
      expect(c).not.toBe(a);
      expect(readdirSync(outDir).filter((f) => f.includes('.tmp-'))).toEqual([]);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });

  it('is deterministic', () => {
    const e = [{ path: 'init', type: 'file' as const, perm: 0o755, data: Buffer.from('x') }];
    expect(writeNewc(e).equals(writeNewc(e))).toBe(true);
    expect(() => writeNewc([{ path: '../etc', type: 'dir', perm: 0o755 }])).toThrow();
  });
});

describe('locateGuestAssets', () => {
  it('finds the kernel from kernel.json and builds the initramfs', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'vmm-home-'));
    try {
      const kdir = join(dir, 'init', 'kernel');
      mkdirSync(join(kdir, 'modules'), { recursive: true });
      writeFileSync(join(kdir, 'vmlinux'), 'k');
      writeFileSync(join(kdir, 'kernel.json'), JSON.stringify({ version: '6.1.192-2', kernel: 'vmlinux' }));
      writeFileSync(join(dir, 'agent'), 'a');
      const assets = await locateGuestAssets(dir, join(dir, 'agent'));
      expect(assets.kernelPath).toBe(join(kdir, 'vmlinux'));
      expect(assets.kernelVersion).toBe('6.1.192-2');
      expect(assets.initrdPath.startsWith(join(dir, 'init', 'initramfs-'))).toBe(true);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });

  it('tells the user to run setup when the kernel is missing', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'vmm-home-'));
    try {
      await expect(locateGuestAssets(dir, join(dir, 'agent'))).rejects.toThrow(
        /^engine reported an error: guest kernel not found at .*; run `npm run setup`$/,
      );
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});
