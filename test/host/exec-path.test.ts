// The agent's per-exec path (issue 11): users resolved by the agent from a cached copy of
// /etc/passwd and /etc/group that must follow every change of those files, the namespace pid
// reported by a shared-memory child, and the signals/capabilities a child still gets reset.
// The agent runs in host mode inside a private mount namespace whose /etc is a bind mount of a
// scratch directory, so the test edits passwd and group without touching the host's.
import { execFileSync } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { AGENT, boxDir, run, startBox, type HostBox } from './helpers.js';

const canUnshare = (() => {
  if (process.getuid?.() !== 0) return false;
  try {
    execFileSync('unshare', ['--mount', 'true'], { stdio: 'ignore' });
    return true;
  } catch {
    return false;
  }
})();

const PASSWD0 = 'root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/:/bin/false\n';
const GROUP0 = 'root:x:0:\nnogroup:x:65534:\n';

describe.skipIf(!canUnshare)('per-exec path of the host-mode agent (own /etc/passwd and /etc/group)', () => {
  let box: HostBox;
  let etc: string;
  let passwd: string;
  let group: string;
  const out = async (argv: string[], user: string) => {
    const r = await run(box.client, argv, { user });
    return { code: r.exit?.code, reason: r.exit?.reason, message: r.exit?.message, stdout: r.stdout.toString().trim() };
  };
  // In place (same inode, as `echo >>` or an editor that truncates): the cache must see it.
  const rewrite = (file: string, text: string) => fs.writeFileSync(file, text);

  beforeAll(async () => {
    const dir = boxDir();
    etc = path.join(dir, 'etc');
    fs.mkdirSync(etc);
    passwd = path.join(etc, 'passwd');
    group = path.join(etc, 'group');
    fs.writeFileSync(passwd, PASSWD0);
    fs.writeFileSync(group, GROUP0);
    const script = 'mount --bind "$0" /etc && exec "$1" --host-mode --socket "$2"';
    box = await startBox({ command: 'unshare', args: ['--mount', '--propagation', 'private', 'sh', '-c', script, etc, AGENT, '{agentSocket}'] }, dir);
  });
  afterAll(async () => {
    await box?.dispose();
  });

  it('follows additions, in-place edits of the same size and removals of users and groups', async () => {
    expect(await out(['id', '-u'], 'perfuser')).toMatchObject({
      code: 125,
      reason: 3,
      message: 'unable to find user perfuser: no matching entries in passwd file',
    });
    rewrite(passwd, PASSWD0 + 'perfuser:x:4242:4343::/:/bin/sh\n');
    expect(await out(['sh', '-c', 'id -u; id -g; id -G'], 'perfuser')).toMatchObject({ code: 0, stdout: '4242\n4343\n4343' });

    // Same length, same inode, written right after the last exec: only mtime/ctime tell.
    rewrite(passwd, PASSWD0 + 'perfuser:x:4244:4343::/:/bin/sh\n');
    expect((await out(['id', '-u'], 'perfuser')).stdout).toBe('4244');

    rewrite(group, GROUP0 + 'perfgrp:x:5151:nobody,perfuser\n');
    expect((await out(['id', '-G'], 'perfuser')).stdout).toBe('4343 5151');
    expect((await out(['id', '-G'], 'nobody')).stdout).toBe('65534 5151');
    expect((await out(['sh', '-c', 'id -g; id -G'], 'perfuser:perfgrp')).stdout).toBe('5151\n5151');
    expect(await out(['id', '-g'], 'perfuser:nosuchgrp')).toMatchObject({
      code: 125,
      reason: 3,
      message: 'unable to find group nosuchgrp: no matching entries in group file',
    });

    rewrite(passwd, PASSWD0);
    expect((await out(['id', '-u'], 'perfuser')).message).toBe('unable to find user perfuser: no matching entries in passwd file');
    // Numeric users need no entry; the group file still applies to a numeric group.
    expect((await out(['sh', '-c', 'id -u; id -g'], '1234:5678')).stdout).toBe('1234\n5678');
    expect((await out(['id', '-g'], '1234:perfgrp')).stdout).toBe('5151');
    expect((await out(['id', '-u'], '')).stdout).toBe('0');
  });

  it('keeps every user right when more users are in use than the cache holds', async () => {
    const lines = Array.from({ length: 12 }, (_, i) => `u${i}:x:${7000 + i}:${8000 + i}::/:/bin/sh\n`).join('');
    rewrite(passwd, PASSWD0 + lines);
    for (let round = 0; round < 2; round++)
      for (let i = 0; i < 12; i++) expect((await out(['sh', '-c', 'id -u; id -g'], `u${i}`)).stdout).toBe(`${7000 + i}\n${8000 + i}`);
  });

  it('follows a file replaced by rename (a new inode), a symlink, and a file that went missing', async () => {
    rewrite(passwd, PASSWD0 + 'perfuser:x:4242:4343::/:/bin/sh\n');
    rewrite(group, GROUP0 + 'perfgrp:x:5151:perfuser\n');
    expect((await out(['id', '-G'], 'perfuser')).stdout).toBe('4343 5151');
    // Same size, new inode (how adduser and vipw write).
    fs.writeFileSync(`${passwd}.new`, PASSWD0 + 'perfuser:x:4245:4343::/:/bin/sh\n');
    fs.renameSync(`${passwd}.new`, passwd);
    expect((await out(['id', '-u'], 'perfuser')).stdout).toBe('4245');
    // An absolute symlink resolves inside the executions' root, as the child would see it.
    fs.writeFileSync(path.join(etc, 'group.real'), GROUP0 + 'perfgrp:x:5252:perfuser\n');
    fs.rmSync(group);
    fs.symlinkSync('/etc/group.real', group);
    expect((await out(['id', '-G'], 'perfuser')).stdout).toBe('4343 5252');
    // Missing: reads as empty, as before (named groups fail, the passwd group stays).
    fs.rmSync(group);
    expect((await out(['sh', '-c', 'id -u; id -G'], 'perfuser')).stdout).toBe('4245\n4343');
    expect(await out(['id'], 'perfuser:perfgrp')).toMatchObject({ code: 125, message: 'unable to find group perfgrp: no matching entries in group file' });
    fs.rmSync(passwd);
    expect((await out(['id', '-u'], 'perfuser')).message).toBe('unable to find user perfuser: no matching entries in passwd file');
    expect((await out(['id', '-u'], '')).stdout).toBe('0');
    fs.writeFileSync(passwd, PASSWD0);
    fs.writeFileSync(group, GROUP0);
  });

  it('reports the namespace pid of the child and resets what the agent ignores', async () => {
    const r = await run(box.client, ['sh', '-c', 'echo $$; grep -E "^(SigIgn|SigBlk|CapBnd|CapAmb):" /proc/self/status']);
    expect(r.exit?.code).toBe(0);
    const [pid, ...status] = r.stdout.toString().trim().split('\n');
    expect(r.pid).toBe(Number(pid));
    const field = (name: string) => status.find((l) => l.startsWith(name))?.split(/\s+/)[1];
    // sh itself ignores nothing at start; nothing of the agent's SIGPIPE/blocked set leaks.
    expect(field('SigIgn')).toBe('0000000000000000');
    expect(field('SigBlk')).toBe('0000000000000000');
    expect(field('CapBnd')).toBe('00000000a80425fb');
    expect(field('CapAmb')).toBe('0000000000000000');
  });
});
