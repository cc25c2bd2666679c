// CodeBox without a VM: a fake runtime records the box options CodeBox creates and every exec it
// makes (command, argv, env, tty), and answers with scripted results, so the reference's exact
// commands, labels, ExecError texts and image defaults are checked here; test/boxtypes/codebox.test.ts
// proves the effects in real VMs.
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { CodeBox, ExecError, ExecutionError, ImageError, type JsBoxlite } from '../../src/index.js';
import { fakeRuntime, rejection } from './fake-box.js';

const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'bl-codebox-'));
afterAll(() => fs.rmSync(tmp, { recursive: true, force: true }));

describe('CodeBox options', () => {
  it("defaults the image to 'python:slim' and changes nothing else", async () => {
    const { runtime, creates } = fakeRuntime();
    await new CodeBox({ runtime }).run('pass');
    expect(creates[0]).toMatchObject({ image: 'python:slim', rootfsPath: undefined, cpus: undefined, memoryMib: undefined, autoRemove: true });
  });

  it('passes an image override and every other option through; rootfsPath travels next to the default image', async () => {
    const a = fakeRuntime();
    await new CodeBox({ runtime: a.runtime, image: 'python:3.12-slim', memoryMib: 1024, cpus: 2, env: { PIP_INDEX_URL: 'http://x/simple/' } }).run('1');
    expect(a.creates[0]).toMatchObject({ image: 'python:3.12-slim', memoryMib: 1024, cpus: 2, env: [{ key: 'PIP_INDEX_URL', value: 'http://x/simple/' }] });
    const b = fakeRuntime();
    await new CodeBox({ runtime: b.runtime, rootfsPath: '/images/codebox' }).run('1');
    expect(b.creates[0]).toMatchObject({ image: 'python:slim', rootfsPath: '/images/codebox' });
  });
});

describe('CodeBox.run / runScript', () => {
  it('runs /usr/local/bin/python -c CODE (no env, no tty) and resolves to stdout only', async () => {
    const { runtime, execs } = fakeRuntime([{ exitCode: 0, stdout: '42\n', stderr: 'a warning\n' }]);
    const box = new CodeBox({ runtime });
    expect(await box.run('print(6*7)')).toBe('42\n');
    expect(execs).toEqual([{ cmd: '/usr/local/bin/python', args: ['-c', 'print(6*7)'], env: undefined, tty: false }]);
  });

  it("a non-zero exit is ExecError('run()', code, stderr) with the reference's message", async () => {
    const { runtime } = fakeRuntime([{ exitCode: 3, stdout: 'partial', stderr: 'Traceback …\nValueError: x\n' }]);
    const err = await rejection(new CodeBox({ runtime }).run('raise ValueError("x")'));
    expect(err).toBeInstanceOf(ExecError);
    expect(err).toMatchObject({ command: 'run()', exitCode: 3, stderr: 'Traceback …\nValueError: x\n', code: 'Execution' });
    expect(err.message).toBe("Command 'run()' failed with exit code 3: Traceback …\nValueError: x\n");
  });

  it('runScript reads the host file as UTF-8 and runs its text; a missing file is the fs ENOENT, with no exec', async () => {
    const script = path.join(tmp, 's.py');
    fs.writeFileSync(script, "print('héllo')\nprint(1)\n");
    const { runtime, execs } = fakeRuntime([{ exitCode: 0, stdout: 'héllo\n1\n' }]);
    const box = new CodeBox({ runtime });
    expect(await box.runScript(script)).toBe('héllo\n1\n');
    expect(execs[0]!.args).toEqual(['-c', "print('héllo')\nprint(1)\n"]);
    const missing = await rejection(box.runScript(path.join(tmp, 'nope.py')));
    expect((missing as NodeJS.ErrnoException).code).toBe('ENOENT');
    expect(execs).toHaveLength(1);
  });

  it('a program the image lacks (exec rejects with Execution exit 127) becomes ExecError 127; other failures propagate', async () => {
    const notFound = new ExecutionError('execution error: /usr/local/bin/python: not found', { exitCode: 127 });
    const { runtime } = fakeRuntime([notFound]);
    const err = await rejection(new CodeBox({ runtime }).run('print(1)'));
    expect(err).toBeInstanceOf(ExecError);
    expect(err).toMatchObject({ command: 'run()', exitCode: 127, stderr: notFound.message });

    const other = new ExecutionError('execution error: agent went away');
    const two = fakeRuntime([other]);
    expect(await rejection(new CodeBox({ runtime: two.runtime }).run('1'))).toBe(other);
    const pull = new ImageError('images error: python:slim not found');
    const three = { create: async () => Promise.reject(pull) } as unknown as JsBoxlite;
    expect(await rejection(new CodeBox({ runtime: three }).run('1'))).toBe(pull);
  });
});

describe('CodeBox.installPackage(s)', () => {
  it('installPackage runs `pip install NAME` and resolves to stdout', async () => {
    const { runtime, execs } = fakeRuntime([{ exitCode: 0, stdout: 'Successfully installed requests-2.0\n', stderr: 'WARNING: root\n' }]);
    expect(await new CodeBox({ runtime }).installPackage('requests==2.0')).toBe('Successfully installed requests-2.0\n');
    expect(execs).toEqual([{ cmd: 'pip', args: ['install', 'requests==2.0'], env: undefined, tty: false }]);
  });

  it("installPackage failure is ExecError(\"installPackage('NAME')\")", async () => {
    const stderr = 'ERROR: No matching distribution found for does-not-exist\n';
    const { runtime } = fakeRuntime([{ exitCode: 1, stderr }]);
    const err = await rejection(new CodeBox({ runtime }).installPackage('does-not-exist'));
    expect(err).toBeInstanceOf(ExecError);
    expect(err).toMatchObject({ command: "installPackage('does-not-exist')", exitCode: 1, stderr });
    expect(err.message).toBe(`Command 'installPackage('does-not-exist')' failed with exit code 1: ${stderr}`);
  });

  it("installPackages runs one `pip install A B`; failure is ExecError('installPackages(A, B)')", async () => {
    const { runtime, execs } = fakeRuntime([{ exitCode: 0, stdout: 'ok\n' }, { exitCode: 2, stderr: 'bad\n' }]);
    const box = new CodeBox({ runtime });
    expect(await box.installPackages('numpy', 'pandas')).toBe('ok\n');
    const err = await rejection(box.installPackages('a', 'b', 'c'));
    expect(execs.map((e) => [e.cmd, e.args])).toEqual([
      ['pip', ['install', 'numpy', 'pandas']],
      ['pip', ['install', 'a', 'b', 'c']],
    ]);
    expect(err).toMatchObject({ command: 'installPackages(a, b, c)', exitCode: 2, stderr: 'bad\n' });
  });
});
