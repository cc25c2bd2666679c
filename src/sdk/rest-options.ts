import { ApiKeyCredential, type Credential } from './credential.js';

/** Configuration for a remote BoxLite REST server: the one options bag of `JsBoxlite.rest(...)`. */
export class BoxliteRestOptions {
  /** REST API base URL (e.g. `https://api.example.com`). */
  readonly url: string;
  /** Bearer credential; omitted for an unauthenticated server. */
  readonly credential?: Credential;
  /** Value of the `{prefix}` URL segment the server assigns; empty or omitted skips the segment. */
  readonly pathPrefix?: string;

  constructor(options: { url: string; credential?: Credential; pathPrefix?: string }) {
    this.url = options.url;
    this.credential = options.credential;
    this.pathPrefix = options.pathPrefix;
  }

  /**
   * From `BOXLITE_REST_URL` (null when unset or empty), `BOXLITE_API_KEY` and
   * `BOXLITE_REST_PATH_PREFIX`: the reference's Rust `BoxliteRestOptions::from_env()`.
   */
  static fromEnv(env: NodeJS.ProcessEnv = process.env): BoxliteRestOptions | null {
    const url = env.BOXLITE_REST_URL;
    if (!url) return null;
    const key = env.BOXLITE_API_KEY;
    return new BoxliteRestOptions({
      url,
      ...(key ? { credential: new ApiKeyCredential(key) } : {}),
      ...(env.BOXLITE_REST_PATH_PREFIX ? { pathPrefix: env.BOXLITE_REST_PATH_PREFIX } : {}),
    });
  }
}
