// Fast start (docs/fast-start.md) in real VMs: boxes restored from one template run, keep to
// themselves (files, processes, entropy, clock) with the network identity every box has, and a
// damaged template means a cold boot, never a restore of it.
import { spawnSync } from 'node:child_process';
import crypto from 'node:crypto';
import fs from 'node:fs';
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, inject, it } from 'vitest';
import { JsBoxlite, type Box } from '../../dist/index.js';
import { boxlite, run, scratchHome } from './helpers.js';

let home: string;
let runtime: JsBoxlite;
let server: http.Server;
let serverPort: number;
/** The template of the default shape (opts()). */
let defaultKey: string;
const savedEnv = process.env.BOXLITE_FAST_START;
const savedMountedEnv = process.env.BOXLITE_FAST_START_MOUNTED;

const shimState = (box: Box) => JSON.parse(fs.readFileSync(path.join(home, 'boxes', box.id, 'shim.json'), 'utf8')) as { template?: string; bootMs: number };
const templateDirs = () => fs.readdirSync(path.join(home, 'templates')).filter((d) => /^[0-9a-f]{32}$/.test(d));
const opts = () => ({ rootfsPath: inject('image') as string, memoryMib: 256 });

beforeAll(async () => {
  home = scratchHome('boxlite-faststart-');
  process.env.BOXLITE_FAST_START = '1';
  // These suites are about the pre-mount template (every box's); the mounted one has its own below.
  process.env.BOXLITE_FAST_START_MOUNTED = '0';
  runtime = new JsBoxlite({ homeDir: home });
  server = http.createServer((req, res) => res.end(`host saw ${req.url}`));
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', () => r()));
  serverPort = (server.address() as AddressInfo).port;
});

afterAll(async () => {
  if (savedEnv === undefined) delete process.env.BOXLITE_FAST_START;
  else process.env.BOXLITE_FAST_START = savedEnv;
  if (savedMountedEnv === undefined) delete process.env.BOXLITE_FAST_START_MOUNTED;
  else process.env.BOXLITE_FAST_START_MOUNTED = savedMountedEnv;
  await runtime?.shutdown();
  server?.close();
  fs.rmSync(home, { recursive: true, force: true });
});

