// A program written against the public API of @boxlite-ai/boxlite 0.10: every export of its
// index.d.ts, every member of the runtime, box, execution and SimpleBox handles, every box option.
// It is only type-checked (tsc --noEmit), against the reference's declarations and against ours
// (tsconfig.reference.json / tsconfig.ours.json map the module name 'boxlite'). A program that
// compiles against the reference must compile against us unchanged.
import {
  ApiKeyCredential,
  BoxliteError,
  BoxliteRestOptions,
  BoxTunnel,
  BROWSERBOX_PORT,
  BrowserBox,
  CodeBox,
  COMPUTERBOX_CPUS,
  COMPUTERBOX_DISPLAY_HEIGHT,
  COMPUTERBOX_DISPLAY_NUMBER,
  COMPUTERBOX_DISPLAY_WIDTH,
  COMPUTERBOX_GUI_HTTP_PORT,
  COMPUTERBOX_GUI_HTTPS_PORT,
  COMPUTERBOX_IMAGE,
  COMPUTERBOX_MEMORY_MIB,
  ComputerBox,
  DEFAULT_CPUS,
  DEFAULT_MEMORY_MIB,
  DESKTOP_READY_RETRY_DELAY,
  DESKTOP_READY_TIMEOUT,
  ExecError,
  getJsBoxlite,
  getNativeModule,
  GUEST_IP,
  InteractiveBox,
  JsBoxlite,
  NetworkHandle,
  ParseError,
  SimpleBox,
  SKILLBOX_DISK_SIZE_GB,
  SKILLBOX_GUI_HTTP_PORT,
  SKILLBOX_GUI_HTTPS_PORT,
  SKILLBOX_IMAGE,
  SKILLBOX_MEMORY_MIB,
  SkillBox,
  TimeoutError,
  TunnelForwarder,
  type AccessToken,
  type AdvancedBoxOptions,
  type Boxlite,
  type BoxliteConstructor,
  type BrowserBoxOptions,
  type BrowserType,
  type CodeBoxOptions,
  type ComputerBoxOptions,
  type ContainerCapabilities,
  type CopyOptions,
  type Credential,
  type ExecResult,
  type ImageHandle,
  type ImageInfo,
  type ImagePullResult,
  type InteractiveBoxOptions,
  type JsBoxInfo,
  type JsImageRegistry,
  type JsImageRegistryAuth,
  type JsNetworkInfo,
  type JsOptions,
  type JsPublishedPort,
  type NetworkSpec,
  type Screenshot,
  type Secret,
  type SecurityOptions,
  type SimpleBoxOptions,
  type SkillBoxOptions,
  type SocketAddress,
  type VolumeHandle,
  type VolumeInfo,
} from 'boxlite';

const numbers: number[] = [
  BROWSERBOX_PORT,
  COMPUTERBOX_CPUS,
  COMPUTERBOX_MEMORY_MIB,
  COMPUTERBOX_DISPLAY_WIDTH,
  COMPUTERBOX_DISPLAY_HEIGHT,
  COMPUTERBOX_GUI_HTTP_PORT,
  COMPUTERBOX_GUI_HTTPS_PORT,
  DESKTOP_READY_TIMEOUT,
  DESKTOP_READY_RETRY_DELAY,
  DEFAULT_CPUS,
  DEFAULT_MEMORY_MIB,
  SKILLBOX_MEMORY_MIB,
  SKILLBOX_DISK_SIZE_GB,
  SKILLBOX_GUI_HTTP_PORT,
  SKILLBOX_GUI_HTTPS_PORT,
];
const strings: string[] = [COMPUTERBOX_IMAGE, COMPUTERBOX_DISPLAY_NUMBER, GUEST_IP, SKILLBOX_IMAGE];

