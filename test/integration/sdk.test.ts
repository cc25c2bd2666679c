import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterAll, describe, expect, inject, it } from 'vitest';
import { JsBoxlite, SimpleBox } from '../../dist/index.js';
import { scratchHome } from './helpers.js';

// The reference's SimpleBox and runtime semantics that need a VM: options SimpleBox used to drop
// reach the box, and shutdown() stops what the runtime runs.
const cleanup: string[] = [];
afterAll(() => {
  for (const d of cleanup) fs.rmSync(d, { recursive: true, force: true });
});

describe('SimpleBox and runtime shutdown on a real VM', () => {
  it('SimpleBox forwards volumes (read-only too) and reports autoDelete / autoResume as the reference', async () => {
    const home = scratchHome();
    const shared = fs.mkdtempSync(path.join(os.tmpdir(), 'boxlite-sb-vol-'));
    cleanup.push(home, shared);
    fs.writeFileSync(path.join(shared, 'note.txt'), 'from the host\n');
    const runtime = new JsBoxlite({ homeDir: home });
    const box = new SimpleBox({
      runtime,
      rootfsPath: inject('image'),
      volumes: [{ hostPath: shared, guestPath: '/shared', readOnly: true }],
      security: { closeFds: true },
    });
    try {
      const r = await box.exec('sh', '-c', 'cat /shared/note.txt; echo x > /shared/new.txt; echo "write=$?"');
      expect(r.exitCode).toBe(0);
      expect(r.stdout).toMatch(/^from the host\nwrite=[1-9]\d*\n$/);
      expect(fs.existsSync(path.join(shared, 'new.txt'))).toBe(false);
      const info = await box.info();
      expect([info.autoDelete, info.autoResume, info.state.status]).toEqual([0, false, 'running']);
    } finally {
      await box.stop();
    }
    // autoRemove defaults to true for SimpleBox: the box is gone after stop().
    expect(await runtime.listInfo()).toEqual([]);
    runtime.close();
  });

  it('shutdown(timeout) stops every running box of the runtime and closes it', async () => {
    const home = scratchHome();
    cleanup.push(home);
    const runtime = new JsBoxlite({ homeDir: home });
    const box = await runtime.create({ rootfsPath: inject('image') }, 'to-shut-down');
    await box.start();
    expect((await runtime.getInfo('to-shut-down'))?.state.status).toBe('running');
    const t0 = Date.now();
    await runtime.shutdown(5);
    expect(Date.now() - t0).toBeLessThan(20_000);
    const after = new JsBoxlite({ homeDir: home });
    expect((await after.getInfo('to-shut-down'))?.state).toMatchObject({ status: 'stopped', running: false });
    await expect(runtime.get('to-shut-down')).rejects.toMatchObject({ code: 'InvalidState' });
    await after.remove('to-shut-down', true);
    after.close();
  });
});
