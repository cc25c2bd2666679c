#!/usr/bin/env node
// The boxlite CLI: a thin parser over the public SDK (plus the REST client's runtime and
// execution classes for --url: src/cli/remote.ts, src/cli/auth.ts).
import { Command, CommanderError, Option } from 'commander';
import {
  BoxliteError,
  ConfigError,
  ERROR_TABLE,
  ExecutionError,
  InvalidStateError,
  JsBoxlite,
  NotFoundError,
  VERSION,
  type Box,
  type BoxOptions,
  type RegistrySettings,
} from '../index.js';
import { attach } from './attach.js';
import { parsePublishFlag } from './ports.js';
import { secretsFromFlags } from './secrets.js';
import { registerBoxCommands } from './boxes.js';
import { registerCpCommand } from './cp.js';
import { registerImageCommands } from './images.js';
import { registerNetworkCommands } from './network.js';
import { registerSnapshotCommands } from './snapshots.js';
import { registerServeCommand } from './serve.js';
import { registerWarmCommand } from './warm.js';
import { isManagedVolumeSource, registerVolumeCommands } from './volumes.js';
import { readCredentials, registerAuthCommands, resolveRemote, restRuntimeFor, type RemoteFlags } from './auth.js';
import { addRemoteOptions, attachMainRemote, checkRemoteCommand, remoteWhere } from './remote.js';
import { RestRuntime } from '../rest/client/runtime.js';


interface GlobalOpts {
  home?: string;
  debug?: boolean;
  registry?: string[];
}

/**
 * `--registry` values: `host[:port]` (https), `http://host[:port]`, or
 * `https+insecure://host[:port]` (https without certificate verification).
 */
export function parseRegistryFlag(spec: string): RegistrySettings {
  const m = /^(?:(http|https|https\+insecure):\/\/)?([^/\s]+)\/?$/.exec(spec);
  if (!m) throw new ConfigError(`--registry ${JSON.stringify(spec)} is not host[:port] or http://host[:port]`);
  const scheme = m[1] ?? 'https';
  // As in the reference CLI, a --registry is searched for unqualified names (before any others).
  return { host: m[2]!, transport: scheme === 'http' ? 'http' : 'https', skipVerify: scheme === 'https+insecure', search: true };
}

function localRuntime(g: GlobalOpts): JsBoxlite {
  return new JsBoxlite({ homeDir: g.home, imageRegistries: (g.registry ?? []).map(parseRegistryFlag) });
}

/**
 * This machine's runtime, or the remote server's (--url, BOXLITE_REST_URL, or what `auth login`
 * stored; flags > environment > file). Local-only commands and flags are refused with a remote one.
 */
function runtimeFrom(cmd: Command): JsBoxlite {
  const g = cmd.optsWithGlobals<GlobalOpts & RemoteFlags>();
  const remote = resolveRemote(g, process.env, () => readCredentials());
  if (!remote) {
    if (!g.local && (g.apiKey || g.pathPrefix)) throw new ConfigError('--api-key and --path-prefix need a server: --url URL (or BOXLITE_REST_URL)');
    return localRuntime(g);
  }
  checkRemoteCommand(cmd, remote);
  for (const [flag, set] of [['--home', g.home !== undefined], ['--registry', Boolean(g.registry?.length)]] as const) {
    if (set) throw new ConfigError(`${flag} is local-only and a remote server is in use (${remoteWhere(remote)}); drop ${flag}, or pass --local`);
  }
  return restRuntimeFor(remote) as unknown as JsBoxlite;
}

/** `serve` always serves this machine's runtime; a --url before it is a mistake worth saying. */
function serveRuntimeFrom(cmd: Command): JsBoxlite {
  const g = cmd.optsWithGlobals<GlobalOpts>();
  const root = (cmd.parent?.opts() ?? {}) as RemoteFlags;
  if (root.url) throw new ConfigError("serve runs this machine's runtime; --url names a remote server and cannot be combined with it");
  // Before `serve` these are the remote client's options; serve's own key and prefix follow its name.
  if (root.apiKey || root.pathPrefix) throw new ConfigError('--api-key/--path-prefix before `serve` are client options; put them after it: boxlite serve --path-prefix P');
  return localRuntime(g);
}

const isRemote = (runtime: JsBoxlite): runtime is JsBoxlite & RestRuntime => (runtime as unknown) instanceof RestRuntime;

