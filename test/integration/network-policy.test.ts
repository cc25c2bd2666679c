import path from 'node:path';
import { afterAll, beforeAll, describe, expect, inject, it } from 'vitest';
import { JsBoxlite, type Box } from '../../dist/index.js';
import { boxlite, run, scratchHome } from './helpers.js';
import { seamForMany, startNetServers, writeSeam, type NetServers, withSeamFile } from '../fixtures/netservers.js';

// network.allowNet end to end in a real VM (python image, which also carries busybox's ip,
// route, nslookup). All traffic stays on 127.0.0.1: the seam maps the test names and the
// 198.18.0.0/15 addresses to two fixture server sets, labelled so that a test can tell which
// upstream a flow really reached. 169.254.169.254 is mapped too, so only the policy stands
// between the guest and a "metadata" server.

const python = path.join(inject('root'), '.cache', 'images', 'python');

const ALLOW = ['*.allowed.test', 'exact.test', '198.18.0.20', '198.18.1.0/24'];

let runtime: JsBoxlite;
let allowed: NetServers; // label "allowed": the servers of the allowed names
let other: NetServers; // label "other": unlisted names and IPs, the metadata address
let box: Box;

/** Runs python3 -c in the box; the script's last stdout line is JSON. */
async function py(script: string): Promise<any> {
  const r = await run(box, 'python3', ['-c', script]);
  expect(r.stderr, `python failed (exit ${r.exitCode})`).toBe('');
  expect(r.exitCode).toBe(0);
  return JSON.parse(r.stdout.trim().split('\n').pop()!);
}

// Probes shared by the scripts: every failure is reported as "ERR <exception class>".
const PRELUDE = (ca: string) => `
import socket, ssl, json, http.client, struct, random, time
CA = ${JSON.stringify(ca)}
def err(e): return 'ERR ' + type(e).__name__
def tcp(ip, port, data=b'ping', t=15):
    try:
        s = socket.create_connection((ip, port), timeout=t)
        s.sendall(data); s.shutdown(socket.SHUT_WR)
        got = b''
        while True:
            d = s.recv(65536)
            if not d: break
            got += d
        s.close(); return got.decode(errors='replace')
    except Exception as e: return err(e)
def udp(ip, port, data=b'ping', t=3):
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); s.settimeout(t)
    try:
        s.connect((ip, port)); s.send(data); return s.recv(2048).decode()
    except Exception as e: return err(e)
    finally: s.close()
def resolve(n):
    try: return socket.gethostbyname(n)
    except Exception as e: return err(e)
def server_of(raw):
    body = raw.split(b'\\r\\n\\r\\n', 1)[1] if b'\\r\\n\\r\\n' in raw else raw
    return json.loads(body)['server']
def http_get(ip, host, path='/', port=80):
    try:
        s = socket.create_connection((ip, port), timeout=15)
        s.sendall(('GET %s HTTP/1.1\\r\\nHost: %s\\r\\nConnection: close\\r\\n\\r\\n' % (path, host)).encode())
        raw = b''
        while True:
            d = s.recv(65536)
            if not d: break
            raw += d
        return server_of(raw)
    except Exception as e: return err(e)
def https_get(ip, sni, path='/'):
    try:
        ctx = ssl.create_default_context(cadata=CA)
        s = ctx.wrap_socket(socket.create_connection((ip, 443), timeout=15), server_hostname=sni)
        s.sendall(('GET %s HTTP/1.1\\r\\nHost: %s\\r\\nConnection: close\\r\\n\\r\\n' % (path, sni)).encode())
        raw = b''
        while True:
            d = s.recv(65536)
            if not d: break
            raw += d
        return server_of(raw)
    except Exception as e: return err(e)
def dns_query(server, name, qtype=1):
    qid = random.randint(0, 65535)
    q = struct.pack('>HHHHHH', qid, 0x0100, 1, 0, 0, 0) + b''.join(bytes([len(l)]) + l.encode() for l in name.split('.')) + b'\\0' + struct.pack('>HH', qtype, 1)
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); s.settimeout(5)
    try:
        s.sendto(q, (server, 53)); r, a = s.recvfrom(2048)
        an = struct.unpack('>H', r[6:8])[0]
        ips = [socket.inet_ntoa(r[i + 12:i + 16]) for i in range(len(q), len(r) - 15, 16)][:an]
        return {'from': a[0], 'rcode': r[3] & 15, 'ips': ips}
    except Exception as e: return err(e)
    finally: s.close()
`;

