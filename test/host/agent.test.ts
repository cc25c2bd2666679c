// The shim, its client and stream routing against the real agent in host mode (no VM).
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { OUTPUT_WINDOW } from '../../dist/protocol/codec.js';
import { ShimClient } from '../../dist/shim/client.js';
import { Execution } from '../../dist/runtime/execution.js';
import { agentPeer, alive, rawClient, run, startBox, waitFor, type HostBox } from './helpers.js';

describe('shim + client against the host-mode agent', () => {
  let box: HostBox;
  beforeAll(async () => {
    box = await startBox(agentPeer());
  });
  afterAll(async () => {
    await box?.dispose();
  });

  it('runs a command: output, stderr, exit code', async () => {
    const r = await run(box.client, ['sh', '-c', 'echo out; echo err >&2; exit 7']);
    expect(r.started).toBe(true);
    expect(r.stdout.toString()).toBe('out\n');
    expect(r.stderr.toString()).toBe('err\n');
    expect(r.exit).toMatchObject({ code: 7, reason: 0 });
  });

  it('reports a missing command as reason 3 without STARTED', async () => {
    const r = await run(box.client, ['no-such-command-here']);
    expect(r.started).toBe(false);
    expect(r.exit).toMatchObject({ code: 127, reason: 3 });
  });

  it('carries stdin past the stdin window and output past the output window', async () => {
    const input = Buffer.alloc(3 * 1024 * 1024);
    for (let i = 0; i < input.length; i++) input[i] = (i * 7) & 0xff;
    const r = await run(box.client, ['cat'], { stdin: input });
    expect(r.exit?.code).toBe(0);
    expect(r.stdout.length).toBe(input.length);
    expect(r.stdout.equals(input)).toBe(true);
  });

  it('stops at the output window while nobody grants credit (back-pressure, not buffering)', async () => {
    const client = await ShimClient.connect(path.join(box.dir, 'control.sock'));
    let received = 0;
    const channel = client.openExec(
      { flags: 0, rows: 0, cols: 0, timeoutMs: 0, user: '', cwd: '/', argv: ['head', '-c', String(3 * OUTPUT_WINDOW), '/dev/zero'], env: ['PATH=/usr/bin:/bin'] },
      {
        onMessage(m) {
          if (m.type === 'STDOUT') received += m.data.length;
        },
        onLost() {},
      },
    );
    // One window arrives, then nothing more while no credit comes back.
    await waitFor(() => received >= OUTPUT_WINDOW);
    await new Promise((r) => setTimeout(r, 300));
    expect(received).toBe(OUTPUT_WINDOW);
    channel.grant(1, OUTPUT_WINDOW);
    await waitFor(() => received >= 2 * OUTPUT_WINDOW);
    await new Promise((r) => setTimeout(r, 300));
    expect(received).toBe(2 * OUTPUT_WINDOW);
    client.close();
  });

  it("the SDK's Execution reads 6 MiB through its credit-granting output streams", async () => {
    let execution: Execution | undefined;
    const started = new Promise<Execution>((resolve, reject) => {
      const channel = box.client.openExec(
        { flags: 0, rows: 0, cols: 0, timeoutMs: 0, user: '', cwd: '/', argv: ['sh', '-c', 'head -c 6291456 /dev/zero; echo done >&2; exit 3'], env: ['PATH=/usr/bin:/bin'] },
        {
          onMessage(m) {
            if (m.type === 'STARTED') {
              execution = new Execution('host-1', channel, m.pid, { onExit() {}, onStdin() {} });
              resolve(execution);
            } else execution?.handle(m);
          },
          onLost: reject,
        },
      );
    });
    const ex = await started;
    let bytes = 0;
    for await (const chunk of await ex.stdout()) bytes += chunk.length;
    const err = await (await ex.stderr()).next();
    expect(bytes).toBe(6 * 1024 * 1024);
    expect(err).toBe('done\n');
    expect(await ex.wait()).toEqual({ exitCode: 3 });
  });

  it('answers the typed control commands', async () => {
    const info = await box.client.request('info');
    expect(info.shimPid).toBe(box.shimPid);
    expect(info.agentFeatures).toBe(0x7f);
    const ping = await box.client.request('ping');
    expect(ping.rttMs).toBeGreaterThan(0);
    expect(ping.rttMs).toBeLessThan(5_000);
  });

  it('refuses an unknown control op with a coded error and keeps the link', async () => {
    const { socket, got, send } = await rawClient(box.dir);
    send({ type: 'CONTROL', stream: 1, data: Buffer.from('{"op":"reboot"}') });
    send({ type: 'CONTROL', stream: 2, data: Buffer.from('not json') });
    send({ type: 'CONTROL', stream: 3, data: Buffer.from('{"op":"ping"}') });
    await waitFor(() => got.length >= 3);
    const bodies = Object.fromEntries(
      got.map((m) => [m.stream, JSON.parse((m as { data: Buffer }).data.toString())] as const),
    );
    expect(bodies[1]).toMatchObject({ ok: false, code: 'InvalidArgument' });
    expect(bodies[2]).toMatchObject({ ok: false, code: 'Portal' });
    expect(bodies[3]).toMatchObject({ ok: true });
    socket.destroy();
  });

  it('refuses credit beyond 2^31 from a client instead of passing it to the agent', async () => {
    const { socket, got, send } = await rawClient(box.dir);
    send({ type: 'EXEC', stream: 9, flags: 0, rows: 0, cols: 0, timeoutMs: 0, user: '', cwd: '/', argv: ['sleep', '1'], env: ['PATH=/usr/bin:/bin'] });
    await waitFor(() => got.some((m) => m.type === 'STARTED'));
    send({ type: 'WINDOW', stream: 9, fd: 1, bytes: 2 ** 31 });
    await waitFor(() => got.some((m) => m.type === 'ERROR'));
    expect(got.find((m) => m.type === 'ERROR')).toMatchObject({ stream: 9, message: 'WINDOW would exceed 2147483648 bytes of credit' });
    // The agent never saw it: the execution ends normally.
    await waitFor(() => got.some((m) => m.type === 'EXIT'));
    expect(got.find((m) => m.type === 'EXIT')).toMatchObject({ code: 0, reason: 0 });
    socket.destroy();
  });

  it('closes only the client that sent a malformed frame', async () => {
    const { socket, closed } = await rawClient(box.dir);
    socket.write(Buffer.from('garbage garbage garbage'));
    await closed;
    const r = await run(box.client, ['echo', 'still here']);
    expect(r.stdout.toString()).toBe('still here\n');
  });

  it('kills the executions of a client that disconnects', async () => {
    const other = await ShimClient.connect(path.join(box.dir, 'control.sock'));
    let pid = 0;
    other.openExec(
      { flags: 0, rows: 0, cols: 0, timeoutMs: 0, user: '', cwd: '/', argv: ['sleep', '60'], env: ['PATH=/usr/bin:/bin'] },
      {
        onMessage(m) {
          if (m.type === 'STARTED') pid = m.pid;
        },
        onLost() {},
      },
    );
    await waitFor(() => pid > 0);
    other.close();
    await waitFor(() => !alive(pid));
  });
});

