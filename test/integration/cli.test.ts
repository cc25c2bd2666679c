import { describe, expect, inject, it } from 'vitest';
import { boxlite } from './helpers.js';

describe('boxlite run', () => {
  it('runs a command in a fresh VM and passes its output and exit code through', async () => {
    const r = await boxlite(['run', '--rm', '--rootfs', inject('image'), '--', 'sh', '-c', 'echo out; echo err >&2; uname -s; exit 7']);
    expect(r.stderr).toBe('err\n');
    expect(r.stdout).toBe('out\nLinux\n');
    expect(r.code).toBe(7);
    const ls = await boxlite(['ls', '-a', '-q']);
    expect(ls.stdout).toBe('');
  });

  it('maps death by signal N to 128+N, a missing command to 127, and honours -e/-w/-u/-i/-t', async () => {
    // The command is the box's PID 1, which a signal from inside its namespace cannot kill (as in
    // docker): a child killed by SIGKILL gives the exit status 137.
    const killed = await boxlite(['run', '--rm', '--rootfs', inject('image'), 'sh', '-c', 'sh -c "kill -9 \\$\\$"; exit $?']);
    expect(killed.code).toBe(137);
    const missing = await boxlite(['run', '--rm', '--rootfs', inject('image'), 'no-such-binary']);
    expect(missing.code).toBe(127);
    expect(missing.stderr).toMatch(/command not found: no-such-binary/);
    const env = await boxlite(
      ['run', '--rm', '-i', '-e', 'A=1', '-e', 'B=two words', '-w', '/tmp', '-u', '1000:1000', '--rootfs', inject('image'), '--',
        'sh', '-c', 'echo "$A|$B|$(pwd)|$(id -u):$(id -g)"; cat'],
      'from stdin\n',
    );
    expect(env.stdout).toBe('1|two words|/tmp|1000:1000\nfrom stdin\n');
    expect(env.code).toBe(0);
    const tty = await boxlite(['run', '--rm', '-t', '--rootfs', inject('image'), 'tty']);
    expect(tty.stdout.trim()).toMatch(/^\/dev\/pts\/\d+$/);
  });

  it('rejects bad options with exit code 125 and a configuration error naming the field', async () => {
    for (const [args, field] of [
      [['--cpus', '0'], 'cpus'],
      [['--memory', '64'], 'memoryMib'],
      [['-e', '=x'], 'env'],
    ] as const) {
      const r = await boxlite(['run', '--rm', ...args, '--rootfs', inject('image'), 'true']);
      expect(r.code).toBe(125);
      expect(r.stderr).toMatch(new RegExp(`^Error: configuration error: .*${field}`));
    }
    const r = await boxlite(['run', '--rm', '--rootfs', '/no/such/layout', 'true']);
    expect(r.code).toBe(125);
    expect(r.stderr).toMatch(/configuration error: rootfsPath does not exist: \/no\/such\/layout/);
    const usage = await boxlite(['run', '--no-such-flag']);
    expect(usage.code).toBe(2);
  });
});

