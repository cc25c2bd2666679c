import type { PullProgress } from '../images/pull.js';
import type { RegistrySettings } from '../images/registry/index.js';
import { ImageStore, type ImageInfo, type ImagePullResult, type ImageRecord } from '../images/store.js';
import type { BoxStore } from '../store/boxes.js';
import type { BoxImage } from './image.js';

/** `ImagePullResult` plus where the image was found and is listed (`images.list()`). */
export interface ImagesPullResult extends ImagePullResult {
  /** The stored, fully qualified reference, e.g. `docker.io/library/alpine:latest` for `alpine`. */
  resolvedReference: string;
}

/**
 * `runtime.images` (`ImageHandle` of @boxlite-ai/boxlite): pull and list, plus the
 * management calls the CLI needs (remove, prune, load).
 */
export class Images {
  /** @internal */
  constructor(
    private readonly store: ImageStore,
    private readonly boxes: BoxStore,
    private readonly registries: RegistrySettings[],
    /** Throws once the runtime is closed, so no call reaches a closed database. */
    private readonly assertOpen: () => void = () => undefined,
  ) {}

  /**
   * Pulls an image; blobs already stored are not downloaded again. `reference` in the result
   * is the reference as asked for (as the reference does); `resolvedReference` is where it was
   * found, the name list() shows.
   */
  async pull(reference: string, options?: { onProgress?: (p: PullProgress) => void }): Promise<ImagesPullResult> {
    this.assertOpen();
    const rec = await this.store.pull(reference, { registries: this.registries, onProgress: options?.onProgress });
    return { reference, configDigest: rec.configDigest, layerCount: rec.layerCount, resolvedReference: rec.reference };
  }

  async list(): Promise<ImageInfo[]> {
    this.assertOpen();
    return this.store.list().map((r) => ({
      reference: r.reference,
      repository: r.repository,
      tag: r.tag,
      id: r.configDigest,
      cachedAt: r.cachedAt,
      sizeBytes: r.sizeBytes,
    }));
  }

  /** Forgets an image reference; refused while a box uses it unless `force`. */
  async remove(reference: string, force = false): Promise<void> {
    this.assertOpen();
    this.store.remove(reference, { force, inUse: (digest) => this.usersOf(digest) });
  }

  /** Deletes blobs and root filesystem bases that no image and no box needs. */
  async prune(): Promise<{ blobs: number; bases: number; bytes: number }> {
    this.assertOpen();
    const inUse = new Set(this.boxes.list<unknown, BoxImage>().map((b) => b.image.manifestDigest));
    return this.store.prune(inUse);
  }

  /** Loads a `docker save` or OCI archive; returns the references it recorded. */
  async load(archivePath: string): Promise<string[]> {
    this.assertOpen();
    return (await this.store.load(archivePath)).map((r) => r.reference);
  }

  /** @internal The stored image for a reference, pulling it when absent. */
  async ensure(reference: string): Promise<ImageRecord> {
    return this.store.find(reference) ?? (await this.store.pull(reference, { registries: this.registries }));
  }

  private usersOf(manifestDigest: string): string[] {
    return this.boxes
      .list<unknown, BoxImage>()
      .filter((b) => b.image.manifestDigest === manifestDigest)
      .map((b) => b.id);
  }
}
