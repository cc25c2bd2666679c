// ComputerBox without a VM: a fake runtime records the box options ComputerBox creates and every
// exec it makes (command, argv, env), and answers with scripted results. This pins the reference's
// exact commands, labels, defaults and errors; test/boxtypes/computerbox.test.ts proves the effects
// on a real X display in a VM.
import { describe, expect, it } from 'vitest';
import { COMPUTERBOX_IMAGE, ComputerBox, ExecError, ExecutionError, ParseError, TimeoutError } from '../../src/index.js';
import { fakeRuntime, rejection } from './fake-box.js';

const DEFAULT_ENV = [
  { key: 'DISPLAY', value: ':1' },
  { key: 'DISPLAY_SIZEW', value: '1024' },
  { key: 'DISPLAY_SIZEH', value: '768' },
  { key: 'SELKIES_MANUAL_WIDTH', value: '1024' },
  { key: 'SELKIES_MANUAL_HEIGHT', value: '768' },
  { key: 'SELKIES_UI_SHOW_SIDEBAR', value: 'false' },
];

describe('ComputerBox options', () => {
  it('creates the webtop image with 2 vCPUs, 2048 MiB, the display env and GUI ports 3000/3001', async () => {
    const { runtime, creates } = fakeRuntime();
    await new ComputerBox({ runtime }).leftClick();
    expect(creates).toHaveLength(1);
    expect(creates[0]).toMatchObject({
      image: 'lscr.io/linuxserver/webtop:ubuntu-xfce',
      rootfsPath: undefined,
      cpus: 2,
      memoryMib: 2048,
      autoRemove: true,
      env: DEFAULT_ENV,
      ports: [
        { hostPort: 3000, guestPort: 3000 },
        { hostPort: 3001, guestPort: 3001 },
      ],
    });
    expect(COMPUTERBOX_IMAGE).toBe('lscr.io/linuxserver/webtop:ubuntu-xfce');
  });

  it("ignores a caller's image (as the reference), passes rootfsPath, resources, GUI ports and extra ports", async () => {
    const { runtime, creates } = fakeRuntime();
    const opts = {
      runtime,
      image: 'my/desktop:1',
      rootfsPath: '/images/desktop',
      cpus: 4,
      memoryMib: 4096,
      guiHttpPort: 0,
      guiHttpsPort: 8443,
      ports: [{ hostPort: 5900, guestPort: 5900 }],
      name: 'desk',
    };
    await new ComputerBox(opts as ConstructorParameters<typeof ComputerBox>[0]).leftClick();
    expect(creates[0]).toMatchObject({
      image: COMPUTERBOX_IMAGE,
      rootfsPath: '/images/desktop',
      cpus: 4,
      memoryMib: 4096,
      ports: [
        { hostPort: 0, guestPort: 3000 },
        { hostPort: 8443, guestPort: 3001 },
        { hostPort: 5900, guestPort: 5900 },
      ],
    });
  });

  it("the user's env is added and wins over the defaults (DISPLAY override)", async () => {
    const { runtime, creates } = fakeRuntime();
    await new ComputerBox({ runtime, env: { DISPLAY: ':9', LANG: 'C.UTF-8' } }).leftClick();
    expect(creates[0]!.env).toEqual([
      { key: 'DISPLAY', value: ':9' },
      ...DEFAULT_ENV.slice(1),
      { key: 'LANG', value: 'C.UTF-8' },
    ]);
  });
});

