// `boxlite volume create|ls|inspect|rm` (runtime.volumes) and `boxlite pause|resume BOX...`
// (box.pause()/resume()). Public SDK calls only, like the rest of the CLI.
import { Command } from 'commander';
import { NotFoundError, UnsupportedError, type Box, type JsBoxlite } from '../index.js';
import { FORMAT_HELP, render, table } from './format.js';

type Act = (fn: (...args: any[]) => Promise<number>) => (...args: unknown[]) => Promise<void>;

/** `-v` values: `NAME:GUEST[:ro]` is a managed volume when NAME has no '/' (a host path always does here: absolute or ./relative). */
export function isManagedVolumeSource(source: string): boolean {
  return !source.includes('/') && source !== '.' && source !== '..' && source !== '~';
}

function humanBytes(n: number | undefined): string {
  if (n === undefined) return '-';
  const units = ['B', 'KiB', 'MiB', 'GiB', 'TiB'];
  let v = n;
  let i = 0;
  while (v >= 1024 && i < units.length - 1) {
    v /= 1024;
    i++;
  }
  return i === 0 ? `${v} B` : `${v.toFixed(1)} ${units[i]}`;
}

export function registerVolumeCommands(program: Command, act: Act, runtimeFrom: (cmd: Command) => JsBoxlite): void {
  const volume = program.command('volume').description('Manage volumes that boxes mount by name (-v NAME:/path)');

  volume
    .command('create')
    .description('Create a managed volume; prints its id (named after the id without NAME)')
    .argument('[name]')
    .action(act(async (name: string | undefined, _o, cmd: Command) => {
      const info = await runtimeFrom(cmd).volumes.create(name);
      process.stdout.write(`${info.id}\n`);
      return 0;
    }));

  volume
    .command('ls')
    .description('List managed volumes')
    .option('-q, --quiet', 'only ids')
    .option('--format <format>', FORMAT_HELP, 'table')
    .action(act(async (o, cmd: Command) => {
      const list = await runtimeFrom(cmd).volumes.list();
      if (o.quiet) {
        process.stdout.write(list.map((v) => `${v.id}\n`).join(''));
        return 0;
      }
      process.stdout.write(
        render(list, o.format, (items) =>
          table([['ID', 'NAME', 'SIZE', 'CREATED'], ...items.map((v) => [v.id, v.name, humanBytes(v.sizeBytes), v.createdAt])]),
        ),
      );
      return 0;
    }));

  volume
    .command('inspect')
    .description('Show volumes as JSON (id, name, createdAt, sizeBytes)')
    .argument('<volumes...>')
    .action(act(async (ids: string[], _o, cmd: Command) => {
      const runtime = runtimeFrom(cmd);
      const out = [];
      for (const id of ids) out.push(await runtime.volumes.get(id));
      process.stdout.write(JSON.stringify(out, null, 2) + '\n');
      return 0;
    }));

  volume
    .command('rm')
    .description('Remove volumes and their data (one a box still mounts needs -f; never under a running box)')
    .option('-f, --force', 'remove even when stopped boxes mount it; a missing volume is not an error')
    .argument('<volumes...>')
    .action(act(async (ids: string[], o, cmd: Command) => {
      const runtime = runtimeFrom(cmd);
      for (const id of ids) {
        await runtime.volumes.remove(id, Boolean(o.force));
        process.stdout.write(`${id}\n`);
      }
      return 0;
    }));

  for (const [name, description] of [
    ['pause', 'Freeze running boxes (their VM stops; memory and processes are kept)'],
    ['resume', 'Thaw paused boxes'],
  ] as const) {
    program
      .command(name)
      .description(description)
      .argument('<boxes...>')
      .action(act(async (ids: string[], _o, cmd: Command) => {
        const runtime = runtimeFrom(cmd);
        for (const id of ids) {
          const box = (await runtime.get(id)) as (Box & Partial<Pick<Box, 'pause' | 'resume'>>) | null;
          if (!box) throw new NotFoundError('box', id);
          const fn = box[name];
          if (typeof fn !== 'function') throw new UnsupportedError(`${name} is not available for this box (a remote server's boxes cannot be paused)`);
          await fn.call(box);
          process.stdout.write(`${id}\n`);
        }
        return 0;
      }));
  }
}
