// GET /v1/config (public), GET /v1/me, GET {scope}/metrics. The capability flags are truthful:
// the client gates features on them (snapshots, clone, export, import are false until issue 11).
import os from 'node:os';
import type { FastifyInstance } from 'fastify';
import type { z } from 'zod';
import { DEFAULT_CPUS, DEFAULT_MEMORY_MIB, MAX_MEMORY_MIB } from '../../runtime/options.js';
import type * as S from '../schemas.js';
import type { RestContext } from './app.js';
import { diskFeatures } from './snapshots.js';

export function serverConfig(ctx: RestContext): z.infer<typeof S.ServerConfig> {
  return {
    defaults: { cpus: DEFAULT_CPUS, memory_mib: DEFAULT_MEMORY_MIB, auto_delete: 0 },
    overrides: {},
    capabilities: {
      linux_capabilities_enabled: true,
      max_cpus: os.cpus().length,
      max_memory_mib: MAX_MEMORY_MIB,
      file_transfer_max_bytes: ctx.opts.maxFileBytes,
      tty_enabled: true,
      streaming_enabled: true,
      // True when the runtime has them (the SDK's does; a test fake may not): src/rest/server/snapshots.ts.
      snapshots_enabled: diskFeatures(ctx),
      clone_enabled: diskFeatures(ctx),
      export_enabled: diskFeatures(ctx),
      import_enabled: diskFeatures(ctx),
    },
  };
}

/** Routes that never carry the tenant prefix: /v1/config and /v1/me. */
export function rootRoutes(app: FastifyInstance, ctx: RestContext): void {
  app.get('/config', async () => serverConfig(ctx));
  app.get('/me', async () => ({
    sub: ctx.opts.apiKey ? 'local-api-key' : 'local-anonymous',
    principal_type: 'service_account' as const,
    display_name: 'boxlite serve',
    scopes: ['box:read', 'box:write', 'box:exec', 'box:delete', 'me:read'],
    path_prefix: ctx.opts.pathPrefix || null,
    expires_at: null,
  }));
}

/** GET {scope}/metrics: the runtime's counters; running boxes counted from the home, stops by this server. */
export function metricsRoutes(app: FastifyInstance, ctx: RestContext): void {
  app.get('/metrics', async () => {
    const m = await ctx.runtime.metrics();
    const running = (await ctx.runtime.listInfo()).filter((i) => i.state.running).length;
    const out: z.infer<typeof S.RuntimeMetrics> = {
      boxes_created_total: m.boxesCreatedTotal,
      boxes_failed_total: m.boxesFailedTotal,
      boxes_stopped_total: ctx.boxes.stoppedTotal,
      num_running_boxes: running,
      total_commands_executed: m.totalCommandsExecuted,
      total_exec_errors: m.totalExecErrors,
    };
    return out;
  });
}
