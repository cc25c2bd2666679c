// `boxlite network tunnel BOX PORT [--listen [HOST:]PORT | unix:PATH]`: forwards a local port to
// a port inside a running box through the SDK's tunnel (box.network.tunnel(port).forward(...)),
// until Ctrl-C. Like the rest of the CLI it uses only the public SDK.
import { Command } from 'commander';
import { ConfigError, InvalidStateError, NetworkError, NotFoundError, type JsBoxlite } from '../index.js';

/** How often the command checks that the box still runs. */
const WATCH_INTERVAL_MS = 2000;

type Act = (fn: (...args: any[]) => Promise<number>) => (...args: unknown[]) => Promise<void>;

/** Where the forwarder listens: the reference's SocketAddress. */
export type ListenAddress = { type: 'tcp'; host?: string; port: number } | { type: 'unix'; path: string };

function portNumber(text: string, what: string, allowZero: boolean): number {
  const n = /^\d{1,5}$/.test(text) ? Number(text) : NaN;
  if (!Number.isInteger(n) || n > 65535 || n < (allowZero ? 0 : 1)) {
    throw new ConfigError(`${what} must be an integer ${allowZero ? 0 : 1}-65535, got ${JSON.stringify(text)}`);
  }
  return n;
}

/**
 * `--listen` values: `PORT`, `HOST:PORT` (IPv4 or a name; `[v6]:PORT`), or `unix:PATH`.
 * The default is 127.0.0.1 on a free port: a box's services are not put on the network by
 * accident, as for published ports.
 */
export function parseListenFlag(spec: string | undefined): ListenAddress {
  if (spec === undefined) return { type: 'tcp', host: '127.0.0.1', port: 0 };
  if (spec.startsWith('unix:')) {
    const p = spec.slice(5);
    if (!p) throw new ConfigError('--listen unix:PATH needs a PATH');
    return { type: 'unix', path: p };
  }
  const v6 = /^\[([^\]]+)\]:(\d+)$/.exec(spec);
  if (v6) return { type: 'tcp', host: v6[1], port: portNumber(v6[2]!, '--listen port', true) };
  const colon = spec.lastIndexOf(':');
  if (colon < 0) return { type: 'tcp', host: '127.0.0.1', port: portNumber(spec, '--listen port', true) };
  const host = spec.slice(0, colon);
  if (!host || host.includes(':')) throw new ConfigError(`--listen ${JSON.stringify(spec)} is not [HOST:]PORT or unix:PATH`);
  return { type: 'tcp', host, port: portNumber(spec.slice(colon + 1), '--listen port', true) };
}

export function formatAddress(a: ListenAddress): string {
  if (a.type === 'unix') return `unix:${a.path}`;
  const host = a.host ?? '127.0.0.1';
  return host.includes(':') ? `[${host}]:${a.port}` : `${host}:${a.port}`;
}

export function registerNetworkCommands(program: Command, act: Act, runtimeFrom: (cmd: Command) => JsBoxlite): void {
  const network = program.command('network').description('Network operations on boxes');
  network
    .command('tunnel')
    .description(
      'Forward a local port to PORT inside a running box until Ctrl-C; prints the local address ' +
        '(default 127.0.0.1 on a free port) on stdout',
    )
    .option('-l, --listen <[HOST:]PORT|unix:PATH>', 'where to listen locally (default: 127.0.0.1:0, any free port)')
    .argument('<box>', 'box id or name')
    .argument('<port>', 'port inside the box (1-65535)')
    .action(
      act(async (idOrName: string, portText: string, o: { listen?: string }, cmd: Command) => {
        const guestPort = portNumber(portText, 'PORT', false);
        const listen = parseListenFlag(o.listen);
        const runtime = runtimeFrom(cmd);
        const box = await runtime.get(idOrName);
        if (!box) throw new NotFoundError('box', idOrName);
        const info = await box.info();
        if (!info.state.running) {
          // A tunnel would boot a stopped box through the handle; a forwarder is meant for a box
          // the user runs, so say so instead of starting one behind their back.
          throw new InvalidStateError(`box ${box.id} is not running (status: ${info.state.status}); start it with \`boxlite start ${idOrName}\``);
        }
        const tunnel = await box.network.tunnel(guestPort);
        const forwarder = await tunnel.forward(listen);
        const local = forwarder.localAddr() as ListenAddress;
        // stdout carries only the address (scripts read it, as `run -d` prints the id); the
        // human line goes to stderr.
        process.stdout.write(`${formatAddress(local)}\n`);
        process.stderr.write(`forwarding ${formatAddress(local)} to port ${guestPort} of box ${box.id}; Ctrl-C to stop\n`);

        let stopping = false;
        let boxEnded = false;
        const stop = () => {
          if (stopping) return;
          stopping = true;
          forwarder.close().catch(() => {});
        };
        // The forwarder itself keeps listening when the box goes away (its connections are then
        // reset); the command should end instead, so it watches the box's state.
        const watch = setInterval(() => {
          box.info().then(
            (i) => {
              if (!i.state.running && !stopping) {
                boxEnded = true;
                stop();
              }
            },
            // Removed under us ends the tunnel too; other failures (a busy database) are
            // transient, the next check decides.
            (err: { code?: string }) => {
              if (err?.code === 'NotFound' && !stopping) {
                boxEnded = true;
                stop();
              }
            },
          );
        }, WATCH_INTERVAL_MS);
        watch.unref();
        process.once('SIGINT', stop);
        process.once('SIGTERM', stop);
        process.once('SIGHUP', stop);
        try {
          await forwarder.wait();
          if (boxEnded) throw new NetworkError(`box ${box.id} stopped; the tunnel to port ${guestPort} ended`);
          return 0;
        } finally {
          clearInterval(watch);
          process.off('SIGINT', stop);
          process.off('SIGTERM', stop);
          process.off('SIGHUP', stop);
          await forwarder.close().catch(() => {});
        }
      }),
    );
}
