import type { Socket } from 'node:net';
import { encode, FrameDecoder, ProtocolDecodeError, type Message } from './codec.js';

/**
 * A framed, message-oriented view of a stream socket (agent link or control
 * link). A protocol violation from the peer closes the link: we never guess.
 */
export class Link {
  private readonly decoder = new FrameDecoder();
  private messageHandler: (m: Message) => void = () => {};
  private closeHandlers: Array<(err?: Error) => void> = [];
  private closed = false;

  constructor(readonly socket: Socket) {
    socket.on('data', (chunk: Buffer) => {
      let messages: Message[];
      try {
        messages = this.decoder.push(chunk);
      } catch (err) {
        const e = err instanceof ProtocolDecodeError ? err : new Error(String(err));
        this.close(e);
        return;
      }
      for (const m of messages) this.messageHandler(m);
    });
    socket.on('error', (err) => this.close(err));
    socket.on('close', () => this.close());
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

  close(err?: Error): void {
    if (this.closed) return;
    this.closed = true;
    this.socket.destroy();
    const handlers = this.closeHandlers;
    this.closeHandlers = [];
    for (const h of handlers) h(err);
  }
}
