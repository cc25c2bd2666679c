// The agent's per-exec path in a real VM (issue 11): users come from the agent's cached copy of
// the container's /etc/passwd and /etc/group, which must follow every change a workload makes;
// the STARTED pid is the container pid; nothing of the agent's signal or capability state leaks.
import { afterAll, beforeAll, describe, expect, inject, it } from 'vitest';
import { InvalidStateError, JsBoxlite, type Box } from '../../dist/index.js';
import { run as runIn } from './helpers.js';

let runtime: JsBoxlite;
let box: Box;
const run = (cmd: string, args: string[] = [], opts: Parameters<typeof runIn>[3] = {}) => runIn(box, cmd, args, opts);
const sh = async (script: string, user?: string) => {
  const r = await run('sh', ['-c', script], { user });
  return { ...r, stdout: r.stdout.trim() };
};

beforeAll(async () => {
  runtime = new JsBoxlite({ homeDir: inject('home') });
  box = await runtime.create({ rootfsPath: inject('image'), memoryMib: 256 }, `perf-exec-${process.pid}`);
  await box.start();
});

afterAll(async () => {
  if (box) await runtime.remove(box.id, true);
});

describe('users resolved by the agent follow the container files', () => {
  it('sees a user appended, edited in place (same size), replaced by rename, and removed', async () => {
    expect((await sh('cp /etc/passwd /etc/passwd.orig && cp /etc/group /etc/group.orig')).exitCode).toBe(0);
    await expect(box.exec('id', ['-u'], null, false, 'perf')).rejects.toMatchObject({
      exitCode: 125,
      message: expect.stringContaining('unable to find user perf: no matching entries in passwd file'),
    });

    expect((await sh('echo "perf:x:4242:4343::/tmp:/bin/sh" >> /etc/passwd')).exitCode).toBe(0);
    expect((await sh('id -u; id -g', 'perf')).stdout).toBe('4242\n4343');
    // Same length, written by the box itself right after the last exec: only mtime/ctime differ.
    expect((await sh("sed 's/^perf:x:4242:/perf:x:4244:/' /etc/passwd > /tmp/p && cat /tmp/p > /etc/passwd")).exitCode).toBe(0);
    expect((await sh('id -u', 'perf')).stdout).toBe('4244');
    // A new inode (how adduser and vipw write).
    expect((await sh("sed 's/^perf:x:4244:/perf:x:4245:/' /etc/passwd > /etc/passwd.new && mv /etc/passwd.new /etc/passwd")).exitCode).toBe(0);
    expect((await sh('id -u', 'perf')).stdout).toBe('4245');

    expect((await sh('echo "perfgrp:x:5151:perf" >> /etc/group')).exitCode).toBe(0);
    expect((await sh('id -G', 'perf')).stdout).toBe('4343 5151');
    expect((await sh('id -g', 'perf:perfgrp')).stdout).toBe('5151');
    await expect(box.exec('id', [], null, false, 'perf:nosuchgrp')).rejects.toThrow(/unable to find group nosuchgrp/);
    // An absolute symlink is read inside the container, not from the agent's root.
    expect((await sh('mv /etc/group /etc/group.real && ln -s /etc/group.real /etc/group')).exitCode).toBe(0);
    expect((await sh('id -G', 'perf')).stdout).toBe('4343 5151');

    expect((await sh('cp /etc/passwd.orig /etc/passwd && rm /etc/group && cp /etc/group.orig /etc/group')).exitCode).toBe(0);
    await expect(box.exec('id', ['-u'], null, false, 'perf')).rejects.toMatchObject({
      exitCode: 125,
      message: expect.stringContaining('unable to find user perf'),
    });
    expect((await sh('id -u', 'nobody')).stdout).toBe('65534');
    expect((await sh('id -u; id -g', '1234:5678')).stdout).toBe('1234\n5678');
  });
});

describe('what every execution gets', () => {
  it('reports the container pid and resets the agent signal and capability state', async () => {
    const ex = await box.exec('sh', ['-c', 'echo $$; grep -E "^(SigIgn|SigBlk|CapBnd|CapAmb):" /proc/self/status; cat /proc/self/oom_score_adj']);
    let out = '';
    for await (const c of await ex.stdout()) out += c;
    expect((await ex.wait()).exitCode).toBe(0);
    const [pid, ...rest] = out.trim().split('\n');
    expect(ex.pid).toBe(Number(pid));
    expect(Number(pid)).toBeLessThan(1000); // a pid of the container's namespace
    const field = (k: string) => rest.find((l) => l.startsWith(k))?.split(/\s+/)[1];
    expect(field('SigIgn')).toBe('0000000000000000');
    expect(field('SigBlk')).toBe('0000000000000000');
    expect(field('CapBnd')).toBe('00000000a80425fb');
    expect(field('CapAmb')).toBe('0000000000000000');
    expect(rest.at(-1)).toBe('0');
  });

  it('runs many short executions back to back and in parallel', async () => {
    for (let i = 0; i < 20; i++) expect((await run('true')).exitCode).toBe(0);
    const many = await Promise.all(Array.from({ length: 16 }, (_, i) => sh(`echo ${i}`)));
    expect(many.map((r) => r.stdout)).toEqual(Array.from({ length: 16 }, (_, i) => String(i)));
  });
});

describe('the paused check of every exec', () => {
  it('sees a pause made after executions found the box running, and the resume after it', async () => {
    // The SDK keeps "not paused" while shim.json is the file that said so: a pause rewrites it.
    for (let i = 0; i < 3; i++) expect((await run('true')).exitCode).toBe(0);
    const other = (await runtime.get(box.id))!;
    await other.pause();
    try {
      const refused = await box.exec('true').catch((e: unknown) => e);
      expect(refused).toBeInstanceOf(InvalidStateError);
      expect((refused as Error).message).toMatch(/is paused; resume\(\) it first/);
    } finally {
      await other.resume();
    }
    expect((await run('echo', ['back'])).stdout).toBe('back\n');
  });
});

describe('an exec-only box (the agent\'s reaper is PID 1)', () => {
  it('resolves users through the container root, reports container pids, leaves the reaper its OOM exemption', async () => {
    const b = await runtime.create({ rootfsPath: inject('image'), memoryMib: 256, entrypoint: [] }, `perf-exec-only-${process.pid}`);
    try {
      const r1 = await runIn(b, 'sh', ['-c', 'echo "perf:x:4242:4343::/tmp:/bin/sh" >> /etc/passwd; cat /proc/1/comm']);
      expect(r1.stdout).toBe('boxlite-init\n');
      const r2 = await runIn(b, 'sh', ['-c', 'id -u; id -g; pwd'], { user: 'perf', cwd: '/tmp' });
      expect(r2.stdout).toBe('4242\n4343\n/tmp\n');
      // Executions inherit 0 from the agent once it dropped its own -1000 (instead of each
      // writing it); the reaper, forked before that, keeps its exemption.
      const r3 = await runIn(b, 'sh', ['-c', 'cat /proc/self/oom_score_adj /proc/1/oom_score_adj']);
      expect(r3.stdout).toBe('0\n-1000\n');
      const ex = await b.exec('sh', ['-c', 'echo $$']);
      let out = '';
      for await (const c of await ex.stdout()) out += c;
      await ex.wait();
      expect(ex.pid).toBe(Number(out.trim()));
    } finally {
      await runtime.remove(b.id, true);
    }
  });
});
