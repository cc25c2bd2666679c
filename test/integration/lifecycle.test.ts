import { execFileSync, spawn } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { describe, expect, inject, it } from 'vitest';
import { ConfigError, EngineError, JsBoxlite, PortalError, SimpleBox, StoppedError } from '../../dist/index.js';
import { scratchHome } from './helpers.js';

function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
}

async function waitGone(pids: number[], ms: number): Promise<boolean> {
  const deadline = Date.now() + ms;
  while (Date.now() < deadline) {
    if (pids.every((p) => !alive(p))) return true;
    await new Promise((r) => setTimeout(r, 100));
  }
  return false;
}

describe('SimpleBox', () => {
  it('runs commands and removes itself on dispose', async () => {
    const runtime = new JsBoxlite({ homeDir: inject('home') });
    let id: string;
    {
      await using box = new SimpleBox({ rootfsPath: inject('image'), runtime });
      const r = await box.exec('sh', '-c', 'echo "$0 $1"', 'a', 'b');
      expect(r).toEqual({ exitCode: 0, stdout: 'a b\n', stderr: '' });
      const withEnv = await box.exec('sh', ['-c', 'echo $X'], { X: 'y' });
      expect(withEnv.stdout).toBe('y\n');
      id = box.id;
      expect((await box.info()).state.status).toBe('running');
      const m = await box.metrics();
      expect(m.commandsExecutedTotal).toBe(2);
      expect(m.guestBootDurationMs).toBeGreaterThan(0);
    }
    expect(await runtime.get(id)).toBeNull();
  });
});

describe('process lifetime', () => {
  it('takes the shim and QEMU down when the creating process is SIGKILLed', async () => {
    const script = `
      import { JsBoxlite } from ${JSON.stringify(path.join(inject('root'), 'dist', 'index.js'))};
      const rt = new JsBoxlite({ homeDir: ${JSON.stringify(inject('home'))} });
      const box = await rt.create({ rootfsPath: ${JSON.stringify(inject('image'))} });
      const ex = await box.exec('sleep', ['600']);
      const info = await box.info();
      const shim = JSON.parse((await import('node:fs')).readFileSync(${JSON.stringify(path.join(inject('home'), 'boxes'))} + '/' + box.id + '/shim.json', 'utf8'));
      console.log(JSON.stringify({ id: box.id, qemuPid: info.state.pid, shimPid: shim.shimPid }));
      setInterval(() => {}, 1000);
    `;
    const child = spawn(process.execPath, ['--input-type=module', '-e', script], { stdio: ['ignore', 'pipe', 'inherit'] });
    const line = await new Promise<string>((resolve) => {
      let buf = '';
      child.stdout.on('data', (c) => {
        buf += c;
        if (buf.includes('\n')) resolve(buf.split('\n')[0]!);
      });
    });
    const { id, qemuPid, shimPid } = JSON.parse(line) as { id: string; qemuPid: number; shimPid: number };
    expect(alive(qemuPid) && alive(shimPid)).toBe(true);
    child.kill('SIGKILL');
    expect(await waitGone([qemuPid, shimPid], 10_000)).toBe(true);
    const runtime = new JsBoxlite({ homeDir: inject('home') });
    expect((await runtime.getInfo(id))?.state.status).toBe('stopped');
    await runtime.remove(id);
    expect(await runtime.get(id)).toBeNull();
  });
});

