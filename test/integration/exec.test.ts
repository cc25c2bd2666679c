import crypto from 'node:crypto';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, inject, it } from 'vitest';
import { ConfigError, ExecutionError, InvalidStateError, JsBoxlite, type Box } from '../../dist/index.js';
import { readAll, run as runIn } from './helpers.js';

// One VM for the whole file: booting under TCG costs seconds, and these tests
// exercise behaviour inside a running box, not its boot.
let runtime: JsBoxlite;
let box: Box;

const run = (cmd: string, args: string[] = [], opts: Parameters<typeof runIn>[3] = {}) => runIn(box, cmd, args, opts);
const sha256 = (file: string) => crypto.createHash('sha256').update(fs.readFileSync(file)).digest('hex');

beforeAll(async () => {
  runtime = new JsBoxlite({ homeDir: inject('home') });
  box = await runtime.create({ rootfsPath: inject('image'), memoryMib: 512 }, `exec-${process.pid}`);
  await box.start();
  console.log(`box ${box.id}: console log ${path.join(inject('home'), 'boxes', box.id, 'logs', 'console.log')}`);
});

afterAll(async () => {
  if (box) await runtime.remove(box.id, true);
});

describe('exit codes and signals', () => {
  it('returns the exit status of the command, 0..255', async () => {
    const codes = [0, 1, 2, 3, 42, 100, 125, 126, 127, 128, 200, 254, 255];
    const results = await Promise.all(codes.map((c) => run('sh', ['-c', `exit ${c}`])));
    expect(results.map((r) => r.exitCode)).toEqual(codes);
  });

  it('reports death by signal N as -N', async () => {
    expect((await run('sh', ['-c', 'kill -TERM $$'])).exitCode).toBe(-15);
    const ex = await box.exec('sleep', ['60']);
    await ex.signal(2);
    expect((await ex.wait()).exitCode).toBe(-2);
    const ex2 = await box.exec('sleep', ['60']);
    await ex2.kill();
    expect((await ex2.wait()).exitCode).toBe(-9);
  });

  it('signals reach the process group, and a process ignoring TERM still dies on kill()', async () => {
    const ex = await box.exec('sh', ['-c', 'trap "" TERM; echo ready; sleep 60']);
    const out = await ex.stdout();
    expect(await out.next()).toBe('ready\n');
    await ex.signal(15);
    const early = await Promise.race([ex.wait(), new Promise((r) => setTimeout(() => r('still running'), 1500))]);
    expect(early).toBe('still running');
    await ex.kill();
    expect((await ex.wait()).exitCode).toBe(-9);
  });

  it('rejects a missing command with an Execution error saying command not found', async () => {
    const err = await box.exec('no-such-command-xyz').catch((e: unknown) => e);
    expect(err).toBeInstanceOf(ExecutionError);
    expect((err as ExecutionError).code).toBe('Execution');
    expect((err as ExecutionError).message).toMatch(/^Execution error: command not found: no-such-command-xyz/);
    expect((err as ExecutionError).exitCode).toBe(127);
  });
});

