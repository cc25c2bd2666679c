/**
 * SkillBox - Secure Claude Code CLI container.
 *
 * Provides an isolated environment for running Claude Code CLI with skills.
 */
import { SimpleBox, type NetworkSpec, type Secret } from "./simplebox.js";
import type { JsBoxlite } from "./native-contracts.js";
/**
 * Options for creating a SkillBox.
 */
export interface SkillBoxOptions {
    /** Skills to install on first call (e.g., ["anthropics/skills"]) */
    skills?: string[];
    /** Claude OAuth token. Uses CLAUDE_CODE_OAUTH_TOKEN env if not provided. */
    oauthToken?: string;
    /** Box name for persistence/reuse (default: "skill-box") */
    name?: string;
    /** Container image (default: boxlite-skillbox) */
    image?: string;
    /** Path to local OCI layout directory (overrides image if provided) */
    rootfsPath?: string;
    /** Memory allocation in MiB (default: 4096) */
    memoryMib?: number;
    /** Disk size in GB (default: 10) */
    diskSizeGb?: number;
    /** Local port for noVNC HTTP access (default: 0 for random) */
    guiHttpPort?: number;
    /** Local port for noVNC HTTPS access (default: 0 for random) */
    guiHttpsPort?: number;
    /** Remove box when stopped (default: true) */
    autoRemove?: boolean;
    /** Structured network configuration. */
    network?: NetworkSpec;
    /** Secrets to inject into outbound HTTPS requests. */
    secrets?: Secret[];
    /** Optional runtime instance */
    runtime?: JsBoxlite;
}
/**
 * Secure container for running Claude Code CLI with skills.
 *
 * SkillBox provides an isolated environment for Claude Code CLI
 * with user-specified skills installed. It supports multi-turn conversations
 * and includes a desktop GUI accessible via noVNC.
 *
 * @example
 * ```typescript
 * const box = new SkillBox({ skills: ["anthropics/skills"] });
 * try {
 *   await box.start();
 *   const result = await box.call("What skills do you have?");
 *   console.log(result);
 * } finally {
 *   await box.stop();
 * }
 * ```
 */
export declare class SkillBox extends SimpleBox {
    private _skills;
    private _oauthToken;
    private _process;
    private _stdin;
    private _stdout;
    private _sessionId;
    private _setupComplete;
    private _started;
    /** Local port for noVNC HTTP access */
    guiHttpPort: number;
    /** Local port for noVNC HTTPS access */
    guiHttpsPort: number;
    private _skillboxEnv;
    constructor(options?: SkillBoxOptions);
    /**
     * Start the SkillBox (resolves ports and creates the box).
     */
    start(): Promise<void>;
    /**
     * Stop the SkillBox and clean up Claude process.
     */
    stop(): Promise<void>;
    /**
     * Wait until the desktop environment is fully loaded and ready.
     *
     * @param timeout - Maximum time to wait in seconds (default: 60)
     */
    waitUntilReady(timeout?: number): Promise<void>;
    /**
     * Send a prompt to Claude and return the response.
     *
     * Supports multi-turn conversations within the same session.
     * On first call, installs dependencies if not already installed.
     *
     * @param prompt - The message to send to Claude
     * @returns Claude's response text
     */
    call(prompt: string): Promise<string>;
    /**
     * Install a skill from skills.sh.
     *
     * @param skillId - Skill identifier (owner/repo format)
     * @returns True if installation succeeded
     */
    installSkill(skillId: string): Promise<boolean>;
    private _setup;
    private _isClaudeInstalled;
    private _installDependencies;
    private _installSkillInternal;
    private _startClaude;
    private _stopClaude;
    private _sendMessage;
}
