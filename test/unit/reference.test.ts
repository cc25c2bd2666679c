// Image reference normalisation, table-driven after docker/distribution's
// reference tests (ParseNormalizedNamed + default tag).

import { describe, expect, it } from 'vitest';
import { BoxliteError } from '../../src/errors/index.js';
import {
  isQualified,
  manifestReference,
  parseReference,
  registryApiHost,
  withRegistry,
} from '../../src/images/reference.js';

const D64 = 'sha256:' + 'f'.repeat(64);
const D512 = 'sha512:' + 'f'.repeat(128);
const REDIS_D = 'sha256:dbcc1c35ac38df41fd2f5e4130b32ffdb93ebae8b3dbe638c23575912276fc9c';

type Want = { registry: string; repository: string; tag?: string; digest?: string; canonical: string };

const valid: Array<[string, Want]> = [
  ['alpine', { registry: 'docker.io', repository: 'library/alpine', tag: 'latest', canonical: 'docker.io/library/alpine:latest' }],
  ['alpine:3.20', { registry: 'docker.io', repository: 'library/alpine', tag: '3.20', canonical: 'docker.io/library/alpine:3.20' }],
  ['redis:latest', { registry: 'docker.io', repository: 'library/redis', tag: 'latest', canonical: 'docker.io/library/redis:latest' }],
  ['library/ubuntu', { registry: 'docker.io', repository: 'library/ubuntu', tag: 'latest', canonical: 'docker.io/library/ubuntu:latest' }],
  ['docker.io/library/redis:latest', { registry: 'docker.io', repository: 'library/redis', tag: 'latest', canonical: 'docker.io/library/redis:latest' }],
  ['docker.io/debian', { registry: 'docker.io', repository: 'library/debian', tag: 'latest', canonical: 'docker.io/library/debian:latest' }],
  ['index.docker.io/debian', { registry: 'docker.io', repository: 'library/debian', tag: 'latest', canonical: 'docker.io/library/debian:latest' }],
  ['index.docker.io/docker/docker', { registry: 'docker.io', repository: 'docker/docker', tag: 'latest', canonical: 'docker.io/docker/docker:latest' }],
  ['docker.io/library/foo/bar', { registry: 'docker.io', repository: 'library/foo/bar', tag: 'latest', canonical: 'docker.io/library/foo/bar:latest' }],
  ['store/foo/bar', { registry: 'docker.io', repository: 'store/foo/bar', tag: 'latest', canonical: 'docker.io/store/foo/bar:latest' }],
  ['dmcgowan/myapp', { registry: 'docker.io', repository: 'dmcgowan/myapp', tag: 'latest', canonical: 'docker.io/dmcgowan/myapp:latest' }],
  ['other/library', { registry: 'docker.io', repository: 'other/library', tag: 'latest', canonical: 'docker.io/other/library:latest' }],
  ['test_com/foo', { registry: 'docker.io', repository: 'test_com/foo', tag: 'latest', canonical: 'docker.io/test_com/foo:latest' }],
  ['ubuntu-12.04-base', { registry: 'docker.io', repository: 'library/ubuntu-12.04-base', tag: 'latest', canonical: 'docker.io/library/ubuntu-12.04-base:latest' }],
  [`redis@${REDIS_D}`, { registry: 'docker.io', repository: 'library/redis', digest: REDIS_D, canonical: `docker.io/library/redis@${REDIS_D}` }],
  [
    `busybox:latest@${REDIS_D}`,
    { registry: 'docker.io', repository: 'library/busybox', tag: 'latest', digest: REDIS_D, canonical: `docker.io/library/busybox:latest@${REDIS_D}` },
  ],
  // host:port, localhost, IPs
  ['localhost/foo', { registry: 'localhost', repository: 'foo', tag: 'latest', canonical: 'localhost/foo:latest' }],
  ['localhost:5000/foo/bar:v1', { registry: 'localhost:5000', repository: 'foo/bar', tag: 'v1', canonical: 'localhost:5000/foo/bar:v1' }],
  ['test.com/foo', { registry: 'test.com', repository: 'foo', tag: 'latest', canonical: 'test.com/foo:latest' }],
  ['test:5000/repo', { registry: 'test:5000', repository: 'repo', tag: 'latest', canonical: 'test:5000/repo:latest' }],
  ['test-com:8080/foo', { registry: 'test-com:8080', repository: 'foo', tag: 'latest', canonical: 'test-com:8080/foo:latest' }],
  ['xn--n3h.com:18080/foo', { registry: 'xn--n3h.com:18080', repository: 'foo', tag: 'latest', canonical: 'xn--n3h.com:18080/foo:latest' }],
  [`test:5000/repo@${D64}`, { registry: 'test:5000', repository: 'repo', digest: D64, canonical: `test:5000/repo@${D64}` }],
  [`test:5000/repo:tag@${D64}`, { registry: 'test:5000', repository: 'repo', tag: 'tag', digest: D64, canonical: `test:5000/repo:tag@${D64}` }],
  ['127.0.0.1:5000/library/debian', { registry: '127.0.0.1:5000', repository: 'library/debian', tag: 'latest', canonical: '127.0.0.1:5000/library/debian:latest' }],
  ['127.0.0.1:8000/privatebase', { registry: '127.0.0.1:8000', repository: 'privatebase', tag: 'latest', canonical: '127.0.0.1:8000/privatebase:latest' }],
  ['192.168.1.1:5000/repo:5050', { registry: '192.168.1.1:5000', repository: 'repo', tag: '5050', canonical: '192.168.1.1:5000/repo:5050' }],
  ['192.168.0.1', { registry: 'docker.io', repository: 'library/192.168.0.1', tag: 'latest', canonical: 'docker.io/library/192.168.0.1:latest' }],
  ['192.168.0.1:80', { registry: 'docker.io', repository: 'library/192.168.0.1', tag: '80', canonical: 'docker.io/library/192.168.0.1:80' }],
  ['test.com:5000', { registry: 'docker.io', repository: 'library/test.com', tag: '5000', canonical: 'docker.io/library/test.com:5000' }],
  ['foo_bar.com:8080', { registry: 'docker.io', repository: 'library/foo_bar.com', tag: '8080', canonical: 'docker.io/library/foo_bar.com:8080' }],
  ['[fc00::1]:5000/docker', { registry: '[fc00::1]:5000', repository: 'docker', tag: 'latest', canonical: '[fc00::1]:5000/docker:latest' }],
  ['[2001:db8::1]/repo:tag', { registry: '[2001:db8::1]', repository: 'repo', tag: 'tag', canonical: '[2001:db8::1]/repo:tag' }],
  ['[::1]:5000/repo', { registry: '[::1]:5000', repository: 'repo', tag: 'latest', canonical: '[::1]:5000/repo:latest' }],
  ['b.gcr.io/test.example.com/my-app:test.example.com', { registry: 'b.gcr.io', repository: 'test.example.com/my-app', tag: 'test.example.com', canonical: 'b.gcr.io/test.example.com/my-app:test.example.com' }],
  [
    `xn--7o8h.com/myimage:xn--7o8h.com@${D512}`,
    { registry: 'xn--7o8h.com', repository: 'myimage', tag: 'xn--7o8h.com', digest: D512, canonical: `xn--7o8h.com/myimage:xn--7o8h.com@${D512}` },
  ],
  // Upper case: a first component with capitals is a host; tags may have capitals.
  ['Foo/bar', { registry: 'Foo', repository: 'bar', tag: 'latest', canonical: 'Foo/bar:latest' }],
  ['DOCKER/docker', { registry: 'DOCKER', repository: 'docker', tag: 'latest', canonical: 'DOCKER/docker:latest' }],
  ['lowercase:Uppercase', { registry: 'docker.io', repository: 'library/lowercase', tag: 'Uppercase', canonical: 'docker.io/library/lowercase:Uppercase' }],
  // Separators and odd but valid names
  ['docker---rules/docker', { registry: 'docker.io', repository: 'docker---rules/docker', tag: 'latest', canonical: 'docker.io/docker---rules/docker:latest' }],
  ['dock__er/docker', { registry: 'docker.io', repository: 'dock__er/docker', tag: 'latest', canonical: 'docker.io/dock__er/docker:latest' }],
  ['d/docker', { registry: 'docker.io', repository: 'd/docker', tag: 'latest', canonical: 'docker.io/d/docker:latest' }],
  [
    'thisisthesongthatneverendsitgoesonandonandonthisisthesongthatnev',
    {
      registry: 'docker.io',
      repository: 'library/thisisthesongthatneverendsitgoesonandonandonthisisthesongthatnev',
      tag: 'latest',
      canonical: 'docker.io/library/thisisthesongthatneverendsitgoesonandonandonthisisthesongthatnev:latest',
    },
  ],
  [
    'docker.io/1a3f5e7d9c1b3a5f7e9d1c3b5a7f9e1d3c5b7a9f1e3d5d7c9b1a3f5e7d9c1b3a',
    {
      registry: 'docker.io',
      repository: 'library/1a3f5e7d9c1b3a5f7e9d1c3b5a7f9e1d3c5b7a9f1e3d5d7c9b1a3f5e7d9c1b3a',
      tag: 'latest',
      canonical: 'docker.io/library/1a3f5e7d9c1b3a5f7e9d1c3b5a7f9e1d3c5b7a9f1e3d5d7c9b1a3f5e7d9c1b3a:latest',
    },
  ],
  // Longest path (255) is fine; the tag does not count.
  [
    'a.io/' + 'a/'.repeat(127) + 'a:tag-puts-this-over-max',
    {
      registry: 'a.io',
      repository: 'a/'.repeat(127) + 'a',
      tag: 'tag-puts-this-over-max',
      canonical: 'a.io/' + 'a/'.repeat(127) + 'a:tag-puts-this-over-max',
    },
  ],
  ['a:' + 'x'.repeat(128), { registry: 'docker.io', repository: 'library/a', tag: 'x'.repeat(128), canonical: 'docker.io/library/a:' + 'x'.repeat(128) }],
];

