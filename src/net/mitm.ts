// Secret substitution for HTTPS to a secret's hosts. The dispatcher hands over a guest TCP flow
// whose ClientHello SNI matched; we terminate its TLS with a leaf of the per-boot CA (ca.ts),
// parse HTTP/1.1 with node:http, replace placeholders by values in the request line, headers and
// identity-encoded bodies, and send the request to the SNI name over verified TLS. Responses come
// back with every value replaced by its placeholder (headers and bodies, compressed ones decoded
// first; verbatim, percent-encoded, base64 and JSON-escaped), so the value does not enter the VM
// in any form we recognise (what a cooperating server transforms otherwise is out of reach:
// docs/network.md, Limits of secrets). WebSocket upgrades get the handshake substituted and then
// carry raw bytes. Only the secrets whose hosts match the SNI take part.
//
// A guest connection is served one request at a time (the next pipelined request is not read
// until the response to the previous one finished), upstream requests in flight and waiting are
// capped over the whole interceptor, and bodies are held in memory only within a shared budget:
// a hostile guest cannot grow the worker by pipelining or by opening many connections.
import http from 'node:http';
import type net from 'node:net';
import { Duplex, pipeline, type Readable, type Transform } from 'node:stream';
import tls from 'node:tls';
import zlib from 'node:zlib';
import type { BoxCa } from './ca.js';
import { onLink } from './dispatch.js';
import { NetPolicy, isDialableUpstream } from './policy.js';
import { createReplacer, replaceAll, type ReplacePair } from './replace.js';
import { COUNTER, type Dialer, type GuestStream, type LinkAddressing, type SecretSpec } from './types.js';

/** Bodies up to this size are substituted in memory and keep an exact Content-Length. */
const BUFFER_BODY_MAX = 1 << 20;
const HANDSHAKE_TIMEOUT_MS = 15_000;
const UPSTREAM_CONNECT_TIMEOUT_MS = 15_000;
const IDLE_TIMEOUT_MS = 10 * 60_000;
/** Derived (encoded) forms shorter than this are not redacted: they would hit ordinary text. */
const MIN_FORM_LENGTH = 8;

export interface InterceptorLimits {
  /**
   * Upstream requests in flight over all guest connections. Each holds at most one upstream
   * connection, so this also bounds the pool (http.Agent's own maxSockets does not count
   * connections still being dialed).
   */
  maxInFlight: number;
  /** Requests waiting for one of those slots; beyond it the guest gets a 503. */
  maxWaiting: number;
  /** Body bytes held in memory (for an exact Content-Length) over all exchanges; beyond it bodies stream. */
  bodyBudget: number;
  /** Requests a guest connection may pipeline behind the one in progress; beyond it the connection closes. */
  maxPipelined: number;
  /** Upgraded (WebSocket) tunnels at once, each with its own upstream connection; beyond it a 503. */
  maxTunnels: number;
}

export const DEFAULT_INTERCEPTOR_LIMITS: InterceptorLimits = {
  maxInFlight: 32,
  maxWaiting: 256,
  bodyBudget: 16 << 20,
  maxPipelined: 16,
  maxTunnels: 64,
};

/**
 * Hop-by-hop headers (RFC 9110 §7.6.1), the ones this proxy recomputes (host is always the SNI
 * name), and Range/If-Range: a guest could otherwise read a stored value back in pieces too
 * short to recognise.
 */
const DROP_REQUEST = new Set(['connection', 'keep-alive', 'proxy-connection', 'te', 'trailer', 'transfer-encoding', 'upgrade', 'expect', 'content-length', 'accept-encoding', 'host', 'range', 'if-range']);
const DROP_RESPONSE = new Set(['connection', 'keep-alive', 'proxy-connection', 'trailer', 'transfer-encoding', 'content-length']);

/** `*.example.com` matches any depth below example.com, not the apex (design decision 1). */
export function hostMatches(pattern: string, host: string): boolean {
  const p = pattern.toLowerCase().replace(/\.$/, '');
  const h = host.toLowerCase().replace(/\.$/, '');
  if (p.startsWith('*.')) return h.endsWith(p.slice(1)) && h.length > p.length - 1;
  return p === h;
}

type Pending = [http.IncomingMessage, http.ServerResponse];

interface ConnCtx {
  sni: string;
  port: number;
  socket: tls.TLSSocket;
  /** placeholder → value, for request headers and bodies. */
  fwd: ReplacePair[];
  /** The same plus the percent-encoded forms, for the request target (clients encode `<:>`). */
  url: ReplacePair[];
  /** value → placeholder, also its encoded forms (redactionPairs), for responses. */
  back: ReplacePair[];
  /** A request of this connection is being served; later (pipelined) ones wait in `queue`. */
  busy: boolean;
  queue: Pending[];
  /** The active request waits for an upstream slot (its body must not be read meanwhile). */
  waiting: boolean;
  /** Stops (true) or restarts reading the guest's bytes under TLS (replayed()). */
  hold: (on: boolean) => void;
}

