// The CLI's attach (src/cli/attach.ts) without a TTY forwards the terminal's signals; a box's
// main process, its PID namespace's init, ignores those it has no handler for, so the third
// interrupt escalates to SIGKILL (the only way Ctrl-C can end `boxlite run IMAGE sleep 100`).
import { describe, expect, it, vi } from 'vitest';
import { attach, FORCE_AFTER_INTERRUPTS } from '../../src/cli/attach.js';

function fakeExecution() {
  const sent: number[] = [];
  let end!: () => void;
  const ended = new Promise<void>((r) => (end = r));
  const stream = async () => ({
    async *[Symbol.asyncIterator]() {
      await ended;
    },
  });
  const execution = {
    stdin: async () => ({ write: async () => {}, close: async () => {} }),
    stdout: stream,
    stderr: stream,
    resizeTty: async () => {},
    signal: async (n: number) => {
      sent.push(n);
      if (n === 9) end(); // only SIGKILL ends an init that handles nothing
    },
    wait: async () => {
      await ended;
      return { exitCode: -9 };
    },
  };
  return { execution, sent };
}

describe('boxlite attach/run signal forwarding (no TTY)', () => {
  it('forwards SIGINT twice, then sends SIGKILL on the third interrupt', async () => {
    const { execution, sent } = fakeExecution();
    const before = new Set(process.listeners('SIGINT'));
    const stderr = vi.spyOn(process.stderr, 'write').mockImplementation(() => true);
    try {
      const done = attach(execution as never, { interactive: false, tty: false, keepStdin: true });
      await new Promise((r) => setTimeout(r, 10));
      const ours = process.listeners('SIGINT').filter((l) => !before.has(l));
      expect(ours).toHaveLength(1);
      for (let i = 0; i < FORCE_AFTER_INTERRUPTS; i++) (ours[0] as () => void)();
      expect(await done).toBe(137);
      expect(sent).toEqual([2, 2, 9]);
      expect(stderr).toHaveBeenCalledWith(expect.stringMatching(/3 interrupts; sending SIGKILL/));
      // Its listeners are gone once it returned.
      expect(process.listeners('SIGINT').filter((l) => !before.has(l))).toHaveLength(0);
    } finally {
      stderr.mockRestore();
    }
  });
});
