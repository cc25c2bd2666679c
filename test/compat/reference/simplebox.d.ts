/**
 * SimpleBox - Foundation for specialized container types.
 *
 * Provides common functionality for all specialized boxes (CodeBox, BrowserBox, etc.)
 * This class encapsulates common patterns:
 * 1. Automatic runtime lifecycle management
 * 2. Command execution with output collection
 * 3. Try/finally cleanup patterns
 */
import type { CopyOptions } from "./copy.js";
import type { ExecResult } from "./exec.js";
import type { JsBox, JsBoxInfo, JsBoxOptions, JsVolumeSpec, NativeBoxConnection, NativeBoxTunnel, NativeTunnelForwarder, SocketAddress } from "./native-contracts.js";
export type { SocketAddress } from "./native-contracts.js";
type BoxLike = Omit<JsBox, "network"> & {
    readonly network: {
        tunnel(port: number): Promise<NativeBoxTunnel>;
    };
};
interface BoxRuntime {
    create(options: JsBoxOptions, name?: string | null): Promise<BoxLike>;
    getOrCreate(options: JsBoxOptions, name?: string | null): Promise<{
        readonly created: boolean;
        readonly box: BoxLike;
    }>;
}
/**
 * Security isolation options for a box.
 */
export interface SecurityOptions {
    /** Enable jailer isolation (Linux/macOS). */
    jailerEnabled?: boolean;
    /** Enable seccomp syscall filtering (Linux only). */
    seccompEnabled?: boolean;
    /**
     * Maximum number of open file descriptors.
     */
    maxOpenFiles?: number;
    /**
     * Maximum file size in bytes.
     */
    maxFileSize?: number;
    /**
     * Maximum number of processes.
     */
    maxProcesses?: number;
    /**
     * Maximum virtual memory in bytes.
     */
    maxMemory?: number;
    /**
     * Maximum CPU time in seconds.
     */
    maxCpuTime?: number;
    /** Enable network access in sandbox (macOS only). */
    networkEnabled?: boolean;
    /** Close inherited file descriptors. */
    closeFds?: boolean;
}
/**
 * Secret substitution rule for outbound HTTPS requests.
 */
export interface Secret {
    /** Human-readable name for the secret. */
    name: string;
    /** Real secret value. Never enters the guest VM. */
    value: string;
    /** Matching hosts for secret substitution. */
    hosts?: string[];
    /** Placeholder exposed to guest code. */
    placeholder?: string;
}
/**
 * Structured network configuration for a box.
 */
export interface NetworkSpec {
    /** Outbound guest network policy. */
    outbound?: OutboundNetworkSpec;
    /** Inbound service access policy. */
    inbound?: InboundNetworkSpec;
    /**
     * @deprecated Use `outbound.mode`. Accepted as a legacy alias; supplying it
     * together with `outbound` is rejected.
     */
    mode?: "enabled" | "disabled";
    /**
     * @deprecated Use `outbound.allowNet`. Accepted as a legacy alias.
     */
    allowNet?: string[];
}
export interface OutboundNetworkSpec {
    /** Network mode. */
    mode: "enabled" | "disabled";
    /** Outbound allowlist when network is enabled. */
    allowNet?: string[];
}
export interface InboundNetworkSpec {
    /** Inbound mode: "enabled" (publicly reachable) or "disabled" (private). */
    mode: "enabled" | "disabled";
    /**
     * Not supported yet: a non-empty value is rejected. Exists for shape
     * symmetry with the outbound spec; inbound access follows `mode` alone.
     */
    allowNet?: string[];
}
/**
 * Options for creating a SimpleBox.
 */
