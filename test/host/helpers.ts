// The host test tier: the real shim process and client, no VM. The shim runs its agent peer
// (ShimConfig.agentPeer) instead of QEMU: the real agent in --host-mode, or a fake agent.
import fs from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { launchShim, ShimClient, type ExecChannel } from '../../dist/shim/client.js';
import type { ShimConfig } from '../../dist/shim/config.js';
import { encode, FrameDecoder, type Message } from '../../dist/protocol/codec.js';
import type { BoxliteError } from '../../dist/errors/index.js';
import { isProcessAlive } from '../../dist/util/fs.js';

export const ROOT = path.resolve(import.meta.dirname, '../..');
export const AGENT = path.join(ROOT, 'guest/build/boxlite-guest');
export const FAKE_AGENT = path.join(import.meta.dirname, 'fake-agent.mjs');

export interface HostBox {
  dir: string;
  client: ShimClient;
  shimPid: number;
  /** The agent peer's pid (what a real box reports as its QEMU pid). */
  agentPid: number;
  /** Stops the shim (graceful, then SIGKILL) and removes the box directory. */
  dispose(): Promise<void>;
}

export function agentPeer(features?: number): ShimConfig['agentPeer'] {
  const args = ['--host-mode', '--socket', '{agentSocket}'];
  if (features !== undefined) args.push('--features', String(features));
  return { command: AGENT, args };
}

export function fakeAgent(scenario: string): ShimConfig['agentPeer'] {
  return { command: process.execPath, args: [FAKE_AGENT, scenario, '{agentSocket}'] };
}

export function boxDir(): string {
  return fs.mkdtempSync(path.join(os.tmpdir(), 'boxlite-host-'));
}

export function shimConfig(dir: string, peer: ShimConfig['agentPeer'], agentTimeoutMs = 10_000): ShimConfig {
  return {
    boxId: path.basename(dir),
    boxDir: dir,
    // Unused with an agent peer; only `accel` is reported back in the shim's state.
    plan: { accel: 'tcg' } as ShimConfig['plan'],
    accelReason: 'host test tier: no VM',
    agentTimeoutMs,
    stopTimeoutMs: 3_000,
    detach: false,
    agentPeer: peer,
  };
}

export async function startBox(peer: ShimConfig['agentPeer'], dir = boxDir(), extra: Partial<ShimConfig> = {}): Promise<HostBox> {
  const launched = await launchShim({ ...shimConfig(dir, peer), ...extra });
  const client = await ShimClient.connect(path.join(dir, 'control.sock'));
  return {
    dir,
    client,
    shimPid: launched.state.shimPid,
    agentPid: launched.state.qemuPid,
    async dispose() {
      await client.request('stop').catch(() => undefined);
      client.close();
      launched.watchdog?.destroy();
      await waitGone(launched.state.shimPid, 5_000);
      fs.rmSync(dir, { recursive: true, force: true });
    },
  };
}

export const alive = (pid: number): boolean => isProcessAlive(pid);

export async function waitFor(cond: () => boolean, ms = 5_000): Promise<void> {
  const deadline = Date.now() + ms;
  while (!cond()) {
    if (Date.now() > deadline) throw new Error('condition not met in time');
    await new Promise((r) => setTimeout(r, 10));
  }
}

/** A client that speaks raw frames to a box's control socket: what a non-SDK client may send. */
export interface RawClient {
  socket: net.Socket;
  /** Every frame received so far, in order. */
  got: Message[];
  send(m: Message): void;
  closed: Promise<void>;
}

export async function rawClient(dir: string): Promise<RawClient> {
  const socket = net.createConnection(path.join(dir, 'control.sock'));
  const decoder = new FrameDecoder();
  const got: Message[] = [];
  socket.on('data', (c) => got.push(...decoder.push(c)));
  socket.on('error', () => {});
  const closed = new Promise<void>((r) => socket.once('close', () => r()));
  await new Promise((r) => socket.once('connect', r));
  return { socket, got, send: (m) => void socket.write(encode(m)), closed };
}

export async function waitGone(pid: number, ms: number): Promise<boolean> {
  const deadline = Date.now() + ms;
  while (Date.now() < deadline) {
    if (!alive(pid)) return true;
    await new Promise((r) => setTimeout(r, 20));
  }
  if (alive(pid)) process.kill(pid, 'SIGKILL');
  return false;
}

export interface Ran {
  started: boolean;
  /** STARTED's pid (the pid in the execution's pid namespace). */
  pid?: number;
  stdout: Buffer;
  stderr: Buffer;
  exit?: Extract<Message, { type: 'EXIT' }>;
  error?: string;
}

export interface RunOptions {
  stdin?: Buffer;
  flags?: number;
  timeoutMs?: number;
  /** Grant output credit back as it arrives (a reader that keeps up). */
  credit?: boolean;
  env?: string[];
  /** EXEC user ("", "uid[:gid]", "name[:group]"). */
  user?: string;
}

/**
 * Runs argv through the client's exec channel to its end, collecting raw frames: the same
 * path Box.exec takes, minus the SDK's Execution wrapper. Rejects with the client's error
 * when the link is lost.
 */
export function run(client: ShimClient, argv: string[], o: RunOptions = {}): Promise<Ran> {
  return new Promise((resolve, reject) => {
    const ran: Ran = { started: false, stdout: Buffer.alloc(0), stderr: Buffer.alloc(0) };
    const out: Buffer[] = [];
    const err: Buffer[] = [];
    let channel: ExecChannel | undefined = undefined;
    const finish = () => resolve({ ...ran, stdout: Buffer.concat(out), stderr: Buffer.concat(err) });
    channel = client.openExec(
      {
        flags: o.flags ?? 0,
        rows: 24,
        cols: 80,
        timeoutMs: o.timeoutMs ?? 0,
        user: o.user ?? '',
        cwd: '/',
        argv,
        env: o.env ?? ['PATH=/usr/local/bin:/usr/bin:/bin'],
      },
      {
        onMessage(m) {
          switch (m.type) {
            case 'STARTED':
              ran.started = true;
              ran.pid = m.pid;
              if (o.stdin) void channel!.writeStdin(o.stdin).then(() => channel!.closeStdin());
              else void channel!.closeStdin();
              return;
            case 'STDOUT':
            case 'STDERR':
              (m.type === 'STDOUT' ? out : err).push(m.data);
              if (o.credit !== false) channel!.grant(m.type === 'STDOUT' ? 1 : 2, m.data.length);
              return;
            case 'EXIT':
              ran.exit = m;
              finish();
              return;
            case 'ERROR':
              if (!ran.started) {
                ran.error = m.message;
                finish();
              }
              return;
          }
        },
        onLost(e: BoxliteError) {
          reject(e);
        },
      },
    );
  });
}
