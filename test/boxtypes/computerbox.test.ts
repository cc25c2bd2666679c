// ComputerBox on a real X display in a VM (the `desktop` test image: Xvfb, xdotool, xwininfo, PIL,
// xterm, and an xev window named "xfdesktop" that logs button and key events). Every method is
// checked by its effect: the pointer read back, clicks/scrolls/drag/keys in the X event log with
// their coordinates, typed text landing in a file through an xterm, a screenshot decoded to known
// pixel colours. The image's entrypoint starts the desktop.
import fs from 'node:fs';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, inject, it } from 'vitest';
import { ComputerBox, ExecError, JsBoxlite, TimeoutError } from '../../dist/index.js';
import { decodePng } from './png.js';

const DESKTOP = path.join(inject('root'), '.cache', 'images', 'desktop');
const EVENTS_LOG = '/tmp/desktop-events.log';

interface XEvent {
  type: string;
  root: [number, number];
  detail: string; // "button N" or the keysym name
}

/** The ButtonPress/ButtonRelease/KeyPress events of an xev log, in order. */
function parseXev(log: string): XEvent[] {
  const events: XEvent[] = [];
  for (const block of log.split(/\n(?=\S)/)) {
    const type = /^(ButtonPress|ButtonRelease|KeyPress) event/.exec(block)?.[1];
    if (!type) continue;
    const root = /root:\((-?\d+),(-?\d+)\)/.exec(block);
    const detail = type === 'KeyPress' ? /keysym 0x[0-9a-f]+, (\w+)\)/.exec(block)?.[1] : /button (\d+)/.exec(block)?.[1];
    events.push({ type, root: [Number(root?.[1]), Number(root?.[2])], detail: detail ?? '?' });
  }
  return events;
}

let runtime: JsBoxlite;
let desktop: ComputerBox;

beforeAll(async () => {
  if (!fs.existsSync(path.join(DESKTOP, 'index.json'))) {
    throw new Error(`missing ${DESKTOP}: node scripts/make-test-image.mjs ${DESKTOP} --variant desktop`);
  }
  runtime = new JsBoxlite({ homeDir: inject('home') });
  desktop = new ComputerBox({ runtime, rootfsPath: DESKTOP, guiHttpPort: 0, guiHttpsPort: 0 });
});

afterAll(async () => {
  await desktop?.stop();
});

