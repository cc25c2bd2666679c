// BrowserBox: a browser in a box, driven from the host through a Playwright server (or raw
// CDP/BiDi). A port of @boxlite-ai/boxlite 0.10's dist/browserbox.js: the same fixed shell
// commands, ports, defaults, timeouts and error texts, because programs written for the reference
// (and the images it targets: mcr.microsoft.com/playwright:v1.58.0-jammy) depend on them.
// Differences (docs/compatibility.md): errors carry a BoxliteError code, and `port: 0` (or
// `cdpPort: 0`) resolves to the host port the runtime actually published instead of `localhost:0`.
import { BoxliteError, TimeoutError } from '../errors/index.js';
import type { PortSpec } from '../runtime/options.js';
import { BROWSERBOX_PORT, GUEST_IP } from './constants.js';
import { SimpleBox, type SimpleBoxOptions } from './simplebox.js';

/** Browser type supported by BrowserBox. */
export type BrowserType = 'chromium' | 'firefox' | 'webkit';

/** Options for creating a BrowserBox (the image is fixed; `rootfsPath` still wins over it). */
export interface BrowserBoxOptions extends Omit<SimpleBoxOptions, 'image' | 'cpus' | 'memoryMib'> {
  /** Browser type (default 'chromium'). */
  browser?: BrowserType;
  /** Memory in MiB (default 2048). */
  memoryMib?: number;
  /** Number of CPU cores (default 2). */
  cpus?: number;
  /** Host port of the Playwright server, guest port 3000 (default 3000; 0 = any free port). */
  port?: number;
  /** Host port for CDP, guest port 9222 (default 9222; 0 = any free port). */
  cdpPort?: number;
}

/** The guest port chromium's remote debugging (and firefox's BiDi) listens on. */
const CDP_PORT = 9222;
const POLL_INTERVAL_MS = 500;

const sleep = (ms: number) => new Promise<void>((resolve) => setTimeout(resolve, ms));

/**
 * The in-guest TCP forwarder of endpoint(): 0.0.0.0:3000 → 127.0.0.1:9222, rewriting the first
 * Host header for the browser. Needed because chromium binds its debugging port to 127.0.0.1 only
 * (it ignores --remote-debugging-address), so the published 9222 is unreachable; 3000 is not.
 */
function forwarderScript(fwdPort: number, cdpPort: number): string {
  return [
    'import socket, threading, re',
    'def fwd(s,d,rewrite=False):',
    '    try:',
    '        first=True',
    '        while True:',
    '            x=s.recv(65536)',
    '            if not x: break',
    '            if first and rewrite:',
    `                x=re.sub(rb'Host: [^\\r\\n]+',b'Host: 127.0.0.1:${cdpPort}',x)`,
    '                first=False',
    '            d.sendall(x)',
    '    except: pass',
    '    s.close(); d.close()',
    'def handle(c):',
    '    try:',
    '        srv=socket.socket()',
    `        srv.connect(('127.0.0.1',${cdpPort}))`,
    '        threading.Thread(target=fwd,args=(c,srv,True)).start()',
    '        threading.Thread(target=fwd,args=(srv,c,False)).start()',
    '    except: c.close()',
    'l=socket.socket()',
    'l.setsockopt(socket.SOL_SOCKET,socket.SO_REUSEADDR,1)',
    `l.bind(('0.0.0.0',${fwdPort}))`,
    'l.listen(10)',
    'while True:',
    '    c,_=l.accept()',
    '    threading.Thread(target=handle,args=(c,)).start()',
  ].join('\n');
}

/**
 * A browser behind a Playwright server, reachable from the host.
 *
 * ```ts
 * import { chromium } from 'playwright-core';
 * await using box = new BrowserBox({ browser: 'chromium' });
 * const browser = await chromium.connect(await box.playwrightEndpoint());
 * ```
 */
export class BrowserBox extends SimpleBox {
  /** The reference's image: Playwright's with all browsers installed under /ms-playwright. */
  private static readonly DEFAULT_IMAGE = 'mcr.microsoft.com/playwright:v1.58.0-jammy';
  /** The Playwright release run in the box; a client must have the same minor (HTTP 428 otherwise). */
  private static readonly PLAYWRIGHT_VERSION = '1.58.0';
  private static readonly DEFAULT_PORT = BROWSERBOX_PORT;

