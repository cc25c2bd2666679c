// SkillBox: Claude Code CLI in a box with a desktop, as the reference's skillbox.js. A
// conversation is one long-running `claude` process speaking stream-json (one JSON object a
// line) on its stdin/stdout; the box is the reference's image (ghcr.io/boxlite-ai/boxlite-skillbox),
// whose entrypoint starts the desktop. Commands, env, ports, texts and the error behaviour are the
// reference's contract.
import * as net from 'node:net';
import type { ExecInput, ExecOutput, Execution } from '../runtime/execution.js';
import type { JsBoxlite } from '../runtime/runtime.js';
import type { NetworkSpec, Secret } from '../runtime/options.js';
import { TimeoutError } from '../errors/index.js';
import {
  COMPUTERBOX_DISPLAY_HEIGHT,
  COMPUTERBOX_DISPLAY_WIDTH,
  DESKTOP_READY_RETRY_DELAY,
  DESKTOP_READY_TIMEOUT,
  SKILLBOX_DISK_SIZE_GB,
  SKILLBOX_GUI_HTTP_PORT,
  SKILLBOX_GUI_HTTPS_PORT,
  SKILLBOX_IMAGE,
  SKILLBOX_MEMORY_MIB,
} from './constants.js';
import { SimpleBox, type ExecResult, type SimpleBoxOptions } from './simplebox.js';

export interface SkillBoxOptions {
  /** Skills to install on first call, e.g. ["anthropics/skills"]. */
  skills?: string[];
  /** Claude OAuth token (default $CLAUDE_CODE_OAUTH_TOKEN). */
  oauthToken?: string;
  /** Box name (default "skill-box"). */
  name?: string;
  /** Image (default ghcr.io/boxlite-ai/boxlite-skillbox:0.1.0). */
  image?: string;
  /** A local OCI layout directory (wins over image). */
  rootfsPath?: string;
  /** Memory in MiB (default 4096). */
  memoryMib?: number;
  /** Disk size in GB (default 10). */
  diskSizeGb?: number;
  /** Host port for the noVNC GUI over HTTP (default 0: a free port picked by start()). */
  guiHttpPort?: number;
  /** Host port for the noVNC GUI over HTTPS (default 0: a free port picked by start()). */
  guiHttpsPort?: number;
  /** Remove the box when it stops (default true). */
  autoRemove?: boolean;
  network?: NetworkSpec;
  secrets?: Secret[];
  runtime?: JsBoxlite;
}

/** One stream-json object from claude; only these fields are read. */
interface StreamMessage {
  type?: string;
  session_id?: string;
  result?: string;
  message?: { content?: Array<{ type?: string; text?: string }> };
}

/** How long (ms) to wait for each chunk of claude's answer before giving up on the rest of it. */
const RESPONSE_CHUNK_TIMEOUT_MS = 120_000;

/** How long stop() waits for claude to exit after EOF on its stdin before killing it. */
const CLAUDE_EXIT_GRACE_MS = 10_000;

const CLAUDE_ARGS = [
  '--dangerously-skip-permissions',
  '--input-format', 'stream-json',
  '--output-format', 'stream-json',
  '--mcp-config', '/config/.claude.json',
  '--verbose',
];

const sleep = (ms: number) => new Promise<void>((resolve) => setTimeout(resolve, ms));

/** A port in [start, end] nobody listens on at 127.0.0.1: up to 100 random candidates. */
function findAvailablePort(start = 10000, end = 65535): Promise<number> {
  const candidates: number[] = [];
  const taken = new Set<number>();
  while (candidates.length < 100 && taken.size <= end - start) {
    const port = start + Math.floor(Math.random() * (end - start + 1));
    if (!taken.has(port)) {
      taken.add(port);
      candidates.push(port);
    }
  }
  return new Promise((resolve, reject) => {
    let idx = 0;
    const tryNext = () => {
      if (idx >= candidates.length) {
        reject(new Error(`Could not find an available port in range ${start}-${end}`));
        return;
      }
      const port = candidates[idx++]!;
      const server = net.createServer();
      server.once('error', () => tryNext());
      server.once('listening', () => server.close(() => resolve(port)));
      server.listen(port, '127.0.0.1');
    };
    tryNext();
  });
}

