import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { z } from 'zod';
import { ConfigError, UnsupportedError } from '../errors/index.js';
import { normalizeCapabilities } from './capabilities.js';
import { parseAllowNet } from '../net/policy.js';

export const DEFAULT_CPUS = 1;
export const DEFAULT_MEMORY_MIB = 512;
export const MIN_MEMORY_MIB = 128;
export const MAX_MEMORY_MIB = 65536;

/** The image a box gets when it names neither `image` nor `rootfsPath` (the reference's default). */
export const DEFAULT_IMAGE = 'alpine:latest';

/** `JsBoxOptions` of @boxlite-ai/boxlite 0.10: every field, validated by normalizeBoxOptions. */
export interface BoxOptions {
  image?: string;
  rootfsPath?: string;
  cpus?: number;
  memoryMib?: number;
  diskSizeGb?: number;
  workingDir?: string;
  env?: Array<{ key: string; value: string }>;
  volumes?: Array<VolumeSpec | ManagedVolumeSpec>;
  network?: NetworkSpec;
  ports?: PortSpec[];
  /**
   * @deprecated Use autoDelete. Remove the box when it stops; an explicit autoDelete wins.
   */
  autoRemove?: boolean;
  detach?: boolean;
  /** Idle seconds (no execution, no attached client) before the box's shim stops it; 0 disables. */
  autoStop?: number;
  /** Removal after stop; 0 keeps the box. Any n > 0 removes it when it stops, as the reference's local runtime does. */
  autoDelete?: number;
  /** Whether access resumes an auto-stopped box (reported by info()). */
  autoResume?: boolean;
  entrypoint?: string[];
  cmd?: string[];
  user?: string;
  advanced?: AdvancedBoxOptions;
  security?: SecurityOptions;
  healthCheck?: HealthCheckOptions;
  secrets?: Secret[];
}

/** `JsManagedVolumeSpec`: a volume of `runtime.volumes`, by id or name (src/runtime/volumes.ts). */
export interface ManagedVolumeSpec {
  managedVolume: string;
  guestPath: string;
  /** The reference refuses `true`; here a read-only mount works as for a host path. */
  readOnly?: boolean;
}

/** `JsNetworkSpec` / `NetworkSpec` of the reference. */
export interface NetworkSpec {
  outbound?: OutboundNetworkSpec;
  inbound?: InboundNetworkSpec;
  /** @deprecated Use `outbound.mode`. */
  mode?: 'enabled' | 'disabled';
  /** @deprecated Use `outbound.allowNet`. */
  allowNet?: string[];
}

export interface OutboundNetworkSpec {
  mode: 'enabled' | 'disabled';
  allowNet?: string[];
}

export interface InboundNetworkSpec {
  mode: 'enabled' | 'disabled';
  allowNet?: string[];
}

/** `Secret` / `JsSecret` of the reference: substituted into outbound HTTPS on the host. */
export interface Secret {
  name: string;
  value: string;
  hosts?: string[];
  placeholder?: string;
}

/** A secret as the box's records keep it: everything but the value. */
export interface NormalizedSecret {
  name: string;
  /** Host patterns (exact or `*.wildcard`, canonical) whose HTTPS carries the substitution. */
  hosts: string[];
  /** What the guest sees instead of the value (`BOXLITE_SECRET_<name>` holds it). */
  placeholder: string;
}

/** The placeholder a secret gets when it names none. */
export function defaultPlaceholder(name: string): string {
  return `<BOXLITE_SECRET:${name}>`;
}

export const MAX_SECRETS = 64;
/** Values travel in HTTP headers; beyond this they are not an API key. */
export const MAX_SECRET_VALUE_BYTES = 16 * 1024;
/** Every occurrence of a placeholder in requests to the hosts is replaced: a short one would hit ordinary text. */
export const MIN_PLACEHOLDER_LENGTH = 8;

/**
 * Values and placeholders are substituted into HTTP header values both ways (placeholder → value
 * in requests, value → placeholder in responses): anything but printable ASCII could split a
 * header (CR/LF), be refused by node:http mid-response (non-latin1 → ERR_INVALID_CHAR) or change
 * bytes on the way (UTF-8 vs latin1), so only 0x20-0x7e is accepted. Never quotes the text.
 */
export function checkSecretText(text: string, field: string): void {
  if (!/^[\x20-\x7e]*$/.test(text)) {
    throw new ConfigError(`${field} must be printable ASCII (0x20-0x7e): it is substituted into HTTP headers`);
  }
}

