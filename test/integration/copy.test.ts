import crypto from 'node:crypto';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, inject, it } from 'vitest';
import { ConfigError, ExecutionError, JsBoxlite, type Box } from '../../dist/index.js';
import { boxlite, readAll, run } from './helpers.js';

// One VM for the SDK tests (plus one running as user 1000, and one detached box for the CLI).
let runtime: JsBoxlite;
let box: Box;
let userBox: Box;
let tmp: string;

const sh = (b: Box, script: string) => run(b, 'sh', ['-c', script]);

const sha256 = (file: string) => crypto.createHash('sha256').update(fs.readFileSync(file)).digest('hex');

/** host tree: tree/{a.txt 0640, bin/run.sh 0755, big.bin 2 MiB random, link -> a.txt} */
function makeTree(dir: string): string {
  const tree = path.join(dir, 'tree');
  fs.mkdirSync(path.join(tree, 'bin'), { recursive: true });
  fs.writeFileSync(path.join(tree, 'a.txt'), 'alpha\n', { mode: 0o640 });
  fs.chmodSync(path.join(tree, 'a.txt'), 0o640);
  fs.writeFileSync(path.join(tree, 'bin', 'run.sh'), '#!/bin/sh\necho ran\n');
  fs.chmodSync(path.join(tree, 'bin', 'run.sh'), 0o755);
  fs.writeFileSync(path.join(tree, 'big.bin'), crypto.randomBytes(2 * 1024 * 1024));
  fs.symlinkSync('a.txt', path.join(tree, 'link'));
  return tree;
}

beforeAll(async () => {
  tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'boxlite-copy-it-'));
  runtime = new JsBoxlite({ homeDir: inject('home') });
  box = await runtime.create({ rootfsPath: inject('image'), memoryMib: 512 }, `copy-${process.pid}`);
  userBox = await runtime.create({ rootfsPath: inject('image'), memoryMib: 512, user: '1000' }, `copy-user-${process.pid}`);
  await Promise.all([box.start(), userBox.start()]);
});

afterAll(async () => {
  if (box) await runtime.remove(box.id, true);
  if (userBox) await runtime.remove(userBox.id, true);
  if (tmp) fs.rmSync(tmp, { recursive: true, force: true });
});

describe('toolbox executions (EXEC flag TOOL)', () => {
  it("run the agent's busybox as the box user, and reject bad or unknown tool names", async () => {
    const ex = await userBox.execTool('busybox', ['id', '-u']);
    const out = await readAll(ex, 'stdout');
    expect((await ex.wait()).exitCode).toBe(0);
    expect(out.toString()).toBe('1000\n');
    for (const [name, msg] of [['../busybox', /invalid tool name/], ['BusyBox', /invalid tool name/], ['nosuchtool', /tool not found: nosuchtool/]] as const) {
      const err = await box.execTool(name, []).catch((e: unknown) => e);
      expect(err).toBeInstanceOf(ExecutionError);
      expect((err as ExecutionError).exitCode).toBe(127);
      expect((err as Error).message).toMatch(msg);
    }
  });
});

