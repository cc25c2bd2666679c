// `boxlite warm IMAGE`: makes the fast-start template of a box shape ahead of time
// (docs/fast-start.md), by starting one box of that shape from it and removing it again, so
// the first real box of the shape restores instead of building.
import { Command, Option } from 'commander';
import { ConfigError, type JsBoxlite } from '../index.js';
import { warmTemplate } from '../runtime/faststart.js';

type Act = (fn: (...args: any[]) => Promise<number>) => (...args: unknown[]) => Promise<void>;

function intFlag(name: string) {
  return (value: string) => {
    const n = Number(value);
    if (!Number.isInteger(n) || n < 1) throw new ConfigError(`${name} must be a positive integer, got ${JSON.stringify(value)}`);
    return n;
  };
}

export function registerWarmCommand(program: Command, act: Act, runtimeFrom: (cmd: Command) => JsBoxlite): void {
  program
    .command('warm')
    .description('Make the fast-start template of a box shape ahead of time (otherwise made behind the first box of its shape)')
    .argument('[image]', 'image reference')
    .option('--rootfs <path>', 'local OCI image layout directory')
    .option('--cpus <n>', 'number of vCPUs', intFlag('cpus'))
    .option('--memory <mib>', 'memory in MiB', intFlag('memory'))
    .option('--disk-size <gb>', 'root disk size in GB', intFlag('disk-size'))
    .addOption(new Option('--network <mode>', 'network mode').choices(['enabled', 'none']).default('enabled'))
    .action(
      act(async (image: string | undefined, o, cmd: Command) => {
        if (!image && !o.rootfs) throw new ConfigError('warm needs an IMAGE or --rootfs PATH');
        const runtime = runtimeFrom(cmd);
        const r = await warmTemplate(runtime, {
          image,
          rootfsPath: o.rootfs,
          cpus: o.cpus,
          memoryMib: o.memory,
          diskSizeGb: o.diskSize,
          network: { outbound: { mode: o.network === 'none' ? 'disabled' : 'enabled' } },
        });
        process.stdout.write(`template ${r.key} ready in ${r.totalMs} ms (a restore takes ${r.restoreMs} ms to the agent's HELLO)\n`);
        return 0;
      }),
    );
}
