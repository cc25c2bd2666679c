// Agent handshake (docs/protocol.md §4): the agent's HELLO is the first frame on the agent
// link; the shim checks the major version, answers with its own HELLO, and hands over the
// frames that came in the same chunk. Bounded by the caller's timeout.
import { PortalError } from '../errors/index.js';
import { PROTOCOL_MAJOR, PROTOCOL_MINOR, type Message } from '../protocol/codec.js';
import { HOST_FEATURES, HOST_VERSION } from '../protocol/features.js';
import type { Link } from '../protocol/link.js';

export type Hello = Extract<Message, { type: 'HELLO' }>;

export interface Handshake {
  hello: Hello;
  /** Frames that arrived right behind HELLO, in order; the router takes them first. */
  early: Message[];
}

export function agentHandshake(link: Link): Promise<Handshake> {
  return new Promise<Handshake>((resolve, reject) => {
    let hello: Hello | undefined;
    const early: Message[] = [];
    link.onMessage((m) => {
      if (hello) {
        early.push(m);
        return;
      }
      if (m.type !== 'HELLO') {
        reject(new PortalError(`agent sent ${m.type} before HELLO`));
        link.close();
        return;
      }
      if (m.major !== PROTOCOL_MAJOR) {
        reject(new PortalError(`agent speaks protocol ${m.major}.${m.minor}, host needs ${PROTOCOL_MAJOR}.x`));
        link.close();
        return;
      }
      hello = m;
      link.send({ type: 'HELLO', stream: 0, major: PROTOCOL_MAJOR, minor: PROTOCOL_MINOR, features: HOST_FEATURES, version: HOST_VERSION });
      // Resolve after this chunk's frames are collected: Link delivers a chunk synchronously.
      queueMicrotask(() => resolve({ hello: m, early }));
    });
    link.onClose((err) => {
      if (!hello) reject(new PortalError(`agent link closed before HELLO${err ? `: ${err.message}` : ''}`));
    });
  });
}
