// Where secret values live and what the guest sees of them.
//
// The box record (config.json, db/boxes.db, info(), inspect) keeps secrets without their values
// (NormalizedSecret). The values are written once, at create(), to boxes/<id>/secrets.json,
// mode 0600 in the 0700 box directory, and read back at every boot to go to the shim in its
// ShimConfig on stdin, and from there to the network worker's memory. They are never on argv,
// in an environment variable, in a log line or in the VM. Removing the box removes the file.
import fs from 'node:fs';
import path from 'node:path';
import { ConfigError } from '../errors/index.js';
import type { SecretSpec } from '../net/types.js';
import { storageError } from '../util/fs.js';
import { checkSecretText, type NormalizedSecret } from './options.js';

export const SECRETS_FILE = 'secrets.json';

/**
 * The merged trust bundle the agent binds into the container when the box has secrets (the
 * image's certificates + the box CA; guest/src/container.c make_trust), and where the usual CA
 * variables point, for clients that read those before the system store.
 */
export const GUEST_CA_BUNDLE = '/etc/ssl/certs/ca-certificates.crt';
export const CA_ENV_VARS = ['SSL_CERT_FILE', 'REQUESTS_CA_BUNDLE', 'CURL_CA_BUNDLE', 'NODE_EXTRA_CA_CERTS'] as const;

/** Writes the values for the box's later boots (0600, atomically: never a partial file). */
export function writeSecretValues(boxDir: string, secrets: SecretSpec[]): void {
  if (!secrets.length) return;
  const file = path.join(boxDir, SECRETS_FILE);
  const tmp = path.join(boxDir, `.${SECRETS_FILE}.${process.pid}.tmp`);
  try {
    // mode applies at creation; wx: never reuse (and so never widen) a file someone else made.
    fs.writeFileSync(tmp, JSON.stringify({ version: 1, secrets }), { mode: 0o600, flag: 'wx' });
    fs.renameSync(tmp, file);
  } catch (err) {
    fs.rmSync(tmp, { force: true });
    throw storageError(err, `cannot write the secret values of the box (${file})`);
  }
}

/** The box's secrets with their values, for its network stack; [] when it has none. */
export function readSecretValues(boxDir: string, boxId: string, declared: NormalizedSecret[] | undefined): SecretSpec[] {
  if (!declared?.length) return [];
  const file = path.join(boxDir, SECRETS_FILE);
  let parsed: unknown;
  try {
    parsed = JSON.parse(fs.readFileSync(file, 'utf8'));
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') {
      throw new ConfigError(`box ${boxId} has secrets but their values are gone (${file} is missing); create the box again`);
    }
    throw storageError(err, `cannot read the secret values of box ${boxId} (${file})`);
  }
  const stored = (parsed as { secrets?: unknown })?.secrets;
  const list = Array.isArray(stored) ? (stored as Array<Partial<SecretSpec>>) : [];
  return declared.map((d, i) => {
    const s = list.find((x) => x && x.name === d.name);
    if (typeof s?.value !== 'string' || !s.value) {
      throw new ConfigError(`box ${boxId}: the value of secret ${JSON.stringify(d.name)} is missing from ${file}; create the box again`);
    }
    // Held to create()'s rule: the interceptor relies on it (header-safe both ways).
    checkSecretText(s.value, `secrets[${i}].value`);
    checkSecretText(d.placeholder, `secrets[${i}].placeholder`);
    return { name: d.name, value: s.value, hosts: [...d.hosts], placeholder: d.placeholder };
  });
}

/**
 * What every execution and the main process of a box with secrets get, host-side:
 * BOXLITE_SECRET_<name> = the placeholder, and the CA variables pointing at the merged bundle.
 * Merged between the box env and the exec's own env, so an exec can still override them.
 */
export function secretEnvironment(secrets: NormalizedSecret[] | undefined): Array<[string, string]> {
  if (!secrets?.length) return [];
  return [
    ...secrets.map((s): [string, string] => [`BOXLITE_SECRET_${s.name}`, s.placeholder]),
    ...CA_ENV_VARS.map((k): [string, string] => [k, GUEST_CA_BUNDLE]),
  ];
}
