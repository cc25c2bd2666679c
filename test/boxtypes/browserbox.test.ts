// BrowserBox in real VMs on the offline `browserbox` image (Debian's chromium-headless-shell,
// Debian's node, Playwright 1.58.0 from a pre-filled npm cache): a real playwright-core client
// drives the Playwright server (connect, page, title, screenshot) and, on a second box, the raw CDP
// endpoint through the in-guest forwarder. The busybox image has no npx: start() must time out
// with the log. One box at a time (2048 MiB each); free host ports, since the reference's defaults
// (3000/9222) would clash with anything else on the host.
import { execFileSync } from 'node:child_process';
import path from 'node:path';
import { chromium, type Browser } from 'playwright-core';
// playwright-core's bundled `ws` (Node 20 has no WebSocket client): a raw WebDriver BiDi client.
import utilsBundle from 'playwright-core/lib/utilsBundle';
import { afterEach, beforeAll, describe, expect, inject, it } from 'vitest';
import { BrowserBox, JsBoxlite, TimeoutError } from '../../dist/index.js';
import { freePort } from '../fixtures/net.js';

const ROOT = path.resolve(import.meta.dirname, '../..');
const IMAGE = path.join(ROOT, '.cache', 'images', 'browserbox');
const FIREFOX_IMAGE = path.join(ROOT, '.cache', 'images', 'browserbox-firefox');
// TCG: npx + node + chromium start take minutes, not the reference's 60 s.
const START_TIMEOUT_S = 300;

let runtime: JsBoxlite;
const cleanups: Array<() => Promise<unknown>> = [];

beforeAll(() => {
  // Idempotent: returns at once when the cached layout's content key matches (scripts/setup.sh builds it).
  for (const [dir, variant] of [
    [IMAGE, 'browserbox'],
    [FIREFOX_IMAGE, 'browserbox-firefox'],
  ]) {
    execFileSync(process.execPath, [path.join(ROOT, 'scripts', 'make-test-image.mjs'), dir, '--variant', variant], { stdio: 'inherit' });
  }
  runtime = new JsBoxlite({ homeDir: inject('home') });
});

afterEach(async () => {
  for (const c of cleanups.splice(0).reverse()) await c().catch(() => {});
});

const isPng = (buf: Buffer) => buf.subarray(0, 8).equals(Buffer.from([0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a]));

describe('BrowserBox (chromium, offline Playwright image)', () => {
  it('playwrightEndpoint → chromium.connect → page title and a PNG screenshot; connect() too', async () => {
    const port = await freePort();
    const box = new BrowserBox({ runtime, rootfsPath: IMAGE, port, cdpPort: await freePort() });
    cleanups.push(() => box.stop());

    const t0 = Date.now();
    const ws = await box.playwrightEndpoint(START_TIMEOUT_S);
    expect(ws).toBe(`ws://localhost:${port}/`);
    const browser = await chromium.connect(ws, { timeout: START_TIMEOUT_S * 1000 });
    cleanups.push(() => browser.close());
    const page = await browser.newPage();
    await page.setContent('<title>t</title><body style="background:#3366cc">boxlite</body>');
    expect(await page.title()).toBe('t');
    console.log(`BrowserBox start → first page title: ${((Date.now() - t0) / 1000).toFixed(1)} s (chromium ${browser.version()})`);
    const png = await page.screenshot();
    expect(isPng(png)).toBe(true);
    expect(png.length).toBeGreaterThan(1000);

    // The reference's convenience method: playwright-core imported by the box, the same server.
    const second = (await box.connect({ timeout: START_TIMEOUT_S })) as Browser;
    cleanups.push(() => second.close());
    const page2 = await second.newPage();
    await page2.setContent('<title>via connect</title>');
    expect(await page2.title()).toBe('via connect');
  });

  it('endpoint() → connectOverCDP through the in-guest forwarder evaluates JavaScript', async () => {
    const port = await freePort();
    const box = new BrowserBox({ runtime, rootfsPath: IMAGE, port, cdpPort: await freePort() });
    cleanups.push(() => box.stop());

    const url = await box.endpoint(START_TIMEOUT_S);
    expect(url).toMatch(new RegExp(`^ws://localhost:${port}/devtools/browser/[0-9a-f-]+$`));
    const browser = await chromium.connectOverCDP(url, { timeout: START_TIMEOUT_S * 1000 });
    cleanups.push(() => browser.close());
    const context = browser.contexts()[0] ?? (await browser.newContext());
    const page = await context.newPage();
    expect(await page.evaluate('1+1')).toBe(2);
  });

  it('an image without Playwright: start(5) throws TimeoutError with the log', async () => {
    const box = new BrowserBox({ runtime, rootfsPath: inject('image'), port: await freePort(), cdpPort: await freePort() });
    cleanups.push(() => box.stop());
    const err = await box.start(5).then(
      () => null,
      (e: unknown) => e as Error,
    );
    expect(err).toBeInstanceOf(TimeoutError);
    expect(err!.message).toMatch(/^Playwright Server \(chromium\) did not start within 5s\. Log: /);
    // busybox has neither nohup nor npx: the shell's complaint is in the log the message quotes.
    expect(err!.message).toMatch(/not found/);
  });
});

/** One BiDi command over an open socket: resolves with its result, rejects with its error. */
function bidi(ws: InstanceType<typeof utilsBundle.ws>, id: number, method: string, params: object): Promise<any> {
  return new Promise((resolve, reject) => {
    const onMessage = (data: Buffer) => {
      const msg = JSON.parse(data.toString());
      if (msg.id !== id) return;
      ws.off('message', onMessage);
      if (msg.type === 'error') reject(new Error(`${method}: ${msg.error}: ${msg.message}`));
      else resolve(msg.result);
    };
    ws.on('message', onMessage);
    ws.send(JSON.stringify({ id, method, params }));
  });
}

describe('BrowserBox (firefox-esr, WebDriver BiDi)', () => {
  it('endpoint() is ws://localhost:<port>/session; session.new and script.evaluate work through the forwarder', async () => {
    const port = await freePort();
    const box = new BrowserBox({ runtime, rootfsPath: FIREFOX_IMAGE, browser: 'firefox', port, cdpPort: await freePort() });
    cleanups.push(() => box.stop());

    const url = await box.endpoint(START_TIMEOUT_S);
    expect(url).toBe(`ws://localhost:${port}/session`);
    const ws = new utilsBundle.ws(url);
    cleanups.push(async () => ws.close());
    await new Promise((resolve, reject) => ws.once('open', resolve).once('error', reject));
    const session = await bidi(ws, 1, 'session.new', { capabilities: {} });
    expect(session.capabilities.browserName).toBe('firefox');
    const tree = await bidi(ws, 2, 'browsingContext.getTree', {});
    const context = tree.contexts[0].context;
    const evaluated = await bidi(ws, 3, 'script.evaluate', { expression: '6*7', target: { context }, awaitPromise: false });
    expect(evaluated.result).toEqual({ type: 'number', value: 42 });
  });
});