export interface SecretInterceptorOptions {
  secrets: SecretSpec[];
  ca: BoxCa;
  dialer: Dialer;
  counters: BigInt64Array;
  log: (line: string) => void;
  /** The box's policy, for which resolved addresses may be dialed (policy.ts isDialableUpstream); default: open. */
  policy?: NetPolicy;
  /** The virtual link: its subnet is never dialed (dispatch.ts onLink). */
  link?: LinkAddressing;
  limits?: Partial<InterceptorLimits>;
}

export class SecretInterceptor {
  private readonly server: http.Server;
  private readonly agent: http.Agent;
  private readonly ctxOf = new WeakMap<object, ConnCtx>();
  private readonly live = new Set<Duplex>();
  private readonly counted = new WeakMap<object, { sent: number; received: number }>();
  private readonly trust: string[];
  private readonly limits: InterceptorLimits;
  private readonly policy: NetPolicy;
  private inFlight = 0;
  private readonly waiting: Array<(release: () => void) => void> = [];
  private bodyBytes = 0;
  private tunnels = 0;
  private closed = false;

  constructor(private readonly opts: SecretInterceptorOptions) {
    this.limits = { ...DEFAULT_INTERCEPTOR_LIMITS, ...opts.limits };
    this.policy = opts.policy ?? new NetPolicy([]);
    this.trust = [...tls.rootCertificates, ...(opts.dialer.upstreamCa ?? [])];
    // requestTimeout 0: a long streamed upload is legitimate; idle guests are bounded by
    // headersTimeout and keepAliveTimeout.
    this.server = http.createServer({ requestTimeout: 0, headersTimeout: 60_000, keepAliveTimeout: 30_000 });
    // A guest connection idle both ways this long is dropped (node:http destroys it; a request
    // in progress or a streamed response is activity); WebSocket tunnels clear it in onUpgrade.
    this.server.timeout = IDLE_TIMEOUT_MS;
    // No exception may leave a handler: in the network worker it would end the box's network.
    this.server.on('request', (req: http.IncomingMessage, res: http.ServerResponse) => this.guard(res, () => this.onRequest(req, res)));
    this.server.on('upgrade', (req: http.IncomingMessage, socket: net.Socket, head: Buffer) => {
      try {
        this.onUpgrade(req, socket, head);
      } catch (err) {
        this.internal(err);
        socket.destroy();
      }
    });
    this.server.on('connect', (_req, socket) => (socket as net.Socket).end('HTTP/1.1 405 Method Not Allowed\r\nconnection: close\r\ncontent-length: 0\r\n\r\n'));
    this.server.on('clientError', (err: NodeJS.ErrnoException, socket) => {
      const status = err.code === 'HPE_HEADER_OVERFLOW' ? '431 Request Header Fields Too Large' : '400 Bad Request';
      if ((socket as net.Socket).writable) (socket as net.Socket).end(`HTTP/1.1 ${status}\r\nconnection: close\r\ncontent-length: 0\r\n\r\n`);
      else socket.destroy();
    });
    // Upstream connections are pooled per host:port across the guest's connections. The pool's
    // size is really bounded by maxInFlight (admit()): the agent counts a connection only once
    // our asynchronous createConnection has called back, so on its own it would open a new one
    // for every request arriving while others are still being dialed.
    this.agent = new http.Agent({ keepAlive: true, maxSockets: this.limits.maxInFlight, maxFreeSockets: 4, timeout: 60_000 });
    (this.agent as unknown as { createConnection: unknown }).createConnection = (
      o: { host: string; port: number },
      cb: (err: Error | null, s?: net.Socket) => void,
    ) => {
      this.dialUpstream(o.host, Number(o.port)).then((s) => cb(null, s), (e: Error) => cb(e));
      return undefined;
    };
  }

  /** Whether any secret's hosts match this SNI (then the dispatcher hands the flow to handle()). */
  matches(sni: string): boolean {
    return this.opts.secrets.some((s) => s.hosts.some((h) => hostMatches(h, sni)));
  }

  /**
   * Takes over a guest TCP flow: `head` (the bytes the dispatcher peeked, the ClientHello) is
   * replayed before the rest of the stream. The caller must have removed its own listeners.
   */
  handle(guest: GuestStream, head: Buffer, sni: string, port: number): void {
    if (this.closed) return guest.reset();
    const chosen = this.opts.secrets.filter((s) => s.hosts.some((h) => hostMatches(h, sni)));
    const host = sni.toLowerCase().replace(/\.$/, '');
    const carrier = replayed(guest, head);
    let secure: tls.TLSSocket;
    try {
      secure = new tls.TLSSocket(carrier, {
        isServer: true,
        secureContext: this.opts.ca.secureContextFor(host),
        // We speak HTTP/1.1 only; a client offering h2 and http/1.1 gets http/1.1.
        ALPNProtocols: ['http/1.1'],
      });
    } catch (err) {
      this.opts.log(`secrets: ${host}:${port} tls setup failed: ${(err as Error).message}`);
      return guest.reset();
    }
    const ctx: ConnCtx = {
      sni: host,
      port,
      socket: secure,
      fwd: chosen.map((s) => [s.placeholder, s.value] as ReplacePair),
      url: chosen.flatMap((s) => [[s.placeholder, s.value] as ReplacePair, ...percentPairs(s.placeholder, s.value)]),
      back: chosen.flatMap((s) => redactionPairs(s.value, s.placeholder)),
      busy: false,
      queue: [],
      waiting: false,
      hold: (on) => carrier.hold(on),
    };
    this.live.add(secure);
    const timer = setTimeout(() => {
      this.opts.log(`secrets: ${host}:${port} guest TLS handshake timed out`);
      secure.destroy();
    }, HANDSHAKE_TIMEOUT_MS);
    secure.once('secure', () => {
      clearTimeout(timer);
      this.ctxOf.set(secure, ctx);
      this.server.emit('connection', secure);
    });
    secure.on('error', (err) => {
      clearTimeout(timer);
      // Typically the guest not trusting the CA (a client with its own bundle).
      this.opts.log(`secrets: ${host}:${port} guest TLS: ${err.message}`);
      secure.destroy();
    });
    secure.once('close', () => {
      clearTimeout(timer);
      this.live.delete(secure);
      ctx.queue.length = 0;
      carrier.destroy();
    });
  }

