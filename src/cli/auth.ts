// The CLI's remote server settings (issue 10): `--url`/`--api-key`/`--path-prefix`, their
// BOXLITE_REST_URL / BOXLITE_API_KEY / BOXLITE_REST_PATH_PREFIX variables, and the credentials
// `boxlite auth login` stores; plus the `auth login|status|logout` commands.
import crypto from 'node:crypto';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { Command } from 'commander';
import { ApiKeyCredential, BoxliteRestOptions, ConfigError, JsBoxlite, StorageError } from '../index.js';
import { RestRuntime } from '../rest/client/runtime.js';
import { errorFromResponse } from '../rest/client/transport.js';

type Act = (fn: (...args: any[]) => Promise<number>) => (...args: unknown[]) => Promise<void>;

/** What `auth login` stores. */
export interface StoredCredentials {
  url: string;
  apiKey: string;
  pathPrefix?: string;
}

/** The options every remote-capable command takes (flag values; undefined when absent). */
export interface RemoteFlags {
  url?: string;
  apiKey?: string;
  pathPrefix?: string;
  local?: boolean;
}

export type RemoteSource = '--url' | 'BOXLITE_REST_URL' | 'credentials';

export interface RemoteTarget {
  url: string;
  apiKey?: string;
  pathPrefix?: string;
  /** Where the URL came from (error messages name it, so a user knows what to change). */
  source: RemoteSource;
}

/** `$XDG_CONFIG_HOME/boxlite/credentials.json`, `~/.config/boxlite/credentials.json` without it. */
export function credentialsPath(env: NodeJS.ProcessEnv = process.env): string {
  const base = env.XDG_CONFIG_HOME && path.isAbsolute(env.XDG_CONFIG_HOME) ? env.XDG_CONFIG_HOME : path.join(env.HOME || os.homedir(), '.config');
  return path.join(base, 'boxlite', 'credentials.json');
}

/** Trailing slashes dropped, so `http://h:1/` and `http://h:1` are the same server. */
export function normalizeUrl(url: string): string {
  let u: URL;
  try {
    u = new URL(url);
  } catch {
    throw new ConfigError(`the server URL ${JSON.stringify(url)} is not a URL (expected http(s)://host[:port])`);
  }
  if (u.protocol !== 'http:' && u.protocol !== 'https:') throw new ConfigError(`the server URL must be http:// or https://, got ${JSON.stringify(url)}`);
  return url.replace(/\/+$/, '');
}

/**
 * Reads the stored credentials; null when there are none. A file others can read is refused
 * rather than used: the key in it may already have leaked, and silently going on would hide that.
 */
export function readCredentials(file = credentialsPath()): StoredCredentials | null {
  let fd: number;
  try {
    fd = fs.openSync(file, fs.constants.O_RDONLY | fs.constants.O_NOFOLLOW);
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    if (code === 'ENOENT') return null;
    if (code === 'ELOOP') throw new ConfigError(`credentials file ${file} is a symbolic link; refusing to read it (run \`boxlite auth login\` again)`);
    throw new StorageError(`cannot read credentials file ${file}: ${(err as Error).message}`);
  }
  try {
    const st = fs.fstatSync(fd);
    if (!st.isFile()) throw new ConfigError(`credentials file ${file} is not a regular file`);
    if (st.mode & 0o077) {
      const mode = (st.mode & 0o777).toString(8).padStart(4, '0');
      throw new ConfigError(`credentials file ${file} is accessible by others (mode ${mode}); run \`chmod 600 ${file}\` (and consider rotating the key)`);
    }
    if (typeof process.getuid === 'function' && st.uid !== process.getuid()) {
      throw new ConfigError(`credentials file ${file} belongs to another user (uid ${st.uid}); refusing to use it`);
    }
    let parsed: unknown;
    try {
      parsed = JSON.parse(fs.readFileSync(fd, 'utf8'));
    } catch {
      throw new ConfigError(`credentials file ${file} is not valid JSON; run \`boxlite auth login\` again`);
    }
    const c = parsed as Record<string, unknown>;
    if (!c || typeof c !== 'object' || typeof c.url !== 'string' || typeof c.apiKey !== 'string' || (c.pathPrefix !== undefined && typeof c.pathPrefix !== 'string')) {
      throw new ConfigError(`credentials file ${file} lacks url/apiKey; run \`boxlite auth login\` again`);
    }
    return { url: c.url, apiKey: c.apiKey, ...(c.pathPrefix ? { pathPrefix: c.pathPrefix } : {}) };
  } finally {
    fs.closeSync(fd);
  }
}

