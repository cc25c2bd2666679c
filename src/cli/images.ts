import { Command, Option } from 'commander';
import cliProgress from 'cli-progress';
import type { JsBoxlite } from '../index.js';
import { FORMAT_HELP, render, table } from './format.js';

type Act = (fn: (...args: any[]) => Promise<number>) => (...args: unknown[]) => Promise<void>;

interface Progress {
  layer: string;
  total?: number;
  done?: number;
  status: string;
}

const short = (digest: string) => digest.replace(/^sha256:/, '').slice(0, 12);

function mb(n: number | undefined): string {
  return n === undefined ? '?' : `${(n / 1e6).toFixed(1)} MB`;
}

/**
 * Progress for `pull`: one bar per layer on a terminal, one line per finished layer
 * otherwise (logs and CI stay readable).
 */
function progressReporter(quiet: boolean): { onProgress(p: Progress): void; stop(): void } {
  if (quiet) return { onProgress() {}, stop() {} };
  if (!process.stderr.isTTY) {
    const reported = new Set<string>();
    return {
      onProgress(p) {
        if ((p.status === 'done' || p.status === 'cached') && !reported.has(p.layer)) {
          reported.add(p.layer);
          process.stderr.write(`${short(p.layer)}: ${p.status === 'cached' ? 'already present' : `pulled ${mb(p.total)}`}\n`);
        }
      },
      stop() {},
    };
  }
  const multi = new cliProgress.MultiBar(
    {
      stream: process.stderr,
      format: '{layer} [{bar}] {percentage}% | {value}/{total} bytes | {speed} | {status}',
      hideCursor: true,
      clearOnComplete: false,
    },
    cliProgress.Presets.shades_classic,
  );
  const bars = new Map<string, { bar: cliProgress.SingleBar; start: number }>();
  return {
    onProgress(p) {
      let entry = bars.get(p.layer);
      if (!entry) {
        entry = { bar: multi.create(p.total ?? 0, 0, { layer: short(p.layer), status: p.status, speed: '' }), start: Date.now() };
        bars.set(p.layer, entry);
      }
      const secs = Math.max(0.001, (Date.now() - entry.start) / 1000);
      if (p.total !== undefined) entry.bar.setTotal(p.total);
      entry.bar.update(p.done ?? 0, { status: p.status, speed: `${((p.done ?? 0) / 1e6 / secs).toFixed(1)} MB/s` });
    },
    stop: () => multi.stop(),
  };
}

export function registerImageCommands(program: Command, act: Act, runtimeFrom: (cmd: Command) => JsBoxlite): void {
  program
    .command('pull')
    .description('Pull an image from a registry')
    .option('-q, --quiet', 'print only the image reference')
    .argument('<image>', 'image reference, e.g. alpine:latest or host:5000/app@sha256:…')
    .action(
      act(async (ref: string, o, cmd: Command) => {
        const runtime = runtimeFrom(cmd);
        const progress = progressReporter(Boolean(o.quiet));
        try {
          const r = await runtime.images.pull(ref, { onProgress: progress.onProgress });
          progress.stop();
          const name = r.resolvedReference;
          process.stdout.write(o.quiet ? `${name}\n` : `Pulled ${name} (config ${r.configDigest}, ${r.layerCount} layers)\n`);
        } finally {
          progress.stop();
        }
        return 0;
      }),
    );

  const listImages = act(async (o, cmd: Command) => {
    const runtime = runtimeFrom(cmd);
    const images = await runtime.images.list();
    if (o.quiet) {
      for (const i of images) process.stdout.write(`${i.id}\n`);
      return 0;
    }
    process.stdout.write(
      render(images, o.format, (list) => {
        const rows = [['REPOSITORY', 'TAG', 'IMAGE ID', 'CACHED', 'SIZE']];
        for (const i of list) rows.push([i.repository, i.tag, short(i.id), i.cachedAt, mb(i.sizeBytes)]);
        return table(rows);
      }),
    );
    return 0;
  });
  const formatOption = () => new Option('--format <format>', FORMAT_HELP).default('table');

  program
    .command('images')
    .description('List stored images')
    .option('-q, --quiet', 'only print image ids')
    .addOption(formatOption())
    .action(listImages);

  program
    .command('rmi')
    .description('Remove stored images (their blobs go with `boxlite image prune`)')
    .option('-f, --force', 'remove even when a box uses the image')
    .argument('<images...>')
    .action(
      act(async (refs: string[], o, cmd: Command) => {
        const runtime = runtimeFrom(cmd);
        for (const ref of refs) {
          await runtime.images.remove(ref, Boolean(o.force));
          process.stdout.write(`Untagged: ${ref}\n`);
        }
        return 0;
      }),
    );

  const image = program.command('image').description('Manage images');
  image
    .command('ls')
    .description('List stored images')
    .option('-q, --quiet', 'only print image ids')
    .addOption(formatOption())
    .action(listImages);
  image
    .command('prune')
    .description('Delete blobs and root filesystems no image or box needs')
    .action(
      act(async (_o, cmd: Command) => {
        const r = await runtimeFrom(cmd).images.prune();
        process.stdout.write(`Deleted ${r.blobs} blobs and ${r.bases} root filesystems, reclaimed ${mb(r.bytes)}\n`);
        return 0;
      }),
    );
  image
    .command('load')
    .description('Load images from a `docker save` or OCI archive')
    .requiredOption('-i, --input <archive>', 'archive to read')
    .action(
      act(async (o, cmd: Command) => {
        for (const ref of await runtimeFrom(cmd).images.load(o.input)) process.stdout.write(`Loaded image: ${ref}\n`);
        return 0;
      }),
    );
}
