import fs from 'node:fs';
import http from 'node:http';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { afterEach, describe, expect, inject, it } from 'vitest';
import { JsBoxlite, type Box } from '../../dist/index.js';
import { run } from './helpers.js';

// advanced.capabilities and the security options, seen from inside the box: the agent learns
// them from the kernel command line and applies them to every execution.
let runtime: JsBoxlite;
let box: Box | undefined;

const sh = (b: Box, script: string, user?: string) => run(b, 'sh', ['-c', script], { user });
const BASELINE = 0xa80425fbn; // docker's default set: CapEff of a root exec in an unchanged box
const capEff = async (b: Box) => BigInt(`0x${(await sh(b, "sed -n 's/^CapEff:[[:space:]]*//p' /proc/self/status")).stdout.trim()}`);

/** Soft and hard value of one row of /proc/self/limits in the box. */
async function limit(b: Box, row: string): Promise<[string, string]> {
  const out = (await sh(b, `grep '^${row}' /proc/self/limits`)).stdout;
  const [soft, hard] = out.slice(row.length).trim().split(/\s+/);
  return [soft!, hard!];
}

/** What a TCP connection to the host port reads, retried until it contains `want` (the guest listener may not be up yet). */
async function tcpPoll(port: number, want: string, ms = 30_000): Promise<string> {
  const deadline = Date.now() + ms;
  let last = '';
  while (Date.now() < deadline) {
    last = await new Promise<string>((resolve) => {
      let got = '';
      const s = net.connect(port, '127.0.0.1');
      s.on('data', (d) => (got += d.toString('utf8')));
      s.on('close', () => resolve(got));
      s.on('error', () => resolve(got));
    });
    if (last.includes(want)) return last;
    await new Promise((r) => setTimeout(r, 200));
  }
  return last;
}

afterEach(async () => {
  if (box) await runtime.remove(box.id, true);
  box = undefined;
});

describe('advanced.capabilities', () => {
  it('drop CHOWN takes chown away, add NET_ADMIN grants it, exactly', async () => {
    runtime = new JsBoxlite({ homeDir: inject('home') });
    box = await runtime.create({ rootfsPath: inject('image'), advanced: { capabilities: { drop: ['CHOWN'], add: ['cap_net_admin'] } } });
    expect(await capEff(box)).toBe((BASELINE & ~1n) | (1n << 12n));
    const chown = await sh(box, 'touch /f && chown 1:1 /f');
    expect(chown.exitCode).toBe(1);
    expect(chown.stderr).toMatch(/Operation not permitted/);
    const mtu = await sh(box, 'ip link set lo mtu 1400 && cat /sys/class/net/lo/mtu');
    expect(mtu).toEqual({ exitCode: 0, stdout: '1400\n', stderr: '' });
    // a non-root user gets no capabilities at all, as in docker
    expect((await sh(box, "sed -n 's/^CapEff:[[:space:]]*//p' /proc/self/status", '1000')).stdout).toBe('0000000000000000\n');
  });

  it('leaves the baseline alone when unset, and drop ALL empties the set', async () => {
    runtime = new JsBoxlite({ homeDir: inject('home') });
    box = await runtime.create({ rootfsPath: inject('image') });
    expect(await capEff(box)).toBe(BASELINE);
    expect((await sh(box, 'ip link set lo mtu 1400')).exitCode).not.toBe(0);
    await runtime.remove(box.id, true);
    box = await runtime.create({ rootfsPath: inject('image'), advanced: { capabilities: { drop: ['ALL'], add: ['KILL'] } } });
    expect(await capEff(box)).toBe(1n << 5n);
  });
});

describe('security resource limits', () => {
  it('applies every limit to every execution; a write past maxFileSize fails', async () => {
    runtime = new JsBoxlite({ homeDir: inject('home') });
    box = await runtime.create({
      rootfsPath: inject('image'),
      security: { maxOpenFiles: 200, maxFileSize: 1048576, maxProcesses: 77, maxMemory: 2 ** 31, maxCpuTime: 600 },
    });
    expect((await sh(box, 'ulimit -n')).stdout).toBe('200\n');
    expect(await limit(box, 'Max open files')).toEqual(['200', '200']);
    expect(await limit(box, 'Max file size')).toEqual(['1048576', '1048576']);
    expect(await limit(box, 'Max processes')).toEqual(['77', '77']);
    expect(await limit(box, 'Max address space')).toEqual([String(2 ** 31), String(2 ** 31)]);
    expect(await limit(box, 'Max cpu time')).toEqual(['600', '600']);
    // The kernel stops the writer at the limit with SIGXFSZ (25); the file holds exactly 1 MiB.
    const dd = await sh(box, 'dd if=/dev/zero of=/big bs=4096 count=512 2>/dev/null; echo "rc=$?"; wc -c < /big');
    expect(dd.stdout).toBe(`rc=${128 + 25}\n1048576\n`);
    // The same limits hold for a non-root user and cannot be raised from inside.
    expect((await sh(box, 'ulimit -n', '1000')).stdout).toBe('200\n');
    expect((await sh(box, 'ulimit -n 300', '1000')).exitCode).not.toBe(0);
  });
});

