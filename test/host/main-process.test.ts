// The box's main process in the shim (src/shim/main-process.ts) against the host-mode agent:
// owned by the shim, output to logs/main.log, end recorded in exit.json, the box stopping with
// it, and clients attaching to it (docs/decisions/0003-main-process.md).
import fs from 'node:fs';
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import { launchShim, ShimClient } from '../../dist/shim/client.js';
import type { MainSpec } from '../../dist/shim/config.js';
import type { Message } from '../../dist/protocol/codec.js';
import { agentPeer, alive, boxDir, run, shimConfig, startBox, waitFor } from './helpers.js';

const ENV = ['PATH=/usr/local/bin:/usr/bin:/bin'];

async function boot(main: Partial<MainSpec> & { argv: string[] }, features?: number) {
  const spec: MainSpec = { env: ENV, user: '', cwd: '/', tty: false, hold: false, ...main };
  const box = await startBox(agentPeer(features), boxDir(), { main: spec });
  const read = (name: string) => fs.readFileSync(path.join(box.dir, name), 'utf8');
  return {
    ...box,
    read,
    exit: () => JSON.parse(read('exit.json')) as { exitCode: number; reason: string; signal?: number },
  };
}

function collect(client: ShimClient, tty = false) {
  const got: Message[] = [];
  const { channel, reply } = client.attachMain(tty, { onMessage: (m) => got.push(m), onLost: () => {} });
  const text = (type: 'STDOUT' | 'STDERR') =>
    Buffer.concat(got.filter((m): m is Extract<Message, { type: 'STDOUT' }> => m.type === type).map((m) => m.data)).toString();
  const exit = () => got.find((m): m is Extract<Message, { type: 'EXIT' }> => m.type === 'EXIT');
  return { channel, reply, got, text, exit };
}

