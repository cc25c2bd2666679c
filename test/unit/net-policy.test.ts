import { describe, expect, it } from 'vitest';
import { ConfigError, UnsupportedError } from '../../src/errors/index.js';
import { createDialer } from '../../src/net/dialer.js';
import { NetPolicy, isDialableUpstream, isNeverDialed, isPrivateAddress, parseAllowNet } from '../../src/net/policy.js';
import { normalizeBoxOptions, type BoxOptions } from '../../src/runtime/options.js';

function configError(fn: () => unknown): string {
  try {
    fn();
  } catch (err) {
    expect(err).toBeInstanceOf(ConfigError);
    return (err as Error).message;
  }
  throw new Error('expected a ConfigError');
}

describe('parseAllowNet', () => {
  it('canonicalizes: lower case, trailing dot stripped, duplicates dropped', () => {
    expect(parseAllowNet(['API.Example.COM.', 'api.example.com', '*.Example.com', '10.0.0.0/8', '203.0.113.7', '1.2.3.4/32'], 'f')).toEqual([
      'api.example.com',
      '*.example.com',
      '10.0.0.0/8',
      '203.0.113.7',
      '1.2.3.4/32',
    ]);
    expect(parseAllowNet(undefined, 'f')).toEqual([]);
    expect(parseAllowNet([], 'f')).toEqual([]);
    expect(parseAllowNet(['_acme-challenge.example.com', 'xn--bcher-kva.example', 'localhost', '0.0.0.0/0'], 'f')).toHaveLength(4);
  });

  it.each([
    ['', /f\[0\] must not be empty/],
    ['   ', /f\[0\] must not be empty/],
    ['*', /bare wildcard/],
    ['*.', /bare wildcard/],
    ['https://api.example.com', /not a URL/],
    ['http://1.2.3.4/x', /not a URL/],
    ['api.example.com:443', /must not include a port/],
    ['1.2.3.4:80', /must not include a port/],
    ['10.0.0.0/33', /bad prefix length/],
    ['10.0.0.0/', /bad prefix length/],
    ['10.0.0.0/08', /bad prefix length/],
    ['10.0.0.1/8', /host bits set: did you mean 10\.0\.0\.0\/8\?/],
    ['300.0.0.0/8', /not a valid IPv4 CIDR/],
    ['example.com/24', /not a valid IPv4 CIDR/],
    ['::1', /IPv6 is not supported/],
    ['2001:db8::/32', /IPv6 is not supported/],
    ['[::1]', /IPv6 is not supported/],
    ['999.1.1.1', /not a valid IPv4 address/],
    ['1.2.3', /not a valid IPv4 address/],
    ['010.0.0.1', /not a valid IPv4 address/],
    ['a.*.example.com', /only allowed as the first label/],
    ['*example.com', /only allowed as the first label/],
    ['*.*.example.com', /not a valid wildcard/],
    ['-bad.example.com', /not a valid host name/],
    ['bad..example.com', /not a valid host name/],
    ['exa mple.com', /whitespace/],
    [' example.com', /whitespace/],
    ['a'.repeat(64) + '.com', /not a valid host name/],
    ['bücher.example', /xn-- form/],
  ])('refuses %j naming the field', (entry, msg) => {
    const m = configError(() => parseAllowNet(['ok.example.com', entry].slice(1), 'f'));
    expect(m).toMatch(/^configuration error: f\[0\] /);
    expect(m).toMatch(msg);
    // The index is the entry's own.
    expect(configError(() => parseAllowNet(['ok.example.com', entry], 'net.allowNet'))).toMatch(/^configuration error: net\.allowNet\[1\] /);
  });

  it('refuses non-arrays and non-strings', () => {
    expect(configError(() => parseAllowNet('example.com', 'f'))).toMatch(/f must be an array of strings/);
    expect(configError(() => parseAllowNet([1], 'f'))).toMatch(/f\[0\] must be a string/);
  });
});