/**
 * Validates `secrets` and returns them WITH their values (for the box's network stack and the
 * 0600 secrets file only; the normalized options keep them without). Every problem is a
 * ConfigError naming the field, raised before anything starts; no message carries a value.
 */
export function normalizeSecrets(raw: unknown, network: 'enabled' | 'disabled' = 'enabled'): Array<NormalizedSecret & { value: string }> {
  if (raw === undefined || raw === null) return [];
  if (!Array.isArray(raw)) throw new ConfigError('secrets must be an array of { name, value, hosts, placeholder? }');
  if (raw.length > MAX_SECRETS) throw new ConfigError(`secrets must have at most ${MAX_SECRETS} entries, got ${raw.length}`);
  if (raw.length && network === 'disabled') {
    throw new ConfigError('secrets cannot be used when the network is disabled: they are substituted into outbound HTTPS');
  }
  const out: Array<NormalizedSecret & { value: string }> = [];
  for (const [i, s] of raw.entries()) {
    const f = `secrets[${i}]`;
    if (!s || typeof s !== 'object' || Array.isArray(s)) throw new ConfigError(`${f} must be an object { name, value, hosts, placeholder? }`);
    const { name, value, hosts, placeholder } = s as Record<string, unknown>;
    const extra = Object.keys(s).filter((k) => !['name', 'value', 'hosts', 'placeholder'].includes(k));
    if (extra.length) throw new ConfigError(`${f} has no field${extra.length > 1 ? 's' : ''} ${extra.map((k) => JSON.stringify(k)).join(', ')}`);
    if (typeof name !== 'string' || name.length === 0) throw new ConfigError(`${f}.name is required (a non-empty string)`);
    if (!/^[A-Za-z_][A-Za-z0-9_]{0,127}$/.test(name)) {
      throw new ConfigError(`${f}.name must be letters, digits and '_' not starting with a digit (it names the variable BOXLITE_SECRET_<name>), got ${JSON.stringify(name)}`);
    }
    const first = out.findIndex((o) => o.name === name);
    if (first >= 0) throw new ConfigError(`${f}.name ${JSON.stringify(name)} is already used by secrets[${first}]`);
    // The value is never quoted back: error messages reach logs and terminals.
    if (typeof value !== 'string' || value.length === 0) throw new ConfigError(`${f}.value is required (a non-empty string)`);
    checkSecretText(value, `${f}.value`);
    if (Buffer.byteLength(value) > MAX_SECRET_VALUE_BYTES) throw new ConfigError(`${f}.value must be at most ${MAX_SECRET_VALUE_BYTES} bytes`);
    if (hosts === undefined || (Array.isArray(hosts) && hosts.length === 0)) {
      throw new ConfigError(`${f}.hosts must list at least one host: the HTTPS hosts the value may be sent to (e.g. ["api.openai.com"])`);
    }
    const patterns = parseAllowNet(hosts, `${f}.hosts`);
    for (const [j, h] of patterns.entries()) {
      if (/^[\d.]+(\/\d+)?$/.test(h)) {
        throw new ConfigError(`${f}.hosts[${j}] must be a host name or *.wildcard (TLS names the server; an IP or CIDR never matches), got ${JSON.stringify(h)}`);
      }
    }
    let ph = defaultPlaceholder(name);
    if (placeholder !== undefined) {
      if (typeof placeholder !== 'string') throw new ConfigError(`${f}.placeholder must be a string`);
      if (placeholder.length < MIN_PLACEHOLDER_LENGTH) {
        throw new ConfigError(`${f}.placeholder must be at least ${MIN_PLACEHOLDER_LENGTH} characters (every occurrence in requests to its hosts is replaced), got ${JSON.stringify(placeholder)}`);
      }
      checkSecretText(placeholder, `${f}.placeholder`);
      ph = placeholder;
    }
    if (ph === value) throw new ConfigError(`${f}.placeholder must differ from the value`);
    out.push({ name, value, hosts: patterns, placeholder: ph });
  }
  // A placeholder inside another would make what is substituted depend on which one matched first.
  for (const [i, a] of out.entries()) {
    for (const [j, b] of out.entries()) {
      if (i === j) continue;
      if (a.placeholder === b.placeholder) throw new ConfigError(`secrets[${Math.max(i, j)}].placeholder is the same as secrets[${Math.min(i, j)}].placeholder`);
      if (b.placeholder.includes(a.placeholder)) {
        throw new ConfigError(`secrets[${i}].placeholder is a substring of secrets[${j}].placeholder; each placeholder must not contain another`);
      }
    }
  }
  return out;
}

