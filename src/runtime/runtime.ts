import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { ulid } from 'ulid';
import { InvalidStateError, NotFoundError, toBoxliteError } from '../errors/index.js';
import { parseRegistries, type RegistrySettings } from '../images/registry/index.js';
import { ImageStore } from '../images/store.js';
import { createOverlay, prepareRootfs } from '../images/rootfs.js';
import { BoxStore } from '../store/boxes.js';
import { ensureHome, resolveHome, type HomeLayout } from '../store/home.js';
import { detectAccelerator, type Accelerator } from '../vmm/accel.js';
import { locateGuestAssets, type GuestAssets } from '../vmm/assets.js';
import { Box, boxInfo, type BoxInfo, type BoxRecordT } from './box.js';
import type { RuntimeContext, RuntimeMetrics } from './context.js';
import type { BoxImage } from './image.js';
import { Images } from './images.js';
import { normalizeBoxOptions, type BoxOptions } from './options.js';

/** `JsOptions` of @boxlite-ai/boxlite. */
export interface RuntimeOptions {
  homeDir?: string;
  /** Registries searched, in order, for unqualified image names; settings for qualified ones. */
  imageRegistries?: RegistrySettings[];
}

const PACKAGE_ROOT = fileURLToPath(new URL('../../', import.meta.url));
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

export function defaultAgentBinary(env: NodeJS.ProcessEnv = process.env): string {
  return env.BOXLITE_GUEST_AGENT ?? path.join(PACKAGE_ROOT, 'guest', 'build', 'boxlite-guest');
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
  private readonly store: BoxStore;
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
  private closed = false;

  constructor(options: RuntimeOptions = {}) {
    this.home = resolveHome(options.homeDir);
    this.store = new BoxStore(this.home.boxes, this.home.db);
    this.imageStore = new ImageStore(this.home.images, this.home.db);
    this.images = new Images(this.imageStore, this.store, parseRegistries(options.imageRegistries ?? []));
    this.ctx = {
      home: this.home,
      store: this.store,
      metrics: this.runtimeMetrics,
      guestAssets: () => {
        this.assets ??= locateGuestAssets(this.home.root, defaultAgentBinary()).catch((err: unknown) => {
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
    return (JsBoxlite.defaultRuntime ??= new JsBoxlite(JsBoxlite.defaultOptions));
  }

  /** Sets the options withDefaultConfig() uses; call before the first box. */
  static initDefault(options: RuntimeOptions): void {
    JsBoxlite.defaultOptions = options;
    JsBoxlite.defaultRuntime = undefined;
  }

  /** Creates a box (state `configured`); its VM boots on start() or the first exec(). */
  async create(options: BoxOptions, name?: string | null): Promise<Box> {
    this.assertOpen();
    const normalized = normalizeBoxOptions(options);
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
      await createOverlay(image.rootfsBase, path.join(this.store.dir(record.id), 'disk.qcow2'), normalized.diskSizeGb);
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
    const record = this.store.find<BoxRecordT['options'], BoxImage>(idOrName);
    if (!record) return null;
    const { state, shim } = this.store.status(record.id);
    return boxInfo(record, state.status, shim?.qemuPid, state.startedAt, shim?.publishedPorts);
  }

  async listInfo(): Promise<BoxInfo[]> {
    return this.store.list<BoxRecordT['options'], BoxImage>().map((record) => {
      const { state, shim } = this.store.status(record.id);
      return boxInfo(record, state.status, shim?.qemuPid, state.startedAt, shim?.publishedPorts);
    });
  }

  /** Removes a box and its disk. A running box needs force (it is then killed). */
  async remove(idOrName: string, force?: boolean | null): Promise<void> {
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
  }

  /** What `boxlite info` shows: version, home, accelerator and why, guest kernel, counts. */
  async systemInfo(): Promise<SystemInfo> {
    const boxes = await this.listInfo();
    const accel = this.ctx.accelerator();
    let kernel: string | undefined;
    try {
      kernel = (await this.ctx.guestAssets()).kernelVersion;
    } catch {
      kernel = undefined;
    }
    return {
      version: VERSION,
      home: this.home.root,
      accelerator: accel.kind,
      acceleratorReason: accel.reason,
      guestKernel: kernel ?? 'not installed (run `npm run setup`)',
      boxes: boxes.length,
      runningBoxes: boxes.filter((b) => b.state.running).length,
      images: (await this.images.list()).length,
    };
  }

  async metrics(): Promise<RuntimeMetrics> {
    return { ...this.runtimeMetrics };
  }

  /** Stops every box this runtime started that is not detached. */
  async shutdown(timeout?: number | null): Promise<void> {
    const boxes = [...this.live].filter((b) => !b.config.options.detach);
    const stopAll = Promise.allSettled(boxes.map((b) => b.stop()));
    if (timeout && timeout > 0) {
      let timer: NodeJS.Timeout | undefined;
      await Promise.race([stopAll, new Promise((r) => (timer = setTimeout(r, timeout * 1000)))]);
      clearTimeout(timer);
      await Promise.allSettled([...this.live].filter((b) => !b.config.options.detach).map((b) => b.kill()));
    } else {
      await stopAll;
    }
    this.close();
  }

  close(): void {
    this.closed = true;
    this.imageStore.close();
    this.store.close();
  }

  private assertOpen(): void {
    if (this.closed) throw new InvalidStateError('runtime was shut down');
  }
}
