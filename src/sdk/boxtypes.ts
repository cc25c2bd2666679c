// The reference's specialised boxes (CodeBox, BrowserBox, ComputerBox, InteractiveBox, SkillBox).
// They need the image's main process and the host-side network stack, which issue 8 brings; until
// then each constructor throws a coded Unsupported error, so a program written for the reference
// compiles and fails at once with a clear message instead of half-working. The members mirror the
// reference's public surface for type compatibility.
import { UnsupportedError } from '../errors/index.js';
import { notImplemented } from '../runtime/handles.js';
import type { JsBoxlite } from '../runtime/runtime.js';
import type { NetworkSpec, Secret } from '../runtime/options.js';
import { SimpleBox, type SimpleBoxOptions } from './simplebox.js';

function notYet(kind: string): never {
  throw new UnsupportedError(`${kind} not implemented yet (box types arrive with issue 8); use SimpleBox meanwhile`);
}

export interface CodeBoxOptions extends Omit<SimpleBoxOptions, 'image'> {
  /** Image with Python (default 'python:slim'). */
  image?: string;
}

/** A box for running untrusted Python code. */
export class CodeBox extends SimpleBox {
  constructor(_options: CodeBoxOptions = {}) {
    super(notYet('CodeBox'));
  }

  run(_code: string): Promise<string> {
    return notImplemented('CodeBox.run');
  }

  runScript(_scriptPath: string): Promise<string> {
    return notImplemented('CodeBox.runScript');
  }

  installPackage(_packageName: string): Promise<string> {
    return notImplemented('CodeBox.installPackage');
  }

  installPackages(..._packages: string[]): Promise<string> {
    return notImplemented('CodeBox.installPackages');
  }
}

export type BrowserType = 'chromium' | 'firefox' | 'webkit';

export interface BrowserBoxOptions extends Omit<SimpleBoxOptions, 'image' | 'cpus' | 'memoryMib'> {
  browser?: BrowserType;
  memoryMib?: number;
  cpus?: number;
  /** Host port of the Playwright server (default 3000). */
  port?: number;
  /** Host port for CDP (default 9222). */
  cdpPort?: number;
}

/** A browser behind a Playwright server. */
export class BrowserBox extends SimpleBox {
  constructor(_options: BrowserBoxOptions = {}) {
    super(notYet('BrowserBox'));
  }

  start(_timeout?: number): Promise<void> {
    return notImplemented('BrowserBox.start');
  }

  playwrightEndpoint(_timeout?: number): Promise<string> {
    return notImplemented('BrowserBox.playwrightEndpoint');
  }

  endpoint(_timeout?: number): Promise<string> {
    return notImplemented('BrowserBox.endpoint');
  }

  connect(_options?: { timeout?: number }): Promise<unknown> {
    return notImplemented('BrowserBox.connect');
  }

  get browser(): BrowserType {
    return 'chromium';
  }
}

export interface ComputerBoxOptions extends Omit<SimpleBoxOptions, 'image' | 'cpus' | 'memoryMib'> {
  cpus?: number;
  memoryMib?: number;
  guiHttpPort?: number;
  guiHttpsPort?: number;
}

/** A screenshot: base64 PNG data and its size. */
export interface Screenshot {
  data: string;
  width: number;
  height: number;
  format: 'png';
}

/** A desktop reachable from a web browser, driven by mouse and keyboard calls. */
export class ComputerBox extends SimpleBox {
  constructor(_options: ComputerBoxOptions = {}) {
    super(notYet('ComputerBox'));
  }

  waitUntilReady(_timeout?: number): Promise<void> {
    return notImplemented('ComputerBox.waitUntilReady');
  }

  screenshot(): Promise<Screenshot> {
    return notImplemented('ComputerBox.screenshot');
  }

  mouseMove(_x: number, _y: number): Promise<void> {
    return notImplemented('ComputerBox.mouseMove');
  }

  leftClick(): Promise<void> {
    return notImplemented('ComputerBox.leftClick');
  }

  rightClick(): Promise<void> {
    return notImplemented('ComputerBox.rightClick');
  }

  middleClick(): Promise<void> {
    return notImplemented('ComputerBox.middleClick');
  }

  doubleClick(): Promise<void> {
    return notImplemented('ComputerBox.doubleClick');
  }

  tripleClick(): Promise<void> {
    return notImplemented('ComputerBox.tripleClick');
  }

  leftClickDrag(_startX: number, _startY: number, _endX: number, _endY: number): Promise<void> {
    return notImplemented('ComputerBox.leftClickDrag');
  }

  cursorPosition(): Promise<[number, number]> {
    return notImplemented('ComputerBox.cursorPosition');
  }

  type(_text: string): Promise<void> {
    return notImplemented('ComputerBox.type');
  }

  key(_keySequence: string): Promise<void> {
    return notImplemented('ComputerBox.key');
  }

  scroll(_x: number, _y: number, _direction: 'up' | 'down' | 'left' | 'right', _amount?: number): Promise<void> {
    return notImplemented('ComputerBox.scroll');
  }

  getScreenSize(): Promise<[number, number]> {
    return notImplemented('ComputerBox.getScreenSize');
  }
}

export interface InteractiveBoxOptions extends SimpleBoxOptions {
  /** Shell to run (default '/bin/sh'). */
  shell?: string;
  /** Forward the terminal: undefined = when stdin is a TTY. */
  tty?: boolean;
}

/** A shell on a PTY wired to this process's terminal. */
export class InteractiveBox extends SimpleBox {
  constructor(_options: InteractiveBoxOptions) {
    super(notYet('InteractiveBox'));
  }

  start(): Promise<void> {
    return notImplemented('InteractiveBox.start');
  }

  wait(): Promise<void> {
    return notImplemented('InteractiveBox.wait');
  }
}

export interface SkillBoxOptions {
  skills?: string[];
  oauthToken?: string;
  name?: string;
  image?: string;
  rootfsPath?: string;
  memoryMib?: number;
  diskSizeGb?: number;
  guiHttpPort?: number;
  guiHttpsPort?: number;
  autoRemove?: boolean;
  network?: NetworkSpec;
  secrets?: Secret[];
  runtime?: JsBoxlite;
}

/** A Claude Code CLI container with skills and a noVNC desktop. */
export class SkillBox extends SimpleBox {
  guiHttpPort = 0;
  guiHttpsPort = 0;

  constructor(_options: SkillBoxOptions = {}) {
    super(notYet('SkillBox'));
  }

  start(): Promise<void> {
    return notImplemented('SkillBox.start');
  }

  waitUntilReady(_timeout?: number): Promise<void> {
    return notImplemented('SkillBox.waitUntilReady');
  }

  call(_prompt: string): Promise<string> {
    return notImplemented('SkillBox.call');
  }

  installSkill(_skillId: string): Promise<boolean> {
    return notImplemented('SkillBox.installSkill');
  }
}