/** `SecurityOptions` / `JsSecurityOptions` of the reference. */
export interface SecurityOptions {
  jailerEnabled?: boolean;
  seccompEnabled?: boolean;
  maxOpenFiles?: number;
  maxFileSize?: number;
  maxProcesses?: number;
  maxMemory?: number;
  maxCpuTime?: number;
  /** macOS only in the reference; accepted and without effect on Linux, as there. */
  networkEnabled?: boolean;
  closeFds?: boolean;
}

/** `JsHealthCheckOptions` of the reference (seconds). */
export interface HealthCheckOptions {
  interval: number;
  timeout: number;
  retries: number;
  startPeriod: number;
}

/** `ContainerCapabilities` of the reference: changes to the docker-like capability baseline. */
export interface ContainerCapabilities {
  add?: string[];
  drop?: string[];
}

export interface AdvancedBoxOptions {
  capabilities?: ContainerCapabilities;
}

/** `JsHostPathVolumeSpec` of @boxlite-ai/boxlite 0.10: a host directory shared into the box. */
export interface VolumeSpec {
  hostPath: string;
  /** Absolute path in the box; created when missing. */
  guestPath: string;
  readOnly?: boolean;
}

/** A volume after validation: hostPath is absolute and resolved (symlinks followed). */
export interface NormalizedVolume {
  hostPath: string;
  guestPath: string;
  readOnly: boolean;
  /** A managed volume's id (hostPath is then its `volumes/<id>/data`); absent for a host path. */
  managedVolume?: string;
}

/** Resolves a managed volume (id or name) to its id and data directory; NotFound when there is none. */
export type ManagedVolumeResolver = (idOrName: string) => { id: string; hostPath: string };

/** The guest agent mounts at most this many volumes (guest/src/boot.h BOOT_MAX_VOLUMES). */
export const MAX_VOLUMES = 16;

/** `JsPortSpec` of @boxlite-ai/boxlite 0.10: publish a guest port on the host. */
export interface PortSpec {
  /** Host port; 0 or absent: the OS picks a free one (see info().network.publishedPorts). */
  hostPort?: number;
  guestPort: number;
  /** "tcp" (default) or "udp"; typed as string like the reference's, checked when the box is created. */
  protocol?: string;
  /** Host address to bind (IPv4); default 127.0.0.1. */
  hostIp?: string;
}

/** A port spec after validation: hostPort 0 = picked when the box boots. */
export interface NormalizedPort {
  hostPort: number;
  guestPort: number;
  protocol: 'tcp' | 'udp';
  hostIp: string;
}

/** Options after validation, with defaults applied. Persisted in the box's config.json. */
export interface NormalizedBoxOptions {
  image?: string;
  rootfsPath?: string;
  cpus: number;
  memoryMib: number;
  diskSizeGb?: number;
  workingDir?: string;
  env: Array<[string, string]>;
  network: 'enabled' | 'disabled';
  /**
   * Outbound allowlist in canonical form (src/net/policy.ts): exact names, `*.wildcards`, IPv4,
   * CIDRs; [] = everything allowed. Configs written before the allowlist existed lack it: [].
   */
  allowNet: string[];
  /**
   * The secrets WITHOUT their values (config.json, the database, info() and inspect show these);
   * the values live only in boxes/<id>/secrets.json (0600, src/runtime/secrets.ts). Absent: none.
   */
  secrets?: NormalizedSecret[];
  /** Absent in configs written before volumes existed: read as []. */
  volumes?: NormalizedVolume[];
  /** Absent in configs written before port forwarding existed: read as []. */
  ports?: NormalizedPort[];
  autoRemove: boolean;
  detach: boolean;
  /** Seconds after stop before deletion (0: kept); absent in older configs. */
  autoDelete?: number;
  /** Idle seconds before the shim stops the box (0 or absent: never). */
  autoStop?: number;
  /** The shim's health check of the guest agent (seconds); absent: none (healthStatus None). */
  healthCheck?: HealthCheckOptions;
  /** Absent in older configs: read as false. */
  autoResume?: boolean;
  entrypoint?: string[];
  cmd?: string[];
  user?: string;
  /** `advanced.capabilities` in canonical form (src/runtime/capabilities.ts); absent: docker's baseline. */
  capabilities?: { add: string[]; drop: string[] };
  /** The `security` rlimits, applied by the agent to every execution; absent: none. */
  limits?: ResourceLimits;
  /** `security.seccompEnabled`: the VM process runs under the VMM's syscall filter. */
  seccomp?: boolean;
  /** `security.jailerEnabled`: the VM process runs in the jailer (src/vmm/jail.ts). */
  jail?: boolean;
}