describe('fast start from a template', () => {
  let a: Box;
  let b: Box;

  afterAll(async () => {
    for (const box of [a, b]) if (box) await runtime.remove(box.id, true);
  });

  it('makes the template on first use and restores the box from it', async () => {
    a = await runtime.create(opts());
    await a.start();
    defaultKey = shimState(a).template!;
    expect(shimState(a).template).toMatch(/^[0-9a-f]{32}$/);
    expect(templateDirs()).toEqual([shimState(a).template]);
    const r = await run(a, 'sh', ['-c', 'echo hello from $(hostname); test -x /bin/busybox && echo rootfs']);
    expect(r).toMatchObject({ exitCode: 0, stdout: 'hello from boxlite\nrootfs\n' });
  });

  it('restores a second box from the same template, and the two share nothing', async () => {
    b = await runtime.create(opts());
    await b.start();
    expect(shimState(b).template).toBe(shimState(a).template);

    // Files: each box has its own disk overlay.
    expect((await run(a, 'sh', ['-c', 'echo only-a > /root/mark && sync'])).exitCode).toBe(0);
    expect((await run(b, 'cat', ['/root/mark'])).exitCode).not.toBe(0);

    // Processes: a sleeper in one is not in the other.
    const sleeper = await a.exec('sleep', ['300']);
    const inA = await run(a, 'sh', ['-c', 'ps -o args | grep -c "^sleep 300"']);
    const inB = await run(b, 'sh', ['-c', 'ps -o args | grep -c "^sleep 300"']);
    expect(inA.stdout.trim()).toBe('1');
    expect(inB.stdout.trim()).toBe('0');
    await sleeper.signal(9);
    await sleeper.wait();

    // Entropy: the kernel's CRNG was reseeded with host entropy in each restore.
    const draw = 'cat /proc/sys/kernel/random/uuid; head -c 32 /dev/urandom | od -An -tx1 | tr -d " \\n"';
    const [ra, rb] = await Promise.all([run(a, 'sh', ['-c', draw]), run(b, 'sh', ['-c', draw])]);
    const [uuidA, bytesA] = ra.stdout.trim().split('\n');
    const [uuidB, bytesB] = rb.stdout.trim().split('\n');
    expect(uuidA).toMatch(/^[0-9a-f-]{36}$/);
    expect(uuidA).not.toBe(uuidB);
    expect(bytesA).toMatch(/^[0-9a-f]{64}$/);
    expect(bytesA).not.toBe(bytesB);

    // Clock: set from the host at restore, not the template's save time.
    for (const box of [a, b]) {
      const t = Number((await run(box, 'date', ['+%s'])).stdout.trim());
      expect(Math.abs(t - Date.now() / 1000)).toBeLessThan(5);
    }
  });

  it("gives every restored box the fixed link identity and its own network stack", async () => {
    for (const box of [a, b]) {
      const id = await run(box, 'sh', ['-c', 'cat /sys/class/net/eth0/address; ip -4 addr show dev eth0 | grep -o "inet [0-9./]*"']);
      expect(id.stdout).toBe('52:54:00:12:34:56\ninet 192.168.127.2/24\n');
      const r = await run(box, 'wget', ['-qO-', `http://host.boxlite.internal:${serverPort}/${box.id}`]);
      expect(r).toMatchObject({ exitCode: 0, stdout: `host saw /${box.id}` });
    }
  });

  it('keeps the disk across a stop and a start (the restore brings the box its own overlay)', async () => {
    await a.stop();
    a = (await runtime.get(a.id))!;
    await a.start();
    expect(shimState(a).template).toBeTruthy();
    expect((await run(a, 'cat', ['/root/mark'])).stdout).toBe('only-a\n');
  });
});

describe('other shapes restore too', () => {
  it('exec-only boxes: with volumes (ro and rw), without network, with a secret, jailed', async () => {
    const ro = fs.mkdtempSync(path.join(home, 'ro-'));
    const rw = fs.mkdtempSync(path.join(home, 'rw-'));
    fs.writeFileSync(path.join(ro, 'in.txt'), 'from the host\n');
    const shape = { rootfsPath: inject('image') as string, memoryMib: 256, entrypoint: [], cmd: [] };
    const vol = {
      ...shape,
      volumes: [
        { hostPath: ro, guestPath: '/in', readOnly: true },
        { hostPath: rw, guestPath: '/out' },
      ],
    };
    const offline = { ...shape, network: { outbound: { mode: 'disabled' as const } } };
    const secret = { ...shape, secrets: [{ name: 'TOKEN', value: 'v', hosts: ['secret.test'] }] };
    // The syscall filter alone restores; with the jailer a box boots cold (templateIneligible).
    const filtered = { ...shape, security: { seccompEnabled: true } };
    const jailed = { ...shape, security: { jailerEnabled: true, seccompEnabled: true } };
    for (const o of [vol, offline, secret, filtered, jailed]) {
      // Twice: the first makes the shape's template, the second restores from an existing one.
      for (let i = 0; i < 2; i++) {
        const box = await runtime.create(o);
        try {
          await box.start();
          if (o === jailed) expect(shimState(box).template).toBeUndefined();
          else expect(shimState(box).template).toMatch(/^[0-9a-f]{32}$/);
          if (o === vol) {
            const r = await run(box, 'sh', ['-c', 'cat /in/in.txt; echo w > /out/o.txt; echo x > /in/x 2>/dev/null || echo ro']);
            expect(r.stdout).toBe('from the host\nro\n');
            expect(fs.readFileSync(path.join(rw, 'o.txt'), 'utf8')).toBe('w\n');
          } else if (o === offline) {
            expect((await run(box, 'ls', ['/sys/class/net'])).stdout).toBe('lo\n');
          } else if (o === jailed || o === filtered) {
            expect((await run(box, 'echo', ['jailed'])).stdout).toBe('jailed\n');
          } else {
            // The box CA arrived after RESUME and is in the container's trust store.
            expect((await run(box, 'grep', ['-c', 'BEGIN CERTIFICATE', '/etc/ssl/certs/ca-certificates.crt'])).exitCode).toBe(0);
          }
        } finally {
          await runtime.remove(box.id, true);
        }
      }
    }
    // One template per shape: a main process, a CA or policy are not part of it (they come in
    // RESUME), so the secret box restored the default shape's; two volumes and no network are
    // shapes of their own.
    expect(templateDirs().length).toBe(3);
    expect(templateDirs()).toContain(defaultKey);
  });
});

