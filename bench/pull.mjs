#!/usr/bin/env node
// Benchmark (not a test): pulling an image from a registry and turning it into
// a root filesystem, BoxLite vs the stock tools, on the same machine, same run,
// same local registry (Debian's docker-registry on 127.0.0.1, plain http).
//
//   baseline  skopeo copy docker://… oci:DIR   +  umoci unpack --rootless (a directory tree)
//   boxlite   runtime.images.pull(ref)         +  runtime.create({ image: ref }) (builds the
//                                                 ext4 base + the box's qcow2 overlay; no VM boot)
//
// Cold = empty destination (fresh BoxLite home / fresh OCI dir); warm = the same
// again with everything cached (BoxLite: blobs and the ext4 base; skopeo: the OCI
// dir's blobs, umoci still unpacks into a fresh bundle).
//
// Usage: node bench/pull.mjs [--runs N] [--image OCI_LAYOUT_DIR] [--baseline-only]
//   default image: .cache/images/python (built by scripts/setup.sh, or here if missing)
//   BOXLITE_DIST=DIR measures another build of the package than dist/
//   needs: npm run build, docker-registry, skopeo, umoci
import { execFile } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { promisify } from 'node:util';

const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
const execFileP = promisify(execFile);

const arg = (name, dflt) => {
  const i = process.argv.indexOf(name);
  return i > 0 ? process.argv[i + 1] : dflt;
};
const RUNS = Number(arg('--runs', 3));
const IMAGE = path.resolve(arg('--image', path.join(ROOT, '.cache', 'images', 'python')));
const BASELINE_ONLY = process.argv.includes('--baseline-only');
// The built package to measure (default dist/; BOXLITE_DIST=DIR for another build).
const DIST = path.resolve(process.env.BOXLITE_DIST ?? path.join(ROOT, 'dist'));

const median = (xs) => {
  const s = [...xs].sort((a, b) => a - b);
  return s.length % 2 ? s[(s.length - 1) / 2] : (s[s.length / 2 - 1] + s[s.length / 2]) / 2;
};
const fmt = (ms) => `${ms.toFixed(ms < 10 ? 1 : 0)} ms`.padStart(9);
const ratio = (a, b) => `${(a / b).toPrecision(2)}x`;
const mib = (n) => `${(n / 1048576).toFixed(1)} MiB`;
const run = (cmd, args) =>
  execFileP(cmd, args, { maxBuffer: 64 << 20, env: { ...process.env, REGISTRY_AUTH_FILE: path.join(os.tmpdir(), 'boxlite-bench-no-auth.json') } }).catch((err) => {
    throw new Error(`${cmd} ${args.join(' ')} failed: ${err.stderr || err.message}`);
  });

/** The TypeScript registry fixture, bundled by esbuild (a vitest dependency) into .cache/bench/. */
async function loadRegistryFixture() {
  const { build } = await import('esbuild');
  const outfile = path.join(ROOT, '.cache', 'bench', 'registry-fixture.mjs');
  await build({
    entryPoints: [path.join(ROOT, 'test', 'fixtures', 'registry.ts')],
    outfile,
    bundle: true,
    platform: 'node',
    format: 'esm',
    target: 'node20',
    packages: 'external',
    logLevel: 'error',
  });
  return import(pathToFileURL(outfile).href);
}

function duSize(dir) {
  let total = 0;
  const walk = (d) => {
    for (const e of fs.readdirSync(d, { withFileTypes: true })) {
      const p = path.join(d, e.name);
      if (e.isDirectory()) walk(p);
      else if (e.isFile()) total += fs.statSync(p).size;
    }
  };
  walk(dir);
  return total;
}

function imageFacts(layout) {
  const index = JSON.parse(fs.readFileSync(path.join(layout, 'index.json'), 'utf8'));
  const blob = (d) => path.join(layout, 'blobs', 'sha256', d.slice(7));
  const manifest = JSON.parse(fs.readFileSync(blob(index.manifests[0].digest), 'utf8'));
  return {
    manifestDigest: index.manifests[0].digest,
    layers: manifest.layers.length,
    compressed: manifest.layers.reduce((n, l) => n + l.size, 0),
  };
}