  close(): void {
    this.closed = true;
    for (const s of this.live) s.destroy();
    this.live.clear();
    this.waiting.length = 0;
    this.agent.destroy();
    this.server.close();
  }

  // --- upstream -----------------------------------------------------------------------------

  /**
   * The dispatcher's rule for addresses that came from resolving a name: never loopback, "this
   * network", multicast, the link's own subnet, metadata or (unless an IP rule allows it) a
   * private range — an allowed secret host resolving there (DNS rebinding) must not reach it.
   */
  private dialable(ip: string): boolean {
    if (this.opts.link && onLink(ip, this.opts.link)) return false;
    return isDialableUpstream(ip, this.policy, this.opts.dialer);
  }

  /** TCP through the dialer to the SNI name as resolved on the host, then verified TLS. */
  private async dialUpstream(host: string, port: number): Promise<tls.TLSSocket> {
    const { dialer, counters } = this.opts;
    const addrs = await dialer.resolve4(host);
    if (!addrs.length) throw new Error(`${host} has no IPv4 address`);
    const safe = addrs.map((a) => a.address).filter((ip) => this.dialable(ip));
    if (!safe.length) throw new Error(`${host} resolves to no address a flow may reach (${addrs[0]!.address})`);
    // At most three of the name's addresses, like the dispatcher.
    let raw: net.Socket | undefined;
    let lastErr: unknown;
    for (const ip of safe.slice(0, 3)) {
      if (this.closed) throw new Error('interceptor closed');
      try {
        raw = await dialer.connectTcp(ip, port, UPSTREAM_CONNECT_TIMEOUT_MS);
        break;
      } catch (err) {
        lastErr = err;
      }
    }
    if (!raw) throw lastErr instanceof Error ? lastErr : new Error(String(lastErr));
    const sock = raw;
    Atomics.add(counters, COUNTER.tcpConnections, 1n);
    return await new Promise<tls.TLSSocket>((resolve, reject) => {
      const s = tls.connect({ socket: sock, servername: host, ca: this.trust, ALPNProtocols: ['http/1.1'] });
      const timer = setTimeout(() => s.destroy(new Error('TLS handshake timed out')), UPSTREAM_CONNECT_TIMEOUT_MS);
      s.once('secureConnect', () => {
        clearTimeout(timer);
        s.removeListener('error', reject);
        resolve(s);
      });
      s.once('error', (e) => {
        clearTimeout(timer);
        sock.destroy();
        reject(e);
      });
      this.live.add(s);
      this.counted.set(s, { sent: 0, received: 0 });
      s.once('close', () => {
        this.live.delete(s);
        this.count(s);
        sock.destroy();
      });
    });
  }

  /**
   * Adds what an upstream connection carried since the last call to the box's byte counters
   * (after every response and at close, so metrics move while a pooled connection lives; the
   * dispatcher does not count a flow once it is handed over here).
   */
  private count(s: net.Socket | null | undefined): void {
    const seen = s && this.counted.get(s);
    if (!s || !seen) return;
    const sent = s.bytesWritten ?? 0;
    const received = s.bytesRead ?? 0;
    if (sent > seen.sent) Atomics.add(this.opts.counters, COUNTER.bytesSent, BigInt(sent - seen.sent));
    if (received > seen.received) Atomics.add(this.opts.counters, COUNTER.bytesReceived, BigInt(received - seen.received));
    seen.sent = Math.max(seen.sent, sent);
    seen.received = Math.max(seen.received, received);
  }

  private fail(ctx: ConnCtx, what: string, err: Error): void {
    Atomics.add(this.opts.counters, COUNTER.tcpErrors, 1n);
    this.opts.log(`secrets: ${ctx.sni}:${ctx.port} ${what}: ${err.message}`);
  }

  private internal(err: unknown): void {
    Atomics.add(this.opts.counters, COUNTER.tcpErrors, 1n);
    // node's messages name the header, never its value.
    this.opts.log(`secrets: internal error: ${(err as Error)?.message ?? String(err)}`);
  }

