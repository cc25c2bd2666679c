// The background template build (faststart.ts runNextBuild): a process of its own, so the SDK's
// process neither waits for it nor is kept alive by it. Reads one BuildJob as JSON on stdin,
// makes the template (under the key's lock, published by rename) and exits: 0 when the
// template is there (made now or by another process), 1 otherwise.
import { ensureTemplate, type BuildJob } from './faststart.js';

const chunks: Buffer[] = [];
for await (const c of process.stdin) chunks.push(c as Buffer);
try {
  const job = JSON.parse(Buffer.concat(chunks).toString('utf8')) as BuildJob;
  process.env.BOXLITE_LOG = process.env.BOXLITE_LOG || 'debug';
  const t0 = performance.now();
  const ref = await ensureTemplate({ ...job, build: true });
  process.stderr.write(`${new Date().toISOString()} template ${ref ? `${ref.key} ready` : 'not made (ineligible, or another process is making it)'} in ${Math.round(performance.now() - t0)} ms\n`);
  process.exit(ref ? 0 : 1);
} catch (err) {
  process.stderr.write(`${new Date().toISOString()} template build failed: ${(err as Error).message}\n`);
  process.exit(1);
}
