import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { execFileSync } from 'node:child_process';
import { describe, expect, it } from 'vitest';
import { jailArgs, locateBwrap, qcow2BackingChain, type JailHost } from '../../src/vmm/jail.js';
import type { VmPlan } from '../../src/vmm/plan.js';

const plan: VmPlan = {
  accel: 'tcg',
  arch: 'x86_64',
  resources: { cpus: 1, memoryMib: 512 },
  boot: { kernelPath: '/rt/vmlinux', initrdPath: '/rt/initramfs.cpio' },
  disks: [{ path: '/h/boxes/b1/disk.qcow2', format: 'qcow2' }],
  shares: [
    { hostPath: '/data/in', guestPath: '/in', readOnly: true },
    { hostPath: '/data/out', guestPath: '/out', readOnly: false },
  ],
  nics: [],
  console: { logPath: '/h/boxes/b1/logs/console.log' },
  agent: { socketPath: '/h/boxes/b1/agent.sock' },
};
const host: JailHost = {
  topLevel: (p) => ({ '/bin': 'usr/bin', '/lib': 'usr/lib', '/sbin': null })[p] as string | null | undefined,
  backingChain: (p) => (p === '/h/boxes/b1/disk.qcow2' ? ['/h/images/rootfs/abc.ext4'] : []),
};

/** The [flag, path] pairs of the bind options, in order. */
function binds(args: string[]): string[][] {
  return args.flatMap((a, i) => (a === '--bind' || a === '--ro-bind' ? [[a, args[i + 1]!]] : []));
}

describe('jailArgs (QEMU in bubblewrap)', () => {
  it('wraps the QEMU argv unchanged, unprivileged, in fresh namespaces but the network', () => {
    const { binary, args } = jailArgs('/usr/bin/bwrap', { binary: 'qemu-system-x86_64', args: ['-M', 'microvm'] }, plan, 3, host);
    expect(binary).toBe('/usr/bin/bwrap');
    expect(args.slice(args.indexOf('--'))).toEqual(['--', 'qemu-system-x86_64', '-M', 'microvm']);
    for (const f of ['--die-with-parent', '--unshare-all', '--unshare-user', '--as-pid-1', '--clearenv']) expect(args).toContain(f);
    // The host network only for slirp, which opens host sockets inside QEMU; none for the stack's NIC.
    expect(args).not.toContain('--share-net');
    const nic = (n: (typeof plan)['nics'][number]) => jailArgs('/b', { binary: 'q', args: [] }, { ...plan, nics: [n] }, 3, host).args;
    expect(nic({ kind: 'user', ports: [] })).toContain('--share-net');
    expect(nic({ kind: 'stream', socketPath: '/h/boxes/b1/net.sock', mac: '52:54:00:12:34:56', mtu: 65520, ports: [] })).not.toContain('--share-net');
    expect(args.join(' ')).toContain('--uid 65534 --gid 65534 --info-fd 3');
    expect(args.join(' ')).toContain('--symlink usr/bin /bin --ro-bind /sbin /sbin --symlink usr/lib /lib');
    expect(args).not.toContain('/dev/kvm');
    expect(jailArgs('/b', { binary: 'q', args: [] }, { ...plan, accel: 'kvm' }, 3, host).args.join(' ')).toContain('--dev-bind /dev/kvm /dev/kvm');
  });

  it('exposes exactly the files of the plan: read-only inputs, writable disk, volumes and box directories', () => {
    const b = binds(jailArgs('/usr/bin/bwrap', { binary: '/opt/qemu/bin/qemu', args: [] }, plan, 3, host).args);
    expect(b[0]).toEqual(['--ro-bind', '/usr']);
    expect(new Set(b.slice(1).map((x) => x.join(' ')))).toEqual(
      new Set([
        '--ro-bind /sbin',
        '--ro-bind /opt/qemu/bin/qemu',
        '--ro-bind /rt/vmlinux',
        '--ro-bind /rt/initramfs.cpio',
        '--ro-bind /h/images/rootfs/abc.ext4',
        '--ro-bind /data/in',
        '--bind /data/out',
        '--bind /h/boxes/b1/disk.qcow2',
        '--bind /h/boxes/b1/logs',
        '--bind /h/boxes/b1',
      ]),
    );
    // a directory is bound before the files inside it, so it cannot hide them
    const order = b.map((x) => x[1]);
    expect(order.indexOf('/h/boxes/b1')).toBeLessThan(order.indexOf('/h/boxes/b1/disk.qcow2'));
  });
});

describe('qcow2BackingChain', () => {
  it('follows relative and absolute backing files, nearest first', () => {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'jail-chain-'));
    try {
      const base = path.join(dir, 'base.raw');
      fs.writeFileSync(base, Buffer.alloc(1024 * 1024));
      execFileSync('qemu-img', ['create', '-q', '-f', 'qcow2', '-b', 'base.raw', '-F', 'raw', path.join(dir, 'mid.qcow2')]);
      execFileSync('qemu-img', ['create', '-q', '-f', 'qcow2', '-b', path.join(dir, 'mid.qcow2'), '-F', 'qcow2', path.join(dir, 'top.qcow2')]);
      expect(qcow2BackingChain(path.join(dir, 'top.qcow2'))).toEqual([path.join(dir, 'mid.qcow2'), base]);
      expect(qcow2BackingChain(base)).toEqual([]);
      expect(qcow2BackingChain(path.join(dir, 'missing.qcow2'))).toEqual([]);
    } finally {
      fs.rmSync(dir, { recursive: true, force: true });
    }
  });

  it('refuses a BOXLITE_BWRAP that is not executable', () => {
    expect(() => locateBwrap({ BOXLITE_BWRAP: '/nonexistent/bwrap' })).toThrow('BOXLITE_BWRAP=/nonexistent/bwrap is not an executable file');
  });
});
