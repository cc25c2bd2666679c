// The per-execution output log of the REST server (rest-contract §2.3, §5.1.8, §5.3): stdout and
// stderr are pulled from the SDK's ExecOutput from t=0 into one ordered log of frames, bounded in
// bytes. Frames leave the log only once the attached client has *acknowledged* them (a Pong whose
// payload names a sequence number sent after them: WebSocket frames arrive in order, so the peer
// had read them). When the bound is reached the pumps stop reading the ExecOutput, whose credit
// then stops flowing to the guest: the process blocks on write. Nothing is ever discarded, a late
// or re-attaching client replays every unacknowledged frame, and memory stays bounded.

/** One output frame: channel 1 = stdout, 2 = stderr; payloads never split a UTF-8 sequence. */
export interface OutFrame {
  seq: number;
  ch: 1 | 2;
  data: Buffer;
}

/** Largest payload of one frame. */
export const MAX_FRAME_BYTES = 32 * 1024;
/** What a frame costs beyond its payload, counted against the bound (so 1-byte writes stay bounded too). */
export const FRAME_OVERHEAD = 64;

/**
 * Length of the longest prefix of `b` that does not end inside a UTF-8 sequence. Bytes that are not
 * valid UTF-8 are never held back (so binary output flows; at most 3 bytes wait for the next chunk).
 */
export function utf8Prefix(b: Buffer): number {
  const n = b.length;
  let i = n - 1;
  let cont = 0;
  while (i >= 0 && cont < 3 && (b[i]! & 0xc0) === 0x80) {
    i--;
    cont++;
  }
  if (i < 0) return n;
  const lead = b[i]!;
  const need = lead >= 0xf0 && lead <= 0xf4 ? 4 : lead >= 0xe0 && lead <= 0xef ? 3 : lead >= 0xc2 && lead <= 0xdf ? 2 : 1;
  if (need === 1) return n; // ASCII or an invalid lead: nothing to wait for
  return cont + 1 < need ? i : n;
}

/** A cut ≤ max that does not split a UTF-8 sequence (falls back to max for non-UTF-8 bytes). */
function cutAt(b: Buffer, max: number): number {
  if (b.length <= max) return b.length;
  let c = max;
  for (let k = 0; k < 3 && c > 0 && (b[c]! & 0xc0) === 0x80; k++) c--;
  return c > 0 ? c : max;
}

export class OutputLog {
  private frames: OutFrame[] = [];
  private seq = 0;
  /** Bytes held (sent or not, but not acknowledged), plus FRAME_OVERHEAD per frame. */
  bytes = 0;
  /** True once every pump finished: no frame will follow. */
  ended = false;
  private roomWaiters: Array<() => void> = [];
  private listeners = new Set<() => void>();

  constructor(readonly capBytes: number) {}

  /** Sequence number the next frame will get. */
  get nextSeq(): number {
    return this.seq;
  }

  private lifted = false;

  /** Resolves while the log has room (pumps await this before reading more). */
  async room(): Promise<void> {
    while (!this.lifted && this.bytes >= this.capBytes) await new Promise<void>((r) => this.roomWaiters.push(r));
  }

  /**
   * The process has exited: what is left is already in the SDK's (bounded) stream buffers, so it
   * moves into the log without waiting (memory does not grow: the same bytes change hands), and
   * the execution's status can be final at once with all its output replayable.
   */
  lift(): void {
    this.lifted = true;
    const w = this.roomWaiters;
    this.roomWaiters = [];
    for (const f of w) f();
  }

  push(ch: 1 | 2, data: Buffer): void {
    let rest = data;
    while (rest.length > 0) {
      const c = cutAt(rest, MAX_FRAME_BYTES);
      this.frames.push({ seq: this.seq++, ch, data: Buffer.from(rest.subarray(0, c)) });
      this.bytes += c + FRAME_OVERHEAD;
      rest = rest.subarray(c);
    }
    this.notify();
  }

  end(): void {
    this.ended = true;
    this.notify();
  }

  /** Unacknowledged frames from `seq` on. */
  from(seq: number): OutFrame[] {
    const first = this.frames[0]?.seq ?? this.seq;
    return this.frames.slice(Math.max(0, seq - first));
  }

  /** First sequence number not yet acknowledged. */
  get firstUnacked(): number {
    return this.frames[0]?.seq ?? this.seq;
  }

  /** The peer has read every frame up to and including `seq`. */
  ack(seq: number): void {
    let freed = false;
    while (this.frames.length && this.frames[0]!.seq <= seq) {
      this.bytes -= this.frames.shift()!.data.length + FRAME_OVERHEAD;
      freed = true;
    }
    if (freed && this.bytes < this.capBytes) {
      const w = this.roomWaiters;
      this.roomWaiters = [];
      for (const f of w) f();
    }
  }

  /** Called on every new frame and at the end; returns an unsubscribe function. */
  subscribe(fn: () => void): () => void {
    this.listeners.add(fn);
    return () => this.listeners.delete(fn);
  }

  private notify(): void {
    for (const f of [...this.listeners]) f();
  }
}

/** What a pump reads: the SDK's ExecOutput (nextBuffer() → null at the end). */
export interface ByteSource {
  nextBuffer(): Promise<Buffer | null>;
}

/**
 * Copies `src` into `log` on channel `ch`, holding back a trailing incomplete UTF-8 sequence until
 * the next chunk (flushed as is at the end). Reads only while the log has room (back-pressure).
 * Resolves at the end of the stream; a stream error (box lost) ends it too, with the error returned.
 */
export async function pump(log: OutputLog, ch: 1 | 2, src: ByteSource): Promise<unknown> {
  let carry: Buffer = Buffer.alloc(0);
  let error: unknown;
  try {
    for (;;) {
      await log.room();
      const b = await src.nextBuffer();
      if (b === null) break;
      const data = carry.length ? Buffer.concat([carry, b]) : b;
      const cut = utf8Prefix(data);
      carry = Buffer.from(data.subarray(cut));
      if (cut > 0) log.push(ch, data.subarray(0, cut));
    }
  } catch (err) {
    error = err;
  }
  if (carry.length) log.push(ch, carry);
  return error;
}