  private readonly _browser: BrowserType;
  private readonly _guestPort: number;
  private readonly _hostPort: number;
  private readonly _cdpGuestPort: number;
  private _playwrightStarted = false;
  private _cdpStarted = false;

  constructor(options: BrowserBoxOptions = {}) {
    const { browser = 'chromium', memoryMib = 2048, cpus = 2, port, cdpPort, ports: userPorts = [], ...rest } = options;
    const guestPort = BrowserBox.DEFAULT_PORT;
    const hostPort = port ?? guestPort;
    const cdpHostPort = cdpPort ?? CDP_PORT;
    const defaultPorts: PortSpec[] = [
      { hostPort, guestPort }, // Playwright server, and endpoint()'s forwarder
      { hostPort: cdpHostPort, guestPort: CDP_PORT }, // CDP, as the reference publishes it
    ];
    // `image` last: the reference ignores a user's image (rootfsPath still overrides it).
    super({ ...rest, image: BrowserBox.DEFAULT_IMAGE, memoryMib, cpus, ports: [...defaultPorts, ...userPorts] });
    this._browser = browser;
    this._guestPort = guestPort;
    this._hostPort = hostPort;
    this._cdpGuestPort = CDP_PORT;
  }

  /**
   * Starts the Playwright server for the configured browser and waits until it answers.
   * @param timeout seconds (default 60)
   * @throws TimeoutError with the start of the server's log
   */
  async start(timeout = 60): Promise<void> {
    await this._startPlaywrightServer(timeout);
  }

  private async _startPlaywrightServer(timeout = 60): Promise<void> {
    const startCmd =
      `npx -y playwright@${BrowserBox.PLAYWRIGHT_VERSION} run-server ` +
      `--port ${this._guestPort} --host 0.0.0.0 > /tmp/playwright.log 2>&1 &`;
    await this.exec('sh', '-c', `nohup ${startCmd}`);
    await this._waitForPlaywrightServer(timeout);
    this._playwrightStarted = true;
  }

  private async _waitForPlaywrightServer(timeout: number): Promise<void> {
    const startTime = Date.now();
    for (;;) {
      if ((Date.now() - startTime) / 1000 > timeout) {
        const log = await this._readLog('/tmp/playwright.log');
        throw new TimeoutError(`Playwright Server (${this._browser}) did not start within ${timeout}s. Log: ${log.slice(0, 500)}`);
      }
      const check = `curl -sf http://${GUEST_IP}:${this._guestPort}/json > /dev/null 2>&1 && echo ready || echo notready`;
      const result = await this.exec('sh', '-c', check);
      if (result.stdout.trim() === 'ready') return;
      await sleep(POLL_INTERVAL_MS);
    }
  }

  /** A log file's content for a timeout message; '' when even that fails (the box may be gone). */
  private async _readLog(file: string): Promise<string> {
    try {
      return (await this.exec('sh', '-c', `cat ${file} 2>/dev/null || echo 'No log'`)).stdout.trim();
    } catch {
      return '';
    }
  }

  /** Starts the browser with CDP (chromium) or WebDriver BiDi (firefox), behind the forwarder. */
  private async _startCdpBrowser(timeout = 60): Promise<void> {
    if (this._browser === 'webkit') {
      throw new BoxliteError('Puppeteer does not support WebKit. Use playwrightEndpoint() with Playwright for webkit.', {
        code: 'Unsupported',
        prefixed: true,
      });
    }
    // Both use guest port 3000: the Playwright server, or the forwarder in front of the browser.
    if (this._playwrightStarted) {
      throw new BoxliteError(
        'Cannot use endpoint() when Playwright Server is already running. ' + 'Create a separate BrowserBox instance for Puppeteer usage.',
        { code: 'InvalidState', prefixed: true },
      );
    }
    if (this._browser === 'chromium') await this._startChromiumCdp(timeout);
    else if (this._browser === 'firefox') await this._startFirefoxBiDi(timeout);
    await this._startCdpForwarder();
    this._cdpStarted = true;
  }

