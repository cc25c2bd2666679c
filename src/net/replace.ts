// Streaming multi-key substitution: every occurrence of each key is replaced by its value, also
// when an occurrence straddles chunk boundaries. It holds back (longest key - 1) bytes, the most
// that can be the unfinished start of a key; everything before that is decided and emitted.
// Matching is leftmost first, and at one position the longest key wins, so overlapping keys
// ("ab", "abc") have one defined outcome; replaced text is never scanned again. A key may be
// ASCII case-insensitive (encoded forms whose hex digits a server may write in either case).
import { Transform, type TransformCallback } from 'node:stream';

export type ReplacePair = [from: Buffer | string, to: Buffer | string, opts?: { caseless?: boolean }];

export function createReplacer(pairs: ReplacePair[]): Transform {
  return new Replacer(compile(pairs));
}

/** The same substitution over a whole string or buffer (request lines and headers). */
export function replaceAll(input: string, pairs: ReplacePair[]): string;
export function replaceAll(input: Buffer, pairs: ReplacePair[]): Buffer;
export function replaceAll(input: string | Buffer, pairs: ReplacePair[]): string | Buffer {
  const keys = compile(pairs);
  const buf = typeof input === 'string' ? Buffer.from(input, 'utf8') : input;
  if (!keys.length) return input;
  const out: Buffer[] = [];
  const rest = scan(buf, keys, buf.length, out);
  if (rest < buf.length) out.push(buf.subarray(rest));
  const joined = Buffer.concat(out);
  return typeof input === 'string' ? joined.toString('utf8') : joined;
}

interface Key {
  /** Lower-cased when caseless (then searched for in the lower-cased input). */
  from: Buffer;
  to: Buffer;
  caseless: boolean;
}

/** ASCII lower case (A-Z only): same length, so positions carry over to the original. */
function asciiLower(buf: Buffer): Buffer {
  const out = Buffer.from(buf);
  for (let i = 0; i < out.length; i++) {
    const c = out[i]!;
    if (c >= 0x41 && c <= 0x5a) out[i] = c + 0x20;
  }
  return out;
}

function compile(pairs: ReplacePair[]): Key[] {
  const keys = pairs.map(([f, t, o]) => {
    const caseless = o?.caseless === true;
    const from = Buffer.from(f);
    return { from: caseless ? asciiLower(from) : from, to: Buffer.from(t), caseless };
  });
  if (keys.some((k) => k.from.length === 0)) throw new RangeError('createReplacer: empty key');
  // Longest first: the tie-break at one position.
  return keys.sort((a, b) => b.from.length - a.from.length);
}

/**
 * Emits into `out` the decided part of `buf`: all bytes before `limit`, with every match that
 * starts before `limit` replaced. Returns where the undecided tail begins (≥ limit when a match
 * ran past it). A match starting before limit = len - (longest - 1) always lies inside buf.
 */
function scan(buf: Buffer, keys: Key[], limit: number, out: Buffer[]): number {
  let i = 0;
  const lower = keys.some((k) => k.caseless) ? asciiLower(buf) : buf;
  const hay = (k: Key) => (k.caseless ? lower : buf);
  // Next occurrence of each key at or after i (-1: none); refreshed lazily.
  const next = keys.map((k) => hay(k).indexOf(k.from, 0));
  while (i < limit) {
    let best = -1;
    let bestAt = Infinity;
    for (let k = 0; k < keys.length; k++) {
      if (next[k]! !== -1 && next[k]! < i) next[k] = hay(keys[k]!).indexOf(keys[k]!.from, i);
      const at = next[k]!;
      // Strictly earlier wins; keys are sorted longest first, so equal positions keep the longer.
      if (at !== -1 && at < bestAt && at + keys[k]!.from.length <= buf.length) {
        best = k;
        bestAt = at;
      }
    }
    if (best === -1 || bestAt >= limit) {
      out.push(buf.subarray(i, limit));
      return limit;
    }
    if (bestAt > i) out.push(buf.subarray(i, bestAt));
    out.push(keys[best]!.to);
    i = bestAt + keys[best]!.from.length;
  }
  return i;
}

class Replacer extends Transform {
  private held: Buffer = Buffer.alloc(0);
  private readonly hold: number;

  constructor(private readonly keys: Key[]) {
    super();
    this.hold = keys.length ? keys[0]!.from.length - 1 : 0;
  }

  override _transform(chunk: Buffer | string, _enc: BufferEncoding, cb: TransformCallback): void {
    const data = typeof chunk === 'string' ? Buffer.from(chunk) : chunk;
    if (!this.keys.length) return cb(null, data);
    const buf = this.held.length ? Buffer.concat([this.held, data]) : data;
    const limit = buf.length - this.hold;
    if (limit <= 0) {
      this.held = buf;
      return cb();
    }
    const out: Buffer[] = [];
    const rest = scan(buf, this.keys, limit, out);
    // Copy the tail: it must not pin the (possibly large) chunk it was cut from.
    this.held = Buffer.from(buf.subarray(rest));
    const emitted = Buffer.concat(out);
    cb(null, emitted.length ? emitted : undefined);
  }

  override _flush(cb: TransformCallback): void {
    if (!this.held.length) return cb();
    const out: Buffer[] = [];
    const rest = scan(this.held, this.keys, this.held.length, out);
    if (rest < this.held.length) out.push(this.held.subarray(rest));
    this.held = Buffer.alloc(0);
    cb(null, Buffer.concat(out));
  }
}
