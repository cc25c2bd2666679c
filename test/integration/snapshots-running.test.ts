import { execFileSync, spawn } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterAll, describe, expect, inject, it } from 'vitest';
import { JsBoxlite, type Box } from '../../dist/index.js';
import { boxlite, run, scratchHome } from './helpers.js';

// Export of a RUNNING box (src/runtime/archive.ts → snapshots.ts withFrozenLiveDisk): the guest
// syncs, the VM is paused while its root drive switches onto a new overlay, then resumed; the
// frozen base is exported while the box runs on. Small busybox boxes, no network.

const runtime = new JsBoxlite({ homeDir: inject('home') });
const made: Array<[JsBoxlite, string]> = [];
const outDir = fs.mkdtempSync(path.join(os.tmpdir(), 'boxlite-run-out-'));

afterAll(async () => {
  for (const [rt, id] of made) await rt.remove(id, true).catch(() => undefined);
  fs.rmSync(outDir, { recursive: true, force: true });
});

async function newBox(rt = runtime, name?: string): Promise<Box> {
  const box = await rt.create({ rootfsPath: inject('image'), network: { outbound: { mode: 'disabled' } }, memoryMib: 256 }, name);
  made.push([rt, box.id]);
  return box;
}

async function sh(box: Box, script: string): Promise<string> {
  const r = await run(box, 'sh', ['-c', script]);
  expect(r.exitCode, `${script}: ${r.stderr}`).toBe(0);
  return r.stdout;
}

const shimState = (home: string, id: string) =>
  JSON.parse(fs.readFileSync(path.join(home, 'boxes', id, 'shim.json'), 'utf8')) as { shimPid: number; qemuPid: number };

describe('export of a running box', () => {
  it('exports what the box wrote (no sync of ours) while it keeps running and writing', async () => {
    const box = await newBox(runtime, `run-exp-${Date.now()}`);
    // No sync here: the export's quiesce must write the page cache out.
    const sum = await sh(box, 'head -c 1048576 /dev/urandom > /root/blob; sha256sum /root/blob');
    const { qemuPid } = shimState(inject('home'), box.id);
    const t0 = performance.now();
    const file = await box.export(outDir);
    console.log(`[timing] running export: ${(performance.now() - t0).toFixed(0)} ms, ${fs.statSync(file).size} bytes (load ${os.loadavg()[0]!.toFixed(2)})`);
    expect(path.dirname(file)).toBe(outDir);

    // Same VM, not left paused, and it writes on.
    expect(shimState(inject('home'), box.id).qemuPid).toBe(qemuPid);
    expect((await box.info()).state.status).toBe('running');
    expect(await sh(box, 'echo after > /root/after; cat /root/after')).toBe('after\n');

    const fresh = new JsBoxlite({ homeDir: scratchHome('boxlite-run-import-') });
    const imported = await fresh.importBox(file, 'imported');
    made.push([fresh, imported.id]);
    expect(await sh(imported, 'sha256sum /root/blob; ls /root/after 2>/dev/null || echo no-after')).toBe(`${sum}no-after\n`);
    await fresh.remove(imported.id, true);
    await fresh.shutdown();
    await box.stop();
    await runtime.remove(box.id, true);
  });

  it('an export failing while the VM is paused for the switch leaves the box running, not paused', async () => {
    const box = await newBox();
    const dir = path.join(inject('home'), 'boxes', box.id);
    await sh(box, 'echo A > /root/a');
    // The shim holds before its stop + switch; meanwhile the overlay is spoiled, so QEMU refuses
    // the switch with the VM stopped.
    fs.writeFileSync(path.join(dir, '.test-live-disk-hold'), 'before:1500');
    const failDir = fs.mkdtempSync(path.join(outDir, 'fail-'));
    const pending = box.export(failDir);
    const overlay = () => fs.readdirSync(dir).find((n) => n.startsWith('.disk-next-'));
    for (let i = 0; i < 400 && !overlay(); i++) await new Promise((r) => setTimeout(r, 10));
    expect(overlay()).toBeDefined();
    await new Promise((r) => setTimeout(r, 500)); // qemu-img create has finished it; the shim holds
    fs.writeFileSync(path.join(dir, overlay()!), 'not a qcow2 image');
    await expect(pending).rejects.toMatchObject({ code: expect.any(String) });
    fs.rmSync(path.join(dir, '.test-live-disk-hold'));
    expect(fs.readFileSync(path.join(dir, 'logs', 'shim.log'), 'utf8')).not.toMatch(/cannot resume the VM after the switch/);
    expect((await box.info()).state.status).toBe('running');
    expect(await sh(box, 'cat /root/a; echo B > /root/b; cat /root/b')).toBe('A\nB\n');
    expect(fs.readdirSync(failDir)).toEqual([]);
    expect(fs.readdirSync(dir).filter((n) => n.startsWith('.disk-next-'))).toEqual([]);
    // And a later export works.
    const file = await box.export(path.join(outDir, 'second.boxlite'));
    expect(fs.statSync(file).size).toBeGreaterThan(0);
    fs.rmSync(file);
    await box.stop();
    await runtime.remove(box.id, true);
  });
});

