// CodeBox: the reference's Python sandbox (dist/codebox.js of @boxlite-ai/boxlite 0.10), a thin
// layer over SimpleBox.exec. The commands are the reference's exactly (the contract users'
// images are built for): `/usr/local/bin/python -c CODE` (python:slim's path, hardcoded, no
// probing) and `pip install …` with no flags of its own, so pip's configuration comes from the
// image and the box env (PIP_INDEX_URL, PIP_TRUSTED_HOST, … reach pip that way).
import { readFile } from 'node:fs/promises';
import { ExecError, ExecutionError } from '../errors/index.js';
import { SimpleBox, type ExecResult, type SimpleBoxOptions } from './simplebox.js';

/** The reference's default image: an unqualified name, resolved through `imageRegistries` like any other. */
export const CODEBOX_DEFAULT_IMAGE = 'python:slim';
const PYTHON = '/usr/local/bin/python';

export interface CodeBoxOptions extends Omit<SimpleBoxOptions, 'image'> {
  /** Container image with Python (default: 'python:slim'). */
  image?: string;
}

/**
 * A box for running untrusted Python code.
 *
 * ```ts
 * await using codebox = new CodeBox();
 * console.log(await codebox.run("print('Hello, World!')"));
 * ```
 */
export class CodeBox extends SimpleBox {
  /** As the reference: only the image gets a default; memory, cpus and the rest are SimpleBox's. */
  constructor(options: CodeBoxOptions = {}) {
    super({ ...options, image: options.image ?? CODEBOX_DEFAULT_IMAGE });
  }

  /**
   * Runs Python code with `/usr/local/bin/python -c code` and resolves to its stdout (stderr is
   * dropped, as in the reference). A non-zero exit is an `ExecError('run()', code, stderr)`.
   */
  async run(code: string): Promise<string> {
    return this.execOrThrow('run()', PYTHON, '-c', code);
  }

  /** Reads a script on the host (UTF-8; a missing file is the fs ENOENT error) and runs it. */
  async runScript(scriptPath: string): Promise<string> {
    return this.run(await readFile(scriptPath, 'utf-8'));
  }

  /** `pip install packageName`; resolves to pip's stdout, else `ExecError("installPackage('<name>')", …)`. */
  async installPackage(packageName: string): Promise<string> {
    return this.execOrThrow(`installPackage('${packageName}')`, 'pip', 'install', packageName);
  }

  /** `pip install ...packages` in one pip run; else `ExecError('installPackages(a, b)', …)`. */
  async installPackages(...packages: string[]): Promise<string> {
    return this.execOrThrow(`installPackages(${packages.join(', ')})`, 'pip', 'install', ...packages);
  }

  /**
   * exec, then the reference's ExecError on a non-zero exit. A program the image does not have
   * (no python, no pip) makes our exec reject with an ExecutionError carrying exit code 127 (126:
   * not executable); that becomes the same ExecError with that code and the error's message as
   * stderr, so "no python in this image" is caught like any failed run. The reference rejects
   * with its native error there instead (docs/compatibility.md). Other failures (the box would
   * not start, …) propagate unchanged.
   */
  private async execOrThrow(label: string, cmd: string, ...args: string[]): Promise<string> {
    let result: ExecResult;
    try {
      // The reference's call form exactly, so a subclass overriding exec sees what it would there.
      result = await this.exec(cmd, ...args);
    } catch (err) {
      if (err instanceof ExecutionError && (err.exitCode === 127 || err.exitCode === 126)) {
        throw new ExecError(label, err.exitCode, err.message);
      }
      throw err;
    }
    if (result.exitCode !== 0) throw new ExecError(label, result.exitCode, result.stderr);
    return result.stdout;
  }
}
