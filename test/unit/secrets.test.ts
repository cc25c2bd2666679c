// Secrets outside the network path: option validation (ConfigError naming the field, never the
// value), the redacted normalized form, the 0600 values file, the guest environment, and the
// CLI flags (value from argv, the environment or a file).
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import { secretsFromFlags } from '../../src/cli/secrets.js';
import { decode, encode, Feature } from '../../src/protocol/codec.js';
import { missingFeatures } from '../../src/protocol/features.js';
import { vmPlan } from '../../src/runtime/box.js';
import { buildKernelCmdline } from '../../src/vmm/qemu.js';
import { ConfigError } from '../../src/errors/index.js';
import { normalizeBoxOptions, normalizeSecrets, type BoxOptions } from '../../src/runtime/options.js';
import { readSecretValues, secretEnvironment, writeSecretValues, GUEST_CA_BUNDLE } from '../../src/runtime/secrets.js';

const VALUE = 'sk-very-secret-0123456789';
const err = (fn: () => unknown): string => {
  try {
    fn();
  } catch (e) {
    expect(e).toBeInstanceOf(ConfigError);
    expect((e as Error).message).not.toContain(VALUE);
    return (e as Error).message;
  }
  throw new Error('expected a ConfigError');
};
const norm = (secrets: unknown, extra: Partial<BoxOptions> = {}) => normalizeBoxOptions({ rootfsPath: '/', secrets: secrets as BoxOptions['secrets'], ...extra }, 4);

