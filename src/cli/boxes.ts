import { Command, Option } from 'commander';
import { NotFoundError, type Box, type BoxInfo, type JsBoxlite } from '../index.js';
import { FORMAT_HELP, render, table } from './format.js';

type Act = (fn: (...args: any[]) => Promise<number>) => (...args: unknown[]) => Promise<void>;

async function findBox(runtime: JsBoxlite, idOrName: string): Promise<Box> {
  const box = await runtime.get(idOrName);
  if (!box) throw new NotFoundError('box', idOrName);
  return box;
}

function ago(iso: string): string {
  const s = Math.max(0, Math.round((Date.now() - Date.parse(iso)) / 1000));
  if (s < 60) return `${s} seconds ago`;
  if (s < 3600) return `${Math.round(s / 60)} minutes ago`;
  if (s < 86400) return `${Math.round(s / 3600)} hours ago`;
  return `${Math.round(s / 86400)} days ago`;
}

const mib = (bytes?: number) => (bytes === undefined ? '-' : `${(bytes / 1024 / 1024).toFixed(1)}MiB`);

/** Box listing, inspection, logs, stats, host info and shell completion. */
export function registerBoxCommands(program: Command, act: Act, runtimeFrom: (cmd: Command) => JsBoxlite): void {
  program
    .command('ls')
    .alias('ps')
    .description('List boxes (running ones unless -a)')
    .option('-a, --all', 'show all boxes')
    .option('-q, --quiet', 'only print ids')
    .addOption(new Option('--format <format>', FORMAT_HELP).default('table'))
    .action(
      act(async (o, cmd: Command) => {
        const runtime = runtimeFrom(cmd);
        const boxes = (await runtime.listInfo()).filter((b: BoxInfo) => o.all || b.state.running);
        if (o.quiet) {
          for (const b of boxes) process.stdout.write(`${b.id}\n`);
          return 0;
        }
        process.stdout.write(
          render(boxes, o.format, (list) => {
            const rows = [['ID', 'NAME', 'IMAGE', 'STATUS', 'CREATED']];
            for (const b of list) rows.push([b.id, b.name ?? '', b.image, b.state.status, ago(b.createdAt)]);
            return table(rows);
          }),
        );
        return 0;
      }),
    );

  program
    .command('restart')
    .description('Stop and start boxes (in the background)')
    .argument('<boxes...>')
    .action(
      act(async (ids: string[], _o, cmd: Command) => {
        const runtime = runtimeFrom(cmd);
        for (const id of ids) {
          await (await findBox(runtime, id)).stop();
          // stop() spends a handle (the reference's rule): start through a new one.
          await (await findBox(runtime, id)).start({ detach: true });
          process.stdout.write(`${id}\n`);
        }
        return 0;
      }),
    );

  program
    .command('inspect')
    .description('Show everything known about boxes')
    .addOption(new Option('--format <format>', FORMAT_HELP).default('json'))
    .argument('<boxes...>')
    .action(
      act(async (ids: string[], o, cmd: Command) => {
        const runtime = runtimeFrom(cmd);
        const out = [];
        for (const id of ids) {
          const box = await findBox(runtime, id);
          // A remote box has no inspect(): the server's Box is all there is to show.
          out.push(typeof (box as Partial<Box>).inspect === 'function' ? await box.inspect() : await box.info());
        }
        process.stdout.write(render(out, o.format, (list) => JSON.stringify(list, null, 2)));
        return 0;
      }),
    );

  program
    .command('logs')
    .description("Show a box's log: its main process's output (the guest console for a box without one, or with --console)")
    .option('-f, --follow', 'keep printing new lines until the box stops')
    .option('--console', 'the guest console (kernel and agent) instead')
    .option('-n, --tail <lines>', 'only the last N lines')
    .argument('<box>')
    .action(
      act(async (id: string, o, cmd: Command) => {
        const box = await findBox(runtimeFrom(cmd), id);
        const tail = o.tail === undefined ? undefined : Number(o.tail); // the SDK rejects a bad count
        for await (const chunk of box.logs({ tail, follow: Boolean(o.follow), console: Boolean(o.console) })) {
          if (!process.stdout.write(chunk)) await new Promise((r) => process.stdout.once('drain', r));
        }
        return 0;
      }),
    );

  program
    .command('stats')
    .description('CPU, memory and command counts of running boxes')
    .addOption(new Option('--format <format>', FORMAT_HELP).default('table'))
    .argument('[boxes...]')
    .action(
      act(async (ids: string[], o, cmd: Command) => {
        const runtime = runtimeFrom(cmd);
        const infos = ids.length ? await Promise.all(ids.map(async (id) => (await findBox(runtime, id)).info())) : await runtime.listInfo();
        const rows = [];
        for (const info of infos.filter((i) => i.state.running)) {
          const m = await (await findBox(runtime, info.id)).metrics();
          rows.push({
            id: info.id,
            name: info.name ?? '',
            cpuPercent: m.cpuPercent,
            memoryBytes: m.memoryBytes,
            memoryMib: info.memoryMib,
            networkBytesSent: m.networkBytesSent,
            networkBytesReceived: m.networkBytesReceived,
          });
        }
        process.stdout.write(
          render(rows, o.format, (list) => {
            // NET I/O as docker stats has it: what the box received / what it sent.
            const t = [['ID', 'NAME', 'CPU %', 'MEM USAGE / LIMIT', 'NET I/O']];
            for (const r of list) {
              const io = r.networkBytesSent === undefined ? '-' : `${mib(r.networkBytesReceived)} / ${mib(r.networkBytesSent)}`;
              t.push([r.id, r.name, r.cpuPercent === undefined ? '-' : `${r.cpuPercent}%`, `${mib(r.memoryBytes)} / ${r.memoryMib}MiB`, io]);
            }
            return table(t);
          }),
        );
        return 0;
      }),
    );

  program
    .command('info')
    .description('Version, home, accelerator (and why), guest kernel, counts')
    .addOption(new Option('--format <format>', FORMAT_HELP).default('table'))
    .action(
      act(async (o, cmd: Command) => {
        const info = await runtimeFrom(cmd).systemInfo();
        process.stdout.write(
          render([info], o.format, ([i]) =>
            [
              `Version:       ${i!.version}`,
              `Home:          ${i!.home}`,
              `Accelerator:   ${i!.accelerator} (${i!.acceleratorReason})`,
              `Guest kernel:  ${i!.guestKernel}`,
              `Boxes:         ${i!.boxes} (${i!.runningBoxes} running)`,
              `Images:        ${i!.images}`,
            ].join('\n'),
          ),
        );
        return 0;
      }),
    );

  program
    .command('completion')
    .description('Print a shell completion script (bash, zsh or fish)')
    .addArgument(new Command().createArgument('<shell>', 'bash, zsh or fish').choices(['bash', 'zsh', 'fish']))
    .action(
      act(async (shell: string) => {
        const commands = program.commands.map((c) => c.name()).join(' ');
        if (shell === 'bash') {
          process.stdout.write(
            `# boxlite bash completion: source <(boxlite completion bash)\n` +
              `_boxlite() {\n  local cur=\${COMP_WORDS[COMP_CWORD]}\n  if [ "$COMP_CWORD" -eq 1 ]; then\n` +
              `    COMPREPLY=( $(compgen -W "${commands}" -- "$cur") )\n  else\n` +
              `    COMPREPLY=( $(compgen -W "$(boxlite ls -a -q 2>/dev/null)" -- "$cur") )\n  fi\n}\ncomplete -F _boxlite boxlite\n`,
          );
        } else if (shell === 'zsh') {
          process.stdout.write(
            `#compdef boxlite\n# boxlite zsh completion: source <(boxlite completion zsh)\n` +
              `_boxlite() {\n  if (( CURRENT == 2 )); then\n    compadd ${commands}\n  else\n` +
              `    compadd $(boxlite ls -a -q 2>/dev/null)\n  fi\n}\ncompdef _boxlite boxlite\n`,
          );
        } else {
          process.stdout.write(
            `# boxlite fish completion: boxlite completion fish | source\n` +
              `complete -c boxlite -f -n '__fish_use_subcommand' -a '${commands}'\n` +
              `complete -c boxlite -f -n 'not __fish_use_subcommand' -a '(boxlite ls -a -q 2>/dev/null)'\n`,
          );
        }
        return 0;
      }),
    );
}
