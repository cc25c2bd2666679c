/**
 * BoxLite: embeddable micro-VM sandboxes. Everything public is exported here.
 *
 * ```ts
 * import { SimpleBox } from 'boxlite';
 * await using box = new SimpleBox({ rootfsPath: './images/busybox' });
 * const r = await box.exec('echo', 'hello');
 * ```
 */
export { JsBoxlite, JsBoxlite as Boxlite, VERSION, type RuntimeOptions, type RuntimeOptions as JsOptions, type SystemInfo } from './runtime/runtime.js';
import type { JsBoxlite } from './runtime/runtime.js';
/** The runtime class's type (`typeof JsBoxlite`), as the reference names it. */
export type BoxliteConstructor = typeof JsBoxlite;
export { getNativeModule, getJsBoxlite, type NativeModule } from './sdk/native.js';
export { BoxliteRestOptions } from './sdk/rest-options.js';
export { ApiKeyCredential, type Credential, type AccessToken } from './sdk/credential.js';
export {
  Box,
  Box as JsBox,
  type BoxInfo,
  type BoxInfo as JsBoxInfo,
  type BoxMetrics,
  type BoxMetrics as JsBoxMetrics,
  type BoxStateInfo,
  type BoxInspection,
  type LogOptions,
  type NetworkInfo as JsNetworkInfo,
  type PublishedPort as JsPublishedPort,
} from './runtime/box.js';
export {
  Execution,
  Execution as JsExecution,
  ExecInput,
  ExecOutput,
  type ExecResult as JsExecResult,
} from './runtime/execution.js';
export type { CopyOptions } from './runtime/copy.js';
export type {
  BoxOptions,
  BoxOptions as JsBoxOptions,
  PortSpec,
  PortSpec as JsPortSpec,
  VolumeSpec,
  VolumeSpec as JsHostPathVolumeSpec,
  ManagedVolumeSpec,
  ManagedVolumeSpec as JsManagedVolumeSpec,
  NetworkSpec,
  OutboundNetworkSpec,
  InboundNetworkSpec,
  Secret,
  SecurityOptions,
  HealthCheckOptions,
  AdvancedBoxOptions,
  ContainerCapabilities,
} from './runtime/options.js';
export type {
  VolumeHandle,
  VolumeInfo,
  SnapshotHandle,
  SnapshotInfo,
  BoxNetworkHandle,
  BoxConnection,
  SocketAddress,
} from './runtime/handles.js';
export type { RuntimeMetrics, RuntimeMetrics as JsRuntimeMetrics } from './runtime/context.js';
export type { BoxStatus } from './store/boxes.js';
export { SimpleBox, NetworkHandle, BoxTunnel, TunnelForwarder, type SimpleBoxOptions, type ExecResult } from './sdk/simplebox.js';
export { CodeBox, type CodeBoxOptions } from './sdk/codebox.js';
export { ComputerBox, type ComputerBoxOptions, type Screenshot } from './sdk/computerbox.js';
export { SkillBox, type SkillBoxOptions } from './sdk/skillbox.js';
export { BrowserBox, type BrowserBoxOptions, type BrowserType } from './sdk/browserbox.js';
export { InteractiveBox, type InteractiveBoxOptions } from './sdk/interactivebox.js';
export { Images, Images as ImageHandle } from './runtime/images.js';
export type { ImageInfo, ImagePullResult } from './images/store.js';
export type { ImagesPullResult } from './runtime/images.js';
export type {
  RegistrySettings,
  RegistrySettings as JsImageRegistry,
  RegistryAuth,
  RegistryAuth as JsImageRegistryAuth,
} from './images/registry/index.js';
export type { PullProgress } from './images/pull.js';
export {
  BoxliteError,
  ExecError,
  TimeoutError,
  ParseError,
  UnsupportedEngineError,
  EngineError,
  ConfigError,
  StorageError,
  ImageError,
  PortalError,
  NetworkError,
  ExecutionError,
  InternalError,
  NotFoundError,
  AlreadyExistsError,
  InvalidStateError,
  InvalidArgumentError,
  UnsupportedError,
  StoppedError,
  ResourceExhaustedError,
  SessionReapedError,
  ERROR_TABLE,
  type ErrorCode,
} from './errors/index.js';
/** Fast start (docs/fast-start.md): make a box shape's template ahead of time. */
export { warmTemplate, type WarmResult } from './runtime/faststart.js';
export * from './sdk/constants.js';