/** The rlimits of `security` (RLIMIT_NOFILE, _FSIZE, _NPROC, _AS, _CPU), soft = hard. */
export type ResourceLimits = Partial<Record<(typeof RESOURCE_LIMIT_FIELDS)[number], number>>;
/** The guest kernel's fs.nr_open (its default): the highest RLIMIT_NOFILE it accepts. */
export const GUEST_NR_OPEN = 1048576;
export const RESOURCE_LIMIT_FIELDS = ['maxOpenFiles', 'maxFileSize', 'maxProcesses', 'maxMemory', 'maxCpuTime'] as const;

const envName = z
  .string()
  .min(1, 'must be a non-empty name')
  .refine((k) => !k.includes('=') && !k.includes('\0'), "must not contain '=' or NUL");

const mode = z.enum(['enabled', 'disabled']);

const u64 = z.number().int('must be an integer').min(0, 'must be >= 0').max(Number.MAX_SAFE_INTEGER, 'exceeds Number.MAX_SAFE_INTEGER');

const portSpec = z
  .object({
    hostPort: z
      .number()
      .int('must be an integer')
      .min(0, 'must be between 0 and 65535 (0: any free port)')
      .max(65535, 'must be between 0 and 65535 (0: any free port)')
      .optional(),
    guestPort: z
      .number({ required_error: 'is required' })
      .int('must be an integer')
      .min(1, 'must be between 1 and 65535')
      .max(65535, 'must be between 1 and 65535'),
    protocol: z.enum(['tcp', 'udp'], { errorMap: () => ({ message: 'must be "tcp" or "udp"' }) }).optional(),
    hostIp: z
      .string()
      .refine(
        (ip) => /^(\d{1,3})\.(\d{1,3})\.(\d{1,3})\.(\d{1,3})$/.test(ip) && ip.split('.').every((b) => Number(b) <= 255),
        'must be an IPv4 address',
      )
      .optional(),
  })
  .strict();

function schema(hostCpus: number) {
  return z
    .object({
      image: z.string().min(1).optional(),
      rootfsPath: z.string().min(1).optional(),
      cpus: z
        .number()
        .int('must be an integer')
        .min(1, `must be between 1 and ${hostCpus} (host CPUs)`)
        .max(hostCpus, `must be between 1 and ${hostCpus} (host CPUs)`)
        .optional(),
      memoryMib: z
        .number()
        .int('must be an integer')
        .min(MIN_MEMORY_MIB, `must be between ${MIN_MEMORY_MIB} and ${MAX_MEMORY_MIB} MiB`)
        .max(MAX_MEMORY_MIB, `must be between ${MIN_MEMORY_MIB} and ${MAX_MEMORY_MIB} MiB`)
        .optional(),
      diskSizeGb: z.number().int().min(1).max(2048).optional(),
      workingDir: z.string().startsWith('/', 'must be an absolute path').optional(),
      env: z.array(z.object({ key: envName, value: z.string().refine((v) => !v.includes('\0'), 'must not contain NUL') })).optional(),
      volumes: z.array(z.record(z.unknown())).max(MAX_VOLUMES, `must have at most ${MAX_VOLUMES} entries`).optional(),
      ports: z.array(portSpec).optional(),
      // Checked by normalizeSecrets: its messages name the field but never quote a value.
      secrets: z.array(z.unknown()).optional(),
      network: z
        .object({
          mode: mode.optional(),
          allowNet: z.array(z.string()).optional(),
          outbound: z.object({ mode, allowNet: z.array(z.string()).optional() }).strict().optional(),
          inbound: z.object({ mode, allowNet: z.array(z.string()).optional() }).strict().optional(),
        })
        .strict()
        .refine((n) => !(n.outbound && (n.mode || n.allowNet)), 'cannot mix outbound with the deprecated mode/allowNet')
        .optional(),
      autoStop: z.number().int('must be an integer').min(0, 'must be >= 0 seconds (0 disables)').optional(),
      autoDelete: z.number().int('must be an integer').min(0, 'must be >= 0 seconds (0 disables)').optional(),
      autoResume: z.boolean().optional(),
      healthCheck: z
        .object({
          interval: z.number().gt(0, 'must be > 0 seconds'),
          timeout: z.number().gt(0, 'must be > 0 seconds'),
          retries: z.number().int('must be an integer').min(0, 'must be >= 0'),
          startPeriod: z.number().min(0, 'must be >= 0 seconds'),
        })
        .strict()
        .optional(),
      security: z
        .object({
          jailerEnabled: z.boolean().optional(),
          seccompEnabled: z.boolean().optional(),
          maxOpenFiles: u64.optional(),
          maxFileSize: u64.optional(),
          maxProcesses: u64.optional(),
          maxMemory: u64.optional(),
          maxCpuTime: u64.optional(),
          networkEnabled: z.boolean().optional(),
          closeFds: z.boolean().optional(),
        })
        .strict()
        .optional(),
      advanced: z
        .object({
          capabilities: z
            .object({ add: z.array(z.string()).optional(), drop: z.array(z.string()).optional() })
            .strict()
            .optional(),
        })
        .strict()
        .optional(),
      autoRemove: z.boolean().optional(),
      detach: z.boolean().optional(),
      entrypoint: z.array(z.string()).optional(),
      cmd: z.array(z.string()).optional(),
      user: z.string().regex(/^[A-Za-z0-9_.-]*(:[A-Za-z0-9_.-]+)?$/, 'must be "uid", "uid:gid" or "name[:group]"').optional(),
    })
    .strict();
}