const invalid: Array<[string, RegExp]> = [
  ['', /at least one component/],
  [':justtag', /invalid reference format/],
  [`@${D64}`, /invalid reference format/],
  ['https://github.com/docker/docker', /invalid reference format/],
  ['docker/Docker', /must be lowercase/],
  ['docker.io/docker/Docker', /must be lowercase/],
  ['Uppercase:tag', /must be lowercase/],
  ['test:5000/Uppercase/lowercase:tag', /must be lowercase/],
  ['-docker', /invalid reference format/],
  ['-docker/docker', /invalid reference format/],
  ['-docker.io/docker/docker', /invalid reference format/],
  ['docker-/docker', /invalid reference format/],
  ['____/____', /invalid reference format/],
  ['_docker/_docker', /invalid reference format/],
  ['dock..er/docker', /invalid reference format/],
  ['dock_.er/docker', /invalid reference format/],
  ['dock-.er/docker', /invalid reference format/],
  ['docker/', /invalid reference format/],
  ['docker///docker', /invalid reference format/],
  ['docker.io/docker///docker', /invalid reference format/],
  ['aa/asdf$$^/aa', /invalid reference format/],
  ['[fc00::1]', /invalid reference format/],
  ['[fc00::1]:5000', /invalid reference format/],
  ['fc00::1:5000/debian', /invalid reference format/],
  ['[fe80::1%eth0]:5000/debian', /invalid reference format/],
  ['[2001:db8:3:4::192.0.2.33]:5000/debian', /invalid reference format/],
  ['1a3f5e7d9c1b3a5f7e9d1c3b5a7f9e1d3c5b7a9f1e3d5d7c9b1a3f5e7d9c1b3a', /64-byte hexadecimal/],
  ['a/'.repeat(128) + 'a:tag', /not be more than 255 characters/],
  [
    'this_is_not_a_valid_namespace_because_its_lenth_is_greater_than_255_this_is_not_a_valid_namespace_because_its_lenth_is_greater_than_255_this_is_not_a_valid_namespace_because_its_lenth_is_greater_than_255_this_is_not_a_valid_namespace_because_its_lenth_is_greater_than_255/docker',
    /not be more than 255 characters/,
  ],
  ['repo@sha256:' + 'f'.repeat(34), /digest length/],
  ['validname@invaliddigest:' + 'f'.repeat(64), /unsupported digest algorithm/],
  ['repo@sha256:' + 'F'.repeat(64), /lowercase hexadecimal/],
  ['a:' + 'x'.repeat(129), /invalid reference format/],
  ['a:-tag', /invalid reference format/],
  ['alpine latest', /invalid reference format/],
  ['x'.repeat(2000), /invalid reference format/],
];

