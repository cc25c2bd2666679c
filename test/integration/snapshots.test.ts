import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterAll, describe, expect, inject, it } from 'vitest';
import { JsBoxlite, type Box } from '../../dist/index.js';
import { boxlite, run, scratchHome } from './helpers.js';

// Snapshots, clones and archives of real VMs (busybox, no network: nothing here needs it).
// Every test removes its boxes; a box's disk is what the guest wrote, read back by the guest.

const runtime = new JsBoxlite({ homeDir: inject('home') });
const made: Array<[JsBoxlite, string]> = [];
const outDir = fs.mkdtempSync(path.join(os.tmpdir(), 'boxlite-snap-out-'));

afterAll(async () => {
  for (const [rt, id] of made) await rt.remove(id, true).catch(() => undefined);
  fs.rmSync(outDir, { recursive: true, force: true });
});

async function newBox(rt = runtime, name?: string): Promise<Box> {
  const box = await rt.create({ rootfsPath: inject('image'), network: { outbound: { mode: 'disabled' } }, memoryMib: 256 }, name);
  made.push([rt, box.id]);
  return box;
}

const track = (rt: JsBoxlite, box: Box) => (made.push([rt, box.id]), box);

async function sh(box: Box, script: string): Promise<string> {
  const r = await run(box, 'sh', ['-c', script]);
  expect(r.exitCode, `${script}: ${r.stderr}`).toBe(0);
  return r.stdout;
}

/** A fresh handle (stop() spends the old one), booted by its first exec. */
async function handle(rt: JsBoxlite, id: string): Promise<Box> {
  const box = await rt.get(id);
  expect(box).not.toBeNull();
  return box!;
}

describe('box.snapshot on a real VM', () => {
  it('create → write → snapshot → write → restore gives back the snapshot content', async () => {
    const box = await newBox();
    await sh(box, 'echo one > /root/state; sync');
    // Restore refuses on a running box (snapshot/clone of a running box: snapshots-live.test.ts).
    await expect(box.snapshot.restore('none')).rejects.toMatchObject({ code: 'InvalidState', message: expect.stringMatching(/^invalid state: .*running/) });
    await box.stop();
    const t0 = performance.now();
    const s1 = await box.snapshot.create('s1');
    console.log(`[timing] snapshot.create of a stopped box: ${(performance.now() - t0).toFixed(0)} ms (${s1.sizeBytes} bytes)`);
    expect(s1).toMatchObject({ name: 's1', boxId: box.id });
    await expect(box.snapshot.create('s1')).rejects.toMatchObject({ code: 'AlreadyExists' });

    const second = await handle(runtime, box.id);
    expect(await sh(second, 'cat /root/state')).toBe('one\n');
    await sh(second, 'echo two > /root/state; echo new > /root/added; sync');
    await expect(second.snapshot.restore('s1')).rejects.toMatchObject({ code: 'InvalidState' });
    await second.stop();
    const t1 = performance.now();
    await second.snapshot.restore('s1');
    console.log(`[timing] snapshot.restore: ${(performance.now() - t1).toFixed(0)} ms`);

    const third = await handle(runtime, box.id);
    expect(await sh(third, 'cat /root/state; ls /root')).toBe('one\nstate\n');
    await third.stop();
    expect((await third.snapshot.list()).map((s) => s.name)).toEqual(['s1']);
    await third.snapshot.remove('s1');
    expect(await third.snapshot.get('s1')).toBeNull();
    // The disk still sits on the removed snapshot's base: it keeps booting with its content.
    expect(await sh(await handle(runtime, box.id), 'cat /root/state')).toBe('one\n');
    await runtime.remove(box.id, true);
  });
});

describe('cloneBox on a real VM', () => {
  it('isolates the clone and its source both ways, and the clone outlives the source', async () => {
    const src = await newBox();
    await sh(src, 'echo shared > /root/shared; sync');
    await src.stop();
    const clone = track(runtime, await src.cloneBox(null, `clone-${Date.now()}`));
    expect(clone.id).not.toBe(src.id);
    await sh(clone, 'echo from-clone > /root/c; sync');
    const again = await handle(runtime, src.id);
    await sh(again, 'echo from-src > /root/s; sync');
    expect(await sh(again, 'cat /root/shared; ls /root')).toBe('shared\ns\nshared\n');
    expect(await sh(clone, 'cat /root/shared; ls /root')).toBe('shared\nc\nshared\n');
    await again.stop();
    await clone.stop();
    await runtime.remove(src.id);
    const later = await handle(runtime, clone.id);
    expect(await sh(later, 'cat /root/c /root/shared; test ! -e /root/s && echo no-s')).toBe('from-clone\nshared\nno-s\n');
    await runtime.remove(clone.id, true);
  });
});