describe('NetPolicy', () => {
  const p = new NetPolicy(parseAllowNet(['api.example.com', '*.svc.example.org', '203.0.113.7', '10.1.0.0/16'], 'f'));

  it('matches exact names only exactly (case and trailing dot insensitive)', () => {
    expect(p.allowsName('api.example.com')).toBe(true);
    expect(p.allowsName('API.EXAMPLE.COM.')).toBe(true);
    expect(p.allowsName('example.com')).toBe(false);
    expect(p.allowsName('x.api.example.com')).toBe(false);
    expect(p.allowsName('api.example.com.evil.test')).toBe(false);
    expect(p.allowsName('evilapi.example.com')).toBe(false);
  });

  it('matches wildcards at any depth below, never the apex or a look-alike suffix', () => {
    expect(p.allowsName('a.svc.example.org')).toBe(true);
    expect(p.allowsName('a.b.c.svc.example.org')).toBe(true);
    expect(p.allowsName('svc.example.org')).toBe(false);
    expect(p.allowsName('evilsvc.example.org')).toBe(false);
    expect(p.allowsName('example.org')).toBe(false);
  });

  it('matches IPs and CIDRs by address; names that are IPv4 literals go by the IP rules', () => {
    expect(p.ipRule('203.0.113.7')).toBe(true);
    expect(p.ipRule('203.0.113.8')).toBe(false);
    expect(p.ipRule('10.1.0.0')).toBe(true);
    expect(p.ipRule('10.1.255.255')).toBe(true);
    expect(p.ipRule('10.2.0.1')).toBe(false);
    expect(p.ipRule('not-an-ip')).toBe(false);
    expect(p.allowsName('203.0.113.7')).toBe(true);
    expect(p.allowsName('203.0.113.9')).toBe(false);
    expect(p.hasHostnameRules).toBe(true);
    expect(p.isOpen).toBe(false);
  });

  it('an empty list allows everything except 169.254.0.0/16', () => {
    const open = new NetPolicy([]);
    expect(open.isOpen).toBe(true);
    expect(open.hasHostnameRules).toBe(false);
    expect(open.allowsName('anything.example')).toBe(true);
    expect(open.ipRule('8.8.8.8')).toBe(true);
    expect(open.ipRule('169.254.169.254')).toBe(false);
    expect(new NetPolicy(undefined).isOpen).toBe(true);
  });

  it('169.254.0.0/16 only when an IP/CIDR rule at least /16 lists it (0.0.0.0/0 does not)', () => {
    expect(new NetPolicy(['0.0.0.0/0']).ipRule('169.254.169.254')).toBe(false);
    expect(new NetPolicy(['0.0.0.0/0']).ipRule('1.1.1.1')).toBe(true);
    expect(new NetPolicy(['169.0.0.0/8']).ipRule('169.254.169.254')).toBe(false);
    expect(new NetPolicy(['169.254.0.0/16']).ipRule('169.254.169.254')).toBe(true);
    expect(new NetPolicy(['169.254.169.254']).ipRule('169.254.169.254')).toBe(true);
    expect(new NetPolicy(['169.254.169.254']).ipRule('169.254.169.253')).toBe(false);
    expect(NetPolicy.isMetadata('169.254.1.1')).toBe(true);
    expect(NetPolicy.isMetadata('169.255.1.1')).toBe(false);
  });

  it('IP-only policies have no hostname rules', () => {
    const ipOnly = new NetPolicy(['10.0.0.0/8']);
    expect(ipOnly.hasHostnameRules).toBe(false);
    expect(ipOnly.allowsName('example.com')).toBe(false);
  });

  it('nameMatches is the same matcher for one pattern (secret hosts)', () => {
    expect(NetPolicy.nameMatches('*.example.com', 'a.b.example.com')).toBe(true);
    expect(NetPolicy.nameMatches('*.example.com', 'example.com')).toBe(false);
    expect(NetPolicy.nameMatches('Example.com.', 'example.COM')).toBe(true);
  });

  it('never dials 0/8, 127/8, multicast, reserved, broadcast', () => {
    for (const ip of ['0.0.0.0', '0.1.2.3', '127.0.0.1', '127.255.0.1', '224.0.0.1', '239.1.1.1', '240.0.0.1', '255.255.255.255', 'x']) {
      expect(isNeverDialed(ip), ip).toBe(true);
    }
    for (const ip of ['1.1.1.1', '10.0.0.1', '192.168.1.1', '198.18.0.10', '223.255.255.255']) expect(isNeverDialed(ip), ip).toBe(false);
  });
});

