import fs from 'node:fs';
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import * as api from '../../src/index.js';
import { ERROR_TABLE, errorFromWire, toBoxliteError, type ErrorCode } from '../../src/errors/index.js';

const doc = fs.readFileSync(path.resolve(import.meta.dirname, '../../docs/errors.md'), 'utf8');

describe('error table', () => {
  it('documents every code in docs/errors.md with its prefix, CLI exit code and HTTP status', () => {
    for (const [code, row] of Object.entries(ERROR_TABLE)) {
      const line = doc.split('\n').find((l) => l.startsWith(`| \`${code}\``));
      expect(line, `docs/errors.md row for ${code}`).toBeDefined();
      const cells = line!.split('|').map((c) => c.trim());
      expect(cells[2]).toBe(`\`${row.prefix.trimEnd()}\``);
      expect(cells[3]).toBe(String(row.cliExit));
      expect(cells[4]).toBe(String(row.httpStatus));
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
