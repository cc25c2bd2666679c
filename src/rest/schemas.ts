// Zod schemas mirroring the OpenAPI components of the reference's Box API (UPSTREAM-OAS, plus the
// bodies its 0.10 client sends and the FORK/0.9 legacy shapes): rest-contract §1.3, §3.3.
// Shared by the server (request validation; response contract tests) and the client (responses).
// Requests are strict (unknown fields → 400) except ExecRequest, which FORK serve leaves open.
import { z } from 'zod';

const int = () => z.number().int('must be an integer');
const name128 = z.string().min(1, 'must not be empty').max(128, 'must be at most 128 characters');
export const BOX_NAME = /^[a-zA-Z0-9][a-zA-Z0-9._-]*$/;
const stringMap = z.record(z.string(), z.string());

// ---------------------------------------------------------------- errors

export const ErrorModel = z.object({
  message: z.string(),
  type: z.string().regex(/^[A-Z][A-Za-z]*$/, 'must be PascalCase'),
  code: z.string().regex(/^[a-z][a-z_]*$/, 'must be snake_case'),
  request_id: z.string().optional(),
  stack: z.string().optional(),
});
export const ErrorResponse = z.object({ error: ErrorModel }).strict();

// ---------------------------------------------------------------- config, principal, metrics

export const ServerConfig = z.object({
  defaults: z.object({
    cpus: int(),
    memory_mib: int(),
    disk_size_gb: int().optional(),
    auto_delete: int().optional(),
  }).passthrough(),
  overrides: z.record(z.string(), z.string()).optional(),
  capabilities: z.object({
    linux_capabilities_enabled: z.boolean(),
    max_cpus: int().optional(),
    max_memory_mib: int().optional(),
    max_disk_size_gb: int().optional(),
    max_boxes_per_path_prefix: int().optional(),
    max_concurrent_executions: int().optional(),
    file_transfer_max_bytes: int(),
    exec_timeout_max_seconds: z.number().optional(),
    tty_enabled: z.boolean(),
    streaming_enabled: z.boolean(),
    snapshots_enabled: z.boolean(),
    clone_enabled: z.boolean(),
    export_enabled: z.boolean(),
    import_enabled: z.boolean(),
    idempotency_key_lifetime: z.string().optional(),
  }).passthrough(),
});

export const Principal = z.object({
  sub: z.string(),
  principal_type: z.enum(['user', 'service_account']),
  scopes: z.array(z.string()),
  email: z.string().optional(),
  display_name: z.string().optional(),
  path_prefix: z.string().nullable(),
  expires_at: z.string().datetime().nullable().optional(),
});

export const RuntimeMetrics = z.object({
  boxes_created_total: int().min(0),
  boxes_failed_total: int().min(0),
  boxes_stopped_total: int().min(0),
  num_running_boxes: int().min(0),
  total_commands_executed: int().min(0),
  total_exec_errors: int().min(0),
});

const nullableInt = int().nullable();
export const BootTiming = z.object({
  total_create_ms: nullableInt,
  guest_boot_ms: nullableInt,
  filesystem_setup_ms: nullableInt,
  image_prepare_ms: nullableInt,
  guest_rootfs_ms: nullableInt,
  box_config_ms: nullableInt,
  box_spawn_ms: nullableInt,
  container_init_ms: nullableInt,
});

export const BoxMetrics = z.object({
  commands_executed_total: int().min(0),
  exec_errors_total: int().min(0),
  bytes_sent_total: int().min(0),
  bytes_received_total: int().min(0),
  cpu_percent: z.number().nullable().optional(),
  memory_bytes: int().nullable().optional(),
  network_bytes_sent: int().nullable().optional(),
  network_bytes_received: int().nullable().optional(),
  network_tcp_connections: int().nullable().optional(),
  network_tcp_errors: int().nullable().optional(),
  boot_timing: BootTiming.nullable().optional(),
});

// ---------------------------------------------------------------- boxes

export const BOX_STATUSES = ['configured', 'running', 'stopping', 'stopped', 'paused', 'failed', 'unknown'] as const;

export const Box = z.object({
  box_id: z.string().min(1).max(128).regex(/^[A-Za-z0-9._~-]+$/, 'must be URL/path-safe'),
  name: z.string().nullable().optional(),
  status: z.enum(BOX_STATUSES),
  created_at: z.string().datetime({ offset: true }),
  updated_at: z.string().datetime({ offset: true }),
  image: z.string(),
  cpus: int().min(1).max(255),
  memory_mib: int().min(128),
  pid: int().nullable().optional(),
  labels: z.record(z.string(), z.string()).optional(),
  auto_stop: int().min(0).optional(),
  auto_pause: int().min(0).optional(),
  auto_delete: int().min(0).optional(),
  auto_resume: z.boolean().optional(),
  exit_code: int().nullable().optional(),
});

export const ListBoxesResponse = z.object({ boxes: z.array(Box), next_page_token: z.string().optional() });

const mode = z.enum(['enabled', 'disabled']);
const allowNet = z.array(z.string());
/** UPSTREAM-OAS nested shape; the FORK flat `{mode, allow_net}` as a legacy alias; both at once → 400. */
export const NetworkSpec = z
  .object({
    outbound: z.object({ mode, allow_net: allowNet.optional() }).strict().optional(),
    inbound: z.object({ mode, allow_net: allowNet.optional() }).strict().optional(),
    mode: mode.optional(),
    allow_net: allowNet.optional(),
  })
  .strict()
  .superRefine((n, c) => {
    if ((n.outbound || n.inbound) && (n.mode !== undefined || n.allow_net !== undefined)) {
      c.addIssue({ code: z.ZodIssueCode.custom, message: 'mixes the flat (mode, allow_net) and nested (outbound, inbound) shapes' });
    }
    if (n.inbound?.allow_net?.length) {
      c.addIssue({ code: z.ZodIssueCode.custom, path: ['inbound', 'allow_net'], message: 'must be empty (inbound filtering is not supported)' });
    }
  });