describe('a damaged template', () => {
  it('is never restored: the box boots cold, and the next one makes a new template', async () => {
    const key = defaultKey;
    const state = path.join(home, 'templates', key, 'state.bin');
    const size = fs.statSync(state).size;
    const fd = fs.openSync(state, 'r+');
    fs.writeSync(fd, Buffer.from('corrupt!'), 0, 8, Math.floor(size / 2));
    fs.closeSync(fd);

    const cold = await runtime.create(opts());
    try {
      await cold.start();
      expect(shimState(cold).template).toBeUndefined();
      expect((await run(cold, 'echo', ['cold'])).stdout).toBe('cold\n');
      expect(templateDirs()).not.toContain(key);
    } finally {
      await runtime.remove(cold.id, true);
    }

    const next = await runtime.create(opts());
    try {
      await next.start();
      expect(shimState(next).template).toBe(key);
      expect((await run(next, 'echo', ['warm'])).stdout).toBe('warm\n');
    } finally {
      await runtime.remove(next.id, true);
    }
  });

  it('that passes its checksum but QEMU refuses: the box boots cold and the template is removed', async () => {
    // A state that QEMU cannot load, with a manifest that vouches for it: the restore itself
    // fails, and the runtime falls back to a cold boot of the same box.
    const key = defaultKey;
    const dir = path.join(home, 'templates', key);
    expect(fs.existsSync(path.join(dir, 'manifest.json'))).toBe(true);
    const junk = Buffer.concat([Buffer.from('QEVM'), Buffer.alloc(1 << 20, 0x5a)]);
    fs.writeFileSync(path.join(dir, 'state.bin'), junk);
    const manifest = JSON.parse(fs.readFileSync(path.join(dir, 'manifest.json'), 'utf8'));
    manifest.state.size = junk.length;
    manifest.state.sha256 = crypto.createHash('sha256').update(junk).digest('hex');
    fs.writeFileSync(path.join(dir, 'manifest.json'), JSON.stringify(manifest));
    const box = await runtime.create(opts());
    try {
      await box.start();
      expect(shimState(box).template).toBeUndefined();
      expect((await run(box, 'echo', ['cold again'])).stdout).toBe('cold again\n');
      expect(fs.existsSync(dir)).toBe(false);
    } finally {
      await runtime.remove(box.id, true);
    }
    // The next box of the shape makes a new one and restores it.
    const next = await runtime.create(opts());
    try {
      await next.start();
      expect(shimState(next).template).toBe(key);
    } finally {
      await runtime.remove(next.id, true);
    }
  });

  it('truncated: the same', async () => {
    const key = defaultKey;
    fs.truncateSync(path.join(home, 'templates', key, 'state.bin'), 1000);
    const box = await runtime.create(opts());
    try {
      await box.start();
      expect(shimState(box).template).toBeUndefined();
      expect((await run(box, 'echo', ['ok'])).exitCode).toBe(0);
    } finally {
      await runtime.remove(box.id, true);
    }
  });
});

