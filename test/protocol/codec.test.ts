import { spawn } from 'node:child_process';
import crypto from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import {
  canonical,
  decode,
  encode,
  FrameDecoder,
  MAX_PAYLOAD,
  ProtocolDecodeError,
  type Message,
} from '../../src/protocol/codec.js';

interface Vector {
  name: string;
  hex: string;
  expect: string;
  agent?: boolean;
}

const ROOT = path.resolve(import.meta.dirname, '../..');
const vectors = JSON.parse(fs.readFileSync(path.join(import.meta.dirname, 'vectors.json'), 'utf8')) as Vector[];

function tsDecode(hex: string): string {
  try {
    return canonical(decode(Buffer.from(hex, 'hex')));
  } catch (err) {
    if (err instanceof ProtocolDecodeError) return `error:${err.kind}`;
    throw err;
  }
}

/** Feeds hex lines to guest/build/codec-tool (the C codec) and returns its canonical lines. */
function cDecode(lines: string[]): Promise<string[]> {
  const tool = path.join(ROOT, 'guest', 'build', 'codec-tool');
  return new Promise((resolve, reject) => {
    const child = spawn(tool, [], { stdio: ['pipe', 'pipe', 'inherit'] });
    let out = '';
    child.stdout.on('data', (c) => (out += c));
    child.on('error', reject);
    child.on('close', (code) => {
      if (code !== 0) reject(new Error(`codec-tool exited ${code}`));
      else resolve(out.split('\n').slice(0, lines.length));
    });
    child.stdin.end(lines.join('\n') + '\n');
  });
}

describe('TypeScript codec against the shared vectors', () => {
  for (const v of vectors) {
    it(v.name, () => {
      expect(tsDecode(v.hex)).toBe(v.expect);
      if (!v.expect.startsWith('error:')) {
        expect(encode(decode(Buffer.from(v.hex, 'hex'))).toString('hex')).toBe(v.hex);
      }
    });
  }
});

describe('C codec (guest) against the same vectors', () => {
  it('decodes every vector to the same canonical text', async () => {
    const got = await cDecode(vectors.map((v) => v.hex));
    const expected = vectors.map((v) => (v.agent === false ? 'error:unknown_type' : v.expect));
    expect(got).toEqual(expected);
  });

  it('agrees with the TypeScript codec on random and mutated frames', async () => {
    const rng = (n: number) => crypto.randomInt(n);
    const samples: string[] = [];
    for (let i = 0; i < 400; i++) {
      const base = Buffer.from(vectors[rng(vectors.length)]!.hex, 'hex');
      const mutated = Buffer.from(base);
      for (let k = 0; k < 1 + rng(3); k++) if (mutated.length) mutated[rng(mutated.length)] = rng(256);
      samples.push(i % 4 === 0 ? crypto.randomBytes(rng(40)).toString('hex') : mutated.toString('hex'));
    }
    // The agent does not know the control-link types: it must see them as an unknown type.
    const agentView = (hex: string) => {
      const frame = Buffer.from(hex, 'hex');
      if (frame.length >= 12 && (frame[4] === 0x20 || frame[4] === 0x21)) frame[4] = 0x7f;
      return tsDecode(frame.toString('hex'));
    };
    // Random bytes are not valid UTF-8 in general; the codecs agree on bytes, so compare only ASCII-clean results.
    const got = await cDecode(samples);
    samples.forEach((hex, i) => {
      const ts = agentView(hex);
      if (/[^\x20-\x7e]/.test(ts) || ts.includes('\\xef\\xbf\\xbd')) return;
      expect(got[i], `frame ${hex}`).toBe(ts);
    });
  });
});

describe('stream decoding', () => {
  it('reassembles frames split at every byte boundary', () => {
    const msgs: Message[] = [
      { type: 'HELLO', stream: 0, major: 1, minor: 0, features: 15, version: '0.1.0' },
      { type: 'STDOUT', stream: 3, data: crypto.randomBytes(1000) },
      { type: 'EXIT', stream: 3, code: 0, signal: 0, reason: 0, message: '' },
    ];
    const wire = Buffer.concat(msgs.map(encode));
    for (const step of [1, 2, 7, 13, 100]) {
      const dec = new FrameDecoder();
      const out: Message[] = [];
      for (let i = 0; i < wire.length; i += step) out.push(...dec.push(wire.subarray(i, i + step)));
      expect(out.map(canonical)).toEqual(msgs.map(canonical));
    }
  });

  it('rejects an oversized frame from its header alone, before buffering the payload', () => {
    const dec = new FrameDecoder();
    const header = Buffer.alloc(12);
    header.writeUInt32BE(MAX_PAYLOAD + 1, 0);
    header.writeUInt8(0x13, 4);
    header.writeUInt32BE(1, 8);
    expect(() => dec.push(header)).toThrow(/too_large/);
  });

  it('refuses to encode a payload over the cap', () => {
    expect(() => encode({ type: 'STDIN', stream: 1, data: Buffer.alloc(MAX_PAYLOAD + 1) })).toThrow(/too_large/);
  });
});