describe('copyIn', () => {
  it('copies a file into an existing directory and onto a new name, keeping its mode', async () => {
    const f = path.join(tmp, 'hello.txt');
    fs.writeFileSync(f, 'hello world\n');
    fs.chmodSync(f, 0o640);
    await box.copyIn(f, '/root');
    await box.copyIn(f, '/root/renamed.txt');
    const r = await sh(box, 'cat /root/hello.txt /root/renamed.txt; stat -c "%a %u" /root/hello.txt /root/renamed.txt');
    expect(r.stdout).toBe('hello world\nhello world\n640 0\n640 0\n');
  });

  it('copies a directory tree with includeParent true (DEST/name) and false (contents into DEST)', async () => {
    const tree = makeTree(path.join(tmp, 'in'));
    await box.copyIn(tree, '/root');
    expect((await sh(box, 'mkdir /root/flat')).exitCode).toBe(0);
    await box.copyIn(tree, '/root/flat', { includeParent: false });
    const r = await sh(
      box,
      'for d in /root/tree /root/flat; do cat $d/a.txt; stat -c "%a" $d/a.txt $d/bin/run.sh; $d/bin/run.sh; readlink $d/link; sha256sum $d/big.bin | cut -d" " -f1; done; ls /root/flat | grep -c tree',
    );
    const big = sha256(path.join(tree, 'big.bin'));
    const one = `alpha\n640\n755\nran\na.txt\n${big}\n`;
    expect(r.stdout).toBe(`${one}${one}0\n`);
  });

  it('a directory lands as DEST/<name> even when DEST does not exist (created); a file makes its parents', async () => {
    const tree = makeTree(path.join(tmp, 'fresh'));
    await box.copyIn(tree, '/root/fresh-dest');
    await box.copyIn(tree, '/root/fresh-flat', { includeParent: false });
    const f = path.join(tmp, 'deep.txt');
    fs.writeFileSync(f, 'deep\n');
    await box.copyIn(f, '/root/a/b/c/named.txt');
    await box.copyIn(f, '/root/slashdir/');
    const r = await sh(
      box,
      'cat /root/fresh-dest/tree/a.txt /root/fresh-flat/a.txt /root/a/b/c/named.txt /root/slashdir/deep.txt; ls /root/fresh-dest; test -d /root/fresh-flat/tree || echo no-parent',
    );
    expect(r.stdout).toBe('alpha\nalpha\ndeep\ndeep\ntree\nno-parent\n');
    const onFile = await box.copyIn(tree, '/root/a/b/c/named.txt').catch((e: unknown) => e);
    expect(onFile).toBeInstanceOf(ConfigError);
  });

  it('files belong to the exec user (user 1000), and copying into /tmp works', async () => {
    const f = path.join(tmp, 'owned.txt');
    fs.writeFileSync(f, 'mine\n');
    await userBox.copyIn(f, '/tmp');
    await userBox.copyIn(makeTree(path.join(tmp, 'user')), '/tmp/utree');
    const r = await sh(userBox, 'cat /tmp/owned.txt; stat -c %u /tmp/owned.txt /tmp/utree /tmp/utree/tree /tmp/utree/tree/a.txt');
    expect(r.stdout).toBe('mine\n1000\n1000\n1000\n1000\n');
  });

  it('overwrite: false refuses to clobber; errors for a missing host path and recursive: false', async () => {
    const f = path.join(tmp, 'clobber.txt');
    fs.writeFileSync(f, 'new\n');
    expect((await sh(box, 'echo old > /root/clobber.txt')).exitCode).toBe(0);
    const err = await box.copyIn(f, '/root', { overwrite: false }).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(ExecutionError);
    expect((err as Error).message).toMatch(/exists/);
    expect((await sh(box, 'cat /root/clobber.txt')).stdout).toBe('old\n');
    await box.copyIn(f, '/root');
    expect((await sh(box, 'cat /root/clobber.txt')).stdout).toBe('new\n');

    const missing = path.join(tmp, 'no-such-file');
    const e2 = await box.copyIn(missing, '/root').catch((e: unknown) => e);
    expect(e2).toBeInstanceOf(ConfigError);
    expect((e2 as Error).message).toContain(missing);
    const e3 = await box.copyIn(tmp, '/root', { recursive: false }).catch((e: unknown) => e);
    expect(e3).toBeInstanceOf(ConfigError);
  });
});

