// Images: POST {scope}/images/pull, GET {scope}/images (paging on request), GET/HEAD {scope}/images/{id}
// where id is the config digest (or, as an extension, a stored reference).
import type { FastifyInstance } from 'fastify';
import type { z } from 'zod';
import { NotFoundError } from '../../errors/index.js';
import type { ImageInfo } from '../../index.js';
import * as S from '../schemas.js';
import type { RestContext } from './app.js';
import { pageOf, parse } from './boxes.js';

export function imageJson(i: ImageInfo): z.infer<typeof S.ImageInfo> {
  return {
    reference: i.reference,
    repository: i.repository,
    tag: i.tag,
    id: i.id,
    cached_at: i.cachedAt,
    ...(i.sizeBytes !== undefined ? { size_bytes: i.sizeBytes } : {}),
  };
}

export function imageRoutes(app: FastifyInstance, ctx: RestContext): void {
  const images = ctx.runtime.images;
  const find = async (id: string) => {
    const all = await images.list();
    const hit = all.find((i) => i.id === id) ?? all.find((i) => i.reference === id);
    if (!hit) throw new NotFoundError('image', id);
    return hit;
  };

  app.post('/images/pull', async (req) => {
    const { reference } = parse(S.PullImageRequest, req.body ?? {});
    const pulled = await images.pull(reference);
    const all = await images.list();
    const info = all.find((i) => i.reference === pulled.resolvedReference) ?? all.find((i) => i.id === pulled.configDigest);
    if (!info) throw new NotFoundError('image', pulled.resolvedReference);
    return imageJson(info);
  });

  app.get('/images', async (req) => {
    const q = parse(S.ListQuery.omit({ status: true }), req.query, 'query');
    const { page, next } = pageOf(await images.list(), q.pageSize, q.pageToken);
    return { images: page.map(imageJson), ...(next ? { next_page_token: next } : {}) };
  });

  app.get<{ Params: { image_id: string } }>('/images/:image_id', async (req) => imageJson(await find(req.params.image_id)));
  app.head<{ Params: { image_id: string } }>('/images/:image_id', async (req, reply) => {
    await find(req.params.image_id);
    return reply.code(204).send();
  });
}
