// Regressions found reviewing the protocol enforcement and the shim split: each test is named
// after the bug it guards against, and fails on the code before its fix.
import fs from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { encode, FrameDecoder, OUTPUT_WINDOW, STDIN_WINDOW, type Message } from '../../dist/protocol/codec.js';
import { Link } from '../../dist/protocol/link.js';
import { ShimClient } from '../../dist/shim/client.js';
import { StreamRouter } from '../../dist/shim/router.js';
import { openDatabase } from '../../dist/store/db.js';
import { agentPeer, boxDir, rawClient, run, startBox, waitFor, type HostBox } from './helpers.js';

const boxes: HostBox[] = [];
afterEach(async () => {
  for (const b of boxes.splice(0)) await b.dispose();
});
async function box(dir?: string): Promise<HostBox> {
  const b = await startBox(agentPeer(), dir);
  boxes.push(b);
  return b;
}

const openFds = (pid: number | 'self') => fs.readdirSync(`/proc/${pid}/fd`).length;

/** Settles with what `p` settles with, or rejects after `ms`: a hung call fails the test instead of the run. */
function within<T>(p: Promise<T>, ms: number): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  const late = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error(`still pending after ${ms} ms`)), ms);
  });
  return Promise.race([p, late]).finally(() => clearTimeout(timer));
}

describe('shim and client regressions', () => {
  it('an execution whose client left with its output window empty still ends (the agent frees its stream)', async () => {
    const b = await box();
    const baseline = openFds(b.agentPid);
    const other = await ShimClient.connect(path.join(b.dir, 'control.sock'));
    let received = 0;
    let lost: Error | undefined;
    // Never grants credit: the agent fills the 1 MiB window and `head` blocks on a full pipe.
    other.openExec(
      { flags: 0, rows: 0, cols: 0, timeoutMs: 0, user: '', cwd: '/', argv: ['head', '-c', '3000000', '/dev/zero'], env: ['PATH=/usr/bin:/bin'] },
      {
        onMessage(m) {
          if (m.type === 'STDOUT') received += m.data.length;
        },
        onLost(err) {
          lost = err;
        },
      },
    );
    await waitFor(() => received === OUTPUT_WINDOW);
    expect(openFds(b.agentPid)).toBeGreaterThan(baseline);
    other.close();
    expect(lost).toMatchObject({ code: 'Portal' });
    // The shim kills the process; the agent must then be able to forward what the pipe
    // holds and end the stream, closing its pipes. Before the fix it waited for credit forever.
    await waitFor(() => openFds(b.agentPid) === baseline, 5_000);
    // And the box carries on.
    expect((await run(b.client, ['echo', 'ok'])).stdout.toString()).toBe('ok\n');
  });

  it('openExec on a client whose link is gone rejects at once instead of waiting forever', async () => {
    const b = await box();
    const other = await ShimClient.connect(path.join(b.dir, 'control.sock'));
    other.close();
    await expect(within(run(other, ['echo', 'never']), 2_000)).rejects.toMatchObject({ code: 'Portal' });
    await expect(within(other.request('info'), 2_000)).rejects.toMatchObject({ code: 'Portal' });
  });

  it('a later call on a dead link rejects with the reason the link ended', async () => {
    const b = await box();
    const other = await ShimClient.connect(path.join(b.dir, 'control.sock'));
    await b.client.request('stop');
    await waitFor(() => other.isClosed);
    const err = await within(run(other, ['echo', 'never']), 2_000).catch((e: Error & { code?: string }) => e);
    expect(err).toMatchObject({ code: 'Portal', message: 'portal error: lost the connection to the box (the box stopped)' });
  });

  it('a client that overruns its STDIN window loses its own connection, told why (the agent would drop the input silently)', async () => {
    const b = await box();
    const raw = await rawClient(b.dir);
    raw.send({ type: 'EXEC', stream: 1, flags: 0, rows: 0, cols: 0, timeoutMs: 0, user: '', cwd: '/', argv: ['sleep', '5'], env: ['PATH=/usr/bin:/bin'] });
    await waitFor(() => raw.got.some((m) => m.type === 'STARTED'));
    // `sleep` reads nothing: at most a pipe's worth (64 KiB) can be returned, so 600 KiB
    // sent without waiting overruns the 256 KiB window however the frames interleave.
    for (let i = 0; i < 3; i++) raw.send({ type: 'STDIN', stream: 1, data: Buffer.alloc(200 * 1024, 0x61) });
    await within(raw.closed, 3_000);
    const error = raw.got.find((m) => m.type === 'ERROR' && m.stream === 0) as { message: string } | undefined;
    expect(error?.message).toMatch(
      new RegExp(`^portal error: protocol violation by a client: STDIN on stream 1 overran the ${STDIN_WINDOW} byte window`),
    );
    // The box and its other clients carry on.
    expect((await run(b.client, ['echo', 'ok'])).stdout.toString()).toBe('ok\n');
  });

  it('a full disk under the shim log does not take the box down', async () => {
    const dir = boxDir();
    fs.mkdirSync(path.join(dir, 'logs'));
    // Every write to /dev/full fails with ENOSPC; the shim logs from its socket handlers.
    fs.symlinkSync('/dev/full', path.join(dir, 'logs', 'shim.log'));
    const b = await box(dir);
    const r = await run(b.client, ['sh', '-c', 'echo out; exit 3']);
    expect(r.stdout.toString()).toBe('out\n');
    expect(r.exit?.code).toBe(3);
    expect((await b.client.request('ping')).rttMs).toBeGreaterThan(0);
  });
});

