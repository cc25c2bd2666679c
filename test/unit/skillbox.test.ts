// SkillBox without a VM: a fake runtime records the box options and every exec (command, argv,
// env, tty), answers one-shot commands from a script, and plays a scripted `claude` process whose
// stdout arrives in arbitrary chunks. Pins the reference's defaults, texts, ports, commands and
// its stream-json reading; test/boxtypes/skillbox.test.ts runs the conversation in a VM.
import net from 'node:net';
import { afterEach, describe, expect, it, vi } from 'vitest';
import { ExecutionError, SKILLBOX_IMAGE, SkillBox } from '../../src/index.js';
import { fakeRuntime as fakeBoxRuntime, rejection, stream, type Reply } from './fake-box.js';

/** A fake long-running claude: every stdin write answers with the next chunk list from `turns`. */
function fakeClaude(turns: string[][]) {
  const written: string[] = [];
  const queue: Array<string | null> = [];
  let waiting: ((v: string | null) => void) | null = null;
  let closed = false;
  const push = (v: string | null) => {
    if (waiting) {
      const w = waiting;
      waiting = null;
      w(v);
    } else queue.push(v);
  };
  return {
    written,
    get closed() {
      return closed;
    },
    execution: {
      stdin: async () => ({
        writeString: async (s: string) => {
          written.push(s);
          for (const chunk of turns.shift() ?? []) push(chunk);
        },
        close: async () => {
          closed = true;
          push(null);
        },
      }),
      stdout: async () => ({
        next: () => (queue.length ? Promise.resolve(queue.shift()!) : new Promise<string | null>((r) => (waiting = r))),
      }),
      stderr: async () => stream(''),
      wait: async () => ({ exitCode: 0 }),
    },
  };
}

/** The shared fake runtime, whose `claude --dangerously-skip-permissions …` is the fake claude. */
const fakeRuntime = (replies: Reply[] = [], claude?: ReturnType<typeof fakeClaude>) =>
  fakeBoxRuntime(replies, {
    intercept: (c) => (c.cmd === 'claude' && c.args[0] === '--dangerously-skip-permissions' && claude ? claude.execution : undefined),
  });

const DISPLAY_ENV = { DISPLAY: ':1' };
const savedToken = process.env.CLAUDE_CODE_OAUTH_TOKEN;
afterEach(() => {
  if (savedToken === undefined) delete process.env.CLAUDE_CODE_OAUTH_TOKEN;
  else process.env.CLAUDE_CODE_OAUTH_TOKEN = savedToken;
});