  private async _startChromiumCdp(timeout: number): Promise<void> {
    const find = 'CHROME=$(find /ms-playwright -name chrome -type f 2>/dev/null | grep chrome-linux | head -1) && echo $CHROME';
    const chromePath = (await this.exec('sh', '-c', find)).stdout.trim();
    if (!chromePath) {
      throw new BoxliteError("Could not find chromium binary in Playwright image. Make sure you're using the Playwright Docker image.", {
        code: 'Image',
        prefixed: true,
      });
    }
    const startCmd =
      `${chromePath} --headless --no-sandbox --disable-gpu --disable-dev-shm-usage ` +
      `--disable-software-rasterizer --no-first-run --disable-extensions ` +
      `--user-data-dir=/tmp/chromium-data ` +
      `--remote-debugging-address=0.0.0.0 --remote-debugging-port=${this._cdpGuestPort} ` +
      `--remote-allow-origins=* ` +
      `> /tmp/chromium-cdp.log 2>&1 &`;
    await this.exec('sh', '-c', `nohup ${startCmd}`);
    await this._waitForCdpServer(timeout);
  }

  private async _startFirefoxBiDi(timeout: number): Promise<void> {
    const find = 'FF=$(find /ms-playwright -name firefox -type f 2>/dev/null | head -1) && echo $FF';
    const firefoxPath = (await this.exec('sh', '-c', find)).stdout.trim();
    if (!firefoxPath) {
      throw new BoxliteError("Could not find firefox binary in Playwright image. Make sure you're using the Playwright Docker image.", {
        code: 'Image',
        prefixed: true,
      });
    }
    const startCmd =
      `${firefoxPath} --headless --no-remote ` +
      `--profile /tmp/firefox-profile ` +
      `--remote-debugging-port ${this._cdpGuestPort} ` +
      `> /tmp/firefox-bidi.log 2>&1 &`;
    await this.exec('sh', '-c', 'mkdir -p /tmp/firefox-profile');
    await this.exec('sh', '-c', `nohup ${startCmd}`);
    await this._waitForBiDiServer(timeout);
  }

  private async _waitForBiDiServer(timeout: number): Promise<void> {
    const startTime = Date.now();
    for (;;) {
      if ((Date.now() - startTime) / 1000 > timeout) {
        const log = await this._readLog('/tmp/firefox-bidi.log');
        throw new TimeoutError(`Firefox WebDriver BiDi did not start within ${timeout}s.\nLog: ${log.slice(0, 500)}`);
      }
      const check = 'grep -q "WebDriver BiDi listening" /tmp/firefox-bidi.log 2>/dev/null && echo ready || echo notready';
      if ((await this.exec('sh', '-c', check)).stdout.trim() === 'ready') return;
      await sleep(POLL_INTERVAL_MS);
    }
  }

  /** Writes and starts the forwarder, then waits up to 10 s for it (not an error if it never answers, as the reference). */
  private async _startCdpForwarder(): Promise<void> {
    const script = forwarderScript(this._guestPort, this._cdpGuestPort);
    await this.exec('sh', '-c', `printf '%s' '${script.replace(/'/g, "'\\''")}' > /tmp/cdp_fwd.py`);
    await this.exec('sh', '-c', 'nohup python3 /tmp/cdp_fwd.py >/dev/null 2>&1 &');
    const startTime = Date.now();
    while (Date.now() - startTime < 10_000) {
      const check =
        `python3 -c "import socket; s=socket.socket(); s.settimeout(1); s.connect(('127.0.0.1',${this._guestPort})); s.close(); print('ready')" ` +
        '2>/dev/null || echo notready';
      if ((await this.exec('sh', '-c', check)).stdout.trim() === 'ready') return;
      await sleep(200);
    }
  }

