import fs from 'node:fs';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, inject, it } from 'vitest';
import { JsBoxlite, type Box } from '../../dist/index.js';
import { boxlite, run, scratchHome } from './helpers.js';
import { seamFor, startNetServers, writeSeam, type NetServers, withSeamFile } from '../fixtures/netservers.js';

// Secrets end to end in a real VM (python image): the guest sees only the placeholder (env,
// echoed responses), the upstream gets the value (header, query, body, WebSocket handshake) over
// HTTPS that the guest verifies with its ordinary trust store (the box CA the agent installed),
// plain HTTP to the secret host and HTTPS to other hosts pass untouched, and the value is in none
// of the box's records, logs or process command lines. All traffic stays on 127.0.0.1 (seam).

const python = path.join(inject('root'), '.cache', 'images', 'python');
const VALUE = `sk-live-${process.pid}-Zq8Xv2Lw9`;
const PH = '<BOXLITE_SECRET:API_KEY>';

let runtime: JsBoxlite;
let servers: NetServers;
let box: Box;
let home: string;

beforeAll(async () => {
  home = scratchHome('secrets-home-');
  runtime = new JsBoxlite({ homeDir: home });
  servers = await startNetServers({ label: 'secrets' });
  const seamFile = writeSeam(scratchHome('seam-'), seamFor(servers));
  box = await runtime.create(
    { rootfsPath: python, secrets: [{ name: 'API_KEY', value: VALUE, hosts: ['secret.test'] }] },
    `secrets-${process.pid}`,
  );
  await withSeamFile(seamFile, () => box.start());
}, 240_000);

afterAll(async () => {
  if (box) await runtime.remove(box.id, true).catch(() => {});
  await servers?.close();
});

const SCRIPT = (testCa: string) => `
import os, json, ssl, socket, base64, http.client, urllib.parse
TEST_CA = ${JSON.stringify(testCa)}
ph = os.environ.get('BOXLITE_SECRET_API_KEY')
out = {'ph': ph, 'env': {k: os.environ.get(k) for k in ['SSL_CERT_FILE', 'REQUESTS_CA_BUNDLE', 'CURL_CA_BUNDLE', 'NODE_EXTRA_CA_CERTS']}}
out['bundle_has_ca'] = open('/etc/ssl/certs/ca-certificates.crt').read().count('BEGIN CERTIFICATE')
out['bound'] = any(' /etc/ssl/certs/ca-certificates.crt ' in l for l in open('/proc/self/mountinfo'))
def get(conn, method, url, body=None, headers={}):
    try:
        conn.request(method, url, body=body, headers=headers)
        r = conn.getresponse()
        return {'status': r.status, 'headers': dict(r.getheaders()), 'body': r.read().decode(errors='replace')}
    except Exception as e:
        return {'error': type(e).__name__ + ': ' + str(e)}
# The system trust store only (no cadata): the box CA must be in it.
ctx = ssl.create_default_context()
c = http.client.HTTPSConnection('secret.test', 443, context=ctx, timeout=60)
out['https_get'] = get(c, 'GET', '/echo?k=' + urllib.parse.quote(ph) + '&raw=' + ph, headers={'Authorization': 'Bearer ' + ph})
out['https_post'] = get(c, 'POST', '/echo', body=('{"key": "%s"}' % ph).encode(), headers={'Content-Type': 'application/json'})
c.close()
# WebSocket handshake by hand over TLS, then one masked text frame and its echo.
try:
    s = ctx.wrap_socket(socket.create_connection(('secret.test', 443), timeout=60), server_hostname='secret.test')
    key = base64.b64encode(os.urandom(16)).decode()
    s.sendall(('GET /ws?token=%s HTTP/1.1\\r\\nHost: secret.test\\r\\nUpgrade: websocket\\r\\nConnection: Upgrade\\r\\n'
               'Sec-WebSocket-Key: %s\\r\\nSec-WebSocket-Version: 13\\r\\nX-Api-Key: %s\\r\\n\\r\\n' % (urllib.parse.quote(ph), key, ph)).encode())
    head = b''
    while b'\\r\\n\\r\\n' not in head:
        d = s.recv(1)
        if not d: break
        head += d
    msg = b'hello ' + ph.encode()
    mask = os.urandom(4)
    s.sendall(bytes([0x81, 0x80 | len(msg)]) + mask + bytes(b ^ mask[i % 4] for i, b in enumerate(msg)))
    hdr = s.recv(2)
    data = b''
    while len(data) < (hdr[1] & 0x7f):
        data += s.recv(1024)
    out['ws'] = {'status': head.split(b'\\r\\n')[0].decode(), 'echo': data.decode()}
    s.close()
except Exception as e:
    out['ws'] = {'error': type(e).__name__ + ': ' + str(e)}
# Plain HTTP to the secret host: never intercepted.
c = http.client.HTTPConnection('secret.test', 80, timeout=60)
out['http_plain'] = get(c, 'GET', '/plain?k=' + ph, headers={'X-Key': ph})
c.close()
# HTTPS to a host that is no secret's: passes through (the test server's own certificate).
c = http.client.HTTPSConnection('other.test', 443, context=ssl.create_default_context(cadata=TEST_CA), timeout=60)
out['https_other'] = get(c, 'GET', '/other?k=' + ph, headers={'X-Key': ph})
c.close()
# Nothing in the container's processes carries the value (it never entered the VM).
seen = []
for p in os.listdir('/proc'):
    if p.isdigit():
        for f in ('environ', 'cmdline'):
            try:
                seen.append(open('/proc/%s/%s' % (p, f), 'rb').read())
            except Exception:
                pass
out['proc_bytes'] = sum(len(x) for x in seen)
out['proc_has_ph'] = any(ph.encode() in x for x in seen)
out['proc_blob'] = base64.b64encode(b'\\n'.join(seen)).decode()
print(json.dumps(out))
`;