describe('HELLO feature bits', () => {
  // An agent that advertises everything but TOOL (0x10): an agent from before the toolbox.
  let box: HostBox;
  beforeAll(async () => {
    box = await startBox(agentPeer(0x0f));
  });
  afterAll(async () => {
    await box?.dispose();
  });

  it('refuses a TOOL execution at once with Unsupported naming the feature', async () => {
    const t0 = performance.now();
    let err: unknown;
    try {
      await run(box.client, ['busybox', 'tar', '-x'], { flags: 0x2 });
    } catch (e) {
      err = e;
    }
    expect(performance.now() - t0).toBeLessThan(100);
    expect(err).toMatchObject({ code: 'Unsupported', name: 'UnsupportedError' });
    expect((err as Error).message).toMatch(/^unsupported: .*TOOL \(0x10/);
    // The rest of the agent still works.
    expect((await run(box.client, ['echo', 'ok'])).stdout.toString()).toBe('ok\n');
  });

  it('the shim refuses it too for a client that does not check', async () => {
    const { socket, got, send } = await rawClient(box.dir);
    send({ type: 'EXEC', stream: 5, flags: 0x2, rows: 0, cols: 0, timeoutMs: 0, user: '', cwd: '/', argv: ['busybox'], env: [] });
    await waitFor(() => got.length > 0);
    expect(got[0]).toMatchObject({ type: 'ERROR', stream: 5 });
    expect((got[0] as { message: string }).message).toMatch(/^unsupported: the guest agent lacks TOOL/);
    socket.destroy();
  });

  it('names TTY and TIMEOUT when those are missing', async () => {
    const box2 = await startBox(agentPeer(0x05));
    try {
      await expect(run(box2.client, ['true'], { flags: 0x1 })).rejects.toThrow(/TTY \(0x2/);
      await expect(run(box2.client, ['true'], { timeoutMs: 1000 })).rejects.toThrow(/TIMEOUT \(0x8/);
      expect((await run(box2.client, ['true'])).exit?.code).toBe(0);
    } finally {
      await box2.dispose();
    }
  });
});
