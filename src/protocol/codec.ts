// Host side of the wire format in docs/protocol.md. Pure: no I/O, no timers.
// Hand-written because the format is 14 fixed messages with a 12-byte header;
// a schema library would add more code than it removes.

export const PROTOCOL_MAJOR = 1;
export const PROTOCOL_MINOR = 0;
export const HEADER_SIZE = 12;
export const MAX_PAYLOAD = 256 * 1024;
export const MAX_LIST = 4096;
export const STDIN_WINDOW = 256 * 1024;
export const OUTPUT_WINDOW = 1024 * 1024;

export const Feature = {
  EXEC: 0x1,
  TTY: 0x2,
  WINDOW: 0x4,
  TIMEOUT: 0x8,
  TOOL: 0x10,
  /** EXEC flag MAIN: the image's main process as the container's PID 1. */
  MAIN: 0x20,
  /** TRUST: a CA certificate the agent adds to the container's trust store (secrets). */
  TRUST: 0x40,
  /** RESUME: a template boot (boxlite.template), restorable for fast start; only such a boot advertises it. */
  RESUME: 0x80,
} as const;

export const MsgType = {
  HELLO: 0x01,
  PING: 0x02,
  PONG: 0x03,
  SHUTDOWN: 0x04,
  ERROR: 0x05,
  /** Stream 0, host to agent: PEM CA certificates for the container's trust store. */
  TRUST: 0x06,
  /** Stream 0, host to agent: a restored template's boot words (docs/fast-start.md). */
  RESUME: 0x07,
  EXEC: 0x10,
  STARTED: 0x11,
  STDIN: 0x12,
  STDOUT: 0x13,
  STDERR: 0x14,
  EXIT: 0x15,
  SIGNAL: 0x16,
  RESIZE: 0x17,
  WINDOW: 0x18,
  CONTROL: 0x20,
  REPLY: 0x21,
} as const;

export const ExitReason = { EXITED: 0, SIGNALED: 1, TIMED_OUT: 2, SPAWN_FAILED: 3 } as const;

export type Message =
  | { type: 'HELLO'; stream: number; major: number; minor: number; features: number; version: string }
  | { type: 'PING' | 'PONG'; stream: number; data: Buffer }
  | { type: 'SHUTDOWN'; stream: number }
  | { type: 'ERROR'; stream: number; message: string }
  | {
      type: 'EXEC';
      stream: number;
      flags: number;
      rows: number;
      cols: number;
      timeoutMs: number;
      user: string;
      cwd: string;
      argv: string[];
      env: string[];
    }
  | { type: 'STARTED'; stream: number; pid: number }
  | { type: 'STDIN' | 'STDOUT' | 'STDERR' | 'TRUST' | 'RESUME'; stream: number; data: Buffer }
  | { type: 'EXIT'; stream: number; code: number; signal: number; reason: number; message: string }
  | { type: 'SIGNAL'; stream: number; signo: number }
  | { type: 'RESIZE'; stream: number; rows: number; cols: number }
  | { type: 'WINDOW'; stream: number; fd: number; bytes: number }
  | { type: 'CONTROL' | 'REPLY'; stream: number; data: Buffer };

export type MessageName = Message['type'];

const NAME_BY_TYPE = new Map<number, MessageName>(
  Object.entries(MsgType).map(([name, code]) => [code, name as MessageName]),
);

export type DecodeErrorKind =
  | 'truncated'
  | 'too_large'
  | 'bad_header'
  | 'unknown_type'
  | 'bad_stream'
  | 'bad_payload';

export class ProtocolDecodeError extends Error {
  constructor(
    readonly kind: DecodeErrorKind,
    detail: string,
  ) {
    super(`${kind}: ${detail}`);
  }
}

const LINK_TYPES = new Set<MessageName>(['HELLO', 'PING', 'PONG', 'SHUTDOWN', 'TRUST', 'RESUME']);