export interface SimpleBoxOptions {
    /** Container image to use (e.g., 'python:slim', 'alpine:latest') */
    image?: string;
    /** Path to local OCI layout directory (overrides image if provided) */
    rootfsPath?: string;
    /** Memory limit in MiB */
    memoryMib?: number;
    /** Number of CPU cores */
    cpus?: number;
    /** Disk size in GB for container rootfs (sparse, grows as needed) */
    diskSizeGb?: number;
    /** Optional runtime instance (uses global default if not provided) */
    runtime?: BoxRuntime;
    /** Optional name for the box (must be unique) */
    name?: string;
    /** Remove box when stopped (default: true) */
    autoRemove?: boolean;
    /** If true, reuse an existing box with the same name instead of failing (default: false) */
    reuseExisting?: boolean;
    /** Run box in detached mode (survives parent process exit, default: false) */
    detach?: boolean;
    /** Working directory inside container */
    workingDir?: string;
    /** Environment variables */
    env?: Record<string, string>;
    /** Volume mounts: a local hostPath, or a managedVolume by id or name. */
    volumes?: JsVolumeSpec[];
    /** Port mappings */
    ports?: Array<{
        hostPort?: number;
        guestPort: number;
        protocol?: string;
    }>;
    /** Structured network configuration. */
    network?: NetworkSpec;
    /** Secrets to inject into outbound HTTPS requests. */
    secrets?: Secret[];
    /**
     * Override image ENTRYPOINT directive.
     *
     * When set, completely replaces the image's ENTRYPOINT.
     * Use with `cmd` to build the full command:
     *   Final execution = entrypoint + cmd
     *
     * Example: For `docker:dind`, bypass the failing entrypoint script:
     *   `entrypoint: ["dockerd"]`, `cmd: ["--iptables=false"]`
     */
    entrypoint?: string[];
    /**
     * Override image CMD directive.
     *
     * The image ENTRYPOINT is preserved; these args replace the image's CMD.
     * Final execution = image_entrypoint + cmd.
     *
     * Example: For `docker:dind` (ENTRYPOINT=["dockerd-entrypoint.sh"]),
     * setting `cmd: ["--iptables=false"]` produces:
     * `["dockerd-entrypoint.sh", "--iptables=false"]`
     */
    cmd?: string[];
    /**
     * Override container user (UID/GID).
     *
     * Format: "uid", "uid:gid", or "username".
     * If not set, uses the image's USER directive (defaults to root "0:0").
     */
    user?: string;
    /** Expert-only container process options. */
    advanced?: AdvancedBoxOptions;
    /** Security isolation options for the box. */
    security?: SecurityOptions;
}
export interface ContainerCapabilities {
    /** Linux capabilities added to BoxLite's Docker-compatible baseline. */
    add?: string[];
    /** Linux capabilities removed from the resulting capability set. */
    drop?: string[];
}
export interface AdvancedBoxOptions {
    capabilities?: ContainerCapabilities;
}
/** Box-scoped network operations for a SimpleBox. */
export declare class NetworkHandle {
    private readonly ensureBox;
    /** @internal */
    constructor(ensureBox: () => Promise<BoxLike>);
    /** Establish and return a one-shot tunnel for a port inside this box. */
    tunnel(port: number): Promise<BoxTunnel>;
}
export declare class TunnelForwarder {
    private readonly forwarder;
    constructor(forwarder: NativeTunnelForwarder);
    localAddr(): SocketAddress;
    wait(): Promise<void>;
    close(): Promise<void>;
}
export declare class BoxTunnel {
    private readonly tunnel;
    /** Wrap a prepared native tunnel handle. */
    constructor(tunnel: NativeBoxTunnel);
    /** Public URL of a remotely served tunnel, or null for a local one. */
    uri(): string | null;
    /** Consume the tunnel and return its bidirectional byte stream. */
    connect(): Promise<NativeBoxConnection>;
    forward(listen: SocketAddress): Promise<TunnelForwarder>;
}
/**
 * Base class for specialized container types.
 *
 * This class provides the foundation for all specialized boxes:
 * - CodeBox: Python code execution sandbox
 * - BrowserBox: Browser automation
 * - ComputerBox: Desktop automation
 * - InteractiveBox: PTY terminal sessions
 *
 * ## Usage
 *
 * SimpleBox can be used directly for simple command execution:
 *
 * ```typescript
 * const box = new SimpleBox({ image: 'alpine:latest' });
 * try {
 *   const result = await box.exec('ls', '-la', '/');
 *   console.log(result.stdout);
 * } finally {
 *   await box.stop();
 * }
 * ```
 *
 * Or extended for specialized use cases:
 *
 * ```typescript
 * class MyBox extends SimpleBox {
 *   constructor() {
 *     super({ image: 'my-custom-image:latest' });
 *   }
 *
 *   async myMethod() {
 *     const result = await this.exec('my-command');
 *     return result.stdout;
 *   }
 * }
 * ```
 */
