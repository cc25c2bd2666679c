// Registry authentication: WWW-Authenticate parsing and the docker token flow
// (https://distribution.github.io/distribution/spec/auth/token/): on a 401
// with `Bearer realm=…,service=…,scope=…` fetch a token from the realm
// (with basic credentials when known; an identity token is exchanged with
// the OAuth2 refresh_token grant), cache it per scope until it expires.

export interface Challenge {
  scheme: string;
  params: Record<string, string>;
}

/**
 * Parses WWW-Authenticate values (RFC 7235): several challenges per header,
 * auth-params as token or quoted-string. Scheme names are lower-cased.
 */
export function parseChallenges(values: string[]): Challenge[] {
  const out: Challenge[] = [];
  for (const value of values) {
    let i = 0;
    const s = value;
    const skipWs = () => {
      while (i < s.length && /[ \t]/.test(s[i]!)) i++;
    };
    const token = () => {
      const m = /^[!#$%&'*+.^_`|~0-9A-Za-z-]+/.exec(s.slice(i));
      if (!m) return '';
      i += m[0].length;
      return m[0];
    };
    let current: Challenge | undefined;
    while (i < s.length) {
      skipWs();
      if (s[i] === ',') {
        i++;
        continue;
      }
      const start = i;
      const word = token();
      if (!word) {
        i++;
        continue;
      }
      skipWs();
      if (s[i] === '=') {
        // auth-param of the current challenge (or token68 padding, ignored)
        i++;
        skipWs();
        let val = '';
        if (s[i] === '"') {
          i++;
          while (i < s.length && s[i] !== '"') {
            if (s[i] === '\\' && i + 1 < s.length) i++;
            val += s[i];
            i++;
          }
          i++; // closing quote
        } else {
          const m = /^[^,\s]*/.exec(s.slice(i))!;
          val = m[0];
          i += m[0].length;
        }
        if (current) current.params[word.toLowerCase()] = val;
        else i = start + word.length; // stray param before any scheme
        continue;
      }
      current = { scheme: word.toLowerCase(), params: {} };
      out.push(current);
    }
  }
  return out;
}

export interface CachedToken {
  token: string;
  expiresAt: number;
}

/** Token cache keyed by realm + service + scope. */
export class TokenCache {
  private readonly tokens = new Map<string, CachedToken>();

  static key(realm: string, service: string | undefined, scope: string): string {
    return `${realm}\u0000${service ?? ''}\u0000${scope}`;
  }

  get(key: string, now = Date.now()): string | undefined {
    const t = this.tokens.get(key);
    if (!t) return undefined;
    if (t.expiresAt <= now) {
      this.tokens.delete(key);
      return undefined;
    }
    return t.token;
  }

  set(key: string, token: string, expiresInSec: number, now = Date.now()): void {
    // A little early, so a token never expires on the way to the registry.
    const life = Math.max(1, expiresInSec) * 1000;
    this.tokens.set(key, { token, expiresAt: now + Math.max(life - 10_000, life / 2) });
  }

  delete(key: string): void {
    this.tokens.delete(key);
  }
}

export function basicAuth(username: string, password: string): string {
  return 'Basic ' + Buffer.from(`${username}:${password}`, 'utf8').toString('base64');
}

/** `repository:<repo>:pull`. */
export function pullScope(repository: string): string {
  return `repository:${repository}:pull`;
}

/** Token from a token-server JSON answer (`token` or `access_token`) and its lifetime. */
export function parseTokenResponse(json: unknown): { token: string; expiresIn: number } | undefined {
  if (!json || typeof json !== 'object') return undefined;
  const o = json as { token?: unknown; access_token?: unknown; expires_in?: unknown };
  const token = typeof o.token === 'string' && o.token ? o.token : typeof o.access_token === 'string' ? o.access_token : '';
  if (!token) return undefined;
  // The spec's default lifetime is 60 s when expires_in is missing.
  const expiresIn = typeof o.expires_in === 'number' && o.expires_in > 0 ? o.expires_in : 60;
  return { token, expiresIn };
}
