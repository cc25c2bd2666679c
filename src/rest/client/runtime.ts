// The runtime `JsBoxlite.rest(new BoxliteRestOptions({url, credential, pathPrefix}))` returns: the
// local runtime's API (create/get/getInfo/listInfo/getOrCreate/remove/metrics/close/shutdown)
// spoken over the reference's REST wire (rest-contract §3; transcript test/fixtures/rest-transcript.json).
import fs from 'node:fs';
import { InternalError, InvalidArgumentError, UnsupportedError, type BoxliteError } from '../../errors/index.js';
import type { BoxInfo } from '../../runtime/box.js';
import type { RuntimeMetrics } from '../../runtime/context.js';
import { type VolumeHandle, type VolumeInfo } from '../../runtime/handles.js';
import type { BoxOptions } from '../../runtime/options.js';
import type { Credential } from '../../sdk/credential.js';
import { RestBox } from './box.js';
import { RestTransport } from './transport.js';
import { checkCapability, createBody, parseBox, parseRuntimeMetrics, REJECT, wantsCapabilities } from './wire.js';

export interface RestRuntimeOptions {
  url: string;
  credential?: Credential | null;
  pathPrefix?: string | null;
}

/** Any object with getToken() is a credential (the reference's native binding only takes its own class). */
function checkCredential(c: unknown): Credential | undefined {
  if (c === undefined || c === null) return undefined;
  if (typeof (c as Credential).getToken !== 'function') {
    throw new InvalidArgumentError('BoxliteRestOptions.credential must have a getToken() method (e.g. an ApiKeyCredential)');
  }
  return c as Credential;
}

export class RestRuntime {
  /** @internal */
  readonly transport: RestTransport;
  /** `runtime.volumes` over `{scope}/volumes` (the reference client's routes and bodies). */
  readonly volumes: VolumeHandle = {
    create: async (name?: string) => parseVolume(await this.transport.json('POST', '/volumes', { json: name === undefined || name === null ? {} : { name } })),
    list: async () => {
      const r = await this.transport.json<{ volumes?: unknown }>('GET', '/volumes');
      if (!Array.isArray(r.volumes)) throw new InternalError('failed to parse response: missing field `volumes`');
      return r.volumes.map(parseVolume);
    },
    get: async (id: string) => parseVolume(await this.transport.json('GET', `/volumes/${encodeURIComponent(id)}`)),
    remove: async (id: string, force?: boolean | null) => {
      await this.transport.call('DELETE', `/volumes/${encodeURIComponent(id)}`, force ? { query: { force: 'true' } } : {});
    },
  };

  constructor(options: RestRuntimeOptions) {
    if (!options || typeof options.url !== 'string' || options.url.length === 0) {
      throw new InvalidArgumentError('JsBoxlite.rest needs BoxliteRestOptions with a url');
    }
    let u: URL;
    try {
      u = new URL(options.url);
    } catch {
      throw new InvalidArgumentError(`JsBoxlite.rest: not a URL: ${options.url}`);
    }
    if (u.protocol !== 'http:' && u.protocol !== 'https:') throw new InvalidArgumentError(`JsBoxlite.rest: the url must be http(s), got ${options.url}`);
    if (options.pathPrefix !== undefined && options.pathPrefix !== null && typeof options.pathPrefix !== 'string') {
      throw new InvalidArgumentError('BoxliteRestOptions.pathPrefix must be a string');
    }
    this.transport = new RestTransport(options.url, checkCredential(options.credential), options.pathPrefix);
  }

  /** `runtime.images` throws over REST, as in the reference. */
  get images(): never {
    throw new UnsupportedError(REJECT.images);
  }

  private handle(raw: unknown): RestBox {
    const info = parseBox(raw);
    return new RestBox(this.transport, info.id, info.name ?? null);
  }