/**
 * Claude Code CLI with skills in an isolated box, with a desktop reachable over noVNC.
 * Multi-turn: every call() continues the same claude process and session.
 *
 * ```ts
 * const box = new SkillBox({ skills: ['anthropics/skills'] });
 * try {
 *   await box.start();
 *   console.log(await box.call('What skills do you have?'));
 * } finally {
 *   await box.stop();
 * }
 * ```
 */
export class SkillBox extends SimpleBox {
  private _skills: string[];
  private _oauthToken: string;
  private _process: Execution | null = null;
  private _stdin: ExecInput | null = null;
  private _stdout: ExecOutput | null = null;
  private _sessionId = 'default';
  private _setupComplete = false;
  private _started = false;
  /** Host port of the noVNC GUI over HTTP (filled in by start() when 0). */
  guiHttpPort: number;
  /** Host port of the noVNC GUI over HTTPS (filled in by start() when 0). */
  guiHttpsPort: number;
  private _skillboxEnv: Record<string, string> = { DISPLAY: ':1' };

  constructor(options: SkillBoxOptions = {}) {
    const imageOpts: Pick<SimpleBoxOptions, 'image' | 'rootfsPath'> = options.rootfsPath
      ? { rootfsPath: options.rootfsPath }
      : { image: options.image ?? SKILLBOX_IMAGE };
    const oauthToken = options.oauthToken ?? process.env.CLAUDE_CODE_OAUTH_TOKEN ?? '';
    super({
      ...imageOpts,
      memoryMib: options.memoryMib ?? SKILLBOX_MEMORY_MIB,
      diskSizeGb: options.diskSizeGb ?? SKILLBOX_DISK_SIZE_GB,
      name: options.name ?? 'skill-box',
      autoRemove: options.autoRemove ?? true,
      network: options.network,
      secrets: options.secrets,
      runtime: options.runtime,
      env: {
        CLAUDE_CODE_OAUTH_TOKEN: oauthToken,
        DISPLAY: ':1',
        DISPLAY_SIZEW: String(COMPUTERBOX_DISPLAY_WIDTH),
        DISPLAY_SIZEH: String(COMPUTERBOX_DISPLAY_HEIGHT),
        SELKIES_MANUAL_WIDTH: String(COMPUTERBOX_DISPLAY_WIDTH),
        SELKIES_MANUAL_HEIGHT: String(COMPUTERBOX_DISPLAY_HEIGHT),
        SELKIES_UI_SHOW_SIDEBAR: 'false',
      },
      // Filled in by start(), once the host ports are known.
      ports: [],
    });
    this._skills = options.skills ?? [];
    this._oauthToken = oauthToken;
    this.guiHttpPort = options.guiHttpPort ?? 0;
    this.guiHttpsPort = options.guiHttpsPort ?? 0;
  }

  /** Checks the token, picks free GUI ports for those left at 0, and creates the box. */
  async start(): Promise<void> {
    if (!this._oauthToken) {
      throw new Error('OAuth token required. Set CLAUDE_CODE_OAUTH_TOKEN env var or pass oauthToken parameter.');
    }
    if (this.guiHttpPort === 0) this.guiHttpPort = await findAvailablePort();
    if (this.guiHttpsPort === 0) this.guiHttpsPort = await findAvailablePort();
    if (this.guiHttpPort === this.guiHttpsPort) this.guiHttpsPort = await findAvailablePort();
    this._boxOpts.ports = [
      { hostPort: this.guiHttpPort, guestPort: SKILLBOX_GUI_HTTP_PORT },
      { hostPort: this.guiHttpsPort, guestPort: SKILLBOX_GUI_HTTPS_PORT },
    ];
    await this._ensureBox();
    this._started = true;
  }