describe('recovery and shared homes', () => {
  it('a box whose shim or QEMU is killed -9 is seen as stopped, leaves no process, and starts again', async () => {
    const runtime = new JsBoxlite({ homeDir: inject('home') });
    const box = await runtime.create({ rootfsPath: inject('image') });
    try {
      for (const victim of ['shim', 'qemu'] as const) {
        await box.start();
        const ex = await box.exec('sh', ['-c', 'echo persisted-$0 >> /root/log; sync', victim]);
        expect((await ex.wait()).exitCode).toBe(0);
        const shim = JSON.parse(fs.readFileSync(path.join(inject('home'), 'boxes', box.id, 'shim.json'), 'utf8'));
        process.kill(victim === 'shim' ? shim.shimPid : shim.qemuPid, 'SIGKILL');
        expect(await waitGone([shim.shimPid, shim.qemuPid], 10_000)).toBe(true);
        const info = await new JsBoxlite({ homeDir: inject('home') }).getInfo(box.id);
        expect(info?.state.status).toBe('stopped');
        // As in the reference, the next exec boots the stopped box again (same handle: it was never stop()ped).
        const late = await box.exec('true');
        expect((await late.wait()).exitCode).toBe(0);
        expect((await box.info()).state.status).toBe('running');
      }
      const log = await box.exec('cat', ['/root/log']);
      const out = await (await log.stdout()).next();
      expect(out).toBe('persisted-shim\npersisted-qemu\n');
    } finally {
      await runtime.remove(box.id, true);
    }
  });

  it("handles as the reference's: get() of a stopped box boots on use; a handle is spent after stop()", async () => {
    const runtime = new JsBoxlite({ homeDir: inject('home') });
    const created = await runtime.create({ rootfsPath: inject('image') });
    const hostFile = path.join(os.tmpdir(), `boxlite-handle-${process.pid}.txt`);
    fs.writeFileSync(hostFile, 'kept across handles\n');
    try {
      // A handle from get() on a configured box: copyIn boots it.
      const h1 = (await runtime.get(created.id))!;
      expect((await h1.info()).state.status).toBe('configured');
      await h1.copyIn(hostFile, '/root/');
      expect((await h1.info()).state.status).toBe('running');
      await h1.stop();

      const message = 'stopped: Handle invalidated after stop(). Use runtime.get() to get a new handle.';
      const calls: Array<[string, () => Promise<unknown>]> = [
        ['exec', () => h1.exec('true')],
        ['start', () => h1.start()],
        ['metrics', () => h1.metrics()],
        ['copyIn', () => h1.copyIn(hostFile, '/root/')],
        ['copyOut', () => h1.copyOut('/root/x', os.tmpdir())],
      ];
      for (const [what, call] of calls) {
        const err = await call().then(
          () => new Error(`${what} resolved`),
          (e: unknown) => e,
        );
        expect(err, what).toBeInstanceOf(StoppedError);
        expect((err as StoppedError).code, what).toBe('Stopped');
        expect((err as Error).message, what).toBe(message);
      }
      // info() still answers, and stop() again is a no-op (so `await using` after stop() is fine).
      expect((await h1.info()).state.status).toBe('stopped');
      await h1.stop();
      // The console log outlives the VM and the handle: its last 2 lines, exactly.
      const chunks: Buffer[] = [];
      for await (const c of h1.logs({ tail: 2, follow: true, console: true })) chunks.push(c);
      const tail = Buffer.concat(chunks).toString('utf8');
      expect(tail.replace(/\n$/, '').split('\n')).toHaveLength(2);
      expect((await h1.inspect()).paths.consoleLog).toMatch(/boxes\/[0-9A-Z]{26}\/logs\/console\.log$/);

      // A new handle on the stopped box: exec boots it, and the disk kept the file.
      const h2 = (await runtime.get(created.id))!;
      expect(h2).not.toBe(h1);
      expect((await h2.info()).state.status).toBe('stopped');
      const ex = await h2.exec('cat', ['/root/' + path.basename(hostFile)]);
      expect(await (await ex.stdout()).next()).toBe('kept across handles\n');
      expect((await ex.wait()).exitCode).toBe(0);
      await h2.stop();

      // metrics() boots a stopped box too, and then reports the live VM.
      const h3 = (await runtime.get(created.id))!;
      const m = await h3.metrics();
      expect((await h3.info()).state.status).toBe('running');
      expect(m.memoryBytes).toBeGreaterThan(0);
      await h3.stop();
    } finally {
      fs.rmSync(hostFile, { force: true });
      await runtime.remove(created.id, true);
    }
  });

  it('keeps names unique when several processes create boxes at once', async () => {
    const script = `
      import { JsBoxlite } from ${JSON.stringify(path.join(inject('root'), 'dist', 'index.js'))};
      const rt = new JsBoxlite({ homeDir: ${JSON.stringify(inject('home'))} });
      try { const b = await rt.create({ rootfsPath: ${JSON.stringify(inject('image'))} }, 'contended'); console.log('created ' + b.id); }
      catch (e) { console.log('refused ' + e.code); }
    `;
    const run = () =>
      new Promise<string>((resolve) => {
        const c = spawn(process.execPath, ['--input-type=module', '-e', script], { stdio: ['ignore', 'pipe', 'inherit'] });
        let out = '';
        c.stdout.on('data', (d) => (out += d));
        c.on('close', () => resolve(out.trim()));
      });
    const results = await Promise.all([run(), run(), run(), run()]);
    expect(results.filter((r) => r.startsWith('created')).length).toBe(1);
    expect(results.filter((r) => r === 'refused AlreadyExists').length).toBe(3);
    const runtime = new JsBoxlite({ homeDir: inject('home') });
    await runtime.remove('contended');
  });
});

