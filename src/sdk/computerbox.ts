// ComputerBox: a desktop driven by mouse and keyboard calls, as the reference's computerbox.js.
// Every method is one fixed command in the box (xwininfo, xdotool, python3 with PIL); the image
// supplies those programs and starts the desktop from its own entrypoint. The commands, labels,
// defaults and errors are the reference's contract, so programs and agents written for it (which
// parse our errors and rely on the exact xdotool semantics) behave the same here.
import { ExecError, ParseError, TimeoutError } from '../errors/index.js';
import * as constants from './constants.js';
import { SimpleBox, type ExecResult, type SimpleBoxOptions } from './simplebox.js';

export interface ComputerBoxOptions extends Omit<SimpleBoxOptions, 'image' | 'cpus' | 'memoryMib'> {
  /** Number of CPU cores (default 2). */
  cpus?: number;
  /** Memory in MiB (default 2048). */
  memoryMib?: number;
  /** Host port for the desktop's HTTP GUI, guest port 3000 (default 3000; 0 = any free port). */
  guiHttpPort?: number;
  /** Host port for the desktop's HTTPS GUI, guest port 3001 (default 3001; 0 = any free port). */
  guiHttpsPort?: number;
}

/** A screenshot: base64 PNG data and its size. */
export interface Screenshot {
  /** Base64-encoded PNG. */
  data: string;
  /** Width in pixels (the configured display width, as the reference reports it). */
  width: number;
  /** Height in pixels. */
  height: number;
  format: 'png';
}

const SCROLL_BUTTONS: Record<string, string> = { up: '4', down: '5', left: '6', right: '7' };

// The reference's PIL code, verbatim: ImageGrab reads the X display named by $DISPLAY.
const SCREENSHOT_CODE = `
from PIL import ImageGrab
import io
import base64
img = ImageGrab.grab()
buffer = io.BytesIO()
img.save(buffer, format="PNG")
print(base64.b64encode(buffer.getvalue()).decode("utf-8"))
`.trim();

const sleep = (ms: number) => new Promise<void>((resolve) => setTimeout(resolve, ms));

/**
 * A desktop environment (default image lscr.io/linuxserver/webtop:ubuntu-xfce, which the
 * `image` option cannot change: only `rootfsPath` replaces it, as in the reference), reachable
 * from a web browser on the GUI ports and automated with mouse, keyboard and screenshot calls.
 *
 * ```ts
 * await using desktop = new ComputerBox();
 * await desktop.waitUntilReady();
 * await desktop.mouseMove(100, 200);
 * await desktop.leftClick();
 * const shot = await desktop.screenshot();
 * ```
 */
export class ComputerBox extends SimpleBox {
  constructor(options: ComputerBoxOptions = {}) {
    const {
      cpus = constants.COMPUTERBOX_CPUS,
      memoryMib = constants.COMPUTERBOX_MEMORY_MIB,
      guiHttpPort = constants.COMPUTERBOX_GUI_HTTP_PORT,
      guiHttpsPort = constants.COMPUTERBOX_GUI_HTTPS_PORT,
      env = {},
      ports = [],
      ...rest
    } = options;
    const width = String(constants.COMPUTERBOX_DISPLAY_WIDTH);
    const height = String(constants.COMPUTERBOX_DISPLAY_HEIGHT);
    super({
      ...rest,
      // Set after the spread: a caller's `image` is ignored, as in the reference.
      image: constants.COMPUTERBOX_IMAGE,
      cpus,
      memoryMib,
      // The display the tools talk to and the size webtop's Selkies should use; the user's env wins.
      env: {
        DISPLAY: constants.COMPUTERBOX_DISPLAY_NUMBER,
        DISPLAY_SIZEW: width,
        DISPLAY_SIZEH: height,
        SELKIES_MANUAL_WIDTH: width,
        SELKIES_MANUAL_HEIGHT: height,
        SELKIES_UI_SHOW_SIDEBAR: 'false',
        ...env,
      },
      ports: [
        { hostPort: guiHttpPort, guestPort: constants.COMPUTERBOX_GUI_HTTP_PORT },
        { hostPort: guiHttpsPort, guestPort: constants.COMPUTERBOX_GUI_HTTPS_PORT },
        ...ports,
      ],
    });
  }

  /** Runs a command; a non-zero exit becomes ExecError(label, exitCode, stderr). */
  private async execOrThrow(label: string, cmd: string, ...args: string[]): Promise<ExecResult> {
    const result = await this.exec(cmd, ...args);
    if (result.exitCode !== 0) throw new ExecError(label, result.exitCode, result.stderr);
    return result;
  }

  /**
   * Waits until the X root has a window named "xfdesktop" at the display size (XFCE's desktop
   * window: the desktop is drawn). Polls every 2 s; a failing probe (X not up yet, or no box yet)
   * counts as not ready. Throws TimeoutError after `timeout` seconds (default 60); like the
   * reference it may overshoot by one probe plus one pause.
   */
  async waitUntilReady(timeout: number = constants.DESKTOP_READY_TIMEOUT): Promise<void> {
    const start = Date.now();
    const expectedSize = `${constants.COMPUTERBOX_DISPLAY_WIDTH}x${constants.COMPUTERBOX_DISPLAY_HEIGHT}`;
    for (;;) {
      if ((Date.now() - start) / 1000 > timeout) {
        throw new TimeoutError(`Desktop did not become ready within ${timeout} seconds`);
      }
      try {
        const result = await this.exec('xwininfo', '-tree', '-root');
        if (result.stdout.includes('xfdesktop') && result.stdout.includes(expectedSize)) return;
      } catch {
        // not ready yet (e.g. xwininfo missing while the image is still coming up): retry
      }
      await sleep(constants.DESKTOP_READY_RETRY_DELAY * 1000);
    }
  }

