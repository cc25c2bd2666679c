import { spawn } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { inject } from 'vitest';
import type { Box, JsExecution } from '../../dist/index.js';

/** All of one output stream of an execution, as bytes. */
export async function readAll(ex: JsExecution, which: 'stdout' | 'stderr'): Promise<Buffer> {
  const stream = which === 'stdout' ? await ex.stdout() : await ex.stderr();
  const parts: Buffer[] = [];
  for (;;) {
    const chunk = await stream.nextBuffer();
    if (chunk === null) return Buffer.concat(parts);
    parts.push(chunk);
  }
}

export interface RunResult {
  exitCode: number;
  errorMessage?: string;
  stdout: string;
  stderr: string;
}

/** Runs a command to completion and collects both streams as text. */
export async function run(
  box: Box,
  cmd: string,
  args: string[] = [],
  opts: { env?: Array<[string, string]>; user?: string; cwd?: string; tty?: boolean } = {},
): Promise<RunResult> {
  const ex = await box.exec(cmd, args, opts.env ?? null, opts.tty ?? false, opts.user ?? null, null, opts.cwd ?? null);
  const [stdout, stderr] = await Promise.all([readAll(ex, 'stdout'), readAll(ex, 'stderr')]);
  const { exitCode, errorMessage } = await ex.wait();
  return { exitCode, errorMessage, stdout: stdout.toString('utf8'), stderr: stderr.toString('utf8') };
}

/** Homes made by scratchHome(): setup.ts reports their boxes too when a test fails. */
export const testHomes: string[] = [];

/** A fresh, empty BOXLITE_HOME (the guest runtime is shared from outside every home). */
export function scratchHome(prefix = 'boxlite-scratch-'): string {
  const home = fs.mkdtempSync(path.join(os.tmpdir(), prefix));
  testHomes.push(home);
  return home;
}

export interface CliResult {
  code: number | null;
  stdout: string;
  stderr: string;
}

/** Runs the real `boxlite` bin as a user would, against the suite's home (or `home`). */
export function boxlite(args: string[], input?: string, home = inject('home')): Promise<CliResult> {
  const bin = path.join(inject('root'), 'dist', 'cli', 'main.js');
  return new Promise((resolve) => {
    const child = spawn(process.execPath, [bin, '--home', home, ...args], { stdio: ['pipe', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (c) => (stdout += c));
    child.stderr.on('data', (c) => (stderr += c));
    child.on('close', (code) => resolve({ code, stdout, stderr }));
    child.stdin.end(input ?? '');
  });
}