  /** Runs a handler; whatever it throws becomes a 502 (or a closed connection once headers went out). */
  private guard(res: http.ServerResponse, fn: () => void): void {
    try {
      fn();
    } catch (err) {
      this.internal(err);
      try {
        if (!res.headersSent && !res.destroyed) {
          // A failed writeHead may have left its status text behind: name ours.
          res.writeHead(502, 'Bad Gateway', { 'content-type': 'text/plain', connection: 'close' });
          res.end('boxlite: the response could not be relayed\n');
        } else res.destroy();
      } catch {
        res.destroy();
      }
    }
  }

  /**
   * An upstream slot (maxInFlight), now or once one frees up; false when too many wait already.
   * `release` must be called once the upstream request is over; it is deferred a turn so the
   * connection the request used is back in the pool (node frees it right after 'close').
   */
  private admit(run: (release: () => void) => void): boolean {
    if (this.inFlight < this.limits.maxInFlight) {
      this.inFlight++;
      run(this.releaser());
      return true;
    }
    if (this.waiting.length >= this.limits.maxWaiting) return false;
    this.waiting.push(run);
    return true;
  }

  private releaser(): () => void {
    let done = false;
    return () => {
      if (done) return;
      done = true;
      setImmediate(() => {
        const next = this.waiting.shift();
        if (next && !this.closed) next(this.releaser());
        else this.inFlight--;
      });
    };
  }

  /** Reserves body bytes from the shared budget until `res` closes; false: stream instead. */
  private reserve(res: http.ServerResponse, n: number): boolean {
    if (this.bodyBytes + n > this.limits.bodyBudget) return false;
    this.bodyBytes += n;
    res.once('close', () => (this.bodyBytes -= n));
    return true;
  }

  // --- HTTP ---------------------------------------------------------------------------------

  /** A Host header naming another site than the SNI could route the value elsewhere (a CDN). */
  private misdirected(req: http.IncomingMessage, ctx: ConnCtx): boolean {
    const host = req.headers.host;
    if (host === undefined) return false;
    const name = host.replace(/:\d+$/, '').toLowerCase().replace(/\.$/, '');
    return name !== ctx.sni;
  }

  /**
   * Why a request may not go to the secret host at all (status + text), or undefined. Checked
   * on rawHeaders: node's req.headers keeps only the first Host, while a proxy merging by name
   * would forward a second one in another case.
   */
  private refusal(req: http.IncomingMessage, ctx: ConnCtx): [number, string] | undefined {
    const hosts = countHeader(req.rawHeaders, 'host');
    if (hosts !== 1) return [400, `boxlite: a request to ${ctx.sni} needs exactly one Host header, got ${hosts}\n`];
    const target = req.url ?? '';
    // Absolute-form (`GET https://other/ HTTP/1.1`) would let the target name another site.
    if (!target.startsWith('/') && !(target === '*' && req.method === 'OPTIONS')) {
      return [400, `boxlite: only origin-form request targets ("/path") are forwarded to ${ctx.sni}\n`];
    }
    if (this.misdirected(req, ctx)) return [421, `boxlite: Host does not match the TLS server name ${ctx.sni}\n`];
    return undefined;
  }

  private onRequest(req: http.IncomingMessage, res: http.ServerResponse): void {
    const ctx = this.ctxOf.get(req.socket);
    if (!ctx) return void res.destroy();
    if (ctx.busy) {
      // Pipelined: node parsed it ahead. It waits, unread, and so does the guest socket, so
      // neither its body nor further requests are buffered here.
      if (ctx.queue.length >= this.limits.maxPipelined) {
        this.opts.log(`secrets: ${ctx.sni}:${ctx.port} more than ${this.limits.maxPipelined} pipelined requests; connection closed`);
        return void ctx.socket.destroy();
      }
      ctx.queue.push([req, res]);
      updateHold(ctx);
      return;
    }
    this.begin(ctx, req, res);
  }

  /** Serves one request of a connection; the next queued one starts when its response is done. */
  private begin(ctx: ConnCtx, req: http.IncomingMessage, res: http.ServerResponse): void {
    ctx.busy = true;
    let over = false;
    const done = () => {
      if (over) return;
      over = true;
      this.advance(ctx);
    };
    res.once('finish', done);
    res.once('close', done);
    const refused = this.refusal(req, ctx);
    if (refused) {
      const [status, text] = refused;
      // 400: the framing of whatever follows is in doubt; close after answering.
      res.writeHead(status, { 'content-type': 'text/plain', ...(status === 400 ? { connection: 'close' } : {}) });
      return void res.end(text);
    }
    ctx.waiting = true;
    updateHold(ctx);
    const admitted = this.admit((release) =>
      this.guard(res, () => {
        ctx.waiting = false;
        updateHold(ctx);
        this.send(ctx, req, res, release);
      }),
    );
    if (!admitted) {
      ctx.waiting = false;
      updateHold(ctx);
      this.fail(ctx, 'request', new Error(`more than ${this.limits.maxWaiting} requests waiting for an upstream connection`));
      // Closed after it: the unread body is not drained, the connection not kept.
      res.writeHead(503, { 'content-type': 'text/plain', 'retry-after': '1', connection: 'close' });
      res.end(`boxlite: too many requests to secret hosts in progress; retry\n`);
    }
  }