describe('export → import on a real VM', () => {
  it('gives back the same files on a fresh home (sha256 of a file written in the box)', async () => {
    const box = await newBox(runtime, `exp-${Date.now()}`);
    const sum = await sh(box, 'head -c 1048576 /dev/urandom > /root/blob; sha256sum /root/blob; sync');
    await box.stop();
    const t0 = performance.now();
    const file = await box.export(outDir);
    console.log(`[timing] export: ${(performance.now() - t0).toFixed(0)} ms, ${fs.statSync(file).size} bytes`);
    expect(path.dirname(file)).toBe(outDir);
    expect(file.endsWith('.boxlite')).toBe(true);

    const fresh = new JsBoxlite({ homeDir: scratchHome('boxlite-import-') });
    const t1 = performance.now();
    const imported = track(fresh, await fresh.importBox(file, 'imported'));
    console.log(`[timing] import: ${(performance.now() - t1).toFixed(0)} ms`);
    expect(imported.name).toBe('imported');
    expect(await sh(imported, 'sha256sum /root/blob')).toBe(sum);
    await fresh.remove(imported.id, true);
    await runtime.remove(box.id, true);
    await fresh.shutdown();
  });

  it('refuses a truncated archive with a coded error and leaves nothing', async () => {
    const box = await newBox();
    const file = await box.export(path.join(outDir, 'whole.boxlite'));
    const cut = path.join(outDir, 'cut.boxlite');
    fs.writeFileSync(cut, fs.readFileSync(file).subarray(0, Math.floor(fs.statSync(file).size * 0.6)));
    const home = scratchHome('boxlite-import-bad-');
    const fresh = new JsBoxlite({ homeDir: home });
    await expect(fresh.importBox(cut)).rejects.toMatchObject({ code: 'InvalidArgument', message: expect.stringMatching(/^invalid argument: not a valid \.boxlite archive/) });
    expect(await fresh.listInfo()).toEqual([]);
    expect(fs.readdirSync(path.join(home, 'tmp'))).toEqual([]);
    await runtime.remove(box.id, true);
  });
});

describe('CLI', () => {
  it('snapshot create|ls|rm|restore, clone, export and import', async () => {
    const box = await newBox();
    const id = box.id;
    const created = await boxlite(['snapshot', 'create', id, 'cli-snap']);
    expect(created.code, created.stderr).toBe(0);
    const ls = await boxlite(['snapshot', 'ls', id, '--format', 'json']);
    expect(JSON.parse(ls.stdout).map((s: { name: string }) => s.name)).toEqual(['cli-snap']);
    expect((await boxlite(['snapshot', 'restore', id, 'cli-snap'])).code).toBe(0);
    const dup = await boxlite(['snapshot', 'create', id, 'cli-snap']);
    expect(dup.code).not.toBe(0);
    expect(dup.stderr).toMatch(/already exists: snapshot "cli-snap"/);
    const cloned = await boxlite(['clone', id, '--name', `cli-clone-${Date.now()}`]);
    expect(cloned.code, cloned.stderr).toBe(0);
    made.push([runtime, cloned.stdout.trim()]);
    const exported = await boxlite(['export', id, outDir]);
    expect(exported.code, exported.stderr).toBe(0);
    const archive = exported.stdout.trim();
    expect(fs.existsSync(archive)).toBe(true);
    const imported = await boxlite(['import', archive, '--name', `cli-imported-${Date.now()}`]);
    expect(imported.code, imported.stderr).toBe(0);
    made.push([runtime, imported.stdout.trim()]);
    expect((await boxlite(['snapshot', 'rm', id, 'cli-snap'])).code).toBe(0);
    expect(JSON.parse((await boxlite(['snapshot', 'ls', id, '--format', 'json'])).stdout)).toEqual([]);
    for (const other of [cloned.stdout.trim(), imported.stdout.trim(), id]) await runtime.remove(other, true);
  });
});