beforeAll(async () => {
  runtime = new JsBoxlite({ homeDir: inject('home') });
  allowed = await startNetServers({ label: 'allowed' });
  other = await startNetServers({ label: 'other' });
  const seam = seamForMany([
    { names: ['api.allowed.test'], ips: ['198.18.0.10'], servers: allowed },
    { names: ['deep.sub.allowed.test'], ips: ['198.18.0.11'], servers: allowed },
    { names: ['allowed.test'], ips: ['198.18.0.12'], servers: allowed },
    { names: ['exact.test'], ips: ['198.18.0.13'], servers: allowed },
    { names: ['other.test'], ips: ['198.18.0.20'], servers: other },
    { names: ['blocked.test'], ips: ['198.18.0.21'], servers: other },
    { ips: ['198.18.1.5', '198.18.2.5', '169.254.169.254'], servers: other },
  ]);
  const seamFile = writeSeam(scratchHome('seam-'), seam);
  box = await runtime.create(
    {
      rootfsPath: python,
      network: { outbound: { mode: 'enabled', allowNet: ALLOW } },
      // Root with NET_ADMIN (routes) and NET_RAW (raw sockets): the bypass attempts below.
      advanced: { capabilities: { add: ['NET_ADMIN', 'NET_RAW'] } },
    },
    `netpolicy-${process.pid}`,
  );
  await withSeamFile(seamFile, () => box.start());
}, 240_000);

afterAll(async () => {
  if (box) await runtime.remove(box.id, true).catch(() => {});
  await allowed?.close();
  await other?.close();
});