describe('secrets in a real VM', () => {
  it('the guest sees placeholders, the upstream the value; nothing else is touched', async () => {
    const before = await box.metrics();
    const r = await run(box, 'python3', ['-c', SCRIPT(servers.testCa.certPem)]);
    expect(r.stderr).toBe('');
    expect(r.exitCode).toBe(0);
    // The whole of what the guest saw: the value appears nowhere in it.
    const line = r.stdout.trim().split('\n').pop()!;
    const out = JSON.parse(line);
    const procBlob = Buffer.from(out.proc_blob, 'base64');
    expect(procBlob.includes(Buffer.from(VALUE))).toBe(false);
    delete out.proc_blob;
    expect(line.includes(VALUE)).toBe(false);

    expect(out.ph).toBe(PH);
    expect(Object.values(out.env)).toEqual(Array(4).fill('/etc/ssl/certs/ca-certificates.crt'));
    // The image's bundle (if it has one) plus the box CA, bound over /etc/ssl/certs/ca-certificates.crt.
    expect(out.bundle_has_ca).toBeGreaterThanOrEqual(1);
    expect(out.bound).toBe(true);
    expect(out.proc_has_ph).toBe(true);
    expect(out.proc_bytes).toBeGreaterThan(0);

    // HTTPS GET: header and query substituted upstream; the echo comes back with placeholders.
    expect(out.https_get.error).toBeUndefined();
    expect(out.https_get.status).toBe(200);
    const echoed = JSON.parse(out.https_get.body);
    expect(echoed.headers.authorization).toBe(`Bearer ${PH}`);
    const seenGet = servers.requests.find((q) => q.url.startsWith('/echo?k='))!;
    expect(seenGet.proto).toBe('https');
    expect(seenGet.servername).toBe('secret.test');
    expect(seenGet.headers.authorization).toBe(`Bearer ${VALUE}`);
    expect(seenGet.url).toBe(`/echo?k=${encodeURIComponent(VALUE)}&raw=${VALUE}`);
    // POST body.
    expect(out.https_post.status).toBe(200);
    const seenPost = servers.requests.find((q) => q.method === 'POST' && q.url === '/echo')!;
    expect(seenPost.body).toBe(`{"key": "${VALUE}"}`);
    expect(JSON.parse(out.https_post.body).body).toBe(`{"key": "${PH}"}`);
    // WebSocket: the handshake substituted, then frames carried as they are.
    expect(out.ws.error).toBeUndefined();
    expect(out.ws.status).toBe('HTTP/1.1 101 Switching Protocols');
    expect(out.ws.echo).toBe(`hello ${PH}`);
    const seenWs = servers.requests.find((q) => q.proto === 'wss')!;
    expect(seenWs.headers['x-api-key']).toBe(VALUE);
    expect(seenWs.url).toBe(`/ws?token=${encodeURIComponent(VALUE)}`);
    // Plain HTTP to the secret host and HTTPS to another host: untouched.
    expect(out.http_plain.status).toBe(200);
    const seenPlain = servers.requests.find((q) => q.url.startsWith('/plain'))!;
    expect(seenPlain.proto).toBe('http');
    expect(seenPlain.headers['x-key']).toBe(PH);
    expect(seenPlain.url).toBe(`/plain?k=${PH}`);
    expect(out.https_other.status).toBe(200);
    const seenOther = servers.requests.find((q) => q.url.startsWith('/other'))!;
    expect(seenOther.headers['x-key']).toBe(PH);

    const after = await box.metrics();
    expect(after.networkTcpConnections! - (before.networkTcpConnections ?? 0)).toBeGreaterThanOrEqual(4);
    expect(after.networkBytesSent!).toBeGreaterThan(before.networkBytesSent ?? 0);
  }, 300_000);

  it('the value is in no record, log or command line; only in the 0600 secrets file', async () => {
    const info = JSON.stringify(await box.info());
    const inspect = await box.inspect();
    expect(info.includes(VALUE)).toBe(false);
    expect(JSON.stringify(inspect).includes(VALUE)).toBe(false);
    expect(JSON.stringify(inspect.config.secrets)).toBe(JSON.stringify([{ name: 'API_KEY', hosts: ['secret.test'], placeholder: PH }]));
    const dir = inspect.paths.dir;
    const secretsFile = path.join(dir, 'secrets.json');
    expect(fs.statSync(secretsFile).mode & 0o777).toBe(0o600);
    expect(fs.readFileSync(secretsFile, 'utf8')).toContain(VALUE);
    // Every other file of the box (config.json, logs, shim.json, ...) and the database.
    const files: string[] = [];
    const walk = (d: string) => {
      for (const e of fs.readdirSync(d, { withFileTypes: true })) {
        const p = path.join(d, e.name);
        if (e.isDirectory()) walk(p);
        else if (e.isFile() && p !== secretsFile && !p.endsWith('.qcow2') && !/disk/.test(e.name)) files.push(p);
      }
    };
    walk(dir);
    walk(path.join(home, 'db'));
    expect(files.some((f) => f.endsWith('config.json'))).toBe(true);
    expect(files.some((f) => f.endsWith('shim.log'))).toBe(true);
    for (const f of files) expect(fs.readFileSync(f).includes(Buffer.from(VALUE)), f).toBe(false);
    // The shim's and QEMU's command lines and environments.
    const state = JSON.parse(fs.readFileSync(path.join(dir, 'shim.json'), 'utf8'));
    for (const pid of [state.shimPid, state.qemuPid]) {
      for (const f of ['cmdline', 'environ']) {
        expect(fs.readFileSync(`/proc/${pid}/${f}`).includes(Buffer.from(VALUE)), `${pid}/${f}`).toBe(false);
      }
    }
  }, 120_000);
});