export declare class SimpleBox {
    protected _runtime: BoxRuntime;
    protected _box: BoxLike | null;
    protected _boxPromise: Promise<BoxLike> | null;
    protected _name?: string;
    protected _boxOpts: JsBoxOptions;
    protected _reuseExisting: boolean;
    protected _created: boolean | null;
    readonly network: NetworkHandle;
    /**
     * Create a new SimpleBox.
     *
     * The box is created lazily on first use (first exec() call).
     *
     * @param options - Box configuration options
     *
     * @example
     * ```typescript
     * const box = new SimpleBox({
     *   image: 'python:slim',
     *   memoryMib: 512,
     *   cpus: 2,
     *   name: 'my-box'
     * });
     * ```
     */
    constructor(options?: SimpleBoxOptions);
    /**
     * Ensure the box is created (lazy initialization).
     * @internal
     */
    protected _ensureBox(): Promise<BoxLike>;
    /**
     * Get the box ID (ULID format).
     *
     * Note: Throws if called before the box is created (e.g., before first exec()).
     */
    get id(): string;
    /**
     * Get the box ID asynchronously, creating the box if needed.
     */
    getId(): Promise<string>;
    /**
     * Get the box name (if set).
     */
    get name(): string | undefined;
    /**
     * Whether this box was newly created (true) or an existing box was reused (false).
     *
     * Returns null if the box hasn't been created yet.
     */
    get created(): boolean | null;
    /**
     * Get box metadata.
     *
     * Note: The promise rejects if called before the box is created.
     */
    info(): Promise<JsBoxInfo>;
    /**
     * Get box metadata asynchronously, creating the box if needed.
     */
    getInfo(): Promise<JsBoxInfo>;
    /**
     * Execute a command in the box and collect the output.
     *
     * This is a convenience method that:
     * 1. Starts the command
     * 2. Collects all stdout and stderr
     * 3. Waits for completion
     * 4. Returns the result
     *
     * For streaming output, use the lower-level `this._box.exec()` directly.
     *
     * @param cmd - Command to execute (e.g., 'ls', 'python')
     * @param args - Arguments to the command
     * @param env - Environment variables (optional)
     *
     * @returns Promise resolving to ExecResult with exit code and output
     *
     * @example
     * ```typescript
     * // Simple execution
     * const result = await box.exec('ls', '-la', '/');
     * console.log(`Exit code: ${result.exitCode}`);
     * console.log(`Output:\n${result.stdout}`);
     *
     * // With environment variables
     * const result = await box.exec('env', [], { FOO: 'bar' });
     * console.log(result.stdout);
     * ```
     */
    exec(cmd: string, ...args: string[]): Promise<ExecResult>;
    exec(cmd: string, args: string[], env: Record<string, string>): Promise<ExecResult>;
    exec(cmd: string, args: string[], env: Record<string, string> | undefined, options?: {
        cwd?: string;
        user?: string;
        timeoutSecs?: number;
    }): Promise<ExecResult>;
    /**
     * Copy a file or directory from the host into the container.
     *
     * **Note:** Destinations under a container mount (e.g. `/tmp`, `/dev/shm`,
     * volumes) are refused with an error naming the mount — files written there
     * would land behind it and be invisible to the container. Use a path outside
     * the mount, like `/root/`, or pipe a tar through `exec`.
     *
     * Files land owned by the box's exec user, so the workload can read them
     * without any chmod/chown of its own.
     *
     * @param hostPath - Absolute path on the host
     * @param containerDest - Absolute path inside the container
     * @param options - Copy options (recursive, overwrite, etc.)
     */
    copyIn(hostPath: string, containerDest: string, options?: CopyOptions): Promise<void>;
    /**
     * Copy a file or directory from the container to the host.
     *
     * **Note:** a source at or under a container mount (e.g. `/tmp`,
     * `/dev/shm`, volumes), or a directory containing one, is refused with an
     * error naming the mount — the archive would carry the files underneath it
     * rather than the ones the container sees. Copy a path outside the mount,
     * or pipe a tar through `exec`.
     *
     * @param containerSrc - Absolute path inside the container
     * @param hostDest - Absolute path on the host
     * @param options - Copy options (recursive, overwrite, etc.)
     */
    copyOut(containerSrc: string, hostDest: string, options?: CopyOptions): Promise<void>;
    /**
     * Get box metrics (CPU, memory, network stats, etc.).
     *
     * @returns Promise resolving to box metrics
     */
    metrics(): Promise<import("./native-contracts.js").JsBoxMetrics>;
    /** Establish and return a one-shot tunnel to a port inside this box. */
    tunnel(port: number): Promise<BoxTunnel>;
    /**
     * Stop the box.
     *
     * Sends a graceful shutdown signal to the VM. If `autoRemove` is true
     * (default), the box files will be deleted after stopping.
     *
     * Does nothing if the box was never created.
     *
     * @example
     * ```typescript
     * await box.stop();
     * console.log('Box stopped');
     * ```
     */
    stop(): Promise<void>;
    /**
     * Implement async disposable pattern (TypeScript 5.2+).
     *
     * Allows using `await using` syntax for automatic cleanup:
     *
     * ```typescript
     * await using box = new SimpleBox({ image: 'alpine' });
     * // Box automatically stopped when leaving scope
     * ```
     */
    [Symbol.asyncDispose](): Promise<void>;
}