export const SecretSpec = z
  .object({
    name: z.string().min(1),
    value: z.string(),
    hosts: z.array(z.string()).optional(),
    placeholder: z.string().optional(),
  })
  .strict();

/** UPSTREAM-OAS managed volume, or the FORK host-path volume (refused by the server: a host path is the server's). */
export const VolumeMount = z.union([
  z.object({ managed_volume: z.string().min(1), guest_path: z.string().min(1), read_only: z.literal(false).optional() }).strict(),
  z.object({ host_path: z.string().min(1), guest_path: z.string().min(1), read_only: z.boolean().optional() }).strict(),
]);

export const CreateBoxRequest = z
  .object({
    name: name128.regex(BOX_NAME, 'must match ^[a-zA-Z0-9][a-zA-Z0-9._-]*$').optional(),
    image: z.string().min(1).optional(),
    rootfs_path: z.string().min(1).optional(),
    cpus: int().min(1, 'must be between 1 and 32').max(32, 'must be between 1 and 32').optional(),
    memory_mib: int().min(128, 'must be >= 128').optional(),
    disk_size_gb: int().min(1, 'must be >= 1').optional(),
    working_dir: z.string().optional(),
    env: stringMap.optional(),
    entrypoint: z.array(z.string()).optional(),
    cmd: z.array(z.string()).optional(),
    user: z.string().regex(/^[A-Za-z0-9_.-]+(:[A-Za-z0-9_.-]+)?$/, 'must be name|uid[:group|gid]').optional(),
    volumes: z.array(VolumeMount).optional(),
    network: NetworkSpec.optional(),
    secrets: z.array(SecretSpec).optional(),
    detach: z.boolean().optional(),
    tty: z.boolean().optional(),
    auto_stop: int().min(0).optional(),
    auto_pause: int().min(0).optional(),
    auto_delete: int().min(0).optional(),
    auto_resume: z.boolean().optional(),
    labels: z.record(z.string(), z.string()).optional(),
    advanced: z
      .object({ capabilities: z.object({ add: z.array(z.string()).optional(), drop: z.array(z.string()).optional() }).strict().optional() })
      .strict()
      .optional(),
  })
  .strict()
  .superRefine((b, c) => {
    if (b.rootfs_path !== undefined && b.image !== undefined) {
      c.addIssue({ code: z.ZodIssueCode.custom, path: ['rootfs_path'], message: 'excludes image' });
    }
    if (b.auto_stop !== undefined && b.auto_pause !== undefined && b.auto_stop !== b.auto_pause) {
      c.addIssue({ code: z.ZodIssueCode.custom, path: ['auto_pause'], message: 'conflicts with auto_stop (its legacy alias)' });
    }
  });
export type CreateBoxRequest = z.infer<typeof CreateBoxRequest>;

export const StopBoxRequest = z.object({ timeout_seconds: z.number().min(0).finite().optional() }).strict();

export const ListQuery = z
  .object({
    pageSize: z.coerce.number().int().min(1).max(1000).optional(),
    pageToken: z.string().optional(),
    status: z.enum(BOX_STATUSES).optional(),
  })
  .strict();

export const RemoveQuery = z.object({ force: z.enum(['true', 'false', '1', '0']).optional() }).strict();

// ---------------------------------------------------------------- executions (S2 uses these)

export const ExecRequest = z
  .object({
    command: z.string().min(1),
    args: z.array(z.string()).optional(),
    env: stringMap.optional(),
    // 0 is "no timeout": the 0.10 client sends it for `timeout: 0`, and the reference server accepts it.
    timeout_seconds: z.number().min(0, 'must be >= 0').finite().optional(),
    working_dir: z.string().optional(),
    tty: z.boolean().optional(),
    /** Extensions: FORK's inline stdin (written, then closed) and the user to run as. */
    stdin: z.string().optional(),
    user: z.string().optional(),
  })
  .passthrough();
export const ExecResponse = z.object({ execution_id: z.string().min(1) });
export const ExecutionInfo = z.object({
  execution_id: z.string(),
  status: z.enum(['running', 'completed', 'killed', 'timed_out']),
  exit_code: int().nullable(),
  started_at: z.string().datetime({ offset: true }).optional(),
  duration_ms: int().min(0).nullable().optional(),
  error_message: z.string().nullable().optional(),
});
export const SignalRequest = z.object({ signal: int() }).strict();
export const ResizeRequest = z.object({ cols: int().min(1), rows: int().min(1) }).strict();

// ---------------------------------------------------------------- images, tunnels, snapshots

export const ImageInfo = z.object({
  reference: z.string(),
  repository: z.string(),
  tag: z.string(),
  id: z.string(),
  cached_at: z.string().datetime({ offset: true }),
  size_bytes: int().min(0).optional(),
});
export const ListImagesResponse = z.object({ images: z.array(ImageInfo), next_page_token: z.string().optional() });
export const PullImageRequest = z.object({ reference: z.string().min(1) }).strict();
export const TunnelDescriptor = z.object({ uri: z.string() });
export const Snapshot = z.object({
  id: z.string(),
  box_id: z.string(),
  name: z.string(),
  created_at: int(),
  guest_disk_bytes: int().optional(),
  container_disk_bytes: int(),
  size_bytes: int(),
});
