// box.fork() of a box with a main process, host side without a VM: the fork RESUME names the
// stream the agent re-keys the main process onto, and the fork shim's MainProcess adopts it
// (no EXEC), or starts it when the agent has none to hand over.
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import type { Message } from '../../src/protocol/codec.js';
import { EXEC_FLAG_MAIN } from '../../src/protocol/features.js';
import { FEATURE_FORK, FEATURE_FORK_MAIN, sendForkResume } from '../../src/shim/fork.js';
import { MainProcess } from '../../src/shim/main-process.js';
import { StreamRouter } from '../../src/shim/router.js';

function setup() {
  const sent: Message[] = [];
  const agent = { send: (m: Message) => sent.push(m) } as never;
  const router = new StreamRouter(agent, { type: 'HELLO', stream: 0, major: 1, minor: 0, features: 0x3ff, version: 't' } as never, {
    log: () => undefined,
    onViolation: (err) => {
      throw err;
    },
    onControl: () => undefined,
  });
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'fork-main-'));
  const paths = { mainLog: path.join(dir, 'main.log'), exitFile: path.join(dir, 'exit.json') };
  const exits: unknown[] = [];
  const main = new MainProcess(router, paths, { argv: ['sh', '-c', 'x'], env: [], user: '', cwd: '/', tty: false, hold: false }, () => undefined, (r) => exits.push(r));
  return { sent, router, main, paths, exits, dir };
}

describe('fork: the main process adopted', () => {
  it('RESUME carries boxlite.fork.main=<stream> only for an agent with FORK_MAIN', () => {
    const words = (features: number, stream?: number) => {
      const sent: Message[] = [];
      sendForkResume({ send: (m: Message) => sent.push(m) } as never, features, () => undefined, stream);
      return (sent[0] as Extract<Message, { type: 'RESUME' }>).data.toString('utf8');
    };
    expect(words(FEATURE_FORK | FEATURE_FORK_MAIN, 3)).toMatch(/^boxlite\.fork boxlite\.fork\.main=3 boxlite\.time=\d+ boxlite\.seed=[0-9a-f]{128}$/);
    expect(words(FEATURE_FORK, 3)).not.toContain('fork.main');
    expect(words(FEATURE_FORK | FEATURE_FORK_MAIN)).not.toContain('fork.main');
    expect(() => words(0, 1)).toThrow(/older agent/);
  });

  it('adopt() sends no EXEC; STARTED, output (into main.log, credit back) and EXIT then come as for a started one', () => {
    const { sent, router, main, paths, exits, dir } = setup();
    const id = main.adopt();
    expect(sent).toEqual([]);
    expect(() => main.adopt()).toThrow();
    router.fromAgent({ type: 'STARTED', stream: id, pid: 1 } as Message);
    router.fromAgent({ type: 'STDOUT', stream: id, data: Buffer.from('tick 9\n') } as Message);
    expect(sent).toEqual([{ type: 'WINDOW', stream: id, fd: 1, bytes: 7 }]);
    expect(fs.readFileSync(paths.mainLog, 'utf8')).toBe('tick 9\n');
    router.fromAgent({ type: 'EXIT', stream: id, code: 42, signal: 0, reason: 0, message: '' } as Message);
    expect(exits).toMatchObject([{ exitCode: 42, reason: 'exited' }]);
    expect(JSON.parse(fs.readFileSync(paths.exitFile, 'utf8'))).toMatchObject({ exitCode: 42 });
    fs.rmSync(dir, { recursive: true, force: true });
  });

  it('an agent with nothing to adopt (ERROR on the stream): the main process is started with EXEC MAIN', () => {
    const { sent, router, main, exits, dir } = setup();
    const id = main.adopt();
    router.fromAgent({ type: 'ERROR', stream: id, message: 'no main process to adopt' } as Message);
    expect(exits).toEqual([]);
    expect(sent).toHaveLength(1);
    expect(sent[0]).toMatchObject({ type: 'EXEC', flags: EXEC_FLAG_MAIN, argv: ['sh', '-c', 'x'] });
    expect(sent[0]!.stream).not.toBe(id);
    fs.rmSync(dir, { recursive: true, force: true });
  });
});

describe('fork: frames the source had queued', () => {
  it('are dropped until the fence PONG, and are a protocol violation after it', async () => {
    const sent: Message[] = [];
    const violations: string[] = [];
    const logs: string[] = [];
    const router = new StreamRouter({ send: (m: Message) => sent.push(m) } as never, { type: 'HELLO', stream: 0, major: 1, minor: 0, features: 0x3ff, version: 't' } as never, {
      log: (l) => logs.push(l),
      onViolation: (err) => violations.push(err.message),
      onControl: () => undefined,
    });
    const fence = router.dropStaleFramesUntilFence(1000);
    // The source's execution 7 and an overrun on a stream that is not open here.
    router.fromAgent({ type: 'STDOUT', stream: 7, data: Buffer.from('old output') } as Message);
    router.fromAgent({ type: 'EXIT', stream: 7, code: 0, signal: 0, reason: 0, message: '' } as Message);
    expect(violations).toEqual([]);
    const ping = sent.find((m) => m.type === 'PING') as Extract<Message, { type: 'PING' }>;
    expect(ping).toBeDefined();
    router.fromAgent({ type: 'PONG', stream: 0, data: ping.data } as Message);
    await fence;
    expect(logs.join('\n')).toMatch(/dropped 2 frames/);
    router.fromAgent({ type: 'STDOUT', stream: 7, data: Buffer.from('late') } as Message);
    expect(violations).toEqual([expect.stringMatching(/stream 7, which is not open/)]);
  });
});
