import dgram from 'node:dgram';
import net from 'node:net';
import { describe, expect, it } from 'vitest';
import { parsePublishFlag } from '../../src/cli/ports.js';
import { NetworkError } from '../../src/errors/index.js';
import { normalizeBoxOptions } from '../../src/runtime/options.js';
import { hostForwardFailure, publishedPorts, resolveHostPorts } from '../../src/shim/ports.js';

const layout = process.cwd(); // any existing path serves as rootfsPath here

describe('port options', () => {
  it('applies the JsPortSpec defaults', () => {
    const o = normalizeBoxOptions({ rootfsPath: layout, ports: [{ guestPort: 80 }, { hostPort: 5353, guestPort: 53, protocol: 'udp', hostIp: '0.0.0.0' }] }, 4);
    expect(o.ports).toEqual([
      { hostPort: 0, guestPort: 80, protocol: 'tcp', hostIp: '127.0.0.1' },
      { hostPort: 5353, guestPort: 53, protocol: 'udp', hostIp: '0.0.0.0' },
    ]);
    expect(normalizeBoxOptions({ rootfsPath: layout }, 4).ports).toEqual([]);
  });

  it('allows one host port for tcp and udp, and several "any" ports', () => {
    const o = normalizeBoxOptions(
      { rootfsPath: layout, ports: [{ hostPort: 53, guestPort: 53 }, { hostPort: 53, guestPort: 53, protocol: 'udp' }, { guestPort: 1 }, { guestPort: 2, hostPort: 0 }] },
      4,
    );
    expect(o.ports).toHaveLength(4);
  });

  it('names the field and the range in ConfigErrors', () => {
    const err = (ports: unknown[], network?: object) => {
      try {
        normalizeBoxOptions({ rootfsPath: layout, ports: ports as never, network: network as never }, 4);
      } catch (e) {
        return (e as Error).message;
      }
      return 'no error';
    };
    expect(err([{ guestPort: 65536 }])).toBe('configuration error: ports[0].guestPort must be between 1 and 65535, got 65536');
    expect(err([{ guestPort: 1.5 }])).toBe('configuration error: ports[0].guestPort must be an integer, got 1.5');
    expect(err([{ guestPort: 1, hostPort: -1 }])).toBe('configuration error: ports[0].hostPort must be between 0 and 65535 (0: any free port), got -1');
    expect(err([{ guestPort: 1, protocol: 'icmp' }])).toBe('configuration error: ports[0].protocol must be "tcp" or "udp", got "icmp"');
    expect(err([{ guestPort: 1, hostIp: '300.1.1.1' }])).toBe('configuration error: ports[0].hostIp must be an IPv4 address, got "300.1.1.1"');
    expect(err([{ guestPort: 1, hostPort: 8080 }, { guestPort: 2, hostPort: 8080, protocol: 'tcp' }])).toBe(
      'configuration error: ports[1].hostPort 8080/tcp is already used by ports[0]',
    );
    expect(err([{ guestPort: 1 }], { mode: 'disabled' })).toBe('configuration error: ports cannot be published when the network is disabled');
  });
});

describe('host ports', () => {
  it('picks distinct free ports for hostPort 0 and keeps explicit ones', async () => {
    const free = await resolveHostPorts([
      { protocol: 'tcp', hostAddress: '127.0.0.1', hostPort: 0, guestPort: 1 },
      { protocol: 'tcp', hostAddress: '127.0.0.1', hostPort: 0, guestPort: 2 },
      { protocol: 'udp', hostAddress: '127.0.0.1', hostPort: 0, guestPort: 3 },
    ]);
    expect(free.every((f) => f.hostPort > 0)).toBe(true);
    expect(free[0]!.hostPort).not.toBe(free[1]!.hostPort);
    const again = await resolveHostPorts(free);
    expect(again).toEqual(free);
    expect(publishedPorts(free)[2]).toEqual({ guestPort: 3, hostIp: '127.0.0.1', hostPort: free[2]!.hostPort, protocol: 'udp' });
  });

  it('raises a NetworkError naming a busy TCP or UDP port', async () => {
    const server = net.createServer();
    await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
    const tcpPort = (server.address() as net.AddressInfo).port;
    const udp = dgram.createSocket('udp4');
    await new Promise<void>((r) => udp.bind(0, '127.0.0.1', r));
    const udpPort = udp.address().port;
    try {
      for (const [protocol, port, host] of [['tcp', tcpPort, '127.0.0.1'], ['tcp', tcpPort, '0.0.0.0'], ['udp', udpPort, '127.0.0.1']] as const) {
        const err = await resolveHostPorts([{ protocol, hostAddress: host, hostPort: port, guestPort: 80 }]).catch((e: unknown) => e);
        expect(err).toBeInstanceOf(NetworkError);
        expect((err as Error).message).toMatch(new RegExp(`^network error: host port ${port} is already in use`));
      }
    } finally {
      server.close();
      udp.close();
    }
  });

  it("maps QEMU's host forwarding failure to a NetworkError naming the port", () => {
    const log = "qemu-system-x86_64: -netdev user,id=net0,hostfwd=tcp:127.0.0.1:8080-:80: Could not set up host forwarding rule 'tcp:127.0.0.1:8080-:80'";
    const err = hostForwardFailure(log);
    expect(err).toBeInstanceOf(NetworkError);
    expect(err!.message).toMatch(/^network error: host port 8080 is already in use/);
    expect(hostForwardFailure('qemu-system-x86_64: some other failure')).toBeUndefined();
  });
});

describe('boxlite run -p', () => {
  it('parses [[HOST_IP:]HOST:]GUEST[/tcp|udp]', () => {
    expect(parsePublishFlag('8080')).toEqual({ guestPort: 8080, protocol: 'tcp' });
    expect(parsePublishFlag('9000:80')).toEqual({ hostPort: 9000, guestPort: 80, protocol: 'tcp' });
    expect(parsePublishFlag(':80/udp')).toEqual({ guestPort: 80, protocol: 'udp' });
    expect(parsePublishFlag('0.0.0.0:53:53/udp')).toEqual({ hostIp: '0.0.0.0', hostPort: 53, guestPort: 53, protocol: 'udp' });
    expect(() => parsePublishFlag('80/sctp')).toThrow(/^configuration error: -p "80\/sctp"/);
    expect(() => parsePublishFlag('a:80')).toThrow(/configuration error/);
  });
});
