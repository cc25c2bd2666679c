import { spawn, execFileSync, type ChildProcess } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { afterAll, describe, expect, inject, it } from 'vitest';
import { InteractiveBox, JsBoxlite } from '../../dist/index.js';
import { scratchHome } from './helpers.js';

// InteractiveBox on a real VM. The tty path runs test/fixtures/interactive-shell.mjs under
// util-linux `script`, so the program's stdin/stdout are a real pseudo-terminal the test types
// into (through script's stdin pipe) and resizes (stty -F on that pty).

const FIXTURE = path.resolve(import.meta.dirname, '../fixtures/interactive-shell.mjs');
const WAIT_MS = 120_000;
const homes: string[] = [];
afterAll(() => {
  for (const d of homes) fs.rmSync(d, { recursive: true, force: true });
});

function home(): string {
  const d = scratchHome('boxlite-ibox-');
  homes.push(d);
  return d;
}

interface ReportLine {
  event: 'begin' | 'started' | 'exited' | 'stopped';
  stty: string;
  pid?: number;
  tty?: string;
  isRaw?: boolean;
}

/** The fixture on a fresh pty of size 30x100; after node ends, the shell prints node's status and the pty's settings. */
function session() {
  const dir = home();
  const reportFile = path.join(dir, 'report.jsonl');
  const command = `stty rows 30 cols 100 && ${process.execPath} ${FIXTURE}; echo "node-status=$?"; echo "after=$(stty -g)"`;
  const child: ChildProcess = spawn('script', ['-qfec', command, '/dev/null'], {
    stdio: ['pipe', 'pipe', 'pipe'],
    env: { ...process.env, IBOX_HOME: dir, IBOX_REPORT: reportFile, IBOX_IMAGE: inject('image') },
  });
  let output = '';
  child.stdout!.on('data', (d: Buffer) => (output += d.toString('utf8')));
  child.stderr!.on('data', (d: Buffer) => (output += d.toString('utf8')));
  const closed = new Promise<number | null>((resolve) => child.on('close', (code) => resolve(code)));

  const report = (): ReportLine[] => {
    try {
      return fs.readFileSync(reportFile, 'utf8').trim().split('\n').filter(Boolean).map((l) => JSON.parse(l) as ReportLine);
    } catch {
      return [];
    }
  };
  const event = (name: ReportLine['event']) => report().find((r) => r.event === name);

  /** Resolves with the match once the output (from offset `from`) matches, or fails naming what was seen. */
  async function until(re: RegExp, from = 0, ms = WAIT_MS): Promise<RegExpMatchArray> {
    const deadline = Date.now() + ms;
    for (;;) {
      const m = output.slice(from).match(re);
      if (m) return m;
      if (Date.now() > deadline || child.exitCode !== null) {
        throw new Error(`no ${re} in the terminal output; got:\n${JSON.stringify(output.slice(from))}\nreport: ${JSON.stringify(report())}`);
      }
      await new Promise((r) => setTimeout(r, 100));
    }
  }

  /** Types `text`; returns the output offset before it, for until() to look after. */
  function type(text: string): number {
    const at = output.length;
    child.stdin!.write(text);
    return at;
  }

  /** script's exit code once it ends by itself (within `ms`); after that it is ended (SIGTERM: it hangs up the pty, so node goes too). */
  async function close(ms = 60_000): Promise<number | null> {
    let timer: NodeJS.Timeout | undefined;
    const code = await Promise.race([closed, new Promise<null>((r) => (timer = setTimeout(() => r(null), ms)))]);
    clearTimeout(timer);
    if (child.exitCode === null && child.signalCode === null && child.pid) {
      process.kill(child.pid, 'SIGTERM');
      await closed;
    }
    return code;
  }

  return { until, type, event, report, close, output: () => output };
}

