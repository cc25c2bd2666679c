/**
 * BrowserBox - Secure browser with Playwright Server.
 *
 * Provides a minimal, elegant API for running isolated browsers that can be
 * controlled from outside using Playwright. Supports all browser types:
 * chromium, firefox, and webkit.
 */
import { SimpleBox, type SimpleBoxOptions } from "./simplebox.js";
/**
 * Browser type supported by BrowserBox.
 */
export type BrowserType = "chromium" | "firefox" | "webkit";
/**
 * Options for creating a BrowserBox.
 */
export interface BrowserBoxOptions extends Omit<SimpleBoxOptions, "image" | "cpus" | "memoryMib"> {
    /** Browser type (default: 'chromium') */
    browser?: BrowserType;
    /** Memory in MiB (default: 2048) */
    memoryMib?: number;
    /** Number of CPU cores (default: 2) */
    cpus?: number;
    /** Host port for Playwright Server WebSocket connection (default: 3000) */
    port?: number;
    /** Host port for CDP/Puppeteer connection (default: 9222) */
    cdpPort?: number;
}
/**
 * Secure browser environment with Playwright Server.
 *
 * Auto-starts a browser with Playwright Server enabled for remote control.
 * Connect from outside using Playwright's `connect()` method.
 *
 * ## Usage
 *
 * ```typescript
 * import { BrowserBox } from '@boxlite-ai/boxlite';
 * import { chromium } from 'playwright-core';
 *
 * const box = new BrowserBox({ browser: 'chromium' });
 * try {
 *   const ws = await box.playwrightEndpoint();
 *   const browser = await chromium.connect(ws);
 *
 *   const page = await browser.newPage();
 *   await page.goto('https://example.com');
 *   console.log(await page.title());
 *
 *   await browser.close();
 * } finally {
 *   await box.stop();
 * }
 * ```
 *
 * ## All browsers supported
 *
 * ```typescript
 * // WebKit works!
 * const box = new BrowserBox({ browser: 'webkit' });
 * const ws = await box.playwrightEndpoint();
 * const browser = await webkit.connect(ws);
 * ```
 */
export declare class BrowserBox extends SimpleBox {
    /** Playwright Docker image with all browsers pre-installed */
    private static readonly DEFAULT_IMAGE;
    /** Playwright version - must match the Docker image */
    private static readonly PLAYWRIGHT_VERSION;
    /** Default port for Playwright Server */
    private static readonly DEFAULT_PORT;
    private readonly _browser;
    private readonly _guestPort;
    private readonly _hostPort;
    private readonly _cdpGuestPort;
    private _playwrightStarted;
    private _cdpStarted;
    /**
     * Create a new BrowserBox.
     *
     * @param options - BrowserBox configuration options
     *
     * @example
     * ```typescript
     * const browser = new BrowserBox({
     *   browser: 'webkit',  // All browsers work!
     *   memoryMib: 2048,
     *   cpus: 2
     * });
     * ```
     */
    constructor(options?: BrowserBoxOptions);
    /**
     * Start the Playwright Server with the configured browser.
     *
     * The Playwright Server binds to 0.0.0.0, so no proxy is needed.
     * It handles all browser types natively.
     *
     * @param timeout - Maximum time to wait for server to start in seconds (default: 60)
     * @throws {TimeoutError} If server doesn't start within timeout
     */
    start(timeout?: number): Promise<void>;
    /** Start Playwright Server (works for ALL browsers). */
    private _startPlaywrightServer;
    /** Wait for Playwright Server to be ready. */
    private _waitForPlaywrightServer;
    /** Start browser with remote debugging for Puppeteer (CDP for Chromium, WebDriver BiDi for Firefox). */
    private _startCdpBrowser;
    /** Start Chromium with CDP remote debugging. */
    private _startChromiumCdp;
    /** Start Firefox with WebDriver BiDi remote debugging. */
    private _startFirefoxBiDi;
    /** Wait for Firefox WebDriver BiDi server to be ready. */
    private _waitForBiDiServer;
    /** Start Python TCP forwarder to route traffic through the working port 3000. */
    private _startCdpForwarder;
    /** Wait for CDP server to be ready. */
    private _waitForCdpServer;
    /** Ensure Playwright server is started. */
    private _ensurePlaywrightStarted;
    /** Ensure CDP browser is started. */
    private _ensureCdpStarted;
    /**
     * Get the WebSocket endpoint for Playwright connect().
     *
     * This is the primary method for Playwright connections.
     * The returned URL can be used with Playwright's `connect()` method.
     *
     * @param timeout - Optional timeout to wait for server to start (starts automatically if not started)
     * @returns WebSocket endpoint URL (e.g., 'ws://localhost:3000/')
     *
     * @example
     * ```typescript
     * const box = new BrowserBox({ browser: 'chromium' });
     * const ws = await box.playwrightEndpoint();
     * const browser = await chromium.connect(ws);
     * ```
     */
    playwrightEndpoint(timeout?: number): Promise<string>;
    /**
     * Get the WebSocket endpoint for CDP/BiDi connections.
     *
     * This is the generic endpoint that works with Puppeteer, Selenium, or any
     * other CDP/BiDi client. Works with chromium (CDP) and firefox (WebDriver BiDi).
     * WebKit is not supported - use playwrightEndpoint() with Playwright instead.
     *
     * @param timeout - Optional timeout to wait for browser to start
     * @returns WebSocket endpoint URL
     * @throws {BoxliteError} If browser type is webkit
     *
     * @example
     * ```typescript
     * // Chromium (CDP)
     * const box = new BrowserBox({ browser: 'chromium' });
     * const wsEndpoint = await box.endpoint();
     * const browser = await puppeteer.connect({ browserWSEndpoint: wsEndpoint });
     *
     * // Firefox (WebDriver BiDi)
     * const box = new BrowserBox({ browser: 'firefox' });
     * const wsEndpoint = await box.endpoint();
     * const browser = await puppeteer.connect({
     *   browserWSEndpoint: wsEndpoint,
     *   protocol: 'webDriverBiDi'
     * });
     * // Note: Firefox headless has a limitation where newPage() hangs.
     * // Use browser.pages()[0] instead of browser.newPage().
     * const page = (await browser.pages())[0];
     * ```
     */
    endpoint(timeout?: number): Promise<string>;
    /**
     * Connect to the browser using Playwright.
     *
     * Convenience method that returns a connected Playwright Browser instance.
     * Requires playwright-core to be installed.
     *
     * @param options - Connection options
     * @returns Connected Playwright Browser instance
     *
     * @example
     * ```typescript
     * const box = new BrowserBox({ browser: 'webkit' });
     * const browser = await box.connect();
     * const page = await browser.newPage();
     * await page.goto('https://example.com');
     * ```
     */
    connect(options?: {
        timeout?: number;
    }): Promise<unknown>;
    /**
     * Get the browser type.
     *
     * @returns The browser type ('chromium', 'firefox', or 'webkit')
     */
    get browser(): BrowserType;
}