describe('boot after a live switch cut short by the SDK and the shim both dying', () => {
  it('the next boot uses the overlay QEMU switched to (what was written after the snapshot is kept)', async () => {
    const box = await newBox();
    const dir = path.join(inject('home'), 'boxes', box.id);
    await sh(box, 'echo A > /root/state; sync');
    // The shim holds the op between QEMU's switch and its own link of the overlay as disk.qcow2.
    fs.writeFileSync(path.join(dir, '.test-live-disk-hold'), 'switched:8000');
    const script = `
      import { JsBoxlite } from ${JSON.stringify(path.join(inject('root'), 'dist', 'index.js'))};
      const rt = new JsBoxlite({ homeDir: ${JSON.stringify(inject('home'))} });
      const box = await rt.get(${JSON.stringify(box.id)});
      await box.snapshot.create('k');
      process.stdout.write('done\\n');
    `;
    const child = spawn(process.execPath, ['--input-type=module', '-e', script], { stdio: ['ignore', 'pipe', 'pipe'] });
    let out = '';
    child.stdout.on('data', (d) => (out += d));
    const overlayName = () => fs.readdirSync(dir).find((n) => n.startsWith('.disk-next-'));
    for (let i = 0; i < 400 && !overlayName(); i++) await new Promise((r) => setTimeout(r, 25));
    expect(overlayName()).toBeDefined();
    await new Promise((r) => setTimeout(r, 1500));
    // Written after the switch: only the overlay holds it.
    await sh(box, 'echo B > /root/state; sync');
    const { shimPid, qemuPid } = shimState(inject('home'), box.id);
    child.kill('SIGKILL');
    await new Promise((r) => child.once('close', r));
    process.kill(shimPid, 'SIGKILL');
    for (let i = 0; i < 200 && isAlive(qemuPid); i++) await new Promise((r) => setTimeout(r, 25));
    expect(isAlive(qemuPid)).toBe(false);
    expect(out).not.toContain('done');
    fs.rmSync(path.join(dir, '.test-live-disk-hold'));

    // In the window: disk.qcow2 is still the frozen file, the overlay holds the guest's later writes.
    const overlay = path.join(dir, overlayName()!);
    const disk = path.join(dir, 'disk.qcow2');
    expect(fs.statSync(overlay).ino).not.toBe(fs.statSync(disk).ino);
    const extents = JSON.parse(execFileSync('qemu-img', ['map', '-U', '--output=json', overlay], { encoding: 'utf8' })) as Array<{ depth: number }>;
    expect(extents.some((e) => e.depth === 0)).toBe(true);

    const again = (await runtime.get(box.id))!;
    expect(await sh(again, 'cat /root/state')).toBe('B\n');
    await again.stop();
    execFileSync('qemu-img', ['check', '-q', disk], { stdio: 'pipe' });
    // The next disk operation commits the pending base: the snapshot is whole and restores to A.
    await again.snapshot.restore('k');
    expect((await again.snapshot.list()).map((s) => s.name)).toEqual(['k']);
    const restored = (await runtime.get(box.id))!;
    expect(await sh(restored, 'cat /root/state')).toBe('A\n');
    await restored.stop();
    await runtime.remove(box.id, true);
    expect(fs.existsSync(dir)).toBe(false);
  });
});

function isAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
}

