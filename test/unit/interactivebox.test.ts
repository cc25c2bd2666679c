import { EventEmitter } from 'node:events';
import { afterEach, describe, expect, it, vi } from 'vitest';
import { InteractiveBox, JsBoxlite, type InteractiveBoxOptions } from '../../src/index.js';

// InteractiveBox against a stubbed box and a stand-in terminal: the exact exec call, what the
// session does to the terminal (raw mode, size, listeners) and when it undoes it. The effects on a
// real pseudo-terminal and guest are in test/integration/interactivebox.test.ts.

const rt = new JsBoxlite({ homeDir: '/nonexistent/boxlite-unit-home' });

/** A controllable execution: output is pushed by the test, exit() ends the shell. */
function fakeExecution() {
  const queues = { stdout: [] as Array<Buffer | null>, stderr: [] as Array<Buffer | null> };
  const waiters = { stdout: [] as Array<() => void>, stderr: [] as Array<() => void> };
  const stream = (which: 'stdout' | 'stderr') => ({
    async nextBuffer(): Promise<Buffer | null> {
      while (queues[which].length === 0) await new Promise<void>((r) => waiters[which].push(r));
      return queues[which].shift()!;
    },
  });
  const push = (which: 'stdout' | 'stderr', data: Buffer | null) => {
    queues[which].push(data);
    for (const w of waiters[which].splice(0)) w();
  };
  let settle!: (r: { exitCode: number }) => void;
  const result = new Promise<{ exitCode: number }>((r) => (settle = r));
  const written: Buffer[] = [];
  const ex = {
    stdin: vi.fn(async () => ({ write: vi.fn(async (d: Buffer) => void written.push(Buffer.from(d))) })),
    stdout: vi.fn(async () => stream('stdout')),
    stderr: vi.fn(async () => stream('stderr')),
    wait: vi.fn(() => result),
    resizeTty: vi.fn(async (_rows: number, _cols: number) => {}),
  };
  return {
    ex,
    written,
    push,
    exit(code = 0) {
      push('stdout', null);
      push('stderr', null);
      settle({ exitCode: code });
    },
  };
}

/** A terminal stand-in: stdin with raw mode, stdout/stderr with a window size and 'resize'. */
function fakeTerminal(opts: { isTTY?: boolean; rows?: number; columns?: number } = {}) {
  const stdin = Object.assign(new EventEmitter(), {
    isTTY: opts.isTTY ?? true,
    isRaw: false,
    setRawMode: vi.fn(function (this: { isRaw: boolean }, mode: boolean) {
      stdin.isRaw = mode;
      return stdin;
    }),
    resume: vi.fn(),
    pause: vi.fn(),
  });
  const out = () =>
    Object.assign(new EventEmitter(), {
      isTTY: opts.isTTY ?? true,
      rows: opts.rows ?? 33,
      columns: opts.columns ?? 111,
      written: [] as Buffer[],
      write: vi.fn(function (this: { written: Buffer[] }, d: Buffer) {
        this.written.push(Buffer.from(d));
        return true;
      }),
    });
  return { stdin, stdout: out(), stderr: out() };
}

function makeBox(options: Partial<InteractiveBoxOptions>, terminal?: ReturnType<typeof fakeTerminal>) {
  const execution = fakeExecution();
  const box = { exec: vi.fn(async () => execution.ex), stop: vi.fn(async () => {}) };
  class TestBox extends InteractiveBox {
    constructor() {
      super({ runtime: rt, rootfsPath: '/img', ...options });
      if (terminal) this._host = terminal as never;
      this._box = box as never; // created already: exec/stop reach the stub
    }
    protected override async _ensureBox() {
      return box as never;
    }
    get boxOpts() {
      return this._boxOpts;
    }
    get state() {
      return { tty: this._tty, shell: this._shell, exited: this._exited, tasks: this._ioTasks.length };
    }
  }
  return { ib: new TestBox(), box, execution };
}

const tick = () => new Promise((r) => setImmediate(r));

afterEach(() => {
  vi.useRealTimers();
});