describe('a changed agent', () => {
  it('never restores the old template: a new one is made and the old one removed', async () => {
    const agent = path.join(home, 'boxlite-guest-changed');
    // The same agent plus one byte: a different initramfs, so a different template key.
    fs.writeFileSync(agent, Buffer.concat([fs.readFileSync(path.join(inject('root') as string, 'guest', 'build', 'boxlite-guest')), Buffer.from([0])]), { mode: 0o755 });
    const old = templateDirs();
    expect(old.length).toBeGreaterThan(0);
    process.env.BOXLITE_GUEST_AGENT = agent;
    const other = new JsBoxlite({ homeDir: home });
    try {
      const box = await other.create(opts());
      try {
        await box.start();
        const key = shimState(box).template;
        expect(key).toMatch(/^[0-9a-f]{32}$/);
        expect(old).not.toContain(key);
        expect((await run(box, 'echo', ['new agent'])).stdout).toBe('new agent\n');
        expect(templateDirs()).toEqual([key]);
      } finally {
        await other.remove(box.id, true);
      }
    } finally {
      delete process.env.BOXLITE_GUEST_AGENT;
      await other.shutdown();
    }
  });
});

describe('the host side of a restored start', () => {
  it('hands the next restored box a spare shim (started after the last one), and ends the spare on close', async () => {
    const first = await runtime.create(opts());
    await first.start();
    await runtime.remove(first.id, true);
    // The spare follows 300 ms after a restored box is ready, then loads (~100 ms).
    await new Promise((r) => setTimeout(r, 1_500));
    const before = Date.now();
    const box = await runtime.create(opts());
    try {
      await box.start();
      const state = JSON.parse(fs.readFileSync(path.join(home, 'boxes', box.id, 'shim.json'), 'utf8')) as {
        template?: string;
        timings: { origin: number; marks: Record<string, number> };
      };
      expect(state.template).toBe(defaultKey);
      // Its process started before this box was created, and had loaded before its config came.
      expect(state.timings.origin).toBeLessThan(before);
      expect(state.timings.marks.loaded).toBeLessThan(state.timings.marks.config!);
      // The network worker was preloaded: taking it is far from a worker's ~40 ms start.
      expect(state.timings.marks.net! - state.timings.marks.listening!).toBeLessThan(30);
      expect(await run(box, 'wget', ['-qO-', `http://host.boxlite.internal:${serverPort}/spare`])).toMatchObject({ exitCode: 0, stdout: 'host saw /spare' });
    } finally {
      await runtime.remove(box.id, true);
    }
    // A new spare follows this box; close() of a runtime ends it, the process is gone.
    await new Promise((r) => setTimeout(r, 1_500));
    const spares = () =>
      fs
        .readdirSync('/proc')
        .filter((p) => /^\d+$/.test(p))
        .filter((p) => {
          try {
            const stat = fs.readFileSync(`/proc/${p}/stat`, 'utf8');
            const ppid = Number(stat.slice(stat.lastIndexOf(')') + 2).split(' ')[1]);
            return ppid === process.pid && /boxlite-shim\.js/.test(fs.readFileSync(`/proc/${p}/cmdline`, 'utf8'));
          } catch {
            return false;
          }
        });
    expect(spares()).toHaveLength(1);
    const closeHome = scratchHome('boxlite-faststart-close-');
    new JsBoxlite({ homeDir: closeHome }).close();
    fs.rmSync(closeHome, { recursive: true, force: true });
    await new Promise((r) => setTimeout(r, 300));
    expect(spares()).toEqual([]);
  });
});