describe('streams', () => {
  it('keeps stdout and stderr apart', async () => {
    const r = await run('sh', ['-c', 'echo to-out; echo to-err >&2; echo more-out']);
    expect(r.stdout).toBe('to-out\nmore-out\n');
    expect(r.stderr).toBe('to-err\n');
  });

  it('streams output while the command runs', async () => {
    const started = Date.now();
    const ex = await box.exec('sh', ['-c', 'echo first; sleep 3; echo second']);
    const out = await ex.stdout();
    expect(await out.next()).toBe('first\n');
    const firstAt = Date.now() - started;
    let exited = false;
    const waiting = ex.wait().then((r) => ((exited = true), r));
    expect(exited).toBe(false);
    expect(await out.next()).toBe('second\n');
    expect((await waiting).exitCode).toBe(0);
    expect(Date.now() - started - firstAt).toBeGreaterThanOrEqual(2500);
  });

  it('echoes 10 MiB of binary stdin back byte for byte', async () => {
    const input = crypto.randomBytes(10 * 1024 * 1024);
    const ex = await box.exec('cat');
    const stdin = await ex.stdin();
    const reading = readAll(ex, 'stdout');
    await stdin.write(input);
    await stdin.close();
    const output = await reading;
    expect((await ex.wait()).exitCode).toBe(0);
    expect(output.length).toBe(input.length);
    expect(output.equals(input)).toBe(true);
  });

  it('kills a command at timeoutSecs', async () => {
    const t0 = Date.now();
    const ex = await box.exec('sleep', ['60'], null, false, null, 1);
    const r = await ex.wait();
    expect(r.exitCode).toBe(-9);
    expect(r.errorMessage).toMatch(/timed out/);
    expect(Date.now() - t0).toBeLessThan(15_000);
  });

  it('gives a TTY that names a pts and follows resizeTty', async () => {
    const r = await run('tty', [], { tty: true });
    expect(r.exitCode).toBe(0);
    expect(r.stdout.trim()).toMatch(/^\/dev\/pts\/\d+$/);

    const ex = await box.exec('sh', ['-c', 'stty size; read line; stty size'], null, true);
    const out = await ex.stdout();
    let text = '';
    while (!text.includes('\n')) text += (await out.next()) ?? '';
    expect(text.trim()).toBe('24 80');
    await ex.resizeTty(50, 132);
    await (await ex.stdin()).writeString('go\r');
    for (;;) {
      const chunk = await out.next();
      if (chunk === null) break;
      text += chunk;
    }
    expect(text).toMatch(/50 132/);
    expect((await ex.wait()).exitCode).toBe(0);
  });

  it('runs 16 executions at once, each with its own output', async () => {
    const results = await Promise.all(
      Array.from({ length: 16 }, (_, i) => run('sh', ['-c', `echo start-${i}; sleep 1; echo end-${i} >&2; exit ${i}`])),
    );
    results.forEach((r, i) => {
      expect(r.exitCode).toBe(i);
      expect(r.stdout).toBe(`start-${i}\n`);
      expect(r.stderr).toBe(`end-${i}\n`);
    });
  });
});

describe('regressions', () => {
  it('close() after an unawaited write() still delivers every byte first (stdin is ordered)', async () => {
    const input = crypto.randomBytes(1024 * 1024);
    const ex = await box.exec('sh', ['-c', 'wc -c']);
    const stdin = await ex.stdin();
    void stdin.write(input);
    await stdin.close();
    expect((await readAll(ex, 'stdout')).toString().trim()).toBe(String(input.length));
    expect((await ex.wait()).exitCode).toBe(0);
  });

  it('a background process holding stdout does not withhold EXIT', async () => {
    const t0 = Date.now();
    const r = await run('sh', ['-c', 'echo last; yes >/dev/null & exit 0']);
    expect(r).toMatchObject({ exitCode: 0, stdout: 'last\n' });
    const flood = await box.exec('sh', ['-c', 'yes & exit 0']);
    expect((await flood.wait()).exitCode).toBe(0);
    expect(Date.now() - t0).toBeLessThan(10_000);
    await run('sh', ['-c', 'pkill yes || killall yes']);
  });

  it('an EXEC too large for one frame is a Config error, and the box stays usable', async () => {
    const err = await box.exec('sh', ['-c', 'x'.repeat(300 * 1024)]).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(ConfigError);
    expect((err as Error).message).toMatch(/must fit in 256 KiB/);
    expect((await run('echo', ['still fine'])).stdout).toBe('still fine\n');
  });

  it('an invalid signal or TTY size is refused and the process keeps running', async () => {
    const ex = await box.exec('sleep', ['30'], null, true);
    await expect(ex.signal(0)).rejects.toBeInstanceOf(ConfigError);
    await expect(ex.resizeTty(0, 80)).rejects.toBeInstanceOf(ConfigError);
    await ex.kill();
    expect((await ex.wait()).exitCode).toBe(-9);
  });

  it('resizeTty on an execution without a TTY rejects with InvalidState (as the reference refuses it)', async () => {
    const ex = await box.exec('sleep', ['30']);
    const err = await ex.resizeTty(50, 132).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(InvalidStateError);
    expect((err as InvalidStateError).code).toBe('InvalidState');
    expect((err as Error).message).toMatch(/^invalid state: execution .* has no TTY/);
    await ex.kill();
    expect((await ex.wait()).exitCode).toBe(-9);
  });

  it('two handles starting one box at once share a single VM', async () => {
    const shared = await runtime.create({ rootfsPath: inject('image') });
    try {
      const a = (await new JsBoxlite({ homeDir: inject('home') }).get(shared.id))!;
      const b = (await new JsBoxlite({ homeDir: inject('home') }).get(shared.id))!;
      await Promise.all([a.start(), b.start()]);
      const [ia, ib] = await Promise.all([a.info(), b.info()]);
      expect(ia.state.pid).toBeGreaterThan(0);
      expect(ib.state.pid).toBe(ia.state.pid);
      const [ra, rb] = await Promise.all([a.exec('echo', ['a']), b.exec('echo', ['b'])]);
      expect((await ra.wait()).exitCode).toBe(0);
      expect((await rb.wait()).exitCode).toBe(0);
    } finally {
      await runtime.remove(shared.id, true);
    }
  });
});

