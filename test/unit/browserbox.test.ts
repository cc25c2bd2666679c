// BrowserBox without a VM: a fake runtime records the box options BrowserBox creates and every exec
// it makes, and answers from a script, so the reference's exact shell commands, ports, defaults,
// error texts and the /json/version rewrite are checked here; playwright-core is mocked for
// connect(). test/boxtypes/browserbox.test.ts proves the effects with a real browser in a VM.
import { execFileSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterAll, beforeEach, describe, expect, it, vi } from 'vitest';
import { BoxliteError, BrowserBox, TimeoutError, type BrowserBoxOptions } from '../../src/index.js';
import { fakeRuntime as fakeBoxRuntime, rejection, type Reply } from './fake-box.js';

const connectCalls: Array<[string, string]> = [];
vi.mock('playwright-core', () => ({
  chromium: { connect: async (ws: string) => (connectCalls.push(['chromium', ws]), { fake: 'chromium-browser' }) },
  firefox: { connect: async (ws: string) => (connectCalls.push(['firefox', ws]), { fake: 'firefox-browser' }) },
  // a webkit without connect(): connect() must report the unknown browser type
  webkit: {},
}));

/** The shared fake runtime; `reply` answers each `sh -c SCRIPT` exec by its script. */
function fakeRuntime(reply: (script: string) => Reply = () => ({}), publishedPorts: unknown[] = []) {
  const f = fakeBoxRuntime((call) => reply(call.args[1] ?? ''), { info: { network: { publishedPorts } } });
  return { ...f, scripts: () => f.execs.map((e) => (expect(e.cmd).toBe('sh'), expect(e.args[0]).toBe('-c'), e.args[1])) };
}

const START = 'nohup npx -y playwright@1.58.0 run-server --port 3000 --host 0.0.0.0 > /tmp/playwright.log 2>&1 &';
const PW_POLL = 'curl -sf http://192.168.127.2:3000/json > /dev/null 2>&1 && echo ready || echo notready';
const FIND_CHROME = 'CHROME=$(find /ms-playwright -name chrome -type f 2>/dev/null | grep chrome-linux | head -1) && echo $CHROME';
const CHROME = '/ms-playwright/chromium-1208/chrome-linux64/chrome';
const CHROME_START =
  `nohup ${CHROME} --headless --no-sandbox --disable-gpu --disable-dev-shm-usage --disable-software-rasterizer --no-first-run ` +
  '--disable-extensions --user-data-dir=/tmp/chromium-data --remote-debugging-address=0.0.0.0 --remote-debugging-port=9222 ' +
  '--remote-allow-origins=* > /tmp/chromium-cdp.log 2>&1 &';
const CDP_POLL =
  '(curl -sf http://localhost:9222/json/version > /dev/null 2>&1 || curl -sf http://192.168.127.2:9222/json/version > /dev/null 2>&1) ' +
  '&& echo ready || echo notready';
const FWD_START = 'nohup python3 /tmp/cdp_fwd.py >/dev/null 2>&1 &';
const FWD_CHECK =
  `python3 -c "import socket; s=socket.socket(); s.settimeout(1); s.connect(('127.0.0.1',3000)); s.close(); print('ready')" 2>/dev/null || echo notready`;
const VERSION = 'curl -sf http://localhost:9222/json/version';

/** Replies for a chromium whose CDP and forwarder come up at once. */
function chromiumUp(versionJson: string) {
  return (s: string): Reply => {
    if (s === FIND_CHROME) return { stdout: `${CHROME}\n` };
    if (s === CDP_POLL || s === FWD_CHECK) return { stdout: 'ready\n' };
    if (s === VERSION) return { stdout: versionJson };
    return {};
  };
}

const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'bl-browserbox-'));
afterAll(() => fs.rmSync(tmp, { recursive: true, force: true }));
beforeEach(() => {
  connectCalls.length = 0;
});

