import { NetworkError, type JsExecution as Execution } from '../index.js';

export interface AttachOptions {
  interactive: boolean;
  tty: boolean;
  /** Not interactive, and leave the process's stdin open (attaching to a box's main process). */
  keepStdin?: boolean;
  /** A remote server's execution: a result carrying an error (the socket lost for good) is a failure, not an exit code. */
  remote?: boolean;
}

/** The interrupt (SIGINT/SIGTERM) that escalates to SIGKILL. */
export const FORCE_AFTER_INTERRUPTS = 3;

/**
 * Connects this terminal to an execution: output streams as raw bytes, stdin
 * when interactive, terminal size and signals forwarded. Resolves with the exit
 * code a shell would see (128+N for a signal).
 */
export async function attach(execution: Execution, opts: AttachOptions): Promise<number> {
  const stdin = await execution.stdin();
  const cleanups: Array<() => void> = [];

  if (opts.tty && process.stdout.isTTY) {
    const resize = () => void execution.resizeTty(process.stdout.rows, process.stdout.columns).catch(() => undefined);
    resize();
    process.stdout.on('resize', resize);
    cleanups.push(() => process.stdout.off('resize', resize));
  }
  if (opts.interactive) {
    if (opts.tty && process.stdin.isTTY) {
      process.stdin.setRawMode(true);
      cleanups.push(() => process.stdin.setRawMode(false));
    }
    const onData = (chunk: Buffer) => {
      process.stdin.pause();
      void stdin.write(chunk).then(() => process.stdin.resume());
    };
    const onEnd = () => void stdin.close();
    process.stdin.on('data', onData);
    process.stdin.once('end', onEnd);
    cleanups.push(() => {
      process.stdin.off('data', onData);
      process.stdin.off('end', onEnd);
      process.stdin.pause();
    });
  } else if (!opts.keepStdin) {
    await stdin.close();
  }

  // Without a TTY the terminal's signals are ours: pass them on, like docker's sig-proxy. A box's
  // main process is its PID namespace's init and ignores every signal it has no handler for
  // (docs/decisions/0003-main-process.md), so Ctrl-C alone may never end it: the third
  // interrupt sends SIGKILL, which always arrives.
  if (!opts.tty || !process.stdin.isTTY) {
    let interrupts = 0;
    for (const [name, signo] of [['SIGINT', 2], ['SIGTERM', 15], ['SIGHUP', 1]] as const) {
      const forward = () => {
        if (name !== 'SIGHUP' && ++interrupts >= FORCE_AFTER_INTERRUPTS) {
          if (interrupts === FORCE_AFTER_INTERRUPTS) process.stderr.write(`boxlite: ${interrupts} interrupts; sending SIGKILL\n`);
          void execution.signal(9);
          return;
        }
        void execution.signal(signo);
      };
      process.on(name, forward);
      cleanups.push(() => process.off(name, forward));
    }
  }

  const pump = async (source: Promise<AsyncIterable<Buffer>>, sink: NodeJS.WriteStream) => {
    for await (const chunk of await source) {
      if (!sink.write(chunk)) await new Promise((r) => sink.once('drain', r));
    }
  };
  try {
    await Promise.all([pump(execution.stdout(), process.stdout), pump(execution.stderr(), process.stderr)]);
    const result = await execution.wait();
    if (opts.remote && result.errorMessage) throw new NetworkError(`lost the remote command's output stream: ${result.errorMessage}`);
    return result.exitCode < 0 ? 128 - result.exitCode : result.exitCode;
  } finally {
    for (const c of cleanups) c();
  }
}