describe('ComputerBox on the desktop image', () => {
  it('waitUntilReady() returns once the entrypoint has the desktop up; the screen is 1024x768', async () => {
    const t0 = Date.now(); // the box is created and booted by the first probe
    await desktop.waitUntilReady(300);
    console.log(`ComputerBox: boot → waitUntilReady ${((Date.now() - t0) / 1000).toFixed(1)} s`);
    expect(await desktop.getScreenSize()).toEqual([1024, 768]);
    // Nobody but the image started it: the entrypoint is the container's PID 1.
    expect((await desktop.exec('cat', '/proc/1/cmdline')).stdout.split('\0')).toContain('/usr/local/bin/boxlite-desktop');
  });

  it('mouseMove then cursorPosition reads the pointer back', async () => {
    await desktop.mouseMove(100, 200);
    expect(await desktop.cursorPosition()).toEqual([100, 200]);
    await desktop.mouseMove(713, 42);
    expect(await desktop.cursorPosition()).toEqual([713, 42]);
  });

  it('clicks, scrolls, a drag and a key combination arrive at the desktop window with their coordinates', async () => {
    await desktop.mouseMove(50, 60);
    await desktop.leftClick();
    await desktop.rightClick();
    await desktop.middleClick();
    await desktop.doubleClick();
    await desktop.tripleClick();
    await desktop.scroll(400, 300, 'up', 2);
    await desktop.scroll(401, 301, 'DOWN' as 'down');
    await desktop.scroll(402, 302, 'left', 1);
    await desktop.scroll(403, 303, 'right', 1);
    await desktop.leftClickDrag(150, 160, 300, 310);
    await desktop.key('ctrl+c');
    // xev logs asynchronously: wait until the last action (the key combination) is in the log.
    let events: XEvent[] = [];
    for (let i = 0; i < 60; i++) {
      events = parseXev((await desktop.exec('cat', EVENTS_LOG)).stdout);
      if (events.some((e) => e.type === 'KeyPress' && e.detail === 'c')) break;
      await new Promise((r) => setTimeout(r, 500));
    }
    const presses = (button: string) => events.filter((e) => e.type === 'ButtonPress' && e.detail === button).map((e) => e.root.join(','));
    // left: 1 click + 2 (double) + 3 (triple) at (50,60), then the drag's press at its start
    expect(presses('1')).toEqual([...Array(6).fill('50,60'), '150,160']);
    expect(presses('3')).toEqual(['50,60']);
    expect(presses('2')).toEqual(['50,60']);
    expect(presses('4')).toEqual(['400,300', '400,300']);
    expect(presses('5')).toEqual(['401,301', '401,301', '401,301']);
    expect(presses('6')).toEqual(['402,302']);
    expect(presses('7')).toEqual(['403,303']);
    const lastRelease = events.filter((e) => e.type === 'ButtonRelease' && e.detail === '1').at(-1);
    expect(lastRelease?.root).toEqual([300, 310]);
    expect(events.filter((e) => e.type === 'KeyPress').map((e) => e.detail)).toEqual(['Control_L', 'c']);
  });

  it('type() and key() put text, non-ASCII included, into the window under the pointer; screenshot() shows it', async () => {
    // An xterm whose shell writes what it reads to a file: typed text becomes checkable bytes.
    await desktop.exec('sh', '-c', "nohup xterm -T typetarget -geometry 40x5+200+300 -bg '#3366cc' -e sh -c 'cat > /root/typed' >/tmp/xterm.log 2>&1 &");
    let mapped = '';
    for (let i = 0; i < 120 && !/IsViewable/.test(mapped); i++) {
      mapped = (await desktop.exec('sh', '-c', 'xwininfo -name typetarget 2>&1; sleep 0.5')).stdout;
    }
    expect(mapped).toContain('IsViewable');
    await desktop.mouseMove(300, 330); // focus follows the pointer (no window manager)
    await desktop.type('héllo world');
    await desktop.key('Return');
    let typed = '';
    for (let i = 0; i < 60 && typed !== 'héllo world\n'; i++) {
      typed = (await desktop.exec('sh', '-c', 'cat /root/typed 2>/dev/null; sleep 0.5')).stdout;
    }
    expect(typed).toBe('héllo world\n');

    const t0 = Date.now();
    const shot = await desktop.screenshot();
    console.log(`ComputerBox: screenshot() ${((Date.now() - t0) / 1000).toFixed(1)} s, ${shot.data.length} base64 chars`);
    expect([shot.width, shot.height, shot.format]).toEqual([1024, 768, 'png']);
    const png = decodePng(Buffer.from(shot.data, 'base64'));
    expect([png.width, png.height]).toEqual([1024, 768]);
    expect(png.pixel(600, 100)).toEqual([255, 255, 255]); // the xev "desktop" window
    expect(png.pixel(400, 350)).toEqual([51, 102, 204]); // the xterm's #3366cc background
  });
});

describe('ComputerBox without a desktop', () => {
  it('waitUntilReady times out naming the timeout, and a failing xdotool is an ExecError with its stderr', async () => {
    // The desktop image with its entrypoint replaced: no X server on :9 (nor anywhere).
    const box = new ComputerBox({
      runtime,
      rootfsPath: DESKTOP,
      guiHttpPort: 0,
      guiHttpsPort: 0,
      env: { DISPLAY: ':9' },
      entrypoint: ['/bin/sleep', '3600'],
    });
    try {
      const t0 = Date.now();
      const err = await box.waitUntilReady(5).then(
        () => null,
        (e: unknown) => e,
      );
      expect(err).toBeInstanceOf(TimeoutError);
      expect((err as Error).message).toBe('Desktop did not become ready within 5 seconds');
      expect(Date.now() - t0).toBeGreaterThanOrEqual(5_000);
      const moveErr = await box.mouseMove(1, 2).then(
        () => null,
        (e: unknown) => e,
      );
      expect(moveErr).toBeInstanceOf(ExecError);
      expect(moveErr).toMatchObject({ command: 'mouseMove(1, 2)', exitCode: 1 });
      expect((moveErr as ExecError).stderr).toContain("Can't open display");
    } finally {
      await box.stop();
    }
  });
});
