// The protocol is enforced, not trusted: misbehaving agents (fake-agent.mjs, spawned by the
// real shim in place of the VM) and a misbehaving shim (an in-process server) end the box's
// link with a Portal error; nothing throws inside a socket handler, the process survives.
import fs from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { encode, FrameDecoder, HEADER_SIZE, OUTPUT_WINDOW, type Message } from '../../dist/protocol/codec.js';
import { launchShim, ShimClient } from '../../dist/shim/client.js';
import { boxDir, fakeAgent, run, shimConfig, startBox, waitGone, type HostBox } from './helpers.js';

let uncaught: unknown[] = [];
const onUncaught = (e: unknown) => uncaught.push(e);
process.on('uncaughtException', onUncaught);
process.on('unhandledRejection', onUncaught);
afterEach(() => {
  expect(uncaught).toEqual([]);
  uncaught = [];
});

describe('a misbehaving agent', () => {
  const boxes: HostBox[] = [];
  afterEach(async () => {
    for (const b of boxes.splice(0)) await b.dispose();
  });

  async function lostWith(scenario: string, env?: Record<string, string>): Promise<{ err: Error & { code?: string }; box: HostBox }> {
    const saved = { ...process.env };
    Object.assign(process.env, env);
    const box = await startBox(fakeAgent(scenario)).finally(() => (process.env = saved));
    boxes.push(box);
    const err = await run(box.client, ['anything'], { credit: false }).then(
      () => {
        throw new Error('the execution finished instead of losing the box');
      },
      (e: Error & { code?: string }) => e,
    );
    return { err, box };
  }

  it('overrunning its output window is cut off with Portal, and host memory stays bounded', async () => {
    const bytesFile = path.join(os.tmpdir(), `boxlite-overrun-${process.pid}`);
    const rssBefore = process.memoryUsage().rss;
    const { err, box } = await lostWith('overrun', { BYTES_FILE: bytesFile });
    expect(err.code).toBe('Portal');
    expect(err.message).toMatch(/^portal error: lost the connection to the box: protocol violation: the guest agent overran its STDOUT window on stream 1 \(65536 bytes sent, 0 granted\)/);
    // The shim killed the box: its process is gone and so is the fake agent.
    expect(await waitGone(box.shimPid, 5_000)).toBe(true);
    const attempted = Number(fs.readFileSync(bytesFile, 'utf8'));
    fs.rmSync(bytesFile, { force: true });
    // The agent was stopped long before its 64 MiB, and this process did not buffer them.
    expect(attempted).toBeLessThan(16 * 1024 * 1024);
    expect(process.memoryUsage().rss - rssBefore).toBeLessThan(48 * 1024 * 1024);
  });

  it.each([
    // 'this' read as a length is 0x74686973: over MAX_PAYLOAD, refused before any buffering.
    ['garbage', /malformed frame from the peer: too_large: payload of 1952999795 bytes/],
    ['bad-length', /malformed frame from the peer: too_large/],
    ['bad-payload', /malformed frame from the peer: bad_payload: trailing bytes/],
    ['host-type', /protocol violation: the guest agent sent EXEC, which only a host may send/],
    ['unknown-stream', /protocol violation: the guest agent sent STDOUT on stream 1001, which is not open/],
  ])('%s ends the box with a Portal error', async (scenario, pattern) => {
    const { err, box } = await lostWith(scenario);
    expect(err.code).toBe('Portal');
    expect(err.message).toMatch(pattern);
    expect(await waitGone(box.shimPid, 5_000)).toBe(true);
  });

  it('a HELLO of another major version fails the boot with Portal', async () => {
    const dir = boxDir();
    try {
      await expect(launchShim(shimConfig(dir, fakeAgent('major2')))).rejects.toMatchObject({
        code: 'Portal',
        message: expect.stringMatching(/agent speaks protocol 2\.0, host needs 1\.x/),
      });
    } finally {
      fs.rmSync(dir, { recursive: true, force: true });
    }
  });
});