class Writer {
  private parts: Buffer[] = [];
  u8(v: number): this {
    const b = Buffer.alloc(1);
    b.writeUInt8(v);
    this.parts.push(b);
    return this;
  }
  u16(v: number): this {
    const b = Buffer.alloc(2);
    b.writeUInt16BE(v);
    this.parts.push(b);
    return this;
  }
  u32(v: number): this {
    const b = Buffer.alloc(4);
    b.writeUInt32BE(v >>> 0);
    this.parts.push(b);
    return this;
  }
  i32(v: number): this {
    const b = Buffer.alloc(4);
    b.writeInt32BE(v | 0);
    this.parts.push(b);
    return this;
  }
  str(s: string): this {
    const bytes = Buffer.from(s, 'utf8');
    this.u32(bytes.length);
    this.parts.push(bytes);
    return this;
  }
  strlist(list: string[]): this {
    this.u32(list.length);
    for (const s of list) this.str(s);
    return this;
  }
  data(d: Buffer): this {
    this.parts.push(d);
    return this;
  }
  done(): Buffer {
    return Buffer.concat(this.parts);
  }
}

class Reader {
  private off = 0;
  constructor(private readonly buf: Buffer) {}
  private need(n: number): void {
    if (this.off + n > this.buf.length) throw new ProtocolDecodeError('bad_payload', 'field runs past payload');
  }
  u8(): number {
    this.need(1);
    return this.buf.readUInt8(this.off++);
  }
  u16(): number {
    this.need(2);
    const v = this.buf.readUInt16BE(this.off);
    this.off += 2;
    return v;
  }
  u32(): number {
    this.need(4);
    const v = this.buf.readUInt32BE(this.off);
    this.off += 4;
    return v;
  }
  i32(): number {
    this.need(4);
    const v = this.buf.readInt32BE(this.off);
    this.off += 4;
    return v;
  }
  str(): string {
    const len = this.u32();
    this.need(len);
    const s = this.buf.toString('utf8', this.off, this.off + len);
    this.off += len;
    return s;
  }
  strlist(): string[] {
    const count = this.u32();
    if (count > MAX_LIST) throw new ProtocolDecodeError('bad_payload', `list of ${count} exceeds ${MAX_LIST}`);
    const out: string[] = [];
    for (let i = 0; i < count; i++) out.push(this.str());
    return out;
  }
  rest(): Buffer {
    const d = this.buf.subarray(this.off);
    this.off = this.buf.length;
    return Buffer.from(d);
  }
  end(): void {
    if (this.off !== this.buf.length) throw new ProtocolDecodeError('bad_payload', 'trailing bytes');
  }
}

function encodePayload(m: Message): Buffer {
  const w = new Writer();
  switch (m.type) {
    case 'HELLO':
      return w.u16(m.major).u16(m.minor).u32(m.features).str(m.version).done();
    case 'PING':
    case 'PONG':
    case 'STDIN':
    case 'STDOUT':
    case 'STDERR':
    case 'TRUST':
    case 'RESUME':
    case 'CONTROL':
    case 'REPLY':
      return w.data(m.data).done();
    case 'SHUTDOWN':
      return w.done();
    case 'ERROR':
      return w.str(m.message).done();
    case 'EXEC':
      return w
        .u32(m.flags)
        .u16(m.rows)
        .u16(m.cols)
        .u32(m.timeoutMs)
        .str(m.user)
        .str(m.cwd)
        .strlist(m.argv)
        .strlist(m.env)
        .done();
    case 'STARTED':
      return w.u32(m.pid).done();
    case 'EXIT':
      return w.i32(m.code).i32(m.signal).u8(m.reason).str(m.message).done();
    case 'SIGNAL':
      return w.i32(m.signo).done();
    case 'RESIZE':
      return w.u16(m.rows).u16(m.cols).done();
    case 'WINDOW':
      return w.u8(m.fd).u32(m.bytes).done();
  }
}

