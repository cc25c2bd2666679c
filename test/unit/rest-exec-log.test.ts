// The REST server's per-execution output log: UTF-8-safe cutting, bounded memory with back-pressure
// (never dropping), acknowledgement-based release and replay.
import { describe, expect, it } from 'vitest';
import { FRAME_OVERHEAD, MAX_FRAME_BYTES, OutputLog, pump, utf8Prefix } from '../../src/rest/server/output-log.js';
import { DEFAULT_TUNING, parseDuration, tuningFromEnv } from '../../src/rest/server/executions.js';

describe('utf8Prefix', () => {
  it('holds back only an incomplete trailing sequence', () => {
    const e = Buffer.from('aé€😀', 'utf8'); // 1 + 2 + 3 + 4 bytes
    expect(utf8Prefix(e)).toBe(e.length);
    expect(utf8Prefix(e.subarray(0, e.length - 1))).toBe(6); // 😀 cut: wait for it
    expect(utf8Prefix(e.subarray(0, e.length - 3))).toBe(6);
    expect(utf8Prefix(e.subarray(0, 5))).toBe(3); // € cut after 2 of 3 bytes
    expect(utf8Prefix(e.subarray(0, 2))).toBe(1); // é cut
    expect(utf8Prefix(Buffer.from([0xff, 0xfe]))).toBe(2); // not UTF-8: never held
    expect(utf8Prefix(Buffer.from([0x80, 0x80, 0x80, 0x80]))).toBe(4);
    expect(utf8Prefix(Buffer.alloc(0))).toBe(0);
  });
});

function source(chunks: Buffer[]) {
  let reads = 0;
  return {
    get reads() {
      return reads;
    },
    async nextBuffer() {
      reads++;
      return chunks.shift() ?? null;
    },
  };
}

describe('OutputLog + pump', () => {
  it('never splits a character across frames, whatever the chunking', async () => {
    const text = 'héllo wörld € 😀 '.repeat(5000);
    const bytes = Buffer.from(text, 'utf8');
    const chunks: Buffer[] = [];
    for (let i = 0; i < bytes.length; i += 7) chunks.push(bytes.subarray(i, i + 7));
    const log = new OutputLog(10 * 1024 * 1024);
    await pump(log, 1, source(chunks));
    const frames = log.from(0);
    for (const f of frames) {
      expect(f.data.length).toBeLessThanOrEqual(MAX_FRAME_BYTES);
      expect(Buffer.from(f.data.toString('utf8'), 'utf8').equals(f.data)).toBe(true); // each frame decodes cleanly alone
    }
    expect(Buffer.concat(frames.map((f) => f.data)).toString('utf8')).toBe(text);
  });

  it('splits a big chunk into frames on character boundaries', () => {
    const log = new OutputLog(1 << 30);
    const big = Buffer.from('€'.repeat(MAX_FRAME_BYTES), 'utf8');
    log.push(2, big);
    const frames = log.from(0);
    expect(frames.length).toBeGreaterThan(1);
    for (const f of frames) expect(f.data.toString('utf8')).toMatch(/^€+$/);
    expect(Buffer.concat(frames.map((f) => f.data)).equals(big)).toBe(true);
  });

  it('stops reading at the bound (back-pressure) and resumes on ack, dropping nothing', async () => {
    const log = new OutputLog(200);
    const chunks = Array.from({ length: 10 }, (_, i) => Buffer.alloc(40, 97 + i));
    const src = source(chunks);
    const done = pump(log, 1, src);
    await new Promise((r) => setTimeout(r, 20));
    expect(log.bytes).toBe(2 * (40 + FRAME_OVERHEAD)); // 2 chunks: the second one crossed the bound, then it waits
    expect(src.reads).toBe(2);
    const seen: Buffer[] = [];
    let finished = false;
    void done.then(() => (finished = true));
    for (;;) {
      const fr = log.from(log.firstUnacked);
      if (!fr.length) {
        if (finished) break;
        await new Promise((r) => setTimeout(r, 1));
        continue;
      }
      for (const f of fr) seen.push(f.data);
      log.ack(fr[fr.length - 1]!.seq);
      expect(log.bytes).toBe(0);
    }
    await done;
    expect(Buffer.concat(seen).equals(Buffer.concat(Array.from({ length: 10 }, (_, i) => Buffer.alloc(40, 97 + i))))).toBe(true);
  });

  it('replays every unacknowledged frame from the first one', () => {
    const log = new OutputLog(1 << 20);
    for (let i = 0; i < 5; i++) log.push(1, Buffer.from(`f${i}`));
    log.ack(1);
    expect(log.firstUnacked).toBe(2);
    expect(log.from(log.firstUnacked).map((f) => f.data.toString())).toEqual(['f2', 'f3', 'f4']);
    expect(log.from(4).map((f) => f.data.toString())).toEqual(['f4']);
    expect(log.nextSeq).toBe(5);
  });
});

describe('reaper knobs', () => {
  it('reads the reference env durations (Ns, Nm, Nh, plain seconds)', () => {
    expect(parseDuration('30s')).toBe(30_000);
    expect(parseDuration('5m')).toBe(300_000);
    expect(parseDuration('24h')).toBe(86_400_000);
    expect(parseDuration('12')).toBe(12_000);
    expect(parseDuration('soon')).toBeUndefined();
    const t = tuningFromEnv({ BOXLITE_RECONNECT_GRACE: '1m', BOXLITE_SHUTDOWN_GRACE: '5', BOXLITE_MAX_SESSION_LIFETIME: 'bogus' });
    expect(t).toMatchObject({ reconnectGraceMs: 60_000, shutdownGraceMs: 5000, maxLifetimeMs: DEFAULT_TUNING.maxLifetimeMs });
  });
});
