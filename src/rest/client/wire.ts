// Request bodies and response parsing of the REST client, as the reference's 0.10 client does them
// (rest-contract §3.3, §3.6; the captured transcript test/fixtures/rest-transcript.json pins them).
import { InternalError, UnsupportedError } from '../../errors/index.js';
import type { BoxInfo, BoxMetrics } from '../../runtime/box.js';
import type { RuntimeMetrics } from '../../runtime/context.js';
import type { BoxOptions } from '../../runtime/options.js';

/** The reference's client-side rejections (before any I/O), with its texts. */
export const REJECT = {
  ports:
    'Host port publication (-p/ports) is local-only for remote runtimes. Use box.network.tunnel(port) or `boxlite network tunnel BOX PORT` instead.',
  hostPath: 'host bind mounts are only supported by the local runtime; mount a managed volume by id or name instead',
  security: "sandbox security (advanced.security) is the remote server's own policy and is only configurable by the local runtime",
  images: 'Image operations not supported over REST API',
  overwrite:
    'copy_into with overwrite=false is not supported over the REST backend; the current upload protocol cannot express per-entry skip-if-exists. Use the FFI backend or pre-check the destination before calling.',
} as const;

type Loose = Record<string, unknown>;

/** `POST boxes` body for these options, keys in the reference's order; throws its client-side rejections. */
export function createBody(options: BoxOptions, name?: string | null): Loose {
  const o = (options ?? {}) as BoxOptions & Loose;
  if (Array.isArray(o.ports) && o.ports.length) throw new UnsupportedError(REJECT.ports);
  const volumes = (o.volumes ?? []) as unknown as Loose[];
  if (volumes.some((v) => v && typeof v === 'object' && 'hostPath' in v)) throw new UnsupportedError(REJECT.hostPath);
  if (o.security !== undefined && o.security !== null) throw new UnsupportedError(REJECT.security);
  const body: Loose = {};
  if (name) body.name = name;
  if (o.rootfsPath) body.rootfs_path = o.rootfsPath;
  else body.image = o.image ?? 'alpine:latest';
  if (o.cpus !== undefined) body.cpus = o.cpus;
  if (o.memoryMib !== undefined) body.memory_mib = o.memoryMib;
  if (o.diskSizeGb !== undefined) body.disk_size_gb = o.diskSizeGb;
  if (o.workingDir !== undefined) body.working_dir = o.workingDir;
  if (o.env?.length) body.env = Object.fromEntries(o.env.map((e) => [e.key, e.value]));
  const net = (o.network ?? {}) as Loose & { outbound?: Loose; inbound?: Loose };
  const outMode = net.outbound?.mode ?? net.mode ?? 'enabled';
  const allow = (net.outbound?.allowNet ?? net.allowNet) as string[] | undefined;
  const outbound: Loose = { mode: outMode };
  if (allow?.length) outbound.allow_net = allow;
  const inbound: Loose = { mode: net.inbound?.mode ?? 'enabled' };
  const inAllow = net.inbound?.allowNet as string[] | undefined;
  if (inAllow?.length) inbound.allow_net = inAllow;
  body.network = { outbound, inbound };
  if (volumes.length) {
    body.volumes = volumes.map((v) => ({ managed_volume: v.managedVolume ?? v.volume ?? v.name, guest_path: v.guestPath, read_only: v.readOnly ?? false }));
  }
  if (o.entrypoint !== undefined) body.entrypoint = o.entrypoint;
  if (o.cmd !== undefined) body.cmd = o.cmd;
  if (o.user !== undefined) body.user = o.user;
  if (o.secrets?.length) {
    body.secrets = o.secrets.map((s) => ({ name: s.name, value: s.value, hosts: s.hosts ?? [], placeholder: s.placeholder ?? `<BOXLITE_SECRET:${s.name}>` }));
  }
  body.detach = o.detach ?? false;
  const caps = (o.advanced as Loose | undefined)?.capabilities as { add?: string[]; drop?: string[] } | undefined;
  if (caps && (caps.add?.length || caps.drop?.length)) {
    body.advanced = { capabilities: { ...(caps.add?.length ? { add: caps.add } : {}), ...(caps.drop?.length ? { drop: caps.drop } : {}) } };
  }
  if (o.autoStop !== undefined) body.auto_stop = o.autoStop;
  if (o.autoDelete !== undefined) body.auto_delete = o.autoDelete;
  if (o.autoResume !== undefined) body.auto_resume = o.autoResume;
  return body;
}

/** Whether a create needs the (uncached) Linux-capabilities check first. */
export function wantsCapabilities(body: Loose): boolean {
  return body.advanced !== undefined;
}

const BOX_ID = /^[A-Za-z0-9._~-]{1,128}$/;
const STATUSES = new Set(['configured', 'running', 'stopping', 'stopped', 'paused', 'failed', 'unknown']);

export interface WireBox {
  box_id: string;
  name?: string | null;
  status: string;
  created_at: string;
  image: string;
  cpus: number;
  memory_mib: number;
  auto_stop?: number;
  auto_pause?: number;
  auto_delete?: number;
  auto_resume?: boolean;
  pid?: number | null;
  exit_code?: number | null;
}

