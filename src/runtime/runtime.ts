import path from 'node:path';
import { ulid } from 'ulid';
import { InvalidArgumentError, InvalidStateError, NotFoundError, toBoxliteError, UnsupportedError } from '../errors/index.js';
import { parseRegistries, type RegistrySettings } from '../images/registry/index.js';
import { ImageStore } from '../images/store.js';
import { createOverlay, prepareRootfs } from '../images/rootfs.js';
import { BoxStore } from '../store/boxes.js';
import { DiskStore } from '../store/disks.js';
import { boxPaths, ensureHome, resolveHome, type HomeLayout } from '../store/home.js';
import { detectAccelerator, type Accelerator } from '../vmm/accel.js';
import { locateGuestAssets, type GuestAssets } from '../vmm/assets.js';
import { ensureEngine } from '../vmm/engine.js';
import { Box, boxInfo, type BoxInfo, type BoxRecordT } from './box.js';
import type { RuntimeContext, RuntimeMetrics } from './context.js';
import type { BoxImage } from './image.js';
import { importArchive } from './archive.js';
import { collectBases } from './snapshots.js';
import { managedVolumeIds, Volumes } from './volumes.js';
import { withHealth } from './lifecycle.js';
import { Images } from './images.js';
import { normalizeBoxOptions, normalizeSecrets, type BoxOptions } from './options.js';
import { writeSecretValues } from './secrets.js';
import { discardSpareShim } from './faststart.js';
import { RestRuntime, type RestRuntimeOptions } from '../rest/client/runtime.js';

/** `JsOptions` of @boxlite-ai/boxlite. */
export interface RuntimeOptions {
  homeDir?: string;
  /** Registries searched, in order, for unqualified image names; settings for qualified ones. */
  imageRegistries?: RegistrySettings[];
}

export const VERSION = '0.1.0';

export interface SystemInfo {
  version: string;
  home: string;
  accelerator: string;
  acceleratorReason: string;
  guestKernel: string;
  boxes: number;
  runningBoxes: number;
  images: number;
}

/**
 * The BoxLite runtime (`JsBoxlite`): creates, finds and removes boxes under
 * one home directory. No daemon: each running box is served by its own shim,
 * so any number of runtimes (in any number of processes) can share a home.
 */
export class JsBoxlite {
  private static defaultOptions: RuntimeOptions = {};
  private static defaultRuntime?: JsBoxlite;

  readonly home: HomeLayout;
  /** `runtime.images`: pull, list, remove, prune, load. */
  readonly images: Images;
  /** `runtime.volumes`: managed volumes (src/runtime/volumes.ts), mounted with `{ managedVolume, guestPath }`. */
  readonly volumes: Volumes;
  private readonly store: BoxStore;
  private readonly disks: DiskStore;
  private readonly imageStore: ImageStore;
  private readonly live = new Set<Box>();
  private readonly runtimeMetrics: RuntimeMetrics = {
    boxesCreatedTotal: 0,
    boxesFailedTotal: 0,
    numRunningBoxes: 0,
    totalCommandsExecuted: 0,
    totalExecErrors: 0,
  };
  private assets?: Promise<GuestAssets>;
  private accel?: Accelerator;
  private readonly ctx: RuntimeContext;
  private closed?: 'closed' | 'shut down';
  private shuttingDown?: Promise<void>;

  constructor(options: RuntimeOptions = {}) {
    this.home = resolveHome(options.homeDir);
    this.store = new BoxStore(this.home.boxes, this.home.db);
    this.disks = new DiskStore(this.home.db);
    this.imageStore = new ImageStore(this.home.images, this.home.db);
    this.images = new Images(this.imageStore, this.store, parseRegistries(options.imageRegistries ?? []), () => this.assertOpen());
    this.volumes = new Volumes(
      this.home.root,
      this.home.db,
      (id) =>
        this.store
          .list<BoxRecordT['options'], BoxImage>()
          .filter((r) => managedVolumeIds(r.options.volumes).includes(id))
          .map((r) => ({ boxId: r.id, boxName: r.name, running: !!this.store.liveShim(r.id) })),
      () => this.assertOpen(),
    );
    this.ctx = {
      home: this.home,
      store: this.store,
      disks: this.disks,
      metrics: this.runtimeMetrics,
      guestAssets: () => {
        // QEMU is checked here, with the guest runtime: both are needed before any boot.
        this.assets ??= Promise.all([ensureEngine(), locateGuestAssets()]).then(([, assets]) => assets).catch((err: unknown) => {
          this.assets = undefined;
          throw toBoxliteError(err, 'Engine');
        });
        return this.assets;
      },
      accelerator: () => {
        try {
          return (this.accel ??= detectAccelerator());
        } catch (err) {
          throw toBoxliteError(err, 'Config');
        }
      },
      agentTimeoutMs: (accel) => {
        const fromEnv = Number(process.env.BOXLITE_AGENT_TIMEOUT_MS);
        if (Number.isFinite(fromEnv) && fromEnv > 0) return fromEnv;
        return accel === 'tcg' ? 120_000 : 30_000;
      },
      onBoxStarted: (box) => {
        this.live.add(box);
        this.runtimeMetrics.numRunningBoxes = this.live.size;
      },
      onBoxStopped: (box) => {
        this.live.delete(box);
        this.runtimeMetrics.numRunningBoxes = this.live.size;
      },
      onBoxFailed: () => {
        this.runtimeMetrics.boxesFailedTotal++;
      },
    };
  }