export function encode(m: Message): Buffer {
  const payload = encodePayload(m);
  if (payload.length > MAX_PAYLOAD) {
    throw new ProtocolDecodeError('too_large', `payload of ${payload.length} bytes exceeds ${MAX_PAYLOAD}`);
  }
  const header = Buffer.alloc(HEADER_SIZE);
  header.writeUInt32BE(payload.length, 0);
  header.writeUInt8(MsgType[m.type], 4);
  header.writeUInt32BE(m.stream >>> 0, 8);
  return Buffer.concat([header, payload]);
}

function decodePayload(name: MessageName, stream: number, payload: Buffer): Message {
  const r = new Reader(payload);
  let m: Message;
  switch (name) {
    case 'HELLO':
      m = { type: name, stream, major: r.u16(), minor: r.u16(), features: r.u32(), version: r.str() };
      break;
    case 'PING':
    case 'PONG':
    case 'STDIN':
    case 'STDOUT':
    case 'STDERR':
    case 'TRUST':
    case 'RESUME':
    case 'CONTROL':
    case 'REPLY':
      m = { type: name, stream, data: r.rest() };
      break;
    case 'SHUTDOWN':
      m = { type: name, stream };
      break;
    case 'ERROR':
      m = { type: name, stream, message: r.str() };
      break;
    case 'EXEC': {
      const flags = r.u32();
      const rows = r.u16();
      const cols = r.u16();
      const timeoutMs = r.u32();
      const user = r.str();
      const cwd = r.str();
      const argv = r.strlist();
      const env = r.strlist();
      if ((flags & ~7) !== 0) throw new ProtocolDecodeError('bad_payload', 'unknown EXEC flags');
      if (argv.length === 0) throw new ProtocolDecodeError('bad_payload', 'EXEC needs argv[0]');
      m = { type: name, stream, flags, rows, cols, timeoutMs, user, cwd, argv, env };
      break;
    }
    case 'STARTED':
      m = { type: name, stream, pid: r.u32() };
      break;
    case 'EXIT':
      m = { type: name, stream, code: r.i32(), signal: r.i32(), reason: r.u8(), message: r.str() };
      if (m.reason > 3) throw new ProtocolDecodeError('bad_payload', 'unknown EXIT reason');
      break;
    case 'SIGNAL':
      m = { type: name, stream, signo: r.i32() };
      break;
    case 'RESIZE':
      m = { type: name, stream, rows: r.u16(), cols: r.u16() };
      break;
    case 'WINDOW':
      m = { type: name, stream, fd: r.u8(), bytes: r.u32() };
      if (m.fd > 2) throw new ProtocolDecodeError('bad_payload', 'WINDOW fd must be 0, 1 or 2');
      break;
  }
  r.end();
  return m;
}

/** Validates a header; returns the payload length. Throws on any violation. */
export function checkHeader(header: Buffer): { length: number; name: MessageName; stream: number } {
  const length = header.readUInt32BE(0);
  const type = header.readUInt8(4);
  const flags = header.readUInt8(5);
  const reserved = header.readUInt16BE(6);
  const stream = header.readUInt32BE(8);
  if (length > MAX_PAYLOAD) throw new ProtocolDecodeError('too_large', `payload of ${length} bytes exceeds ${MAX_PAYLOAD}`);
  if (flags !== 0 || reserved !== 0) throw new ProtocolDecodeError('bad_header', 'flags and reserved must be 0');
  const name = NAME_BY_TYPE.get(type);
  if (!name) throw new ProtocolDecodeError('unknown_type', `type 0x${type.toString(16)}`);
  if (name !== 'ERROR') {
    const linkLevel = LINK_TYPES.has(name);
    if (linkLevel !== (stream === 0)) {
      throw new ProtocolDecodeError('bad_stream', `${name} on stream ${stream}`);
    }
  }
  return { length, name, stream };
}

