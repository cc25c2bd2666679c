// Credentials for the REST client (`JsBoxlite.rest`, issue 10). Real already: a program can build
// them, read BOXLITE_API_KEY and hand them around; only the REST runtime that uses them is missing.
import { InvalidArgumentError } from '../errors/index.js';

/** A bearer token plus its expiry: `expiresAt` in epoch seconds, `null` when it never expires. */
export interface AccessToken {
  token: string;
  expiresAt?: number | null;
}

/** Anything that can produce a bearer token for `JsBoxlite.rest()` (structural, as in the reference). */
export interface Credential {
  getToken(): AccessToken;
}

/** A long-lived opaque API key. */
export class ApiKeyCredential implements Credential {
  readonly #key: string;

  constructor(key: string) {
    if (typeof key !== 'string') throw new InvalidArgumentError('ApiKeyCredential needs the API key as a string');
    this.#key = key;
  }

  /** From `BOXLITE_API_KEY`; null when it is unset or empty. */
  static fromEnv(): ApiKeyCredential | null {
    const key = process.env.BOXLITE_API_KEY;
    return key ? new ApiKeyCredential(key) : null;
  }

  /** API keys never expire. */
  getToken(): AccessToken {
    return { token: this.#key, expiresAt: null };
  }
}
