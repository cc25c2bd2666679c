import { afterEach, describe, expect, inject, it } from 'vitest';
import { JsBoxlite, type Box } from '../../dist/index.js';
import { run } from './helpers.js';

// diskSizeGb (the guest grows its ext4 online to fill the disk) and memory pressure (the
// OOM killer takes the workload, never the agent or the container init).
let runtime: JsBoxlite;
let box: Box | undefined;

const sh = (b: Box, script: string) => run(b, 'sh', ['-c', script]);

afterEach(async () => {
  if (box) await runtime.remove(box.id, true);
  box = undefined;
});

describe('diskSizeGb', () => {
  it('grows the root file system to the disk size, and data survives stop/start', async () => {
    runtime = new JsBoxlite({ homeDir: inject('home') });
    box = await runtime.create({ rootfsPath: inject('image'), diskSizeGb: 2 });
    const df = await sh(box, 'df -k / | tail -n 1');
    expect(df.exitCode).toBe(0);
    const totalKib = Number(df.stdout.trim().split(/\s+/)[1]);
    expect(totalKib).toBeGreaterThanOrEqual(1.8 * 1024 * 1024);
    expect((await sh(box, 'dd if=/dev/zero of=/big bs=1M count=8 2>/dev/null && echo kept > /kept && sync')).exitCode).toBe(0);
    await box.stop();
    box = (await runtime.get(box.id))!; // stop() spends the handle
    await box.start();
    expect((await sh(box, 'cat /kept; wc -c < /big')).stdout).toBe(`kept\n${8 * 1024 * 1024}\n`);
    const again = await sh(box, 'df -k / | tail -n 1');
    expect(Number(again.stdout.trim().split(/\s+/)[1])).toBe(totalKib);
  });
});

describe('out of memory', () => {
  it('kills the workload (-9) and the box keeps working', async () => {
    runtime = new JsBoxlite({ homeDir: inject('home') });
    box = await runtime.create({ rootfsPath: inject('image'), memoryMib: 256 });
    expect((await sh(box, 'cat /proc/self/oom_score_adj')).stdout).toBe('0\n');
    // awk keeps allocating (and writing) 256 KiB strings until the OOM killer takes it: no single
    // allocation is big enough for malloc to fail first. (A shell growing a 400 MB string
    // through a pipe does the same, at a minute under TCG.)
    const hog = await box.exec('awk', ['BEGIN { s = "x"; for (j = 0; j < 18; j++) s = s s; for (i = 0; ; i++) a[i] = s i }']);
    expect((await hog.wait()).exitCode).toBe(-9);
    expect(await sh(box, 'echo ok')).toEqual({ exitCode: 0, stdout: 'ok\n', stderr: '' });
    // PID 1 of the box is the image's main process (its Cmd, sh): a workload, not exempt (docs/decisions/0003-main-process.md).
    expect((await sh(box, 'cat /proc/1/oom_score_adj')).stdout).toBe('0\n');
  });
});