/** Validates box options; every problem is a ConfigError naming the field, raised before anything starts. */
export function normalizeBoxOptions(
  options: BoxOptions | undefined | null,
  hostCpus = os.cpus().length,
  /** How managed volumes resolve (the runtime's volume store); absent: they are Unsupported here. */
  managed?: ManagedVolumeResolver,
): NormalizedBoxOptions {
  const parsed = schema(hostCpus).safeParse(options ?? {});
  if (!parsed.success) {
    const issue = parsed.error.issues[0]!;
    const field = issue.path.length ? issue.path.join('.').replace(/\.(\d+)/g, '[$1]') : 'options';
    const got = valueAt(options, issue.path);
    if (issue.code === z.ZodIssueCode.unrecognized_keys) {
      throw new ConfigError(`${field} has no field${issue.keys.length > 1 ? 's' : ''} ${issue.keys.map((k) => JSON.stringify(k)).join(', ')}`);
    }
    const gotText = got === undefined || typeof got === 'object' ? '' : `, got ${JSON.stringify(got)}`;
    throw new ConfigError(`${field} ${issue.message}${gotText}`);
  }
  const o = parsed.data;
  rejectUnimplemented(o);
  if (o.detach && autoRemoves(o)) {
    const which = o.autoDelete ? `autoDelete: ${o.autoDelete}` : 'autoRemove: true';
    throw new ConfigError(`detach: true cannot be combined with auto-remove (${which}); a detached box outlives its creator, so set ${o.autoDelete ? 'autoDelete: 0' : 'autoRemove: false'}`);
  }
  if (o.rootfsPath && !fs.existsSync(o.rootfsPath)) {
    throw new ConfigError(`rootfsPath does not exist: ${o.rootfsPath}`);
  }
  const capabilities = normalizeCapabilities(o.advanced?.capabilities);
  const limits: ResourceLimits = {};
  for (const k of RESOURCE_LIMIT_FIELDS) if (o.security?.[k] !== undefined) limits[k] = o.security[k];
  // Above the guest kernel's fs.nr_open setrlimit fails, and with it every execution.
  if ((limits.maxOpenFiles ?? 0) > GUEST_NR_OPEN) {
    throw new ConfigError(`security.maxOpenFiles must be at most ${GUEST_NR_OPEN} (the guest kernel's fs.nr_open), got ${limits.maxOpenFiles}`);
  }
  const volumes = normalizeVolumes(o.volumes ?? [], managed);
  const network = o.network?.outbound?.mode ?? o.network?.mode ?? 'enabled';
  const ports: NormalizedPort[] = (o.ports ?? []).map((p) => ({
    hostPort: p.hostPort ?? 0,
    guestPort: p.guestPort,
    protocol: p.protocol ?? 'tcp',
    hostIp: p.hostIp ?? '127.0.0.1',
  }));
  if (ports.length && network === 'disabled') {
    throw new ConfigError('ports cannot be published when the network is disabled');
  }
  const allowNet = normalizeAllowNet(o.network, network);
  const secrets = normalizeSecrets(o.secrets, network).map(({ name, hosts, placeholder }) => ({ name, hosts, placeholder }));
  const seen = new Map<string, number>();
  for (const [i, p] of ports.entries()) {
    if (p.hostPort === 0) continue;
    const key = `${p.protocol}/${p.hostPort}`;
    const first = seen.get(key);
    if (first !== undefined) {
      throw new ConfigError(`ports[${i}].hostPort ${p.hostPort}/${p.protocol} is already used by ports[${first}]`);
    }
    seen.set(key, i);
  }
  return {
    image: o.rootfsPath ? undefined : (o.image ?? DEFAULT_IMAGE),
    rootfsPath: o.rootfsPath,
    cpus: o.cpus ?? DEFAULT_CPUS,
    memoryMib: o.memoryMib ?? DEFAULT_MEMORY_MIB,
    diskSizeGb: o.diskSizeGb,
    workingDir: o.workingDir,
    env: (o.env ?? []).map((e) => [e.key, e.value]),
    network,
    allowNet,
    ...(secrets.length ? { secrets } : {}),
    volumes,
    ports,
    autoRemove: autoRemoves(o),
    detach: o.detach ?? false,
    autoDelete: o.autoDelete ?? 0,
    autoResume: o.autoResume ?? false,
    ...(o.autoStop ? { autoStop: o.autoStop } : {}),
    ...(o.healthCheck ? { healthCheck: { ...o.healthCheck } } : {}),
    entrypoint: o.entrypoint,
    cmd: o.cmd,
    user: o.user,
    ...(capabilities ? { capabilities } : {}),
    ...(Object.keys(limits).length ? { limits } : {}),
    ...(o.security?.seccompEnabled ? { seccomp: true } : {}),
    ...(o.security?.jailerEnabled ? { jail: true } : {}),
  };
}