describe('process environment', () => {
  it('honours env, cwd and user', async () => {
    const r = await run('sh', ['-c', 'echo "$GREETING"; pwd; id -u; id -g; echo "$PATH"'], {
      env: [['GREETING', 'hello world']],
      user: '1000',
      cwd: '/home/boxuser',
    });
    expect(r.stdout.split('\n')).toEqual(['hello world', '/home/boxuser', '1000', '1000', expect.stringContaining('/bin'), '']);
    const named = await run('id', ['-un'], { user: 'boxuser' });
    expect(named.stdout.trim()).toBe('boxuser');
    expect((await run('id', ['-u'])).stdout.trim()).toBe('0');
  });

  it('refuses an unknown user or working directory', async () => {
    await expect(box.exec('true', [], null, false, 'nosuchuser')).rejects.toThrow(/nosuchuser/);
    await expect(box.exec('true', [], null, false, null, null, '/does/not/exist')).rejects.toThrow(/\/does\/not\/exist/);
  });

  it('runs in its own container: hostname, /proc, /dev, /tmp', async () => {
    const r = await run('sh', ['-c', 'hostname; cat /etc/hostname; echo $$; ls /dev/pts/ptmx /dev/null /dev/shm >/dev/null && echo devs; stat -c %a /tmp']);
    const [hostname, etcHostname, , devs, tmpMode] = r.stdout.trim().split('\n');
    expect(hostname).toBe('boxlite');
    expect(etcHostname).toBe('boxlite');
    expect(devs).toBe('devs');
    expect(tmpMode).toBe('1777');
    // PID namespace: the container's init is pid 1, and the agent is not visible.
    // PID namespace: the VM's kernel threads and the agent are invisible; only a handful of pids show.
    const ps = await run('sh', ['-c', 'ls /proc | grep -c "^[0-9]"']);
    expect(Number(ps.stdout.trim())).toBeLessThan(10);
  });

  it('keeps image ownership, modes and setuid bits exact', async () => {
    const r = await run('stat', ['-c', '%n %u %g %a', '/opt/owned-by-1000', '/usr/local/bin/suid-probe', '/home/boxuser', '/root', '/etc/passwd']);
    expect(r.stdout.trim().split('\n')).toEqual([
      '/opt/owned-by-1000 1000 1000 644',
      '/usr/local/bin/suid-probe 0 0 4755',
      '/home/boxuser 1000 1000 755',
      '/root 0 0 700',
      '/etc/passwd 0 0 644',
    ]);
  });

  it('cannot see host files', async () => {
    const marker = `boxlite-host-secret-${process.pid}`;
    const hostFile = path.join(os.tmpdir(), marker);
    fs.writeFileSync(hostFile, 'secret');
    try {
      const r = await run('sh', ['-c', `ls ${hostFile} 2>/dev/null; echo rc=$?; ls /tmp; cat /proc/mounts`]);
      expect(r.stdout).toMatch(/rc=[1-9]/);
      expect(r.stdout).not.toContain(marker);
      expect(r.stdout).not.toContain(inject('home'));
    } finally {
      fs.rmSync(hostFile);
    }
  });
});

describe('storage', () => {
  it('writes land in the box overlay, survive a restart, and never touch the shared base', async () => {
    const base = box.config.image.rootfsBase;
    const before = sha256(base);
    const w = await run('sh', ['-c', 'echo persisted > /root/note && rm /etc/motd 2>/dev/null; sync; cat /root/note']);
    expect(w.stdout).toBe('persisted\n');
    await box.stop();
    expect((await box.info()).state.status).toBe('stopped');
    // stop() spent the handle (the reference's rule): a new one from get() boots the box again.
    box = (await runtime.get(box.id))!;
    await box.start();
    const r = await run('cat', ['/root/note']);
    expect(r.stdout).toBe('persisted\n');
    expect(sha256(base)).toBe(before);
    const other = await runtime.create({ rootfsPath: inject('image') });
    try {
      const ex = await other.exec('cat', ['/root/note']);
      expect((await ex.wait()).exitCode).not.toBe(0);
    } finally {
      await runtime.remove(other.id, true);
    }
  });
});
