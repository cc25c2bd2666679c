// Managed volumes over REST (UPSTREAM-OAS): POST/GET {scope}/volumes, GET/DELETE {scope}/volumes/{id}
// (?force=true), over the runtime's VolumeHandle. A runtime without one answers 400 unsupported.
import type { FastifyInstance } from 'fastify';
import { z } from 'zod';
import type { VolumeInfo } from '../../runtime/handles.js';
import type { RestContext } from './app.js';
import { parse } from './boxes.js';
import { unsupported } from './errors.js';

const CreateVolumeRequest = z.object({ name: z.string().regex(/^[a-zA-Z0-9][a-zA-Z0-9_.-]+$/).max(128).optional() }).strict();
const RemoveQuery = z.object({ force: z.enum(['true', 'false']).optional() }).strict();

/** `Volume` of UPSTREAM-OAS plus the 0.10 client's `size_bytes`: a local volume is ready once it exists. */
export function volumeJson(v: VolumeInfo): Record<string, unknown> {
  return {
    id: v.id,
    name: v.name,
    state: 'ready',
    created_at: v.createdAt,
    updated_at: v.createdAt,
    ...(v.sizeBytes !== undefined ? { size_bytes: v.sizeBytes } : {}),
  };
}

export function volumeRoutes(app: FastifyInstance, ctx: RestContext): void {
  const volumes = () => {
    const v = ctx.runtime.volumes;
    if (!v) throw unsupported('managed volumes not implemented by this server yet (its runtime has none)');
    return v;
  };
  app.post('/volumes', async (req, reply) => {
    const handle = volumes();
    const { name } = parse(CreateVolumeRequest, req.body ?? {});
    return reply.code(201).send(volumeJson(await handle.create(name)));
  });
  app.get('/volumes', async () => ({ volumes: (await volumes().list()).map(volumeJson) }));
  app.get<{ Params: { volume_id: string } }>('/volumes/:volume_id', async (req) => volumeJson(await volumes().get(req.params.volume_id)));
  app.delete<{ Params: { volume_id: string } }>('/volumes/:volume_id', async (req, reply) => {
    const q = parse(RemoveQuery, req.query, 'query');
    await volumes().remove(req.params.volume_id, q.force === 'true');
    return reply.code(204).send();
  });
}