describe('secrets options', () => {
  it('normalizes with the default placeholder and keeps no value', () => {
    const o = norm([{ name: 'OPENAI_KEY', value: VALUE, hosts: ['API.openai.com.', '*.example.com'] }]);
    expect(o.secrets).toEqual([{ name: 'OPENAI_KEY', hosts: ['api.openai.com', '*.example.com'], placeholder: '<BOXLITE_SECRET:OPENAI_KEY>' }]);
    expect(JSON.stringify(o)).not.toContain(VALUE);
    expect(norm([]).secrets).toBeUndefined();
    expect(norm(undefined).secrets).toBeUndefined();
    const full = normalizeSecrets([{ name: 'A', value: VALUE, hosts: ['a.test'], placeholder: 'PLACEHOLDER_A' }]);
    expect(full).toEqual([{ name: 'A', value: VALUE, hosts: ['a.test'], placeholder: 'PLACEHOLDER_A' }]);
  });

  it('refuses bad input, naming the field', () => {
    expect(err(() => norm([{ value: VALUE, hosts: ['a.test'] }]))).toBe('configuration error: secrets[0].name is required (a non-empty string)');
    expect(err(() => norm([{ name: '', value: VALUE, hosts: ['a.test'] }]))).toMatch(/secrets\[0\]\.name is required/);
    expect(err(() => norm([{ name: 'A-B', value: VALUE, hosts: ['a.test'] }]))).toMatch(/secrets\[0\]\.name must be letters, digits and '_'/);
    expect(err(() => norm([{ name: 'A', hosts: ['a.test'] }]))).toMatch(/secrets\[0\]\.value is required/);
    expect(err(() => norm([{ name: 'A', value: '', hosts: ['a.test'] }]))).toMatch(/secrets\[0\]\.value is required/);
    expect(err(() => norm([{ name: 'A', value: `${VALUE}\r\nX: y`, hosts: ['a.test'] }]))).toMatch(/secrets\[0\]\.value must be printable ASCII/);
    expect(err(() => norm([{ name: 'A', value: VALUE }]))).toMatch(/secrets\[0\]\.hosts must list at least one host/);
    expect(err(() => norm([{ name: 'A', value: VALUE, hosts: [] }]))).toMatch(/secrets\[0\]\.hosts must list at least one host/);
    expect(err(() => norm([{ name: 'A', value: VALUE, hosts: ['https://a.test/'] }]))).toMatch(/secrets\[0\]\.hosts\[0\] must be a host name, IP or CIDR, not a URL/);
    expect(err(() => norm([{ name: 'A', value: VALUE, hosts: ['a.test', '*'] }]))).toMatch(/secrets\[0\]\.hosts\[1\] a bare wildcard/);
    expect(err(() => norm([{ name: 'A', value: VALUE, hosts: ['10.0.0.0/8'] }]))).toMatch(/secrets\[0\]\.hosts\[0\] must be a host name or \*\.wildcard/);
    expect(err(() => norm([{ name: 'A', value: VALUE, hosts: ['a.test'], extra: 1 }]))).toBe('configuration error: secrets[0] has no field "extra"');
    expect(err(() => norm([{ name: 'A', value: VALUE, hosts: ['a.test'], placeholder: 'short' }]))).toMatch(/secrets\[0\]\.placeholder must be at least 8 characters/);
    expect(err(() => norm([{ name: 'A', value: VALUE, hosts: ['a.test'], placeholder: VALUE }]))).toMatch(/secrets\[0\]\.placeholder must differ from the value/);
  });

  it('takes values and placeholders of printable ASCII only (they travel in HTTP headers)', () => {
    const a = { name: 'A', hosts: ['a.test'] };
    for (const bad of [`${VALUE}\u00fc`, `${VALUE}\u4e2d`, `${VALUE}\t`, `${VALUE}\x7f`, `${VALUE}\u2028`]) {
      expect(err(() => norm([{ ...a, value: bad }]))).toMatch(/^configuration error: secrets\[0\]\.value must be printable ASCII \(0x20-0x7e\)/);
    }
    for (const bad of ['<SECRET:\u00fc-A>', '<SECRET:\u4e2d-A>', '<SECRET:\tTAB>']) {
      expect(err(() => norm([{ ...a, value: VALUE, placeholder: bad }]))).toMatch(/^configuration error: secrets\[0\]\.placeholder must be printable ASCII \(0x20-0x7e\)/);
    }
    expect(norm([{ ...a, value: `${VALUE} ~!"#$%&'()*+,-./:;<=>?@[\\]^_\`{|}`, placeholder: 'PLACE ~{}HOLDER' }]).secrets).toHaveLength(1);
    // A values file from elsewhere is held to the same rule.
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'secrets-'));
    try {
      fs.writeFileSync(path.join(dir, 'secrets.json'), JSON.stringify({ version: 1, secrets: [{ name: 'A', value: 'v\u00fc-value', hosts: ['a.test'], placeholder: '<BOXLITE_SECRET:A>' }] }), { mode: 0o600 });
      expect(() => readSecretValues(dir, 'BOX', [{ name: 'A', hosts: ['a.test'], placeholder: '<BOXLITE_SECRET:A>' }])).toThrow(/secrets\[0\]\.value must be printable ASCII/);
    } finally {
      fs.rmSync(dir, { recursive: true, force: true });
    }
  });

  it('refuses duplicate names, equal placeholders and a placeholder inside another', () => {
    const a = { name: 'A', value: VALUE, hosts: ['a.test'] };
    expect(err(() => norm([a, { ...a, value: 'other-value' }]))).toBe('configuration error: secrets[1].name "A" is already used by secrets[0]');
    expect(err(() => norm([{ ...a, placeholder: 'TOKEN_PLACEHOLDER' }, { name: 'B', value: 'v2', hosts: ['b.test'], placeholder: 'TOKEN_PLACEHOLDER' }]))).toMatch(/secrets\[1\]\.placeholder is the same as secrets\[0\]\.placeholder/);
    expect(err(() => norm([{ ...a, placeholder: 'TOKEN_PLACEHOLDER' }, { name: 'B', value: 'v2', hosts: ['b.test'], placeholder: 'TOKEN_PLACEHOLDER_2' }]))).toBe(
      'configuration error: secrets[0].placeholder is a substring of secrets[1].placeholder; each placeholder must not contain another',
    );
    // The defaults never contain one another: <BOXLITE_SECRET:A> vs <BOXLITE_SECRET:AB>.
    expect(norm([a, { name: 'AB', value: 'v2', hosts: ['b.test'] }]).secrets).toHaveLength(2);
  });

  it('refuses secrets without a network', () => {
    expect(err(() => norm([{ name: 'A', value: VALUE, hosts: ['a.test'] }], { network: { mode: 'disabled' } }))).toMatch(/^configuration error: secrets cannot be used when the network is disabled/);
  });
});

describe('secret values file and guest environment', () => {
  it('writes 0600, reads back by name, and fails clearly when gone', () => {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'secrets-'));
    try {
      const full = normalizeSecrets([{ name: 'A', value: VALUE, hosts: ['a.test'] }, { name: 'B', value: 'b-value-xyz', hosts: ['*.b.test'] }]);
      writeSecretValues(dir, full);
      const file = path.join(dir, 'secrets.json');
      expect(fs.statSync(file).mode & 0o777).toBe(0o600);
      const declared = full.map(({ name, hosts, placeholder }) => ({ name, hosts, placeholder }));
      expect(readSecretValues(dir, 'BOX', declared)).toEqual(full);
      expect(readSecretValues(dir, 'BOX', undefined)).toEqual([]);
      fs.rmSync(file);
      expect(() => readSecretValues(dir, 'BOX', declared)).toThrow(/box BOX has secrets but their values are gone/);
      writeSecretValues(dir, []);
      expect(fs.existsSync(file)).toBe(false);
    } finally {
      fs.rmSync(dir, { recursive: true, force: true });
    }
  });

  it('gives the guest placeholders and the CA variables only', () => {
    const env = secretEnvironment([{ name: 'A', hosts: ['a.test'], placeholder: '<BOXLITE_SECRET:A>' }]);
    expect(env).toEqual([
      ['BOXLITE_SECRET_A', '<BOXLITE_SECRET:A>'],
      ['SSL_CERT_FILE', GUEST_CA_BUNDLE],
      ['REQUESTS_CA_BUNDLE', GUEST_CA_BUNDLE],
      ['CURL_CA_BUNDLE', GUEST_CA_BUNDLE],
      ['NODE_EXTRA_CA_CERTS', GUEST_CA_BUNDLE],
    ]);
    expect(secretEnvironment(undefined)).toEqual([]);
  });
});