describe('ComputerBox methods: the reference commands and labels', () => {
  const cases: Array<[string, (b: ComputerBox) => Promise<unknown>, string, string[], string]> = [
    ['mouseMove', (b) => b.mouseMove(100, 200), 'xdotool', ['mousemove', '100', '200'], 'mouseMove(100, 200)'],
    ['leftClick', (b) => b.leftClick(), 'xdotool', ['click', '1'], 'leftClick()'],
    ['rightClick', (b) => b.rightClick(), 'xdotool', ['click', '3'], 'rightClick()'],
    ['middleClick', (b) => b.middleClick(), 'xdotool', ['click', '2'], 'middleClick()'],
    ['doubleClick', (b) => b.doubleClick(), 'xdotool', ['click', '--repeat', '2', '--delay', '100', '1'], 'doubleClick()'],
    ['tripleClick', (b) => b.tripleClick(), 'xdotool', ['click', '--repeat', '3', '--delay', '100', '1'], 'tripleClick()'],
    [
      'leftClickDrag',
      (b) => b.leftClickDrag(10, 20, 300, 400),
      'xdotool',
      ['mousemove', '10', '20', 'mousedown', '1', 'sleep', '0.1', 'mousemove', '300', '400', 'sleep', '0.1', 'mouseup', '1'],
      'leftClickDrag()',
    ],
    ['cursorPosition', (b) => b.cursorPosition(), 'xdotool', ['getmouselocation', '--shell'], 'cursorPosition()'],
    ['type', (b) => b.type('-héllo "world"'), 'xdotool', ['type', '--', '-héllo "world"'], 'type()'],
    ['key', (b) => b.key('ctrl+c'), 'xdotool', ['key', 'ctrl+c'], 'key()'],
    ['scroll', (b) => b.scroll(5, 6, 'down'), 'xdotool', ['mousemove', '5', '6', 'click', '--repeat', '3', '5'], 'scroll()'],
    ['getScreenSize', (b) => b.getScreenSize(), 'xdotool', ['getdisplaygeometry'], 'getScreenSize()'],
    ['screenshot', (b) => b.screenshot(), 'python3', ['-c', expect.stringContaining('ImageGrab.grab()') as unknown as string], 'screenshot()'],
  ];

  for (const [name, call, cmd, args, label] of cases) {
    it(`${name}: ${cmd} ${args.join(' ').slice(0, 60)}; a failure is ExecError '${label}'`, async () => {
      const ok = fakeRuntime([{ exitCode: 0, stdout: name === 'cursorPosition' ? 'X=1\nY=2\n' : name === 'getScreenSize' ? '1024 768\n' : '' }]);
      await call(new ComputerBox({ runtime: ok.runtime }));
      expect(ok.execs).toEqual([{ cmd, args, env: undefined, tty: false }]);

      const bad = fakeRuntime([{ exitCode: 1, stdout: 'ignored', stderr: "Can't open display: :9\n" }]);
      const err = await rejection(call(new ComputerBox({ runtime: bad.runtime })));
      expect(err).toBeInstanceOf(ExecError);
      expect(err.message).toBe(`Command '${label}' failed with exit code 1: Can't open display: :9\n`);
      expect(err).toMatchObject({ command: label, exitCode: 1, stderr: "Can't open display: :9\n" });
    });
  }

  it('screenshot runs the reference PIL code and reports the configured size, not a measured one', async () => {
    const { runtime, execs } = fakeRuntime([{ exitCode: 0, stdout: 'iVBORw0KGgo=\n' }]);
    const shot = await new ComputerBox({ runtime }).screenshot();
    expect(shot).toEqual({ data: 'iVBORw0KGgo=', width: 1024, height: 768, format: 'png' });
    expect(execs[0]!.args[1]).toBe(
      'from PIL import ImageGrab\nimport io\nimport base64\nimg = ImageGrab.grab()\nbuffer = io.BytesIO()\n' +
        'img.save(buffer, format="PNG")\nprint(base64.b64encode(buffer.getvalue()).decode("utf-8"))',
    );
  });

  it('a missing command is the exec error itself (ExecutionError 127), not an ExecError', async () => {
    const missing = new ExecutionError('command not found: xdotool');
    const { runtime } = fakeRuntime([missing]);
    expect(await rejection(new ComputerBox({ runtime }).leftClick())).toBe(missing);
  });
});