/** A `Box` answer as `JsBoxInfo` (rest-contract §3.6); missing required fields are an Internal error. */
export function parseBox(raw: unknown): BoxInfo {
  const b = raw as Loose;
  if (!b || typeof b !== 'object') throw new InternalError(`failed to parse response: expected a Box object, got ${preview(raw)}`);
  for (const [field, type] of [
    ['box_id', 'string'],
    ['status', 'string'],
    ['created_at', 'string'],
    ['image', 'string'],
    ['cpus', 'number'],
    ['memory_mib', 'number'],
  ] as const) {
    if (b[field] === undefined) throw new InternalError(`failed to parse response: missing field \`${field}\`: ${preview(raw)}`);
    if (typeof b[field] !== type) throw new InternalError(`failed to parse response: invalid type for \`${field}\`: ${preview(raw)}`);
  }
  if (!BOX_ID.test(b.box_id as string)) throw new InternalError(`unparseable box_id ${JSON.stringify(b.box_id)}`);
  const status = STATUSES.has(b.status as string) ? (b.status as BoxInfo['state']['status']) : ('unknown' as BoxInfo['state']['status']);
  const created = Number.isNaN(Date.parse(b.created_at as string)) ? new Date().toISOString() : (b.created_at as string);
  const info: BoxInfo = {
    id: b.box_id as string,
    state: { status, running: status === 'running', ...(typeof b.pid === 'number' ? { pid: b.pid } : {}), ...(typeof b.exit_code === 'number' ? { exitCode: b.exit_code } : {}) },
    createdAt: created,
    image: b.image as string,
    cpus: b.cpus as number,
    memoryMib: b.memory_mib as number,
    network: null,
    autoStop: typeof b.auto_stop === 'number' ? b.auto_stop : typeof b.auto_pause === 'number' ? b.auto_pause : 900,
    autoDelete: typeof b.auto_delete === 'number' ? b.auto_delete : 0,
    autoResume: typeof b.auto_resume === 'boolean' ? b.auto_resume : true,
    healthStatus: { state: 'None', failures: 0 },
  };
  if (typeof b.name === 'string') info.name = b.name;
  return info;
}

function num(v: unknown): number | undefined {
  return typeof v === 'number' && Number.isFinite(v) ? v : undefined;
}

/** `RuntimeMetrics` answer; `numRunningBoxes` is computed by the caller, as the reference does. */
export function parseRuntimeMetrics(raw: Loose): RuntimeMetrics {
  return {
    boxesCreatedTotal: num(raw.boxes_created_total) ?? 0,
    boxesFailedTotal: num(raw.boxes_failed_total) ?? 0,
    numRunningBoxes: num(raw.num_running_boxes) ?? 0,
    totalCommandsExecuted: num(raw.total_commands_executed) ?? 0,
    totalExecErrors: num(raw.total_exec_errors) ?? 0,
  };
}

/** `BoxMetrics` answer, parsed for real (the 0.10 client returns zeros). */
export function parseBoxMetrics(raw: Loose): BoxMetrics {
  const t = (raw.boot_timing ?? {}) as Loose;
  const out: BoxMetrics = {
    commandsExecutedTotal: num(raw.commands_executed_total) ?? 0,
    execErrorsTotal: num(raw.exec_errors_total) ?? 0,
    bytesSentTotal: num(raw.bytes_sent_total) ?? 0,
    bytesReceivedTotal: num(raw.bytes_received_total) ?? 0,
  };
  const opt: Array<[keyof BoxMetrics, unknown]> = [
    ['cpuPercent', raw.cpu_percent],
    ['memoryBytes', raw.memory_bytes],
    ['networkBytesSent', raw.network_bytes_sent],
    ['networkBytesReceived', raw.network_bytes_received],
    ['networkTcpConnections', raw.network_tcp_connections],
    ['networkTcpErrors', raw.network_tcp_errors],
    ['totalCreateDurationMs', t.total_create_ms],
    ['guestBootDurationMs', t.guest_boot_ms],
    ['stageFilesystemSetupMs', t.filesystem_setup_ms],
    ['stageImagePrepareMs', t.image_prepare_ms],
    ['stageGuestRootfsMs', t.guest_rootfs_ms],
    ['stageBoxConfigMs', t.box_config_ms],
    ['stageBoxSpawnMs', t.box_spawn_ms],
    ['stageContainerInitMs', t.container_init_ms],
  ];
  for (const [k, v] of opt) if (num(v) !== undefined) (out as unknown as Loose)[k] = v;
  return out;
}

function preview(v: unknown): string {
  return (JSON.stringify(v) ?? String(v)).slice(0, 4096);
}

/** A capability gate through `/v1/config` (rest-contract §3.2). */
export function checkCapability(config: Loose, flag: string, what: string): void {
  const caps = config?.capabilities as Loose | undefined;
  if (!caps || typeof caps !== 'object' || !(flag in caps) && !(flag in config)) {
    throw new UnsupportedError(`Remote server did not advertise ${what} capability`);
  }
  const v = flag in caps ? caps[flag] : config[flag];
  if (v !== true) throw new UnsupportedError(`Remote server does not support ${what} operations`);
}
