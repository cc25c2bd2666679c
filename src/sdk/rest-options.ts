import type { Credential } from './credential.js';

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
}