describe('the main process (shim + host-mode agent)', () => {
  it('runs at boot, logs its output, records its exit code, and the box stops with it', async () => {
    const box = await boot({ argv: ['sh', '-c', 'echo out; echo err >&2; sleep 0.3; exit 3'] });
    try {
      await waitFor(() => !alive(box.shimPid), 10_000);
      expect(box.read('logs/main.log')).toBe('out\nerr\n');
      expect(box.exit()).toMatchObject({ exitCode: 3, reason: 'exited' });
      expect(box.read('logs/shim.log')).toMatch(/stopping: the main process ended \(exit code 3\)/);
    } finally {
      await box.dispose();
    }
  });

  it('keeps its stdin open: a shell reading it idles until the box is stopped (recorded as 137)', async () => {
    const box = await boot({ argv: ['sh'] });
    try {
      await new Promise((r) => setTimeout(r, 500));
      expect(alive(box.shimPid)).toBe(true);
      expect(fs.existsSync(path.join(box.dir, 'exit.json'))).toBe(false);
      await box.client.request('stop');
      expect(box.exit()).toMatchObject({ exitCode: 137, reason: 'stopped', signal: 9 });
    } finally {
      await box.dispose();
    }
  });

  it('held: starts on the first attach, which sees all of its output, stdin and exit', async () => {
    const box = await boot({ argv: ['sh', '-c', 'echo first; read x; echo got-$x >&2; exit 5'], hold: true });
    try {
      await new Promise((r) => setTimeout(r, 300));
      expect(fs.existsSync(path.join(box.dir, 'logs', 'main.log'))).toBe(false); // not started yet
      const a = collect(box.client);
      const answer = await a.reply;
      expect(answer).toHaveProperty('pid');
      await a.channel.writeStdin(Buffer.from('abc\n'));
      await waitFor(() => a.exit() !== undefined, 10_000);
      expect(a.text('STDOUT')).toBe('first\n');
      expect(a.text('STDERR')).toBe('got-abc\n');
      expect(a.exit()).toMatchObject({ code: 5, reason: 0 });
      await waitFor(() => !alive(box.shimPid), 10_000);
      expect(box.exit().exitCode).toBe(5);
    } finally {
      await box.dispose();
    }
  });

  it('reports a command that cannot start as exited 127 to the attach, and records it', async () => {
    const box = await boot({ argv: ['no-such-command-here'], hold: true });
    try {
      const a = collect(box.client);
      expect(await a.reply).toMatchObject({ exited: true, exitCode: 127, message: expect.stringMatching(/command not found/) });
      await waitFor(() => !alive(box.shimPid), 10_000);
      expect(box.exit()).toMatchObject({ exitCode: 127, reason: 'failed' });
    } finally {
      await box.dispose();
    }
  });

  it('a second client attaches to a running main process and gets its output from then on; SIGNAL reaches it', async () => {
    const box = await boot({ argv: ['sh', '-c', 'trap "echo term; exit 7" TERM; while :; do sleep 0.1; done'] });
    try {
      const a = collect(box.client);
      await a.reply;
      await a.channel.signal(15);
      await waitFor(() => a.exit() !== undefined, 10_000);
      expect(a.text('STDOUT')).toBe('term\n');
      expect(a.exit()).toMatchObject({ code: 7 });
    } finally {
      await box.dispose();
    }
  });

  it('refuses to boot, Unsupported at once, when the agent lacks MAIN (it would never answer the MAIN EXEC)', async () => {
    const dir = boxDir();
    try {
      const spec: MainSpec = { argv: ['sh'], env: ENV, user: '', cwd: '/', tty: false, hold: false };
      const t0 = Date.now();
      await expect(launchShim({ ...shimConfig(dir, agentPeer(0x1f)), main: spec })).rejects.toMatchObject({
        code: 'Unsupported',
        message: expect.stringMatching(/lacks MAIN \(0x20/),
      });
      expect(Date.now() - t0).toBeLessThan(5_000);
    } finally {
      fs.rmSync(dir, { recursive: true, force: true });
    }
  });

  it('held: starts anyway when no client attaches in time, so the box is never left without its init', async () => {
    const box = await boot({ argv: ['sh', '-c', 'echo ran; exit 4'], hold: true, holdTimeoutMs: 300 });
    try {
      await waitFor(() => !alive(box.shimPid), 10_000);
      expect(box.read('logs/main.log')).toBe('ran\n');
      expect(box.exit()).toMatchObject({ exitCode: 4, reason: 'exited' });
      expect(box.read('logs/shim.log')).toMatch(/no client attached within 300 ms/);
    } finally {
      await box.dispose();
    }
  });

  it('bounds main.log: a process that floods its output rotates it to main.log.1, newest output kept', async () => {
    // 2000 numbered lines (~ 19 KB) against a 4 KiB cap.
    const box = await boot({ argv: ['sh', '-c', 'i=0; while [ $i -lt 2000 ]; do echo line-$i; i=$((i+1)); done'], logMaxBytes: 4096 });
    try {
      await waitFor(() => !alive(box.shimPid), 15_000);
      const current = box.read('logs/main.log');
      const previous = box.read('logs/main.log.1');
      expect(current.length).toBeLessThanOrEqual(4096);
      expect(previous.length).toBe(4096);
      // The two generations are one contiguous, newest suffix of the output.
      const all = Array.from({ length: 2000 }, (_, i) => `line-${i}\n`).join('');
      expect(all.endsWith(previous + current)).toBe(true);
    } finally {
      await box.dispose();
    }
  });

  it('an execution in flight when the main process ends gets its EXIT before the box stops', async () => {
    const box = await boot({ argv: ['sh', '-c', 'sleep 0.3; exit 2'] });
    try {
      // In a VM the container's pid namespace dies with its init and the EXIT says SIGKILL; the
      // host-mode agent has no namespace, so here it finishes. Either way: an EXIT, not a lost link.
      const ran = await run(box.client, ['sh', '-c', 'sleep 0.8; echo done']);
      expect(ran.exit).toMatchObject({ code: 0 });
      expect(ran.stdout.toString()).toBe('done\n');
      await waitFor(() => !alive(box.shimPid), 10_000);
      expect(box.exit().exitCode).toBe(2);
    } finally {
      await box.dispose();
    }
  });
});
