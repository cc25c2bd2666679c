// Our classes and instances are assignable to the reference's types (public members; the
// reference's protected/private fields make its classes nominal, which no other implementation
// could satisfy). Compiled with tsconfig.ours.json: a type error here is an incompatibility.
import * as ours from '../../src/index.js';
import type * as ref from './reference/index.js';
import type * as refNative from './reference/native-contracts.js';

/**
 * The public shape of a class instance type, applied through method results and promises, so
 * a handle returned by a method (NetworkHandle, BoxTunnel, …) is compared by its public members.
 */
type Public<T> = T extends Buffer
  ? T
  : T extends (...args: infer A) => infer R
    ? (...args: A) => Public<R>
    : T extends Promise<infer U>
      ? Promise<Public<U>>
      : T extends object
        ? { [K in keyof T]: Public<T[K]> }
        : T;

/** Box-type options without `runtime`: it must be this package's JsBoxlite, not the reference's. */
type Opts<T> = Omit<T, 'runtime'>;

declare const rt: ours.JsBoxlite;
declare const box: ours.JsBox;
declare const execution: ours.Execution;
declare const simple: ours.SimpleBox;

export const runtime: refNative.JsBoxlite = rt;
export const boxHandle: refNative.JsBox = box;
export const exec: refNative.JsExecution = execution;
export const stdin: refNative.JsExecStdin = await execution.stdin();
export const stdout: refNative.JsExecStdout = await execution.stdout();
export const images: refNative.ImageHandle = rt.images;
export const volumes: refNative.VolumeHandle = rt.volumes;
export const snapshots: refNative.JsSnapshotHandle = box.snapshot;
export const network: refNative.JsNetworkHandle = box.network;
export const info: refNative.JsBoxInfo = await box.info();
export const boxMetrics: refNative.JsBoxMetrics = await box.metrics();
export const runtimeMetrics: refNative.JsRuntimeMetrics = await rt.metrics();
export const execResult: refNative.JsExecResult = await execution.wait();
export const getOrCreate: refNative.JsGetOrCreateResult = await rt.getOrCreate({});

// Constructors and statics.
export const runtimeCtor: Omit<refNative.JsBoxliteConstructor, 'rest'> & { rest(options: ref.BoxliteRestOptions): refNative.JsBoxlite } = ours.JsBoxlite;
export const boxliteCtor: ref.BoxliteConstructor = ours.JsBoxlite;
export const fromGetter: refNative.JsBoxliteConstructor = ours.getJsBoxlite();
export const credentialCtor: refNative.ApiKeyCredentialConstructor = ours.ApiKeyCredential;
export const credential: ref.Credential = new ours.ApiKeyCredential('k');
export const restOptions: ref.BoxliteRestOptions = new ours.BoxliteRestOptions({ url: 'http://x' });
export const nativeRest: refNative.NativeBoxliteRestOptionsConstructor = ours.getNativeModule().JsBoxliteRestOptions;
export const nativeModule: refNative.NativeModule = ours.getNativeModule();

// SimpleBox and friends.
export const simpleBox: Public<ref.SimpleBox> = simple;
export const networkHandle: Public<ref.NetworkHandle> = simple.network;
export const tunnel: Public<ref.BoxTunnel> = await simple.tunnel(80);
export const forwarder: Public<ref.TunnelForwarder> = await tunnel.forward({ type: 'tcp', port: 0 });
export const simpleCtor: new (options?: Opts<ref.SimpleBoxOptions>) => Public<ref.SimpleBox> = ours.SimpleBox;
export const codeBox: new (options?: Opts<ref.CodeBoxOptions>) => Public<ref.CodeBox> = ours.CodeBox;
export const browserBox: new (options?: Opts<ref.BrowserBoxOptions>) => Public<ref.BrowserBox> = ours.BrowserBox;
export const computerBox: new (options?: Opts<ref.ComputerBoxOptions>) => Public<ref.ComputerBox> = ours.ComputerBox;
export const interactiveBox: new (options: Opts<ref.InteractiveBoxOptions>) => Public<ref.InteractiveBox> = ours.InteractiveBox;
export const skillBox: new (options?: Opts<ref.SkillBoxOptions>) => Public<ref.SkillBox> = ours.SkillBox;

// Option and result types both ways where the reference passes them in and gets them back.
export const boxOptions = (o: refNative.JsBoxOptions): ours.JsBoxOptions => o;
export const simpleOptions = (o: Opts<ref.SimpleBoxOptions>): ours.SimpleBoxOptions => o;
export const registry = (r: ref.JsImageRegistry): ours.JsImageRegistry => r;
export const jsOptions = (o: ref.JsOptions): ours.JsOptions => o;
export const copyOptions = (o: ref.CopyOptions): ours.CopyOptions => o;
export const execResultType = (r: ours.ExecResult): ref.ExecResult => r;

// Errors: ours extend the reference's shapes.
export const execError: ref.ExecError = new ours.ExecError('false', 1, '');
export const timeoutError: ref.TimeoutError = new ours.TimeoutError('t');
export const parseError: ref.ParseError = new ours.ParseError('p');
export const boxliteError: ref.BoxliteError = new ours.BoxliteError('b');
