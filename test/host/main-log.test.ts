// box.logs() over a rotated main.log (src/shim/main-process.ts bounds it: main.log.1 holds the
// generation before): the older output first, and a follower that sees the rotation drains the
// rest of the old file before reading the new one. No VM: the files are what the shim writes.
import fs from 'node:fs';
import path from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { JsBoxlite } from '../../dist/index.js';
import { scratchDir } from '../fixtures/images.js';
import { ROOT } from './helpers.js';

const scratch = scratchDir('main-log');
afterAll(() => scratch.cleanup());

async function collect(gen: AsyncGenerator<Buffer>): Promise<string> {
  const parts: Buffer[] = [];
  for await (const b of gen) parts.push(b);
  return Buffer.concat(parts).toString();
}

describe('box.logs() and the rotated main.log', () => {
  it('shows main.log.1 before main.log, tail counting across both', async () => {
    const rt = new JsBoxlite({ homeDir: path.join(scratch.dir, 'home') });
    // busybox test image: Cmd ["sh"], so logs() is the main process's log.
    const box = await rt.create({ rootfsPath: path.join(ROOT, '.cache/images/busybox'), autoRemove: false });
    const info = await box.inspect();
    const logs = path.dirname(info.paths.mainLog);
    fs.mkdirSync(logs, { recursive: true });
    fs.writeFileSync(`${info.paths.mainLog}.1`, 'a\nb\nc');
    fs.writeFileSync(info.paths.mainLog, 'd\ne\n');
    expect(await collect(box.logs())).toBe('a\nb\ncd\ne\n');
    expect(await collect(box.logs({ tail: 3 }))).toBe('b\ncd\ne\n');
    // --console is still the console only.
    fs.writeFileSync(info.paths.consoleLog, 'kernel\n');
    expect(await collect(box.logs({ console: true }))).toBe('kernel\n');
    await rt.remove(box.id, true).catch(() => undefined);
  });
});
