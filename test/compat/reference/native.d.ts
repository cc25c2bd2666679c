/**
 * Native module loader for BoxLite Node.js SDK.
 *
 * This module centralizes native binding loading to avoid duplication
 * across simplebox.ts, interactivebox.ts, and index.ts.
 *
 * Uses the napi-generated loader (boxlite.js) which handles platform
 * detection automatically - tries local file first, then npm package.
 */
import type { ApiKeyCredentialConstructor, JsBoxliteConstructor, NativeBoxliteRestOptionsConstructor, NativeModule } from "./native-contracts.js";
/**
 * Get the native BoxLite module.
 *
 * The module is loaded via the napi-generated loader which handles
 * platform-specific binary selection automatically.
 */
export declare function getNativeModule(): NativeModule;
/**
 * Get the JsBoxlite runtime class from the native module.
 */
export declare function getJsBoxlite(): JsBoxliteConstructor;
/**
 * Get the native ApiKeyCredential class from the native module.
 */
export declare function getApiKeyCredential(): ApiKeyCredentialConstructor;
/**
 * Get the native BoxliteRestOptions class from the native module.
 *
 * Internal — the public `BoxliteRestOptions` is the pure-TS class in
 * ./options; this is the binding twin consumed by `JsBoxlite.rest`.
 */
export declare function getNativeBoxliteRestOptions(): NativeBoxliteRestOptionsConstructor;
