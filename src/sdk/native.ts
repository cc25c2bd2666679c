// The reference loads a native N-API module and hands it out through getNativeModule() and
// getJsBoxlite(). Ours is TypeScript all the way down, so the "native module" is a plain object
// with the same members, backed by the same classes the package exports.
import { JsBoxlite } from '../runtime/runtime.js';
import { JsBoxTunnel } from './network.js';
import { ApiKeyCredential, type Credential } from './credential.js';

/** The reference's positional twin of BoxliteRestOptions (`new JsBoxliteRestOptions(url, credential, prefix)`). */
export class JsBoxliteRestOptions {
  constructor(
    readonly url: string,
    readonly credential: Credential | null = null,
    readonly pathPrefix: string | null = null,
  ) {}
}

/** The tunnel class of the module: what `box.network.tunnel(port)` returns (./network.ts). */
export { JsBoxTunnel };

export interface NativeModule {
  JsBoxlite: typeof JsBoxlite;
  JsBoxTunnel: typeof JsBoxTunnel;
  ApiKeyCredential: typeof ApiKeyCredential;
  JsBoxliteRestOptions: typeof JsBoxliteRestOptions;
  [key: string]: unknown;
}

const nativeModule: NativeModule = Object.freeze({ JsBoxlite, JsBoxTunnel, ApiKeyCredential, JsBoxliteRestOptions });

/** The module-like object the reference calls its native module. */
export function getNativeModule(): NativeModule {
  return nativeModule;
}

/** The runtime class (`JsBoxlite`). */
export function getJsBoxlite(): typeof JsBoxlite {
  return JsBoxlite;
}
