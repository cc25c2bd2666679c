// Per-registry settings (`imageRegistries`, shaped like JsImageRegistry of
// @boxlite-ai/boxlite 0.10, plus `caFile`). Validated once, where they enter;
// a bad entry is a ConfigError naming the field.

import * as fs from 'node:fs';
import { z } from 'zod';
import { ConfigError } from '../../errors/index.js';
import { isDockerHub, isValidRegistryHost } from '../reference.js';

export interface RegistryAuth {
  username?: string;
  password?: string;
  /** A ready registry token, sent as `Authorization: Bearer …` on every request. */
  bearerToken?: string;
}

export interface RegistrySettings {
  /** `host[:port]`, no scheme or path: `ghcr.io`, `registry.local:5000`, `docker.io`. */
  host: string;
  /** Default `https`. */
  transport?: 'https' | 'http';
  /** Do not verify the TLS certificate (https only). */
  skipVerify?: boolean;
  /**
   * Search this registry for unqualified references (`alpine`). Default false, as in the
   * reference: an entry without it only configures pulls of references naming its host.
   */
  search?: boolean;
  auth?: RegistryAuth;
  /** Extra trusted CA: a PEM file path, or the PEM text itself. */
  caFile?: string;
}

const nonEmpty = (what: string) => z.string({ invalid_type_error: `${what} must be a string` }).min(1, `${what} must not be empty`);

const authSchema = z
  .object({
    username: nonEmpty('username').optional(),
    password: z.string({ invalid_type_error: 'password must be a string' }).optional(),
    bearerToken: nonEmpty('bearerToken').optional(),
  })
  .strict()
  .superRefine((a, ctx) => {
    if (a.bearerToken !== undefined && (a.username !== undefined || a.password !== undefined)) {
      ctx.addIssue({ code: z.ZodIssueCode.custom, message: 'use either username/password or bearerToken, not both' });
    }
    if (a.password !== undefined && a.username === undefined) {
      ctx.addIssue({ code: z.ZodIssueCode.custom, path: ['username'], message: 'username is required with password' });
    }
    if (a.username !== undefined && a.password === undefined) {
      ctx.addIssue({ code: z.ZodIssueCode.custom, path: ['password'], message: 'password is required with username' });
    }
  });

const settingsSchema = z
  .object({
    host: z
      .string({ required_error: 'host is required', invalid_type_error: 'host must be a string' })
      .refine(isValidRegistryHost, 'must be a registry host[:port] without scheme or path (e.g. "ghcr.io", "localhost:5000")'),
    transport: z.enum(['https', 'http'], { errorMap: () => ({ message: 'must be "https" or "http"' }) }).optional(),
    skipVerify: z.boolean({ invalid_type_error: 'must be a boolean' }).optional(),
    search: z.boolean({ invalid_type_error: 'must be a boolean' }).optional(),
    auth: authSchema.optional(),
    caFile: nonEmpty('caFile').optional(),
  })
  .strict();

function fieldPath(base: string, p: Array<string | number>): string {
  let out = base;
  for (const k of p) out += typeof k === 'number' ? `[${k}]` : `.${k}`;
  return out;
}

/**
 * Validates `imageRegistries` (as given to the runtime) and returns normalised
 * settings (host lower-cased). Throws ConfigError naming the bad field, e.g.
 * `imageRegistries[1].transport: must be "https" or "http"`.
 */
export function parseRegistries(value: unknown, field = 'imageRegistries'): RegistrySettings[] {
  if (value === undefined || value === null) return [];
  if (!Array.isArray(value)) throw new ConfigError(`${field} must be an array of registry settings`);
  return value.map((entry, i) => {
    const res = settingsSchema.safeParse(entry);
    if (!res.success) {
      const issue = res.error.issues[0]!;
      const where = fieldPath(`${field}[${i}]`, issue.path);
      const msg =
        issue.code === z.ZodIssueCode.unrecognized_keys
          ? `unknown field${issue.keys.length > 1 ? 's' : ''} ${issue.keys.map((k) => JSON.stringify(k)).join(', ')}`
          : issue.code === z.ZodIssueCode.invalid_type && issue.received === 'undefined'
            ? 'is required'
            : issue.message;
      throw new ConfigError(`${where}: ${msg}`);
    }
    const s = res.data;
    if (s.caFile !== undefined && !isInlinePem(s.caFile)) {
      try {
        fs.accessSync(s.caFile, fs.constants.R_OK);
      } catch {
        throw new ConfigError(`${field}[${i}].caFile: cannot read ${s.caFile}`);
      }
    }
    const out: RegistrySettings = { host: s.host.toLowerCase() };
    if (s.transport !== undefined) out.transport = s.transport;
    if (s.skipVerify !== undefined) out.skipVerify = s.skipVerify;
    if (s.search !== undefined) out.search = s.search;
    if (s.auth !== undefined) out.auth = { ...s.auth };
    if (s.caFile !== undefined) out.caFile = s.caFile;
    return out;
  });
}

/**
 * The registries unqualified references are searched in, in order: the hosts of the entries with
 * `search: true` (each once; Docker Hub aliases count as `docker.io`). With none, `docker.io`
 * alone: the reference's default. docker.io is not tried after a non-empty list unless listed.
 */
export function searchRegistries(list: readonly RegistrySettings[]): string[] {
  const out: string[] = [];
  for (const entry of list) {
    if (entry.search !== true) continue;
    const host = isDockerHub(entry.host) ? 'docker.io' : entry.host.toLowerCase();
    if (!out.includes(host)) out.push(host);
  }
  return out.length ? out : ['docker.io'];
}

/** Alias of parseRegistries. */
export const parseRegistrySettings = parseRegistries;

/** True when two registry names mean the same registry (case-insensitive; Docker Hub aliases). */
export function sameRegistry(a: string, b: string): boolean {
  if (isDockerHub(a) || isDockerHub(b)) return isDockerHub(a) && isDockerHub(b);
  return a.toLowerCase() === b.toLowerCase();
}

/**
 * Settings that apply to `registry`: every entry with that host, earlier
 * entries winning field by field (so a bare `--registry host` prepended by the
 * CLI does not hide the auth of a later entry for the same host).
 */
export function findRegistrySettings(list: readonly RegistrySettings[], registry: string): RegistrySettings | undefined {
  const matches = list.filter((s) => sameRegistry(s.host, registry));
  if (matches.length === 0) return undefined;
  const merged: RegistrySettings = { host: matches[0]!.host };
  for (const m of matches) {
    for (const [k, v] of Object.entries(m) as Array<[keyof RegistrySettings, unknown]>) {
      if (v !== undefined && (merged as unknown as Record<string, unknown>)[k] === undefined) {
        (merged as unknown as Record<string, unknown>)[k] = v;
      }
    }
  }
  return merged;
}

export function isInlinePem(s: string): boolean {
  return s.includes('-----BEGIN ');
}

/** The PEM text of `caFile` (a path or inline PEM). */
export function readCa(caFile: string, host: string): string {
  if (isInlinePem(caFile)) return caFile;
  try {
    return fs.readFileSync(caFile, 'utf8');
  } catch (err) {
    throw new ConfigError(`caFile of registry ${host}: cannot read ${caFile}`, { cause: err });
  }
}