describe('secrets in an exec-only box', () => {
  it("the container waits for the box CA (boxlite.trust) and starts with it in its trust store", async () => {
    const busybox = inject('image');
    // No entrypoint and no cmd: no main process, the agent starts the container itself.
    const b = await runtime.create({ rootfsPath: busybox, entrypoint: [], cmd: [], secrets: [{ name: 'TOKEN', value: VALUE, hosts: ['*.secret.test'], placeholder: 'PLACEHOLDER_TOKEN' }] });
    try {
      const r = await run(b, 'sh', ['-c', 'echo "$BOXLITE_SECRET_TOKEN $SSL_CERT_FILE"; grep -c "BEGIN CERTIFICATE" /etc/ssl/certs/ca-certificates.crt; grep -c " /etc/ssl/certs/ca-certificates.crt " /proc/self/mountinfo']);
      expect(r.stderr).toBe('');
      const [envLine, certs, mounts] = r.stdout.trim().split('\n');
      expect(envLine).toBe('PLACEHOLDER_TOKEN /etc/ssl/certs/ca-certificates.crt');
      expect(Number(certs)).toBeGreaterThanOrEqual(1);
      expect(Number(mounts)).toBeGreaterThanOrEqual(1);
      expect((await b.inspect()).mainProcess).toBeNull();
      const consoleLog = fs.readFileSync((await b.inspect()).paths.consoleLog, 'utf8');
      expect(consoleLog).toMatch(/TRUST: \d+ bytes of CA certificates/);
      expect(consoleLog.includes(VALUE)).toBe(false);
      // A second boot reads the values back from the box's secrets file: same env, a new CA.
      await b.stop();
      const again = (await runtime.get(b.id))!;
      const r2 = await run(again, 'sh', ['-c', 'echo "$BOXLITE_SECRET_TOKEN"; grep -c "BEGIN CERTIFICATE" /etc/ssl/certs/ca-certificates.crt']);
      expect(r2.stdout.trim().split('\n')).toEqual(['PLACEHOLDER_TOKEN', certs]);
      await again.stop();
    } finally {
      await runtime.remove(b.id, true).catch(() => {});
    }
  }, 240_000);
});

describe('boxlite run --secret-env', () => {
  it('takes the value from the environment; the box sees the placeholder only', async () => {
    process.env.BOXLITE_TEST_SECRET_VALUE = VALUE;
    try {
      const r = await boxlite(
        ['run', '--rm', '--rootfs', inject('image'), '--secret-env', 'CLI_KEY=BOXLITE_TEST_SECRET_VALUE@api.secret.test', 'sh', '-c', 'echo "$BOXLITE_SECRET_CLI_KEY"'],
        undefined,
        home,
      );
      expect(r.stderr).toBe('');
      expect(r.code).toBe(0);
      expect(r.stdout).toBe('<BOXLITE_SECRET:CLI_KEY>\n');
      const bad = await boxlite(['create', '--rootfs', inject('image'), '--secret', 'NOPE=x@'], undefined, home);
      expect(bad.code).not.toBe(0);
      expect(bad.stderr).toMatch(/--secret needs NAME=VALUE@HOST/);
    } finally {
      delete process.env.BOXLITE_TEST_SECRET_VALUE;
    }
  }, 240_000);
});