  /** The previous response is done: the next queued request (skipping abandoned ones), or read on. */
  private advance(ctx: ConnCtx): void {
    ctx.busy = false;
    let n: Pending | undefined;
    while ((n = ctx.queue.shift()) && (n[1].destroyed || ctx.socket.destroyed));
    if (n) {
      const [req, res] = n;
      // Busy until it starts, so a request parsed meanwhile queues behind it (order is kept).
      ctx.busy = true;
      return void setImmediate(() => this.guard(res, () => (res.destroyed ? this.advance(ctx) : this.begin(ctx, req, res))));
    }
    updateHold(ctx);
  }

  private send(ctx: ConnCtx, req: http.IncomingMessage, res: http.ServerResponse, release: () => void): void {
    if (res.destroyed || this.closed) return release();
    const headers = requestHeaders(req, ctx, false);
    const enc = (req.headers['content-encoding'] ?? 'identity').toLowerCase();
    const te = req.headers['transfer-encoding'];
    const cl = req.headers['content-length'];
    const hasBody = te !== undefined || (cl !== undefined && cl !== '0');
    let upReq: http.ClientRequest;
    try {
      upReq = http.request({
        host: ctx.sni,
        port: ctx.port,
        method: req.method,
        path: replaceAll(req.url ?? '/', ctx.url),
        headers,
        agent: this.agent,
        setHost: false,
      });
    } catch (err) {
      release();
      // E.g. a value that is not valid in a header; the message names the header, not the value.
      this.fail(ctx, 'request rejected', err as Error);
      res.writeHead(502, { 'content-type': 'text/plain' });
      return void res.end(`boxlite: request to ${ctx.sni} could not be forwarded: ${(err as NodeJS.ErrnoException).code ?? 'invalid request'}\n`);
    }
    upReq.once('close', release);
    upReq.on('response', (up) => {
      up.once('end', () => this.count(upReq.socket));
      this.relayResponse(req, res, up, ctx);
    });
    upReq.on('error', (err) => {
      release();
      this.fail(ctx, `${req.method} upstream`, err);
      if (!res.headersSent && !res.destroyed) {
        res.writeHead(502, { 'content-type': 'text/plain', connection: 'close' });
        res.end(`boxlite: upstream ${ctx.sni}:${ctx.port} failed: ${err.message}\n`);
      } else res.destroy();
    });
    res.once('close', () => {
      if (!res.writableFinished) upReq.destroy();
    });
    req.once('error', () => upReq.destroy());

    if (!hasBody) {
      if (cl === '0') upReq.setHeader('content-length', '0');
      return void upReq.end();
    }
    if (enc !== 'identity') {
      // A compressed request body cannot be substituted; it goes through unchanged.
      if (cl !== undefined) upReq.setHeader('content-length', cl);
      return void pipeline(req, upReq, () => {});
    }
    if (cl !== undefined && te === undefined && Number(cl) <= BUFFER_BODY_MAX && this.reserve(res, Number(cl))) {
      return void collect(req, BUFFER_BODY_MAX, (err, body) => {
        if (err) return void upReq.destroy(err);
        const out = replaceAll(body!, ctx.fwd);
        upReq.setHeader('content-length', String(out.length));
        upReq.end(out);
      });
    }
    // Large, chunked or beyond the memory budget: streamed through the replacer, so the length
    // may change: chunked.
    pipeline(req, createReplacer(ctx.fwd), upReq, () => {});
  }

  private relayResponse(req: http.IncomingMessage, res: http.ServerResponse, up: http.IncomingMessage, ctx: ConnCtx): void {
    // Whatever goes wrong here (e.g. a header node refuses) is a 502, never an exception in the
    // worker; the upstream response is dropped.
    const guarded = (fn: () => void) => {
      try {
        fn();
      } catch (err) {
        up.destroy();
        this.guard(res, () => {
          throw err;
        });
      }
    };
    guarded(() => {
      const status = up.statusCode ?? 502;
      const noBody = req.method === 'HEAD' || status === 204 || status === 304 || status < 200;
      const enc = (up.headers['content-encoding'] ?? 'identity').toLowerCase().trim();
      const raw = responseHeaders(up.rawHeaders, ctx);
      const message = replaceAll(up.statusMessage ?? '', ctx.back);
      if (noBody) {
        up.resume();
        res.writeHead(status, message, raw);
        return void res.end();
      }
      let decoder: Transform | undefined;
      if (enc !== 'identity') {
        decoder = decoderFor(enc);
        if (!decoder) {
          // Undecodable bytes could carry a value into the VM: refuse rather than pass them.
          up.destroy();
          this.fail(ctx, 'response', new Error(`unsupported content-encoding ${JSON.stringify(enc)}`));
          res.writeHead(502, { 'content-type': 'text/plain' });
          return void res.end(`boxlite: ${ctx.sni} answered with content-encoding ${enc}, which cannot be checked for secrets\n`);
        }
        // Decoded here, so the guest gets identity.
        for (let i = raw.length - 2; i >= 0; i -= 2) if (raw[i]!.toLowerCase() === 'content-encoding') raw.splice(i, 2);
      }
      const cl = up.headers['content-length'];
      if (!decoder && cl !== undefined && Number(cl) <= BUFFER_BODY_MAX && this.reserve(res, Number(cl))) {
        return void collect(up, BUFFER_BODY_MAX, (err, body) =>
          guarded(() => {
            if (err) return void res.destroy();
            const out = replaceAll(body!, ctx.back);
            res.writeHead(status, message, [...raw, 'content-length', String(out.length)]);
            res.end(out);
          }),
        );
      }
      res.writeHead(status, message, raw);
      const onDone = (err?: Error | null) => {
        if (err && !res.writableFinished) res.destroy();
      };
      if (decoder) pipeline(up, decoder, createReplacer(ctx.back), res, onDone);
      else pipeline(up, createReplacer(ctx.back), res, onDone);
    });
  }

