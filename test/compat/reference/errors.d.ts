/**
 * Base error class for all BoxLite-related errors.
 *
 * All BoxLite errors inherit from this class, allowing easy error type checking:
 * ```typescript
 * try {
 *   await box.exec('invalid-command');
 * } catch (err) {
 *   if (err instanceof BoxliteError) {
 *     console.error('BoxLite error:', err.message);
 *   }
 * }
 * ```
 */
export declare class BoxliteError extends Error {
    constructor(message: string);
}
/**
 * Execution error thrown when a command fails (non-zero exit code).
 *
 * Contains details about the failed command, exit code, and stderr output.
 *
 * @example
 * ```typescript
 * try {
 *   const result = await box.exec('false');
 * } catch (err) {
 *   if (err instanceof ExecError) {
 *     console.error(`Command '${err.command}' failed with exit code ${err.exitCode}`);
 *     console.error(`Stderr: ${err.stderr}`);
 *   }
 * }
 * ```
 */
export declare class ExecError extends BoxliteError {
    readonly command: string;
    readonly exitCode: number;
    readonly stderr: string;
    /**
     * @param command - The command that failed
     * @param exitCode - The non-zero exit code
     * @param stderr - Standard error output
     */
    constructor(command: string, exitCode: number, stderr: string);
}
/**
 * Timeout error thrown when an operation exceeds its time limit.
 *
 * @example
 * ```typescript
 * try {
 *   await waitForDesktopReady(box, 60); // 60 second timeout
 * } catch (err) {
 *   if (err instanceof TimeoutError) {
 *     console.error('Operation timed out:', err.message);
 *   }
 * }
 * ```
 */
export declare class TimeoutError extends BoxliteError {
    constructor(message: string);
}
/**
 * Parse error thrown when unable to parse command output.
 *
 * Used when parsing structured output (JSON, coordinates, etc.) fails.
 *
 * @example
 * ```typescript
 * try {
 *   const position = parseCursorPosition(output);
 * } catch (err) {
 *   if (err instanceof ParseError) {
 *     console.error('Failed to parse output:', err.message);
 *   }
 * }
 * ```
 */
export declare class ParseError extends BoxliteError {
    constructor(message: string);
}