describe('kill -9 during a snapshot or an export', () => {
  // No VM: the disk operations of a stopped box are host-side. A child process runs them on the
  // suite's home and is SIGKILLed at staggered moments; afterwards every listed snapshot is
  // whole, the disk still holds what was written, no file appears under the export's name
  // half-written, and the box stays usable and removable.
  const script = (id: string, op: string) => `
    import { JsBoxlite } from ${JSON.stringify(path.join(inject('root'), 'dist', 'index.js'))};
    const rt = new JsBoxlite({ homeDir: ${JSON.stringify(inject('home'))} });
    const box = await rt.get(${JSON.stringify(id)});
    process.stdout.write('go\\n');
    ${op}
    process.stdout.write('done\\n');
  `;

  async function runKilled(id: string, op: string, afterMs: number): Promise<string> {
    const { spawn } = await import('node:child_process');
    const child = spawn(process.execPath, ['--input-type=module', '-e', script(id, op)], { stdio: ['ignore', 'pipe', 'pipe'], env: { ...process.env } });
    let out = '';
    child.stdout.on('data', (d) => (out += d));
    await new Promise<void>((resolve) => {
      const onData = () => {
        if (out.includes('go')) {
          child.stdout.off('data', onData);
          setTimeout(() => child.kill('SIGKILL'), afterMs);
          resolve();
        }
      };
      child.stdout.on('data', onData);
    });
    await new Promise((r) => child.once('close', r));
    return out;
  }

  it('never leaves a half-made snapshot or a half-written archive', async () => {
    const { execFileSync } = await import('node:child_process');
    const box = await newBox();
    const disk = path.join(inject('home'), 'boxes', box.id, 'disk.qcow2');
    // 8 MiB of data in the disk, so the export takes long enough to be interrupted.
    execFileSync('qemu-io', ['-f', 'qcow2', '-c', 'write -P 0x5a 0 8M', disk], { stdio: 'pipe' });
    let finished = 0;
    for (const [i, ms] of [0, 5, 15, 30, 60, 120, 250].entries()) {
      const out = await runKilled(box.id, `await box.snapshot.create('k${i}');`, ms);
      if (out.includes('done')) finished++;
      for (const s of await box.snapshot.list()) expect(s.sizeBytes, s.name).toBeGreaterThan(0);
      execFileSync('qemu-img', ['check', '-q', disk], { stdio: 'pipe' });
      execFileSync('qemu-io', ['-r', '-f', 'qcow2', '-c', 'read -P 0x5a 0 8M', disk], { stdio: 'pipe' });
    }
    console.log(`[kill -9] ${finished} of 7 snapshot runs finished before the kill`);
    // Every snapshot listed restores (the next operation recovered whatever a kill left).
    for (const s of await box.snapshot.list()) {
      await box.snapshot.restore(s.name);
      execFileSync('qemu-io', ['-r', '-f', 'qcow2', '-c', 'read -P 0x5a 0 8M', disk], { stdio: 'pipe' });
    }
    // Every base left is a whole, read-only qcow2 (a kill never leaves a torn one behind a name).
    for (const n of fs.readdirSync(path.join(inject('home'), 'bases')).filter((x) => x.endsWith('.qcow2'))) {
      const file = path.join(inject('home'), 'bases', n);
      execFileSync('qemu-img', ['check', '-q', '-U', file], { stdio: 'pipe' });
    }

    const target = path.join(outDir, 'killed.boxlite');
    for (const ms of [10, 40, 80]) {
      await runKilled(box.id, `await box.export(${JSON.stringify(target)});`, ms);
      if (fs.existsSync(target)) {
        // Only a complete archive is ever under the final name: it imports.
        const fresh = new JsBoxlite({ homeDir: scratchHome('boxlite-killed-') });
        const back = await fresh.importBox(target);
        await fresh.remove(back.id);
        await fresh.shutdown();
        fs.rmSync(target);
      }
    }
    // A later export sweeps what the killed ones left and succeeds; the box is still removable.
    expect(await box.export(target)).toBe(target);
    expect(fs.readdirSync(outDir).filter((n) => n.endsWith('.partial'))).toEqual([]);
    await runtime.remove(box.id);
    expect(await runtime.get(box.id)).toBeNull();
  });
});

