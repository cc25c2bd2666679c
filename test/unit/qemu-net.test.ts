import { describe, expect, it } from 'vitest';
import { GUEST_NET, STREAM_LINK, qemuArgs, type VmPlan } from '../../src/vmm/qemu.js';
import { netBackend, netConfig, vmPlan } from '../../src/runtime/box.js';
import { normalizeBoxOptions } from '../../src/runtime/options.js';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';

// The box's NIC: a `-netdev stream` socket to its own stack (default), or slirp behind
// BOXLITE_NET=slirp; and the NetConfig the runtime hands the shim.

const noHost = { env: {}, tscKhz: () => null };

function plan(nics: VmPlan['nics']): VmPlan {
  return {
    accel: 'tcg',
    arch: 'x86_64',
    resources: { cpus: 1, memoryMib: 256 },
    boot: { kernelPath: '/k/vmlinux', initrdPath: '/k/initrd', tscKhz: null },
    disks: [],
    shares: [],
    nics,
    console: { logPath: '/b/logs/console.log' },
    agent: { socketPath: '/b/agent.sock' },
  };
}

const opt = (args: string[], flag: string) => args[args.indexOf(flag) + 1];
const paths = { disk: '/h/b/disk.qcow2', agentSocket: '/h/b/agent.sock', consoleLog: '/h/b/logs/console.log', netSocket: '/h/b/net.sock', tunnelSocket: '/h/b/tunnel.sock' };
const assets = { kernelPath: '/r/vmlinux', initrdPath: '/r/initrd' };

describe('qemuArgs: the NIC', () => {
  it('a stream NIC connects to the stack socket (server=off) with the guest MAC and the large MTU, no hostfwd', () => {
    const { args } = qemuArgs(
      plan([{ kind: 'stream', socketPath: '/b/net,x.sock', mac: STREAM_LINK.guestMac, mtu: 65520, ports: [{ protocol: 'tcp', hostPort: 8080, guestPort: 80 }] }]),
      noHost,
    );
    expect(opt(args, '-netdev')).toBe('stream,id=net0,server=off,addr.type=unix,addr.path=/b/net,,x.sock');
    expect(args).toContain('virtio-net-device,netdev=net0,mac=52:54:00:12:34:56,host_mtu=65520');
    expect(args.join(' ')).not.toContain('hostfwd');
    // The guest's addressing is the same either way.
    expect(opt(args, '-append')).toContain(`boxlite.ip=${GUEST_NET.ip} boxlite.gw=${GUEST_NET.gateway}`);
  });

  it('a user NIC is slirp with its port forwards', () => {
    const { args } = qemuArgs(plan([{ kind: 'user', ports: [{ protocol: 'udp', hostPort: 5353, guestPort: 53 }] }]), noHost);
    expect(opt(args, '-netdev')).toMatch(/^user,id=net0,.*hostfwd=udp::5353-:53$/);
    expect(args).toContain('virtio-net-device,netdev=net0');
  });

  it('rejects a bad stream NIC with a configuration error', () => {
    const bad = (n: Partial<{ socketPath: string; mac: string; mtu: number }>) =>
      () => qemuArgs(plan([{ kind: 'stream', socketPath: '/b/net.sock', mac: STREAM_LINK.guestMac, mtu: 65520, ports: [], ...n }]), noHost);
    expect(bad({ socketPath: 'rel.sock' })).toThrow(/^configuration error: invalid network socket path/);
    expect(bad({ mac: '52:54:00:12:34' })).toThrow(/^configuration error: invalid MAC/);
    expect(bad({ mtu: 70000 })).toThrow(/^configuration error: invalid MTU/);
    expect(bad({ mtu: 100 })).toThrow(/^configuration error: invalid MTU/);
  });
});