/**
 * A missing command comes back from the server as an execution_failed envelope, without the
 * local SDK's exit code: restore docker's 127 for "not found", so scripts see the same code.
 */
function withExitCode(err: unknown): unknown {
  if (err instanceof ExecutionError && err.exitCode === undefined && /command not found/.test(err.message)) {
    return new ExecutionError(err.message, { exitCode: 127, prefixed: true });
  }
  return err;
}

const collect = (value: string, previous: string[] = []) => [...previous, value];

/**
 * `-v HOST:GUEST[:ro|rw]` (docker's bind-mount form), or `-v NAME:GUEST[:ro]` for a managed volume
 * (NAME without '/': docker's named volumes); the SDK validates the paths and resolves NAME.
 */
export function parseVolumeFlag(
  spec: string,
): { hostPath: string; guestPath: string; readOnly: boolean } | { managedVolume: string; guestPath: string; readOnly: boolean } {
  let rest = spec;
  let readOnly = false;
  const mode = /:(ro|rw)$/.exec(rest);
  if (mode) {
    readOnly = mode[1] === 'ro';
    rest = rest.slice(0, -3);
  }
  const colon = rest.lastIndexOf(':');
  if (colon <= 0 || colon === rest.length - 1) {
    throw new ConfigError(`volume ${JSON.stringify(spec)} is malformed: expected HOST:GUEST[:ro] or NAME:GUEST[:ro]`);
  }
  const source = rest.slice(0, colon);
  if (isManagedVolumeSource(source)) return { managedVolume: source, guestPath: rest.slice(colon + 1), readOnly };
  return { hostPath: source, guestPath: rest.slice(colon + 1), readOnly };
}

/** `-e KEY=VALUE`, or `-e KEY` to pass the host's value through (docker semantics). */
function parseEnv(specs: string[] = []): Array<{ key: string; value: string }> {
  const env: Array<{ key: string; value: string }> = [];
  for (const spec of specs) {
    const eq = spec.indexOf('=');
    if (eq === 0) throw new ConfigError(`env ${JSON.stringify(spec)} is malformed: expected KEY=VALUE`);
    if (eq < 0) {
      const value = process.env[spec];
      if (value !== undefined) env.push({ key: spec, value });
      continue;
    }
    env.push({ key: spec.slice(0, eq), value: spec.slice(eq + 1) });
  }
  return env;
}

function intOption(name: string) {
  return (value: string) => {
    const n = Number(value);
    if (!Number.isInteger(n)) throw new ConfigError(`${name} must be an integer, got ${JSON.stringify(value)}`);
    return n;
  };
}

async function findBox(runtime: JsBoxlite, idOrName: string): Promise<Box> {
  const box = await runtime.get(idOrName);
  if (!box) throw new NotFoundError('box', idOrName);
  return box;
}



/** Wraps an action so its returned exit code reaches main(). */
type Action = (...args: any[]) => Promise<number>;