  /** Ends the claude process (EOF on its stdin; killed if still running 10 s later) and stops the box. */
  override async stop(): Promise<void> {
    await this._stopClaude();
    this._started = false;
    await super.stop();
  }

  /** Like ComputerBox.waitUntilReady: an "xfdesktop" window at 1024x768 on :1, probed every 2 s. */
  async waitUntilReady(timeout: number = DESKTOP_READY_TIMEOUT): Promise<void> {
    const start = Date.now();
    const expectedSize = `${COMPUTERBOX_DISPLAY_WIDTH}x${COMPUTERBOX_DISPLAY_HEIGHT}`;
    for (;;) {
      if ((Date.now() - start) / 1000 > timeout) {
        throw new TimeoutError(`Desktop did not become ready within ${timeout} seconds`);
      }
      try {
        const result = await this._run('xwininfo', ['-tree', '-root']);
        if (result.stdout.includes('xfdesktop') && result.stdout.includes(expectedSize)) return;
      } catch {
        // not ready yet
      }
      await sleep(DESKTOP_READY_RETRY_DELAY * 1000);
    }
  }

  /**
   * Sends a prompt and resolves to claude's answer (the `result` message, else the first
   * assistant text). The first call installs claude if the image lacks it, then the skills.
   */
  async call(prompt: string): Promise<string> {
    if (!this._started) throw new Error('SkillBox not started. Call start() first.');
    if (!this._setupComplete) {
      await this._setup();
      this._setupComplete = true;
    }
    if (!this._stdin || !this._stdout) await this._startClaude();
    const [text, sessionId] = await this._sendMessage(prompt);
    this._sessionId = sessionId;
    return text;
  }

  /** Installs a skill with `npx add-skill <id> -y --agent claude-code`; true when that exits 0. */
  async installSkill(skillId: string): Promise<boolean> {
    if (!this._started) throw new Error('SkillBox not started. Call start() first.');
    if (!this._setupComplete) {
      await this._setup();
      this._setupComplete = true;
    }
    return this._installSkillInternal(skillId);
  }

  /** SimpleBox.exec with DISPLAY=:1, whatever a subclass makes of exec. */
  private _run(cmd: string, args: string[]): Promise<ExecResult> {
    return SimpleBox.prototype.exec.call(this, cmd, args, this._skillboxEnv);
  }

  private async _setup(): Promise<void> {
    if (!(await this._isClaudeInstalled())) await this._installDependencies();
    for (const skillId of this._skills) await this._installSkillInternal(skillId);
  }

  private async _isClaudeInstalled(): Promise<boolean> {
    try {
      return (await this._run('claude', ['--version'])).exitCode === 0;
    } catch {
      return false; // no claude on PATH: the exec itself fails
    }
  }

  /** The reference's install path for images without claude (needs the internet). */
  private async _installDependencies(): Promise<void> {
    await this._run('apt-get', ['update']);
    const install = await this._run('bash', ['-c', 'curl -fsSL https://claude.ai/install.sh | bash']);
    if (install.exitCode !== 0) throw new Error(`Failed to install Claude CLI: ${install.stderr}`);
    const bash = await this._run('apt-get', ['install', '-y', 'bash']);
    if (bash.exitCode !== 0) throw new Error(`Failed to install bash: ${bash.stderr}`);
    const git = await this._run('apt-get', ['install', '-y', 'git']);
    if (git.exitCode !== 0) throw new Error(`Failed to install git: ${git.stderr}`);
    const py = await this._run('apt-get', ['install', '-y', 'python3', 'python3-pip']);
    if (py.exitCode !== 0) throw new Error(`Failed to install Python: ${py.stderr}`);
    await this._run('/config/.local/bin/claude', ['--version']);
  }