describe('SkillBox options and start()', () => {
  it('defaults: skillbox image, 4096 MiB, 10 GB, name skill-box, autoRemove, the token and display env; ports found at start', async () => {
    const { runtime, creates, names } = fakeRuntime();
    const box = new SkillBox({ runtime, oauthToken: 'tok-123' });
    expect([box.guiHttpPort, box.guiHttpsPort]).toEqual([0, 0]);
    expect(box.name).toBe('skill-box');
    await box.start();
    expect(creates).toHaveLength(1);
    const [opts, name] = [creates[0]!, names[0]];
    expect(name).toBe('skill-box');
    expect(opts).toMatchObject({ image: SKILLBOX_IMAGE, rootfsPath: undefined, memoryMib: 4096, diskSizeGb: 10, autoRemove: true, cpus: undefined });
    expect(SKILLBOX_IMAGE).toBe('ghcr.io/boxlite-ai/boxlite-skillbox:0.1.0');
    expect(opts.env).toEqual([
      { key: 'CLAUDE_CODE_OAUTH_TOKEN', value: 'tok-123' },
      { key: 'DISPLAY', value: ':1' },
      { key: 'DISPLAY_SIZEW', value: '1024' },
      { key: 'DISPLAY_SIZEH', value: '768' },
      { key: 'SELKIES_MANUAL_WIDTH', value: '1024' },
      { key: 'SELKIES_MANUAL_HEIGHT', value: '768' },
      { key: 'SELKIES_UI_SHOW_SIDEBAR', value: 'false' },
    ]);
    // Two distinct free ports in 10000-65535, published to guest 3000/3001.
    const http = box.guiHttpPort;
    const https = box.guiHttpsPort;
    expect(http).toBeGreaterThanOrEqual(10000);
    expect(https).toBeGreaterThanOrEqual(10000);
    expect(Math.max(http, https)).toBeLessThanOrEqual(65535);
    expect(http).not.toBe(https);
    expect(opts.ports).toEqual([
      { hostPort: http, guestPort: 3000 },
      { hostPort: https, guestPort: 3001 },
    ]);
  });

  it('rootfsPath wins over image; explicit ports, name, resources, network and secrets pass through', async () => {
    const { runtime, creates, names } = fakeRuntime();
    const secrets = [{ name: 'k', value: 'v', hosts: ['api.example.com'] }];
    const network = { outbound: { mode: 'enabled' as const } };
    const box = new SkillBox({
      runtime,
      oauthToken: 't',
      rootfsPath: '/images/skillbox',
      image: 'ignored/because:rootfs',
      name: 'sb2',
      memoryMib: 1024,
      diskSizeGb: 2,
      autoRemove: false,
      guiHttpPort: 18080,
      guiHttpsPort: 18443,
      network,
      secrets,
    });
    await box.start();
    expect(creates[0]!).toMatchObject({
      image: undefined,
      rootfsPath: '/images/skillbox',
      memoryMib: 1024,
      diskSizeGb: 2,
      autoRemove: false,
      network,
      secrets,
      ports: [
        { hostPort: 18080, guestPort: 3000 },
        { hostPort: 18443, guestPort: 3001 },
      ],
    });
    expect(names[0]).toBe('sb2');
    const c = fakeRuntime();
    await new SkillBox({ runtime: c.runtime, oauthToken: 't', image: 'my/skillbox:2' }).start();
    expect(c.creates[0]!).toMatchObject({ image: 'my/skillbox:2', rootfsPath: undefined });
  });

  it('a port given equal for both is re-picked for HTTPS; a busy port is never picked', async () => {
    // Hold a port: start() must pick a different, free one for HTTPS.
    const server = net.createServer();
    await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
    const busy = (server.address() as net.AddressInfo).port;
    try {
      const { runtime } = fakeRuntime();
      const box = new SkillBox({ runtime, oauthToken: 't', guiHttpPort: busy, guiHttpsPort: busy });
      await box.start();
      expect(box.guiHttpPort).toBe(busy);
      expect(box.guiHttpsPort).not.toBe(busy);
      expect(box.guiHttpsPort).toBeGreaterThanOrEqual(10000);
    } finally {
      server.close();
    }
  });

  it('the token comes from CLAUDE_CODE_OAUTH_TOKEN when not passed; none at all is a plain Error at start()', async () => {
    process.env.CLAUDE_CODE_OAUTH_TOKEN = 'from-env';
    const a = fakeRuntime();
    await new SkillBox({ runtime: a.runtime }).start();
    expect((a.creates[0]!.env as Array<{ key: string; value: string }>)[0]).toEqual({ key: 'CLAUDE_CODE_OAUTH_TOKEN', value: 'from-env' });

    delete process.env.CLAUDE_CODE_OAUTH_TOKEN;
    const b = fakeRuntime();
    const err = await rejection(new SkillBox({ runtime: b.runtime }).start());
    expect(err.constructor).toBe(Error);
    expect(err.message).toBe('OAuth token required. Set CLAUDE_CODE_OAUTH_TOKEN env var or pass oauthToken parameter.');
    expect(b.creates).toHaveLength(0);
  });

  it('call() and installSkill() before start() are a plain Error, and run nothing', async () => {
    const { runtime, creates, execs } = fakeRuntime();
    const box = new SkillBox({ runtime, oauthToken: 't' });
    for (const p of [box.call('hi'), box.installSkill('a/b')]) {
      const err = await rejection(p);
      expect(err.constructor).toBe(Error);
      expect(err.message).toBe('SkillBox not started. Call start() first.');
    }
    expect([creates.length, execs.length]).toEqual([0, 0]);
  });
});

