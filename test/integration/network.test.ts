import { spawn } from 'node:child_process';
import dgram from 'node:dgram';
import fs from 'node:fs';
import http from 'node:http';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, inject, it } from 'vitest';
import { ConfigError, JsBoxlite, NetworkError, type Box } from '../../dist/index.js';
import { run } from './helpers.js';
import { freePort } from '../fixtures/net.js';

// Networking through QEMU's slirp: outbound + host.boxlite.internal, published TCP and UDP
// ports, host port 0, busy ports, and a box without a NIC. The only network here is loopback.

let runtime: JsBoxlite;

/** Connects to 127.0.0.1:port and reads until the peer closes. */
function tcpRead(port: number): Promise<string> {
  return new Promise((resolve) => {
    const sock = net.connect(port, '127.0.0.1');
    let data = '';
    sock.setTimeout(3000, () => sock.destroy());
    sock.on('data', (c) => (data += c));
    sock.on('error', () => {});
    sock.on('close', () => resolve(data));
  });
}

/**
 * slirp accepts on the host port at once and closes when nothing listens in the guest yet,
 * so a server just started in the guest is polled until it answers.
 */
async function tcpPoll(port: number, want: string, ms = 30_000): Promise<string> {
  const deadline = Date.now() + ms;
  let last = '';
  while (Date.now() < deadline) {
    last = await tcpRead(port);
    if (last.includes(want)) return last;
    await new Promise((r) => setTimeout(r, 200));
  }
  return last;
}

async function udpPoll(port: number, payload: string, ms = 30_000): Promise<string> {
  const sock = dgram.createSocket('udp4');
  try {
    let timer: NodeJS.Timeout | undefined;
    return await new Promise<string>((resolve) => {
      const deadline = Date.now() + ms;
      sock.on('message', (m) => resolve(m.toString('utf8')));
      const send = () => {
        if (Date.now() > deadline) return resolve('');
        sock.send(payload, port, '127.0.0.1');
        timer = setTimeout(send, 300);
      };
      send();
    }).finally(() => clearTimeout(timer));
  } finally {
    sock.close();
  }
}

beforeAll(() => {
  runtime = new JsBoxlite({ homeDir: inject('home') });
});