  /** The process-wide runtime on the default home (`BOXLITE_HOME` or ~/.boxlite). */
  static withDefaultConfig(): JsBoxlite {
    if (JsBoxlite.defaultRuntime?.closed) JsBoxlite.defaultRuntime = undefined;
    return (JsBoxlite.defaultRuntime ??= new JsBoxlite(JsBoxlite.defaultOptions));
  }

  /** Sets the options withDefaultConfig() uses; call before the first box. */
  static initDefault(options: RuntimeOptions): void {
    JsBoxlite.defaultOptions = options;
    JsBoxlite.defaultRuntime = undefined;
  }

  /**
   * A runtime on a remote BoxLite REST server (src/rest/client/): the same API, spoken over the
   * reference's REST wire. Typed as JsBoxlite so programs (and SimpleBox) take either; the
   * members only a local runtime has (home, systemInfo) are absent on it.
   */
  static rest(options: { url: string; credential?: unknown; pathPrefix?: string }): JsBoxlite {
    return new RestRuntime(options as RestRuntimeOptions) as unknown as JsBoxlite;
  }

  /**
   * Imports a box from a `.boxlite` archive (`box.export()`), treated as untrusted: checked
   * whole (src/runtime/archive.ts) before a box exists, and nothing is left when it fails.
   */
  async importBox(archivePath: string, name?: string | null): Promise<Box> {
    this.assertOpen();
    ensureHome(this.home);
    const record = await importArchive(this.ctx, archivePath, name);
    this.runtimeMetrics.boxesCreatedTotal++;
    return new Box(this.ctx, record);
  }

  /** Creates a box (state `configured`); its VM boots on start() or the first exec(). */
  async create(options: BoxOptions, name?: string | null): Promise<Box> {
    this.assertOpen();
    const normalized = normalizeBoxOptions(options, undefined, this.volumes.resolve);
    const t0 = performance.now();
    ensureHome(this.home);
    const t1 = performance.now();
    let reference: string;
    let prepared: Awaited<ReturnType<typeof prepareRootfs>>;
    try {
      if (normalized.rootfsPath) {
        reference = `oci:${path.resolve(normalized.rootfsPath)}`;
        prepared = await prepareRootfs({ layoutDir: normalized.rootfsPath, imagesDir: this.home.images });
      } else {
        const stored = await this.images.ensure(normalized.image!);
        reference = stored.reference;
        prepared = await prepareRootfs({ layoutDir: this.home.images, imagesDir: this.home.images, reference });
      }
    } catch (err) {
      throw toBoxliteError(err, 'Image');
    }
    const t2 = performance.now();
    const image: BoxImage = {
      reference,
      manifestDigest: prepared.image.manifestDigest,
      rootfsBase: prepared.ext4Path,
      config: prepared.image.config ?? {},
    };
    const record: BoxRecordT = {
      id: ulid(),
      name: name ?? undefined,
      createdAt: new Date().toISOString(),
      options: normalized,
      image,
    };
    this.store.create(record);
    try {
      // The values stay out of the record (config.json, the database): their own 0600 file.
      writeSecretValues(this.store.dir(record.id), normalizeSecrets(options.secrets, normalized.network));
      await createOverlay(image.rootfsBase, boxPaths(this.store.dir(record.id)).disk, normalized.diskSizeGb);
    } catch (err) {
      this.store.remove(record.id);
      throw toBoxliteError(err, 'Storage');
    }
    const t3 = performance.now();
    this.runtimeMetrics.boxesCreatedTotal++;
    return new Box(this.ctx, record, {
      stageFilesystemSetupMs: Math.round(t1 - t0 + (t3 - t2)),
      stageImagePrepareMs: Math.round(t2 - t1),
    });
  }

  /** Returns the box with this name, creating it when there is none. */
  async getOrCreate(options: BoxOptions, name?: string | null): Promise<{ created: boolean; box: Box }> {
    this.assertOpen();
    if (name) {
      const existing = await this.get(name);
      if (existing) return { created: false, box: existing };
    }
    return { created: true, box: await this.create(options, name) };
  }

  /** A handle on an existing box (by id, name or unique id prefix), or null. */
  async get(idOrName: string): Promise<Box | null> {
    this.assertOpen();
    for (const box of this.live) if (box.id === idOrName || box.name === idOrName) return box;
    const record = this.store.find<BoxRecordT['options'], BoxImage>(idOrName);
    return record ? new Box(this.ctx, record) : null;
  }