/**
 * Writes the credentials atomically: a temporary file created 0600 in the same directory
 * (exclusive, so a planted file or link is never written through), fsynced, then renamed over
 * the old one. The directory is made 0700. A reader sees the old file or the new one, never a
 * half-written or briefly world-readable one.
 */
export function writeCredentials(creds: StoredCredentials, file = credentialsPath()): void {
  const dir = path.dirname(file);
  fs.mkdirSync(dir, { recursive: true, mode: 0o700 });
  fs.chmodSync(dir, 0o700);
  const tmp = path.join(dir, `.${path.basename(file)}.${process.pid}.${crypto.randomBytes(6).toString('hex')}.tmp`);
  const fd = fs.openSync(tmp, fs.constants.O_WRONLY | fs.constants.O_CREAT | fs.constants.O_EXCL | fs.constants.O_NOFOLLOW, 0o600);
  try {
    try {
      fs.fchmodSync(fd, 0o600); // the umask cannot widen it, but a restrictive one must not matter either
      fs.writeFileSync(fd, `${JSON.stringify(creds, null, 2)}\n`);
      fs.fsyncSync(fd);
    } finally {
      fs.closeSync(fd);
    }
    fs.renameSync(tmp, file);
  } catch (err) {
    fs.rmSync(tmp, { force: true });
    throw new StorageError(`cannot write credentials file ${file}: ${(err as Error).message}`);
  }
}

/** Deletes the stored credentials; false when there were none. */
export function deleteCredentials(file = credentialsPath()): boolean {
  try {
    fs.unlinkSync(file);
    return true;
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return false;
    throw new StorageError(`cannot remove credentials file ${file}: ${(err as Error).message}`);
  }
}

const nonEmpty = (v: string | undefined) => (v === undefined || v === '' ? undefined : v);

/**
 * Which server the CLI talks to, field by field: flags, then the environment, then the stored
 * credentials. The stored key (and prefix) are used only for the server they were verified
 * against: a --url naming another server never receives them. Null: this machine's runtime.
 * `load` is called only when the stored file is actually needed.
 */
export function resolveRemote(flags: RemoteFlags, env: NodeJS.ProcessEnv, load: () => StoredCredentials | null): RemoteTarget | null {
  if (flags.local) return null;
  const flagUrl = nonEmpty(flags.url);
  const envUrl = nonEmpty(env.BOXLITE_REST_URL);
  const explicitKey = nonEmpty(flags.apiKey) ?? nonEmpty(env.BOXLITE_API_KEY);
  const explicitPrefix = nonEmpty(flags.pathPrefix) ?? nonEmpty(env.BOXLITE_REST_PATH_PREFIX);
  let url: string;
  let source: RemoteSource;
  if (flagUrl !== undefined || envUrl !== undefined) {
    url = normalizeUrl((flagUrl ?? envUrl)!);
    source = flagUrl !== undefined ? '--url' : 'BOXLITE_REST_URL';
    const needStored = explicitKey === undefined || explicitPrefix === undefined;
    const stored = needStored ? load() : null;
    const same = stored !== null && normalizeUrl(stored.url) === url;
    const apiKey = explicitKey ?? (same ? stored!.apiKey : undefined);
    const pathPrefix = explicitPrefix ?? (same ? stored!.pathPrefix : undefined);
    return { url, source, ...(apiKey ? { apiKey } : {}), ...(pathPrefix ? { pathPrefix } : {}) };
  }
  const stored = load();
  if (!stored) return null;
  const apiKey = explicitKey ?? stored.apiKey;
  const pathPrefix = explicitPrefix ?? stored.pathPrefix;
  return { url: normalizeUrl(stored.url), source: 'credentials', ...(apiKey ? { apiKey } : {}), ...(pathPrefix ? { pathPrefix } : {}) };
}