const line = (o: unknown) => JSON.stringify(o) + '\n';

describe('SkillBox conversation (stream-json)', () => {
  it('first call: claude --version, the skills, then one claude process; the result text, session id carried on', async () => {
    const t1 = line({ type: 'system', subtype: 'init', session_id: 's-42' }) + line({ type: 'assistant', message: { content: [{ type: 'text', text: 'thinking' }] } }) + line({ type: 'result', result: 'echo: hi', session_id: 's-42' });
    // The first answer split mid-line, with a non-JSON line and a JSON scalar that are skipped.
    const chunks1 = [t1.slice(0, 17), t1.slice(17, 60) , 'warning: not json\n42\n' + t1.slice(60)];
    const t2 = [line({ type: 'result', result: 'echo: again', session_id: 's-43' })];
    const claude = fakeClaude([chunks1, t2]);
    const { runtime, execs } = fakeRuntime([{ exitCode: 0, stdout: '2.0.0\n' }, { exitCode: 0 }, { exitCode: 1 }], claude);
    const box = new SkillBox({ runtime, oauthToken: 'tok', skills: ['anthropics/skills', 'x/y'] });
    await box.start();
    expect(await box.call('hi')).toBe('echo: hi');
    expect(await box.call('again')).toBe('echo: again');
    expect(execs.map((e) => [e.cmd, ...e.args].join(' '))).toEqual([
      'claude --version',
      'npx add-skill anthropics/skills -y --agent claude-code',
      'npx add-skill x/y -y --agent claude-code',
      'claude --dangerously-skip-permissions --input-format stream-json --output-format stream-json --mcp-config /config/.claude.json --verbose',
    ]);
    expect(execs.slice(0, 3).map((e) => e.env)).toEqual(Array(3).fill(Object.entries(DISPLAY_ENV)));
    expect(execs[3]!.env).toEqual([
      ['CLAUDE_CODE_OAUTH_TOKEN', 'tok'],
      ['IS_SANDBOX', '1'],
      ['SHELL', '/bin/bash'],
      ['DISPLAY', ':1'],
    ]);
    expect(execs.map((e) => e.tty)).toEqual([false, false, false, false]);
    expect(claude.written.map((w) => JSON.parse(w))).toEqual([
      { type: 'user', message: { role: 'user', content: 'hi' }, session_id: 'default', parent_tool_use_id: null },
      { type: 'user', message: { role: 'user', content: 'again' }, session_id: 's-42', parent_tool_use_id: null },
    ]);
    expect(claude.written.every((w) => w.endsWith('}\n') && !w.slice(0, -1).includes('\n'))).toBe(true);
    // installSkill after setup runs only its own command and reports the exit status.
    expect(await box.installSkill('z/w')).toBe(true);
    expect([execs.at(-1)!.cmd, ...execs.at(-1)!.args].join(' ')).toBe('npx add-skill z/w -y --agent claude-code');
    await box.stop();
    expect(claude.closed).toBe(true);
  });

  it('without a result message the answer is the first assistant text; a stream that ends gives what arrived', async () => {
    const claude = fakeClaude([
      [line({ type: 'assistant', message: { content: [{ type: 'tool_use' }, { type: 'text', text: '' }, { type: 'text', text: 'first' }] } }), line({ type: 'assistant', message: { content: [{ type: 'text', text: 'second' }] } })],
    ]);
    const { runtime } = fakeRuntime([{ exitCode: 0 }], claude);
    const box = new SkillBox({ runtime, oauthToken: 't' });
    await box.start();
    const answer = box.call('q');
    // claude ends its output without a result: the call resolves with the assistant text.
    setTimeout(() => void claude.execution.stdin().then((s) => s.close()), 50);
    expect(await answer).toBe('first');
  });

  it('a result without text is an empty answer', async () => {
    const claude = fakeClaude([[line({ type: 'result', session_id: 's' })]]);
    const { runtime } = fakeRuntime([{ exitCode: 0 }], claude);
    const box = new SkillBox({ runtime, oauthToken: 't' });
    await box.start();
    expect(await box.call('q')).toBe('');
  });

  it('claude missing (the exec fails): the reference install path runs, and its first failure is a plain Error', async () => {
    const { runtime, execs } = fakeRuntime([
      new ExecutionError('command not found: claude'),
      { exitCode: 100, stderr: 'no network' }, // apt-get update: result ignored
      { exitCode: 6, stderr: 'curl: (6) Could not resolve host: claude.ai' },
    ]);
    const box = new SkillBox({ runtime, oauthToken: 't' });
    await box.start();
    const err = await rejection(box.installSkill('a/b'));
    expect(err.constructor).toBe(Error);
    expect(err.message).toBe('Failed to install Claude CLI: curl: (6) Could not resolve host: claude.ai');
    expect(execs.map((e) => [e.cmd, ...e.args].join(' '))).toEqual([
      'claude --version',
      'apt-get update',
      'bash -c curl -fsSL https://claude.ai/install.sh | bash',
    ]);
  });

  it('a claude silent for 120 s ends the answer without an error (the reference swallows its TimeoutError)', async () => {
    const claude = fakeClaude([[line({ type: 'assistant', message: { content: [{ type: 'text', text: 'partial' }] } })]]);
    const { runtime } = fakeRuntime([{ exitCode: 0 }], claude);
    const box = new SkillBox({ runtime, oauthToken: 't' });
    await box.start();
    vi.useFakeTimers({ toFake: ['setTimeout', 'clearTimeout'] });
    try {
      const answer = box.call('q');
      await vi.advanceTimersByTimeAsync(119_000);
      let settled = false;
      void answer.then(() => (settled = true));
      await vi.advanceTimersByTimeAsync(0);
      expect(settled).toBe(false);
      await vi.advanceTimersByTimeAsync(1_001);
      expect(await answer).toBe('partial');
    } finally {
      vi.useRealTimers();
    }
  });

  it('stop(): a claude that ignores EOF is killed after 10 s and the box still stops (the reference waits forever)', async () => {
    const claude = fakeClaude([[line({ type: 'result', result: 'ok', session_id: 's' })]]);
    let killed = 0;
    let exit!: (r: { exitCode: number }) => void;
    // wait() settles only when killed: a process that ignores EOF on its stdin.
    Object.assign(claude.execution, {
      wait: () => new Promise((r) => (exit = r)),
      kill: async () => {
        killed++;
        exit({ exitCode: -9 });
      },
    });
    const { runtime, box: fakeBox } = fakeRuntime([{ exitCode: 0 }], claude);
    const box = new SkillBox({ runtime, oauthToken: 't' });
    await box.start();
    expect(await box.call('q')).toBe('ok');
    vi.useFakeTimers({ toFake: ['setTimeout', 'clearTimeout'] });
    try {
      let stopped = false;
      const stopping = box.stop().then(() => (stopped = true));
      await vi.advanceTimersByTimeAsync(9_900);
      expect([stopped, killed, fakeBox.stopped]).toEqual([false, 0, false]);
      await vi.advanceTimersByTimeAsync(200);
      await stopping;
      expect([claude.closed, killed, fakeBox.stopped]).toEqual([true, 1, true]);
    } finally {
      vi.useRealTimers();
    }
  });

  it('stop(): a claude that exits on EOF is not killed and leaves no timer behind', async () => {
    const claude = fakeClaude([[line({ type: 'result', result: 'ok', session_id: 's' })]]);
    let killed = 0;
    Object.assign(claude.execution, { kill: async () => void killed++ });
    const { runtime, box: fakeBox } = fakeRuntime([{ exitCode: 0 }], claude);
    const box = new SkillBox({ runtime, oauthToken: 't' });
    await box.start();
    await box.call('q');
    vi.useFakeTimers({ toFake: ['setTimeout', 'clearTimeout'] });
    try {
      await box.stop();
      expect([killed, fakeBox.stopped, vi.getTimerCount()]).toEqual([0, true, 0]);
    } finally {
      vi.useRealTimers();
    }
  });
});