  /** A PNG of the whole screen, base64. width/height are the configured display size. */
  async screenshot(): Promise<Screenshot> {
    const result = await this.execOrThrow('screenshot()', 'python3', '-c', SCREENSHOT_CODE);
    return {
      data: result.stdout.trim(),
      width: constants.COMPUTERBOX_DISPLAY_WIDTH,
      height: constants.COMPUTERBOX_DISPLAY_HEIGHT,
      format: 'png',
    };
  }

  /** Moves the pointer to absolute screen coordinates. */
  async mouseMove(x: number, y: number): Promise<void> {
    await this.execOrThrow(`mouseMove(${x}, ${y})`, 'xdotool', 'mousemove', x.toString(), y.toString());
  }

  /** Clicks the left button where the pointer is. */
  async leftClick(): Promise<void> {
    await this.execOrThrow('leftClick()', 'xdotool', 'click', '1');
  }

  /** Clicks the right button where the pointer is. */
  async rightClick(): Promise<void> {
    await this.execOrThrow('rightClick()', 'xdotool', 'click', '3');
  }

  /** Clicks the middle button where the pointer is. */
  async middleClick(): Promise<void> {
    await this.execOrThrow('middleClick()', 'xdotool', 'click', '2');
  }

  /** Two left clicks 100 ms apart. */
  async doubleClick(): Promise<void> {
    await this.execOrThrow('doubleClick()', 'xdotool', 'click', '--repeat', '2', '--delay', '100', '1');
  }

  /** Three left clicks 100 ms apart. */
  async tripleClick(): Promise<void> {
    await this.execOrThrow('tripleClick()', 'xdotool', 'click', '--repeat', '3', '--delay', '100', '1');
  }

  /** Presses the left button at the start, moves to the end, releases (one xdotool run). */
  async leftClickDrag(startX: number, startY: number, endX: number, endY: number): Promise<void> {
    await this.execOrThrow(
      'leftClickDrag()',
      'xdotool',
      'mousemove', startX.toString(), startY.toString(),
      'mousedown', '1',
      'sleep', '0.1',
      'mousemove', endX.toString(), endY.toString(),
      'sleep', '0.1',
      'mouseup', '1',
    );
  }

  /** The pointer's [x, y]; ParseError when xdotool's output has no X= and Y= lines. */
  async cursorPosition(): Promise<[number, number]> {
    const result = await this.execOrThrow('cursorPosition()', 'xdotool', 'getmouselocation', '--shell');
    let x: number | undefined;
    let y: number | undefined;
    for (const line of result.stdout.split('\n')) {
      const trimmed = line.trim();
      if (trimmed.startsWith('X=')) x = parseInt(trimmed.slice(2), 10);
      else if (trimmed.startsWith('Y=')) y = parseInt(trimmed.slice(2), 10);
    }
    if (x !== undefined && y !== undefined) return [x, y];
    throw new ParseError('Failed to parse cursor position from xdotool output');
  }

  /** Types text into the focused window ("--" so text starting with "-" is not an option). */
  async type(text: string): Promise<void> {
    await this.execOrThrow('type()', 'xdotool', 'type', '--', text);
  }

  /** Presses a key or combination in xdotool's syntax: 'Return', 'ctrl+c', 'alt+Tab'. */
  async key(keySequence: string): Promise<void> {
    await this.execOrThrow('key()', 'xdotool', 'key', keySequence);
  }

  /**
   * Scrolls at (x, y): `amount` clicks of wheel button 4/5/6/7 for up/down/left/right (any case).
   * An unknown direction throws a plain Error before anything runs, as in the reference.
   */
  async scroll(x: number, y: number, direction: 'up' | 'down' | 'left' | 'right', amount = 3): Promise<void> {
    const name = direction.toLowerCase();
    // hasOwn: 'constructor' and friends are not directions either.
    const button = Object.hasOwn(SCROLL_BUTTONS, name) ? SCROLL_BUTTONS[name] : undefined;
    if (!button) throw new Error(`Invalid scroll direction: ${direction}`);
    await this.execOrThrow('scroll()', 'xdotool', 'mousemove', x.toString(), y.toString(), 'click', '--repeat', amount.toString(), button);
  }

  /** The screen's [width, height]; ParseError unless xdotool prints exactly two numbers. */
  async getScreenSize(): Promise<[number, number]> {
    const result = await this.execOrThrow('getScreenSize()', 'xdotool', 'getdisplaygeometry');
    const parts = result.stdout.trim().split(/\s+/);
    if (parts.length === 2) return [parseInt(parts[0]!, 10), parseInt(parts[1]!, 10)];
    throw new ParseError('Failed to parse screen size from xdotool output');
  }
}
