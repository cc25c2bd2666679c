import YAML from 'yaml';
import { ConfigError } from '../index.js';

/** Left-aligned columns, three spaces apart, like docker's tables. */
export function table(rows: string[][]): string {
  const widths = rows[0]!.map((_, i) => Math.max(...rows.map((r) => r[i]!.length)));
  return rows
    .map((r) => r.map((c, i) => (i === r.length - 1 ? c : c.padEnd(widths[i]! + 3))).join('').trimEnd())
    .join('\n');
}

/** `--format` values every listing command accepts. */
export const FORMAT_HELP = "output format: table, json, yaml, or a Go-style template such as '{{.id}} {{.state.status}}'";

/**
 * Renders items the way `--format` asks. Templates support `{{.a.b}}` (keys matched
 * case-insensitively, so docker's `{{.ID}}` works) and `{{json .}}` / `{{json .a}}`;
 * a full Go template engine would be a dependency for very little.
 */
export function render<T extends object>(items: T[], format: string, asTable: (items: T[]) => string): string {
  switch (format) {
    case 'table':
      return asTable(items) + '\n';
    case 'json':
      return JSON.stringify(items, null, 2) + '\n';
    case 'yaml':
      return YAML.stringify(items);
    default:
      if (!format.includes('{{')) throw new ConfigError(`--format must be table, json, yaml or a {{template}}, got ${JSON.stringify(format)}`);
      return items.map((item) => template(format, item)).join('\n') + (items.length ? '\n' : '');
  }
}

function lookup(value: unknown, path: string): unknown {
  let v = value;
  for (const key of path.split('.').filter(Boolean)) {
    if (v === null || typeof v !== 'object') return undefined;
    const obj = v as Record<string, unknown>;
    const k = Object.keys(obj).find((name) => name.toLowerCase() === key.toLowerCase());
    v = k === undefined ? undefined : obj[k];
  }
  return v;
}

export function template(tpl: string, item: unknown): string {
  return tpl
    .replace(/\\n/g, '\n')
    .replace(/\\t/g, '\t')
    .replace(/\{\{\s*(json\s+)?\.([\w.]*)\s*\}\}/g, (_, json: string | undefined, path: string) => {
      const v = lookup(item, path);
      if (json) return JSON.stringify(v);
      if (v === undefined || v === null) return '';
      return typeof v === 'object' ? JSON.stringify(v) : String(v);
    });
}
