#!/usr/bin/env node
// Captures what the reference's published 0.10 client (@boxlite-ai/boxlite with its native
// binding; in REST mode it needs no VM) sends for every scenario of
// test/fixtures/rest-capture-server.ts, and saves it as test/fixtures/rest-transcript.json.
// Re-runnable (scripts/setup.sh installs the client into .cache/ref-client):
//   node scripts/capture-rest-transcript.mjs [--ref DIR] [--only scenario,…]
// The fixture server is TypeScript, so the script re-runs itself under vite-node.
import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
const argv = process.argv.slice(2);
const opt = (name, fallback) => {
  const i = argv.indexOf(name);
  return i >= 0 ? argv[i + 1] : fallback;
};

if (!process.env.BOXLITE_CAPTURE_CHILD) {
  const r = spawnSync(path.join(root, 'node_modules/.bin/vite-node'), [fileURLToPath(import.meta.url), '--', ...argv], {
    stdio: 'inherit',
    cwd: root,
    env: { ...process.env, BOXLITE_CAPTURE_CHILD: '1' },
  });
  process.exit(r.status ?? 1);
}

const refDir = opt('--ref', process.env.BOXLITE_REF_DIR ?? path.join(import.meta.dirname, '..', '.cache', 'ref-client'));
const only = opt('--only', '')?.split(',').filter(Boolean) ?? [];
const refPkg = path.join(refDir, 'node_modules/@boxlite-ai/boxlite');
const { version } = JSON.parse(fs.readFileSync(path.join(refPkg, 'package.json'), 'utf8'));
const sdk = await import(pathToFileURL(path.join(refPkg, 'dist/index.js')).href);
const { CaptureServer, SCENARIOS, SCENARIO_CAPABILITIES, normalize } = await import(pathToFileURL(path.join(root, 'test/fixtures/rest-capture-server.ts')).href);

const server = new CaptureServer({ apiKey: 'test-key' });
const url = await server.listen();
const out = path.join(root, 'test/fixtures/rest-transcript.json');
const previous = fs.existsSync(out) ? JSON.parse(fs.readFileSync(out, 'utf8')) : { scenarios: {} };
const scenarios = only.length ? { ...previous.scenarios } : {};
for (const [name, run] of Object.entries(SCENARIOS)) {
  if (only.length && !only.includes(name)) continue;
  server.reset(SCENARIO_CAPABILITIES[name]);
  const notes = {};
  const scratch = fs.mkdtempSync(path.join(os.tmpdir(), 'boxlite-capture-'));
  const t0 = Date.now();
  try {
    await Promise.race([
      run({ sdk, url, scratch, note: (k, v) => (notes[k] = v ?? null) }),
      new Promise((_, rej) => setTimeout(() => rej(new Error('scenario timed out after 90 s')), 90_000)),
    ]);
  } catch (err) {
    notes.scenarioError = String(err?.message ?? err);
  }
  await server.settle();
  fs.rmSync(scratch, { recursive: true, force: true });
  scenarios[name] = { notes, requests: normalize(server.log) };
  console.log(`${name}: ${server.log.length} requests, ${Date.now() - t0} ms${notes.scenarioError ? ` (error: ${notes.scenarioError})` : ''}`);
}
await server.close();
fs.writeFileSync(
  out,
  JSON.stringify({ client: `@boxlite-ai/boxlite@${version}`, capturedAt: new Date().toISOString().slice(0, 10), scenarios }, null, 2) + '\n',
);
console.log(`wrote ${path.relative(root, out)}`);
process.exit(0);