/** A fake shim: accepts one client, answers its HELLO, then does `misbehave` with the socket. */
async function fakeShim(misbehave: (socket: net.Socket, m: Message) => void): Promise<{ path: string; close(): void }> {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'boxlite-fakeshim-'));
  const sock = path.join(dir, 'control.sock');
  const server = net.createServer((socket) => {
    const decoder = new FrameDecoder();
    socket.on('error', () => {});
    socket.on('data', (c) => {
      for (const m of decoder.push(c)) {
        if (m.type === 'HELLO') socket.write(encode({ ...m, features: 0x1f, version: 'fake-shim' }));
        else misbehave(socket, m);
      }
    });
  });
  await new Promise<void>((r) => server.listen(sock, r));
  return {
    path: sock,
    close() {
      server.close();
      fs.rmSync(dir, { recursive: true, force: true });
    },
  };
}

describe('a misbehaving shim', () => {
  const reply = (socket: net.Socket, stream: number, data: Buffer | string) =>
    socket.write(encode({ type: 'REPLY', stream, data: Buffer.from(data) }));

  it.each([
    ['bad JSON in a REPLY', (s: net.Socket, m: Message) => reply(s, m.stream, '{"ok": tru'), /malformed REPLY from the box shim/],
    ['a REPLY that is not an object', (s: net.Socket, m: Message) => reply(s, m.stream, '42'), /malformed REPLY from the box shim: not an object/],
    ['garbage bytes', (s: net.Socket) => s.write(Buffer.from('HTTP/1.1 400 Bad Request\r\n\r\n')), /malformed frame from the peer/],
    [
      'a length beyond MAX_PAYLOAD',
      (s: net.Socket, m: Message) => {
        const h = Buffer.alloc(HEADER_SIZE);
        h.writeUInt32BE(0xffffffff, 0);
        h.writeUInt8(0x21, 4);
        h.writeUInt32BE(m.stream, 8);
        s.write(h);
      },
      /too_large/,
    ],
    ['a CONTROL frame (client-only)', (s: net.Socket, m: Message) => s.write(encode({ type: 'CONTROL', stream: m.stream, data: Buffer.from('{}') })), /sent CONTROL, which only a client may send/],
  ])('%s rejects the call with Portal and the process survives', async (_name, misbehave, pattern) => {
    const shim = await fakeShim(misbehave);
    try {
      const client = await ShimClient.connect(shim.path);
      const err = await client.request('info').catch((e: Error & { code?: string }) => e);
      expect(err).toMatchObject({ code: 'Portal' });
      expect((err as Error).message).toMatch(pattern);
      expect(client.isClosed).toBe(true);
      // Later calls on the dead link reject at once too, never hang.
      await expect(client.request('ping')).rejects.toMatchObject({ code: 'Portal' });
    } finally {
      shim.close();
    }
  });

  it('output beyond the granted window ends the link with Portal', async () => {
    const shim = await fakeShim((s, m) => {
      if (m.type !== 'EXEC') return;
      s.write(encode({ type: 'STARTED', stream: m.stream, pid: 1 }));
      const chunk = Buffer.alloc(256 * 1024);
      for (let sent = 0; sent <= OUTPUT_WINDOW; sent += chunk.length) s.write(encode({ type: 'STDOUT', stream: m.stream, data: chunk }));
    });
    try {
      const client = await ShimClient.connect(shim.path);
      const err = await run(client, ['x'], { credit: false }).catch((e: Error & { code?: string }) => e);
      expect(err).toMatchObject({ code: 'Portal' });
      expect((err as Error).message).toMatch(/STDOUT on stream 1 overran the granted window/);
    } finally {
      shim.close();
    }
  });

  it('a shim that never answers a control request is a Timeout, not a hang', async () => {
    const shim = await fakeShim(() => {});
    try {
      const client = await ShimClient.connect(shim.path);
      await expect(client.request('info', 200)).rejects.toMatchObject({ code: 'Timeout' });
      client.close();
    } finally {
      shim.close();
    }
  });

  it('a server that never says HELLO fails the connect with Portal', async () => {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'boxlite-fakeshim-'));
    const sock = path.join(dir, 'control.sock');
    const server = net.createServer(() => {});
    await new Promise<void>((r) => server.listen(sock, r));
    try {
      await expect(ShimClient.connect(sock, 200)).rejects.toMatchObject({ code: 'Portal' });
    } finally {
      server.close();
      fs.rmSync(dir, { recursive: true, force: true });
    }
  });
});