async function main() {
  if (!fs.existsSync(path.join(IMAGE, 'index.json'))) {
    if (IMAGE !== path.join(ROOT, '.cache', 'images', 'python')) throw new Error(`${IMAGE} is not an OCI layout`);
    console.log('building .cache/images/python (scripts/make-test-image.mjs --variant python)…');
    await run(process.execPath, [path.join(ROOT, 'scripts', 'make-test-image.mjs'), IMAGE, '--variant', 'python']);
  }
  const facts = imageFacts(IMAGE);

  let JsBoxlite;
  if (!BASELINE_ONLY) {
    try {
      ({ JsBoxlite } = await import(pathToFileURL(path.join(DIST, 'index.js')).href));
    } catch (err) {
      console.log(`${path.join(DIST, 'index.js')} not loadable (${err.message}): baseline only`);
    }
  }

  const { startRegistry } = await loadRegistryFixture();
  const scratch = fs.mkdtempSync(path.join(os.tmpdir(), 'boxlite-bench-pull-'));
  const reg = await startRegistry();
  try {
    await reg.push(IMAGE, 'python:3.11');
    const ref = `${reg.host}/python:3.11`;
    console.log(`image: ${ref}  ${facts.layers} layers, ${mib(facts.compressed)} compressed, manifest ${facts.manifestDigest}`);
    console.log(`runs: ${RUNS} (medians)\n`);

    // ---------- baseline: skopeo + umoci ----------
    const base = { pullCold: [], unpackCold: [], pullWarm: [], unpackWarm: [] };
    let unpackedBytes = 0;
    for (let i = 0; i < RUNS; i++) {
      const dir = path.join(scratch, `oci-${i}`);
      const copy = () => run('skopeo', ['--insecure-policy', 'copy', '--quiet', '--src-tls-verify=false', `docker://${ref}`, `oci:${dir}:3.11`]);
      const unpack = async (bundle) => {
        await run('umoci', ['unpack', '--rootless', '--image', `${dir}:3.11`, bundle]);
        unpackedBytes = duSize(path.join(bundle, 'rootfs'));
        fs.rmSync(bundle, { recursive: true, force: true });
      };
      let t = performance.now();
      await copy();
      base.pullCold.push(performance.now() - t);
      t = performance.now();
      await unpack(path.join(scratch, `bundle-${i}-cold`));
      base.unpackCold.push(performance.now() - t);
      t = performance.now();
      await copy();
      base.pullWarm.push(performance.now() - t);
      t = performance.now();
      await unpack(path.join(scratch, `bundle-${i}-warm`));
      base.unpackWarm.push(performance.now() - t);
      fs.rmSync(dir, { recursive: true, force: true });
    }
    const baseCold = median(base.pullCold) + median(base.unpackCold);
    const baseWarm = median(base.pullWarm) + median(base.unpackWarm);
    console.log(`unpacked rootfs: ${mib(unpackedBytes)} of regular files`);
    console.log('baseline (skopeo copy + umoci unpack --rootless)');
    console.log(`  cold  pull ${fmt(median(base.pullCold))}  unpack ${fmt(median(base.unpackCold))}  total ${fmt(baseCold)}`);
    console.log(`  warm  pull ${fmt(median(base.pullWarm))}  unpack ${fmt(median(base.unpackWarm))}  total ${fmt(baseWarm)}`);

    // ---------- BoxLite: images.pull + create (ext4) ----------
    if (!JsBoxlite) return;
    const probe = new JsBoxlite({ homeDir: path.join(scratch, 'probe-home'), imageRegistries: [{ host: reg.host, transport: 'http' }] });
    if (typeof probe.images?.pull !== 'function') {
      console.log('\nboxlite: runtime.images.pull is not available in dist/ (npm run build?): baseline only');
      return;
    }
    const bl = { pullCold: [], createCold: [], pullWarm: [], createWarm: [] };
    for (let i = 0; i < RUNS; i++) {
      const homeDir = path.join(scratch, `home-${i}`);
      const rt = new JsBoxlite({ homeDir, imageRegistries: [{ host: reg.host, transport: 'http' }] });
      try {
        for (const phase of ['Cold', 'Warm']) {
          let t = performance.now();
          const pulled = await rt.images.pull(ref);
          bl[`pull${phase}`].push(performance.now() - t);
          if (i === 0 && phase === 'Cold') console.log(`\nboxlite pulled: ${JSON.stringify(pulled)}`);
          t = performance.now();
          const box = await rt.create({ image: ref });
          bl[`create${phase}`].push(performance.now() - t);
          await rt.remove(box.id);
        }
      } finally {
        await rt.shutdown?.();
        fs.rmSync(homeDir, { recursive: true, force: true });
      }
    }
    const blCold = median(bl.pullCold) + median(bl.createCold);
    const blWarm = median(bl.pullWarm) + median(bl.createWarm);
    console.log('boxlite (images.pull + create: ext4 base + qcow2 overlay)');
    console.log(`  cold  pull ${fmt(median(bl.pullCold))}  create ${fmt(median(bl.createCold))}  total ${fmt(blCold)}`);
    console.log(`  warm  pull ${fmt(median(bl.pullWarm))}  create ${fmt(median(bl.createWarm))}  total ${fmt(blWarm)}`);
    console.log('\nratios boxlite / baseline (lower is faster)');
    console.log(`  pull   cold ${ratio(median(bl.pullCold), median(base.pullCold))}  warm ${ratio(median(bl.pullWarm), median(base.pullWarm))}`);
    console.log(`  unpack cold ${ratio(median(bl.createCold), median(base.unpackCold))}  warm ${ratio(median(bl.createWarm), median(base.unpackWarm))}  (ext4 build vs directory unpack)`);
    console.log(`  total  cold ${ratio(blCold, baseCold)}  warm ${ratio(blWarm, baseWarm)}`);
  } finally {
    await reg.stop();
    fs.rmSync(scratch, { recursive: true, force: true });
  }
}

main().then(
  () => process.exit(0),
  (err) => {
    console.error(`bench/pull: ${err.stack ?? err.message}`);
    process.exit(1);
  },
);