export async function runtimeApi(): Promise<void> {
  const auth: JsImageRegistryAuth = { username: 'u', password: 'p' };
  const registries: JsImageRegistry[] = [
    { host: 'ghcr.io', search: true },
    { host: 'registry.local:5000', transport: 'http', skipVerify: true, auth },
    { host: 'private.example', auth: { bearerToken: 't' } },
  ];
  const options: JsOptions = { homeDir: '/tmp/boxlite-compat', imageRegistries: registries };
  const rt: Boxlite = new JsBoxlite(options);
  const ctor: BoxliteConstructor = JsBoxlite;
  JsBoxlite.initDefault({ homeDir: '/tmp/boxlite-default' });
  const def: Boxlite = ctor.withDefaultConfig();
  const fromNative = new (getJsBoxlite())({});
  const native = getNativeModule();
  const nativeRt = new native.JsBoxlite({ homeDir: '/tmp/x' });

  const credential: Credential = new ApiKeyCredential('blk_live_x');
  const token: AccessToken = credential.getToken();
  const maybe: ApiKeyCredential | null = ApiKeyCredential.fromEnv();
  const restOptions = new BoxliteRestOptions({ url: 'https://api.example.com', credential, pathPrefix: 'acme' });
  const remote: Boxlite = JsBoxlite.rest(restOptions);
  const url: string = restOptions.url;

  const box = await rt.create(
    {
      image: 'alpine:latest',
      cpus: 1,
      memoryMib: 512,
      diskSizeGb: 2,
      workingDir: '/root',
      env: [{ key: 'A', value: 'b' }],
      volumes: [
        { hostPath: '/tmp', guestPath: '/data', readOnly: true },
        { managedVolume: 'vol', guestPath: '/vol' },
      ],
      network: { outbound: { mode: 'enabled', allowNet: [] }, inbound: { mode: 'disabled' } },
      ports: [{ hostPort: 8080, guestPort: 80, protocol: 'tcp', hostIp: '127.0.0.1' }],
      autoRemove: false,
      detach: false,
      autoStop: 0,
      autoDelete: 0,
      autoResume: false,
      entrypoint: ['/bin/sh'],
      cmd: ['-c', 'sleep 1'],
      user: '0:0',
      advanced: { capabilities: { add: [], drop: [] } },
      security: { jailerEnabled: false, seccompEnabled: false, networkEnabled: true, closeFds: true },
      healthCheck: { interval: 30, timeout: 5, retries: 3, startPeriod: 10 },
      secrets: [{ name: 'k', value: 'v', hosts: ['api.example.com'], placeholder: '<K>' }],
    },
    'compat',
  );
  const legacy = await rt.create({ rootfsPath: './images/busybox', network: { mode: 'disabled' } });
  const { created, box: again } = await rt.getOrCreate({ image: 'alpine' }, 'compat');
  const got = await rt.get('compat');
  const infos: JsBoxInfo[] = await rt.listInfo();
  const info: JsBoxInfo | null = await rt.getInfo('compat');
  const rm = await rt.metrics();
  const n: number = rm.boxesCreatedTotal + rm.boxesFailedTotal + rm.numRunningBoxes + rm.totalCommandsExecuted + rm.totalExecErrors;
  await rt.remove('compat', true);
  await rt.remove('other');
  const imported = await rt.importBox('/tmp/box.boxlite', 'copy');

  const images: ImageHandle = rt.images;
  const pulled: ImagePullResult = await images.pull('alpine:latest');
  const listed: ImageInfo[] = await images.list();
  const sizes = listed.map((i) => [i.reference, i.repository, i.tag, i.id, i.cachedAt, i.sizeBytes]);

  const volumes: VolumeHandle = rt.volumes;
  const vol: VolumeInfo = await volumes.create('data');
  await volumes.list();
  await volumes.get(vol.id);
  await volumes.remove(vol.id, true);

  // The box handle.
  const id: string = box.id;
  const name: string | null = box.name;
  const bi = await box.info();
  const net: JsNetworkInfo | null = bi.network;
  const ports: JsPublishedPort[] | null = net ? net.publishedPorts : null;
  const status: string = bi.state.status;
  const fields = [bi.createdAt, bi.startedAt, bi.image, bi.cpus, bi.memoryMib, bi.autoStop, bi.autoDelete, bi.autoResume, bi.healthStatus.state, bi.state.running, bi.state.pid];
  await box.start();
  const ex = await box.exec('ls', ['-la'], [['K', 'V']], false, 'root', 10, '/');
  const exId: string = await ex.id();
  const stdin = await ex.stdin();
  await stdin.write(Buffer.from('x'));
  await stdin.writeString('y');
  await stdin.close();
  const out = await ex.stdout();
  const line: string | null = await out.next();
  const err = await ex.stderr();
  const eline: string | null = await err.next();
  const result = await ex.wait();
  const code: number = result.exitCode;
  const why: string | undefined = result.errorMessage;
  await ex.resizeTty(24, 80);
  await ex.signal(15);
  await ex.kill();
  const copy: CopyOptions = { recursive: true, overwrite: true, followSymlinks: false, includeParent: true };
  await box.copyIn('./a', '/root/', copy);
  await box.copyOut('/root/a', './out', copy);
  const bm = await box.metrics();
  const m = [bm.commandsExecutedTotal, bm.execErrorsTotal, bm.bytesSentTotal, bm.bytesReceivedTotal, bm.cpuPercent, bm.memoryBytes, bm.guestBootDurationMs, bm.totalCreateDurationMs, bm.stageFilesystemSetupMs, bm.stageImagePrepareMs, bm.stageGuestRootfsMs, bm.stageBoxConfigMs, bm.stageBoxSpawnMs, bm.stageContainerInitMs];
  const snap = await box.snapshot.create('s1');
  await box.snapshot.list();
  await box.snapshot.get('s1');
  await box.snapshot.restore('s1');
  await box.snapshot.remove('s1');
  const tunnel = await box.network.tunnel(80);
  const clone = await box.cloneBox(null, 'clone');
  const archive: string = await box.export('/tmp/box.boxlite');
  await box.stop();

  rt.close();
  await rt.shutdown();
  await rt.shutdown(30);
  await def.shutdown(-1);
  void [numbers, strings, fromNative, nativeRt, token, maybe, remote, url, legacy, created, again, got, infos, info, n, imported, pulled, sizes, id, name, ports, status, fields, exId, line, eline, code, why, m, snap, tunnel, clone, archive];
}

