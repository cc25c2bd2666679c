// Image references, normalised exactly as docker does (distribution/reference
// ParseNormalizedNamed + TagNameOnly):
//
//   reference  := name [ ":" tag ] [ "@" digest ]
//   name       := [domain "/"] path-component ["/" path-component]*
//   domain     := host [":" port]           host: DNS-ish name, IPv4, or [IPv6]
//
// The first "/"-separated component is a registry host only when it contains
// "." or ":", is "localhost", or has upper-case letters; otherwise the name is
// on Docker Hub (`docker.io`), where one-component names live under
// `library/`. `index.docker.io` is an alias of `docker.io`. Without tag and
// digest the tag is `latest`. A reference may carry both a tag and a digest;
// the digest is what gets fetched.

import { ImageError, type BoxliteError } from '../errors/index.js';

export const DEFAULT_REGISTRY = 'docker.io';
/** Where Docker Hub's registry API actually lives. */
export const DOCKER_HUB_API_HOST = 'registry-1.docker.io';
export const DEFAULT_TAG = 'latest';
const LEGACY_DEFAULT_REGISTRY = 'index.docker.io';
const OFFICIAL_PREFIX = 'library/';

/** Longest repository path (without the registry), as in distribution/reference. */
export const MAX_REPOSITORY_LENGTH = 255;
/** Inputs longer than this are refused before any pattern matching. */
const MAX_INPUT_LENGTH = 1024;

export interface ImageReference {
  /** Registry name as it appears in canonical references: `docker.io`, `ghcr.io`, `localhost:5000`. */
  registry: string;
  /** Repository path inside the registry: `library/alpine`, `acme/api`. */
  repository: string;
  /** Tag; `latest` when the input had neither tag nor digest. */
  tag?: string;
  /** `sha256:<hex>` (or sha512) when the input pinned one; it wins over the tag for fetching. */
  digest?: string;
  /** `registry/repository`. */
  name: string;
  /** Fully qualified form: `docker.io/library/alpine:latest`, `host/repo:tag@sha256:…`. */
  canonical: string;
}

// ---------- grammar (same productions as distribution/reference) ----------

const alphanumeric = '[a-z0-9]+';
const separator = '(?:[._]|__|[-]+)';
const pathComponent = `${alphanumeric}(?:${separator}${alphanumeric})*`;
const remoteName = `${pathComponent}(?:/${pathComponent})*`;
const domainNameComponent = '(?:[a-zA-Z0-9]|[a-zA-Z0-9][a-zA-Z0-9-]*[a-zA-Z0-9])';
const domainName = `${domainNameComponent}(?:\\.${domainNameComponent})*`;
const ipv6address = '\\[(?:[a-fA-F0-9:]+)\\]';
const host = `(?:${domainName}|${ipv6address})`;
const domainAndPort = `${host}(?::[0-9]+)?`;
const tagPat = '[\\w][\\w.-]{0,127}';
const digestPat = '[A-Za-z][A-Za-z0-9]*(?:[-_+.][A-Za-z][A-Za-z0-9]*)*[:][0-9a-fA-F]{32,}';

const referenceRe = new RegExp(`^((?:${domainAndPort}/)?${remoteName})(?::(${tagPat}))?(?:@(${digestPat}))?$`);
const anchoredNameRe = new RegExp(`^(?:(${domainAndPort})/)?(${remoteName})$`);
const identifierRe = /^[a-f0-9]{64}$/;
const domainAndPortRe = new RegExp(`^${domainAndPort}$`);

const DIGEST_HEX: Record<string, number> = { sha256: 64, sha512: 128 };

function invalid(input: string, reason: string): BoxliteError {
  return new ImageError(`invalid reference format: ${reason}: ${JSON.stringify(input)}`);
}

/**
 * Docker's split of a familiar name into registry and remainder (which may
 * still carry `:tag` / `@digest`).
 */
function splitDockerDomain(name: string): [string, string] {
  const slash = name.indexOf('/');
  if (slash < 0) return [DEFAULT_REGISTRY, OFFICIAL_PREFIX + name];
  const first = name.slice(0, slash);
  const rest = name.slice(slash + 1);
  let domain: string;
  let remainder: string;
  if (first === 'localhost' || /[.:]/.test(first) || first.toLowerCase() !== first) {
    domain = first === LEGACY_DEFAULT_REGISTRY ? DEFAULT_REGISTRY : first;
    remainder = rest;
  } else {
    domain = DEFAULT_REGISTRY;
    remainder = name;
  }
  if (domain === DEFAULT_REGISTRY && !remainder.includes('/')) remainder = OFFICIAL_PREFIX + remainder;
  return [domain, remainder];
}