describe('network enabled, published ports', () => {
  let box: Box;
  let fixedPort: number;
  let server: http.Server;
  let serverPort: number;

  beforeAll(async () => {
    fixedPort = await freePort();
    box = await runtime.create(
      {
        rootfsPath: inject('image'),
        network: { outbound: { mode: 'enabled' } },
        ports: [
          { hostPort: fixedPort, guestPort: 8080 },
          { guestPort: 8081, protocol: 'tcp' },
          { hostPort: 0, guestPort: 8082, hostIp: '127.0.0.1' },
        ],
      },
      `net-${process.pid}`,
    );
    server = http.createServer((req, res) => res.end(`host says hi to ${req.url}`));
    await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
    serverPort = (server.address() as net.AddressInfo).port;
    await box.start();
  });

  afterAll(async () => {
    if (box) await runtime.remove(box.id, true);
    server?.close();
  });

  it("has the reference's addressing: eth0 192.168.127.2/24 via .1, DNS .1, host.boxlite.internal .254", async () => {
    const r = await run(box, 'sh', [
      '-c',
      'ls /sys/class/net; grep host.boxlite.internal /etc/hosts; cat /etc/resolv.conf; ip -4 addr show dev eth0; ip route',
    ]);
    expect(r.exitCode).toBe(0);
    expect(r.stdout.split('\n')).toEqual(expect.arrayContaining(['eth0', 'lo']));
    expect(r.stdout).toMatch(/^192\.168\.127\.254\s+host\.boxlite\.internal$/m);
    expect(r.stdout).toMatch(/^nameserver 192\.168\.127\.1$/m);
    expect(r.stdout).toMatch(/inet 192\.168\.127\.2\/24 /);
    expect(r.stdout).toMatch(/^default via 192\.168\.127\.1 dev eth0/m);
  });

  it('routes outbound traffic through the gateway (a host server on a non-loopback address)', async () => {
    const external = Object.values(os.networkInterfaces())
      .flat()
      .find((a) => a && a.family === 'IPv4' && !a.internal)?.address;
    expect(external, 'this host needs a non-loopback IPv4 address for the test').toBeDefined();
    const outside = http.createServer((req, res) => res.end(`outside ${req.url}`));
    await new Promise<void>((r) => outside.listen(0, external, r));
    try {
      const port = (outside.address() as net.AddressInfo).port;
      const r = await run(box, 'wget', ['-qO-', `http://${external}:${port}/via-gateway`]);
      expect(r.stdout).toBe('outside /via-gateway');
      expect(r.exitCode).toBe(0);
    } finally {
      outside.close();
    }
  });

  it('reaches a host loopback server through host.boxlite.internal', async () => {
    const r = await run(box, 'wget', ['-qO-', `http://host.boxlite.internal:${serverPort}/from-guest`]);
    expect(r.stderr).toBe('');
    expect(r.stdout).toBe('host says hi to /from-guest');
    expect(r.exitCode).toBe(0);
  });

  it('reports the published ports, with host port 0 resolved, to any process', async () => {
    const ports = (await box.info()).network!.publishedPorts!;
    expect(ports).toHaveLength(3);
    expect(ports[0]).toEqual({ guestPort: 8080, hostIp: '127.0.0.1', hostPort: fixedPort, protocol: 'tcp' });
    for (const [i, guestPort] of [[1, 8081], [2, 8082]] as const) {
      expect(ports[i]).toMatchObject({ guestPort, hostIp: '127.0.0.1', protocol: 'tcp' });
      expect(ports[i]!.hostPort).toBeGreaterThan(0);
    }
    expect(new Set(ports.map((p) => p.hostPort)).size).toBe(3);
    // Another runtime (as another process would) reads them from the shim's state.
    const other = new JsBoxlite({ homeDir: inject('home') });
    expect((await other.getInfo(box.id))!.network!.publishedPorts).toEqual(ports);
  });

  it('forwards a host TCP port to a server in the guest', async () => {
    const nc = await box.exec('nc', ['-ll', '-p', '8080', '-e', 'echo', 'hello']);
    try {
      expect(await tcpPoll(fixedPort, 'hello')).toBe('hello\n');
      expect(await tcpRead(fixedPort)).toBe('hello\n'); // -ll: still serving
    } finally {
      await nc.kill();
    }
  });

  it('forwards host ports picked by the OS (hostPort 0 and absent)', async () => {
    const ports = (await box.info()).network!.publishedPorts!;
    const a = await box.exec('nc', ['-ll', '-p', '8081', '-e', 'echo', 'eighty-eighty-one']);
    const b = await box.exec('nc', ['-ll', '-p', '8082', '-e', 'echo', 'eighty-eighty-two']);
    try {
      expect(await tcpPoll(ports[1]!.hostPort, 'eighty')).toBe('eighty-eighty-one\n');
      expect(await tcpPoll(ports[2]!.hostPort, 'eighty')).toBe('eighty-eighty-two\n');
    } finally {
      await a.kill();
      await b.kill();
    }
  });
});

describe('UDP', () => {
  const python = path.join(inject('root'), '.cache', 'images', 'python');

  // busybox here has no UDP server (no nc -u, no udpsvd): the python test image (scripts/setup.sh) does.
  it('forwards a host UDP port to a server in the guest (python image from scripts/setup.sh)', async () => {
    const box = await runtime.create({ rootfsPath: python, ports: [{ guestPort: 9000, protocol: 'udp' }] });
    try {
      const echo = [
        'import socket',
        's = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)',
        "s.bind(('0.0.0.0', 9000))",
        'while True:',
        '    d, a = s.recvfrom(2048)',
        "    s.sendto(b'echo:' + d, a)",
      ].join('\n');
      const server = await box.exec('python3', ['-c', echo]);
      const [udp] = (await box.info()).network!.publishedPorts!;
      expect(udp).toMatchObject({ guestPort: 9000, hostIp: '127.0.0.1', protocol: 'udp' });
      expect(await udpPoll(udp!.hostPort, 'ping')).toBe('echo:ping');
      await server.kill();
    } finally {
      await runtime.remove(box.id, true);
    }
  });
});

