import net from 'node:net';
import { describe, expect, it } from 'vitest';
import { encode, Feature, type Message } from '../../src/protocol/codec.js';
import { execFeatures, HOST_FEATURES, missingFeatures } from '../../src/protocol/features.js';
import { Link, LinkProtocolError } from '../../src/protocol/link.js';

/** A connected socket pair over TCP loopback: `a` is wrapped in a Link, `b` is the raw peer. */
async function pair(): Promise<{ link: Link; peer: net.Socket; done(): void }> {
  const server = net.createServer();
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  const accepted = new Promise<net.Socket>((r) => server.once('connection', r));
  const a = net.createConnection((server.address() as net.AddressInfo).port, '127.0.0.1');
  const peer = await accepted;
  await new Promise((r) => a.once('connect', r));
  return { link: new Link(a), peer, done: () => (peer.destroy(), server.close()) };
}

function closed(link: Link): Promise<Error | undefined> {
  return new Promise((r) => link.onClose(r));
}

describe('Link', () => {
  it('a handler that throws closes the link with LinkProtocolError; later frames of the chunk are dropped', async () => {
    const { link, peer, done } = await pair();
    const seen: Message[] = [];
    link.onMessage((m) => {
      seen.push(m);
      if (m.type === 'PING') throw new SyntaxError('Unexpected token');
    });
    const ended = closed(link);
    peer.write(
      Buffer.concat([
        encode({ type: 'PONG', stream: 0, data: Buffer.alloc(0) }),
        encode({ type: 'PING', stream: 0, data: Buffer.alloc(1) }),
        encode({ type: 'PONG', stream: 0, data: Buffer.alloc(2) }),
      ]),
    );
    const err = await ended;
    expect(err).toBeInstanceOf(LinkProtocolError);
    expect(err?.message).toBe('cannot handle PING on stream 0: Unexpected token');
    expect(seen.map((m) => m.type)).toEqual(['PONG', 'PING']);
    expect(link.isClosed).toBe(true);
    done();
  });

  it('a malformed frame closes the link with the decoder error', async () => {
    const { link, peer, done } = await pair();
    const ended = closed(link);
    const bad = encode({ type: 'PING', stream: 0, data: Buffer.alloc(0) });
    bad.writeUInt8(1, 5); // flags must be 0
    peer.write(bad);
    expect((await ended)?.message).toMatch(/^malformed frame from the peer: bad_header/);
    done();
  });

  it('end() delivers what was queued before closing', async () => {
    const { link, peer, done } = await pair();
    const chunks: Buffer[] = [];
    peer.on('data', (c) => chunks.push(c));
    const peerEnded = new Promise((r) => peer.once('end', r));
    const big = Buffer.alloc(200 * 1024, 1);
    link.send({ type: 'STDOUT', stream: 1, data: big });
    link.send({ type: 'ERROR', stream: 0, message: 'last word' });
    await link.end();
    await peerEnded;
    const all = Buffer.concat(chunks);
    expect(all.length).toBe(12 + big.length + 12 + 4 + 'last word'.length);
    expect(all.subarray(all.length - 9).toString()).toBe('last word');
    done();
  });
});

describe('feature bits', () => {
  it('an EXEC needs EXEC and WINDOW, plus TTY, TOOL, MAIN and TIMEOUT when it uses them', () => {
    expect(execFeatures({ flags: 0, timeoutMs: 0 })).toBe(Feature.EXEC | Feature.WINDOW);
    // Every EXEC feature; the host's HELLO adds TRUST (a stream-0 message, not an EXEC feature).
    expect(execFeatures({ flags: 7, timeoutMs: 5 })).toBe(HOST_FEATURES & ~Feature.TRUST);
    expect(missingFeatures(Feature.TRUST, 0x3f)).toEqual(["TRUST (0x40, the box CA in the container's trust store, for secrets)"]);
    expect(missingFeatures(execFeatures({ flags: 4, timeoutMs: 0 }), 0x1f)).toEqual(["MAIN (0x20, the image's main process as the container init)"]);
    expect(missingFeatures(execFeatures({ flags: 2, timeoutMs: 0 }), 0x0f)).toEqual(['TOOL (0x10, the agent toolbox used by copyIn/copyOut)']);
    expect(missingFeatures(HOST_FEATURES, HOST_FEATURES)).toEqual([]);
    expect(missingFeatures(Feature.TTY | Feature.TIMEOUT, 0)).toEqual(['TTY (0x2, terminals)', 'TIMEOUT (0x8, execution timeouts)']);
  });
});
