/**
 * InteractiveBox - Interactive terminal sessions with PTY support.
 *
 * Provides automatic PTY-based interactive sessions, similar to `docker exec -it`.
 */
import { SimpleBox, SimpleBoxOptions } from "./simplebox.js";
import type { JsExecution, JsExecStderr, JsExecStdin, JsExecStdout } from "./native-contracts.js";
/**
 * Options for creating an InteractiveBox.
 */
export interface InteractiveBoxOptions extends SimpleBoxOptions {
    /** Shell to run (default: '/bin/sh') */
    shell?: string;
    /**
     * Control terminal I/O forwarding behavior:
     * - undefined (default): Auto-detect - forward I/O if stdin is a TTY
     * - true: Force I/O forwarding (manual interactive mode)
     * - false: No I/O forwarding (programmatic control only)
     */
    tty?: boolean;
}
/**
 * Interactive box with automatic PTY and terminal forwarding.
 *
 * When used as a context manager, automatically:
 * 1. Auto-detects terminal size (like Docker)
 * 2. Starts a shell with PTY
 * 3. Sets local terminal to raw mode
 * 4. Forwards stdin/stdout bidirectionally
 * 5. Restores terminal mode on exit
 *
 * ## Example
 *
 * ```typescript
 * const box = new InteractiveBox({ image: 'alpine:latest' });
 * try {
 *   await box.start();
 *   // You're now in an interactive shell!
 *   // Type commands, see output in real-time
 *   // Type "exit" to close
 *   await box.wait();
 * } finally {
 *   await box.stop();
 * }
 * ```
 *
 * Or with async disposal (TypeScript 5.2+):
 *
 * ```typescript
 * await using box = new InteractiveBox({ image: 'alpine:latest' });
 * await box.start();
 * await box.wait();
 * // Automatically stopped when leaving scope
 * ```
 */
export declare class InteractiveBox extends SimpleBox {
    protected _shell: string;
    protected _interactiveEnv?: Record<string, string>;
    protected _tty: boolean;
    protected _execution?: JsExecution;
    protected _stdin?: JsExecStdin;
    protected _stdout?: JsExecStdout;
    protected _stderr?: JsExecStderr;
    protected _ioTasks: Promise<void>[];
    protected _exited: boolean;
    /**
     * Create an interactive box.
     *
     * @param options - InteractiveBox configuration options
     *
     * @example
     * ```typescript
     * const box = new InteractiveBox({
     *   image: 'alpine:latest',
     *   shell: '/bin/sh',
     *   tty: true,
     *   memoryMib: 512,
     *   cpus: 1
     * });
     * ```
     */
    constructor(options: InteractiveBoxOptions);
    /**
     * Start the interactive shell session.
     *
     * This method:
     * 1. Starts the shell with PTY
     * 2. Sets terminal to raw mode (if tty=true)
     * 3. Begins I/O forwarding
     *
     * @example
     * ```typescript
     * await box.start();
     * ```
     */
    start(): Promise<void>;
    /**
     * Wait for the shell to exit.
     *
     * @example
     * ```typescript
     * await box.start();
     * await box.wait();  // Blocks until shell exits
     * ```
     */
    wait(): Promise<void>;
    /**
     * Stop the box and restore terminal settings.
     *
     * @example
     * ```typescript
     * await box.stop();
     * ```
     */
    stop(): Promise<void>;
    /**
     * Implement async disposable pattern (TypeScript 5.2+).
     *
     * Allows using `await using` syntax for automatic cleanup.
     *
     * @example
     * ```typescript
     * await using box = new InteractiveBox({ image: 'alpine' });
     * await box.start();
     * // Box automatically stopped when leaving scope
     * ```
     */
    [Symbol.asyncDispose](): Promise<void>;
    /**
     * Forward stdin to PTY (internal).
     */
    private _forwardStdin;
    /**
     * Forward PTY output to stdout (internal).
     */
    private _forwardOutput;
    /**
     * Forward PTY stderr to stderr (internal).
     */
    private _forwardStderr;
    /**
     * Wait for the shell to exit (internal).
     */
    private _waitForExit;
}