describe('boxlite warm', () => {
  it('makes the template ahead of time, and refuses bad input with a coded error', async () => {
    const h = scratchHome('boxlite-warm-');
    try {
      const r = await boxlite(['warm', '--rootfs', inject('image') as string, '--memory', '256'], undefined, h);
      expect(r.code).toBe(0);
      const key = /^template ([0-9a-f]{32}) ready in \d+ ms/.exec(r.stdout)?.[1];
      expect(key).toBeTruthy();
      expect(fs.existsSync(path.join(h, 'templates', key!, 'state.bin'))).toBe(true);
      // The proof box is gone again.
      expect(fs.readdirSync(path.join(h, 'boxes'))).toEqual([]);
      const bad = await boxlite(['warm'], undefined, h);
      expect(bad.code).not.toBe(0);
      expect(bad.stderr).toMatch(/configuration error: warm needs an IMAGE or --rootfs PATH/);
    } finally {
      fs.rmSync(h, { recursive: true, force: true });
    }
  });
});

describe('on by default (BOXLITE_FAST_START unset)', () => {
  it('boots the first box cold, makes the template behind it, restores the next; =0 turns it off', async () => {
    const h = scratchHome('boxlite-faststart-auto-');
    const saved = process.env.BOXLITE_FAST_START;
    delete process.env.BOXLITE_FAST_START;
    const rt = new JsBoxlite({ homeDir: h });
    const state = (box: Box) => JSON.parse(fs.readFileSync(path.join(h, 'boxes', box.id, 'shim.json'), 'utf8')) as { template?: string };
    const keys = () => (fs.existsSync(path.join(h, 'templates')) ? fs.readdirSync(path.join(h, 'templates')).filter((d) => /^[0-9a-f]{32}$/.test(d)) : []);
    try {
      const first = await rt.create(opts());
      expect((await run(first, 'echo', ['first'])).stdout).toBe('first\n');
      // Cold, and not held up by a build: no template existed and none was made before it.
      expect(state(first).template).toBeUndefined();
      await rt.remove(first.id, true);
      let key: string | undefined;
      for (let i = 0; i < 600 && !key; i++) {
        key = keys()[0];
        if (!key) await new Promise((r) => setTimeout(r, 100));
      }
      expect(key, fs.existsSync(path.join(h, 'templates', 'build.log')) ? fs.readFileSync(path.join(h, 'templates', 'build.log'), 'utf8') : 'no build log').toMatch(/^[0-9a-f]{32}$/);
      const next = await rt.create(opts());
      expect((await run(next, 'cat', ['/proc/sys/kernel/random/uuid'])).exitCode).toBe(0);
      expect(state(next).template).toBe(key);
      await rt.remove(next.id, true);

      process.env.BOXLITE_FAST_START = '0';
      const off = await rt.create(opts());
      expect((await run(off, 'echo', ['off'])).stdout).toBe('off\n');
      expect(state(off).template).toBeUndefined();
      await rt.remove(off.id, true);
    } finally {
      if (saved === undefined) delete process.env.BOXLITE_FAST_START;
      else process.env.BOXLITE_FAST_START = saved;
      await rt.shutdown();
      fs.rmSync(h, { recursive: true, force: true });
    }
  });
});