  private async _installSkillInternal(skillId: string): Promise<boolean> {
    const result = await this._run('npx', ['add-skill', skillId, '-y', '--agent', 'claude-code']);
    return result.exitCode === 0;
  }

  private async _startClaude(): Promise<void> {
    const box = await this._ensureBox();
    this._process = await box.exec(
      'claude',
      CLAUDE_ARGS,
      [
        ['CLAUDE_CODE_OAUTH_TOKEN', this._oauthToken],
        ['IS_SANDBOX', '1'],
        ['SHELL', '/bin/bash'],
        ['DISPLAY', ':1'],
      ],
      false,
    );
    this._stdin = await this._process.stdin();
    this._stdout = await this._process.stdout();
  }

  private async _stopClaude(): Promise<void> {
    if (this._stdin) {
      try {
        await this._stdin.close();
      } catch {
        // the box may be gone already
      }
      this._stdin = null;
    }
    if (this._process) {
      const proc = this._process;
      this._process = null;
      // EOF ends a well-behaved claude at once. One that ignores it would make stop() wait forever
      // (the reference does) and never reach the box's stop: give it a grace period, then kill it.
      let timer: NodeJS.Timeout | undefined;
      const exited = await Promise.race([
        proc.wait().then(
          () => true,
          () => true, // the box may be gone already
        ),
        new Promise<false>((resolve) => (timer = setTimeout(() => resolve(false), CLAUDE_EXIT_GRACE_MS))),
      ]).finally(() => clearTimeout(timer));
      if (!exited) await proc.kill().catch(() => {});
    }
    this._stdout = null;
  }

  /**
   * Writes one user message and reads JSON lines until a `result` message. Like the reference, a
   * stream that ends, or a chunk that takes over 120 s, ends the answer without an error: the
   * caller gets what arrived (possibly '').
   */
  private async _sendMessage(content: string): Promise<[string, string]> {
    const stdin = this._stdin;
    const stdout = this._stdout;
    if (!stdin || !stdout) throw new Error('Claude process is not running');
    const msg = {
      type: 'user',
      message: { role: 'user', content },
      session_id: this._sessionId,
      parent_tool_use_id: null,
    };
    await stdin.writeString(JSON.stringify(msg) + '\n');

    const responses: StreamMessage[] = [];
    let sessionId = this._sessionId;
    let buffer = '';
    let done = false;
    try {
      while (!done) {
        let timer: NodeJS.Timeout | undefined;
        const chunk = await Promise.race([
          stdout.next(),
          new Promise<never>((_, reject) => {
            timer = setTimeout(() => reject(new TimeoutError('Timeout waiting for Claude response')), RESPONSE_CHUNK_TIMEOUT_MS);
          }),
        ]).finally(() => clearTimeout(timer)); // an answered chunk must not leave a 120 s timer behind
        if (chunk === null) break;
        buffer += chunk;
        let nl: number;
        while (!done && (nl = buffer.indexOf('\n')) !== -1) {
          const line = buffer.slice(0, nl).trim();
          buffer = buffer.slice(nl + 1);
          if (!line) continue;
          let parsed: unknown;
          try {
            parsed = JSON.parse(line);
          } catch {
            continue; // not JSON (e.g. a warning line): skipped, as in the reference
          }
          if (typeof parsed !== 'object' || parsed === null) continue;
          const response = parsed as StreamMessage;
          responses.push(response);
          if (response.session_id) sessionId = response.session_id;
          if (response.type === 'result') done = true;
        }
      }
    } catch {
      // timeout or lost stream: answer with what arrived
    }

    const resultMsg = responses.find((r) => r.type === 'result');
    let text = '';
    if (resultMsg) {
      text = resultMsg.result ?? '';
    } else {
      for (const r of responses) {
        if (r.type !== 'assistant') continue;
        const item = (r.message?.content ?? []).find((i) => i.type === 'text' && i.text);
        if (item?.text) {
          text = item.text;
          break;
        }
      }
    }
    return [text, sessionId];
  }
}
