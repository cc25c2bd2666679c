/**
 * ComputerBox - Desktop environment with web access.
 *
 * Provides a minimal, elegant API for running isolated desktop environments
 * that can be viewed from a browser, with full GUI automation support.
 */
import { SimpleBox, type SimpleBoxOptions } from "./simplebox.js";
/**
 * Options for creating a ComputerBox.
 */
export interface ComputerBoxOptions extends Omit<SimpleBoxOptions, "image" | "cpus" | "memoryMib"> {
    /** Number of CPU cores (default: 2) */
    cpus?: number;
    /** Memory in MiB (default: 2048) */
    memoryMib?: number;
    /** Port for HTTP desktop GUI (default: 3000) */
    guiHttpPort?: number;
    /** Port for HTTPS desktop GUI (default: 3001) */
    guiHttpsPort?: number;
}
/**
 * Screenshot result containing image data and metadata.
 */
export interface Screenshot {
    /** Base64-encoded PNG image data */
    data: string;
    /** Image width in pixels */
    width: number;
    /** Image height in pixels */
    height: number;
    /** Image format (always 'png') */
    format: "png";
}
/**
 * Desktop environment accessible via web browser.
 *
 * Auto-starts a full desktop environment with web interface.
 * Access the desktop by opening the URL in your browser.
 *
 * **Note**: Uses HTTPS with self-signed certificate - your browser will show
 * a security warning. Click "Advanced" and "Proceed" to access the desktop.
 *
 * ## Usage
 *
 * ```typescript
 * const desktop = new ComputerBox();
 * try {
 *   await desktop.waitUntilReady();
 *   const screenshot = await desktop.screenshot();
 *   console.log('Desktop ready!');
 * } finally {
 *   await desktop.stop();
 * }
 * ```
 *
 * ## Example with custom settings
 *
 * ```typescript
 * const desktop = new ComputerBox({
 *   memoryMib: 4096,
 *   cpus: 4
 * });
 * try {
 *   await desktop.waitUntilReady();
 *   await desktop.mouseMove(100, 200);
 *   await desktop.leftClick();
 * } finally {
 *   await desktop.stop();
 * }
 * ```
 */
export declare class ComputerBox extends SimpleBox {
    /**
     * Create and auto-start a desktop environment.
     *
     * @param options - ComputerBox configuration options
     *
     * @example
     * ```typescript
     * const desktop = new ComputerBox({
     *   cpus: 2,
     *   memoryMib: 2048,
     *   guiHttpPort: 3000,
     *   guiHttpsPort: 3001
     * });
     * ```
     */
    constructor(options?: ComputerBoxOptions);
    /**
     * Execute a command and throw ExecError if it fails.
     *
     * @param label - Label for error messages (e.g., 'mouseMove(100, 200)')
     * @param cmd - Command to execute
     * @param args - Command arguments
     * @returns The execution result (for methods that need to parse output)
     * @throws {ExecError} If command exits with non-zero code
     */
    private execOrThrow;
    /**
     * Wait until the desktop environment is fully loaded and ready.
     *
     * @param timeout - Maximum time to wait in seconds (default: 60)
     *
     * @throws {TimeoutError} If desktop doesn't become ready within timeout period
     *
     * @example
     * ```typescript
     * const desktop = new ComputerBox();
     * try {
     *   await desktop.waitUntilReady(60);
     *   console.log('Desktop is ready!');
     * } finally {
     *   await desktop.stop();
     * }
     * ```
     */
    waitUntilReady(timeout?: number): Promise<void>;
    /**
     * Capture a screenshot of the desktop.
     *
     * @returns Promise resolving to screenshot data with base64 PNG, dimensions, and format
     *
     * @example
     * ```typescript
     * const desktop = new ComputerBox();
     * try {
     *   await desktop.waitUntilReady();
     *   const screenshot = await desktop.screenshot();
     *   console.log(`Screenshot: ${screenshot.width}x${screenshot.height}`);
     *   // Save screenshot.data (base64 PNG) to file or process it
     * } finally {
     *   await desktop.stop();
     * }
     * ```
     */
    screenshot(): Promise<Screenshot>;
    /**
     * Move mouse cursor to absolute coordinates.
     *
     * @param x - X coordinate
     * @param y - Y coordinate
     *
     * @example
     * ```typescript
     * await desktop.mouseMove(100, 200);
     * ```
     */
    mouseMove(x: number, y: number): Promise<void>;
    /**
     * Click left mouse button at current position.
     *
     * @example
     * ```typescript
     * await desktop.leftClick();
     * ```
     */
    leftClick(): Promise<void>;
    /**
     * Click right mouse button at current position.
     *
     * @example
     * ```typescript
     * await desktop.rightClick();
     * ```
     */
    rightClick(): Promise<void>;
    /**
     * Click middle mouse button at current position.
     *
     * @example
     * ```typescript
     * await desktop.middleClick();
     * ```
     */
    middleClick(): Promise<void>;
    /**
     * Double-click left mouse button at current position.
     *
     * @example
     * ```typescript
     * await desktop.doubleClick();
     * ```
     */
    doubleClick(): Promise<void>;
    /**
     * Triple-click left mouse button at current position.
     *
     * @example
     * ```typescript
     * await desktop.tripleClick();
     * ```
     */
    tripleClick(): Promise<void>;
    /**
     * Drag mouse from start position to end position with left button held.
     *
     * @param startX - Starting X coordinate
     * @param startY - Starting Y coordinate
     * @param endX - Ending X coordinate
     * @param endY - Ending Y coordinate
     *
     * @example
     * ```typescript
     * await desktop.leftClickDrag(100, 100, 200, 200);
     * ```
     */
    leftClickDrag(startX: number, startY: number, endX: number, endY: number): Promise<void>;
    /**
     * Get the current mouse cursor position.
     *
     * @returns Promise resolving to [x, y] coordinates
     *
     * @example
     * ```typescript
     * const [x, y] = await desktop.cursorPosition();
     * console.log(`Cursor at: ${x}, ${y}`);
     * ```
     */
    cursorPosition(): Promise<[number, number]>;
    /**
     * Type text using the keyboard.
     *
     * @param text - Text to type
     *
     * @example
     * ```typescript
     * await desktop.type('Hello, World!');
     * ```
     */
    type(text: string): Promise<void>;
    /**
     * Press a special key or key combination.
     *
     * @param keySequence - Key or key combination (e.g., 'Return', 'ctrl+c', 'alt+Tab')
     *
     * @example
     * ```typescript
     * await desktop.key('Return');
     * await desktop.key('ctrl+c');
     * await desktop.key('alt+Tab');
     * ```
     */
    key(keySequence: string): Promise<void>;
    /**
     * Scroll at a specific position.
     *
     * @param x - X coordinate where to scroll
     * @param y - Y coordinate where to scroll
     * @param direction - Scroll direction: 'up', 'down', 'left', or 'right'
     * @param amount - Number of scroll units (default: 3)
     *
     * @example
     * ```typescript
     * await desktop.scroll(500, 300, 'down', 5);
     * ```
     */
    scroll(x: number, y: number, direction: "up" | "down" | "left" | "right", amount?: number): Promise<void>;
    /**
     * Get the screen resolution.
     *
     * @returns Promise resolving to [width, height] in pixels
     *
     * @example
     * ```typescript
     * const [width, height] = await desktop.getScreenSize();
     * console.log(`Screen: ${width}x${height}`);
     * ```
     */
    getScreenSize(): Promise<[number, number]>;
}