describe('the mounted template (on by default, never-booted disks)', () => {
  const boxes: Box[] = [];
  const savedMounted = process.env.BOXLITE_FAST_START_MOUNTED;
  const diskOf = (box: Box) => path.join(home, 'boxes', box.id, 'disk.qcow2');
  const manifestOf = (key: string) =>
    JSON.parse(fs.readFileSync(path.join(home, 'templates', key, 'manifest.json'), 'utf8')) as { inputs: { mounted?: { base: string } }; disk?: { file: string; sha256: string } };
  const sha = (file: string) => crypto.createHash('sha256').update(fs.readFileSync(file)).digest('hex');
  /** e2fsck -fn of the box's disk flattened to raw (its backing chain read by qemu-img). */
  const fsck = (box: Box) => {
    const tmp = fs.mkdtempSync(path.join(home, 'fsck-'));
    try {
      const raw = path.join(tmp, 'disk.raw');
      const conv = spawnSync('qemu-img', ['convert', '-U', '-O', 'raw', diskOf(box), raw], { encoding: 'utf8' });
      expect(conv.status, conv.stderr).toBe(0);
      const r = spawnSync('e2fsck', ['-fn', raw], { encoding: 'utf8' });
      return { status: r.status, out: `${r.stdout}${r.stderr}` };
    } finally {
      fs.rmSync(tmp, { recursive: true, force: true });
    }
  };

  beforeAll(() => {
    // The default (unset) is on.
    delete process.env.BOXLITE_FAST_START_MOUNTED;
  });
  afterAll(async () => {
    if (savedMounted === undefined) delete process.env.BOXLITE_FAST_START_MOUNTED;
    else process.env.BOXLITE_FAST_START_MOUNTED = savedMounted;
    for (const box of boxes) await runtime.remove(box.id, true).catch(() => undefined);
  });

  it('three boxes of one mounted template: own files, clean disks, no mount; a restart and a snapshot history get the pre-mount one', async () => {
    const [m1, m2, m3] = [await runtime.create(opts()), await runtime.create(opts()), await runtime.create(opts())];
    boxes.push(m1!, m2!, m3!);
    await m1!.start();
    const key = shimState(m1!).template!;
    expect(key).toMatch(/^[0-9a-f]{32}$/);
    const manifest = manifestOf(key);
    expect(manifest.inputs.mounted?.base).toBe(path.resolve(m1!.config.image.rootfsBase));
    const tplDisk = path.join(home, 'templates', key, manifest.disk!.file);
    // The digest recorded at the build is the template disk before any box ran.
    expect(sha(tplDisk)).toBe(manifest.disk!.sha256);
    await m2!.start();
    await m3!.start();
    for (const [i, box] of [m1!, m2!, m3!].entries()) {
      expect(shimState(box).template).toBe(key);
      // The restored guest did not mount again (and did not drop its disk cache).
      expect(fs.readFileSync(path.join(home, 'boxes', box.id, 'logs', 'console.log'), 'utf8')).toMatch(/RESUME: clock, entropy reset \(root already mounted\)/);
      const r = await run(box, 'sh', ['-c', `echo box-${i + 1} > /root/own-${i + 1} && sync && cat /root/own-${i + 1} && ls /root`]);
      expect(r.exitCode).toBe(0);
      expect(r.stdout).toBe(`box-${i + 1}\nown-${i + 1}\n`);
    }
    expect((await run(m2!, 'cat', ['/root/own-1'])).exitCode).not.toBe(0);
    for (const box of [m1!, m2!, m3!]) await box.stop();
    for (const box of [m1!, m2!, m3!]) {
      const r = fsck(box);
      expect(r.status, r.out).toBe(0);
    }
    // Box 1's disk has been booted now: the pre-mount template (or a cold boot), never the mounted one.
    const again = (await runtime.get(m1!.id))!;
    boxes[0] = again;
    await again.start();
    expect(shimState(again).template).not.toBe(key);
    expect(fs.readFileSync(path.join(home, 'boxes', again.id, 'logs', 'console.log'), 'utf8')).not.toMatch(/root already mounted/);
    expect((await run(again, 'cat', ['/root/own-1'])).stdout).toBe('box-1\n');
    await again.stop();
    expect(fsck(again).status).toBe(0);
    // A never-started box with a snapshot: its disk is an overlay of the snapshot, not of the image.
    const s = await runtime.create(opts());
    boxes.push(s);
    await s.snapshot.create('s0');
    await s.start();
    expect(shimState(s).template).not.toBe(key);
    expect((await run(s, 'sh', ['-c', 'test -x /bin/busybox && echo ok'])).stdout).toBe('ok\n');
    await s.stop();
    // No box wrote the template's overlay.
    expect(sha(tplDisk)).toBe(manifest.disk!.sha256);
  }, 240_000);
});
