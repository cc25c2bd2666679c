// `--secret`, `--secret-env`, `--secret-file` of `run` and `create`: secrets substituted into the
// box's outbound HTTPS (options.ts normalizeSecrets validates them). The value may come from the
// command line, but argv is visible to every user of the host (ps, /proc/<pid>/cmdline), so the
// environment and file forms are the ones to use for real keys:
//
//   --secret NAME=VALUE@HOST[,HOST]       the value as written (visible in ps)
//   --secret NAME@HOST[,HOST]             the value of this process's environment variable NAME
//   --secret-env NAME=VAR@HOST[,HOST]     the value of environment variable VAR
//   --secret-file NAME=PATH@HOST[,HOST]   the contents of PATH (one trailing newline dropped)
//
// The hosts follow the last '@' (a host has none; a value may), separated by commas.
import fs from 'node:fs';
import { ConfigError } from '../errors/index.js';
import type { Secret } from '../runtime/options.js';

/** Splits `LEFT@HOST[,HOST]` at its last '@'. */
function splitHosts(flag: string, spec: string, usage: string): { left: string; hosts: string[] } {
  const at = spec.lastIndexOf('@');
  if (at <= 0 || at === spec.length - 1) throw new ConfigError(`${flag} needs ${usage} (the hosts after '@'), got ${redact(spec)}`);
  const hosts = spec.slice(at + 1).split(',').map((h) => h.trim());
  return { left: spec.slice(0, at), hosts };
}

/** What an error may show of a spec: never the value. */
function redact(spec: string): string {
  const eq = spec.indexOf('=');
  const at = spec.lastIndexOf('@');
  return JSON.stringify(eq >= 0 ? `${spec.slice(0, eq)}=…${at > eq ? spec.slice(at) : ''}` : spec);
}

export function secretsFromFlags(
  o: { secret?: string[]; secretEnv?: string[]; secretFile?: string[] },
  env: NodeJS.ProcessEnv = process.env,
): Secret[] {
  const out: Secret[] = [];
  for (const spec of o.secret ?? []) {
    const { left, hosts } = splitHosts('--secret', spec, 'NAME=VALUE@HOST[,HOST] or NAME@HOST[,HOST]');
    const eq = left.indexOf('=');
    if (eq === 0) throw new ConfigError(`--secret needs a NAME before '=', got ${redact(spec)}`);
    if (eq > 0) {
      out.push({ name: left.slice(0, eq), value: left.slice(eq + 1), hosts });
      continue;
    }
    const value = env[left];
    if (value === undefined) throw new ConfigError(`--secret ${left}@…: environment variable ${left} is not set (or use NAME=VALUE, --secret-env, --secret-file)`);
    out.push({ name: left, value, hosts });
  }
  for (const spec of o.secretEnv ?? []) {
    const { left, hosts } = splitHosts('--secret-env', spec, 'NAME=VAR@HOST[,HOST]');
    const eq = left.indexOf('=');
    if (eq <= 0 || eq === left.length - 1) throw new ConfigError(`--secret-env needs NAME=VAR@HOST[,HOST], got ${JSON.stringify(spec)}`);
    const name = left.slice(0, eq);
    const variable = left.slice(eq + 1);
    const value = env[variable];
    if (value === undefined) throw new ConfigError(`--secret-env ${name}: environment variable ${variable} is not set`);
    out.push({ name, value, hosts });
  }
  for (const spec of o.secretFile ?? []) {
    const { left, hosts } = splitHosts('--secret-file', spec, 'NAME=PATH@HOST[,HOST]');
    const eq = left.indexOf('=');
    if (eq <= 0 || eq === left.length - 1) throw new ConfigError(`--secret-file needs NAME=PATH@HOST[,HOST], got ${JSON.stringify(spec)}`);
    const name = left.slice(0, eq);
    const file = left.slice(eq + 1);
    let value: string;
    try {
      value = fs.readFileSync(file, 'utf8');
    } catch (err) {
      throw new ConfigError(`--secret-file ${name}: cannot read ${file}: ${(err as NodeJS.ErrnoException).code ?? (err as Error).message}`);
    }
    out.push({ name, value: value.replace(/\r?\n$/, ''), hosts });
  }
  return out;
}