describe('copyOut', () => {
  it('copies a file and a tree out byte-exact (2 MiB random file), modes and symlinks kept', async () => {
    const tree = makeTree(path.join(tmp, 'src2'));
    await box.copyIn(tree, '/root/out', { includeParent: false });
    const dest = path.join(tmp, 'out-dir');
    fs.mkdirSync(dest);
    await box.copyOut('/root/out', dest);
    const got = path.join(dest, 'out');
    expect(sha256(path.join(got, 'big.bin'))).toBe(sha256(path.join(tree, 'big.bin')));
    expect(fs.readFileSync(path.join(got, 'a.txt'), 'utf8')).toBe('alpha\n');
    expect(fs.statSync(path.join(got, 'a.txt')).mode & 0o777).toBe(0o640);
    expect(fs.statSync(path.join(got, 'bin', 'run.sh')).mode & 0o777).toBe(0o755);
    expect(fs.readlinkSync(path.join(got, 'link'))).toBe('a.txt');

    const flat = path.join(tmp, 'out-flat');
    fs.mkdirSync(flat);
    await box.copyOut('/root/out', flat, { includeParent: false });
    expect(sha256(path.join(flat, 'big.bin'))).toBe(sha256(path.join(tree, 'big.bin')));

    const file = path.join(tmp, 'single.bin');
    await box.copyOut('/root/out/big.bin', file);
    expect(sha256(file)).toBe(sha256(path.join(tree, 'big.bin')));
  });

  it('a directory lands as DEST/<name> when DEST does not exist yet; a file to a new path makes its parents', async () => {
    const dest = path.join(tmp, 'not-there-yet');
    await box.copyOut('/root/out', dest);
    expect(fs.readFileSync(path.join(dest, 'out', 'a.txt'), 'utf8')).toBe('alpha\n');
    const flat = path.join(tmp, 'not-there-flat');
    await box.copyOut('/root/out', flat, { includeParent: false });
    expect(fs.readdirSync(flat).sort()).toEqual(['a.txt', 'big.bin', 'bin', 'link']);
    const deep = path.join(tmp, 'x', 'y', 'z.txt');
    await box.copyOut('/root/out/a.txt', deep);
    expect(fs.readFileSync(deep, 'utf8')).toBe('alpha\n');
    await box.copyOut('/root/out/a.txt', `${path.join(tmp, 'into')}/`);
    expect(fs.readFileSync(path.join(tmp, 'into', 'a.txt'), 'utf8')).toBe('alpha\n');
    const onFile = await box.copyOut('/root/out', deep).catch((e: unknown) => e);
    expect(onFile).toBeInstanceOf(ConfigError);
  });

  it('copies a symlink to /etc out as a symlink and leaves the host /etc untouched', async () => {
    expect((await sh(box, 'mkdir -p /root/sl && ln -s /etc /root/sl/escape && echo x > /root/sl/f')).exitCode).toBe(0);
    const before = fs.readdirSync('/etc').sort();
    const dest = path.join(tmp, 'sl-out');
    fs.mkdirSync(dest);
    await box.copyOut('/root/sl', dest);
    expect(fs.lstatSync(path.join(dest, 'sl', 'escape')).isSymbolicLink()).toBe(true);
    expect(fs.readlinkSync(path.join(dest, 'sl', 'escape'))).toBe('/etc');
    expect(fs.readFileSync(path.join(dest, 'sl', 'f'), 'utf8')).toBe('x\n');
    expect(fs.readdirSync('/etc').sort()).toEqual(before);
  });

  it('overwrite: false refuses to clobber; a missing source is an Execution error from tar', async () => {
    const file = path.join(tmp, 'keep.txt');
    fs.writeFileSync(file, 'host\n');
    const err = await box.copyOut('/root/clobber.txt', file, { overwrite: false }).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(ExecutionError);
    expect(fs.readFileSync(file, 'utf8')).toBe('host\n');
    await box.copyOut('/root/clobber.txt', file);
    expect(fs.readFileSync(file, 'utf8')).toBe('new\n');

    const e2 = await box.copyOut('/root/no-such-thing', path.join(tmp, 'x')).catch((e: unknown) => e);
    expect(e2).toBeInstanceOf(ExecutionError);
    expect((e2 as Error).message).toMatch(/No such file or directory/);
  });
});

describe('boxlite cp', () => {
  it('copies both ways with BOX:PATH', async () => {
    const started = await boxlite(['run', '-d', '--rootfs', inject('image')]);
    expect(started.code).toBe(0);
    const id = started.stdout.trim().split('\n').pop()!;
    try {
      const f = path.join(tmp, 'cli.txt');
      fs.writeFileSync(f, 'via cli\n');
      const up = await boxlite(['cp', f, `${id}:/root/`]);
      expect(up.stderr).toBe('');
      expect(up.code).toBe(0);
      const back = path.join(tmp, 'cli-back.txt');
      const down = await boxlite(['cp', `${id}:/root/cli.txt`, back]);
      expect(down.stderr).toBe('');
      expect(down.code).toBe(0);
      expect(fs.readFileSync(back, 'utf8')).toBe('via cli\n');
      const both = await boxlite(['cp', f, back]);
      expect(both.code).toBe(1);
    } finally {
      await boxlite(['rm', '-f', id]);
    }
  });
});