describe('InteractiveBox (stubbed box)', () => {
  it('needs options: no argument is a TypeError, as destructuring undefined in the reference', () => {
    const make = InteractiveBox as unknown as new (o?: unknown) => unknown;
    expect(() => new make()).toThrow(TypeError);
    expect(() => new make()).toThrow("Cannot read properties of undefined (reading 'shell')");
    expect(() => new make(null)).toThrow(TypeError);
  });

  it('starts /bin/sh on a PTY with no env by default, and tty follows process.stdin.isTTY', async () => {
    const { ib, box } = makeBox({});
    expect(ib.state).toMatchObject({ shell: '/bin/sh', tty: process.stdin.isTTY ?? false });
    await ib.start();
    expect(box.exec).toHaveBeenCalledExactlyOnceWith('/bin/sh', [], undefined, true);
  });

  it('passes shell and env to the exec (env also to the box), and neither shell nor tty to the box', async () => {
    const { ib, box } = makeBox({ shell: '/bin/ash', env: { A: '1', B: 'two' }, tty: false, memoryMib: 256 });
    expect(ib.boxOpts).toMatchObject({ rootfsPath: '/img', memoryMib: 256, env: [{ key: 'A', value: '1' }, { key: 'B', value: 'two' }] });
    expect(Object.keys(ib.boxOpts)).not.toContain('shell');
    expect(Object.keys(ib.boxOpts)).not.toContain('tty');
    await ib.start();
    expect(box.exec).toHaveBeenCalledExactlyOnceWith('/bin/ash', [], [['A', '1'], ['B', 'two']], true);
  });

  it('on a TTY: raw mode, window size at start and on resize, bytes both ways, terminal restored at shell exit', async () => {
    const term = fakeTerminal({ rows: 33, columns: 111 });
    const { ib, execution } = makeBox({ tty: true }, term);
    const sigterm = process.listenerCount('SIGTERM');
    const exits = process.listenerCount('exit');
    await ib.start();
    expect(term.stdin.setRawMode).toHaveBeenCalledExactlyOnceWith(true);
    expect(term.stdin.resume).toHaveBeenCalled();
    expect(execution.ex.resizeTty).toHaveBeenCalledExactlyOnceWith(33, 111);
    expect(ib.state.tasks).toBe(4);
    expect([process.listenerCount('SIGTERM'), process.listenerCount('exit')]).toEqual([sigterm + 1, exits + 1]);

    term.stdin.emit('data', Buffer.from('ls\r\x03'));
    await tick();
    expect(Buffer.concat(execution.written)).toEqual(Buffer.from('ls\r\x03'));

    // Output is forwarded as bytes, not re-decoded (an invalid UTF-8 byte survives).
    execution.push('stdout', Buffer.from([0x68, 0x69, 0xff]));
    execution.push('stderr', Buffer.from('err'));
    await tick();
    expect(Buffer.concat(term.stdout.written)).toEqual(Buffer.from([0x68, 0x69, 0xff]));
    expect(Buffer.concat(term.stderr.written).toString()).toBe('err');

    term.stdout.rows = 50;
    term.stdout.columns = 132;
    term.stdout.emit('resize');
    expect(execution.ex.resizeTty).toHaveBeenLastCalledWith(50, 132);

    execution.exit(0);
    await ib.wait();
    expect(term.stdin.setRawMode).toHaveBeenLastCalledWith(false);
    expect(term.stdin.pause).toHaveBeenCalled();
    expect(term.stdin.listenerCount('data')).toBe(0);
    expect(term.stdout.listenerCount('resize')).toBe(0);
    expect([process.listenerCount('SIGTERM'), process.listenerCount('exit')]).toEqual([sigterm, exits]);
    // Typing after the exit goes nowhere.
    term.stdin.emit('data', Buffer.from('late'));
    await tick();
    expect(Buffer.concat(execution.written).toString()).toBe('ls\r\x03');
  });

  it('a terminal that reports no window size (0x0) leaves the guest PTY at its default', async () => {
    const term = fakeTerminal({ rows: 0, columns: 0 });
    const { ib, execution } = makeBox({ tty: true }, term);
    await ib.start();
    expect(term.stdin.setRawMode).toHaveBeenCalledWith(true);
    expect(execution.ex.resizeTty).not.toHaveBeenCalled();
    execution.exit(0);
    await ib.wait();
  });

  it('tty: true without a TTY on stdin, or tty: false on one: no raw mode, only the exit task', async () => {
    for (const [tty, isTTY] of [
      [true, false],
      [false, true],
    ] as const) {
      const term = fakeTerminal({ isTTY });
      const { ib, execution } = makeBox({ tty }, term);
      await ib.start();
      expect(term.stdin.setRawMode).not.toHaveBeenCalled();
      expect(execution.ex.resizeTty).not.toHaveBeenCalled();
      expect(ib.state.tasks).toBe(1);
      // Output is left for the caller (_stdout), not written to the terminal.
      execution.push('stdout', Buffer.from('x'));
      execution.exit(0);
      await ib.wait();
      expect(term.stdout.write).not.toHaveBeenCalled();
      expect(ib.state.exited).toBe(true);
    }
  });

  it('stop() while the shell runs restores the terminal, waits at most 3 s for the tasks, then stops the box', async () => {
    vi.useFakeTimers({ toFake: ['setTimeout', 'clearTimeout'] });
    const term = fakeTerminal();
    const { ib, box } = makeBox({ tty: true }, term);
    await ib.start();
    let stopped = false;
    const stopping = ib.stop().then(() => (stopped = true));
    await tick();
    expect(term.stdin.setRawMode).toHaveBeenLastCalledWith(false);
    expect(term.stdin.listenerCount('data')).toBe(0);
    await vi.advanceTimersByTimeAsync(2900);
    expect([stopped, box.stop.mock.calls.length]).toEqual([false, 0]);
    await vi.advanceTimersByTimeAsync(200);
    await stopping;
    expect(box.stop).toHaveBeenCalledOnce();
    expect(ib.state.tasks).toBe(0);
  });

  it('a fatal signal while raw restores the terminal first (the program keeps its own handler)', async () => {
    const term = fakeTerminal();
    const { ib, execution } = makeBox({ tty: true }, term);
    await ib.start();
    // The program's own listener stays, so ours must not re-raise the signal and kill the worker.
    const own = vi.fn();
    process.on('SIGHUP', own);
    try {
      process.emit('SIGHUP', 'SIGHUP');
      expect(own).toHaveBeenCalled();
      expect(term.stdin.setRawMode).toHaveBeenLastCalledWith(false);
      expect(term.stdin.listenerCount('data')).toBe(0);
    } finally {
      process.off('SIGHUP', own);
    }
    execution.exit(0);
    await ib.wait();
  });

  it('process exit while raw restores the terminal (the exit hook), once', async () => {
    const term = fakeTerminal();
    const { ib, execution } = makeBox({ tty: true }, term);
    const before = process.listeners('exit');
    await ib.start();
    const added = process.listeners('exit').filter((l) => !before.includes(l));
    expect(added).toHaveLength(1);
    (added[0] as () => void)();
    expect(term.stdin.setRawMode.mock.calls).toEqual([[true], [false]]);
    execution.exit(0);
    await ib.wait();
    await ib.stop();
    expect(term.stdin.setRawMode.mock.calls).toEqual([[true], [false]]);
  });
});
