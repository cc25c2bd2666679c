// Runtime-level handle rules against a real shim (agent in host mode, no VM): a box this runtime
// only attached to, because another process started it, is still one it runs, so shutdown() stops
// it, as the reference's runtime.shutdown() stops every box it holds.
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterAll, expect, it } from 'vitest';
import { JsBoxlite } from '../../dist/index.js';
import { BoxStore } from '../../dist/store/boxes.js';
import { normalizeBoxOptions } from '../../dist/runtime/options.js';
import { agentPeer, alive, startBox, waitFor } from './helpers.js';

const homes: string[] = [];
afterAll(() => {
  for (const h of homes) fs.rmSync(h, { recursive: true, force: true });
});

/** A home whose one box runs under a shim started "by another process" (its own store on the home). */
async function attachedHome(id: string) {
  const home = fs.mkdtempSync(path.join(os.tmpdir(), 'bl-attach-'));
  homes.push(home);
  const other = new BoxStore(path.join(home, 'boxes'), path.join(home, 'db'));
  other.create({ id, createdAt: new Date().toISOString(), options: normalizeBoxOptions({ rootfsPath: '/' }), image: { config: {} } });
  other.close();
  return { home, shim: await startBox(agentPeer(), path.join(home, 'boxes', id)) };
}

it('shutdown() stops a box the runtime attached to (booted by another process), and spends its handle', async () => {
  const id = '01ATTACHED0000000000000000';
  const { home, shim } = await attachedHome(id);
  try {
    const rt = new JsBoxlite({ homeDir: home });
    const box = (await rt.get(id))!;
    const ex = await box.exec('true');
    expect((await ex.wait()).exitCode).toBe(0);
    expect((await rt.metrics()).numRunningBoxes).toBe(1);
    await rt.shutdown(5);
    await waitFor(() => !alive(shim.shimPid), 5_000);
    expect(alive(shim.agentPid)).toBe(false);
    await expect(box.exec('true')).rejects.toMatchObject({ code: 'Stopped' });
  } finally {
    await shim.dispose();
  }
});

it('shutdown() after close() still stops the boxes, and a second shutdown() waits for the first', async () => {
  const id = '01ATTACHED0000000000000001';
  const { home, shim } = await attachedHome(id);
  try {
    const rt = new JsBoxlite({ homeDir: home });
    const box = (await rt.get(id))!;
    expect((await (await box.exec('true')).wait()).exitCode).toBe(0);
    rt.close();
    const first = rt.shutdown(5);
    await rt.shutdown(5);
    expect(alive(shim.shimPid)).toBe(false);
    await first;
    await expect(rt.listInfo()).rejects.toMatchObject({ code: 'InvalidState' });
  } finally {
    await shim.dispose();
  }
});
