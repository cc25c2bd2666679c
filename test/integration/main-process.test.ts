// The image's main process as the container's init (docs/decisions/0003-main-process.md), in
// real VMs: PID 1 of the container, its output in logs(), its exit code in info() and the box
// stopped with it, start() running it again; an exec-only box unchanged; the CLI's run -d,
// run, create + start and logs.
import { describe, expect, inject, it } from 'vitest';
import { InvalidStateError, JsBoxlite, type Box } from '../../dist/index.js';
import { boxlite, run } from './helpers.js';

async function logText(box: Box, options: { follow?: boolean; console?: boolean } = {}): Promise<string> {
  const parts: Buffer[] = [];
  for await (const c of box.logs(options)) parts.push(c);
  return Buffer.concat(parts).toString('utf8');
}

/** The main process runs concurrently with the caller: wait until it has written `text`. */
async function waitLog(box: Box, text: string, ms = 60_000): Promise<void> {
  const deadline = Date.now() + ms;
  while (!(await logText(box)).includes(text)) {
    if (Date.now() > deadline) throw new Error(`box ${box.id} did not log ${JSON.stringify(text)} within ${ms} ms`);
    await new Promise((r) => setTimeout(r, 100));
  }
}

async function waitStopped(box: Box, ms = 120_000): Promise<void> {
  const deadline = Date.now() + ms;
  while ((await box.info()).state.status !== 'stopped') {
    if (Date.now() > deadline) throw new Error(`box ${box.id} did not stop within ${ms} ms`);
    await new Promise((r) => setTimeout(r, 200));
  }
}

