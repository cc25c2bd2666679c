// Snapshots, clone, export and import over REST (rest-contract §2.7, the routes of the 0.10
// client): one SDK call each. Export streams the archive the SDK wrote to a temp directory
// (deleted once sent); import streams the body to a temp file (bounded) and hands it to
// runtime.importBox, which checks it as untrusted. A runtime without these answers 400 unsupported.
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { pipeline } from 'node:stream/promises';
import { Transform, type Readable } from 'node:stream';
import type { FastifyInstance } from 'fastify';
import { z } from 'zod';
import { NotFoundError } from '../../errors/index.js';
import type { Box } from '../../index.js';
import type { SnapshotInfo } from '../../runtime/handles.js';
import { importLimits } from '../../runtime/archive.js';
import * as S from '../schemas.js';
import type { RestBox, RestContext } from './app.js';
import { boxJson, parse } from './boxes.js';
import { invalidArgument, payloadTooLarge, unsupported } from './errors.js';

/** The parts of a box these routes use; the SDK's Box has them (a test fake may not). */
type DiskBox = RestBox & Partial<Pick<Box, 'snapshot' | 'cloneBox' | 'export'>>;

const CreateSnapshotRequest = z.object({ name: z.string().min(1).max(128) }).strict();
const CloneBoxRequest = z.object({ name: z.string().min(1).max(128).optional() }).strict();
const ImportQuery = z.object({ name: z.string().min(1).max(128).optional() }).strict();

type Params = { box_id: string };
type NameParams = Params & { name: string };

export function snapshotJson(s: SnapshotInfo): z.infer<typeof S.Snapshot> {
  return { id: s.id, box_id: s.boxId, name: s.name, created_at: s.createdAt, container_disk_bytes: s.containerDiskBytes, size_bytes: s.sizeBytes };
}

/** True when the runtime behind the server has these features (what /v1/config advertises). */
export function diskFeatures(ctx: RestContext): boolean {
  return typeof (ctx.runtime as { importBox?: unknown }).importBox === 'function';
}

const FLAG = { snapshots: 'snapshots_enabled', clone: 'clone_enabled', export: 'export_enabled', import: 'import_enabled' } as const;

function refused(what: keyof typeof FLAG) {
  return unsupported(`${what} not implemented by this server yet (GET /v1/config advertises ${FLAG[what]}: false)`);
}

export function snapshotRoutes(scope: FastifyInstance, ctx: RestContext): void {
  void scope.register(async (app) => snapshotRoutesIn(app, ctx));
}

function snapshotRoutesIn(app: FastifyInstance, ctx: RestContext): void {
  const root = ctx.opts.rootfsRoot;
  const diskBox = async (id: string, what: 'snapshot' | 'cloneBox' | 'export'): Promise<DiskBox & Required<Pick<Box, typeof what>>> => {
    const box = (await ctx.boxes.handle(id)) as DiskBox;
    if (!box[what] || !diskFeatures(ctx)) throw refused(what === 'snapshot' ? 'snapshots' : what === 'cloneBox' ? 'clone' : 'export');
    return box as DiskBox & Required<Pick<Box, typeof what>>;
  };

  app.post<{ Params: Params }>('/boxes/:box_id/snapshots', async (req, reply) => {
    const { name } = parse(CreateSnapshotRequest, req.body ?? {});
    const box = await diskBox(req.params.box_id, 'snapshot');
    return reply.code(201).send(snapshotJson(await box.snapshot.create(name)));
  });
  app.get<{ Params: Params }>('/boxes/:box_id/snapshots', async (req) => {
    const box = await diskBox(req.params.box_id, 'snapshot');
    return { snapshots: (await box.snapshot.list()).map(snapshotJson) };
  });
  app.get<{ Params: NameParams }>('/boxes/:box_id/snapshots/:name', async (req) => {
    const box = await diskBox(req.params.box_id, 'snapshot');
    const s = await box.snapshot.get(req.params.name);
    if (!s) throw new NotFoundError('snapshot', req.params.name);
    return snapshotJson(s);
  });
  app.delete<{ Params: NameParams }>('/boxes/:box_id/snapshots/:name', async (req, reply) => {
    await (await diskBox(req.params.box_id, 'snapshot')).snapshot.remove(req.params.name);
    return reply.code(204).send();
  });
  app.post<{ Params: NameParams }>('/boxes/:box_id/snapshots/:name/restore', async (req, reply) => {
    await (await diskBox(req.params.box_id, 'snapshot')).snapshot.restore(req.params.name);
    return reply.code(204).send();
  });

  app.post<{ Params: Params }>('/boxes/:box_id/clone', async (req, reply) => {
    const { name } = parse(CloneBoxRequest, req.body ?? {});
    const clone = await (await diskBox(req.params.box_id, 'cloneBox')).cloneBox(null, name ?? null);
    ctx.boxes.remember(clone);
    return reply.code(201).send(boxJson(await clone.info(), root));
  });

  app.post<{ Params: Params }>('/boxes/:box_id/export', async (req, reply) => {
    const box = await diskBox(req.params.box_id, 'export');
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'boxlite-rest-export-'));
    try {
      const file = await box.export(path.join(dir, 'box.boxlite'));
      const stream = fs.createReadStream(file);
      stream.once('close', () => fs.rmSync(dir, { recursive: true, force: true }));
      return reply.header('content-type', 'application/octet-stream').header('content-length', fs.statSync(file).size).send(stream);
    } catch (err) {
      fs.rmSync(dir, { recursive: true, force: true });
      throw err;
    }
  });

  // import's body is an archive: a stream in this scope, written to a temp file as it arrives.
  app.addContentTypeParser('*', (_req, payload, done) => done(null, payload));
  app.post<{ Querystring: Record<string, string> }>('/boxes/import', async (req, reply) => {
    const { name } = parse(ImportQuery, req.query, 'query');
    const runtime = ctx.runtime as { importBox?: (p: string, n?: string | null) => Promise<RestBox> };
    const body = req.body as Readable | undefined;
    const abandon = () => {
      if (body && !body.readableEnded) {
        reply.header('connection', 'close');
        reply.raw.once('finish', () => req.raw.destroy());
      }
    };
    if (!runtime.importBox) {
      abandon();
      throw refused('import');
    }
    if (!body || typeof body.pipe !== 'function') throw invalidArgument('body: expected the .boxlite archive as application/octet-stream');
    const max = importLimits().archiveBytes;
    const declared = Number(req.headers['content-length']);
    if (Number.isFinite(declared) && declared > max) {
      abandon();
      throw payloadTooLarge(`payload too large: ${declared} bytes exceeds the import limit of ${max} bytes`);
    }
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'boxlite-rest-import-'));
    try {
      const file = path.join(dir, 'import.boxlite');
      let n = 0;
      const bound = new Transform({
        transform(chunk: Buffer, _enc, cb) {
          n += chunk.length;
          cb(n > max ? payloadTooLarge(`payload too large: more than the import limit of ${max} bytes`) : null, chunk);
        },
      });
      try {
        await pipeline(body, bound, fs.createWriteStream(file, { flags: 'wx', mode: 0o600 }));
      } catch (err) {
        abandon();
        throw err;
      }
      const box = await runtime.importBox(file, name ?? null);
      ctx.boxes.remember(box);
      return reply.code(201).send(boxJson(await box.info(), root));
    } finally {
      fs.rmSync(dir, { recursive: true, force: true });
    }
  });
}
