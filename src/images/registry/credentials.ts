// Registry credentials: explicit settings first, then the docker CLI's
// config.json ($DOCKER_CONFIG/config.json, default ~/.docker/config.json):
// `auths[host]` (base64 user:pass, username/password, identitytoken), then
// `credHelpers[host]`, then `credsStore`, both run as
// `docker-credential-<name> get` with the server URL on stdin — only when that
// binary is on PATH.

import { execFile } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { ConfigError } from '../../errors/index.js';
import { isDockerHub } from '../reference.js';
import type { RegistrySettings } from './settings.js';

export interface Credentials {
  username?: string;
  password?: string;
  /** OAuth2 refresh token (docker's `identitytoken`); exchanged at the token realm. */
  identityToken?: string;
  /** Ready bearer token for the registry itself. */
  registryToken?: string;
  /** Where they came from, for error messages. */
  source: string;
}

/** Docker Hub's key in config.json and the server URL docker passes to helpers. */
const DOCKER_HUB_SERVER = 'https://index.docker.io/v1/';
const HELPER_TIMEOUT_MS = 15_000;

/** `https://host:5000/v1/` → `host:5000` (docker's ConvertToHostname), lower-cased. */
function keyHost(key: string): string {
  let k = key.trim();
  k = k.replace(/^[a-z][a-z0-9+.-]*:\/\//i, '');
  const slash = k.indexOf('/');
  if (slash >= 0) k = k.slice(0, slash);
  return k.toLowerCase();
}

function keyMatches(key: string, registry: string): boolean {
  const h = keyHost(key);
  return isDockerHub(registry) ? isDockerHub(h) : h === registry.toLowerCase();
}

function lookupKey<T>(obj: Record<string, T> | undefined, registry: string): [string, T] | undefined {
  if (!obj || typeof obj !== 'object') return undefined;
  // Exact key first, then any key that normalises to the host.
  const exact = isDockerHub(registry) ? DOCKER_HUB_SERVER : registry;
  if (Object.hasOwn(obj, exact)) return [exact, obj[exact]!];
  for (const [k, v] of Object.entries(obj)) if (keyMatches(k, registry)) return [k, v];
  return undefined;
}

export function dockerConfigDir(env: NodeJS.ProcessEnv = process.env): string {
  return env.DOCKER_CONFIG && env.DOCKER_CONFIG !== '' ? env.DOCKER_CONFIG : path.join(os.homedir(), '.docker');
}

interface DockerConfig {
  auths?: Record<string, { auth?: string; username?: string; password?: string; identitytoken?: string; registrytoken?: string }>;
  credHelpers?: Record<string, string>;
  credsStore?: string;
}

function readDockerConfig(env: NodeJS.ProcessEnv): { file: string; config: DockerConfig } | undefined {
  const file = path.join(dockerConfigDir(env), 'config.json');
  let text: string;
  try {
    text = fs.readFileSync(file, 'utf8');
  } catch {
    return undefined;
  }
  try {
    const config = JSON.parse(text) as unknown;
    if (!config || typeof config !== 'object' || Array.isArray(config)) throw new Error('not a JSON object');
    return { file, config: config as DockerConfig };
  } catch (err) {
    throw new ConfigError(`cannot parse docker config ${file}: ${(err as Error).message}`, { cause: err });
  }
}

/** Finds an executable on PATH (no shell). */
export function findOnPath(name: string, env: NodeJS.ProcessEnv = process.env): string | undefined {
  for (const dir of (env.PATH ?? '').split(path.delimiter)) {
    if (!dir) continue;
    const p = path.join(dir, name);
    try {
      fs.accessSync(p, fs.constants.X_OK);
      if (fs.statSync(p).isFile()) return p;
    } catch {
      // next
    }
  }
  return undefined;
}

/** Runs `docker-credential-<helper> get`; undefined when it has nothing for the server. */
async function fromHelper(helper: string, serverUrl: string, env: NodeJS.ProcessEnv): Promise<Credentials | undefined> {
  if (!/^[A-Za-z0-9._-]+$/.test(helper)) return undefined;
  const bin = findOnPath(`docker-credential-${helper}`, env);
  if (!bin) return undefined;
  const out = await new Promise<string | undefined>((resolve) => {
    const child = execFile(bin, ['get'], { env, timeout: HELPER_TIMEOUT_MS, maxBuffer: 1024 * 1024 }, (err, stdout) => {
      resolve(err ? undefined : stdout);
    });
    child.stdin?.on('error', () => {});
    child.stdin?.end(serverUrl);
  });
  if (!out) return undefined;
  let parsed: { Username?: unknown; Secret?: unknown };
  try {
    parsed = JSON.parse(out) as typeof parsed;
  } catch {
    return undefined;
  }
  const user = typeof parsed.Username === 'string' ? parsed.Username : '';
  const secret = typeof parsed.Secret === 'string' ? parsed.Secret : '';
  if (!secret) return undefined;
  const source = `docker-credential-${helper}`;
  if (user === '<token>') return { identityToken: secret, source };
  return { username: user, password: secret, source };
}

/** Credentials for `registry` from docker's config.json and helpers, or undefined. */
export async function dockerCredentials(registry: string, env: NodeJS.ProcessEnv = process.env): Promise<Credentials | undefined> {
  const loaded = readDockerConfig(env);
  if (!loaded) return undefined;
  const { file, config } = loaded;

  const entry = lookupKey(config.auths, registry);
  if (entry) {
    const [key, a] = entry;
    const source = `${file} (auths["${key}"])`;
    if (a && typeof a === 'object') {
      if (typeof a.auth === 'string' && a.auth !== '') {
        const decoded = Buffer.from(a.auth, 'base64').toString('utf8');
        const colon = decoded.indexOf(':');
        if (colon < 0) throw new ConfigError(`${file}: auths["${key}"].auth is not base64 of "user:password"`);
        return { username: decoded.slice(0, colon), password: decoded.slice(colon + 1), source };
      }
      if (typeof a.identitytoken === 'string' && a.identitytoken !== '') {
        return { identityToken: a.identitytoken, ...(a.username ? { username: a.username } : {}), source };
      }
      if (typeof a.registrytoken === 'string' && a.registrytoken !== '') return { registryToken: a.registrytoken, source };
      if (typeof a.username === 'string' && typeof a.password === 'string' && a.username !== '') {
        return { username: a.username, password: a.password, source };
      }
    }
  }

  const serverUrl = isDockerHub(registry) ? DOCKER_HUB_SERVER : registry;
  const helper = lookupKey(config.credHelpers, registry)?.[1];
  if (typeof helper === 'string' && helper !== '') {
    const c = await fromHelper(helper, serverUrl, env);
    if (c) return c;
  }
  if (typeof config.credsStore === 'string' && config.credsStore !== '') {
    return fromHelper(config.credsStore, serverUrl, env);
  }
  return undefined;
}

/** Explicit settings win; then docker's config. */
export async function resolveCredentials(
  registry: string,
  settings: RegistrySettings | undefined,
  env: NodeJS.ProcessEnv = process.env,
): Promise<Credentials | undefined> {
  const a = settings?.auth;
  if (a?.bearerToken) return { registryToken: a.bearerToken, source: 'imageRegistries auth' };
  if (a?.username !== undefined) return { username: a.username, password: a.password ?? '', source: 'imageRegistries auth' };
  return dockerCredentials(registry, env);
}
