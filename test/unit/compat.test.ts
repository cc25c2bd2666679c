// The compatibility test (issue 7 §2): test/compat/program.ts uses every public API of
// @boxlite-ai/boxlite 0.10 and must type-check against the reference's declarations
// (test/compat/reference, a copy of its dist/*.d.ts) and against ours; assignability.ts checks
// that our instances are assignable to the reference's types; every export of the reference's
// index exists here with the same kind, and every constant has the reference's value.
import fs from 'node:fs';
import path from 'node:path';
import ts from 'typescript';
import { describe, expect, it } from 'vitest';
import * as api from '../../src/index.js';

const compat = path.resolve(import.meta.dirname, '../compat');

function diagnostics(configFile: string, extraFiles: string[] = []): string[] {
  const parsed = ts.getParsedCommandLineOfConfigFile(configFile, {}, {
    ...ts.sys,
    onUnRecoverableConfigFileDiagnostic: (d) => {
      throw new Error(ts.flattenDiagnosticMessageText(d.messageText, '\n'));
    },
  })!;
  const program = ts.createProgram([...parsed.fileNames, ...extraFiles], parsed.options);
  return ts.getPreEmitDiagnostics(program).map((d) => {
    const where = d.file ? `${path.relative(compat, d.file.fileName)}(${d.file.getLineAndCharacterOfPosition(d.start ?? 0).line + 1})` : '';
    return `${where}: ${ts.flattenDiagnosticMessageText(d.messageText, '\n')}`;
  });
}

type Kind = 'value' | 'type' | 'both';

/** Export name → kind (value, type or both) and, for constants, the literal type's text. */
function exportsOf(file: string): Map<string, { kind: Kind; literal?: string }> {
  const program = ts.createProgram([file], { strict: true, module: ts.ModuleKind.ESNext, moduleResolution: ts.ModuleResolutionKind.Bundler, target: ts.ScriptTarget.ES2022, lib: ['lib.es2022.d.ts', 'lib.esnext.disposable.d.ts'], types: ['node'] });
  const checker = program.getTypeChecker();
  const source = program.getSourceFile(file)!;
  const out = new Map<string, { kind: Kind; literal?: string }>();
  for (const sym of checker.getExportsOfModule(checker.getSymbolAtLocation(source)!)) {
    const target = sym.flags & ts.SymbolFlags.Alias ? checker.getAliasedSymbol(sym) : sym;
    const value = (target.flags & ts.SymbolFlags.Value) !== 0;
    const type = (target.flags & ts.SymbolFlags.Type) !== 0;
    let literal: string | undefined;
    if (target.flags & ts.SymbolFlags.Variable && target.valueDeclaration) {
      const t = checker.getTypeOfSymbolAtLocation(target, target.valueDeclaration);
      if (t.isLiteral()) literal = checker.typeToString(t);
    }
    out.set(sym.name, { kind: value && type ? 'both' : value ? 'value' : 'type', literal });
  }
  return out;
}

describe('compatibility with @boxlite-ai/boxlite 0.10', () => {
  it('the program type-checks against the reference declarations', () => {
    expect(diagnostics(path.join(compat, 'tsconfig.reference.json'))).toEqual([]);
  }, 120_000);

  it('the same program, and the assignability checks, type-check against ours', () => {
    expect(diagnostics(path.join(compat, 'tsconfig.ours.json'))).toEqual([]);
  }, 120_000);

  it('the checks can fail: an incompatible assignment is reported', () => {
    const tmp = path.join(compat, `incompatible-${process.pid}.ts`);
    fs.writeFileSync(
      tmp,
      "import type * as ref from './reference/native-contracts.js';\n" +
        "import * as ours from '../../src/index.js';\n" +
        'declare const simple: ours.SimpleBox;\n' +
        'export const box: ref.JsBox = simple;\n',
    );
    try {
      const found = diagnostics(path.join(compat, 'tsconfig.ours.json'), [tmp]);
      expect(found.length).toBe(1);
      expect(found[0]).toMatch(/incompatible-\d+\.ts\(4\): Type 'SimpleBox' is missing the following properties from type 'JsBox'/);
    } finally {
      fs.rmSync(tmp, { force: true });
    }
  }, 120_000);

  it('exports every name of the reference index with the same kind, and each constant with its value', () => {
    const reference = exportsOf(path.join(compat, 'reference/index.d.ts'));
    const ours = exportsOf(path.resolve(import.meta.dirname, '../../src/index.ts'));
    expect(reference.size).toBeGreaterThan(60);
    const problems: string[] = [];
    for (const [name, r] of reference) {
      const o = ours.get(name);
      if (!o) {
        problems.push(`${name}: missing`);
        continue;
      }
      // A class is both; the reference's `const X` + `type X` pairs are classes here.
      if (r.kind !== o.kind && o.kind !== 'both') problems.push(`${name}: ${r.kind} in the reference, ${o.kind} here`);
      if (r.literal !== undefined) {
        const actual = (api as Record<string, unknown>)[name];
        if (JSON.stringify(actual) !== r.literal) problems.push(`${name}: ${JSON.stringify(actual)} here, ${r.literal} in the reference`);
      }
    }
    expect(problems).toEqual([]);
  }, 120_000);
});
