import type { Socket } from 'node:net';
import { encode, FrameDecoder, ProtocolDecodeError, type Message } from './codec.js';

/** Why a link closed itself: the peer broke the protocol (or a handler could not take its frame). */
export class LinkProtocolError extends Error {
  constructor(message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.name = 'LinkProtocolError';
  }
}

/**
 * A framed, message-oriented view of a stream socket (agent link or control
 * link). A protocol violation from the peer closes the link: we never guess.
 * Nothing a peer sends can throw out of the socket's event handlers (that would
 * crash the process that owns the link): a decode error or a handler that throws
 * on a frame closes this link with a LinkProtocolError instead.
 */
export class Link {
  private readonly decoder = new FrameDecoder();
  private messageHandler: (m: Message) => void = () => {};
  private closeHandlers: Array<(err?: Error) => void> = [];
  private closed = false;

  constructor(readonly socket: Socket) {
    socket.on('data', (chunk: Buffer) => this.receive(chunk));
    socket.on('error', (err) => this.close(err));
    socket.on('close', () => this.close());
  }

  private receive(chunk: Buffer): void {
    if (this.closed) return;
    let messages: Message[];
    try {
      messages = this.decoder.push(chunk);
    } catch (err) {
      const detail = err instanceof ProtocolDecodeError ? err.message : String(err);
      this.close(new LinkProtocolError(`malformed frame from the peer: ${detail}`, { cause: err }));
      return;
    }
    for (const m of messages) {
      // A handler may have closed the link (a violation): later frames of the chunk are void.
      if (this.closed) return;
      try {
        this.messageHandler(m);
      } catch (err) {
        this.close(new LinkProtocolError(`cannot handle ${m.type} on stream ${m.stream}: ${(err as Error)?.message ?? String(err)}`, { cause: err }));
        return;
      }
    }
  }

  onMessage(handler: (m: Message) => void): void {
    this.messageHandler = handler;
  }

  onClose(handler: (err?: Error) => void): void {
    if (this.closed) handler();
    else this.closeHandlers.push(handler);
  }

  get isClosed(): boolean {
    return this.closed;
  }

  /** Returns false when the socket buffer is full (caller may wait for drain). */
  send(m: Message): boolean {
    if (this.closed) return false;
    return this.socket.write(encode(m));
  }

  /**
   * Closes after what was sent reaches the peer (a last ERROR behind queued output must
   * not be discarded), bounded by `graceMs` for a peer that does not read.
   * Resolves once the socket is gone.
   */
  end(graceMs = 1_000): Promise<void> {
    const gone = new Promise<void>((resolve) => {
      if (this.socket.destroyed) return resolve();
      const timer = setTimeout(() => this.socket.destroy(), graceMs);
      this.socket.once('close', () => {
        clearTimeout(timer);
        resolve();
      });
    });
    if (!this.closed) {
      this.socket.end();
      this.close(undefined, false);
    }
    return gone;
  }

  close(err?: Error, destroy = true): void {
    if (this.closed) return;
    this.closed = true;
    if (destroy) this.socket.destroy();
    const handlers = this.closeHandlers;
    this.closeHandlers = [];
    for (const h of handlers) {
      try {
        h(err);
      } catch {
        // One failing close handler must not keep the others from running.
      }
    }
  }
}