/**
 * The reference's precedence: an explicit autoDelete wins over the deprecated autoRemove. Its
 * local runtime has no sweeper and removes a box with autoDelete > 0 as soon as it stops; so
 * does this one (the delay is kept and reported by info()).
 */
function autoRemoves(o: { autoRemove?: boolean; autoDelete?: number }): boolean {
  return o.autoDelete !== undefined ? o.autoDelete > 0 : (o.autoRemove ?? false);
}

/**
 * Options whose feature a later version delivers: refused with a coded Unsupported error
 * instead of being accepted and silently ignored. Default values (0, false, []) are accepted.
 */
function rejectUnimplemented(o: Omit<BoxOptions, 'volumes' | 'secrets'> & { volumes?: unknown[] }): void {
  const notYet = (what: string, hint?: string) => new UnsupportedError(`${what} not implemented yet${hint ? `; ${hint}` : ''}`);
  const net = o.network;
  if (net?.inbound?.mode === 'enabled') throw notYet('network.inbound.mode "enabled" (publicly reachable box)');
  const sec = o.security;
  if (sec) {
    if (sec.closeFds === false) throw notYet('security.closeFds: false');
  }
}

/**
 * The outbound allowlist from the legacy `network.allowNet` or `network.outbound.allowNet` (the
 * schema refuses both at once). Inbound filtering has no meaning for a box that is never
 * publicly reachable: a non-empty `network.inbound.allowNet` is a ConfigError, not ignored.
 */
function normalizeAllowNet(net: NetworkSpec | undefined, network: 'enabled' | 'disabled'): string[] {
  if (net?.inbound?.allowNet?.length) {
    throw new ConfigError('network.inbound.allowNet is not supported: boxes are never publicly reachable (inbound is always "disabled"); publish ports instead');
  }
  const field = net?.outbound ? 'network.outbound.allowNet' : 'network.allowNet';
  const raw = net?.outbound ? net.outbound.allowNet : net?.allowNet;
  const allowNet = parseAllowNet(raw, field);
  if (allowNet.length && network === 'disabled') {
    throw new ConfigError(`${field} cannot be used when the network is disabled (${net?.outbound ? 'network.outbound.mode' : 'network.mode'} is "disabled")`);
  }
  return allowNet;
}

