// `box.network.tunnel(port)` over REST, as the 0.10 client does it (observed): `POST
// …/network/tunnel?port=N` (Accept: application/json, no body) → `{uri}`, then at once an HTTP/1.1
// `CONNECT <authority>` to the uri's host:port, the authority (userinfo included: that is where a
// server names the tunnel) as request target and Host. The connection is made by tunnel() itself,
// so a refused port fails there; connect() hands it over, and forward() uses it for its first
// local connection and mints a new tunnel (POST + CONNECT) for each further one.
// The byte stream and the forwarder are the SDK's own (src/sdk/network.ts) over this opener.
import http from 'node:http';
import net from 'node:net';
import tls from 'node:tls';
import { BoxliteError, InternalError, NetworkError } from '../../errors/index.js';
import { JsBoxTunnel, type SocketAddress, type TunnelOpener } from '../../sdk/network.js';
import type { TunnelForwarderHandle } from '../../runtime/handles.js';
import { errorFromResponse, type RestTransport } from './transport.js';

/** Bound on the CONNECT answer (the server connects to the guest port first, itself bounded at 30 s). */
export const CONNECT_TIMEOUT_MS = 45_000;
/** An error answer's body is read for its message, within this long and this many bytes. */
const ERROR_BODY_MS = 2000;
const ERROR_BODY_BYTES = 64 * 1024;

type Opened = Awaited<ReturnType<TunnelOpener>>;

/** Opens one CONNECT tunnel to `uri`; resolves with the paused socket and the bytes after the answer. */
export function connectTunnel(uri: string, headers: Record<string, string> = {}, timeoutMs = CONNECT_TIMEOUT_MS): Promise<Opened> {
  let u: URL;
  try {
    u = new URL(uri);
  } catch {
    return Promise.reject(new NetworkError(`CONNECT socket setup failed: not a URL: ${JSON.stringify(uri.slice(0, 200))}`));
  }
  const secure = u.protocol === 'https:';
  if (!secure && u.protocol !== 'http:') {
    return Promise.reject(new NetworkError(`CONNECT socket setup failed: unsupported scheme ${u.protocol.replace(/:$/, '')}`));
  }
  const port = Number(u.port || (secure ? 443 : 80));
  const host = u.hostname.replace(/^\[|\]$/g, '');
  const userinfo = u.username ? `${u.username}${u.password ? `:${u.password}` : ''}@` : '';
  const authority = `${userinfo}${u.hostname}:${port}`;
  return new Promise<Opened>((resolve, reject) => {
    let settled = false;
    const fail = (err: Error) => {
      if (settled) return;
      settled = true;
      reject(err instanceof BoxliteError ? err : new NetworkError(`CONNECT socket setup failed: ${err.message}`, { cause: err }));
    };
    const req = http.request({
      method: 'CONNECT',
      path: authority,
      headers: { host: authority, ...headers },
      // No agent (so createConnection is used, and the socket is never pooled). Half-open: the guest may close its side while this one still writes (and the reverse).
      createConnection: () => {
        const raw = net.connect({ host, port, allowHalfOpen: true });
        return secure ? tls.connect({ socket: raw, servername: net.isIP(host) ? undefined : host }) : raw;
      },
    });
    req.setTimeout(timeoutMs, () => req.destroy(new NetworkError(`CONNECT ${u.hostname}:${port}: no answer within ${Math.round(timeoutMs / 1000)} s`)));
    req.on('error', fail);
    req.on('connect', (res: http.IncomingMessage, socket: net.Socket, head: Buffer) => {
      req.setTimeout(0);
      const status = res.statusCode ?? 0;
      if (status >= 200 && status < 300) {
        settled = true;
        socket.pause();
        // Until connect()/forward() takes it over, a reset must not become an uncaught error.
        socket.on('error', () => socket.destroy());
        return resolve({ socket, head });
      }
      // Node hands over the socket with the error body unread: read it for the envelope's message.
      const length = Number(res.headers['content-length'] ?? ERROR_BODY_BYTES);
      let body = head;
      const done = () => {
        clearTimeout(timer);
        socket.destroy();
        fail(errorFromResponse(status, body.subarray(0, Math.min(length, ERROR_BODY_BYTES)).toString('utf8')));
      };
      const timer = setTimeout(done, ERROR_BODY_MS);
      if (body.length >= length) return done();
      socket.on('data', (c: Buffer) => {
        body = Buffer.concat([body, c]);
        if (body.length >= Math.min(length, ERROR_BODY_BYTES)) done();
      });
      socket.on('end', done);
      socket.on('error', done);
    });
    req.end();
  });
}

function checkPort(port: number): void {
  // As the SDK's local tunnel (and the reference's SimpleBox): 0.10's native handle would truncate 1.5 to 1.
  if (!Number.isInteger(port) || port < 1 || port > 65535) throw new RangeError('port must be an integer between 1 and 65535');
}

/** `box.network.tunnel(port)` of a REST box: mints the tunnel, connects it, and returns the SDK's tunnel over it. */
export async function restTunnel(transport: RestTransport, boxPath: string, port: number): Promise<JsBoxTunnel> {
  checkPort(port);
  const mint = async (): Promise<string> => {
    const r = await transport.json<{ uri?: unknown }>('POST', `${boxPath}/network/tunnel`, { query: { port: String(port) }, accept: 'application/json' });
    if (!r || typeof r.uri !== 'string') throw new InternalError('failed to parse response: the tunnel answer has no uri');
    return r.uri;
  };
  // No key with the CONNECT, as the 0.10 client: the uri's token names the tunnel, and the uri's
  // host comes from the server's answer, so a Bearer key sent there could go anywhere.
  const dial = (uri: string) => connectTunnel(uri);
  const uri = await mint();
  let first: Opened | undefined = await dial(uri);
  const open: TunnelOpener = async () => {
    if (first) {
      const f = first;
      first = undefined;
      return f;
    }
    return dial(await mint());
  };
  const dropFirst = () => {
    first?.socket.destroy();
    first = undefined;
  };
  return new RestBoxTunnel(port, { open, uri }, dropFirst);
}

/** The SDK's tunnel, plus: a forwarder that never got a connection does not keep the first CONNECT open. */
class RestBoxTunnel extends JsBoxTunnel {
  constructor(
    port: number,
    remote: { open: TunnelOpener; uri: string },
    private readonly dropFirst: () => void,
  ) {
    super(undefined, port, remote);
  }

  override async forward(listen: SocketAddress): Promise<TunnelForwarderHandle> {
    let f: TunnelForwarderHandle;
    try {
      f = await super.forward(listen);
    } catch (err) {
      this.dropFirst();
      throw err;
    }
    const close = f.close.bind(f);
    f.close = async () => {
      this.dropFirst();
      await close();
    };
    return f;
  }
}