describe('isDialableUpstream: addresses that came from an allowed name (DNS rebinding)', () => {
  const privateIps = ['10.0.0.1', '10.255.255.255', '172.16.0.1', '172.31.255.255', '192.168.1.1', '100.64.0.1', '100.127.255.255', '198.18.0.10', '198.19.255.255', '192.0.0.8'];
  const publicIps = ['8.8.8.8', '172.15.255.255', '172.32.0.1', '100.63.255.255', '100.128.0.1', '198.17.255.255', '198.20.0.1', '192.0.1.1', '11.0.0.1', '192.169.0.1'];

  it('under hostname rules: private ranges refused, public allowed, loopback/metadata/multicast never', () => {
    const p = new NetPolicy(parseAllowNet(['*.nip.test'], 'allowNet'));
    for (const ip of privateIps) {
      expect(isPrivateAddress(ip), ip).toBe(true);
      expect(isDialableUpstream(ip, p), ip).toBe(false);
    }
    for (const ip of publicIps) {
      expect(isPrivateAddress(ip), ip).toBe(false);
      expect(isDialableUpstream(ip, p), ip).toBe(true);
    }
    for (const ip of ['127.0.0.1', '0.0.0.0', '224.0.0.1', '255.255.255.255', '169.254.169.254', 'nope', '']) expect(isDialableUpstream(ip, p), ip).toBe(false);
  });

  it('a private range is dialable when an IP/CIDR rule lists it (only what it lists)', () => {
    const p = new NetPolicy(parseAllowNet(['*.corp.test', '10.1.0.0/16', '192.168.5.7', '169.254.169.254'], 'allowNet'));
    expect(isDialableUpstream('10.1.2.3', p)).toBe(true);
    expect(isDialableUpstream('10.2.0.1', p)).toBe(false);
    expect(isDialableUpstream('192.168.5.7', p)).toBe(true);
    expect(isDialableUpstream('192.168.5.8', p)).toBe(false);
    expect(isDialableUpstream('169.254.169.254', p)).toBe(true);
  });

  it('the open policy ([]) keeps every private address allowed (as the reference); metadata/loopback still not', () => {
    const p = new NetPolicy([]);
    for (const ip of privateIps) expect(isDialableUpstream(ip, p), ip).toBe(true);
    expect(isDialableUpstream('169.254.169.254', p)).toBe(false);
    expect(isDialableUpstream('127.0.0.1', p)).toBe(false);
  });

  it("the test seam's own 198.18.0.0/15 addresses stay dialable; its other entries and the real dialer do not get the exemption", () => {
    const p = new NetPolicy(parseAllowNet(['*.allowed.test'], 'allowNet'));
    const seam = createDialer({ names: { 'a.allowed.test': ['198.18.0.10', '10.0.0.5'] }, dial: { '198.18.0.20:80': '127.0.0.1:1', '10.0.0.6': '127.0.0.1', '169.254.169.254': '127.0.0.1' } });
    expect(isDialableUpstream('198.18.0.10', p, seam)).toBe(true);
    expect(isDialableUpstream('198.18.0.20', p, seam)).toBe(true);
    expect(isDialableUpstream('198.18.0.99', p, seam)).toBe(false); // in no table
    expect(isDialableUpstream('10.0.0.5', p, seam)).toBe(false);
    expect(isDialableUpstream('10.0.0.6', p, seam)).toBe(false);
    expect(isDialableUpstream('169.254.169.254', p, seam)).toBe(false);
    const real = createDialer();
    expect(real.isSeamAddress).toBeUndefined();
    expect(isDialableUpstream('198.18.0.10', p, real)).toBe(false);
  });
});

describe('allowNet in the box options', () => {
  const layout = '/';
  const norm = (o: BoxOptions) => normalizeBoxOptions({ rootfsPath: layout, ...o }, 4);

  it('takes outbound.allowNet and the legacy network.allowNet, canonical; [] by default', () => {
    expect(norm({}).allowNet).toEqual([]);
    expect(norm({ network: { outbound: { mode: 'enabled', allowNet: ['API.example.com', '10.0.0.0/8'] } } }).allowNet).toEqual(['api.example.com', '10.0.0.0/8']);
    expect(norm({ network: { allowNet: ['*.example.com'] } }).allowNet).toEqual(['*.example.com']);
  });

  it('names the field of a bad entry', () => {
    expect(configError(() => norm({ network: { outbound: { mode: 'enabled', allowNet: ['ok.test', 'https://x.test'] } } }))).toMatch(
      /^configuration error: network\.outbound\.allowNet\[1\] must be a host name, IP or CIDR, not a URL/,
    );
    expect(configError(() => norm({ network: { allowNet: ['*'] } }))).toMatch(/^configuration error: network\.allowNet\[0\] a bare wildcard/);
    expect(configError(() => norm({ network: { allowNet: [''] } }))).toMatch(/^configuration error: network\.allowNet\[0\] must not be empty/);
    expect(configError(() => norm({ network: { allowNet: ['10.0.0.0/33'] } }))).toMatch(/network\.allowNet\[0\] has a bad prefix length/);
    expect(configError(() => norm({ network: { allowNet: [7 as unknown as string] } }))).toMatch(/^configuration error: network\.allowNet\[0\]/);
  });

  it('refuses allowNet with the network disabled', () => {
    expect(configError(() => norm({ network: { outbound: { mode: 'disabled', allowNet: ['a.test'] } } }))).toMatch(
      /^configuration error: network\.outbound\.allowNet cannot be used when the network is disabled/,
    );
    expect(configError(() => norm({ network: { mode: 'disabled', allowNet: ['a.test'] } }))).toMatch(/network\.allowNet cannot be used when the network is disabled/);
    // An empty list is the default and changes nothing.
    expect(norm({ network: { outbound: { mode: 'disabled', allowNet: [] } } }).network).toBe('disabled');
  });

  it('refuses mixing outbound with the legacy fields, a non-empty inbound.allowNet, inbound enabled', () => {
    expect(configError(() => norm({ network: { outbound: { mode: 'enabled' }, allowNet: ['a.test'] } }))).toMatch(/cannot mix outbound/);
    expect(configError(() => norm({ network: { inbound: { mode: 'disabled', allowNet: ['1.2.3.4'] } } }))).toMatch(
      /^configuration error: network\.inbound\.allowNet is not supported/,
    );
    expect(() => norm({ network: { inbound: { mode: 'enabled' } } })).toThrow(UnsupportedError);
  });
});