describe('BrowserBox construction', () => {
  it('fixes the image, 2048 MiB, 2 vCPUs and publishes 3000 and 9222 before the user ports', async () => {
    const { runtime, creates } = fakeRuntime();
    const box = new BrowserBox({ runtime, env: { A: '1' }, ports: [{ hostPort: 8080, guestPort: 80 }] });
    expect(box.browser).toBe('chromium');
    await box.exec('true');
    expect(creates[0]).toMatchObject({
      image: 'mcr.microsoft.com/playwright:v1.58.0-jammy',
      memoryMib: 2048,
      cpus: 2,
      ports: [
        { hostPort: 3000, guestPort: 3000 },
        { hostPort: 9222, guestPort: 9222 },
        { hostPort: 8080, guestPort: 80 },
      ],
      env: [{ key: 'A', value: '1' }],
    });
  });

  it('ignores a user image (as the reference), passes rootfsPath, honours port, cdpPort, memory and cpus', async () => {
    const { runtime, creates } = fakeRuntime();
    const options = { runtime, image: 'mine:latest', rootfsPath: '/layout', port: 4000, cdpPort: 4001, memoryMib: 1024, cpus: 1, browser: 'firefox' };
    const box = new BrowserBox(options as BrowserBoxOptions);
    expect(box.browser).toBe('firefox');
    await box.exec('true');
    expect(creates[0]).toMatchObject({
      image: 'mcr.microsoft.com/playwright:v1.58.0-jammy',
      rootfsPath: '/layout',
      memoryMib: 1024,
      cpus: 1,
      ports: [
        { hostPort: 4000, guestPort: 3000 },
        { hostPort: 4001, guestPort: 9222 },
      ],
    });
  });
});

describe('BrowserBox Playwright server', () => {
  it('start() runs the reference command, polls until ready, and playwrightEndpoint() does not start it again', async () => {
    let polls = 0;
    const { runtime, scripts } = fakeRuntime((s) => (s === PW_POLL ? { stdout: ++polls < 2 ? 'notready\n' : 'ready\n' } : {}));
    const box = new BrowserBox({ runtime, port: 4100 });
    await box.start(30);
    expect(await box.playwrightEndpoint()).toBe('ws://localhost:4100/');
    expect(scripts()).toEqual([START, PW_POLL, PW_POLL]);
  });

  it('playwrightEndpoint() starts the server when needed; the default host port is 3000', async () => {
    const { runtime, scripts } = fakeRuntime((s) => (s === PW_POLL ? { stdout: 'ready' } : {}));
    const box = new BrowserBox({ runtime });
    expect(await box.playwrightEndpoint(5)).toBe('ws://localhost:3000/');
    expect(scripts()).toEqual([START, PW_POLL]);
  });

  it('port: 0 resolves to the host port the runtime published for guest port 3000', async () => {
    const published = [
      { guestPort: 9222, hostIp: '127.0.0.1', hostPort: 41001, protocol: 'tcp' },
      { guestPort: 3000, hostIp: '127.0.0.1', hostPort: 41000, protocol: 'tcp' },
    ];
    const { runtime } = fakeRuntime((s) => (s === PW_POLL ? { stdout: 'ready' } : {}), published);
    const box = new BrowserBox({ runtime, port: 0, cdpPort: 0 });
    expect(await box.playwrightEndpoint()).toBe('ws://localhost:41000/');
  });

  it('a server that never answers gives the reference TimeoutError with the first 500 bytes of its log', async () => {
    const log = 'npm error ' + 'x'.repeat(600);
    const { runtime, scripts } = fakeRuntime((s) => (s === PW_POLL ? { stdout: 'notready' } : s.startsWith('cat ') ? { stdout: `${log}\n` } : {}));
    const box = new BrowserBox({ runtime });
    const err = await rejection(box.start(0.2));
    expect(err).toBeInstanceOf(TimeoutError);
    expect(err.message).toBe(`Playwright Server (chromium) did not start within 0.2s. Log: ${log.slice(0, 500)}`);
    const s = scripts();
    expect(s[0]).toBe(START);
    expect(s.at(-1)).toBe("cat /tmp/playwright.log 2>/dev/null || echo 'No log'");
    expect(s.slice(1, -1).every((x) => x === PW_POLL)).toBe(true);
  });
});

