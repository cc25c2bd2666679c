// OCI distribution client (docs/images.md).
export {
  parseRegistries,
  parseRegistrySettings,
  findRegistrySettings,
  sameRegistry,
  type RegistrySettings,
  type RegistryAuth,
} from './settings.js';
export { dockerCredentials, resolveCredentials, dockerConfigDir, type Credentials } from './credentials.js';
export { parseChallenges, type Challenge } from './auth.js';
export { DEFAULT_RETRY, type HttpOptions, type RetryOptions } from './http.js';
export {
  RegistryClient,
  RegistryError,
  MANIFEST_ACCEPT,
  type RegistryClientOptions,
  type RegistryErrorReason,
  type FetchedManifest,
  type ManifestHead,
  type BlobDownload,
  type DownloadBlobOptions,
} from './client.js';