describe('network.allowNet in a real VM', () => {
  it('names, wildcard depth/apex, IPs, CIDRs, pins, forged SNI/Host, metadata', async () => {
    const before = await box.metrics();
    // busybox wget: by name through the policy; a refused name does not even resolve.
    const w = await run(box, 'sh', ['-c', 'timeout 30 wget -q -O - http://api.allowed.test/wget; echo "rc=$?"; timeout 30 wget -q -O - http://blocked.test/wget-blocked 2>&1; echo "rc=$?"']);
    expect(w.stdout).toMatch(/"server":"allowed"[\s\S]*rc=0/);
    expect(w.stdout).toMatch(/bad address 'blocked\.test'[\s\S]*rc=1\s*$/);
    const out = await py(
      PRELUDE(allowed.testCa.certPem) +
        `
out = {}
out['pin_before'] = tcp('198.18.0.11', 7)          # an allowed name's IP, not answered yet
out['dns'] = {n: resolve(n) for n in ['api.allowed.test', 'deep.sub.allowed.test', 'allowed.test', 'exact.test', 'blocked.test', 'other.test', 'host.boxlite.internal']}
out['pin_after'] = tcp('198.18.0.11', 7)           # now pinned by this box's DNS answer
out['ip_rule'] = tcp('198.18.0.20', 7)
out['cidr_rule'] = tcp('198.18.1.5', 7)
out['cidr_outside'] = tcp('198.18.2.5', 7)
out['udp_ip_rule'] = udp('198.18.0.20', 7)
out['udp_unlisted'] = udp('198.18.2.5', 7)
out['metadata'] = http_get('169.254.169.254', 'metadata', '/meta')
out['http_name'] = http_get('198.18.0.10', 'api.allowed.test', '/by-name')
out['http_exact'] = http_get('198.18.0.13', 'exact.test', '/exact')
out['http_apex'] = http_get('198.18.0.12', 'allowed.test', '/apex')
out['http_blocked'] = http_get('198.18.0.21', 'blocked.test', '/blocked-host')
out['http_forged'] = http_get('198.18.0.21', 'api.allowed.test', '/forged-host')
out['https_name'] = https_get('198.18.0.10', 'api.allowed.test', '/tls-by-name')
out['https_forged'] = https_get('198.18.0.21', 'api.allowed.test', '/forged-sni')
out['https_blocked_sni'] = https_get('198.18.0.10', 'blocked.test', '/blocked-sni')
print(json.dumps(out))`,
    );
    expect(out.pin_before).toBe('ERR ConnectionRefusedError');
    expect(out.dns).toEqual({
      'api.allowed.test': '198.18.0.10',
      'deep.sub.allowed.test': '198.18.0.11',
      'allowed.test': 'ERR gaierror',
      'exact.test': '198.18.0.13',
      'blocked.test': 'ERR gaierror',
      'other.test': 'ERR gaierror',
      'host.boxlite.internal': '192.168.127.254',
    });
    expect(out.pin_after).toBe('ping');
    expect(out.ip_rule).toBe('ping');
    expect(out.cidr_rule).toBe('ping');
    expect(out.cidr_outside).toBe('ERR ConnectionRefusedError');
    expect(out.udp_ip_rule).toBe('ping');
    expect(out.udp_unlisted).toMatch(/^ERR (ConnectionRefusedError|TimeoutError|timeout)$/);
    expect(out.metadata).toBe('ERR ConnectionRefusedError');
    expect(out.http_name).toBe('allowed');
    expect(out.http_exact).toBe('allowed');
    expect(out.http_apex).toMatch(/^ERR /);
    expect(out.http_blocked).toMatch(/^ERR /);
    // The guest chose the "other" address; the stack dialed the allowed NAME instead.
    expect(out.http_forged).toBe('allowed');
    expect(out.https_name).toBe('allowed');
    expect(out.https_forged).toBe('allowed');
    expect(out.https_blocked_sni).toMatch(/^ERR /);
    // Upstream view: "other" never saw an HTTP(S) request; "allowed" saw the forged ones.
    expect(other.requests.map((r) => r.url)).toEqual([]);
    expect(allowed.requests.map((r) => r.url).sort()).toEqual(['/by-name', '/exact', '/forged-host', '/forged-sni', '/tls-by-name', '/wget']);
    expect(allowed.requests.find((r) => r.url === '/forged-sni')?.servername).toBe('api.allowed.test');
    const after = await box.metrics();
    // Refused flows: pin_before, cidr_outside, metadata, apex, blocked host, blocked SNI (+ retries).
    expect((after.networkTcpErrors ?? 0) - (before.networkTcpErrors ?? 0)).toBeGreaterThanOrEqual(6);
    // inspect shows the policy and what it refused, by reason, and the pinned names.
    const insp = await box.inspect();
    expect(insp.config.allowNet).toEqual(ALLOW);
    expect(insp.network?.outbound.allowNet).toEqual(ALLOW);
    expect(insp.network?.allowNet).toEqual(ALLOW);
    const flows = (insp.networkStats?.snapshot as any)?.flows;
    expect(flows.allowNet).toEqual(ALLOW);
    expect(flows.blocked).toMatchObject({ 'not-allowed': expect.any(Number), metadata: 1, 'name-not-allowed': expect.any(Number) });
    expect(flows.pins.map((p: { name: string }) => p.name)).toEqual(expect.arrayContaining(['api.allowed.test', 'deep.sub.allowed.test', 'exact.test']));
    expect(insp.networkStats?.counters.dnsNxdomain).toBeGreaterThanOrEqual(3);
  }, 180_000);

  it('guest root gains nothing: another resolver in resolv.conf, direct queries, routes, raw sockets', async () => {
    const echoBefore = other.stats.tcpEchoConnections;
    const r = await run(box, 'sh', ['-c', 'echo nameserver 8.8.8.8 > /etc/resolv.conf && ip route add 198.18.2.0/24 dev eth0 && ip route add 8.8.8.8 dev eth0 && nslookup blocked.test 8.8.8.8; echo "rc=$?"; nslookup api.allowed.test 1.1.1.1']);
    // busybox nslookup asked 8.8.8.8 / 1.1.1.1 directly: our stack answered for both.
    expect(r.stdout).toMatch(/NXDOMAIN|can't find/i);
    expect(r.stdout).toMatch(/rc=1/);
    expect(r.stdout).toMatch(/198\.18\.0\.10/);
    const out = await py(
      PRELUDE(allowed.testCa.certPem) +
        `
out = {}
out['resolv'] = {n: resolve(n) for n in ['api.allowed.test', 'blocked.test']}
out['direct'] = {'blocked': dns_query('1.1.1.1', 'blocked.test'), 'allowed': dns_query('9.9.9.9', 'api.allowed.test'), 'aaaa': dns_query('8.8.8.8', 'api.allowed.test', 28)}
def dns_tcp(server, name):
    q = struct.pack('>HHHHHH', 9, 0x0100, 1, 0, 0, 0) + b''.join(bytes([len(l)]) + l.encode() for l in name.split('.')) + b'\\0' + struct.pack('>HH', 1, 1)
    try:
        s = socket.create_connection((server, 53), timeout=10); s.sendall(struct.pack('>H', len(q)) + q)
        r = b''
        while len(r) < 2 or len(r) < 2 + struct.unpack('>H', r[:2])[0]:
            d = s.recv(4096)
            if not d: break
            r += d
        return {'rcode': r[5] & 15, 'an': struct.unpack('>H', r[8:10])[0]}
    except Exception as e: return err(e)
out['dns_tcp'] = {'blocked': dns_tcp('8.8.8.8', 'blocked.test'), 'allowed': dns_tcp('8.8.8.8', 'api.allowed.test')}
out['routed'] = tcp('198.18.2.5', 7)
# A SYN built by hand on a raw socket to an unlisted address: the answer is our RST, never a SYN-ACK.
def raw_syn(dst, dport):
    s = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_TCP); s.settimeout(5)
    src = '192.168.127.2'; sport = random.randint(20000, 60000); seq = random.randint(0, 2**32 - 1)
    hdr = struct.pack('>HHIIBBHHH', sport, dport, seq, 0, 5 << 4, 0x02, 64240, 0, 0)
    pseudo = socket.inet_aton(src) + socket.inet_aton(dst) + struct.pack('>BBH', 0, 6, len(hdr))
    data = pseudo + hdr; c = sum(struct.unpack('>%dH' % (len(data) // 2), data))
    while c >> 16: c = (c & 0xffff) + (c >> 16)
    hdr = hdr[:16] + struct.pack('>H', ~c & 0xffff) + hdr[18:]
    s.sendto(hdr, (dst, 0))
    end = time.time() + 5
    while time.time() < end:
        try: pkt = s.recv(2048)
        except Exception as e: return err(e)
        ihl = (pkt[0] & 15) * 4
        if socket.inet_ntoa(pkt[12:16]) != dst: continue
        sp, dp = struct.unpack('>HH', pkt[ihl:ihl + 4])
        if sp == dport and dp == sport: return {'rst': bool(pkt[ihl + 13] & 4), 'synack': pkt[ihl + 13] & 0x12 == 0x12}
    return 'ERR none'
out['raw'] = raw_syn('198.18.0.21', 7)
print(json.dumps(out))`,
    );
    expect(out.resolv).toEqual({ 'api.allowed.test': '198.18.0.10', 'blocked.test': 'ERR gaierror' });
    // Answers "from" the resolver the guest asked, written by our stack.
    expect(out.direct.blocked).toEqual({ from: '1.1.1.1', rcode: 3, ips: [] });
    expect(out.direct.allowed).toEqual({ from: '9.9.9.9', rcode: 0, ips: ['198.18.0.10'] });
    expect(out.direct.aaaa).toEqual({ from: '8.8.8.8', rcode: 0, ips: [] });
    expect(out.dns_tcp).toEqual({ blocked: { rcode: 3, an: 0 }, allowed: { rcode: 0, an: 1 } });
    expect(out.routed).toBe('ERR ConnectionRefusedError');
    expect(out.raw).toEqual({ rst: true, synack: false });
    expect(other.stats.tcpEchoConnections).toBe(echoBefore);
    expect(other.requests).toEqual([]);
  }, 180_000);

  it('the CLI takes --allow-net (repeatable, comma-separated), validates it, and inspect shows it', async () => {
    const created = await boxlite(['create', '--allow-net', 'API.Allowed.Test,*.svc.test', '--allow-net', '10.0.0.0/8', '--rootfs', inject('image')]);
    expect(created.stderr).toBe('');
    const id = created.stdout.trim();
    try {
      const [insp] = JSON.parse((await boxlite(['inspect', id])).stdout);
      expect(insp.config.allowNet).toEqual(['api.allowed.test', '*.svc.test', '10.0.0.0/8']);
    } finally {
      await boxlite(['rm', '-f', id]);
    }
    const bad = await boxlite(['create', '--allow-net', 'https://x.test', '--rootfs', inject('image')]);
    expect(bad.code).not.toBe(0);
    expect(bad.stderr).toMatch(/configuration error: network\.outbound\.allowNet\[0\] must be a host name, IP or CIDR, not a URL/);
    const off = await boxlite(['create', '--network', 'none', '--allow-net', 'a.test', '--rootfs', inject('image')]);
    expect(off.code).not.toBe(0);
    expect(off.stderr).toMatch(/allowNet cannot be used when the network is disabled/);
  }, 60_000);
});