describe('BrowserBox endpoint()', () => {
  it('webkit: BoxliteError before anything runs (no box is created)', async () => {
    const { runtime, creates, execs } = fakeRuntime();
    const err = await rejection(new BrowserBox({ runtime, browser: 'webkit' }).endpoint());
    expect(err).toBeInstanceOf(BoxliteError);
    expect(err.message).toBe('Puppeteer does not support WebKit. Use playwrightEndpoint() with Playwright for webkit.');
    expect(err.code).toBe('Unsupported');
    expect(execs).toEqual([]);
    expect(creates).toEqual([]);
  });

  it('after the Playwright server started: BoxliteError, nothing more runs', async () => {
    const { runtime, execs } = fakeRuntime((s) => (s === PW_POLL ? { stdout: 'ready' } : {}));
    const box = new BrowserBox({ runtime });
    await box.start();
    const before = execs.length;
    const err = await rejection(box.endpoint());
    expect(err).toBeInstanceOf(BoxliteError);
    expect(err.message).toBe(
      'Cannot use endpoint() when Playwright Server is already running. Create a separate BrowserBox instance for Puppeteer usage.',
    );
    expect(execs.length).toBe(before);
  });

  it('chromium: the reference commands, and the browser URL rewritten to localhost:<port>', async () => {
    const json = JSON.stringify({ Browser: 'Chrome/156', webSocketDebuggerUrl: 'ws://127.0.0.1:9222/devtools/browser/0f1e-2d3c' });
    const { runtime, scripts } = fakeRuntime(chromiumUp(json));
    const box = new BrowserBox({ runtime, port: 4200 });
    expect(await box.endpoint(30)).toBe('ws://localhost:4200/devtools/browser/0f1e-2d3c');
    const s = scripts();
    expect(s.length).toBe(7);
    expect([s[0], s[1], s[2]]).toEqual([FIND_CHROME, CHROME_START, CDP_POLL]);
    expect(s[3]).toMatch(/^printf '%s' '.*' > \/tmp\/cdp_fwd\.py$/s);
    expect(s.slice(4)).toEqual([FWD_START, FWD_CHECK, VERSION]);
    // A second call only asks the browser for its URL again.
    expect(await box.endpoint()).toBe('ws://localhost:4200/devtools/browser/0f1e-2d3c');
    expect(scripts().slice(7)).toEqual([VERSION]);
  });

  it('the forwarder script survives the shell quoting and is valid Python with the reference ports', async () => {
    const { runtime, scripts } = fakeRuntime(chromiumUp('{"webSocketDebuggerUrl":"ws://127.0.0.1:9222/x"}'));
    await new BrowserBox({ runtime }).endpoint();
    const target = path.join(tmp, 'cdp_fwd.py');
    execFileSync('sh', ['-c', scripts()[3].replace('/tmp/cdp_fwd.py', target)]);
    const py = fs.readFileSync(target, 'utf8');
    expect(py).toContain("l.bind(('0.0.0.0',3000))");
    expect(py).toContain("srv.connect(('127.0.0.1',9222))");
    expect(py).toContain("x=re.sub(rb'Host: [^\\r\\n]+',b'Host: 127.0.0.1:9222',x)");
    execFileSync('python3', ['-c', 'import ast, sys; ast.parse(open(sys.argv[1]).read())', target]);
  });

  it('empty /json/version and a missing webSocketDebuggerUrl are BoxliteErrors', async () => {
    for (const [json, message] of [
      ['', 'CDP endpoint returned empty response'],
      ['{"Browser":"x"}', 'CDP endpoint did not return webSocketDebuggerUrl'],
    ]) {
      const { runtime } = fakeRuntime(chromiumUp(json));
      const err = await rejection(new BrowserBox({ runtime }).endpoint());
      expect(err).toBeInstanceOf(BoxliteError);
      expect(err.message).toBe(message);
    }
  });

  it('no chromium under /ms-playwright: the reference BoxliteError, nothing started', async () => {
    const { runtime, scripts } = fakeRuntime(() => ({ stdout: '\n' }));
    const err = await rejection(new BrowserBox({ runtime }).endpoint());
    expect(err).toBeInstanceOf(BoxliteError);
    expect(err.message).toBe("Could not find chromium binary in Playwright image. Make sure you're using the Playwright Docker image.");
    expect(scripts()).toEqual([FIND_CHROME]);
  });

  it('a CDP browser that never answers: TimeoutError with log, processes and port', async () => {
    const { runtime } = fakeRuntime((s) => {
      if (s === FIND_CHROME) return { stdout: CHROME };
      if (s === CDP_POLL) return { stdout: 'notready' };
      if (s.startsWith('cat /tmp/chromium-cdp.log')) return { stdout: 'chrome crashed\n' };
      if (s.startsWith('ps aux')) return { stdout: 'root 7 chrome\n' };
      if (s.startsWith('netstat -tlnp 2>/dev/null | grep 9222 || ss -tlnp 2>/dev/null | grep 9222')) return { stdout: 'Port not bound\n' };
      return {};
    });
    const err = await rejection(new BrowserBox({ runtime }).endpoint(0.1));
    expect(err).toBeInstanceOf(TimeoutError);
    expect(err.message).toBe('CDP browser did not start within 0.1s.\nLog: chrome crashed\nProcesses: root 7 chrome\nPort 9222: Port not bound');
  });

  it('firefox: BiDi commands and ws://localhost:<port>/session', async () => {
    const FF = '/ms-playwright/firefox-1509/firefox/firefox';
    const { runtime, scripts } = fakeRuntime((s) => {
      if (s.startsWith('FF=')) return { stdout: `${FF}\n` };
      if (s.startsWith('grep -q') || s === FWD_CHECK) return { stdout: 'ready' };
      return {};
    });
    const box = new BrowserBox({ runtime, browser: 'firefox', port: 4300 });
    expect(await box.endpoint()).toBe('ws://localhost:4300/session');
    const s = scripts();
    expect(s.slice(0, 4)).toEqual([
      'FF=$(find /ms-playwright -name firefox -type f 2>/dev/null | head -1) && echo $FF',
      'mkdir -p /tmp/firefox-profile',
      `nohup ${FF} --headless --no-remote --profile /tmp/firefox-profile --remote-debugging-port 9222 > /tmp/firefox-bidi.log 2>&1 &`,
      'grep -q "WebDriver BiDi listening" /tmp/firefox-bidi.log 2>/dev/null && echo ready || echo notready',
    ]);
    expect(s.slice(5)).toEqual([FWD_START, FWD_CHECK]);
  });
});

describe('BrowserBox connect()', () => {
  it('connects playwright-core\'s browser type to the Playwright endpoint', async () => {
    const { runtime, scripts } = fakeRuntime((s) => (s === PW_POLL ? { stdout: 'ready' } : {}));
    const box = new BrowserBox({ runtime, browser: 'firefox', port: 4400 });
    expect(await box.connect({ timeout: 9 })).toEqual({ fake: 'firefox-browser' });
    expect(connectCalls).toEqual([['firefox', 'ws://localhost:4400/']]);
    expect(scripts()).toEqual([START, PW_POLL]);
  });

  it('a browser type playwright-core lacks: BoxliteError "Unknown browser type"', async () => {
    const { runtime } = fakeRuntime((s) => (s === PW_POLL ? { stdout: 'ready' } : {}));
    const err = await rejection(new BrowserBox({ runtime, browser: 'webkit' }).connect());
    expect(err).toBeInstanceOf(BoxliteError);
    expect(err.message).toBe('Unknown browser type: webkit');
    expect(connectCalls).toEqual([]);
  });
});
