import fs from 'node:fs';
import { describe, expect, it } from 'vitest';
import { ConfigError, UnsupportedError } from '../../src/errors/index.js';
import { defaultCommand, execEnvironment } from '../../src/runtime/image.js';
import { normalizeBoxOptions, validateExec, type BoxOptions } from '../../src/runtime/options.js';
import { resolveHome } from '../../src/store/home.js';

const layout = '/'; // any existing path stands in for an OCI layout here

function configError(fn: () => unknown): string {
  try {
    fn();
  } catch (err) {
    expect(err).toBeInstanceOf(ConfigError);
    return (err as Error).message;
  }
  throw new Error('expected a ConfigError');
}

describe('box options', () => {
  it('applies the reference defaults', () => {
    const o = normalizeBoxOptions({ rootfsPath: layout }, 4);
    expect(o).toMatchObject({ cpus: 1, memoryMib: 512, network: 'enabled', autoRemove: false, detach: false, env: [] });
  });

  it('names the field and the allowed range', () => {
    expect(configError(() => normalizeBoxOptions({ rootfsPath: layout, cpus: 0 }, 4))).toBe(
      'configuration error: cpus must be between 1 and 4 (host CPUs), got 0',
    );
    expect(configError(() => normalizeBoxOptions({ rootfsPath: layout, cpus: 5 }, 4))).toMatch(/cpus must be between 1 and 4/);
    expect(configError(() => normalizeBoxOptions({ rootfsPath: layout, memoryMib: 100 }, 4))).toBe(
      'configuration error: memoryMib must be between 128 and 65536 MiB, got 100',
    );
    expect(configError(() => normalizeBoxOptions({ rootfsPath: layout, env: [{ key: 'A', value: 'ok' }, { key: 'B=C', value: '' }] }, 4))).toMatch(
      /^configuration error: env\[1\]\.key must not contain '='/,
    );
    expect(configError(() => normalizeBoxOptions({ rootfsPath: layout, workingDir: 'rel' }, 4))).toMatch(/workingDir must be an absolute path/);
    expect(configError(() => normalizeBoxOptions({ rootfsPath: '/nope/nope' }, 4))).toBe('configuration error: rootfsPath does not exist: /nope/nope');
    expect(configError(() => normalizeBoxOptions({ rootfsPath: layout, cpus: '2' as unknown as number }, 4))).toMatch(/^configuration error: cpus /);
  });

  it('accepts the network shapes of the reference API and rejects mixing them', () => {
    expect(normalizeBoxOptions({ rootfsPath: layout, network: { mode: 'disabled' } }, 4).network).toBe('disabled');
    expect(normalizeBoxOptions({ rootfsPath: layout, network: { outbound: { mode: 'disabled' } } }, 4).network).toBe('disabled');
    expect(configError(() => normalizeBoxOptions({ rootfsPath: layout, network: { mode: 'enabled', outbound: { mode: 'enabled' } } }, 4))).toMatch(
      /cannot mix outbound/,
    );
  });

  it('refuses features this version does not implement (coded Unsupported) instead of ignoring them', () => {
    const unsupported = (o: BoxOptions): string => {
      try {
        normalizeBoxOptions({ rootfsPath: layout, ...o }, 4);
      } catch (err) {
        expect(err).toBeInstanceOf(UnsupportedError);
        expect((err as UnsupportedError).code).toBe('Unsupported');
        return (err as Error).message;
      }
      throw new Error(`expected an UnsupportedError for ${JSON.stringify(o)}`);
    };
    // Without a volume store (no runtime behind the options) a managed volume cannot resolve.
    expect(unsupported({ volumes: [{ managedVolume: 'data', guestPath: '/data' }] })).toBe(
      'unsupported: volumes[0].managedVolume: this runtime has no managed volumes',
    );
    expect(unsupported({ network: { inbound: { mode: 'enabled' } } })).toMatch(/^unsupported: network\.inbound\.mode "enabled"/);
    expect(unsupported({ security: { closeFds: false } })).toMatch(/^unsupported: security\.closeFds/);
    // Their default values change nothing and are accepted.
    const o = normalizeBoxOptions(
      {
        rootfsPath: layout,
        autoStop: 0,
        autoDelete: 0,
        autoResume: true,
        secrets: [],
        network: { outbound: { mode: 'enabled', allowNet: [] }, inbound: { mode: 'disabled', allowNet: [] } },
        security: { jailerEnabled: false, seccompEnabled: false, networkEnabled: true, closeFds: true },
        advanced: { capabilities: { add: [], drop: [] } },
      },
      4,
    );
    expect(o).toMatchObject({ network: 'enabled', autoDelete: 0, autoResume: true, autoRemove: false });
    // Shapes are still checked first, as configuration errors.
    expect(configError(() => normalizeBoxOptions({ rootfsPath: layout, ports: [{}] as never }, 4))).toMatch(/^configuration error: ports\[0\]\.guestPort is required/);
    expect(configError(() => normalizeBoxOptions({ rootfsPath: layout, autoStop: -1 }, 4))).toMatch(/^configuration error: autoStop must be >= 0/);
    expect(configError(() => normalizeBoxOptions({ rootfsPath: layout, security: { maxMemory: 1.5 } }, 4))).toMatch(/^configuration error: security\.maxMemory must be an integer/);
    expect(configError(() => normalizeBoxOptions({ rootfsPath: layout, network: { inbound: {} } as never }, 4))).toMatch(/^configuration error: network\.inbound\.mode/);
    expect(configError(() => normalizeBoxOptions({ rootfsPath: layout, security: { maxFiles: 1 } as never }, 4))).toBe(
      'configuration error: security has no field "maxFiles"',
    );
    expect(configError(() => normalizeBoxOptions({ rootfsPath: layout, autoremove: true } as never, 4))).toBe('configuration error: options has no field "autoremove"');
  });

  it('defaults the image to alpine:latest, as the reference does', () => {
    expect(normalizeBoxOptions({}, 4).image).toBe('alpine:latest');
    expect(normalizeBoxOptions({ image: 'busybox' }, 4).image).toBe('busybox');
    expect(normalizeBoxOptions({ rootfsPath: layout, image: 'busybox' }, 4).image).toBeUndefined();
  });

  it('lets an explicit autoDelete win over the deprecated autoRemove, and refuses detach with auto-remove', () => {
    expect(normalizeBoxOptions({ rootfsPath: layout, autoRemove: true }, 4).autoRemove).toBe(true);
    expect(normalizeBoxOptions({ rootfsPath: layout, autoRemove: true, autoDelete: 0 }, 4).autoRemove).toBe(false);
    expect(configError(() => normalizeBoxOptions({ rootfsPath: layout, detach: true, autoRemove: true }, 4))).toMatch(
      /^configuration error: detach: true cannot be combined with auto-remove/,
    );
    expect(normalizeBoxOptions({ rootfsPath: layout, detach: true, autoRemove: false }, 4).detach).toBe(true);
  });

  it('validates host path volumes', () => {
    const vol = (v: Record<string, unknown>) => normalizeBoxOptions({ rootfsPath: layout, volumes: [v as never] }, 4);
    expect(vol({ hostPath: '/tmp', guestPath: '/data/', readOnly: true }).volumes).toEqual([
      { hostPath: fs.realpathSync('/tmp'), guestPath: '/data', readOnly: true },
    ]);
    expect(vol({ hostPath: '/tmp', guestPath: '/data' }).volumes![0]!.readOnly).toBe(false);
    expect(normalizeBoxOptions({ rootfsPath: layout }, 4).volumes).toEqual([]);
    expect(configError(() => vol({ hostPath: '/nope/nope', guestPath: '/data' }))).toMatch(/volumes\[0\]\.hostPath does not exist/);
    expect(configError(() => vol({ guestPath: '/data' }))).toMatch(/volumes\[0\]\.hostPath is required/);
    expect(configError(() => vol({ hostPath: '/etc/hostname', guestPath: '/data' }))).toMatch(/volumes\[0\]\.hostPath must be a directory/);
    expect(configError(() => vol({ hostPath: '/tmp', guestPath: 'data' }))).toMatch(/volumes\[0\]\.guestPath must be an absolute path/);
    expect(configError(() => vol({ hostPath: '/tmp', guestPath: '/' }))).toMatch(/volumes\[0\]\.guestPath must not be \//);
    expect(
      configError(() =>
        normalizeBoxOptions({ rootfsPath: layout, volumes: [{ hostPath: '/tmp', guestPath: '/a' }, { hostPath: '/', guestPath: '/a/' }] }, 4),
      ),
    ).toMatch(/volumes\[1\]\.guestPath \/a is already used by volumes\[0\]/);
  });

  it('validates exec arguments', () => {
    expect(configError(() => validateExec('', [], {}))).toMatch(/command must be a non-empty string/);
    expect(configError(() => validateExec('ls', [1] as unknown as string[], {}))).toMatch(/args must be an array of strings/);
    expect(configError(() => validateExec('ls', [], { env: [['=x', 'y']] }))).toMatch(/env\[0\]/);
    expect(configError(() => validateExec('ls', [], { timeoutSecs: -1 }))).toMatch(/timeoutSecs must be a positive/);
    expect(() => validateExec('ls', ['-l'], { env: [['A', 'b']], timeoutSecs: 2, workingDir: '/tmp' })).not.toThrow();
  });
});

describe('image run config', () => {
  it('merges env with docker precedence and supplies PATH', () => {
    expect(execEnvironment(['PATH=/img', 'A=image', 'B=image'], [['B', 'box']], [['C', 'exec'], ['A', 'exec']])).toEqual([
      'PATH=/img',
      'A=exec',
      'B=box',
      'C=exec',
      'HOME=/root',
    ]);
    expect(execEnvironment(undefined, [], [])[0]).toMatch(/^PATH=.*\/bin/);
  });

  it('derives the default command like docker', () => {
    const image = { Entrypoint: ['/entry'], Cmd: ['--flag'] };
    expect(defaultCommand(image, {})).toEqual(['/entry', '--flag']);
    expect(defaultCommand(image, { cmd: ['x'] })).toEqual(['/entry', 'x']);
    expect(defaultCommand(image, { entrypoint: ['sh'] })).toEqual(['sh']);
    expect(defaultCommand({ Cmd: ['sh'] }, {})).toEqual(['sh']);
  });
});

describe('home', () => {
  it('follows homeDir, then BOXLITE_HOME, then ~/.boxlite', () => {
    expect(resolveHome('/x/home').boxes).toBe('/x/home/boxes');
    expect(resolveHome(undefined, { BOXLITE_HOME: '/y' }).root).toBe('/y');
    expect(resolveHome(undefined, {}).root).toMatch(/\.boxlite$/);
  });

  it('refuses a home too long for unix socket paths', () => {
    expect(configError(() => resolveHome('/' + 'a'.repeat(90)))).toMatch(/homeDir is too long for unix sockets/);
  });
});