export async function simpleBoxApi(rt: Boxlite): Promise<void> {
  const security: SecurityOptions = { maxOpenFiles: 1024, maxFileSize: 1 << 20, maxProcesses: 64, maxMemory: 1 << 30, maxCpuTime: 60 };
  const capabilities: ContainerCapabilities = { add: ['NET_ADMIN'], drop: ['MKNOD'] };
  const advanced: AdvancedBoxOptions = { capabilities };
  const secret: Secret = { name: 'openai', value: 'sk-x', hosts: ['api.openai.com'] };
  const network: NetworkSpec = { outbound: { mode: 'enabled', allowNet: ['pypi.org'] }, inbound: { mode: 'disabled' } };
  const options: SimpleBoxOptions = {
    image: 'python:slim',
    rootfsPath: undefined,
    memoryMib: 512,
    cpus: 1,
    diskSizeGb: 4,
    runtime: rt,
    name: 'sb',
    autoRemove: true,
    reuseExisting: false,
    detach: false,
    workingDir: '/root',
    env: { A: 'b' },
    volumes: [{ hostPath: '/tmp', guestPath: '/data' }],
    ports: [{ hostPort: 0, guestPort: 8000, protocol: 'tcp' }],
    network,
    secrets: [secret],
    entrypoint: ['python3'],
    cmd: ['-V'],
    user: 'root',
    advanced,
    security,
  };
  const box = new SimpleBox(options);
  const r1: ExecResult = await box.exec('echo', 'a', 'b');
  const r2: ExecResult = await box.exec('env', [], { FOO: 'bar' });
  const r3: ExecResult = await box.exec('pwd', [], undefined, { cwd: '/', user: 'root', timeoutSecs: 5 });
  const id: string = box.id;
  const id2: string = await box.getId();
  const name: string | undefined = box.name;
  const created: boolean | null = box.created;
  const info: JsBoxInfo = await box.info();
  const info2: JsBoxInfo = await box.getInfo();
  await box.copyIn('./a', '/root/');
  await box.copyOut('/root/a', './b', { includeParent: false });
  const metrics = await box.metrics();
  const handle: NetworkHandle = box.network;
  const tunnel: BoxTunnel = await handle.tunnel(8000);
  const same: BoxTunnel = await box.tunnel(8000);
  const uri: string | null = tunnel.uri();
  const conn = await tunnel.connect();
  const chunk: Buffer = await conn.read(1024);
  const wrote: number = await conn.write(Buffer.from('GET / HTTP/1.0\r\n\r\n'));
  await conn.shutdownWrite();
  await conn.close();
  const listen: SocketAddress = { type: 'tcp', host: '127.0.0.1', port: 0 };
  const fwd: TunnelForwarder = await same.forward(listen);
  const addr: SocketAddress = fwd.localAddr();
  await fwd.wait();
  await fwd.close();
  await box.stop();
  await box[Symbol.asyncDispose]();
  {
    await using disposable = new SimpleBox({ image: 'alpine' });
    await disposable.exec('true');
  }
  class MyBox extends SimpleBox {
    constructor() {
      super({ image: 'my-image:latest' });
    }
    async hostname(): Promise<string> {
      return (await this.exec('hostname')).stdout;
    }
  }
  await new MyBox().hostname();
  void [r1, r2, r3, id, id2, name, created, info, info2, metrics, uri, chunk, wrote, addr];
}

