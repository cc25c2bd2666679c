// Bearer auth for the REST server: `Authorization: Bearer <key>` (scheme case-insensitive), the key
// compared in constant time (both sides hashed first, so neither length nor content leaks through
// timing). Tokens are never taken from query strings.
import { createHash, timingSafeEqual } from 'node:crypto';

const digest = (s: string) => createHash('sha256').update(s, 'utf8').digest();

/** True when `header` carries exactly `apiKey` as a bearer token. */
export function checkBearer(header: string | undefined, apiKey: string): boolean {
  if (typeof header !== 'string') return false;
  const m = /^bearer[ \t]+(\S+)[ \t]*$/i.exec(header);
  if (!m) return false;
  return timingSafeEqual(digest(m[1]!), digest(apiKey));
}

/** The key as logs may show it: never more than its length. */
export function redactKey(key: string | undefined): string {
  return key ? `<${key.length} chars, redacted>` : '<none>';
}