export function buildProgram(result: { exitCode: number; command?: string }): Command {
  const act =
    (fn: Action) =>
    async (...args: unknown[]) => {
      result.command = (args[args.length - 1] as Command).name();
      result.exitCode = await fn(...args);
    };
  const program = new Command('boxlite')
    .description('Run commands in hardware-isolated micro-VM sandboxes')
    .version(VERSION)
    .option('--home <dir>', 'BoxLite home directory (default: $BOXLITE_HOME or ~/.boxlite)')
    .option('--debug', 'print stack traces on errors')
    .option('--registry <registry>', 'registry to search for unqualified image names (repeatable; http://host for plain http)', collect)
    .enablePositionalOptions()
    .showHelpAfterError()
    .exitOverride();

  program
    .command('run')
    .description("Create a box and run its main process (COMMAND, else the image's Entrypoint + Cmd); without -d, attach to it and stop the box when it ends")
    .usage('[options] (--rootfs PATH | IMAGE) [--] [COMMAND...]')
    .option('--rm', 'remove the box when the command exits')
    .option('-d, --detach', 'start the box in the background and print its id')
    .option('-i, --interactive', 'keep stdin open')
    .option('-t, --tty', 'allocate a pseudo-TTY');
  addBoxOptionFlags(program.commands.at(-1)!)
    .argument('[args...]', 'IMAGE (unless --rootfs) followed by the command')
    .passThroughOptions()
    .action(act(async (args: string[], o, cmd: Command) => {
      const runtime = runtimeFrom(cmd);
      // The server has no auto-remove: a detached box cannot be removed when its command ends.
      if (isRemote(runtime) && o.rm && o.detach) throw new ConfigError('--rm with -d is not available against a remote server (--url): remove the box with `boxlite rm -f`');
      const rest = [...args];
      const image = o.rootfs ? undefined : rest.shift();
      if (rest[0] === '--') rest.shift();
      // COMMAND replaces the image's Cmd (after its Entrypoint), as in docker: it is the box's
      // main process, the container's init (docs/decisions/0003-main-process.md).
      const box = await runtime.create(
        { ...boxOptionsFrom(o, image), ...(rest.length ? { cmd: rest } : {}), autoRemove: Boolean(o.rm), detach: Boolean(o.detach) },
        o.name,
      );
      if (isRemote(runtime)) return runRemote(runtime, box as unknown as RemoteBox, o);
      if (o.detach) {
        await box.start();
        process.stdout.write(`${box.id}\n`);
        return 0;
      }
      try {
        if (box.defaultCommand().length === 0) throw new ConfigError('no command given and the image has no Entrypoint or Cmd');
        // Attached before it starts, so none of its output is missed; its end stops the box.
        const execution = await box.attach({ tty: Boolean(o.tty) });
        return await attach(execution, { interactive: Boolean(o.interactive), tty: Boolean(o.tty) });
      } finally {
        await box.stop();
      }
    }));

  program
    .command('create')
    .description('Create a box without starting it; print its id (`start` runs its main process)')
    .usage('[options] (--rootfs PATH | IMAGE) [--] [COMMAND...]');
  addBoxOptionFlags(program.commands.at(-1)!)
    .argument('[args...]', 'IMAGE (unless --rootfs) followed by the main command')
    .passThroughOptions()
    .action(act(async (args: string[], o, cmd: Command) => {
      const rest = [...args];
      const image = o.rootfs ? undefined : rest.shift();
      if (rest[0] === '--') rest.shift();
      const box = await runtimeFrom(cmd).create({ ...boxOptionsFrom(o, image), ...(rest.length ? { cmd: rest } : {}) }, o.name);
      process.stdout.write(`${box.id}\n`);
      return 0;
    }));

  program
    .command('exec')
    .description('Run a command in a running box')
    .usage('[options] BOX [--] COMMAND...')
    .option('-e, --env <KEY=VALUE>', 'set an environment variable (repeatable)', collect)
    .option('-w, --workdir <dir>', 'working directory inside the box')
    .option('-u, --user <user>', 'user[:group] to run as')
    .option('-i, --interactive', 'keep stdin open')
    .option('-t, --tty', 'allocate a pseudo-TTY')
    .argument('<box>', 'box id or name')
    .argument('<command...>', 'command and arguments')
    .passThroughOptions()
    .action(act(async (idOrName: string, command: string[], o, cmd: Command) => {
      // With passThroughOptions, a `--` after BOX reaches us as an argument.
      if (command[0] === '--') command = command.slice(1);
      if (command.length === 0) throw new ConfigError('exec needs a COMMAND');
      const runtime = runtimeFrom(cmd);
      const box = await findBox(runtime, idOrName);
      const info = await box.info();
      if (!info.state.running) {
        throw new InvalidStateError(`box ${box.id} is not running (status: ${info.state.status}); start it with \`boxlite start ${idOrName}\``);
      }
      const env = parseEnv(o.env).map((e) => [e.key, e.value] as [string, string]);
      const execution = await box.exec(command[0]!, command.slice(1), env, Boolean(o.tty), o.user, null, o.workdir).catch((err: unknown) => {
        throw isRemote(runtime) ? withExitCode(err) : err;
      });
      return attach(execution, { interactive: Boolean(o.interactive), tty: Boolean(o.tty), remote: isRemote(runtime) });
    }));

  program
    .command('attach')
    .description("Attach to a box's main process (its output, and stdin with -i); exits with its code")
    .option('-i, --interactive', 'forward stdin')
    .argument('<box>', 'box id or name')
    .action(act(async (idOrName: string, o, cmd: Command) => {
      const runtime = runtimeFrom(cmd);
      const box = await findBox(runtime, idOrName);
      const info = await box.info();
      if (!info.state.running) {
        throw new InvalidStateError(`box ${box.id} is not running (status: ${info.state.status}); start it with \`boxlite start ${idOrName}\``);
      }
      const execution = isRemote(runtime) ? await attachMainRemote(runtime, box.id, false) : await box.attach();
      // Without -i the main process keeps its stdin: detaching must not end its input.
      return attach(execution, { interactive: Boolean(o.interactive), tty: false, keepStdin: !o.interactive, remote: isRemote(runtime) });
    }));

  program
    .command('start')
    .description('Start one or more boxes in the background (a main process that ended runs again)')
    .argument('<boxes...>')
    .action(act(async (ids: string[], _o, cmd: Command) => {
      const runtime = runtimeFrom(cmd);
      for (const id of ids) {
        const box = await findBox(runtime, id);
        await box.start({ detach: true });
        process.stdout.write(`${id}\n`);
      }
      return 0;
    }));

  program
    .command('stop')
    .description('Stop one or more running boxes')
    .argument('<boxes...>')
    .action(act(async (ids: string[], _o, cmd: Command) => {
      const runtime = runtimeFrom(cmd);
      for (const id of ids) {
        await (await findBox(runtime, id)).stop();
        process.stdout.write(`${id}\n`);
      }
      return 0;
    }));

  program
    .command('rm')
    .description('Remove boxes')
    .option('-f, --force', 'kill running boxes first')
    .option('-a, --all', 'remove every box (running ones need -f)')
    .argument('[boxes...]')
    .action(act(async (ids: string[], o, cmd: Command) => {
      const runtime = runtimeFrom(cmd);
      if (o.all) ids = (await runtime.listInfo()).map((b) => b.id);
      else if (ids.length === 0) throw new ConfigError('rm needs BOX arguments or --all');
      for (const id of ids) {
        await runtime.remove(id, Boolean(o.force));
        process.stdout.write(`${id}\n`);
      }
      return 0;
    }));

  registerBoxCommands(program, act, runtimeFrom);
  registerCpCommand(program, act, runtimeFrom);
  registerImageCommands(program, act, runtimeFrom);
  registerNetworkCommands(program, act, runtimeFrom);
  registerSnapshotCommands(program, act, runtimeFrom);
  registerServeCommand(program, act, serveRuntimeFrom);
  registerWarmCommand(program, act, runtimeFrom);
  registerVolumeCommands(program, act, runtimeFrom);
  registerAuthCommands(program, act);
  addRemoteOptions(program);
  return program;
}

