// The reference's public surface without a VM: SimpleBox's constructor checks and what it forwards,
// credentials and REST options, runtime close()/shutdown(), and the coded Unsupported errors of
// what later issues deliver.
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import {
  ApiKeyCredential,
  Box,
  BoxliteRestOptions,
  getJsBoxlite,
  getNativeModule,
  JsBoxlite,
  SimpleBox,
  GUEST_IP,
  type SimpleBoxOptions,
} from '../../src/index.js';
import { GUEST_NET } from '../../src/vmm/qemu.js';

const homes: string[] = [];
function runtime(): JsBoxlite {
  const home = fs.mkdtempSync(path.join(os.tmpdir(), 'bl-sdk-'));
  homes.push(home);
  return new JsBoxlite({ homeDir: home });
}
afterAll(() => {
  for (const h of homes) fs.rmSync(h, { recursive: true, force: true });
});

async function rejection(p: Promise<unknown>): Promise<Error & { code?: string }> {
  try {
    await p;
  } catch (err) {
    return err as Error & { code?: string };
  }
  throw new Error('expected a rejection');
}

function typeError(options: unknown): string {
  try {
    new SimpleBox({ runtime: rt, ...(options as SimpleBoxOptions) });
  } catch (err) {
    expect(err).toBeInstanceOf(TypeError);
    return (err as Error).message;
  }
  throw new Error(`expected a TypeError for ${JSON.stringify(options)}`);
}

const rt = runtime();

describe('SimpleBox constructor', () => {
  it('rejects the removed allowNet and malformed network shapes with the reference TypeError texts', () => {
    expect(typeError({ allowNet: ['x'] })).toBe('SimpleBoxOptions.allowNet was removed. Use network: { outbound: { mode, allowNet } }.');
    expect(typeError({ network: 'enabled' })).toBe('SimpleBoxOptions.network must be an object. Use network: { outbound, inbound }.');
    expect(typeError({ network: { mode: 'enabled', outbound: { mode: 'enabled' } } })).toBe(
      'SimpleBoxOptions.network cannot mix outbound with the deprecated mode/allowNet. Use network: { outbound: { mode, allowNet }, inbound }.',
    );
    expect(typeError({ network: {} })).toBe('SimpleBoxOptions.network must include outbound or inbound.');
    expect(typeError({ network: { mode: 1 } })).toBe('SimpleBoxOptions.network.mode must be "enabled" or "disabled".');
    expect(typeError({ network: { mode: 'enabled', allowNet: 'x' } })).toBe('SimpleBoxOptions.network.allowNet must be an array.');
    expect(typeError({ network: { inbound: 'x' } })).toBe('SimpleBoxOptions.network.inbound must be an object.');
    expect(typeError({ network: { outbound: {} } })).toBe('SimpleBoxOptions.network.outbound.mode is required and must be "enabled" or "disabled".');
  });

  it('checks security limits as u64 numbers with the reference TypeError texts', () => {
    expect(typeError({ security: { maxOpenFiles: Infinity } })).toBe('Invalid security option `security.maxOpenFiles`: number must be finite');
    expect(typeError({ security: { maxFileSize: 1.5 } })).toBe('Invalid security option `security.maxFileSize`: number must be an integer');
    expect(typeError({ security: { maxProcesses: -1 } })).toBe('Invalid security option `security.maxProcesses`: number must be >= 0');
    expect(typeError({ security: { maxMemory: 2 ** 60 } })).toBe('Invalid security option `security.maxMemory`: number exceeds Number.MAX_SAFE_INTEGER');
    expect(typeError({ security: { maxCpuTime: NaN } })).toBe('Invalid security option `security.maxCpuTime`: number must be finite');
  });

  it('forwards every option the reference forwards', () => {
    class Probe extends SimpleBox {
      get opts() {
        return this._boxOpts;
      }
    }
    const volumes = [{ hostPath: '/tmp', guestPath: '/data', readOnly: true }];
    const secrets = [{ name: 'k', value: 'v', hosts: ['a.example'] }];
    const add = ['NET_ADMIN'];
    const p = new Probe({
      runtime: rt,
      image: 'busybox',
      cpus: 1,
      memoryMib: 256,
      diskSizeGb: 2,
      workingDir: '/root',
      env: { A: 'b' },
      volumes,
      network: { outbound: { mode: 'disabled' } },
      ports: [{ guestPort: 80 }],
      entrypoint: ['sh'],
      cmd: ['-c', 'true'],
      user: '1000',
      secrets,
      security: { maxOpenFiles: 64, closeFds: true },
      advanced: { capabilities: { add } },
    });
    expect(p.opts).toMatchObject({
      image: 'busybox',
      autoRemove: true,
      detach: false,
      env: [{ key: 'A', value: 'b' }],
      volumes,
      network: { outbound: { mode: 'disabled' } },
      secrets,
      security: { maxOpenFiles: 64, closeFds: true },
      advanced: { capabilities: { add: ['NET_ADMIN'], drop: [] } },
      user: '1000',
    });
    // The capability lists are copies, as in the reference.
    expect(p.opts.advanced!.capabilities!.add).not.toBe(add);
  });

  it('fails on first use, not silently, when a forwarded option is invalid', async () => {
    // Secrets are forwarded (and implemented); one without hosts could never be used: refused.
    const box = new SimpleBox({ runtime: rt, rootfsPath: '/', secrets: [{ name: 'k', value: 'v' }] });
    const err = await rejection(box.exec('true'));
    expect(err.code).toBe('Config');
    expect(err.message).toMatch(/^configuration error: secrets\[0\]\.hosts must list at least one host/);
    const detached = await rejection(new SimpleBox({ runtime: rt, rootfsPath: '/', detach: true }).exec('true'));
    expect(detached.code).toBe('Config');
    expect(detached.message).toMatch(/detach: true cannot be combined with auto-remove/);
  });

  it('reports "Box not yet created" before first use, and a tunnel port out of range as a RangeError', async () => {
    const box = new SimpleBox({ runtime: rt });
    expect(() => box.id).toThrow(/^invalid state: Box not yet created\. Call exec\(\) first or use getId\(\) async method\.$/);
    expect((await rejection(box.info())).code).toBe('InvalidState');
    await expect(box.network.tunnel(0)).rejects.toThrow(RangeError);
    await expect(box.tunnel(70000)).rejects.toThrow('port must be an integer between 1 and 65535');
  });
});