describe('parseReference', () => {
  it.each(valid)('%s', (input, want) => {
    const ref = parseReference(input);
    expect({
      registry: ref.registry,
      repository: ref.repository,
      ...(ref.tag !== undefined ? { tag: ref.tag } : {}),
      ...(ref.digest !== undefined ? { digest: ref.digest } : {}),
      canonical: ref.canonical,
    }).toEqual(want);
    expect(ref.name).toBe(`${want.registry}/${want.repository}`);
    // The canonical form parses to itself.
    expect(parseReference(ref.canonical).canonical).toBe(ref.canonical);
  });

  it.each(invalid)('rejects %j', (input, match) => {
    let err: unknown;
    try {
      parseReference(input);
    } catch (e) {
      err = e;
    }
    expect(err).toBeInstanceOf(BoxliteError);
    expect((err as BoxliteError).code).toBe('Image');
    expect((err as Error).message).toMatch(/^images error: invalid reference format: /);
    expect((err as Error).message).toMatch(match);
  });

  it('fetches by digest when both tag and digest are given', () => {
    expect(manifestReference(parseReference(`busybox:1.36@${REDIS_D}`))).toBe(REDIS_D);
    expect(manifestReference(parseReference('busybox:1.36'))).toBe('1.36');
    expect(manifestReference(parseReference('busybox'))).toBe('latest');
  });

  it('maps Docker Hub to its API host', () => {
    expect(registryApiHost('docker.io')).toBe('registry-1.docker.io');
    expect(registryApiHost('index.docker.io')).toBe('registry-1.docker.io');
    expect(registryApiHost('localhost:5000')).toBe('localhost:5000');
  });

  it('moves a reference to another registry', () => {
    const r = withRegistry(parseReference('alpine:3'), 'ghcr.io', 'alpine');
    expect(r.canonical).toBe('ghcr.io/alpine:3');
    expect(parseReference(r.canonical)).toMatchObject({ registry: 'ghcr.io', repository: 'alpine', tag: '3' });
  });
});

describe('isQualified', () => {
  it.each([
    ['alpine', false],
    ['alpine:3', false],
    ['library/alpine', false],
    ['acme/api:1', false],
    [`alpine@${D64}`, false],
    ['docker.io/alpine', true],
    ['localhost/x', true],
    ['localhost:5000/x', true],
    ['host:5000/x', true],
    ['ghcr.io/acme/api', true],
    ['[::1]:5000/x', true],
    ['Foo/bar', true],
  ] as const)('%s → %s', (input, want) => {
    expect(isQualified(input)).toBe(want);
  });
});
