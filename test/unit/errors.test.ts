import fs from 'node:fs';
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import * as api from '../../src/index.js';
import { ERROR_TABLE, errorFromWire, toBoxliteError, type ErrorCode } from '../../src/errors/index.js';

const doc = fs.readFileSync(path.resolve(import.meta.dirname, '../../docs/errors.md'), 'utf8');

describe('error table', () => {
  it('documents every code in docs/errors.md with its prefix, CLI exit code, HTTP status, REST code and class', () => {
    const rows = doc.split('\n').filter((l) => /^\| `[A-Za-z]+` \|/.test(l));
    expect(rows.map((l) => l.split('|')[1]!.trim().replace(/`/g, '')).filter((c) => c in ERROR_TABLE)).toEqual(Object.keys(ERROR_TABLE));
    for (const [code, row] of Object.entries(ERROR_TABLE)) {
      const line = rows.find((l) => l.startsWith(`| \`${code}\``));
      expect(line, `docs/errors.md row for ${code}`).toBeDefined();
      const cells = line!.split('|').map((c) => c.trim());
      expect(cells[2]).toBe(`\`${row.prefix.trimEnd()}\``);
      expect(cells[3]).toBe(String(row.cliExit));
      expect(cells[4]).toBe(String(row.httpStatus));
      expect(cells[5]).toBe(`\`${row.httpCode}\``);
      const cls = cells[7]!.replace(/`/g, '');
      const exported = (api as unknown as Record<string, unknown>)[cls];
      expect(typeof exported, `${cls} exported from src/index.ts`).toBe('function');
    }
  });

  it('uses the reference REST status for the codes the REST contract lists', () => {
    const want: Partial<Record<ErrorCode, [number, string]>> = {
      InvalidArgument: [400, 'invalid_argument'],
      Unsupported: [400, 'unsupported'],
      UnsupportedEngine: [400, 'unsupported'],
      NotFound: [404, 'not_found'],
      SessionReaped: [410, 'session_reaped'],
      AlreadyExists: [409, 'already_exists'],
      InvalidState: [409, 'invalid_state'],
      Stopped: [409, 'stopped'],
      Image: [422, 'image_pull_failed'],
      Execution: [422, 'execution_failed'],
      ResourceExhausted: [429, 'resource_exhausted'],
      Network: [503, 'network_unavailable'],
      Portal: [503, 'upstream_unavailable'],
      Engine: [503, 'engine_unavailable'],
    };
    for (const [code, [status, rest]] of Object.entries(want)) {
      expect([ERROR_TABLE[code as ErrorCode].httpStatus, ERROR_TABLE[code as ErrorCode].httpCode], code).toEqual([status, rest]);
    }
  });

  it('exports a class per code whose instances carry the code and the spec prefix', () => {
    const classes: Array<[string, ErrorCode]> = [
      ['UnsupportedEngineError', 'UnsupportedEngine'],
      ['EngineError', 'Engine'],
      ['ConfigError', 'Config'],
      ['StorageError', 'Storage'],
      ['ImageError', 'Image'],
      ['PortalError', 'Portal'],
      ['NetworkError', 'Network'],
      ['ExecutionError', 'Execution'],
      ['InternalError', 'Internal'],
      ['AlreadyExistsError', 'AlreadyExists'],
      ['InvalidStateError', 'InvalidState'],
      ['InvalidArgumentError', 'InvalidArgument'],
      ['UnsupportedError', 'Unsupported'],
      ['StoppedError', 'Stopped'],
      ['ResourceExhaustedError', 'ResourceExhausted'],
      ['SessionReapedError', 'SessionReaped'],
    ];
    for (const [name, code] of classes) {
      const Cls = (api as unknown as Record<string, new (m: string) => api.BoxliteError>)[name]!;
      const e = new Cls('something broke');
      expect(e).toBeInstanceOf(api.BoxliteError);
      expect(e.code).toBe(code);
      expect(e.name).toBe(name);
      expect(e.message.startsWith(ERROR_TABLE[code].prefix.trimEnd())).toBe(true);
    }
    expect(new api.ConfigError('cpus must be between 1 and 8').message).toBe('configuration error: cpus must be between 1 and 8');
    expect(new api.NotFoundError('box', '01ABC').message).toBe('box not found: 01ABC');
    expect(new api.ImageError('images error: x').message).toBe('images error: x');
    expect(new api.UnsupportedError('snapshots not implemented yet').message).toBe('unsupported: snapshots not implemented yet');
    expect(new api.StoppedError('Handle invalidated after stop(). Use runtime.get() to get a new handle.').message).toBe(
      'stopped: Handle invalidated after stop(). Use runtime.get() to get a new handle.',
    );
  });

  it('keeps the reference ExecError, TimeoutError and ParseError shapes', () => {
    const e = new api.ExecError('false', 1, 'boom');
    expect(e).toBeInstanceOf(api.BoxliteError);
    expect([e.command, e.exitCode, e.stderr]).toEqual(['false', 1, 'boom']);
    expect(e.message).toBe("Command 'false' failed with exit code 1: boom");
    expect(new api.TimeoutError('too slow').code).toBe('Timeout');
    expect(new api.ParseError('bad').code).toBe('Parse');
    expect(new api.BoxliteError('plain').message).toBe('plain');
  });

  it('round-trips errors across a process boundary and wraps foreign errors', () => {
    const wire = JSON.parse(JSON.stringify(new api.PortalError('connection timeout')));
    const back = errorFromWire(wire);
    expect(back).toBeInstanceOf(api.PortalError);
    expect(back.message).toBe('portal error: connection timeout');
    const notFound = errorFromWire(new api.NotFoundError('box', 'x').toJSON());
    expect(notFound.code).toBe('NotFound');
    expect(notFound.message).toBe('box not found: x');
    const wrapped = toBoxliteError(new Error('ENOSPC: no space left'), 'Storage');
    expect(wrapped.message).toBe('storage error: ENOSPC: no space left');
    expect(errorFromWire({ code: 'Bogus', message: 'm' }).code).toBe('Internal');
  });
});