/** Decodes exactly one complete frame. */
export function decode(frame: Buffer): Message {
  if (frame.length < HEADER_SIZE) throw new ProtocolDecodeError('truncated', 'short header');
  const { length, name, stream } = checkHeader(frame.subarray(0, HEADER_SIZE));
  if (frame.length < HEADER_SIZE + length) throw new ProtocolDecodeError('truncated', 'short payload');
  if (frame.length > HEADER_SIZE + length) throw new ProtocolDecodeError('bad_payload', 'bytes after frame');
  return decodePayload(name, stream, frame.subarray(HEADER_SIZE));
}

/**
 * Incremental decoder for a byte stream. Buffers at most one frame
 * (header + MAX_PAYLOAD), validating the header before waiting for the payload.
 */
export class FrameDecoder {
  private chunks: Buffer[] = [];
  private buffered = 0;

  push(chunk: Buffer): Message[] {
    this.chunks.push(chunk);
    this.buffered += chunk.length;
    const out: Message[] = [];
    for (;;) {
      if (this.buffered < HEADER_SIZE) break;
      const head = this.peek(HEADER_SIZE);
      const { length } = checkHeader(head);
      if (this.buffered < HEADER_SIZE + length) break;
      out.push(decode(this.take(HEADER_SIZE + length)));
    }
    return out;
  }

  private peek(n: number): Buffer {
    if (this.chunks[0]!.length < n) this.chunks = [Buffer.concat(this.chunks)];
    return this.chunks[0]!.subarray(0, n);
  }

  private take(n: number): Buffer {
    const all = this.chunks.length === 1 ? this.chunks[0]! : Buffer.concat(this.chunks);
    const frame = all.subarray(0, n);
    const rest = all.subarray(n);
    this.chunks = rest.length ? [rest] : [];
    this.buffered = rest.length;
    return frame;
  }
}

function quote(s: string): string {
  let out = '"';
  for (const byte of Buffer.from(s, 'utf8')) {
    if (byte >= 0x20 && byte <= 0x7e && byte !== 0x22 && byte !== 0x5c) out += String.fromCharCode(byte);
    else out += `\\x${byte.toString(16).padStart(2, '0')}`;
  }
  return out + '"';
}

const hex32 = (n: number): string => `0x${(n >>> 0).toString(16).padStart(8, '0')}`;

/** Canonical text of a message (docs/protocol.md section 7), shared with the C codec tests. */
export function canonical(m: Message): string {
  const head = `${m.type} stream=${m.stream}`;
  switch (m.type) {
    case 'HELLO':
      return `${head} major=${m.major} minor=${m.minor} features=${hex32(m.features)} version=${quote(m.version)}`;
    case 'PING':
    case 'PONG':
    case 'STDIN':
    case 'STDOUT':
    case 'STDERR':
    case 'TRUST':
    case 'RESUME':
    case 'CONTROL':
    case 'REPLY':
      return `${head} data=${m.data.toString('hex')}`;
    case 'SHUTDOWN':
      return head;
    case 'ERROR':
      return `${head} message=${quote(m.message)}`;
    case 'EXEC':
      return (
        `${head} flags=${hex32(m.flags)} rows=${m.rows} cols=${m.cols} timeout_ms=${m.timeoutMs}` +
        ` user=${quote(m.user)} cwd=${quote(m.cwd)} argv=[${m.argv.map(quote).join(',')}]` +
        ` env=[${m.env.map(quote).join(',')}]`
      );
    case 'STARTED':
      return `${head} pid=${m.pid}`;
    case 'EXIT':
      return `${head} code=${m.code} signal=${m.signal} reason=${m.reason} message=${quote(m.message)}`;
    case 'SIGNAL':
      return `${head} signo=${m.signo}`;
    case 'RESIZE':
      return `${head} rows=${m.rows} cols=${m.cols}`;
    case 'WINDOW':
      return `${head} fd=${m.fd} bytes=${m.bytes}`;
  }
}
