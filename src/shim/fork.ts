// box.fork() (docs/snapshots.md "Fork"): the shim's halves.
// Source: the VM is paused, its root drive switched onto a new overlay (as a live snapshot)
// and its memory saved (QMP migrate) at that same instant, then resumed. Clone: a new QEMU with
// the same device layout restores that state (`-incoming fd:N`, as fast start does) on its own
// overlay over the same base; its agent link is a QEMU-side server the shim connects to only
// once the state is loaded, so the agent sees its host go and come back and says HELLO anew.
import { randomBytes } from 'node:crypto';
import fs from 'node:fs';
import net from 'node:net';
import path from 'node:path';
import { EngineError, InvalidArgumentError } from '../errors/index.js';
import type { Link } from '../protocol/link.js';
import type { QmpClient } from './qmp.js';
import { switchRootOverlay } from './disk-ops.js';
import { receiveInto } from '../vmm/template.js';

/** HELLO bit of an agent that takes RESUME with boxlite.fork (guest/src/proto.h PROTO_FEAT_FORK). */
export const FEATURE_FORK = 0x100;

/** The only state file names the SDK asks for (the shim writes the VM's memory there). */
export const FORK_STATE_RE = /^\.fork-[0-9A-Z]{26}\.state$/;

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/**
 * Pauses the VM, switches its root drive onto `overlay` and saves its memory into `statePath`
 * at that one instant, then resumes it whatever happened. Returns the active file.
 */
export async function forkSave(
  qmp: QmpClient,
  boxDir: string,
  overlay: string,
  statePath: string,
  log: (line: string) => void,
): Promise<{ file: string; pausedMs: number; stateBytes: number }> {
  if (!path.isAbsolute(statePath) || path.dirname(statePath) !== path.resolve(boxDir) || !FORK_STATE_RE.test(path.basename(statePath))) {
    throw new InvalidArgumentError(`not a fork state file of this box: ${JSON.stringify(statePath)}`);
  }
  const migSock = path.join(boxDir, `.fork-${randomBytes(4).toString('hex')}.sock`);
  const t0 = performance.now();
  await qmp.execute('stop');
  try {
    const file = await switchRootOverlay(qmp, boxDir, overlay);
    const received = receiveInto(migSock, statePath);
    await received.listening;
    // QEMU 7.2 throttles migration to 32 MiB/s by default; a local file takes what it gets.
    await qmp.execute('migrate-set-parameters', { 'max-bandwidth': 64 * 1024 ** 3 });
    await qmp.execute('migrate', { uri: `unix:${migSock}` });
    for (const t = Date.now(); ; await sleep(5)) {
      const st = (await qmp.execute('query-migrate')) as { status?: string; 'error-desc'?: string };
      if (st.status === 'completed') break;
      if (st.status === 'failed' || st.status === 'cancelled') throw new EngineError(`saving the VM's memory failed: ${st['error-desc'] ?? st.status}`);
      if (Date.now() - t > 60_000) throw new EngineError('saving the VM\'s memory did not finish within 60 s');
    }
    const stateBytes = await received.done;
    return { file, pausedMs: Math.round(performance.now() - t0), stateBytes };
  } catch (err) {
    fs.rmSync(statePath, { force: true });
    throw err;
  } finally {
    fs.rmSync(migSock, { force: true });
    // After a completed migration QEMU's runstate is postmigrate; cont reactivates its disks.
    await qmp.execute('cont').catch((err: unknown) => log(`cannot resume the VM after the fork save: ${(err as Error).message}`));
  }
}

/** QEMU arguments of a forked VM: the agent chardev becomes a server the shim connects to later. */
export function forkAgentArgs(args: string[]): string[] {
  return args.map((a) => (a.startsWith('socket,id=agent,path=') && !a.includes('server=') ? `${a},server=on,wait=off` : a));
}

/**
 * The clone's shim, once QEMU runs: waits until the saved state is loaded (QEMU leaves
 * `inmigrate`; the source was paused, so the clone is too), connects the agent link, thaws.
 */
export async function forkAttach(
  getQmp: () => Promise<QmpClient>,
  agentSocket: string,
  timeoutMs: number,
  log: (line: string) => void,
): Promise<net.Socket> {
  const t0 = Date.now();
  let qmp: QmpClient | undefined;
  // QEMU makes its QMP socket a moment after its spawn.
  while (!qmp) {
    qmp = await getQmp().catch(async (err: unknown) => {
      if (Date.now() - t0 > timeoutMs) throw err;
      await sleep(5);
      return undefined;
    });
  }
  for (;;) {
    const st = (await qmp.execute('query-status')) as { status?: string };
    if (st.status && st.status !== 'inmigrate') {
      log(`forked VM state loaded in ${Date.now() - t0} ms (${st.status})`);
      break;
    }
    if (Date.now() - t0 > timeoutMs) throw new EngineError(`the forked VM did not load its saved state within ${timeoutMs} ms`);
    await sleep(5);
  }
  // Thawed first: virtio-serial compares the saved host state with the live one in a timer of
  // the running VM; disconnected then, the guest learns its host went, and our connect after is
  // an "open" it answers with HELLO. Connected too early, the guest sees no change and stays
  // silent: then hang up and connect again (each pair is a close and an open to the guest).
  await qmp.execute('cont');
  for (let attempt = 1; ; attempt++) {
    await sleep(attempt === 1 ? 20 : 50);
    const sock = await new Promise<net.Socket>((resolve, reject) => {
      const s = net.connect(agentSocket);
      s.once('connect', () => resolve(s));
      s.once('error', reject);
    });
    // Peeked, not read: the Link made from this socket reads HELLO itself.
    const spoke = await new Promise<boolean>((resolve) => {
      const timer = setTimeout(() => {
        sock.off('readable', onReadable);
        resolve(false);
      }, 500 * Math.min(attempt, 4));
      const onReadable = () => {
        clearTimeout(timer);
        sock.off('readable', onReadable);
        resolve(true);
      };
      sock.on('readable', onReadable);
    });
    if (spoke) {
      log(`forked VM running, agent link connected (attempt ${attempt})`);
      return sock;
    }
    sock.destroy();
    if (Date.now() - t0 > timeoutMs) throw new EngineError(`the forked VM's agent did not say HELLO within ${timeoutMs} ms`);
  }
}

/** HELLO bit of an agent that re-keys the main process onto `boxlite.fork.main=<stream>` (PROTO_FEAT_FORK_MAIN). */
export const FEATURE_FORK_MAIN = 0x200;

/**
 * RESUME for a forked agent: new clock and entropy; it drops the old host's executions, and
 * hands the main process over on `mainStream` (without it, or from an older agent lacking
 * FORK_MAIN, the main process runs on detached: nobody reads it, its exit ends nothing).
 */
export function sendForkResume(agent: Link, features: number, log: (line: string) => void, mainStream?: number): void {
  if (!(features & FEATURE_FORK)) throw new EngineError('the forked guest\'s agent does not take a fork RESUME (an older agent)');
  const main = mainStream !== undefined && features & FEATURE_FORK_MAIN ? ` boxlite.fork.main=${mainStream}` : '';
  const words = `boxlite.fork${main} boxlite.time=${BigInt(Date.now()) * 1_000_000n} boxlite.seed=${randomBytes(64).toString('hex')}`;
  agent.send({ type: 'RESUME', stream: 0, data: Buffer.from(words, 'utf8') });
  log(`fork RESUME sent${main ? ` (main process adopted on stream ${mainStream})` : ''}`);
}
