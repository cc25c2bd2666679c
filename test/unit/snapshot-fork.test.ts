import { describe, expect, it } from 'vitest';
import { parseControlRequest } from '../../src/shim/control.js';
import { FEATURE_FORK, forkAgentArgs, forkSave, sendForkResume } from '../../src/shim/fork.js';
import type { QmpClient } from '../../src/shim/qmp.js';
import type { Link } from '../../src/protocol/link.js';

// box.fork()'s shim side without a VM (the VM path: test/integration/snapshots-running.test.ts).

const neverQmp = { execute: () => Promise.reject(new Error('QMP must not be used')) } as unknown as QmpClient;

describe('fork: shim side', () => {
  it('makes only the agent chardev a QEMU-side server', () => {
    const args = ['-chardev', 'socket,id=agent,path=/b/agent.sock', '-chardev', 'socket,id=qmp,path=/b/qmp.sock,server=on,wait=off'];
    expect(forkAgentArgs(args)).toEqual(['-chardev', 'socket,id=agent,path=/b/agent.sock,server=on,wait=off', '-chardev', 'socket,id=qmp,path=/b/qmp.sock,server=on,wait=off']);
    expect(forkAgentArgs(forkAgentArgs(args))).toEqual(forkAgentArgs(args));
  });

  it('refuses a state file outside the box or of another name before touching the VM', async () => {
    const overlay = '/b/.disk-next-01ARZ3NDEKTSV4RRFFQ69G5FAV.qcow2';
    for (const bad of ['/etc/passwd', '/b/state', '/b/../x/.fork-01ARZ3NDEKTSV4RRFFQ69G5FAV.state', 'rel/.fork-01ARZ3NDEKTSV4RRFFQ69G5FAV.state']) {
      await expect(forkSave(neverQmp, '/b', overlay, bad, () => undefined)).rejects.toMatchObject({ code: 'InvalidArgument' });
    }
  });

  it('the disk op takes a state or a pause only with an overlay', () => {
    const req = (o: object) => Buffer.from(JSON.stringify(o));
    expect(parseControlRequest(req({ op: 'disk', overlay: '/b/o', state: '/b/s' }))).toEqual({ op: 'disk', overlay: '/b/o', state: '/b/s' });
    expect(() => parseControlRequest(req({ op: 'disk', state: '/b/s' }))).toThrowError(expect.objectContaining({ code: 'InvalidArgument' }));
    expect(() => parseControlRequest(req({ op: 'disk', overlay: '/b/o', state: 5 }))).toThrowError(expect.objectContaining({ code: 'InvalidArgument' }));
    expect(parseControlRequest(req({ op: 'disk', overlay: '/b/o', pause: true }))).toEqual({ op: 'disk', overlay: '/b/o', pause: true });
    expect(() => parseControlRequest(req({ op: 'disk', pause: true }))).toThrowError(expect.objectContaining({ code: 'InvalidArgument' }));
  });

  it('sends a fork RESUME with a fresh clock and seed, and refuses an agent without the feature', () => {
    const sent: Array<{ data: Buffer }> = [];
    const link = { send: (m: { data: Buffer }) => sent.push(m) } as unknown as Link;
    expect(() => sendForkResume(link, 0x7f, () => undefined)).toThrowError(expect.objectContaining({ code: 'Engine' }));
    sendForkResume(link, 0x7f | FEATURE_FORK, () => undefined);
    sendForkResume(link, 0x7f | FEATURE_FORK, () => undefined);
    const [a, b] = sent.map((m) => m.data.toString('utf8'));
    expect(a).toMatch(/^boxlite\.fork boxlite\.time=\d+ boxlite\.seed=[0-9a-f]{128}$/);
    expect(a!.split(' ')[2]).not.toBe(b!.split(' ')[2]);
    expect(Math.abs(Number(BigInt(a!.split(' ')[1]!.slice(13)) / 1_000_000n) - Date.now())).toBeLessThan(5000);
  });
});