  async getInfo(idOrName: string): Promise<BoxInfo | null> {
    this.assertOpen();
    const record = this.store.find<BoxRecordT['options'], BoxImage>(idOrName);
    if (!record) return null;
    const { state, shim } = this.store.status(record.id);
    return withHealth(boxInfo(record, state.status, shim?.qemuPid, state.startedAt, shim?.publishedPorts), record, this.store.dir(record.id), !!shim?.qemuPid);
  }

  async listInfo(): Promise<BoxInfo[]> {
    this.assertOpen();
    return this.store.list<BoxRecordT['options'], BoxImage>().map((record) => {
      const { state, shim } = this.store.status(record.id);
      return withHealth(boxInfo(record, state.status, shim?.qemuPid, state.startedAt, shim?.publishedPorts), record, this.store.dir(record.id), !!shim?.qemuPid);
    });
  }

  /** Removes a box and its disk. A running box needs force (it is then killed). */
  async remove(idOrName: string, force?: boolean | null): Promise<void> {
    this.assertOpen();
    const record = this.store.find<BoxRecordT['options'], BoxImage>(idOrName);
    if (!record) throw new NotFoundError('box', idOrName);
    const box = [...this.live].find((b) => b.id === record.id) ?? new Box(this.ctx, record);
    const { shim } = this.store.status(record.id);
    if (shim) {
      if (!force) {
        throw new InvalidStateError(`box ${record.id} is running; stop it first or remove it with force`);
      }
      await box.kill();
    }
    this.store.remove(record.id);
    // Its snapshots go with it; bases a clone or another snapshot still uses stay.
    collectBases(this.ctx);
  }

  /** What `boxlite info` shows: version, home, accelerator and why, guest kernel, counts. */
  async systemInfo(): Promise<SystemInfo> {
    const boxes = await this.listInfo();
    const accel = this.ctx.accelerator();
    let kernel: string | undefined;
    try {
      // The runtime alone (not ctx.guestAssets, which also wants QEMU): info works without QEMU.
      kernel = (await locateGuestAssets()).kernelVersion;
    } catch (err) {
      kernel = `not available (${(err as Error).message})`;
    }
    return {
      version: VERSION,
      home: this.home.root,
      accelerator: accel.kind,
      acceleratorReason: accel.reason,
      guestKernel: kernel,
      boxes: boxes.length,
      runningBoxes: boxes.filter((b) => b.state.running).length,
      images: (await this.images.list()).length,
    };
  }

  async metrics(): Promise<RuntimeMetrics> {
    return { ...this.runtimeMetrics };
  }

  /**
   * Stops every box this runtime has running (detached ones too), each gracefully and, after
   * `timeout` seconds (default 10; -1 waits indefinitely), by force; then closes the runtime,
   * so later calls fail with InvalidState as in the reference. A runtime already close()d still
   * stops its boxes (the reference's close() does not stop them either); a second shutdown()
   * waits for the first.
   */
  shutdown(timeout?: number | null): Promise<void> {
    if (this.shuttingDown) return this.shuttingDown;
    const seconds = timeout ?? 10;
    if (typeof seconds !== 'number' || Number.isNaN(seconds) || (seconds < 0 && seconds !== -1)) {
      return Promise.reject(
        new InvalidArgumentError(`shutdown timeout must be a number of seconds or -1 (no limit), got ${String(timeout)}`),
      );
    }
    this.closed = 'shut down';
    this.shuttingDown = this.stopAll(seconds).finally(() => this.release());
    return this.shuttingDown;
  }

  private async stopAll(seconds: number): Promise<void> {
    await Promise.allSettled(
      [...this.live].map(async (box) => {
        const stopping = box.stop();
        if (seconds === -1) return stopping;
        let timer: NodeJS.Timeout | undefined;
        const expired = new Promise<'expired'>((r) => (timer = setTimeout(() => r('expired'), seconds * 1000)));
        try {
          if ((await Promise.race([stopping, expired])) === 'expired') await box.kill();
        } finally {
          clearTimeout(timer);
        }
        return stopping.catch(() => undefined);
      }),
    );
  }

  /**
   * Releases this runtime's databases. Synchronous, as in the reference; boxes keep running
   * (their shims own them). Every later call on this runtime fails with InvalidState.
   */
  close(): void {
    if (this.closed === undefined) this.closed = 'closed';
    this.release();
  }

  /** Closing the stores is idempotent; a box handle that touches one later reopens it. */
  private release(): void {
    discardSpareShim();
    this.volumes.close();
    this.imageStore.close();
    this.store.close();
    this.disks.close();
  }

  private assertOpen(): void {
    if (this.closed) throw new InvalidStateError(`runtime was ${this.closed}; create a new JsBoxlite`);
  }
}