describe('detach, many boxes, metrics', () => {
  it('a detached box outlives its creator and another process reattaches and execs', async () => {
    const script = `
      import { JsBoxlite } from ${JSON.stringify(path.join(inject('root'), 'dist', 'index.js'))};
      const rt = new JsBoxlite({ homeDir: ${JSON.stringify(inject('home'))} });
      const box = await rt.create({ rootfsPath: ${JSON.stringify(inject('image'))}, detach: true }, 'detached-sdk');
      const ex = await box.exec('sh', ['-c', 'echo from-creator > /root/mark']);
      await ex.wait();
      console.log(box.id);
      process.exit(0);
    `;
    const id = await new Promise<string>((resolve, reject) => {
      const c = spawn(process.execPath, ['--input-type=module', '-e', script], { stdio: ['ignore', 'pipe', 'inherit'] });
      let out = '';
      c.stdout.on('data', (d) => (out += d));
      c.on('close', (code) => (code === 0 ? resolve(out.trim()) : reject(new Error(`creator exited ${code}`))));
    });
    const runtime = new JsBoxlite({ homeDir: inject('home') });
    try {
      expect((await runtime.getInfo('detached-sdk'))?.state.status).toBe('running');
      const box = (await runtime.get(id))!;
      const ex = await box.exec('cat', ['/root/mark']);
      expect(await (await ex.stdout()).next()).toBe('from-creator\n');
      expect((await ex.wait()).exitCode).toBe(0);
    } finally {
      await runtime.remove(id, true);
    }
  });

  it('runs 8 boxes at once, each answering correctly, and counts them in the metrics', async () => {
    const runtime = new JsBoxlite({ homeDir: inject('home') });
    const boxes = await Promise.all(Array.from({ length: 8 }, () => runtime.create({ rootfsPath: inject('image'), memoryMib: 256 })));
    try {
      // Every boot settles before the finally removes the boxes, and each failure names its box:
      // one box failing among eight must say which and why (its shim log tail is in the message).
      const settled = await Promise.allSettled(
        boxes.map(async (box, i) => {
          const ex = await box.exec('sh', ['-c', `echo box-${i} $(hostname)`]);
          const line = await (await ex.stdout()).next();
          await ex.wait();
          return line;
        }),
      );
      const failed = settled.flatMap((r, i) => (r.status === 'rejected' ? [`box ${i} ${boxes[i]!.id}: ${(r.reason as Error).message}`] : []));
      expect(failed, failed.join('\n')).toEqual([]);
      const outputs = settled.map((r) => (r as PromiseFulfilledResult<string | null>).value);
      expect(outputs).toEqual(boxes.map((_, i) => `box-${i} boxlite\n`));
      const rm = await runtime.metrics();
      expect(rm.boxesCreatedTotal).toBe(8);
      expect(rm.numRunningBoxes).toBe(8);
      expect(rm.totalCommandsExecuted).toBe(8);
      const m = await boxes[0]!.metrics();
      expect(m.commandsExecutedTotal).toBe(1);
      expect(m.bytesReceivedTotal).toBeGreaterThan(0);
      expect(m.memoryBytes).toBeGreaterThan(32 * 1024 * 1024);
      expect(m.cpuPercent).toBeGreaterThanOrEqual(0);
      expect(m.guestBootDurationMs).toBeGreaterThan(100);
      for (const stage of ['stageFilesystemSetupMs', 'stageImagePrepareMs', 'stageGuestRootfsMs', 'stageBoxConfigMs', 'stageBoxSpawnMs', 'stageContainerInitMs'] as const) {
        expect(m[stage], stage).toBeGreaterThanOrEqual(0);
      }
      expect(m.totalCreateDurationMs).toBeGreaterThanOrEqual(m.stageBoxSpawnMs!);
    } finally {
      await Promise.all(boxes.map((b) => runtime.remove(b.id, true)));
    }
    expect((await runtime.metrics()).numRunningBoxes).toBe(0);
  });

  it('boxlite create makes a configured box that start boots and rm -a -f removes', async () => {
    const bin = path.join(inject('root'), 'dist', 'cli', 'main.js');
    const home = scratchHome();
    try {
      const cli = (args: string[]) => execFileSync(process.execPath, [bin, '--home', home, ...args], { encoding: 'utf8' });
      const id = cli(['create', '--name', 'made', '--rootfs', inject('image'), '--disk-size', '2']).trim();
      expect(cli(['ls', '-a', '--format', '{{.name}} {{.state.status}}'])).toBe('made configured\n');
      cli(['start', 'made']);
      expect(cli(['exec', id, 'sh', '-c', "df -k / | awk 'NR==2{print ($2 > 1800000)}'"])).toBe('1\n');
      cli(['rm', '-a', '-f']);
      expect(cli(['ls', '-a', '-q'])).toBe('');
    } finally {
      fs.rmSync(home, { recursive: true, force: true });
    }
  });
});