describe('security resource limits, behaviour', () => {
  it('maxCpuTime kills a busy loop; maxProcesses stops a non-root user forking past it', async () => {
    runtime = new JsBoxlite({ homeDir: inject('home') });
    box = await runtime.create({ rootfsPath: inject('image'), security: { maxCpuTime: 1, maxProcesses: 4 } });
    const t0 = Date.now();
    const spin = await box.exec('sh', ['-c', 'while :; do :; done']);
    // soft = hard: the kernel's hard-limit SIGKILL comes first.
    expect((await spin.wait()).exitCode).toBe(-9);
    expect(Date.now() - t0).toBeLessThan(30_000);
    // uid 1000 starts with the shell itself; the fifth process cannot be forked.
    const forks = await sh(box, 'for i in 1 2 3 4 5; do sleep 3 & done 2>&1; wait; echo done', '1000');
    expect(forks.stdout + forks.stderr).toMatch(/can't fork|Resource temporarily unavailable/);
    // root is exempt from RLIMIT_NPROC, as on any Linux
    expect((await sh(box, 'for i in 1 2 3 4 5 6; do sleep 1 & done; wait; echo ok')).stdout).toBe('ok\n');
  });
});

describe('security.seccompEnabled', () => {
  it('runs the VM process under a seccomp filter and the box still works', async () => {
    runtime = new JsBoxlite({ homeDir: inject('home') });
    box = await runtime.create({ rootfsPath: inject('image'), security: { seccompEnabled: true } });
    expect(await sh(box, 'echo ok')).toEqual({ exitCode: 0, stdout: 'ok\n', stderr: '' });
    const qemu = fs
      .readdirSync('/proc')
      .filter((p) => /^\d+$/.test(p))
      .map((pid) => {
        try {
          return { pid, args: fs.readFileSync(`/proc/${pid}/cmdline`, 'utf8').split('\0') };
        } catch {
          return { pid, args: [] };
        }
      })
      .filter(({ args }) => /qemu-system/.test(args[0] ?? '') && args.some((a) => a.includes(box!.id)));
    expect(qemu).toHaveLength(1);
    expect(qemu[0]!.args[qemu[0]!.args.indexOf('-sandbox') + 1]).toBe('on,obsolete=deny,elevateprivileges=deny,spawn=deny,resourcecontrol=deny');
    expect(fs.readFileSync(`/proc/${qemu[0]!.pid}/status`, 'utf8')).toMatch(/^Seccomp:\s+2$/m);
  });
});

describe('security.jailerEnabled', () => {
  it('runs QEMU in bubblewrap as nobody in its own namespaces; volumes, outbound and published ports still work', async () => {
    runtime = new JsBoxlite({ homeDir: inject('home') });
    const vol = fs.mkdtempSync(path.join(os.tmpdir(), 'boxlite-jail-vol-'));
    try {
      box = await runtime.create({
        rootfsPath: inject('image'),
        security: { jailerEnabled: true, seccompEnabled: true },
        volumes: [{ hostPath: vol, guestPath: '/data' }],
        ports: [{ guestPort: 8080 }],
      });
      expect(await sh(box, 'echo hi > /data/f && cat /data/f')).toEqual({ exitCode: 0, stdout: 'hi\n', stderr: '' });
      expect(fs.readFileSync(path.join(vol, 'f'), 'utf8')).toBe('hi\n');
      // Outbound to the host's loopback and a published port both work (through the shim's stack).
      const server = http.createServer((req, res) => res.end(`jailed ${req.url}`));
      await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
      try {
        const port = (server.address() as net.AddressInfo).port;
        expect((await run(box, 'wget', ['-qO-', `http://host.boxlite.internal:${port}/out`])).stdout).toBe('jailed /out');
      } finally {
        server.close();
      }
      const listener = await box.exec('sh', ['-c', 'echo inbound | nc -l -p 8080']);
      const hostPort = (await box.info()).network!.publishedPorts![0]!.hostPort;
      expect(await tcpPoll(hostPort, 'inbound')).toBe('inbound\n');
      await listener.wait();
      const pid = (await box.info()).state.pid;
      expect(pid).toBeGreaterThan(0);
      // The recorded pid is QEMU itself (metrics and kill use it), not bwrap.
      expect(fs.readFileSync(`/proc/${pid}/cmdline`, 'utf8').split('\0')[0]).toMatch(/qemu-system/);
      const status = fs.readFileSync(`/proc/${pid}/status`, 'utf8');
      expect(status).toMatch(/^Seccomp:\s+2$/m);
      expect(status).toMatch(/^CapEff:\s+0000000000000000$/m);
      // NSpid: QEMU is PID 1 of its own pid namespace.
      expect(status).toMatch(/^NSpid:\s+\d+\s+1$/m);
      for (const ns of ['mnt', 'pid', 'user', 'ipc']) {
        expect(fs.readlinkSync(`/proc/${pid}/ns/${ns}`)).not.toBe(fs.readlinkSync(`/proc/self/ns/${ns}`));
      }
      // No host network at all (the box's stack in the shim does the networking over net.sock),
      // and no host file system beyond /usr.
      expect(fs.readlinkSync(`/proc/${pid}/ns/net`)).not.toBe(fs.readlinkSync('/proc/self/ns/net'));
      const root = `/proc/${pid}/root`;
      expect(fs.existsSync(`${root}/usr/bin`)).toBe(true);
      expect(fs.existsSync(`${root}/etc/passwd`)).toBe(false);
      expect(fs.existsSync(`${root}/root`)).toBe(false);
      expect(fs.existsSync(`${root}${inject('root')}/package.json`)).toBe(false);
      // its uid inside is nobody
      expect(fs.readFileSync(`/proc/${pid}/uid_map`, 'utf8').trim().split(/\s+/)[0]).toBe('65534');
      const m = await box.metrics();
      expect(m.memoryBytes ?? 0).toBeGreaterThan(32 * 1024 * 1024);
      // A graceful stop ends QEMU and the jail with it.
      await box.stop();
      const gone = () => {
        try {
          return /^State:\s+Z/m.test(fs.readFileSync(`/proc/${pid}/status`, 'utf8')); // a zombie has ended
        } catch {
          return true;
        }
      };
      for (let i = 0; i < 50 && !gone(); i++) await new Promise((r) => setTimeout(r, 100));
      expect(gone()).toBe(true);
      box = (await runtime.get(box.id))!;
      // and boots jailed again
      expect(await sh(box, 'cat /data/f')).toEqual({ exitCode: 0, stdout: 'hi\n', stderr: '' });
      expect(fs.readFileSync(`/proc/${(await box.info()).state.pid}/status`, 'utf8')).toMatch(/^NSpid:\s+\d+\s+1$/m);
    } finally {
      fs.rmSync(vol, { recursive: true, force: true });
    }
  });
});

describe('security.jailerEnabled failures', () => {
  it('reports a jailer that cannot start QEMU as an Engine error with the way out, without hanging', async () => {
    runtime = new JsBoxlite({ homeDir: inject('home') });
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'boxlite-fake-bwrap-'));
    const fake = path.join(dir, 'bwrap');
    // What bwrap prints where AppArmor forbids unprivileged user namespaces (Ubuntu 24.04).
    fs.writeFileSync(fake, '#!/bin/sh\necho "bwrap: setting up uid map: Permission denied" >&2\nexit 1\n', { mode: 0o755 });
    process.env.BOXLITE_BWRAP = fake;
    try {
      box = await runtime.create({ rootfsPath: inject('image'), security: { jailerEnabled: true } });
      const err = await box.exec('true').then(
        () => undefined,
        (e: unknown) => e as Error & { code?: string },
      );
      expect(err?.code).toBe('Engine');
      expect(err?.message).toMatch(/bwrap: setting up uid map: Permission denied/);
      expect(err?.message).toMatch(/leave security\.jailerEnabled off/);
    } finally {
      delete process.env.BOXLITE_BWRAP;
      fs.rmSync(dir, { recursive: true, force: true });
    }
  });
});