  // --- WebSocket and other upgrades -----------------------------------------------------------

  /**
   * The handshake is substituted and its answer redacted; after a 101 the bytes are the
   * protocol's own (masked WebSocket frames) and pass unchanged both ways: neither substituted
   * nor redacted (docs/network.md, Limits of secrets).
   */
  private onUpgrade(req: http.IncomingMessage, socket: net.Socket, head: Buffer): void {
    const ctx = this.ctxOf.get(socket);
    if (!ctx) return void socket.destroy();
    if (ctx.busy) {
      // Pipelined behind a request in progress: node hands the socket over mid-exchange.
      this.opts.log(`secrets: ${ctx.sni}:${ctx.port} upgrade pipelined behind a request; connection closed`);
      return void socket.destroy();
    }
    const refuse = (status: string, text: string) => socket.end(`HTTP/1.1 ${status}\r\ncontent-type: text/plain\r\nconnection: close\r\ncontent-length: ${Buffer.byteLength(text)}\r\n\r\n${text}`);
    const refused = this.refusal(req, ctx);
    if (refused) return void refuse(refused[0] === 421 ? '421 Misdirected Request' : '400 Bad Request', refused[1]);
    if (this.tunnels >= this.limits.maxTunnels) return void refuse('503 Service Unavailable', 'boxlite: too many WebSocket connections to secret hosts\n');
    this.tunnels++;
    let counted = true;
    socket.once('close', () => {
      if (counted) this.tunnels--;
      counted = false;
    });
    let upReq: http.ClientRequest;
    try {
      upReq = http.request({
        host: ctx.sni,
        port: ctx.port,
        method: req.method,
        path: replaceAll(req.url ?? '/', ctx.url),
        headers: requestHeaders(req, ctx, true),
        setHost: false,
        // Its own connection: after the upgrade it belongs to this tunnel, not to the pool.
        createConnection: ((_o: unknown, cb: (err: Error | null, s?: net.Socket) => void) => {
          this.dialUpstream(ctx.sni, ctx.port).then((s) => cb(null, s), (e: Error) => cb(e));
          return undefined;
        }) as unknown as http.RequestOptions['createConnection'],
      });
    } catch (err) {
      this.fail(ctx, 'upgrade rejected', err as Error);
      return void refuse('502 Bad Gateway', 'boxlite: upgrade request could not be forwarded\n');
    }
    socket.on('error', () => upReq.destroy());
    socket.once('close', () => upReq.destroy());
    upReq.on('error', (err) => {
      // The guest went away first (we destroyed upReq): not an upstream failure.
      if (socket.destroyed) return;
      this.fail(ctx, 'upgrade upstream', err);
      if (socket.writable) refuse('502 Bad Gateway', `boxlite: upstream ${ctx.sni}:${ctx.port} failed: ${err.message}\n`);
    });
    upReq.on('upgrade', (up, upSock, upHead) => {
      try {
        const raw = responseHeaders(up.rawHeaders, ctx, true);
        let text = `HTTP/1.1 ${up.statusCode} ${replaceAll(up.statusMessage ?? '', ctx.back)}\r\n`;
        for (let i = 0; i < raw.length; i += 2) text += `${raw[i]}: ${raw[i + 1]}\r\n`;
        socket.write(text + '\r\n', 'latin1');
        if (upHead.length) socket.write(upHead);
        if (head.length) upSock.write(head);
        // A WebSocket may rightly stay quiet for long.
        socket.setTimeout(0);
        upSock.on('error', () => socket.destroy());
        socket.on('error', () => upSock.destroy());
        socket.pipe(upSock);
        upSock.pipe(socket);
        socket.once('close', () => upSock.destroy());
        upSock.once('close', () => socket.destroy());
      } catch (err) {
        this.internal(err);
        upSock.destroy();
        socket.destroy();
      }
    });
    upReq.on('response', (up) => {
      // The upstream declined the upgrade: relay its answer (redacted) and close. A body we
      // cannot read (compressed) is dropped rather than relayed unchecked.
      collect(up, BUFFER_BODY_MAX, (err, body) => {
        try {
          if (err) return void socket.destroy();
          const identity = (up.headers['content-encoding'] ?? 'identity').toLowerCase().trim() === 'identity';
          const out = identity ? replaceAll(body!, ctx.back) : Buffer.alloc(0);
          const raw = responseHeaders(up.rawHeaders, ctx);
          let text = `HTTP/1.1 ${up.statusCode} ${replaceAll(up.statusMessage ?? '', ctx.back)}\r\n`;
          for (let i = 0; i < raw.length; i += 2) if (raw[i]!.toLowerCase() !== 'content-encoding') text += `${raw[i]}: ${raw[i + 1]}\r\n`;
          socket.write(`${text}content-length: ${out.length}\r\nconnection: close\r\n\r\n`, 'latin1');
          socket.end(out);
        } catch (e) {
          this.internal(e);
          socket.destroy();
        }
      });
    });
    upReq.end();
  }
}