type RemoteBox = { id: string; start(): Promise<void>; stop(): Promise<void> };

/**
 * `run` against a server: create → attach to the main process → start (docker's order, the one
 * the server's main-process session expects), stream it, exit with its code. Without -d the box is
 * stopped when the command ends, as locally; --rm removes it then (the server has no auto-remove).
 */
async function runRemote(runtime: JsBoxlite & RestRuntime, box: RemoteBox, o: Record<string, any>): Promise<number> {
  if (o.detach) {
    await box.start();
    process.stdout.write(`${box.id}\n`);
    return 0;
  }
  try {
    const execution = await attachMainRemote(runtime, box.id, Boolean(o.tty)).catch((err: unknown) => {
      throw withExitCode(err);
    });
    await box.start();
    return await attach(execution, { interactive: Boolean(o.interactive), tty: Boolean(o.tty), remote: true });
  } finally {
    // A failed clean-up must not hide the command's own exit code (nor the error that ended it).
    const cleanup = o.rm ? runtime.remove(box.id, true) : box.stop();
    await cleanup.catch((err: Error) => process.stderr.write(`boxlite: could not ${o.rm ? 'remove' : 'stop'} box ${box.id}: ${err.message}\n`));
  }
}

/** The options `run` and `create` share (docker's names). */
function addBoxOptionFlags(cmd: Command): Command {
  return cmd
    .option('--rootfs <path>', 'local OCI image layout directory to boot')
    .option('--name <name>', 'name of the box')
    .option('-e, --env <KEY=VALUE>', 'set an environment variable (repeatable)', collect)
    .option('-w, --workdir <dir>', 'working directory inside the box')
    .option('-u, --user <user>', 'user[:group] to run as')
    .option('--cpus <n>', 'number of vCPUs', intOption('cpus'))
    .option('--memory <mib>', 'memory in MiB', intOption('memory'))
    .option('--disk-size <gb>', 'root disk size in GB (the file system grows to fill it)', intOption('disk-size'))
    .option('-v, --volume <HOST:GUEST[:ro]>', 'share a host directory, or mount managed volume NAME (no "/"), into the box (repeatable; ro: read-only)', collect)
    .addOption(new Option('--network <mode>', 'network mode').choices(['enabled', 'none']).default('enabled'))
    .option('-p, --publish <[HOST:]GUEST[/tcp|udp]>', 'publish a guest port on host 127.0.0.1 (repeatable; HOST 0 or absent: any free port)', collect)
    .option('--allow-net <PATTERN[,PATTERN]>', 'only let the box reach these hosts: name, *.wildcard, IPv4 or CIDR (repeatable; default: everything)', collect)
    .option('--secret <NAME[=VALUE]@HOST[,HOST]>', 'substitute a secret into HTTPS to HOST; the box sees only $BOXLITE_SECRET_NAME (without =VALUE: from $NAME; repeatable)', collect)
    .option('--secret-env <NAME=VAR@HOST[,HOST]>', 'a secret whose value is environment variable VAR (repeatable)', collect)
    .option('--secret-file <NAME=PATH@HOST[,HOST]>', 'a secret whose value is the contents of PATH (repeatable)', collect);
}