describe('vmPlan + netConfig', () => {
  const options = normalizeBoxOptions({ rootfsPath: process.cwd(), ports: [{ hostPort: 0, guestPort: 80 }, { guestPort: 53, protocol: 'udp' }] }, 4);

  it('describes a stream NIC when the runtime gives it a socket, slirp otherwise', () => {
    const stream = vmPlan(options, paths, assets, 'tcg', false, { socketPath: paths.netSocket });
    expect(stream.nics).toEqual([
      {
        kind: 'stream',
        socketPath: '/h/b/net.sock',
        mac: STREAM_LINK.guestMac,
        mtu: 65520,
        ports: [
          { protocol: 'tcp', hostAddress: '127.0.0.1', hostPort: 0, guestPort: 80 },
          { protocol: 'udp', hostAddress: '127.0.0.1', hostPort: 0, guestPort: 53 },
        ],
      },
    ]);
    expect(vmPlan(options, paths, assets, 'tcg').nics[0]!.kind).toBe('user');
  });

  it('builds the NetConfig: link from GUEST_NET, sockets, ports, [] allowNet; none without a network', () => {
    const net = netConfig(options, paths, [], {})!;
    expect(net.link).toEqual({
      guestIp: '192.168.127.2',
      gatewayIp: '192.168.127.1',
      hostAliasIp: '192.168.127.254',
      prefixLength: 24,
      guestMac: STREAM_LINK.guestMac,
      gatewayMac: STREAM_LINK.gatewayMac,
      mtu: 65520,
    });
    expect([net.socketPath, net.tunnelSocketPath]).toEqual(['/h/b/net.sock', '/h/b/tunnel.sock']);
    expect(net.ports).toEqual([
      { hostIp: '127.0.0.1', hostPort: 0, guestPort: 80, protocol: 'tcp' },
      { hostIp: '127.0.0.1', hostPort: 0, guestPort: 53, protocol: 'udp' },
    ]);
    expect(net.allowNet).toEqual([]);
    expect(net.testSeam).toBeUndefined();
    const off = normalizeBoxOptions({ rootfsPath: process.cwd(), network: { outbound: { mode: 'disabled' } } }, 4);
    expect(netConfig(off, paths, [], {})).toBeUndefined();
  });

  it('BOXLITE_NET=slirp: no stack, and a policy or secrets are refused there', () => {
    expect(netBackend({})).toBe('stack');
    expect(netBackend({ BOXLITE_NET: 'slirp' })).toBe('slirp');
    expect(() => netBackend({ BOXLITE_NET: 'tap' })).toThrow(/^configuration error: BOXLITE_NET=tap/);
    expect(netConfig(options, paths, [], { BOXLITE_NET: 'slirp' })).toBeUndefined();
    const secret = { name: 'K', value: 'v', hosts: ['a.test'], placeholder: '<K>' };
    expect(() => netConfig(options, paths, [secret], { BOXLITE_NET: 'slirp' })).toThrow(/^configuration error: .*BOXLITE_NET=slirp/);
    expect(() => netConfig({ ...options, allowNet: ['a.test'] } as never, paths, [], { BOXLITE_NET: 'slirp' })).toThrow(/allowNet/);
  });

  it('reads the internal test seam named by BOXLITE_INTERNAL_NET_SEAM, and refuses a malformed one', () => {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'seam-'));
    try {
      const file = path.join(dir, 'seam.json');
      const seam = { names: { 'a.test': ['198.18.0.10'] }, dial: { '198.18.0.10:80': '127.0.0.1:1234' }, upstreamCa: ['PEM'] };
      fs.writeFileSync(file, JSON.stringify(seam));
      expect(netConfig(options, paths, [], { BOXLITE_INTERNAL_NET_SEAM: file })!.testSeam).toEqual(seam);
      fs.writeFileSync(file, JSON.stringify({ names: [] }));
      expect(() => netConfig(options, paths, [], { BOXLITE_INTERNAL_NET_SEAM: file })).toThrow(/^configuration error: BOXLITE_INTERNAL_NET_SEAM/);
      expect(() => netConfig(options, paths, [], { BOXLITE_INTERNAL_NET_SEAM: path.join(dir, 'none.json') })).toThrow(/ENOENT/);
    } finally {
      fs.rmSync(dir, { recursive: true, force: true });
    }
  });
});