export function restRuntimeFor(t: RemoteTarget): RestRuntime {
  return JsBoxlite.rest(
    new BoxliteRestOptions({ url: t.url, ...(t.apiKey ? { credential: new ApiKeyCredential(t.apiKey) } : {}), ...(t.pathPrefix ? { pathPrefix: t.pathPrefix } : {}) }),
  ) as unknown as RestRuntime;
}

/** For `auth status`: enough to recognise the key, too little to use it. */
export function redactKey(key: string): string {
  return key.length >= 12 ? `${key.slice(0, 4)}… (${key.length} characters)` : `… (${key.length} characters)`;
}

export type MeCheck = { ok: true; principal: Record<string, unknown> } | { ok: false; status?: number; message: string };

/** `GET /v1/me` with the key: whether the server accepts it (never throws). */
export async function checkMe(t: RemoteTarget): Promise<MeCheck> {
  try {
    const res = await restRuntimeFor(t).transport.raw('GET', '/me', { root: true, timeoutMs: 15_000 });
    const text = await res.body.text();
    if (res.status >= 200 && res.status < 300) {
      try {
        return { ok: true, principal: JSON.parse(text) as Record<string, unknown> };
      } catch {
        return { ok: false, status: res.status, message: `the server's /v1/me answer is not JSON; is ${t.url} a BoxLite server?` };
      }
    }
    if (res.status === 401 || res.status === 403) return { ok: false, status: res.status, message: `the server rejected the API key (HTTP ${res.status} unauthorized)` };
    return { ok: false, status: res.status, message: errorFromResponse(res.status, text).message };
  } catch (err) {
    return { ok: false, message: `cannot reach ${t.url}: ${(err as Error).message}` };
  }
}

async function readStdin(): Promise<string> {
  const chunks: Buffer[] = [];
  for await (const c of process.stdin) chunks.push(Buffer.from(c as Buffer));
  return Buffer.concat(chunks).toString('utf8');
}

/** A prompt on the terminal whose answer is not echoed. */
function promptHidden(question: string): Promise<string> {
  return new Promise((resolve, reject) => {
    const stdin = process.stdin;
    process.stderr.write(question);
    stdin.setRawMode(true);
    stdin.resume();
    let answer = '';
    const done = (err?: Error) => {
      stdin.off('data', onData);
      stdin.setRawMode(false);
      stdin.pause();
      process.stderr.write('\n');
      if (err) reject(err);
      else resolve(answer);
    };
    const onData = (buf: Buffer) => {
      for (const ch of buf.toString('utf8')) {
        if (ch === '\r' || ch === '\n' || ch === '\u0004') return done();
        if (ch === '\u0003') return done(new ConfigError('auth login: cancelled'));
        if (ch === '\u007f' || ch === '\b') answer = answer.slice(0, -1);
        else answer += ch;
      }
    };
    stdin.on('data', onData);
  });
}

const keyFromText = (text: string) => text.replace(/[\r\n]+$/, '').trim();