/**
 * The guest's bytes are read only while they can be used: not while a pipelined request waits
 * behind the one in progress, nor while the active request waits for an upstream slot. node's
 * parser reads the TLS socket directly (pausing that socket does not stop it), so the hold is
 * applied below TLS, on the guest stream itself (its TCP window closes). What slipped through
 * before is bounded by the stream buffers (tens of KiB).
 */
function updateHold(ctx: ConnCtx): void {
  ctx.hold(ctx.queue.length > 0 || ctx.waiting);
}

function countHeader(raw: string[], name: string): number {
  let n = 0;
  for (let i = 0; i < raw.length; i += 2) if (raw[i]!.toLowerCase() === name) n++;
  return n;
}

// --- the forms a value can take on the wire ------------------------------------------------------

/**
 * Percent-encodings of a printable-ASCII string, hex in upper case: encodeURIComponent's, RFC 3986
 * unreserved-only (Python's quote), every byte encoded, and both with `+` for a space (forms).
 */
function percentForms(s: string): string[] {
  const hex = (c: string) => `%${c.charCodeAt(0).toString(16).toUpperCase().padStart(2, '0')}`;
  const uric = encodeURIComponent(s);
  const unreserved = [...s].map((c) => (/[A-Za-z0-9\-._~]/.test(c) ? c : hex(c))).join('');
  const all = [...s].map(hex).join('');
  return [uric, unreserved, all, uric.replace(/%20/g, '+'), unreserved.replace(/%20/g, '+')];
}

/** from's percent forms → to's, matched in any case (servers and clients write hex either way). */
function percentPairs(from: string, to: string): ReplacePair[] {
  const t = percentForms(to);
  return percentForms(from).map((f, i) => [f, t[i]!, { caseless: true }] as ReplacePair);
}

/**
 * Base64 forms (standard and url-safe): the whole encoding, padded and not, and for text that
 * embeds the value in a longer base64 string, at each of the three alignments the characters
 * that depend only on the value's bytes (any data around it changes only the edges).
 */
function base64Pairs(from: string, to: string): ReplacePair[] {
  const out: ReplacePair[] = [];
  for (const alphabet of ['base64', 'base64url'] as const) {
    const bare = (s: string) => Buffer.from(s).toString(alphabet).replace(/=+$/, '');
    const padded = (s: string) => {
      const b = bare(s);
      return b + '='.repeat((4 - (b.length % 4)) % 4);
    };
    const core = (s: string, k: number) => {
      const bytes = Buffer.concat([Buffer.alloc(k), Buffer.from(s)]);
      return bytes.toString(alphabet).replace(/=+$/, '').slice(Math.ceil((8 * k) / 6), Math.floor((8 * bytes.length) / 6));
    };
    out.push([padded(from), padded(to)], [bare(from), bare(to)]);
    for (let k = 0; k < 3; k++) out.push([core(from, k), core(to, k)]);
  }
  return out;
}

/**
 * JSON string escapes: JSON.stringify's (`\"`, `\\`), with `\/` (PHP), Go's HTML-safe
 * `\u003c \u003e \u0026`, and every non-alphanumeric character as `\u00XX`; hex in any case.
 */
