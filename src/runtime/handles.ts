// The reference's handle types for features later issues deliver (snapshots, clone/export/import
// and managed volumes: issue 11; tunnels: issue 9). They exist now so programs written for the
// reference compile and fail loudly at the call, with a coded Unsupported error, instead of
// missing a member or getting a silent no-op.
import { UnsupportedError } from '../errors/index.js';

/** Rejects with `unsupported: <what> not implemented yet`. */
export function notImplemented(what: string): Promise<never> {
  return Promise.reject(new UnsupportedError(`${what} not implemented yet`));
}

/** `JsSnapshotInfo` of @boxlite-ai/boxlite 0.10. */
export interface SnapshotInfo {
  id: string;
  boxId: string;
  name: string;
  createdAt: number;
  containerDiskBytes: number;
  sizeBytes: number;
}

export type SnapshotOptions = Record<string, never>;
export type CloneOptions = Record<string, never>;
export type ExportOptions = Record<string, never>;

/** `JsSnapshotHandle`: `box.snapshot`. */
export interface SnapshotHandle {
  create(name: string, options?: SnapshotOptions | null): Promise<SnapshotInfo>;
  list(): Promise<SnapshotInfo[]>;
  get(name: string): Promise<SnapshotInfo | null>;
  remove(name: string): Promise<void>;
  restore(name: string): Promise<void>;
}

/** The reference's `SocketAddress`: where a tunnel forwarder listens. */
export type SocketAddress = { type: 'tcp'; host?: string; port: number } | { type: 'unix'; path: string };

/** `NativeBoxConnection`: the byte stream of a connected tunnel. */
export interface BoxConnection {
  read(maxBytes: number): Promise<Buffer>;
  write(data: Buffer): Promise<number>;
  shutdownWrite(): Promise<void>;
  close(): Promise<void>;
}

/** `NativeTunnelForwarder`. */
export interface TunnelForwarderHandle {
  localAddr(): SocketAddress;
  wait(): Promise<void>;
  close(): Promise<void>;
}

/** `NativeBoxTunnel`: a prepared one-shot tunnel to a port in the box. */
export interface BoxTunnelHandle {
  uri(): string | null;
  connect(): Promise<BoxConnection>;
  forward(listen: SocketAddress): Promise<TunnelForwarderHandle>;
}

/** `JsNetworkHandle`: `box.network`. */
export interface BoxNetworkHandle {
  tunnel(port: number): Promise<BoxTunnelHandle>;
}

/** `VolumeInfo` of the reference: a managed volume. */
export interface VolumeInfo {
  id: string;
  name: string;
  createdAt: string;
  sizeBytes?: number;
}

/** `VolumeHandle` of the reference: `runtime.volumes`. */
export interface VolumeHandle {
  create(name?: string): Promise<VolumeInfo>;
  list(): Promise<VolumeInfo[]>;
  get(id: string): Promise<VolumeInfo>;
  remove(id: string, force?: boolean | null): Promise<void>;
}

export const unsupportedSnapshots: SnapshotHandle = Object.freeze({
  create: () => notImplemented('snapshots (box.snapshot.create)'),
  list: () => notImplemented('snapshots (box.snapshot.list)'),
  get: () => notImplemented('snapshots (box.snapshot.get)'),
  remove: () => notImplemented('snapshots (box.snapshot.remove)'),
  restore: () => notImplemented('snapshots (box.snapshot.restore)'),
});

export const unsupportedBoxNetwork: BoxNetworkHandle = Object.freeze({
  tunnel: () => notImplemented('tunnels (box.network.tunnel)'),
});

export const unsupportedVolumes: VolumeHandle = Object.freeze({
  create: () => notImplemented('managed volumes (runtime.volumes.create)'),
  list: () => notImplemented('managed volumes (runtime.volumes.list)'),
  get: () => notImplemented('managed volumes (runtime.volumes.get)'),
  remove: () => notImplemented('managed volumes (runtime.volumes.remove)'),
});