describe('InteractiveBox on a real VM', () => {
  it('new InteractiveBox() is a TypeError (options are required)', () => {
    const make = InteractiveBox as unknown as new () => unknown;
    expect(() => new make()).toThrow(TypeError);
  });

  it('tty: false: the caller drives _stdin/_stdout of the PTY shell', async () => {
    class ScriptedBox extends InteractiveBox {
      async send(text: string) {
        await this._stdin!.writeString(text);
      }
      async readAll(): Promise<string> {
        let out = '';
        for (;;) {
          const chunk = await this._stdout!.next();
          if (chunk === null) return out;
          out += chunk;
        }
      }
    }
    const runtime = new JsBoxlite({ homeDir: home() });
    const box = new ScriptedBox({ runtime, rootfsPath: inject('image'), tty: false });
    try {
      await box.start();
      await box.send('echo $((6*7)); exit\n');
      const out = await box.readAll();
      // The PTY echoes the typed line; the result is a line of its own.
      expect(out).toMatch(/(^|\n)42\r?\n/);
      await box.wait();
    } finally {
      await box.stop();
      runtime.close();
    }
  });

  it('on a real TTY: raw passthrough, window size at start and on SIGWINCH, Ctrl-C reaches the guest, terminal restored on exit', async () => {
    const s = session();
    try {
      await s.until(/\/ # /);
      const begin = s.event('begin')!;
      const started = s.event('started')!;
      expect(begin.tty).toMatch(/^\/dev\/pts\/\d+$/);
      // Raw mode is on while the shell runs: the pty's settings differ from the cooked ones.
      expect(started.isRaw).toBe(true);
      expect(started.stty).not.toBe(begin.stty);

      let at = s.type('echo ok-$((1+2))\r');
      await s.until(/ok-3/, at);

      at = s.type('tty; echo size-$(stty size)\r');
      // A PTY of its own, at the host window's size (the guest default is 24x80).
      await s.until(/\/dev\/pts\/\d+\r*\nsize-30 100/, at);

      // Resizing the host pty makes the kernel send SIGWINCH to the program; the guest follows.
      execFileSync('stty', ['-F', begin.tty!, 'rows', '40', 'cols', '120']);
      let size = '';
      for (let i = 0; i < 10 && size !== '40 120'; i++) {
        at = s.type(`echo resized-${i}-$(stty size)\r`);
        size = (await s.until(new RegExp(`resized-${i}-(\\d+ \\d+)`), at))[1]!;
        if (size !== '40 120') await new Promise((r) => setTimeout(r, 500));
      }
      expect(size).toBe('40 120');

      // Ctrl-C is a byte in raw mode: it interrupts the guest's sleep, not this program.
      at = s.type('echo sleeping; sleep 100\r');
      await s.until(/sleeping\r*\n/, at);
      await new Promise((r) => setTimeout(r, 1_500));
      const t0 = Date.now();
      at = s.type('\x03');
      await s.until(/\/ # /, at, 30_000);
      at = s.type('echo rc-$?\r');
      await s.until(/rc-130/, at);
      expect(Date.now() - t0).toBeLessThan(30_000);
      expect(s.event('exited')).toBeUndefined();

      at = s.type('exit\r');
      const m = await s.until(/node-status=(\d+)\r*\nafter=(\S+)/, at);
      expect(m[1]).toBe('0');
      // Restored: cooked again as soon as the shell exited, and after the program ended.
      expect(s.event('exited')).toMatchObject({ isRaw: false, stty: begin.stty });
      expect(s.event('stopped')?.stty).toBe(begin.stty);
      expect(m[2]).toBe(begin.stty);
      expect(await s.close()).toBe(0);
    } finally {
      await s.close(0);
    }
  });

  it('SIGHUP to the program while raw: the terminal is restored and the program still dies of SIGHUP', async () => {
    // Node resets the terminal itself on SIGINT/SIGTERM, not on SIGHUP/SIGQUIT: this one is ours.
    const s = session();
    try {
      await s.until(/\/ # /);
      const begin = s.event('begin')!;
      expect(s.event('started')?.isRaw).toBe(true);
      const at = s.output().length;
      process.kill(begin.pid!, 'SIGHUP');
      const m = await s.until(/node-status=(\d+)\r*\nafter=(\S+)/, at);
      expect(m[1]).toBe(String(128 + 1));
      expect(m[2]).toBe(begin.stty);
      expect(await s.close()).toBe(0);
    } finally {
      await s.close(0);
    }
  });
});
