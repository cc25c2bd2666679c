// SkillBox in a VM on the `skillbox-test` image (the desktop image + a stand-in `claude` that
// speaks Claude Code's stream-json protocol and logs how it was started). Proves start() with a
// token, the desktop probe, a two-turn conversation over one claude process with the session id
// carried between turns, the env and arguments claude gets, installSkill's npx offline, and stop().
import fs from 'node:fs';
import path from 'node:path';
import { describe, expect, inject, it } from 'vitest';
import { JsBoxlite, SkillBox } from '../../dist/index.js';

const IMAGE = path.join(inject('root'), '.cache', 'images', 'skillbox-test');

describe('SkillBox on the skillbox-test image', () => {
  it('start, waitUntilReady, two call()s in one session, stop', async () => {
    if (!fs.existsSync(path.join(IMAGE, 'index.json'))) {
      throw new Error(`missing ${IMAGE}: node scripts/make-test-image.mjs ${IMAGE} --variant skillbox-test`);
    }
    const runtime = new JsBoxlite({ homeDir: inject('home') });
    const box = new SkillBox({ runtime, rootfsPath: IMAGE, oauthToken: 'tok-1234567' });
    try {
      await box.start();
      expect(box.guiHttpPort).toBeGreaterThanOrEqual(10000);
      expect(box.guiHttpsPort).not.toBe(box.guiHttpPort);
      await box.waitUntilReady(300);
      // The ports start() picked are the ones the running box publishes.
      const published = (await box.info()).network?.publishedPorts ?? [];
      expect(published.map((p) => [p.hostPort, p.guestPort])).toEqual([
        [box.guiHttpPort, 3000],
        [box.guiHttpsPort, 3001],
      ]);

      const t0 = Date.now();
      expect(await box.call('hi')).toBe('echo: hi');
      const first = Date.now() - t0;
      expect(await box.call('how are you?')).toBe('echo: how are you?');
      console.log(`SkillBox: first call ${(first / 1000).toFixed(1)} s (claude --version + start), second ${((Date.now() - t0 - first) / 1000).toFixed(1)} s`);

      // One claude process saw both turns: the reference's env and arguments, the token, and the
      // session id from its first answer sent back with the second message.
      const calls = (await box.exec('cat', '/tmp/claude-calls.log')).stdout.trim().split('\n');
      const args = '--dangerously-skip-permissions --input-format stream-json --output-format stream-json --mcp-config /config/.claude.json --verbose';
      expect(calls).toEqual([
        `IS_SANDBOX=1 SHELL=/bin/bash DISPLAY=:1 token_len=11 got_session=default args=${args}`,
        `IS_SANDBOX=1 SHELL=/bin/bash DISPLAY=:1 token_len=11 got_session=boxlite-session-1 args=${args}`,
      ]);
      // installSkill runs the reference's `npx add-skill`; offline (NPM_CONFIG_OFFLINE in the image)
      // npm fails at once with ENOTCACHED, so it reports false.
      const t1 = Date.now();
      expect(await box.installSkill('x/y')).toBe(false);
      console.log(`SkillBox: installSkill offline ${((Date.now() - t1) / 1000).toFixed(1)} s`);
      const ps = (await box.exec('ps')).stdout;
      expect(ps.match(/claude --dangerously-skip-permissions/g)).toHaveLength(1);
    } finally {
      await box.stop();
    }
    // autoRemove (the default): the box is gone after stop().
    expect((await runtime.listInfo()).filter((b) => b.name === 'skill-box')).toEqual([]);
  });
});