  async create(options: BoxOptions, name?: string | null): Promise<RestBox> {
    const body = createBody(options, name);
    if (wantsCapabilities(body)) checkCapability(await this.transport.serverConfig(true), 'linux_capabilities_enabled', 'Linux capabilities');
    return this.handle(await this.transport.json('POST', '/boxes', { json: body }));
  }

  async getOrCreate(options: BoxOptions, name?: string | null): Promise<{ created: boolean; box: RestBox }> {
    if (name) {
      const existing = await this.get(name);
      if (existing) return { created: false, box: existing };
    }
    return { created: true, box: await this.create(options, name) };
  }

  /** `GET boxes/{x}`; 404 → null. */
  private async fetchBox(idOrName: string): Promise<unknown | null> {
    try {
      return await this.transport.json('GET', `/boxes/${encodeURIComponent(idOrName)}`);
    } catch (err) {
      if ((err as BoxliteError).code === 'NotFound') return null;
      throw err;
    }
  }

  async get(idOrName: string): Promise<RestBox | null> {
    const raw = await this.fetchBox(idOrName);
    return raw === null ? null : this.handle(raw);
  }

  async getInfo(idOrName: string): Promise<BoxInfo | null> {
    const raw = await this.fetchBox(idOrName);
    return raw === null ? null : parseBox(raw);
  }

  /** `GET boxes`, following `next_page_token` (the reference reads only the first page). */
  async listInfo(): Promise<BoxInfo[]> {
    const out: BoxInfo[] = [];
    const seen = new Set<string>();
    let token: string | undefined;
    for (;;) {
      const page = await this.transport.json<{ boxes?: unknown; next_page_token?: unknown }>('GET', '/boxes', token ? { query: { pageToken: token } } : {});
      if (!Array.isArray(page.boxes)) throw new InternalError('failed to parse response: missing field `boxes`');
      out.push(...page.boxes.map(parseBox));
      const next = typeof page.next_page_token === 'string' && page.next_page_token ? page.next_page_token : undefined;
      if (!next || seen.has(next)) return out;
      seen.add(next);
      token = next;
    }
  }

  /** `DELETE boxes/{id}`, with `?force=true` only when forcing. */
  async remove(idOrName: string, force?: boolean | null): Promise<void> {
    await this.transport.call('DELETE', `/boxes/${encodeURIComponent(idOrName)}`, force ? { query: { force: 'true' } } : {});
  }

  /** `GET metrics`; numRunningBoxes as the server reports it. */
  async metrics(): Promise<RuntimeMetrics> {
    return parseRuntimeMetrics(await this.transport.json('GET', '/metrics'));
  }

  /** `POST boxes/import?name=` with the archive as an octet-stream body, behind `import_enabled`. */
  async importBox(archivePath: string, name?: string | null): Promise<RestBox> {
    checkCapability(await this.transport.serverConfig(), 'import_enabled', 'import');
    const body = await fs.promises.readFile(archivePath).catch((err: Error) => {
      throw new InvalidArgumentError(`importBox: ${archivePath}: ${err.message}`);
    });
    return this.handle(await this.transport.json('POST', '/boxes/import', { query: { name: name ?? undefined }, body, contentType: 'application/octet-stream' }));
  }

  /** No-ops, as in the reference: the server owns the boxes. */
  close(): void {}

  async shutdown(_timeout?: number | null): Promise<void> {}
}

/** A `Volume` JSON as the reference's VolumeInfo; a body without id/name/created_at is an Internal error. */
function parseVolume(raw: unknown): VolumeInfo {
  const v = raw as { id?: unknown; name?: unknown; created_at?: unknown; size_bytes?: unknown } | null;
  if (!v || typeof v.id !== 'string' || typeof v.name !== 'string' || typeof v.created_at !== 'string') {
    throw new InternalError('failed to parse response: a volume needs id, name and created_at');
  }
  return { id: v.id, name: v.name, createdAt: v.created_at, ...(typeof v.size_bytes === 'number' ? { sizeBytes: v.size_bytes } : {}) };
}