describe('agent PING correlation', () => {
  /** A StreamRouter in this process over a socket to a scripted agent that drops its first PING. */
  async function routerWithLossyAgent(): Promise<{ router: StreamRouter; close(): void }> {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'boxlite-router-'));
    const sock = path.join(dir, 'agent.sock');
    let pings = 0;
    const server = net.createServer((s) => {
      const decoder = new FrameDecoder();
      s.on('data', (c) => {
        for (const m of decoder.push(c)) {
          if (m.type === 'PING' && ++pings > 1) s.write(encode({ type: 'PONG', stream: 0, data: m.data }));
        }
      });
      s.on('error', () => {});
    });
    await new Promise<void>((r) => server.listen(sock, r));
    const socket = net.createConnection(sock);
    await new Promise((r) => socket.once('connect', r));
    const link = new Link(socket);
    const hello = { type: 'HELLO', stream: 0, major: 1, minor: 0, features: 0x1f, version: 'lossy' } as Extract<Message, { type: 'HELLO' }>;
    const router = new StreamRouter(link, hello, { log() {}, onViolation() {}, onControl() {} });
    link.onMessage((m) => router.fromAgent(m));
    return {
      router,
      close() {
        link.close();
        server.close();
        fs.rmSync(dir, { recursive: true, force: true });
      },
    };
  }

  it('a PING whose PONG was lost does not make every later ping time out', async () => {
    const { router, close } = await routerWithLossyAgent();
    try {
      await expect(router.pingAgent(100)).rejects.toMatchObject({ code: 'Portal', message: expect.stringMatching(/did not answer PING within 100 ms/) });
      // Before the fix the second PONG was taken for the first PING's, and this one waited on.
      const rtt = await router.pingAgent(2_000);
      expect(rtt).toBeGreaterThan(0);
      expect(rtt).toBeLessThan(1_000);
      expect(await router.pingAgent(2_000)).toBeLessThan(1_000);
    } finally {
      close();
    }
  });
});

describe('SQLite at the store boundary', () => {
  it('a database that opens but cannot be used does not keep its file descriptor', () => {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'boxlite-db-'));
    try {
      fs.writeFileSync(path.join(dir, 'boxes.db'), Buffer.alloc(8192, 0x5a));
      const before = openFds('self');
      for (let i = 0; i < 20; i++) {
        expect(() => openDatabase(dir, 'boxes', [])).toThrow(/^storage error: cannot open database .*file is not a database/);
      }
      expect(openFds('self')).toBe(before);
    } finally {
      fs.rmSync(dir, { recursive: true, force: true });
    }
  });
});
