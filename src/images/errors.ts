// The image layer's boundary translation. Deep code raises coded errors where it can
// (ImageError for content, StorageError for disk); what still escapes as a foreign
// error is translated once, where a call leaves src/images: an errno failure is a
// StorageError, anything else raised while handling image content (JSON, tar-stream,
// zlib) an ImageError. The foreign error is kept as `cause`.

import { BoxliteError, ImageError } from '../errors/index.js';
import { isErrnoError, storageError } from '../util/fs.js';

export function translateImageError(err: unknown, what: string): BoxliteError {
  if (err instanceof BoxliteError) return err;
  if (isErrnoError(err)) return storageError(err, what);
  return new ImageError(`${what}: ${err instanceof Error ? err.message : String(err)}`, { cause: err });
}

/** Runs `fn`; whatever it throws leaves as translateImageError's. */
export async function imageBoundary<T>(what: string, fn: () => Promise<T>): Promise<T> {
  try {
    return await fn();
  } catch (err) {
    throw translateImageError(err, what);
  }
}

export function imageBoundarySync<T>(what: string, fn: () => T): T {
  try {
    return fn();
  } catch (err) {
    throw translateImageError(err, what);
  }
}