describe('host commands', () => {
  it('info names the accelerator and why; completion prints scripts', async () => {
    const info = JSON.parse((await boxlite(['info', '--format', 'json'])).stdout) as Array<Record<string, unknown>>;
    expect(info[0]).toMatchObject({ version: '0.1.0', home: inject('home') });
    expect(['kvm', 'hvf', 'tcg']).toContain(info[0]!.accelerator);
    expect(String(info[0]!.acceleratorReason).length).toBeGreaterThan(5);
    expect((await boxlite(['info'])).stdout).toMatch(/^Accelerator:\s+(kvm|hvf|tcg) \(/m);
    for (const shell of ['bash', 'zsh', 'fish']) {
      const r = await boxlite(['completion', shell]);
      expect(r.code).toBe(0);
      expect(r.stdout).toMatch(/boxlite/);
      expect(r.stdout).toMatch(/exec/);
    }
    expect((await boxlite(['completion', 'tcsh'])).code).toBe(2);
  });
});

describe('detached boxes: run -d, exec, ls, stop, rm', () => {
  it('manages a box across separate CLI processes', async () => {
    const started = await boxlite(['run', '-d', '--name', 'cli-detached', '--rootfs', inject('image')]);
    expect(started.code).toBe(0);
    const id = started.stdout.trim();
    expect(id).toMatch(/^[0-9A-HJKMNP-TV-Z]{26}$/);
    try {
      const ls = await boxlite(['ls']);
      expect(ls.stdout).toMatch(new RegExp(`${id}\\s+cli-detached\\s+oci:.*\\s+running`));

      const ex = await boxlite(['exec', 'cli-detached', '--', 'sh', '-c', 'echo $((6*7)) > /root/answer; cat /root/answer']);
      expect(ex.stdout).toBe('42\n');
      const again = await boxlite(['exec', id, 'cat', '/root/answer']);
      expect(again.stdout).toBe('42\n');
      const code = await boxlite(['exec', id, 'sh', '-c', 'exit 3']);
      expect(code.code).toBe(3);

      const inspect = JSON.parse((await boxlite(['inspect', 'cli-detached'])).stdout) as Array<Record<string, any>>;
      expect(inspect[0]).toMatchObject({ id, name: 'cli-detached', state: { status: 'running', running: true }, cpus: 1, memoryMib: 512 });
      expect(inspect[0]!.paths.consoleLog).toMatch(/logs\/console\.log$/);
      const templated = await boxlite(['ls', '--format', '{{.ID}} {{.state.status}}']);
      expect(templated.stdout).toContain(`${id} running\n`);
      const yaml = await boxlite(['ls', '--format', 'yaml']);
      expect(yaml.stdout).toMatch(new RegExp(`id: ${id}`));
      const logs = await boxlite(['logs', '--console', '-n', '50', id]);
      expect(logs.stdout).toMatch(/boxlite-guest/);
      expect(inspect[0]!.config).toMatchObject({ cpus: 1, memoryMib: 512, detach: true });
      const stats = JSON.parse((await boxlite(['stats', '--format', 'json', id])).stdout) as Array<{ memoryBytes: number; cpuPercent: number }>;
      expect(stats[0]!.memoryBytes).toBeGreaterThan(50 * 1024 * 1024);
      expect(stats[0]!.cpuPercent).toBeGreaterThanOrEqual(0);
      expect((await boxlite(['restart', id])).code).toBe(0);
      const afterRestart = await boxlite(['exec', id, 'cat', '/root/answer']);
      expect(afterRestart.stdout).toBe('42\n');

      const rmRunning = await boxlite(['rm', id]);
      expect(rmRunning.code).toBe(1);
      expect(rmRunning.stderr).toMatch(/invalid state: .*running.*force/);

      expect((await boxlite(['stop', id])).code).toBe(0);
      const stopped = await boxlite(['ls', '-a']);
      expect(stopped.stdout).toMatch(new RegExp(`${id}.*stopped`));
      // logs -f of a stopped box prints the log and ends; -n N is exactly its last N lines.
      const followed = await boxlite(['logs', '--console', '-f', id]);
      expect(followed.code).toBe(0);
      expect(followed.stdout).toMatch(/boxlite-guest/);
      const lines = followed.stdout.replace(/\n$/, '').split('\n');
      expect(lines.length).toBeGreaterThan(3);
      for (const n of [1, 3]) {
        expect((await boxlite(['logs', '--console', '-n', String(n), id])).stdout).toBe(`${lines.slice(-n).join('\n')}\n`);
      }
      const execStopped = await boxlite(['exec', id, 'true']);
      expect(execStopped.code).toBe(125);
      expect(execStopped.stderr).toMatch(/invalid state: box .* is not running/);
    } finally {
      await boxlite(['rm', '-f', id]);
    }
    const gone = await boxlite(['exec', id, 'true']);
    expect(gone.code).toBe(125);
    expect(gone.stderr).toMatch(/box not found/);
  });
});
