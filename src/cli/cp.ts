import { Command } from 'commander';
import { ConfigError, NotFoundError, type JsBoxlite } from '../index.js';

type Act = (fn: (...args: any[]) => Promise<number>) => (...args: unknown[]) => Promise<void>;

/** docker cp grammar: `BOX:PATH` when the part before the first ':' names a box (no '/'). */
export function parseCpArg(arg: string): { box: string; path: string } | { host: string } {
  const i = arg.indexOf(':');
  if (i > 0 && !arg.slice(0, i).includes('/')) return { box: arg.slice(0, i), path: arg.slice(i + 1) };
  return { host: arg };
}

/** `boxlite cp SRC DST`: copies between the host and a box; exactly one side is BOX:PATH. */
export function registerCpCommand(program: Command, act: Act, runtimeFrom: (cmd: Command) => JsBoxlite): void {
  program
    .command('cp')
    .description('Copy files between a box and the host (one side is BOX:PATH)')
    .option('-L, --follow-link', 'always follow symbolic links in SRC')
    .option('--no-overwrite', 'do not replace existing files')
    .argument('<src>', 'BOX:PATH or a host path')
    .argument('<dst>', 'BOX:PATH or a host path')
    .action(
      act(async (src: string, dst: string, o, cmd: Command) => {
        const from = parseCpArg(src);
        const to = parseCpArg(dst);
        if ('box' in from === 'box' in to) throw new ConfigError('cp: exactly one of SRC and DST must be BOX:PATH');
        const runtime = runtimeFrom(cmd);
        const name = 'box' in from ? from.box : (to as { box: string }).box;
        const box = await runtime.get(name);
        if (!box) throw new NotFoundError('box', name);
        const options = { followSymlinks: Boolean(o.followLink), overwrite: o.overwrite !== false };
        const guest = (p: string) => (p.startsWith('/') ? p : `/${p}`);
        if ('box' in from) await box.copyOut(guest(from.path), (to as { host: string }).host, options);
        else await box.copyIn(from.host, guest((to as { path: string }).path), options);
        return 0;
      }),
    );
}