describe('box types, REST, import, volumes, snapshots, tunnels', () => {
  it('JsBoxlite.rest checks its options and returns a REST runtime (test/unit/rest-client*.test.ts)', () => {
    const options = new BoxliteRestOptions({ url: 'http://127.0.0.1:8100', credential: new ApiKeyCredential('k'), pathPrefix: 'acme' });
    expect([options.url, options.pathPrefix, options.credential?.getToken()]).toEqual(['http://127.0.0.1:8100', 'acme', { token: 'k', expiresAt: null }]);
    expect(typeof JsBoxlite.rest(options).listInfo).toBe('function');
    expect(() => JsBoxlite.rest({} as never)).toThrow(/^invalid argument: JsBoxlite.rest needs BoxliteRestOptions with a url/);
  });

  it('importBox and box.snapshot are real (issue 11): bad input is a coded error, not Unsupported (test/unit/snapshot.test.ts, archive.test.ts)', async () => {
    const box = new Box({} as never, { id: 'x', options: {}, image: {} } as never);
    const missing = await rejection(rt.importBox('/nonexistent/a.boxlite'));
    expect([missing.code, missing.message]).toEqual(['NotFound', 'archive not found: /nonexistent/a.boxlite']);
    expect((await rejection(box.snapshot.create('../s'))).code).toBe('InvalidArgument');
    expect((await rejection(box.snapshot.restore(''))).code).toBe('InvalidArgument');
  });

  it('box.network.tunnel refuses a box without a network (InvalidState) and a bad port (RangeError)', async () => {
    const box = new Box({} as never, { id: 'x', options: { network: 'disabled' }, image: {} } as never);
    const err = await rejection(box.network.tunnel(80));
    expect(err.code).toBe('InvalidState');
    expect(err.message).toMatch(/has no network/);
    await expect(box.network.tunnel(0)).rejects.toThrow(RangeError);
  });

  it('ApiKeyCredential.fromEnv reads BOXLITE_API_KEY; empty or unset is null', () => {
    const saved = process.env.BOXLITE_API_KEY;
    try {
      process.env.BOXLITE_API_KEY = 'blk_live_1';
      expect(ApiKeyCredential.fromEnv()?.getToken()).toEqual({ token: 'blk_live_1', expiresAt: null });
      process.env.BOXLITE_API_KEY = '';
      expect(ApiKeyCredential.fromEnv()).toBeNull();
      delete process.env.BOXLITE_API_KEY;
      expect(ApiKeyCredential.fromEnv()).toBeNull();
    } finally {
      if (saved === undefined) delete process.env.BOXLITE_API_KEY;
      else process.env.BOXLITE_API_KEY = saved;
    }
  });

  it('GUEST_IP is the address the guest is really given', () => {
    expect(GUEST_NET.ip).toBe(`${GUEST_IP}/24`);
  });

  it('getNativeModule and getJsBoxlite hand out the package classes', () => {
    expect(getJsBoxlite()).toBe(JsBoxlite);
    const native = getNativeModule();
    expect(native.JsBoxlite).toBe(JsBoxlite);
    expect(native.ApiKeyCredential).toBe(ApiKeyCredential);
    expect(new native.JsBoxliteRestOptions('http://x', null, 'p')).toMatchObject({ url: 'http://x', pathPrefix: 'p' });
  });
});

describe('runtime close and shutdown', () => {
  it('close() is synchronous; every later call fails with InvalidState; close twice is harmless', async () => {
    const r = runtime();
    expect(await r.listInfo()).toEqual([]);
    expect(r.close()).toBeUndefined();
    r.close();
    for (const p of [r.listInfo(), r.get('x'), r.getInfo('x'), r.create({ rootfsPath: '/' }), r.remove('x'), r.images.list(), r.images.pull('busybox')]) {
      const err = await rejection(p);
      expect(err.code).toBe('InvalidState');
      expect(err.message).toBe('invalid state: runtime was closed; create a new JsBoxlite');
    }
  });

  it('shutdown() with no running box closes the runtime; a bad timeout is InvalidArgument', async () => {
    const r = runtime();
    expect((await rejection(r.shutdown(-5))).code).toBe('InvalidArgument');
    await r.shutdown();
    expect((await rejection(r.listInfo())).message).toBe('invalid state: runtime was shut down; create a new JsBoxlite');
    await r.shutdown(); // already down: nothing to do
  });

  it('withDefaultConfig() after the default runtime was closed gives a fresh one', () => {
    const home = fs.mkdtempSync(path.join(os.tmpdir(), 'bl-def-'));
    homes.push(home);
    JsBoxlite.initDefault({ homeDir: home });
    const a = JsBoxlite.withDefaultConfig();
    expect(JsBoxlite.withDefaultConfig()).toBe(a);
    a.close();
    const b = JsBoxlite.withDefaultConfig();
    expect(b).not.toBe(a);
    b.close();
    JsBoxlite.initDefault({});
  });
});