describe('over REST (our client → our server → this runtime)', () => {
  it('snapshot, restore, clone, export and import through the 0.10 routes, capabilities advertised', async () => {
    const { buildRestApp } = await import('../../dist/rest/server/app.js');
    const { ApiKeyCredential, BoxliteRestOptions } = await import('../../dist/index.js');
    const app = buildRestApp(runtime as never, { apiKey: 'snap-key-0123' });
    await app.listen({ host: '127.0.0.1', port: 0 });
    try {
      const url = `http://127.0.0.1:${(app.server.address() as import('node:net').AddressInfo).port}`;
      const client = JsBoxlite.rest(new BoxliteRestOptions({ url, credential: new ApiKeyCredential('snap-key-0123') }));
      const local = await newBox(runtime, `rest-snap-${Date.now()}`);
      const box = (await client.get(local.id))!;
      const s = await box.snapshot.create('r1');
      expect(s).toMatchObject({ name: 'r1', boxId: local.id });
      expect((await box.snapshot.list()).map((x) => x.name)).toEqual(['r1']);
      expect(await box.snapshot.get('nope')).toBeNull();
      await expect(box.snapshot.create('r1')).rejects.toMatchObject({ code: 'AlreadyExists' });
      await box.snapshot.restore('r1');
      const clone = await box.cloneBox(null, `rest-clone-${Date.now()}`);
      made.push([runtime, clone.id]);
      const file = await box.export(outDir);
      expect(fs.statSync(file).size).toBeGreaterThan(1024);
      const imported = await client.importBox(file, `rest-imp-${Date.now()}`);
      made.push([runtime, imported.id]);
      expect((await runtime.getInfo(imported.id))?.id).toBe(imported.id);
      await box.snapshot.remove('r1');
      for (const id of [clone.id, imported.id, local.id]) await runtime.remove(id, true);
    } finally {
      await app.close();
    }
  });
});

describe('the 0.10 reference client against our REST server', () => {
  it('snapshot, clone, export and import with the reference\'s own client (no VM boot)', async () => {
    const { HAVE_REF, REF_PKG } = await import('../fixtures/ref-client.js');
    if (!HAVE_REF) return;
    const { pathToFileURL } = await import('node:url');
    const { buildRestApp } = await import('../../dist/rest/server/app.js');
    /* eslint-disable @typescript-eslint/no-explicit-any */
    const sdk: any = await import(pathToFileURL(path.join(REF_PKG, 'dist/index.js')).href);
    const app = buildRestApp(runtime as never, { apiKey: 'snap-key-0123' });
    await app.listen({ host: '127.0.0.1', port: 0 });
    try {
      const url = `http://127.0.0.1:${(app.server.address() as import('node:net').AddressInfo).port}`;
      const R = sdk.JsBoxlite.rest(new sdk.BoxliteRestOptions({ url, credential: new sdk.ApiKeyCredential('snap-key-0123') }));
      const local = await newBox(runtime, `ref-snap-${Date.now()}`);
      const box = await R.get(local.id);
      const s = await box.snapshot.create('ref1');
      expect(s).toMatchObject({ name: 'ref1', boxId: local.id });
      expect(typeof s.createdAt).toBe('number');
      expect((await box.snapshot.list()).map((x: any) => x.name)).toEqual(['ref1']);
      expect(await box.snapshot.get('missing')).toBeNull();
      await box.snapshot.restore('ref1');
      const clone = await box.cloneBox(null, `ref-clone-${Date.now()}`);
      made.push([runtime, clone.id]);
      const file = await box.export(outDir);
      expect(fs.statSync(file).size).toBeGreaterThan(1024);
      const imported = await R.importBox(file, `ref-imp-${Date.now()}`);
      made.push([runtime, imported.id]);
      await box.snapshot.remove('ref1');
      expect(await box.snapshot.list()).toEqual([]);
      for (const id of [clone.id, imported.id, local.id]) await runtime.remove(id, true);
    } finally {
      await app.close();
    }
  });
});