describe('ComputerBox.scroll', () => {
  it('maps up/down/left/right to buttons 4/5/6/7, in any case, with the amount (default 3)', async () => {
    const { runtime, execs } = fakeRuntime();
    const box = new ComputerBox({ runtime });
    await box.scroll(1, 2, 'up');
    await box.scroll(1, 2, 'DOWN' as 'down', 7);
    await box.scroll(1, 2, 'Left' as 'left', 1);
    await box.scroll(1, 2, 'right', 2);
    expect(execs.map((e) => e.args.slice(3).join(' '))).toEqual(['click --repeat 3 4', 'click --repeat 7 5', 'click --repeat 1 6', 'click --repeat 2 7']);
  });

  it('an unknown direction is a plain Error before anything runs (no box is created)', async () => {
    const { runtime, creates, execs } = fakeRuntime();
    for (const dir of ['sideways', 'constructor', '']) {
      const err = await rejection(new ComputerBox({ runtime }).scroll(1, 2, dir as 'up'));
      expect(err.constructor).toBe(Error);
      expect(err.message).toBe(`Invalid scroll direction: ${dir}`);
    }
    expect(creates).toHaveLength(0);
    expect(execs).toHaveLength(0);
  });
});

describe('ComputerBox parsing', () => {
  it('cursorPosition reads X= and Y= lines of getmouselocation --shell', async () => {
    const { runtime } = fakeRuntime([{ exitCode: 0, stdout: 'X=100\nY=200\nSCREEN=0\nWINDOW=2097153\n' }]);
    expect(await new ComputerBox({ runtime }).cursorPosition()).toEqual([100, 200]);
  });

  it('cursorPosition: ParseError when X or Y is missing', async () => {
    for (const stdout of ['', 'X=5\n', 'x: 5 y: 6\n']) {
      const { runtime } = fakeRuntime([{ exitCode: 0, stdout }]);
      const err = await rejection(new ComputerBox({ runtime }).cursorPosition());
      expect(err).toBeInstanceOf(ParseError);
      expect(err.message).toBe('Failed to parse cursor position from xdotool output');
    }
  });

  it('getScreenSize splits on whitespace; ParseError unless exactly two parts', async () => {
    const ok = fakeRuntime([{ exitCode: 0, stdout: '  1024\t768\n' }]);
    expect(await new ComputerBox({ runtime: ok.runtime }).getScreenSize()).toEqual([1024, 768]);
    for (const stdout of ['', '1024\n', '1024 768 24\n']) {
      const { runtime } = fakeRuntime([{ exitCode: 0, stdout }]);
      const err = await rejection(new ComputerBox({ runtime }).getScreenSize());
      expect(err).toBeInstanceOf(ParseError);
      expect(err.message).toBe('Failed to parse screen size from xdotool output');
    }
  });
});

describe('ComputerBox.waitUntilReady', () => {
  const READY = '  0x200001 "xfdesktop": ()  1024x768+0+0  +0+0\n';

  it('probes xwininfo -tree -root until an "xfdesktop" window at 1024x768 shows, retrying after failures', async () => {
    const { runtime, execs } = fakeRuntime([
      new ExecutionError('box still booting'),
      { exitCode: 1, stderr: 'unable to open display' },
      { exitCode: 0, stdout: '  0x200001 "xfdesktop": ()  800x600+0+0\n' },
      { exitCode: 0, stdout: READY },
    ]);
    const t0 = Date.now();
    await new ComputerBox({ runtime }).waitUntilReady(30);
    expect(execs.map((e) => [e.cmd, ...e.args].join(' '))).toEqual(Array(4).fill('xwininfo -tree -root'));
    // three 2 s pauses between the four probes
    expect(Date.now() - t0).toBeGreaterThanOrEqual(5_900);
  }, 20_000);

  it('throws TimeoutError naming the timeout once it has passed', async () => {
    const { runtime, execs } = fakeRuntime(Array(5).fill({ exitCode: 0, stdout: 'no desktop here\n' }));
    const t0 = Date.now();
    const err = await rejection(new ComputerBox({ runtime }).waitUntilReady(0.1));
    expect(err).toBeInstanceOf(TimeoutError);
    expect(err.message).toBe('Desktop did not become ready within 0.1 seconds');
    // one probe, one 2 s pause, then the deadline check
    expect(execs).toHaveLength(1);
    expect(Date.now() - t0).toBeGreaterThanOrEqual(1_900);
  }, 10_000);
});