describe('the main process', () => {
  it('is PID 1 of the container; its output is the log, its exit code is in info(), the box stops; start() runs it again', async () => {
    const runtime = new JsBoxlite({ homeDir: inject('home') });
    // USR1 has a handler, so the box's PID 1 can be asked to end from an exec (signals
    // without one never reach a namespace's init from inside it).
    const main = 'trap "echo bye; exit 42" USR1; echo main-up $$; while :; do sleep 0.2; done';
    const box = await runtime.create({ rootfsPath: inject('image'), entrypoint: ['sh', '-c'], cmd: [main] });
    try {
      await box.start();
      await waitLog(box, 'main-up'); // its trap is set
      const cmdline = await run(box, 'sh', ['-c', 'tr "\\0" " " < /proc/1/cmdline; echo; cat /proc/1/oom_score_adj']);
      expect(cmdline.stdout).toBe(`sh -c ${main} \n0\n`);
      expect((await box.info()).state).toMatchObject({ status: 'running', running: true });
      expect((await box.info()).state.exitCode).toBeUndefined();

      await run(box, 'kill', ['-USR1', '1']);
      await waitStopped(box);
      const info = await box.info();
      expect(info.state).toMatchObject({ status: 'stopped', running: false, exitCode: 42 });
      expect(await logText(box)).toBe('main-up 1\nbye\n');
      expect(await logText(box, { console: true })).toMatch(/boxlite-guest/);
      expect((await box.inspect()).mainProcess).toMatchObject({ command: ['sh', '-c', main], exit: { exitCode: 42, reason: 'exited' } });

      // Its own command ended: an exec does not run it again behind the user's back...
      await expect(box.exec('true')).rejects.toBeInstanceOf(InvalidStateError);
      // ...start() does, as docker start does; the log is the new run's.
      await box.start();
      expect((await box.info()).state.exitCode).toBeUndefined();
      await waitLog(box, 'main-up');
      expect((await run(box, 'cat', ['/proc/1/comm'])).stdout).toBe('sh\n');
      await box.stop();
      expect((await box.info()).state.exitCode).toBe(137);
      expect(await logText(box)).toBe('main-up 1\n');
    } finally {
      await runtime.remove(box.id, true);
    }
  });

  it('an exec in flight when the main process ends is killed with its PID namespace and says so; the box then stops', async () => {
    const runtime = new JsBoxlite({ homeDir: inject('home') });
    const main = 'trap "exit 3" USR1; echo main-up; while :; do sleep 0.2; done';
    const box = await runtime.create({ rootfsPath: inject('image'), entrypoint: ['sh', '-c'], cmd: [main] });
    try {
      await box.start();
      await waitLog(box, 'main-up');
      // Nothing of the agent's leaked into the container's init: only its three pipes.
      expect((await run(box, 'ls', ['/proc/1/fd'])).stdout).toBe('0\n1\n2\n');
      const inFlight = await box.exec('sleep', ['600']);
      await run(box, 'kill', ['-USR1', '1']);
      // An exit status (SIGKILL: the kernel killed the namespace), not a lost connection.
      expect((await inFlight.wait()).exitCode).toBe(-9);
      await waitStopped(box);
      expect((await box.info()).state.exitCode).toBe(3);
    } finally {
      await runtime.remove(box.id, true);
    }
  });

  it('with autoRemove, a box whose main process ended is removed once it stopped', async () => {
    const runtime = new JsBoxlite({ homeDir: inject('home') });
    const box = await runtime.create({ rootfsPath: inject('image'), cmd: ['sh', '-c', 'exit 5'], autoRemove: true });
    await box.start();
    const deadline = Date.now() + 120_000;
    while ((await runtime.get(box.id)) !== null) {
      if (Date.now() > deadline) throw new Error(`box ${box.id} was not removed`);
      await new Promise((r) => setTimeout(r, 200));
    }
    expect((await box.info()).state).toMatchObject({ status: 'stopped', exitCode: 5 });
  });

  it('an exec-only box (entrypoint: [], docker\'s --entrypoint "") keeps the agent\'s reaper as PID 1 and the console as its log', async () => {
    const runtime = new JsBoxlite({ homeDir: inject('home') });
    const box = await runtime.create({ rootfsPath: inject('image'), entrypoint: [] });
    try {
      expect((await run(box, 'cat', ['/proc/1/comm'])).stdout).toBe('boxlite-init\n');
      expect(await logText(box)).toMatch(/container ready \(init pid/);
      await expect(box.attach()).rejects.toBeInstanceOf(InvalidStateError);
    } finally {
      await runtime.remove(box.id, true);
    }
  });
});

describe('the CLI and the main process', () => {
  it('run -d IMAGE CMD runs it detached: logs -f follows it to its end, inspect has its exit code', async () => {
    const started = await boxlite(['run', '-d', '--rootfs', inject('image'), 'sh', '-c', 'echo detached-out; echo detached-err >&2; sleep 2; exit 4']);
    expect(started.code).toBe(0);
    const id = started.stdout.trim();
    try {
      const followed = await boxlite(['logs', '-f', id]);
      expect(followed.stdout).toBe('detached-out\ndetached-err\n');
      const inspect = JSON.parse((await boxlite(['inspect', id])).stdout) as Array<Record<string, any>>;
      expect(inspect[0]!.state).toMatchObject({ status: 'stopped', exitCode: 4 });
      expect(inspect[0]!.mainProcess.command).toEqual(['sh', '-c', 'echo detached-out; echo detached-err >&2; sleep 2; exit 4']);
    } finally {
      await boxlite(['rm', '-f', id]);
    }
  });

  it('attach BOX follows a running main process to its end and exits with its code', async () => {
    const started = await boxlite(['run', '-d', '--rootfs', inject('image'), 'sh', '-c', 'read x; echo got-$x; exit 9']);
    const id = started.stdout.trim();
    try {
      const attached = await boxlite(['attach', '-i', id], 'hello\n');
      expect(attached).toMatchObject({ code: 9, stdout: 'got-hello\n' });
    } finally {
      await boxlite(['rm', '-f', id]);
    }
  });

  it('create IMAGE CMD stores the command; start runs it (again after it ended)', async () => {
    const created = await boxlite(['create', '--rootfs', inject('image'), '--', 'sh', '-c', 'echo run-$(cat /root/n 2>/dev/null || echo 0); echo 1 > /root/n; exit 6']);
    expect(created.code).toBe(0);
    const id = created.stdout.trim();
    try {
      for (const n of [0, 1]) {
        expect((await boxlite(['start', id])).code).toBe(0);
        expect((await boxlite(['logs', '-f', id])).stdout).toBe(`run-${n}\n`);
        const inspect = JSON.parse((await boxlite(['inspect', id])).stdout) as Array<Record<string, any>>;
        expect(inspect[0]!.state).toMatchObject({ status: 'stopped', exitCode: 6 });
      }
    } finally {
      await boxlite(['rm', '-f', id]);
    }
  });
});
