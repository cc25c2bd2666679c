import { describe, expect, it } from 'vitest';
import { lastLines } from '../../src/runtime/box.js';

const tail = (text: string, n: number) => lastLines(Buffer.from(text), n).toString();

describe('box.logs({ tail }) line selection', () => {
  it('keeps the last n lines with their newlines', () => {
    expect(tail('a\nb\nc\n', 2)).toBe('b\nc\n');
    expect(tail('a\nb\nc\n', 1)).toBe('c\n');
    expect(tail('a\nb\nc\n', 3)).toBe('a\nb\nc\n');
  });

  it('counts a last line without a newline, and copes with n beyond the log or 0', () => {
    expect(tail('a\nb\nc', 1)).toBe('c');
    expect(tail('a\nb\nc', 2)).toBe('b\nc');
    expect(tail('a\nb\n', 10)).toBe('a\nb\n');
    expect(tail('a\nb\n', 0)).toBe('');
    expect(tail('', 3)).toBe('');
  });
});
