// `boxlite snapshot create|ls|rm|restore`, `clone`, `fork`, `export`, `import`: one SDK call each
// (box.snapshot.*, box.cloneBox, box.fork, box.export, runtime.importBox). Restore needs a stopped box; the rest also take a running one.
import { Command, Option } from 'commander';
import { NotFoundError, UnsupportedError, type Box, type JsBoxlite, type SnapshotInfo } from '../index.js';
import { FORMAT_HELP, render, table } from './format.js';

type Act = (fn: (...args: any[]) => Promise<number>) => (...args: unknown[]) => Promise<void>;

async function boxOf(runtime: JsBoxlite, idOrName: string): Promise<Box> {
  const box = await runtime.get(idOrName);
  if (!box) throw new NotFoundError('box', idOrName);
  return box;
}

function size(n: number): string {
  return n >= 1024 ** 3 ? `${(n / 1024 ** 3).toFixed(1)} GiB` : `${(n / 1024 ** 2).toFixed(1)} MiB`;
}

function snapshotTable(items: SnapshotInfo[]): string {
  return table([
    ['NAME', 'ID', 'CREATED', 'SIZE', 'DISK'],
    ...items.map((s) => [s.name, s.id, new Date(s.createdAt * 1000).toISOString(), size(s.sizeBytes), size(s.containerDiskBytes)]),
  ]);
}

export function registerSnapshotCommands(program: Command, act: Act, runtimeFrom: (cmd: Command) => JsBoxlite): void {
  const snapshot = program.command('snapshot').description("Snapshots of a box's disk");
  snapshot
    .command('create')
    .description('Snapshot the disk of a box (stopped, or running: it keeps running) under NAME; prints the snapshot id')
    .argument('<box>', 'box id or name')
    .argument('<name>', 'snapshot name (1-128 characters, no "/" or leading ".")')
    .action(
      act(async (idOrName: string, name: string, _o, cmd: Command) => {
        const info = await (await boxOf(runtimeFrom(cmd), idOrName)).snapshot.create(name);
        process.stdout.write(`${info.id}\n`);
        return 0;
      }),
    );
  snapshot
    .command('ls')
    .alias('list')
    .description("List a box's snapshots, newest first")
    .argument('<box>', 'box id or name')
    .addOption(new Option('--format <format>', FORMAT_HELP).default('table'))
    .action(
      act(async (idOrName: string, o: { format: string }, cmd: Command) => {
        const items = await (await boxOf(runtimeFrom(cmd), idOrName)).snapshot.list();
        process.stdout.write(render(items, o.format, snapshotTable));
        return 0;
      }),
    );
  snapshot
    .command('rm')
    .alias('remove')
    .description("Remove snapshots (a disk base a box or clone still uses stays until it does not)")
    .argument('<box>', 'box id or name')
    .argument('<names...>')
    .action(
      act(async (idOrName: string, names: string[], _o, cmd: Command) => {
        const box = await boxOf(runtimeFrom(cmd), idOrName);
        for (const name of names) {
          await box.snapshot.remove(name);
          process.stdout.write(`${name}\n`);
        }
        return 0;
      }),
    );
  snapshot
    .command('restore')
    .description('Put a stopped box back on a snapshot (what it wrote since is discarded)')
    .argument('<box>', 'box id or name')
    .argument('<name>')
    .action(
      act(async (idOrName: string, name: string, _o, cmd: Command) => {
        await (await boxOf(runtimeFrom(cmd), idOrName)).snapshot.restore(name);
        return 0;
      }),
    );

  program
    .command('clone')
    .description('Create a new box from another, stopped or running (its config; its disk shared copy-on-write); prints the new id')
    .argument('<box>', 'box id or name')
    .option('--name <name>', 'name of the new box')
    .action(
      act(async (idOrName: string, o: { name?: string }, cmd: Command) => {
        const clone = await (await boxOf(runtimeFrom(cmd), idOrName)).cloneBox(null, o.name ?? null);
        process.stdout.write(`${clone.id}\n`);
        return 0;
      }),
    );

  program
    .command('fork')
    .description("Create a new running box from a running one with its memory (processes, main process, tmpfs; disk shared copy-on-write); prints the new id")
    .argument('<box>', 'box id or name')
    .option('--name <name>', 'name of the new box')
    .action(
      act(async (idOrName: string, o: { name?: string }, cmd: Command) => {
        const box = await boxOf(runtimeFrom(cmd), idOrName);
        // A box of a remote server (--url): the REST API has no fork.
        if (typeof (box as Partial<Box>).fork !== 'function') throw new UnsupportedError('fork of a box on a remote server (--url) is not supported; run it on that host');
        const fork = await box.fork(o.name ?? null, { detach: true });
        process.stdout.write(`${fork.id}\n`);
        return 0;
      }),
    );

  program
    .command('export')
    .description('Write a box (stopped, or running: paused a moment) to one .boxlite archive (flattened disk + config); prints its path')
    .argument('<box>', 'box id or name')
    .argument('[dest]', 'archive file, or a directory for <name or "box">.boxlite', '.')
    .action(
      act(async (idOrName: string, dest: string, _o, cmd: Command) => {
        process.stdout.write(`${await (await boxOf(runtimeFrom(cmd), idOrName)).export(dest)}\n`);
        return 0;
      }),
    );

  program
    .command('import')
    .description('Create a box from a .boxlite archive (checked as untrusted); prints the new id')
    .argument('<archive>')
    .option('--name <name>', 'name of the new box')
    .action(
      act(async (archive: string, o: { name?: string }, cmd: Command) => {
        const box = await runtimeFrom(cmd).importBox(archive, o.name ?? null);
        process.stdout.write(`${box.id}\n`);
        return 0;
      }),
    );
}
