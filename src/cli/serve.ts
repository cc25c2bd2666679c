// `boxlite serve`: the REST server (issue 10) on this machine's runtime. The app is built by
// src/rest/server/app.ts from the SDK runtime; only this command listens. Secure defaults: bound to
// 127.0.0.1; a non-loopback bind needs an API key (or an explicit --insecure). SIGINT/SIGTERM close
// the app (attached sockets too) and stop the boxes this process started.
import { Command } from 'commander';
import { ConfigError, type JsBoxlite } from '../index.js';
import { buildRestApp, DEFAULT_MAX_FILE_BYTES, isLoopback, type RestAppOptions, type RestRuntime } from '../rest/server/app.js';

type Act = (fn: (...args: any[]) => Promise<number>) => (...args: unknown[]) => Promise<void>;

export interface ServeOptions extends RestAppOptions {
  host: string;
  port: number;
  insecure?: boolean;
}

/** Refuses what must not be served: a non-loopback bind without a key (unless insecure). */
export function checkServeOptions(o: ServeOptions): void {
  if (!Number.isInteger(o.port) || o.port < 0 || o.port > 65535) throw new ConfigError(`--port must be 0..65535, got ${o.port}`);
  if (!o.apiKey && !isLoopback(o.host) && !o.insecure) {
    throw new ConfigError(
      `refusing to serve on ${o.host} without an API key: anyone who can reach it could run VMs. Set BOXLITE_SERVE_API_KEY (or --api-key), bind 127.0.0.1, or pass --insecure`,
    );
  }
  if (o.apiKey !== undefined && o.apiKey.length < 8) throw new ConfigError('the API key must be at least 8 characters');
}

export interface RunningServer {
  url: string;
  /** Closes the app (attached sockets too); the caller shuts the runtime down. */
  close(): Promise<void>;
}

/** Builds the app on `runtime` and listens; resolves once it accepts connections. */
export async function startServer(runtime: RestRuntime, o: ServeOptions): Promise<RunningServer> {
  checkServeOptions(o);
  // An open server on a LAN address (--insecure) is reached by whatever name the network gives it.
  const app = buildRestApp(runtime, { ...o, allowAnyHost: !o.apiKey && !isLoopback(o.host) });
  // Each attach or upload holds one; past this the kernel queues, the server's memory stays bounded.
  app.server.maxConnections = 1024;
  await app.listen({ host: o.host, port: o.port });
  const addr = app.server.address();
  const port = typeof addr === 'object' && addr ? addr.port : o.port;
  const host = o.host.includes(':') ? `[${o.host}]` : o.host;
  return { url: `http://${host}:${port}`, close: () => app.close() };
}

const stamp = () => new Date().toISOString();

export function registerServeCommand(program: Command, act: Act, runtimeFrom: (cmd: Command) => JsBoxlite): void {
  program
    .command('serve')
    .description('Serve the BoxLite REST API (the reference\'s `boxlite serve`) on this machine\'s runtime')
    .option('--host <host>', 'address to bind (a non-loopback one needs an API key or --insecure)', '127.0.0.1')
    .option('--port <port>', 'TCP port', (v: string) => Number(v), 8100)
    .option('--api-key <key>', 'bearer key clients must send (default: $BOXLITE_SERVE_API_KEY; prefer the variable: arguments show in ps)')
    .option('--insecure', 'allow a non-loopback bind without an API key')
    .option('--path-prefix <prefix>', 'serve box routes under /v1/<prefix>/ (the client\'s pathPrefix)')
    .option('--max-file-bytes <n>', 'largest file transfer, advertised in /v1/config', (v: string) => Number(v), DEFAULT_MAX_FILE_BYTES)
    .option('--rootfs-root <dir>', 'allow create with rootfs_path naming an OCI layout under this server directory')
    .action(
      act(async (o: Record<string, any>, cmd: Command) => {
        const apiKey: string | undefined = o.apiKey ?? (process.env.BOXLITE_SERVE_API_KEY || undefined);
        const maxFileBytes = o.maxFileBytes as number;
        if (!Number.isInteger(maxFileBytes) || maxFileBytes < 1) throw new ConfigError(`--max-file-bytes must be a positive integer, got ${o.maxFileBytes}`);
        const options: ServeOptions = {
          host: o.host,
          port: o.port,
          insecure: !!o.insecure,
          apiKey,
          pathPrefix: o.pathPrefix,
          maxFileBytes,
          rootfsRoot: o.rootfsRoot,
          log: (line) => process.stderr.write(`${stamp()} ${line}\n`),
        };
        checkServeOptions(options);
        const runtime = runtimeFrom(cmd);
        const server = await startServer(runtime, options);
        process.stderr.write(
          `${stamp()} boxlite serve listening on ${server.url}/v1 (auth: ${apiKey ? 'bearer key' : 'none'}${o.insecure && !apiKey ? ', INSECURE' : ''})\n`,
        );
        const signal = await new Promise<NodeJS.Signals>((resolve) => {
          const on = (s: NodeJS.Signals) => {
            process.off('SIGINT', on);
            process.off('SIGTERM', on);
            // A second signal while shutting down ends the process at once.
            const force = () => process.exit(130);
            process.once('SIGINT', force);
            process.once('SIGTERM', force);
            resolve(s);
          };
          process.on('SIGINT', on);
          process.on('SIGTERM', on);
        });
        process.stderr.write(`${stamp()} ${signal}: closing connections, stopping the boxes this server started\n`);
        await server.close().catch((err: unknown) => process.stderr.write(`${stamp()} close: ${(err as Error).message}\n`));
        await runtime.shutdown(10);
        process.stderr.write(`${stamp()} stopped\n`);
        return 0;
      }),
    );
}