  private async _waitForCdpServer(timeout: number): Promise<void> {
    const startTime = Date.now();
    const port = this._cdpGuestPort;
    for (;;) {
      if ((Date.now() - startTime) / 1000 > timeout) {
        let log = '';
        let processes = '';
        let portInfo = '';
        try {
          log = (await this.exec('sh', '-c', "cat /tmp/chromium-cdp.log 2>/dev/null || echo 'No log'")).stdout.trim();
          processes = (await this.exec('sh', '-c', 'ps aux | grep -i chrom | head -5')).stdout.trim();
          portInfo = (
            await this.exec('sh', '-c', `netstat -tlnp 2>/dev/null | grep ${port} || ss -tlnp 2>/dev/null | grep ${port} || echo 'Port not bound'`)
          ).stdout.trim();
        } catch {
          // diagnostics only
        }
        throw new TimeoutError(
          `CDP browser did not start within ${timeout}s.\n` + `Log: ${log.slice(0, 500)}\n` + `Processes: ${processes}\n` + `Port ${port}: ${portInfo}`,
        );
      }
      const check =
        `(curl -sf http://localhost:${port}/json/version > /dev/null 2>&1 || ` +
        `curl -sf http://${GUEST_IP}:${port}/json/version > /dev/null 2>&1) && echo ready || echo notready`;
      if ((await this.exec('sh', '-c', check)).stdout.trim() === 'ready') return;
      await sleep(POLL_INTERVAL_MS);
    }
  }

  /**
   * The host port published for guest port 3000. With `port: 0` the runtime picks one when the
   * box boots, so it is read back from the box (the reference would return `localhost:0`).
   */
  private async _publishedHostPort(): Promise<number> {
    if (this._hostPort !== 0) return this._hostPort;
    const info = await this.getInfo();
    const published = info.network?.publishedPorts?.find((p) => p.guestPort === this._guestPort && p.protocol === 'tcp');
    if (!published) throw new BoxliteError(`no host port is published for guest port ${this._guestPort}`, { code: 'Network' });
    return published.hostPort;
  }

  /**
   * The WebSocket URL for Playwright's `browserType.connect()`; starts the server first if needed.
   * @param timeout seconds to wait for the server (default 60)
   */
  async playwrightEndpoint(timeout?: number): Promise<string> {
    if (!this._playwrightStarted) await this._startPlaywrightServer(timeout ?? 60);
    return `ws://localhost:${await this._publishedHostPort()}/`;
  }

  /**
   * The WebSocket URL of the browser itself: CDP for chromium (Puppeteer, `connectOverCDP`),
   * WebDriver BiDi for firefox. Not for webkit, and not on a box whose Playwright server runs.
   * @param timeout seconds to wait for the browser (default 60)
   */
  async endpoint(timeout?: number): Promise<string> {
    if (!this._cdpStarted) await this._startCdpBrowser(timeout ?? 60);
    const hostPort = await this._publishedHostPort();
    if (this._browser === 'firefox') {
      // Firefox's BiDi WebSocket upgrade is served on /session.
      return `ws://localhost:${hostPort}/session`;
    }
    const result = await this.exec('sh', '-c', `curl -sf http://localhost:${this._cdpGuestPort}/json/version`);
    if (!result.stdout.trim()) throw new BoxliteError('CDP endpoint returned empty response', { code: 'Parse', prefixed: true });
    const versionInfo = JSON.parse(result.stdout) as { webSocketDebuggerUrl?: string };
    const wsUrl = versionInfo.webSocketDebuggerUrl || '';
    if (!wsUrl) throw new BoxliteError('CDP endpoint did not return webSocketDebuggerUrl', { code: 'Parse', prefixed: true });
    // The browser reports its in-guest address; the host reaches it through the forwarder.
    return wsUrl.replace(/ws:\/\/[^:]+:\d+/, `ws://localhost:${hostPort}`);
  }

  /**
   * A connected Playwright Browser, through `playwright-core` (an optional peer dependency, imported
   * only here; it must be 1.58.x to match the server).
   */
  async connect(options?: { timeout?: number }): Promise<unknown> {
    const ws = await this.playwrightEndpoint(options?.timeout);
    const playwright = (await import(PLAYWRIGHT_MODULE)) as Record<string, { connect?: (ws: string) => Promise<unknown> } | undefined>;
    const browserType = playwright[this._browser];
    if (!browserType?.connect) {
      throw new BoxliteError(`Unknown browser type: ${this._browser}`, { code: 'InvalidArgument', prefixed: true });
    }
    return browserType.connect(ws);
  }

  /** The browser type ('chromium', 'firefox' or 'webkit'). */
  get browser(): BrowserType {
    return this._browser;
  }
}

// A variable, so TypeScript does not need playwright-core's types to build this package.
const PLAYWRIGHT_MODULE = 'playwright-core';