function boxOptionsFrom(o: Record<string, any>, image: string | undefined): BoxOptions {
  if (!o.rootfs && !image) throw new ConfigError('an IMAGE or --rootfs PATH is required');
  return {
    image,
    rootfsPath: o.rootfs,
    cpus: o.cpus,
    memoryMib: o.memory,
    diskSizeGb: o.diskSize,
    env: parseEnv(o.env),
    workingDir: o.workdir,
    user: o.user,
    volumes: (o.volume ?? []).map(parseVolumeFlag),
    network: { outbound: { mode: o.network === 'none' ? 'disabled' : 'enabled', ...allowNetFrom(o.allowNet) } },
    ports: (o.publish ?? []).map(parsePublishFlag),
    ...secretsOption(secretsFromFlags(o)),
  };
}

function secretsOption(secrets: ReturnType<typeof secretsFromFlags>): { secrets?: ReturnType<typeof secretsFromFlags> } {
  return secrets.length ? { secrets } : {};
}

/** `--allow-net a,b --allow-net c` → allowNet [a, b, c] (a comma is never part of a pattern); validated by normalizeBoxOptions. */
function allowNetFrom(flags: string[] | undefined): { allowNet?: string[] } {
  const list = (flags ?? []).flatMap((f) => f.split(',')).map((p) => p.trim());
  return list.length ? { allowNet: list } : {};
}

/** Commands whose exit code is the box command's own, so BoxLite's failures need docker's 125/126/127. */
const RUN_LIKE = new Set(['run', 'exec', 'attach']);

/**
 * Exit codes: run/exec pass the command's own through (128+N for signal N) and use
 * 125 when BoxLite failed, 126/127 when the command could not run; other commands
 * exit 1 on failure; usage errors exit 2.
 */
export async function main(argv: string[]): Promise<number> {
  const result: { exitCode: number; command?: string } = { exitCode: 0 };
  const program = buildProgram(result);
  try {
    await program.parseAsync(argv);
    return result.exitCode;
  } catch (err) {
    if (err instanceof CommanderError) {
      return err.exitCode === 0 ? 0 : 2;
    }
    const debug = program.opts<GlobalOpts>().debug || process.env.BOXLITE_LOG === 'debug';
    if (err instanceof BoxliteError) {
      process.stderr.write(`Error: ${err.message}\n`);
      if (debug && err.stack) process.stderr.write(`${err.stack}\n`);
      if (!RUN_LIKE.has(result.command ?? '')) return 1;
      if (err instanceof ExecutionError && err.exitCode) return err.exitCode;
      return ERROR_TABLE[err.code].cliExit;
    }
    process.stderr.write(`Error: internal error: ${(err as Error)?.message ?? String(err)}\n`);
    if (debug) process.stderr.write(`${(err as Error)?.stack}\n`);
    return RUN_LIKE.has(result.command ?? '') ? 125 : 1;
  }
}

main(process.argv).then(
  (code) => {
    process.exitCode = code;
  },
  () => {
    process.exitCode = 125;
  },
);