export async function boxTypesApi(rt: Boxlite): Promise<void> {
  const codeOptions: CodeBoxOptions = { image: 'python:slim', runtime: rt };
  const code = new CodeBox(codeOptions);
  const out: string = await code.run("print('hi')");
  await code.runScript('./script.py');
  await code.installPackage('requests');
  await code.installPackages('numpy', 'pandas');

  const browserType: BrowserType = 'firefox';
  const browserOptions: BrowserBoxOptions = { browser: browserType, memoryMib: 2048, cpus: 2, port: 3000, cdpPort: 9222 };
  const browser = new BrowserBox(browserOptions);
  await browser.start(60);
  const ws: string = await browser.playwrightEndpoint();
  const cdp: string = await browser.endpoint(30);
  const pw: unknown = await browser.connect({ timeout: 10 });
  const kind: BrowserType = browser.browser;

  const computerOptions: ComputerBoxOptions = { cpus: 2, memoryMib: 2048, guiHttpPort: 3000, guiHttpsPort: 3001 };
  const desktop = new ComputerBox(computerOptions);
  await desktop.waitUntilReady(60);
  const shot: Screenshot = await desktop.screenshot();
  await desktop.mouseMove(10, 10);
  await desktop.leftClick();
  await desktop.rightClick();
  await desktop.middleClick();
  await desktop.doubleClick();
  await desktop.tripleClick();
  await desktop.leftClickDrag(0, 0, 10, 10);
  const [x, y]: [number, number] = await desktop.cursorPosition();
  await desktop.type('hello');
  await desktop.key('ctrl+c');
  await desktop.scroll(5, 5, 'down', 3);
  const [w, h]: [number, number] = await desktop.getScreenSize();

  const interactiveOptions: InteractiveBoxOptions = { image: 'alpine', shell: '/bin/sh', tty: false };
  const shell = new InteractiveBox(interactiveOptions);
  await shell.start();
  await shell.wait();
  await shell.stop();

  const skillOptions: SkillBoxOptions = { skills: ['anthropics/skills'], oauthToken: 't', name: 'skill-box', memoryMib: 4096, diskSizeGb: 10, guiHttpPort: 0, guiHttpsPort: 0, autoRemove: true };
  const skill = new SkillBox(skillOptions);
  await skill.start();
  await skill.waitUntilReady(120);
  const answer: string = await skill.call('hi');
  const ok: boolean = await skill.installSkill('anthropics/skills');
  const gui: number = skill.guiHttpPort + skill.guiHttpsPort;
  await skill.stop();
  void [out, ws, cdp, pw, kind, shot, x, y, w, h, answer, ok, gui];
}

export function errorsApi(err: unknown): string {
  if (err instanceof ExecError) return `${err.command} ${err.exitCode} ${err.stderr}`;
  if (err instanceof TimeoutError || err instanceof ParseError) return err.message;
  if (err instanceof BoxliteError) return err.message;
  const made = [new BoxliteError('x'), new ExecError('false', 1, ''), new TimeoutError('t'), new ParseError('p')];
  return made.map((e) => e.name).join();
}