/**
 * Parses and normalises an image reference (`alpine` → docker.io/library/alpine:latest).
 * Throws ImageError("invalid reference format: …") for anything docker would refuse.
 */
export function parseReference(input: string): ImageReference {
  if (typeof input !== 'string' || input === '') {
    throw new ImageError('invalid reference format: repository name must have at least one component');
  }
  if (input.length > MAX_INPUT_LENGTH) throw invalid(input.slice(0, 64) + '…', `longer than ${MAX_INPUT_LENGTH} characters`);
  if (identifierRe.test(input)) {
    throw invalid(input, 'cannot specify 64-byte hexadecimal strings as a repository name');
  }

  const [domain, remainder] = splitDockerDomain(input);
  const tagSep = remainder.indexOf(':');
  const remote = tagSep >= 0 ? remainder.slice(0, tagSep) : remainder;
  if (remote.toLowerCase() !== remote) throw invalid(input, `repository name (${remote}) must be lowercase`);

  const full = `${domain}/${remainder}`;
  const m = referenceRe.exec(full);
  if (!m) {
    const lower = full.toLowerCase();
    if (lower !== full && referenceRe.test(lower)) throw invalid(input, 'repository name must be lowercase');
    throw invalid(input, 'not a valid image reference');
  }
  const nameMatch = anchoredNameRe.exec(m[1]!);
  if (!nameMatch || nameMatch[1] === undefined) throw invalid(input, 'not a valid image reference');
  const registry = nameMatch[1];
  const repository = nameMatch[2]!;
  if (repository.length > MAX_REPOSITORY_LENGTH) {
    throw invalid(input, `repository name must not be more than ${MAX_REPOSITORY_LENGTH} characters`);
  }

  let digest: string | undefined;
  if (m[3] !== undefined) {
    const [alg, hex] = m[3].split(':') as [string, string];
    const want = DIGEST_HEX[alg];
    if (want === undefined) throw invalid(input, `unsupported digest algorithm "${alg}"`);
    if (hex.length !== want) throw invalid(input, `invalid ${alg} digest length (${hex.length}, want ${want})`);
    if (!/^[a-f0-9]+$/.test(hex)) throw invalid(input, 'digest must be lowercase hexadecimal');
    digest = m[3];
  }
  let tag = m[2];
  if (tag === undefined && digest === undefined) tag = DEFAULT_TAG;

  const name = `${registry}/${repository}`;
  const canonical = name + (tag !== undefined ? `:${tag}` : '') + (digest !== undefined ? `@${digest}` : '');
  return { registry, repository, ...(tag !== undefined ? { tag } : {}), ...(digest !== undefined ? { digest } : {}), name, canonical };
}

/**
 * True when the reference names its registry: the first "/"-separated
 * component looks like a host (contains "." or ":", is `localhost`, or has
 * upper-case letters, as docker decides). `alpine`, `library/alpine`,
 * `acme/api:1` are unqualified; `docker.io/alpine`, `localhost/x`,
 * `host:5000/x` are qualified.
 */
export function isQualified(input: string): boolean {
  const slash = input.indexOf('/');
  if (slash < 0) return false;
  const first = input.slice(0, slash);
  return first === 'localhost' || /[.:]/.test(first) || first.toLowerCase() !== first;
}

/** The same reference on another registry (`withRegistry(alpine, 'ghcr.io', 'library/alpine')`). */
export function withRegistry(ref: ImageReference, registry: string, repository: string = ref.repository): ImageReference {
  const name = `${registry}/${repository}`;
  const canonical =
    name + (ref.tag !== undefined ? `:${ref.tag}` : '') + (ref.digest !== undefined ? `@${ref.digest}` : '');
  return { ...ref, registry, repository, name, canonical };
}

/** True for a valid `host[:port]` (no scheme, no path). */
export function isValidRegistryHost(h: string): boolean {
  return h.length <= 255 && domainAndPortRe.test(h);
}

/** Host the HTTP API is reached at: docker.io (and its aliases) → registry-1.docker.io. */
export function registryApiHost(registry: string): string {
  return isDockerHub(registry) ? DOCKER_HUB_API_HOST : registry;
}

/** docker.io, index.docker.io and registry-1.docker.io all mean Docker Hub. */
export function isDockerHub(registry: string): boolean {
  const r = registry.toLowerCase();
  return r === DEFAULT_REGISTRY || r === LEGACY_DEFAULT_REGISTRY || r === DOCKER_HUB_API_HOST;
}

/** The tag, or digest, as the registry's manifest endpoint wants it (digest wins). */
export function manifestReference(ref: ImageReference): string {
  return ref.digest ?? ref.tag ?? DEFAULT_TAG;
}
