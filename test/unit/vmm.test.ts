import { describe, it, expect } from 'vitest';
import { mkdtempSync, mkdirSync, writeFileSync, readFileSync, readdirSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { detectAccelerator, hostTscKhz, type AccelProbes } from '../../src/vmm/accel.js';
import { qemuArgs, buildKernelCmdline, qemuOptValue, type VmPlan } from '../../src/vmm/qemu.js';
import { vmPlan } from '../../src/runtime/box.js';
import { normalizeBoxOptions } from '../../src/runtime/options.js';
import { buildInitramfs, writeNewc } from '../../src/vmm/initramfs.js';

const noHost = { env: {}, tscKhz: () => null };

type PlanOver = Partial<Omit<VmPlan, 'resources' | 'boot'>> & { resources?: Partial<VmPlan['resources']>; boot?: Partial<VmPlan['boot']> };

function plan(over: PlanOver = {}): VmPlan {
  const { resources, boot, ...rest } = over;
  return {
    accel: 'tcg',
    arch: 'x86_64',
    resources: { cpus: 2, memoryMib: 512, ...resources },
    boot: { kernelPath: '/k/vmlinux', initrdPath: '/k/initramfs-abc.cpio', tscKhz: 2445406, ...boot },
    disks: [{ path: '/b/disk.qcow2', format: 'qcow2' }],
    shares: [],
    nics: [],
    console: { logPath: '/b/logs/console.log' },
    agent: { socketPath: '/b/agent.sock' },
    ...rest,
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

describe('qemuArgs (VM plan → QEMU argv)', () => {
  it('builds the measured TCG microvm recipe', () => {
    const { binary, args } = qemuArgs(plan(), noHost);
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
    const append = opt(qemuArgs(plan(), noHost).args, '-append')!.split(' ');
    expect(append).toContain('tsc_early_khz=2445406');
    expect(append).toContain('tsc=reliable');
    expect(append).toContain('no_timer_check');
  });

  it('reads the TSC rate from the host when the spec leaves it out', () => {
    const append = buildKernelCmdline(plan({ boot: { tscKhz: undefined } }), { tscKhz: () => 3000000 });
    expect(append).toContain('tsc_early_khz=3000000');
    const unknown = buildKernelCmdline(plan({ boot: { tscKhz: null } }), { tscKhz: () => 3000000 });
    expect(unknown).not.toContain('tsc_early_khz');
    expect(unknown).toContain('tsc=reliable');
  });

  it('uses KVM with the host CPU and no TSC workaround', () => {
    const { args } = qemuArgs(plan({ accel: 'kvm' }), noHost);
    expect(opt(args, '-accel')).toBe('kvm');
    expect(opt(args, '-cpu')).toBe('host');
    const append = opt(args, '-append')!;
    expect(append).not.toMatch(/tsc_early_khz|tsc=reliable|no_timer_check/);
  });

  it('wires the agent port as a socket client named boxlite.agent', () => {
    const { args } = qemuArgs(plan(), noHost);
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
    const { args } = qemuArgs(plan(), noHost);
    expect(opt(args, '-drive')).toBe('id=root,file=/b/disk.qcow2,format=qcow2,if=none,discard=unmap');
    expect(all(args, '-device')).toContain('virtio-blk-device,drive=root');
    const noDisk = qemuArgs(plan({ disks: [] }), noHost).args;
    expect(noDisk).not.toContain('-drive');
    expect(opt(noDisk, '-append')).not.toContain('boxlite.root');
  });

  it('shares volumes over virtio-9p and names them on the kernel command line', () => {
    const { args } = qemuArgs(
      plan({
        shares: [
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
    expect(qemuArgs(plan(), noHost).args).not.toContain('-fsdev');
  });

    it('has no NIC at all when the network is off', () => {
    const { args } = qemuArgs(plan(), noHost);
    expect(args).not.toContain('-netdev');
    expect(all(args, '-device').some((d) => d.startsWith('virtio-net'))).toBe(false);
    expect(opt(args, '-append')).not.toContain('boxlite.ip');
  });

  it('adds slirp with a fixed address and port forwards when the network is on', () => {
    const { args } = qemuArgs(
      plan({
        nics: [
          {
            kind: 'user',
            ports: [
              { protocol: 'tcp', hostPort: 8080, guestPort: 80 },
              { protocol: 'udp', hostAddress: '127.0.0.1', hostPort: 5353, guestPort: 53 },
            ],
          },
        ],
      }),
      noHost,
    );
    expect(opt(args, '-netdev')).toBe(
      'user,id=net0,net=192.168.127.0/24,host=192.168.127.254,dns=192.168.127.1,dhcpstart=192.168.127.2,hostfwd=tcp::8080-:80,hostfwd=udp:127.0.0.1:5353-:53',
    );
    expect(all(args, '-device')).toContain('virtio-net-device,netdev=net0');
    const append = opt(args, '-append')!.split(' ');
    expect(append).toEqual(
      expect.arrayContaining(['boxlite.ip=192.168.127.2/24', 'boxlite.gw=192.168.127.1', 'boxlite.dns=192.168.127.1', 'boxlite.host=192.168.127.254']),
    );
  });

  it('adds QMP, seccomp and extra kernel arguments on request', () => {
    const { args } = qemuArgs(
      plan({ controlSocketPath: '/b/qmp.sock', seccomp: true, boot: { extraCmdline: ['loglevel=7', 'foo=bar'] } }),
      noHost,
    );
    expect(all(args, '-chardev')).toContain('socket,id=qmp,path=/b/qmp.sock,server=on,wait=off');
    expect(opt(args, '-mon')).toBe('chardev=qmp,mode=control');
    expect(opt(args, '-sandbox')).toBe('on,obsolete=deny,elevateprivileges=deny,spawn=deny,resourcecontrol=deny');
    expect(opt(args, '-append')).toMatch(/ loglevel=7 foo=bar$/);
  });

  it('attaches further disks in order after the root, read-only ones with readonly=on', () => {
    const { args } = qemuArgs(
      plan({ disks: [{ path: '/b/disk.qcow2', format: 'qcow2' }, { path: '/b/base.ext4', format: 'raw', readOnly: true }] }),
      noHost,
    );
    expect(all(args, '-drive')).toEqual([
      'id=root,file=/b/disk.qcow2,format=qcow2,if=none,discard=unmap',
      'id=disk1,file=/b/base.ext4,format=raw,if=none,discard=unmap,readonly=on',
    ]);
    expect(all(args, '-device')).toEqual(expect.arrayContaining(['virtio-blk-device,drive=root', 'virtio-blk-device,drive=disk1']));
    expect(() => qemuArgs(plan({ nics: [{ kind: 'user', ports: [] }, { kind: 'user', ports: [] }] }), noHost)).toThrow(/at most one network interface/);
  });

  it("describes a box's options as a plan: resources, root disk, shares, one NIC with its ports, console, agent", () => {
    const options = normalizeBoxOptions(
      {
        rootfsPath: process.cwd(),
        cpus: 3,
        memoryMib: 768,
        volumes: [{ hostPath: process.cwd(), guestPath: '/src', readOnly: true }],
        ports: [{ hostPort: 8080, guestPort: 80 }],
      },
      4,
    );
    const paths = { disk: '/h/boxes/x/disk.qcow2', agentSocket: '/h/boxes/x/agent.sock', consoleLog: '/h/boxes/x/logs/console.log' };
    const p = vmPlan(options, paths, { kernelPath: '/r/vmlinux', initrdPath: '/r/initramfs.cpio' }, 'kvm');
    expect(p).toEqual({
      accel: 'kvm',
      resources: { cpus: 3, memoryMib: 768 },
      boot: { kernelPath: '/r/vmlinux', initrdPath: '/r/initramfs.cpio', tscKhz: null },
      disks: [{ path: paths.disk, format: 'qcow2' }],
      shares: [{ hostPath: process.cwd(), guestPath: '/src', readOnly: true }],
      nics: [{ kind: 'user', ports: [{ protocol: 'tcp', hostAddress: '127.0.0.1', hostPort: 8080, guestPort: 80 }] }],
      console: { logPath: paths.consoleLog },
      agent: { socketPath: paths.agentSocket },
    });
    const off = vmPlan(normalizeBoxOptions({ rootfsPath: process.cwd(), network: { outbound: { mode: 'disabled' } } }, 4), paths, p.boot, 'tcg');
    expect(off.nics).toEqual([]);
    expect(off.boot.tscKhz === null || off.boot.tscKhz! > 0).toBe(true);
  });

  it('escapes commas in paths inside option strings', () => {
    expect(qemuOptValue('/a,b/c')).toBe('/a,,b/c');
    const { args } = qemuArgs(plan({ agent: { socketPath: '/x,y/agent.sock' } }), noHost);
    expect(all(args, '-chardev')).toContain('socket,id=agent,path=/x,,y/agent.sock');
  });

  it('honours BOXLITE_QEMU and an explicit binary', () => {
    expect(qemuArgs(plan(), { ...noHost, env: { BOXLITE_QEMU: '/opt/q/qemu' } }).binary).toBe('/opt/q/qemu');
    expect(qemuArgs(plan({ binary: '/usr/bin/q' }), { ...noHost, env: { BOXLITE_QEMU: '/opt/q/qemu' } }).binary).toBe('/usr/bin/q');
  });

  it('targets virt + hvf on arm64 macOS', () => {
    const { binary, args } = qemuArgs(plan({ accel: 'hvf', arch: 'aarch64' }), noHost);
    expect(binary).toBe('qemu-system-aarch64');
    expect(opt(args, '-M')).toMatch(/^virt/);
    expect(opt(args, '-accel')).toBe('hvf');
    expect(opt(args, '-append')).toContain('console=ttyAMA0');
  });

  it('rejects invalid resources with a configuration error', () => {
    expect(() => qemuArgs(plan({ resources: { cpus: 0 } }), noHost)).toThrow(/^configuration error: /);
    expect(() => qemuArgs(plan({ resources: { memoryMib: 1.5 } }), noHost)).toThrow(/^configuration error: /);
    expect(() =>
      qemuArgs(plan({ nics: [{ kind: 'user', ports: [{ protocol: 'tcp', hostPort: 70000, guestPort: 80 }] }] }), noHost),
    ).toThrow(/^configuration error: invalid port/);
    expect(() =>
      qemuArgs(plan({ nics: [{ kind: 'user', ports: [{ protocol: 'tcp', hostAddress: 'a,b', hostPort: 1, guestPort: 80 }] }] }), noHost),
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
