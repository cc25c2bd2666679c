// `boxlite network tunnel`'s argument parsing (the forwarding itself: test/integration/cli-network.test.ts).
import { describe, expect, it } from 'vitest';
import { formatAddress, parseListenFlag } from '../../dist/cli/network.js';

describe('boxlite network tunnel --listen', () => {
  it('defaults to 127.0.0.1 on a free port', () => {
    expect(parseListenFlag(undefined)).toEqual({ type: 'tcp', host: '127.0.0.1', port: 0 });
  });
  it('accepts PORT, HOST:PORT, [v6]:PORT and unix:PATH', () => {
    expect(parseListenFlag('8080')).toEqual({ type: 'tcp', host: '127.0.0.1', port: 8080 });
    expect(parseListenFlag('0.0.0.0:9000')).toEqual({ type: 'tcp', host: '0.0.0.0', port: 9000 });
    expect(parseListenFlag('localhost:0')).toEqual({ type: 'tcp', host: 'localhost', port: 0 });
    expect(parseListenFlag('[::1]:80')).toEqual({ type: 'tcp', host: '::1', port: 80 });
    expect(parseListenFlag('unix:/tmp/x.sock')).toEqual({ type: 'unix', path: '/tmp/x.sock' });
  });
  it('refuses malformed values with a ConfigError', () => {
    for (const bad of ['', 'abc', '70000', '-1', ':80', 'a:b:80', 'host:', 'unix:', '1.2.3.4:99999']) {
      expect(() => parseListenFlag(bad), bad).toThrow(expect.objectContaining({ code: 'Config' }));
    }
  });
  it('formats addresses as it prints them', () => {
    expect(formatAddress({ type: 'tcp', host: '127.0.0.1', port: 4000 })).toBe('127.0.0.1:4000');
    expect(formatAddress({ type: 'tcp', host: '::1', port: 4000 })).toBe('[::1]:4000');
    expect(formatAddress({ type: 'unix', path: '/run/a.sock' })).toBe('unix:/run/a.sock');
  });
});
