// The CLI against a remote server (issue 10): which commands work there, the options every one of
// them takes, and the box's main-process session (`run`/`attach` with --url) over the server's
// GET /v1/boxes/{id}/attach route.
import crypto from 'node:crypto';
import http from 'node:http';
import https from 'node:https';
import { Command, Option } from 'commander';
import { InternalError, NetworkError, UnsupportedError, type JsExecution } from '../index.js';
import { RestExecution } from '../rest/client/execution.js';
import type { RestRuntime } from '../rest/client/runtime.js';
import { errorFromResponse } from '../rest/client/transport.js';
import type { RemoteTarget } from './auth.js';

/**
 * Commands that need this machine's runtime (its image store, console logs, host facts, port
 * forwarding): with a remote server they fail with a coded Unsupported naming the command,
 * instead of whatever the REST client would say deep inside. Keys are `parent child` paths.
 */
export const LOCAL_ONLY: ReadonlyMap<string, string> = new Map([
  ['logs', 'the server exposes no log route'],
  ['info', 'it describes this machine'],
  ['pull', 'the REST client speaks no image routes'],
  ['images', 'the REST client speaks no image routes'],
  ['rmi', 'the REST client speaks no image routes'],
  ['image ls', 'the REST client speaks no image routes'],
  ['image prune', 'the REST client speaks no image routes'],
  ['image load', 'the REST client speaks no image routes'],
]);

/** `image ls` for the `ls` under `image`; the top-level name otherwise. */
export function commandPath(cmd: Command): string {
  const names: string[] = [];
  for (let c: Command | null = cmd; c && c.parent; c = c.parent) names.unshift(c.name());
  return names.join(' ');
}

export function remoteWhere(t: RemoteTarget): string {
  return t.source === 'credentials' ? `${t.url}, stored by \`boxlite auth login\`` : `${t.url} from ${t.source}`;
}

export function checkRemoteCommand(cmd: Command, t: RemoteTarget): void {
  const name = commandPath(cmd);
  const why = LOCAL_ONLY.get(name);
  if (why !== undefined) {
    throw new UnsupportedError(`\`boxlite ${name}\` is not available against a remote server (--url; here ${remoteWhere(t)}): ${why}. Use --local for this machine's runtime`);
  }
}

/** Commands that get no remote options: they are this machine's (serve) or take their own (auth login/logout). */
const NO_REMOTE_OPTIONS = new Set(['serve', 'auth login', 'auth logout', 'help', 'completion']);

/**
 * Adds `--url`, `--api-key`, `--path-prefix` and `--local` to every command (and the program), so
 * they work after the command name as well (`boxlite run --url … IMAGE CMD`): the program's own
 * options are positional.
 */
export function addRemoteOptions(program: Command): void {
  const add = (c: Command) => {
    const has = (flag: string) => c.options.some((o) => o.long === flag);
    if (!has('--url')) c.addOption(new Option('--url <url>', 'a remote BoxLite server (default: $BOXLITE_REST_URL, else `boxlite auth login`)'));
    if (!has('--api-key')) {
      c.addOption(new Option('--api-key <key>', 'API key for --url (prefer $BOXLITE_API_KEY or `boxlite auth login`: arguments show in ps)'));
    }
    if (!has('--path-prefix')) c.addOption(new Option('--path-prefix <prefix>', "the server's path prefix (default: $BOXLITE_REST_PATH_PREFIX)"));
    if (!has('--local')) c.addOption(new Option('--local', "use this machine's runtime even when a server is configured"));
  };
  add(program);
  const walk = (c: Command) => {
    for (const sub of c.commands) {
      if (NO_REMOTE_OPTIONS.has(commandPath(sub))) continue;
      if (sub.commands.length === 0) add(sub);
      walk(sub);
    }
  };
  walk(program);
}

/**
 * The main-process session of a box on the server: `GET …/boxes/{id}/attach` boots the box and
 * registers the main process as an execution, whose id comes back in X-Boxlite-Execution-Id on the
 * 101. The socket of that handshake is dropped unread, so no frame is acknowledged (the server
 * acknowledges by Pong), and a RestExecution attaches to `…/executions/{id}/attach`, where the
 * server replays everything from the first frame: its reconnect and de-duplication rules then hold
 * for the main process as for any exec.
 */
export async function attachMainRemote(runtime: RestRuntime, boxId: string, tty: boolean): Promise<JsExecution> {
  const transport = runtime.transport;
  const boxPath = `/boxes/${encodeURIComponent(boxId)}`;
  const target = new URL(transport.url(`${boxPath}/attach${tty ? '?tty=true' : ''}`));
  const headers = {
    ...(await transport.authHeaders()),
    connection: 'Upgrade',
    upgrade: 'websocket',
    'sec-websocket-version': '13',
    'sec-websocket-key': crypto.randomBytes(16).toString('base64'),
  };
  const lib = target.protocol === 'https:' ? https : http;
  const eid = await new Promise<string>((resolve, reject) => {
    // Its own connection (agent: false): a refused upgrade's socket is closed by the server, and a
    // pooled one would fail the next request with "socket hang up".
    const req = lib.request(target, { method: 'GET', headers, agent: false });
    // A cold boot happens before the 101: give it as long as the boot takes, within reason.
    req.setTimeout(120_000, () => req.destroy(new Error('no answer within 120 s')));
    req.on('upgrade', (res, socket) => {
      socket.destroy();
      const id = res.headers['x-boxlite-execution-id'];
      if (typeof id === 'string' && id) resolve(id);
      else reject(new InternalError(`the server answered the main-process attach of box ${boxId} without an X-Boxlite-Execution-Id header`));
    });
    req.on('response', (res) => {
      const chunks: Buffer[] = [];
      res.on('data', (c: Buffer) => chunks.push(c));
      res.on('end', () => reject(errorFromResponse(res.statusCode ?? 0, Buffer.concat(chunks).toString('utf8'))));
      res.on('error', (e) => reject(new NetworkError(`attach to box ${boxId}: ${e.message}`)));
    });
    req.on('error', (e) => reject(new NetworkError(`attach to box ${boxId} at ${target.origin}: ${e.message}`)));
    req.end();
  });
  return new RestExecution(transport, boxPath, eid, tty) as unknown as JsExecution;
}