describe('CLI --secret flags', () => {
  it('takes the value from argv, the environment or a file', () => {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'secret-file-'));
    const file = path.join(dir, 'key');
    fs.writeFileSync(file, `${VALUE}\n`);
    try {
      const got = secretsFromFlags(
        { secret: ['LIT=a@b=c@api.x.test,*.y.test', 'FROMENV@api.x.test'], secretEnv: ['E=MY_VAR@e.test'], secretFile: [`F=${file}@f.test`] },
        { FROMENV: 'env-value-1', MY_VAR: 'env-value-2' },
      );
      expect(got).toEqual([
        { name: 'LIT', value: 'a@b=c', hosts: ['api.x.test', '*.y.test'] },
        { name: 'FROMENV', value: 'env-value-1', hosts: ['api.x.test'] },
        { name: 'E', value: 'env-value-2', hosts: ['e.test'] },
        { name: 'F', value: VALUE, hosts: ['f.test'] },
      ]);
    } finally {
      fs.rmSync(dir, { recursive: true, force: true });
    }
  });

  it('explains malformed flags without echoing a value', () => {
    expect(err(() => secretsFromFlags({ secret: [`K=${VALUE}`] }, {}))).toMatch(/^configuration error: --secret needs NAME=VALUE@HOST/);
    expect(err(() => secretsFromFlags({ secret: ['MISSING@h.test'] }, {}))).toMatch(/environment variable MISSING is not set/);
    expect(err(() => secretsFromFlags({ secretEnv: ['E=NOPE@h.test'] }, {}))).toMatch(/--secret-env E: environment variable NOPE is not set/);
    expect(err(() => secretsFromFlags({ secretFile: ['F=/nonexistent/x@h.test'] }, {}))).toMatch(/--secret-file F: cannot read \/nonexistent\/x: ENOENT/);
    expect(err(() => secretsFromFlags({ secretEnv: ['E@h.test'] }, {}))).toMatch(/--secret-env needs NAME=VAR@HOST/);
  });
});

describe('the box CA on its way to the agent', () => {
  const paths = { disk: '/b/disk.qcow2', agentSocket: '/b/agent.sock', consoleLog: '/b/logs/console.log' };
  const assets = { kernelPath: '/r/vmlinux', initrdPath: '/r/initramfs.cpio' };
  const cmdline = (p: ReturnType<typeof vmPlan>) => buildKernelCmdline({ ...p, boot: { ...p.boot, tscKhz: null } }).split(' ');

  it('boots a box with secrets with boxlite.trust (its own stack only), others without', () => {
    const withSecrets = normalizeBoxOptions({ rootfsPath: '/', secrets: [{ name: 'A', value: VALUE, hosts: ['a.test'] }] }, 4);
    const stream = { socketPath: '/b/net.sock' };
    expect(cmdline(vmPlan(withSecrets, paths, assets, 'tcg', false, stream))).toContain('boxlite.trust');
    expect(cmdline(vmPlan(withSecrets, paths, assets, 'tcg', false))).not.toContain('boxlite.trust');
    expect(cmdline(vmPlan(normalizeBoxOptions({ rootfsPath: '/' }, 4), paths, assets, 'tcg', false, stream))).not.toContain('boxlite.trust');
    expect(JSON.stringify(vmPlan(withSecrets, paths, assets, 'tcg', false, stream))).not.toContain(VALUE);
  });

  it('TRUST is a stream-0 message with its own feature bit', () => {
    const pem = '-----BEGIN CERTIFICATE-----\nAA==\n-----END CERTIFICATE-----\n';
    const m = decode(encode({ type: 'TRUST', stream: 0, data: Buffer.from(pem) }));
    expect(m).toMatchObject({ type: 'TRUST', stream: 0 });
    expect((m as { data: Buffer }).data.toString()).toBe(pem);
    expect(() => decode(encode({ type: 'TRUST', stream: 3, data: Buffer.from(pem) }))).toThrow(/bad_stream|stream/);
    expect(missingFeatures(Feature.TRUST, 0x3f)).toHaveLength(1);
  });
});