describe('port errors', () => {
  it('fails with a NetworkError naming a busy host port, before QEMU starts', async () => {
    const busy = net.createServer();
    await new Promise<void>((r) => busy.listen(0, '127.0.0.1', r));
    const port = (busy.address() as net.AddressInfo).port;
    const box = await runtime.create({ rootfsPath: inject('image'), ports: [{ hostPort: port, guestPort: 80 }] });
    try {
      const err = await box.start().then(
        () => null,
        (e: unknown) => e,
      );
      expect(err).toBeInstanceOf(NetworkError);
      expect((err as Error).message).toMatch(new RegExp(`^network error: host port ${port} is already in use`));
      expect((await box.info()).state.status).toBe('failed');
      expect(fs.existsSync(path.join(inject('home'), 'boxes', box.id, 'logs', 'qemu.log'))).toBe(false); // QEMU never ran
    } finally {
      busy.close();
      await runtime.remove(box.id, true);
    }
  });

  it('rejects bad port specs and ports without a network with ConfigError', async () => {
    const bad = async (ports: unknown[], network?: object) =>
      runtime.create({ rootfsPath: inject('image'), ports: ports as never, network: network as never }).then(
        () => null,
        (e: unknown) => e,
      );
    const cases: Array<[unknown[], RegExp, object?]> = [
      [[{ guestPort: 0 }], /^configuration error: ports\[0\]\.guestPort must be between 1 and 65535, got 0/],
      [[{ guestPort: 80, hostPort: 65536 }], /^configuration error: ports\[0\]\.hostPort must be between 0 and 65535/],
      [[{ guestPort: 80, protocol: 'sctp' }], /^configuration error: ports\[0\]\.protocol must be "tcp" or "udp"/],
      [[{ guestPort: 80, hostIp: '::1' }], /^configuration error: ports\[0\]\.hostIp must be an IPv4 address/],
      [[{ guestPort: 80, hostPort: 9 }, { guestPort: 81, hostPort: 9 }], /^configuration error: ports\[1\]\.hostPort 9\/tcp is already used by ports\[0\]/],
      [[{ guestPort: 80 }], /^configuration error: ports cannot be published when the network is disabled/, { outbound: { mode: 'disabled' } }],
    ];
    for (const [ports, re, network] of cases) {
      const err = await bad(ports, network);
      expect(err).toBeInstanceOf(ConfigError);
      expect((err as Error).message).toMatch(re);
    }
  });
});

describe('network disabled', () => {
  for (const network of [{ outbound: { mode: 'disabled' as const } }, { mode: 'disabled' as const }]) {
    it(`has no NIC at all (${JSON.stringify(network)})`, async () => {
      const box = await runtime.create({ rootfsPath: inject('image'), network });
      try {
        const r = await run(box, 'sh', ['-c', 'ls /sys/class/net; echo ---; ip -o link; echo ---; ifconfig -a; echo ---; cat /etc/hosts']);
        const [ls, ip, ifconfig, hosts] = r.stdout.split('---\n');
        expect(ls).toBe('lo\n');
        expect(ip).not.toMatch(/eth0/);
        expect(ip).toMatch(/\blo\b/);
        expect(ifconfig).not.toMatch(/eth0/);
        expect(hosts).not.toMatch(/host\.boxlite\.internal/);
        const info = await box.info();
        expect(info.network).toMatchObject({ mode: 'disabled', outbound: { mode: 'disabled' }, publishedPorts: [] });
      } finally {
        await runtime.remove(box.id, true);
      }
    });
  }
});

describe('boxlite run -p', () => {
  it('publishes HOST:GUEST/tcp for the command it runs', async () => {
    const port = await freePort();
    const bin = path.join(inject('root'), 'dist', 'cli', 'main.js');
    const child = spawn(
      process.execPath,
      [bin, '--home', inject('home'), 'run', '--rm', '-p', `${port}:7070/tcp`, '--rootfs', inject('image'), '--', 'nc', '-l', '-p', '7070', '-e', 'echo', 'from-cli'],
      { stdio: ['ignore', 'pipe', 'pipe'] },
    );
    let stderr = '';
    child.stderr.on('data', (c) => (stderr += c));
    const exited = new Promise<number | null>((r) => child.on('close', r));
    try {
      // Connect only once the VM is up: a SYN that slirp sends before the guest has eth0 is
      // retransmitted later and could take nc's single connection after we gave up on it.
      const deadline = Date.now() + 60_000;
      const up = (i: Awaited<ReturnType<JsBoxlite['listInfo']>>[number]) => i.network?.publishedPorts?.[0]?.hostPort === port;
      while (!(await runtime.listInfo()).some(up) && Date.now() < deadline) {
        await new Promise((r) => setTimeout(r, 100));
      }
      expect(await tcpPoll(port, 'from-cli', 60_000)).toBe('from-cli\n');
      expect(await exited).toBe(0);
      expect(stderr).toBe('');
    } finally {
      child.kill('SIGKILL');
    }
  });

  it('rejects a malformed -p with a configuration error', async () => {
    const bin = path.join(inject('root'), 'dist', 'cli', 'main.js');
    const child = spawn(process.execPath, [bin, '--home', inject('home'), 'run', '--rm', '-p', '80:x', '--rootfs', inject('image'), 'true'], {
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    let stderr = '';
    child.stderr.on('data', (c) => (stderr += c));
    const code = await new Promise<number | null>((r) => child.on('close', r));
    expect(stderr).toMatch(/-p "80:x" is not \[\[HOST_IP:\]HOST:\]GUEST\[\/tcp\|udp\]/);
    expect(code).toBe(125);
  });
});
