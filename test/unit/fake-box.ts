// The fake runtime the box-type unit tests (CodeBox, ComputerBox, BrowserBox, SkillBox) drive their
// class with: it records the box options and name each create() gets and every exec (command,
// argv, env, tty), and answers execs with scripted results, so a test pins the reference's exact
// commands without a VM. test/boxtypes/ proves the effects in real VMs.
import type { JsBoxlite } from '../../src/index.js';

export interface ExecCall {
  cmd: string;
  args: string[];
  env: unknown;
  tty: unknown;
}

/** An exec's outcome (exit code 0 and no output unless given), or an Error the exec rejects with. */
export type Reply = { exitCode?: number; stdout?: string; stderr?: string } | Error;

/** An exec output stream that yields `text` once (nothing when empty), then ends. */
export function stream(text: string) {
  let sent = text === '';
  return { next: async () => (sent ? null : ((sent = true), text)) };
}

export interface FakeRuntimeOptions {
  /** Returns an execution of its own for the calls it wants (e.g. a long-running process), else undefined. */
  intercept?: (call: ExecCall) => unknown;
  /** What the box's info() resolves to. */
  info?: unknown;
}

/**
 * A runtime whose one box answers execs from `replies`: a list used in order (then exit 0, no
 * output), or a function of the call.
 */
export function fakeRuntime(replies: Reply[] | ((call: ExecCall) => Reply) = [], options: FakeRuntimeOptions = {}) {
  const creates: Array<Record<string, unknown>> = [];
  const names: unknown[] = [];
  const execs: ExecCall[] = [];
  const box = {
    id: '01FAKEBOX',
    stopped: false,
    async exec(cmd: string, args: string[], env: unknown, tty: unknown) {
      const call = { cmd, args, env, tty };
      execs.push(call);
      const own = options.intercept?.(call);
      if (own !== undefined) return own;
      const r = (typeof replies === 'function' ? replies(call) : replies.shift()) ?? {};
      if (r instanceof Error) throw r;
      return {
        stdout: async () => stream(r.stdout ?? ''),
        stderr: async () => stream(r.stderr ?? ''),
        wait: async () => ({ exitCode: r.exitCode ?? 0 }),
      };
    },
    async info() {
      return options.info;
    },
    async stop() {
      this.stopped = true;
    },
  };
  const runtime = {
    async create(opts: Record<string, unknown>, name: unknown) {
      creates.push(opts);
      names.push(name);
      return box;
    },
  } as unknown as JsBoxlite;
  return { runtime, creates, names, execs, box };
}

/** The error `p` rejects with; fails the test when it resolves. */
export async function rejection(p: Promise<unknown>): Promise<Error & { code?: string }> {
  try {
    await p;
  } catch (err) {
    return err as Error & { code?: string };
  }
  throw new Error('expected a rejection');
}