describe('REST and CLI on a running box', () => {
  it('snapshot create, clone and export through our REST client; restore refused; the box keeps running', async () => {
    const { buildRestApp } = await import('../../dist/rest/server/app.js');
    const { ApiKeyCredential, BoxliteRestOptions } = await import('../../dist/index.js');
    const app = buildRestApp(runtime as never, { apiKey: 'run-key-0123' });
    await app.listen({ host: '127.0.0.1', port: 0 });
    try {
      const url = `http://127.0.0.1:${(app.server.address() as import('node:net').AddressInfo).port}`;
      const client = JsBoxlite.rest(new BoxliteRestOptions({ url, credential: new ApiKeyCredential('run-key-0123') }));
      const local = await newBox(runtime, `rest-run-${Date.now()}`);
      await sh(local, 'echo A > /root/state');
      const { qemuPid } = shimState(inject('home'), local.id);
      const box = (await client.get(local.id))!;
      expect(await box.snapshot.create('r1')).toMatchObject({ name: 'r1', boxId: local.id });
      const clone = await box.cloneBox(null, `rest-run-clone-${Date.now()}`);
      made.push([runtime, clone.id]);
      const file = await box.export(outDir);
      await expect(box.snapshot.restore('r1')).rejects.toMatchObject({ code: 'InvalidState' });
      expect(shimState(inject('home'), local.id).qemuPid).toBe(qemuPid);
      expect(await sh(local, 'echo B > /root/state; cat /root/state')).toBe('B\n');
      const cloned = (await runtime.get(clone.id))!;
      expect(await sh(cloned, 'cat /root/state')).toBe('A\n');
      await cloned.stop();
      const fresh = new JsBoxlite({ homeDir: scratchHome('boxlite-rest-run-') });
      const imported = await fresh.importBox(file);
      expect(await sh(imported, 'cat /root/state')).toBe('A\n');
      await fresh.remove(imported.id, true);
      await fresh.shutdown();
      fs.rmSync(file);
      await local.stop();
      await local.snapshot.restore('r1');
      for (const id of [clone.id, local.id]) await runtime.remove(id, true);
    } finally {
      await app.close();
    }
  });

  it('boxlite snapshot create, clone and export of a running box', async () => {
    const box = await newBox();
    await sh(box, 'echo A > /root/state');
    const { qemuPid } = shimState(inject('home'), box.id);
    const created = await boxlite(['snapshot', 'create', box.id, 'cli-live']);
    expect(created.code, created.stderr).toBe(0);
    const cloned = await boxlite(['clone', box.id]);
    expect(cloned.code, cloned.stderr).toBe(0);
    made.push([runtime, cloned.stdout.trim()]);
    const cliOut = fs.mkdtempSync(path.join(outDir, 'cli-'));
    const exported = await boxlite(['export', box.id, cliOut]);
    expect(exported.code, exported.stderr).toBe(0);
    expect(fs.statSync(exported.stdout.trim()).size).toBeGreaterThan(1024);
    const restore = await boxlite(['snapshot', 'restore', box.id, 'cli-live']);
    expect(restore.code).not.toBe(0);
    expect(restore.stderr).toMatch(/invalid state: .*running/);
    expect(shimState(inject('home'), box.id).qemuPid).toBe(qemuPid);
    expect(await sh(box, 'cat /root/state')).toBe('A\n');
    const clone = (await runtime.get(cloned.stdout.trim()))!;
    expect(await sh(clone, 'cat /root/state')).toBe('A\n');
    await clone.stop();
    await box.stop();
    for (const id of [cloned.stdout.trim(), box.id]) await runtime.remove(id, true);
  });
});

