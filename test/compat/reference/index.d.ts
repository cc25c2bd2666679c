/**
 * BoxLite Node.js SDK
 *
 * Embeddable VM runtime for secure, isolated code execution environments.
 *
 * @example
 * ```typescript
 * import { SimpleBox } from '@boxlite-ai/boxlite';
 *
 * const box = new SimpleBox({ image: 'alpine:latest' });
 * try {
 *   const result = await box.exec('echo', 'Hello from BoxLite!');
 *   console.log(result.stdout);
 * } finally {
 *   await box.stop();
 * }
 * ```
 *
 * @packageDocumentation
 */
import { getNativeModule, getJsBoxlite } from "./native.js";
import { BoxliteRestOptions } from "./options.js";
import type { JsBoxlite as JsBoxliteInstance, JsBoxliteConstructor, JsOptions } from "./native-contracts.js";
export type { ImageHandle, ImageInfo, ImagePullResult, VolumeHandle, VolumeInfo, JsImageRegistry, JsImageRegistryAuth, JsBoxInfo, JsNetworkInfo, JsOptions, JsPublishedPort, } from "./native-contracts.js";
export type Boxlite = JsBoxliteInstance;
export type BoxliteConstructor = Omit<JsBoxliteConstructor, "rest" | "withDefaultConfig"> & {
    new (options: JsOptions): Boxlite;
    withDefaultConfig(): Boxlite;
    rest(options: BoxliteRestOptions): Boxlite;
};
export declare const JsBoxlite: BoxliteConstructor;
export { BoxliteRestOptions } from "./options.js";
export type { CopyOptions } from "./copy.js";
export { ApiKeyCredential, type Credential, type AccessToken, } from "./credential.js";
export { getNativeModule, getJsBoxlite };
export { SimpleBox, BoxTunnel, TunnelForwarder, NetworkHandle, type NetworkSpec, type SocketAddress, type AdvancedBoxOptions, type ContainerCapabilities, type SimpleBoxOptions, type SecurityOptions, type Secret, } from "./simplebox.js";
export { type ExecResult } from "./exec.js";
export { BoxliteError, ExecError, TimeoutError, ParseError } from "./errors.js";
export * from "./constants.js";
export { CodeBox, type CodeBoxOptions } from "./codebox.js";
export { BrowserBox, type BrowserBoxOptions, type BrowserType, } from "./browserbox.js";
export { ComputerBox, type ComputerBoxOptions, type Screenshot, } from "./computerbox.js";
export { InteractiveBox, type InteractiveBoxOptions, } from "./interactivebox.js";
export { SkillBox, type SkillBoxOptions } from "./skillbox.js";
