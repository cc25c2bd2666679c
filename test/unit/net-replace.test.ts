// The streaming replacer against a plain whole-buffer oracle: every split position, overlapping
// keys, keys longer than chunks, and a long stream with back-pressure.
import { Readable, Writable, pipeline } from 'node:stream';
import { describe, expect, it } from 'vitest';
import { createReplacer, replaceAll, type ReplacePair } from '../../dist/net/replace.js';

/** Reference semantics: leftmost match, longest key at a position, no rescanning of output. */
function oracle(input: string, pairs: Array<[string, string]>): string {
  const keys = [...pairs].sort((a, b) => b[0].length - a[0].length);
  let out = '';
  for (let i = 0; i < input.length; ) {
    const k = keys.find(([f]) => input.startsWith(f, i));
    if (k) {
      out += k[1];
      i += k[0].length;
    } else out += input[i++];
  }
  return out;
}

async function run(chunks: Buffer[], pairs: ReplacePair[]): Promise<Buffer> {
  const out: Buffer[] = [];
  await new Promise<void>((resolve, reject) =>
    pipeline(Readable.from(chunks), createReplacer(pairs), new Writable({ write(c, _e, cb) { out.push(c); cb(); } }), (e) => (e ? reject(e) : resolve())),
  );
  return Buffer.concat(out);
}

describe('createReplacer', () => {
  const PH = '<BOXLITE_SECRET:KEY>';
  const input = `a${PH}b${PH}${PH}c<BOXLITE_SECRET:KE<BOXLITE_SECRET:KEY>>${PH}`;
  const pairs: Array<[string, string]> = [[PH, 'sk-123']];

  it('replaces at every split position (two chunks)', async () => {
    const want = oracle(input, pairs);
    expect(want).toBe('ask-123bsk-123sk-123c<BOXLITE_SECRET:KEsk-123>sk-123');
    for (let i = 0; i <= input.length; i++) {
      const got = await run([Buffer.from(input.slice(0, i)), Buffer.from(input.slice(i))], pairs);
      expect(got.toString(), `split at ${i}`).toBe(want);
    }
  });

  it('replaces with every pair of split positions (three chunks) and one byte at a time', async () => {
    const want = oracle(input, pairs);
    for (let i = 0; i <= input.length; i += 3) {
      for (let j = i; j <= input.length; j += 2) {
        const got = await run([input.slice(0, i), input.slice(i, j), input.slice(j)].map((s) => Buffer.from(s)), pairs);
        expect(got.toString(), `splits ${i},${j}`).toBe(want);
      }
    }
    expect((await run([...input].map((c) => Buffer.from(c)), pairs)).toString()).toBe(want);
  });

  it('overlapping and nested keys: leftmost first, longest at a position', async () => {
    const p: Array<[string, string]> = [['ab', '1'], ['abc', '2'], ['bcd', '3'], ['c', '4']];
    for (const s of ['abcd', 'abcabcd', 'aabbccdd', 'bcdabc', 'cccc', 'ab', 'a', '']) {
      const want = oracle(s, p);
      for (let i = 0; i <= s.length; i++) {
        expect((await run([Buffer.from(s.slice(0, i)), Buffer.from(s.slice(i))], p)).toString(), `${s} @${i}`).toBe(want);
      }
      expect(replaceAll(s, p)).toBe(want);
    }
    expect(oracle('abcd', p)).toBe('2d');
  });

  it('replacement output is not rescanned (value containing the key)', async () => {
    expect((await run([Buffer.from('xKEYx')], [['KEY', 'KEYKEY']])).toString()).toBe('xKEYKEYx');
    expect(replaceAll('KEY', [['KEY', 'K'], ['K', 'Z']])).toBe('K');
  });

  it('random inputs over a small alphabet match the oracle', async () => {
    let seed = 7;
    const rnd = (n: number) => ((seed = (seed * 1103515245 + 12345) & 0x7fffffff) % n);
    const p: Array<[string, string]> = [['aba', 'X'], ['ab', 'YY'], ['bb', ''], ['abab', 'Z']];
    for (let t = 0; t < 300; t++) {
      const s = Array.from({ length: rnd(40) }, () => 'ab'[rnd(2)]).join('');
      const chunks: Buffer[] = [];
      for (let i = 0; i < s.length; ) {
        const n = 1 + rnd(5);
        chunks.push(Buffer.from(s.slice(i, i + n)));
        i += n;
      }
      expect((await run(chunks, p)).toString(), s).toBe(oracle(s, p));
    }
  });

  it('streams 64 MiB in 64 KiB chunks with bounded holding and the right count', async () => {
    const key = 'PLACEHOLDER_0123456789';
    const val = 'v';
    const chunk = Buffer.alloc(65536, 0x2e);
    // A key straddling every chunk boundary.
    chunk.write(key.slice(0, 10), 65536 - 10);
    const chunkStart = Buffer.from(key.slice(10));
    let produced = 0;
    const total = 1024;
    const src = new Readable({
      read() {
        if (produced === total) return void this.push(null);
        const c = Buffer.from(chunk);
        if (produced > 0) chunkStart.copy(c, 0);
        produced++;
        this.push(c);
      },
    });
    let bytes = 0;
    let vs = 0;
    let maxHeld = 0;
    const r = createReplacer([[key, val]]);
    await new Promise<void>((resolve, reject) =>
      pipeline(
        src,
        r,
        new Writable({
          write(c: Buffer, _e, cb) {
            bytes += c.length;
            for (const b of c) if (b === 0x76) vs++;
            maxHeld = Math.max(maxHeld, (r as unknown as { held: Buffer }).held.length);
            cb();
          },
        }),
        (e) => (e ? reject(e) : resolve()),
      ),
    );
    expect(vs).toBe(total - 1);
    expect(bytes).toBe(total * 65536 - (total - 1) * (key.length - 1));
    expect(maxHeld).toBeLessThanOrEqual(key.length - 1);
  }, 60_000);

  it('binary values and no keys', async () => {
    expect((await run([Buffer.from([1, 2, 3, 4])], [[Buffer.from([2, 3]), Buffer.from([0xff, 0, 0xff])]])).equals(Buffer.from([1, 0xff, 0, 0xff, 4]))).toBe(true);
    expect((await run([Buffer.from('same')], [])).toString()).toBe('same');
    expect(() => createReplacer([['', 'x']])).toThrow(/empty key/);
  });

  it('caseless keys match in any ASCII case, at every split position; others stay exact', async () => {
    const pairs: ReplacePair[] = [['%3Ckey%3E', '<K>', { caseless: true }], ['Exact', 'E']];
    const input = 'a %3ckey%3E b %3CKEY%3e c exact Exact %3Ckey%3';
    const want = 'a <K> b <K> c exact E %3Ckey%3';
    expect(replaceAll(input, pairs)).toBe(want);
    const buf = Buffer.from(input);
    for (let cut = 0; cut <= buf.length; cut++) {
      expect((await run([buf.subarray(0, cut), buf.subarray(cut)], pairs)).toString(), `cut ${cut}`).toBe(want);
    }
  });
});