function normalizeVolumes(specs: Array<Record<string, unknown>>, managed?: ManagedVolumeResolver): NormalizedVolume[] {
  const out: NormalizedVolume[] = [];
  for (const [i, v] of specs.entries()) {
    const bad = (what: string) => new ConfigError(`volumes[${i}].${what}`);
    const { guestPath, readOnly } = v;
    let { hostPath } = v;
    let managedId: string | undefined;
    if ('managedVolume' in v) {
      if ('hostPath' in v) throw bad('must name either managedVolume or hostPath, not both');
      const extra = Object.keys(v).filter((k) => !['managedVolume', 'guestPath', 'readOnly'].includes(k));
      if (extra.length) throw bad(`has no field ${JSON.stringify(extra[0])}`);
      if (typeof v.managedVolume !== 'string' || v.managedVolume.length === 0) throw bad('managedVolume must be a volume id or name');
      if (!managed) throw new UnsupportedError(`volumes[${i}].managedVolume: this runtime has no managed volumes`);
      const resolved = managed(v.managedVolume);
      managedId = resolved.id;
      hostPath = resolved.hostPath;
    }
    if (typeof hostPath !== 'string' || hostPath.length === 0) throw bad('hostPath is required (a host directory)');
    if (hostPath.includes('\0')) throw bad('hostPath must not contain NUL');
    let st: fs.Stats;
    let real: string;
    try {
      real = fs.realpathSync(path.resolve(hostPath));
      st = fs.statSync(real);
    } catch {
      throw bad(`hostPath does not exist: ${hostPath}`);
    }
    if (!st.isDirectory()) throw bad(`hostPath must be a directory: ${hostPath}`);
    if (typeof guestPath !== 'string' || !guestPath.startsWith('/')) {
      throw bad(`guestPath must be an absolute path${typeof guestPath === 'string' ? `, got ${JSON.stringify(guestPath)}` : ''}`);
    }
    if (guestPath.includes('\0')) throw bad('guestPath must not contain NUL');
    const g = path.posix.normalize(guestPath).replace(/\/+$/, '');
    if (g === '') throw bad('guestPath must not be /');
    if (Buffer.byteLength(g) > 255) throw bad('guestPath must be at most 255 bytes');
    if (readOnly !== undefined && typeof readOnly !== 'boolean') throw bad('readOnly must be a boolean');
    const first = out.findIndex((o) => o.guestPath === g);
    if (first >= 0) throw bad(`guestPath ${g} is already used by volumes[${first}]`);
    out.push({ hostPath: real, guestPath: g, readOnly: readOnly ?? false, ...(managedId ? { managedVolume: managedId } : {}) });
  }
  return out;
}

function valueAt(root: unknown, p: Array<string | number>): unknown {
  let v: unknown = root;
  for (const k of p) {
    if (v === null || typeof v !== 'object') return undefined;
    v = (v as Record<string | number, unknown>)[k];
  }
  return v;
}

export interface ExecOptions {
  env?: Array<[string, string]> | null;
  tty?: boolean | null;
  user?: string | null;
  timeoutSecs?: number | null;
  workingDir?: string | null;
}

export function validateExec(command: string, args: unknown, opts: ExecOptions): void {
  if (typeof command !== 'string' || command.length === 0) throw new ConfigError('command must be a non-empty string');
  if (args != null && (!Array.isArray(args) || args.some((a) => typeof a !== 'string'))) {
    throw new ConfigError('args must be an array of strings');
  }
  for (const [i, pair] of (opts.env ?? []).entries()) {
    if (!Array.isArray(pair) || pair.length !== 2 || !envName.safeParse(pair[0]).success || typeof pair[1] !== 'string') {
      throw new ConfigError(`env[${i}] must be a [key, value] pair with a non-empty key without '='`);
    }
  }
  if (opts.timeoutSecs != null && !(opts.timeoutSecs > 0 && opts.timeoutSecs <= 4_294_967)) {
    throw new ConfigError(`timeoutSecs must be a positive number of seconds, got ${opts.timeoutSecs}`);
  }
  if (opts.workingDir != null && !opts.workingDir.startsWith('/')) {
    throw new ConfigError(`workingDir must be an absolute path, got ${JSON.stringify(opts.workingDir)}`);
  }
}