function jsonPairs(from: string, to: string): ReplacePair[] {
  const forms = (s: string): Array<[string, boolean]> => {
    const u = (c: string) => `\\u${c.charCodeAt(0).toString(16).padStart(4, '0')}`;
    const std = JSON.stringify(s).slice(1, -1);
    const go = std.replace(/[<>&]/g, u);
    return [
      [std, false],
      [std.replace(/\//g, '\\/'), false],
      [go, true],
      [go.replace(/\//g, '\\/'), true],
      [[...s].map((c) => (/[A-Za-z0-9]/.test(c) ? c : u(c))).join(''), true],
    ];
  };
  const t = forms(to);
  return forms(from).map(([f, caseless], i) => [f, t[i]![0], { caseless }] as ReplacePair);
}

/**
 * value → placeholder in every form the response side recognises: verbatim, percent-encoded,
 * base64 and JSON-escaped (each mapped to the same form of the placeholder, so a client that
 * decodes it reads the placeholder). Forms equal to another or too short to be specific are left
 * out. What a server transforms otherwise (encrypts, splits, re-encodes) is not recognised:
 * docs/network.md, Limits of secrets.
 */
export function redactionPairs(value: string, placeholder: string): ReplacePair[] {
  const out: ReplacePair[] = [[value, placeholder]];
  const seen = new Set([value]);
  for (const pair of [...percentPairs(value, placeholder), ...base64Pairs(value, placeholder), ...jsonPairs(value, placeholder)]) {
    const from = String(pair[0]);
    const key = pair[2]?.caseless ? from.toLowerCase() : from;
    if (from.length < MIN_FORM_LENGTH || seen.has(key) || seen.has(from)) continue;
    seen.add(key);
    out.push(pair);
  }
  return out;
}

/** The guest's request headers for upstream: hop-by-hop dropped, placeholders substituted. */
function requestHeaders(req: http.IncomingMessage, ctx: ConnCtx, upgrade: boolean): Record<string, string | string[]> {
  const named = new Set((req.headers.connection ?? '').toLowerCase().split(',').map((s) => s.trim()).filter(Boolean));
  // Keyed by the lower-case name: `Foo` and `foo` are one header (two keys would both be sent).
  const out: Record<string, string | string[]> = {};
  const raw = req.rawHeaders;
  for (let i = 0; i + 1 < raw.length; i += 2) {
    const lower = raw[i]!.toLowerCase();
    if (lower === 'host') continue;
    const keepForUpgrade = upgrade && (lower === 'connection' || lower === 'upgrade' || named.has(lower));
    if (!keepForUpgrade && (DROP_REQUEST.has(lower) || named.has(lower))) continue;
    const value = replaceAll(raw[i + 1]!, ctx.fwd);
    const prev = out[lower];
    out[lower] = prev === undefined ? value : Array.isArray(prev) ? [...prev, value] : [prev, value];
  }
  // The real value must come back as its placeholder: only bodies we can read can be checked.
  out['accept-encoding'] = 'identity';
  // Always the name the TLS connection (and the secret's hosts) matched, never the guest's text.
  out.host = ctx.port === 443 ? ctx.sni : `${ctx.sni}:${ctx.port}`;
  return out;
}

/** The upstream's response headers for the guest (flat rawHeaders form), values redacted. */
function responseHeaders(raw: string[], ctx: ConnCtx, upgrade = false): string[] {
  const out: string[] = [];
  for (let i = 0; i + 1 < raw.length; i += 2) {
    const lower = raw[i]!.toLowerCase();
    if (!(upgrade && (lower === 'connection' || lower === 'upgrade')) && DROP_RESPONSE.has(lower)) continue;
    out.push(replaceAll(raw[i]!, ctx.back), replaceAll(raw[i + 1]!, ctx.back));
  }
  return out;
}

function decoderFor(enc: string): Transform | undefined {
  switch (enc) {
    case 'gzip':
    case 'x-gzip':
      return zlib.createGunzip();
    case 'deflate':
      return zlib.createInflate();
    case 'br':
      return zlib.createBrotliDecompress();
    default:
      return undefined;
  }
}

/** Reads a whole body (bounded) into memory. */
function collect(stream: Readable, max: number, cb: (err: Error | null, body?: Buffer) => void): void {
  const parts: Buffer[] = [];
  let size = 0;
  let done = false;
  const finish = (err: Error | null, body?: Buffer) => {
    if (done) return;
    done = true;
    cb(err, body);
  };
  stream.on('data', (d: Buffer) => {
    size += d.length;
    if (size > max) {
      stream.destroy();
      return finish(new Error('body larger than announced'));
    }
    parts.push(d);
  });
  stream.once('end', () => finish(null, Buffer.concat(parts)));
  stream.once('error', (e) => finish(e));
  stream.once('close', () => finish(new Error('closed before the end of the body')));
}

/**
 * A Duplex that first yields `head` and then the guest's bytes, writing through to the guest:
 * it hands the peeked ClientHello back to the TLS server without relying on unshift().
 * hold(true) stops reading the guest (back-pressure to its TCP window) until hold(false).
 */
function replayed(guest: GuestStream, head: Buffer): Duplex & { hold(on: boolean): void } {
  let held = false;
  let wanted = true;
  const carrier = new Duplex({
    read() {
      wanted = true;
      if (!held) guest.resume();
    },
    write(chunk: Buffer, _enc, cb) {
      if (guest.destroyed) return cb(new Error('guest flow closed'));
      if (guest.write(chunk)) cb();
      else guest.once('drain', () => cb());
    },
    final(cb) {
      guest.end();
      cb();
    },
    destroy(err, cb) {
      // An error aborts the flow (RST); a clean close only ends our side (FIN), so bytes still
      // queued towards the guest are delivered rather than cut off by a reset.
      if (err) {
        if (!guest.destroyed) guest.destroy();
      } else if (!guest.writableEnded) guest.end();
      cb(err);
    },
  }) as Duplex & { hold(on: boolean): void };
  carrier.hold = (on: boolean) => {
    if (held === on) return;
    held = on;
    if (on) guest.pause();
    else if (wanted && !guest.destroyed) guest.resume();
  };
  if (head.length) carrier.push(head);
  guest.on('data', (d: Buffer) => {
    if (!carrier.push(d)) {
      wanted = false;
      guest.pause();
    } else if (held) guest.pause();
  });
  guest.once('end', () => carrier.push(null));
  guest.once('error', (e) => carrier.destroy(e));
  guest.once('close', () => {
    if (!carrier.destroyed) carrier.destroy();
  });
  return carrier;
}
