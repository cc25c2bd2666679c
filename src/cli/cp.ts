import fs from 'node:fs';
import path from 'node:path';
import { Command } from 'commander';
import { ConfigError, NotFoundError, UnsupportedError, type JsBoxlite } from '../index.js';
import { RestRuntime } from '../rest/client/runtime.js';

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
        const remote = (runtime as unknown) instanceof RestRuntime;
        if ('box' in from) {
          // The REST client downloads with neither option: refuse rather than ignore them.
          if (remote && (options.followSymlinks || !options.overwrite)) {
            throw new UnsupportedError('cp: -L and --no-overwrite from a box are not available against a remote server (--url)');
          }
          await box.copyOut(guest(from.path), (to as { host: string }).host, options);
        } else {
          let dest = guest((to as { path: string }).path);
          // A directory lands as DEST/<its name> locally; the REST upload puts its contents into
          // the path it names, so name the directory's own place to get the same result.
          if (remote && fs.statSync(from.host, { throwIfNoEntry: false })?.isDirectory()) {
            dest = path.posix.join(dest, path.basename(path.resolve(from.host)));
          }
          await box.copyIn(from.host, dest, options);
        }
        return 0;
      }),
    );
}