describe('fork of a running box (memory kept)', () => {
  it('the fork has the running background process, tmpfs and disk; both diverge; own seed; both removable', async () => {
    const box = await newBox();
    await sh(
      box,
      '(i=0; while true; do i=$((i+1)); echo $i > /tmp/counter; sleep 0.2; done) >/dev/null 2>&1 </dev/null & echo $! > /tmp/bg.pid; echo mem > /dev/shm/x; echo disk > /root/d',
    );
    const { qemuPid } = shimState(inject('home'), box.id);
    // An execution open on the source at the fork: the fork's agent drops it (its host is not the fork's).
    const longExec = await box.exec('sleep', ['37']);
    const load = os.loadavg()[0]!.toFixed(2);
    const t0 = performance.now();
    const fork = await box.fork();
    const forkMs = performance.now() - t0;
    made.push([runtime, fork.id]);
    const forkFirst = await sh(fork, 'echo ok');
    const forkReadyMs = performance.now() - t0;
    expect(forkFirst).toBe('ok\n');
    const forkQemu = shimState(inject('home'), fork.id).qemuPid;
    expect(forkQemu).not.toBe(qemuPid);
    expect(fs.existsSync(path.join(inject('home'), 'boxes', fork.id, 'fork.state'))).toBe(false);

    // The random numbers right after the fork: the same CRNG state unless the fork reseeded.
    const [rs, rf] = await Promise.all([sh(box, 'head -c 32 /dev/urandom | od -An -tx1'), sh(fork, 'head -c 32 /dev/urandom | od -An -tx1')]);
    expect(rf).not.toBe(rs);
    // The background process runs on in the fork (same pid, still counting), with the tmpfs and the unsynced disk file.
    const seen = await sh(fork, 'p=$(cat /tmp/bg.pid); kill -0 $p && echo alive; cat /dev/shm/x /root/d; c1=$(cat /tmp/counter); sleep 1; c2=$(cat /tmp/counter); [ "$c2" -gt "$c1" ] && echo counting; date +%s');
    const lines = seen.trim().split('\n');
    expect(lines.slice(0, 4)).toEqual(['alive', 'mem', 'disk', 'counting']);
    expect(Math.abs(Number(lines[4]) - Date.now() / 1000)).toBeLessThan(5);
    // They diverge: a write in one is absent in the other (tmpfs and disk).
    await sh(fork, 'echo f > /tmp/only-fork; echo f > /root/only-fork');
    await sh(box, 'echo s > /tmp/only-src; echo s > /root/only-src');
    expect(await sh(box, 'ls /tmp/only-fork /root/only-fork 2>/dev/null; echo .')).toBe('.\n');
    expect(await sh(fork, 'ls /tmp/only-src /root/only-src 2>/dev/null; echo .')).toBe('.\n');
    expect(shimState(inject('home'), box.id).qemuPid).toBe(qemuPid);
    expect(await sh(box, 'kill -0 $(cat /tmp/bg.pid) && echo alive')).toBe('alive\n');
    expect(await sh(box, 'ps | grep -c "[s]leep 37"')).toBe('1\n');
    expect(await sh(fork, 'ps | grep -c "[s]leep 37" || true')).toBe('0\n');
    await longExec.kill();
    await longExec.wait();
    // A paused box is not forked (the save would thaw it).
    await box.pause();
    await expect(box.fork()).rejects.toMatchObject({ code: 'InvalidState' });
    expect((await box.info()).state.status).toBe('paused');
    await box.resume();

    // Baseline in the same run: cloneBox + the clone's boot to its first output.
    const t1 = performance.now();
    const clone = await box.cloneBox(null, null);
    made.push([runtime, clone.id]);
    expect(await sh(clone, 'cat /root/d; ls /tmp/bg.pid 2>/dev/null; echo .')).toBe('disk\n.\n');
    const cloneReadyMs = performance.now() - t1;
    const cloneTemplate = (shimState(inject('home'), clone.id) as { template?: string }).template;
    console.log(
      `[timing] fork ${forkMs.toFixed(0)} ms (to first output ${forkReadyMs.toFixed(0)} ms) vs cloneBox+boot to first output ${cloneReadyMs.toFixed(0)} ms` +
        ` (${cloneTemplate ? 'template restore' : 'cold boot'}), ratio ${(forkReadyMs / cloneReadyMs).toFixed(2)}; load ${load}`,
    );

    // The fork stops, restarts cold from its own disk, and is removable; no process is left.
    await fork.stop();
    expect(isAlive(forkQemu)).toBe(false);
    const again = (await runtime.get(fork.id))!;
    expect(await sh(again, 'cat /root/only-fork /root/d')).toBe('f\ndisk\n');
    const againQemu = shimState(inject('home'), fork.id).qemuPid;
    await again.stop();
    expect(isAlive(againQemu)).toBe(false);
    await runtime.remove(fork.id, true);
    await clone.stop();
    await runtime.remove(clone.id, true);
    await box.stop();
    expect(isAlive(qemuPid)).toBe(false);
    await runtime.remove(box.id, true);
  });

  it('a stopped box cannot be forked (InvalidState); cloneBox is for it', async () => {
    const box = await newBox();
    await expect(box.fork()).rejects.toMatchObject({ code: 'InvalidState', message: expect.stringMatching(/^invalid state: .*not running/) });
    await runtime.remove(box.id, true);
  });
});