describe('bad input and failed boots', () => {
  it('rejects invalid options with a Config error naming the field, before creating anything', async () => {
    const home = scratchHome();
    const runtime = new JsBoxlite({ homeDir: home });
    const image = inject('image');
    const cases: Array<[object, RegExp]> = [
      [{ rootfsPath: image, cpus: 0 }, /^configuration error: cpus must be between 1 and \d+/],
      [{ rootfsPath: image, cpus: os.cpus().length + 1 }, /^configuration error: cpus must be between 1 and/],
      [{ rootfsPath: image, cpus: 1.5 }, /^configuration error: cpus must be an integer/],
      [{ rootfsPath: image, memoryMib: 127 }, /^configuration error: memoryMib must be between 128 and 65536/],
      [{ rootfsPath: image, memoryMib: 65537 }, /^configuration error: memoryMib must be between 128 and 65536/],
      [{ rootfsPath: '/definitely/missing' }, /^configuration error: rootfsPath does not exist/],
      [{ rootfsPath: image, env: [{ key: 'A=B', value: 'x' }] }, /^configuration error: env\[0\]\.key/],
      [{ rootfsPath: image, env: [{ key: '', value: 'x' }] }, /^configuration error: env\[0\]\.key/],
      [{ rootfsPath: image, detach: true, autoRemove: true }, /^configuration error: detach: true cannot be combined with auto-remove/],
    ];
    for (const [options, message] of cases) {
      const err = await runtime.create(options).catch((e: unknown) => e);
      expect(err, JSON.stringify(options)).toBeInstanceOf(ConfigError);
      expect((err as ConfigError).code).toBe('Config');
      expect((err as Error).message).toMatch(message);
    }
    expect(fs.existsSync(path.join(home, 'boxes')) ? fs.readdirSync(path.join(home, 'boxes')) : []).toEqual([]);
    fs.rmSync(home, { recursive: true, force: true });
  });

  it('reports a QEMU that dies during boot as an Engine error with the last console lines, leaving nothing running', async () => {
    const home = scratchHome();
    const fakeQemu = path.join(home, 'fake-qemu.sh');
    // A VM that prints a little and then dies, as a broken kernel would.
    fs.writeFileSync(fakeQemu, '#!/bin/sh\nfor a in "$@"; do case "$a" in *console.log*) f=${a#*path=}; f=${f%%,*};; esac; done\necho "Kernel panic - not syncing: fake" >> "$f"\nexit 1\n', { mode: 0o755 });
    process.env.BOXLITE_QEMU = fakeQemu;
    try {
      const runtime = new JsBoxlite({ homeDir: home });
      const box = await runtime.create({ rootfsPath: inject('image') });
      const err = await box.start().catch((e: unknown) => e);
      expect(err).toBeInstanceOf(EngineError);
      expect((err as Error).message).toMatch(/^engine reported an error: QEMU exited during boot/);
      expect((await box.info()).state.status).toBe('failed');
      await runtime.remove(box.id);
    } finally {
      delete process.env.BOXLITE_QEMU;
      fs.rmSync(home, { recursive: true, force: true });
    }
  });

  it('gives up on an agent that never says HELLO with a Portal error after the configured timeout', async () => {
    const home = scratchHome();
    // /init that never speaks the protocol: busybox sleeping forever.
    const silent = path.join(home, 'silent-init');
    fs.writeFileSync(silent, '');
    fs.copyFileSync('/bin/busybox', silent);
    process.env.BOXLITE_GUEST_AGENT = silent;
    process.env.BOXLITE_AGENT_TIMEOUT_MS = '4000';
    try {
      const runtime = new JsBoxlite({ homeDir: home });
      const box = await runtime.create({ rootfsPath: inject('image') });
      const t0 = Date.now();
      const err = await box.start().catch((e: unknown) => e);
      expect(err).toBeInstanceOf(PortalError);
      expect((err as Error).message).toMatch(/^portal error: guest agent did not say HELLO within 4000 ms/);
      expect(Date.now() - t0).toBeLessThan(30_000);
      await runtime.remove(box.id);
    } finally {
      delete process.env.BOXLITE_GUEST_AGENT;
      delete process.env.BOXLITE_AGENT_TIMEOUT_MS;
      fs.rmSync(home, { recursive: true, force: true });
    }
  });
});