export function registerAuthCommands(program: Command, act: Act): void {
  const auth = program.command('auth').description('Credentials for a remote BoxLite server (`boxlite serve`), kept in a 0600 file');

  auth
    .command('login')
    .description(
      'Verify an API key against a server (GET /v1/me) and store url, key and path prefix in $XDG_CONFIG_HOME/boxlite/credentials.json (0600); ' +
        'the key comes from --api-key-stdin, else $BOXLITE_API_KEY, else a prompt on the terminal',
    )
    .option('--url <url>', 'the server (default: $BOXLITE_REST_URL)')
    .option('--path-prefix <prefix>', "the server's path prefix (default: $BOXLITE_REST_PATH_PREFIX, else what /v1/me reports)")
    .option('--api-key-stdin', 'read the key from standard input (e.g. `pass boxlite | boxlite auth login --api-key-stdin`)')
    .action(
      act(async (_o, cmd: Command) => {
        // `boxlite --url U auth login` too: the program's options are positional.
        const o = cmd.optsWithGlobals<{ url?: string; pathPrefix?: string; apiKeyStdin?: boolean }>();
        const rawUrl = nonEmpty(o.url) ?? nonEmpty(process.env.BOXLITE_REST_URL);
        if (!rawUrl) throw new ConfigError('auth login needs --url URL (or BOXLITE_REST_URL)');
        const url = normalizeUrl(rawUrl);
        let key: string | undefined;
        if (o.apiKeyStdin) key = keyFromText(await readStdin());
        else if (nonEmpty(process.env.BOXLITE_API_KEY)) key = process.env.BOXLITE_API_KEY!;
        else if (process.stdin.isTTY) key = keyFromText(await promptHidden(`API key for ${url}: `));
        else throw new ConfigError('auth login: no API key: pipe it with --api-key-stdin, or set BOXLITE_API_KEY');
        if (!key) throw new ConfigError('auth login: the API key is empty');
        const explicitPrefix = nonEmpty(o.pathPrefix) ?? nonEmpty(process.env.BOXLITE_REST_PATH_PREFIX);
        const me = await checkMe({ url, apiKey: key, source: '--url' });
        if (!me.ok) throw new ConfigError(`auth login: ${me.message}; nothing was stored`);
        const reported = typeof me.principal.path_prefix === 'string' && me.principal.path_prefix ? me.principal.path_prefix : undefined;
        const pathPrefix = explicitPrefix ?? reported;
        const file = credentialsPath();
        writeCredentials({ url, apiKey: key, ...(pathPrefix ? { pathPrefix } : {}) }, file);
        const who = typeof me.principal.display_name === 'string' ? me.principal.display_name : typeof me.principal.sub === 'string' ? me.principal.sub : 'unknown';
        process.stdout.write(`Logged in to ${url}${pathPrefix ? ` (path prefix ${pathPrefix})` : ''} as ${who}; credentials stored in ${file}\n`);
        return 0;
      }),
    );

  auth
    .command('status')
    .description('Show which server the CLI talks to (key redacted) and whether it accepts the key; exit 1 when not logged in or rejected')
    .action(
      act(async (_o, cmd: Command) => {
        const g = cmd.optsWithGlobals<RemoteFlags>();
        const file = credentialsPath();
        const target = resolveRemote(g, process.env, () => readCredentials(file));
        if (!target) {
          process.stdout.write(`Not logged in (no ${file}, no --url or BOXLITE_REST_URL): commands use this machine's runtime\n`);
          return 1;
        }
        const from = target.source === 'credentials' ? file : target.source;
        process.stdout.write(`Server:      ${target.url} (from ${from})\n`);
        process.stdout.write(`Path prefix: ${target.pathPrefix ?? '(none)'}\n`);
        process.stdout.write(`API key:     ${target.apiKey ? redactKey(target.apiKey) : '(none)'}\n`);
        const me = await checkMe(target);
        if (me.ok) {
          const who = me.principal.display_name ?? me.principal.sub ?? 'unknown';
          process.stdout.write(`Status:      accepted (principal ${String(who)})\n`);
          return 0;
        }
        process.stdout.write(`Status:      ${me.message}\n`);
        return 1;
      }),
    );

  auth
    .command('logout')
    .description('Delete the stored credentials (nothing to do when there are none)')
    .action(
      act(async () => {
        const file = credentialsPath();
        process.stdout.write(deleteCredentials(file) ? `Removed ${file}\n` : `Not logged in (no ${file})\n`);
        return 0;
      }),
    );
}
