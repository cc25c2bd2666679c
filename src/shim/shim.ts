import { spawn, type ChildProcess } from 'node:child_process';
import fs from 'node:fs';
import net from 'node:net';
import { AlreadyExistsError, EngineError, PortalError, BoxliteError, toBoxliteError } from '../errors/index.js';
import { PROTOCOL_MAJOR, PROTOCOL_MINOR, type Message } from '../protocol/codec.js';
import { Link } from '../protocol/link.js';
import { buildQemuCommand } from '../vmm/qemu.js';
import { boxPaths, type ShimConfig, type ShimReadyLine, type ShimState } from './config.js';
import { isProcessAlive, processStartTime, readJson, readTail, writeFileAtomic } from '../util/fs.js';
import { hostForwardFailure, publishedPorts, resolveHostPorts } from './ports.js';

const SHIM_VERSION = '0.1.0';

interface Client {
  link: Link;
  /** client stream id → agent stream id */
  streams: Map<number, number>;
}

/**
 * One shim per running box: owns QEMU and the agent link, serves the control
 * socket, forwards exec frames between clients and the agent (re-mapping
 * stream ids so each client has its own id space).
 */
export class Shim {
  private readonly paths;
  private qemu?: ChildProcess;
  private qemuExited: Promise<number | null> = Promise.resolve(null);
  private agent?: Link;
  private agentHello?: Extract<Message, { type: 'HELLO' }>;
  private controlServer?: net.Server;
  private agentServer?: net.Server;
  private readonly clients = new Set<Client>();
  /** agent stream id → owner */
  private readonly routes = new Map<number, { client: Client; clientStream: number }>();
  private nextAgentStream = 1;
  private pendingPings: Array<(at?: number) => void> = [];
  private stopping?: Promise<void>;
  private state?: ShimState;
  private finish!: (exitCode: number) => void;
  /** Resolves with the process exit code once the VM is gone and everything is cleaned up. */
  readonly done = new Promise<number>((resolve) => (this.finish = resolve));
  private readonly log: (line: string) => void;

  constructor(private readonly config: ShimConfig) {
    this.paths = boxPaths(config.boxDir);
    fs.mkdirSync(this.paths.logsDir, { recursive: true });
    const logFd = fs.openSync(this.paths.shimLog, 'a');
    this.log = (line) => fs.writeSync(logFd, `${new Date().toISOString()} [${process.pid}] ${line}\n`);
  }

  /** Boots the VM and resolves once the agent said HELLO and the control socket listens. */
  async start(): Promise<ShimState> {
    const { qemu: spec } = this.config;
    this.acquireLock();
    for (const p of [this.paths.agentSocket, this.paths.controlSocket]) fs.rmSync(p, { force: true });
    // Published ports: pick the "any" ones, probe the others (NetworkError before QEMU starts).
    const forwards = spec.network ? await resolveHostPorts(spec.network.hostfwd ?? []) : [];

    this.agentServer = net.createServer();
    const agentConnected = new Promise<net.Socket>((resolve) => this.agentServer!.once('connection', resolve));
    await listen(this.agentServer, this.paths.agentSocket);

    const cmd = buildQemuCommand({
      ...spec,
      network: spec.network ? { ...spec.network, hostfwd: forwards } : null,
      agentSocketPath: this.paths.agentSocket,
      consoleLogPath: this.paths.consoleLog,
    });
    fs.writeFileSync(this.paths.consoleLog, '');
    const qemuLog = fs.openSync(this.paths.qemuLog, 'w');
    // setpriv --pdeathsig: QEMU dies with the shim even if the shim is SIGKILLed.
    const setpriv = findSetpriv();
    if (!setpriv) this.log('setpriv not found: QEMU will not die with a SIGKILLed shim');
    const [file, args] = setpriv
      ? [setpriv, ['--pdeathsig', 'KILL', '--', cmd.binary, ...cmd.args]]
      : [cmd.binary, cmd.args];
    this.log(`spawn ${cmd.binary} ${cmd.args.join(' ')}`);
    const spawnedAt = performance.now();
    const qemu = spawn(file, args, { stdio: ['ignore', qemuLog, qemuLog] });
    fs.closeSync(qemuLog);
    this.qemu = qemu;
    this.qemuExited = new Promise((resolve) => {
      qemu.once('exit', (code, signal) => {
        this.log(`qemu exited code=${code} signal=${signal}`);
        resolve(code);
      });
      qemu.once('error', (err) => {
        this.log(`qemu spawn error: ${err.message}`);
        resolve(null);
      });
    });
    this.qemuExited.then(() => this.onQemuExit());

    const hello = await this.waitForHello(agentConnected, spawnedAt);
    const bootMs = Math.round(performance.now() - spawnedAt);
    this.agentServer.close();

    this.controlServer = net.createServer((socket) => this.acceptClient(socket));
    await listen(this.controlServer, this.paths.controlSocket);

    this.state = {
      shimPid: process.pid,
      shimStartTime: processStartTime(process.pid),
      qemuPid: qemu.pid!,
      qemuStartTime: processStartTime(qemu.pid!),
      accel: spec.accel,
      accelReason: this.config.accelReason,
      startedAt: new Date().toISOString(),
      bootMs,
      agentVersion: hello.version,
      agentFeatures: hello.features,
      publishedPorts: publishedPorts(forwards),
    };
    writeFileAtomic(this.paths.shimState, JSON.stringify(this.state, null, 2));
    this.log(`ready in ${bootMs} ms (agent ${hello.version})`);
    return this.state;
  }

  private async waitForHello(
    agentConnected: Promise<net.Socket>,
    spawnedAt: number,
  ): Promise<Extract<Message, { type: 'HELLO' }>> {
    const timeoutMs = this.config.agentTimeoutMs;
    let timer: NodeJS.Timeout | undefined;
    const timeout = new Promise<never>((_, reject) => {
      timer = setTimeout(() => {
        reject(
          new PortalError(
            `guest agent did not say HELLO within ${timeoutMs} ms (BOXLITE_AGENT_TIMEOUT_MS); ` +
              `last console lines:\n${readTail(this.paths.consoleLog, 20)}`,
          ),
        );
      }, timeoutMs);
    });
    const died = this.qemuExited.then((code) => {
      const fwdError = hostForwardFailure(readTail(this.paths.qemuLog, 10));
      if (fwdError) throw fwdError;
      throw new EngineError(
        `QEMU exited during boot (code ${code}); last console lines:\n${readTail(this.paths.consoleLog, 20)}` +
          `\nQEMU said:\n${readTail(this.paths.qemuLog, 10)}`,
      );
    });
    const hello = (async () => {
      const socket = await agentConnected;
      const link = new Link(socket);
      this.agent = link;
      const early: Message[] = [];
      const first = await new Promise<Message>((resolve, reject) => {
        link.onMessage((m) => (early.length === 0 ? resolve(m) : undefined, early.push(m)));
        link.onClose((err) => reject(new PortalError(`agent link closed before HELLO${err ? `: ${err.message}` : ''}`)));
      });
      early.shift();
      if (first.type !== 'HELLO') throw new PortalError(`agent sent ${first.type} before HELLO`);
      if (first.major !== PROTOCOL_MAJOR) {
        throw new PortalError(`agent speaks protocol ${first.major}.${first.minor}, host needs ${PROTOCOL_MAJOR}.x`);
      }
      this.log(`agent HELLO after ${Math.round(performance.now() - spawnedAt)} ms`);
      link.onMessage((m) => this.fromAgent(m));
      // Frames that arrived in the same chunk as HELLO.
      for (const m of early) this.fromAgent(m);
      link.onClose((err) => {
        if (this.stopping) return;
        // Without the agent link nothing in the box can be reached: end the box rather
        // than leave callers waiting on a VM that can no longer answer.
        this.kill(`agent link lost${err ? `: ${err.message}` : ''}`, 1);
      });
      link.send({ type: 'HELLO', stream: 0, major: PROTOCOL_MAJOR, minor: PROTOCOL_MINOR, features: 0xf, version: SHIM_VERSION });
      this.agentHello = first;
      return first;
    })();
    try {
      return await Promise.race([hello, timeout, died]);
    } finally {
      clearTimeout(timer);
    }
  }

  private acceptClient(socket: net.Socket): void {
    const client: Client = { link: new Link(socket), streams: new Map() };
    this.clients.add(client);
    client.link.onMessage((m) => this.fromClient(client, m));
    client.link.onClose(() => {
      this.clients.delete(client);
      // A client that goes away takes its executions with it: nobody can read them any more.
      // Their routes go too, so late output is credited back (below) and the agent is never
      // left waiting for a window that only a dead client could open.
      for (const agentStream of client.streams.values()) {
        this.routes.delete(agentStream);
        this.agent?.send({ type: 'SIGNAL', stream: agentStream, signo: 9 });
      }
      client.streams.clear();
    });
  }

  private fromClient(client: Client, m: Message): void {
    const agent = this.agent!;
    switch (m.type) {
      case 'HELLO': {
        const h = this.agentHello!;
        client.link.send({ ...h, stream: 0 });
        return;
      }
      case 'PING':
        client.link.send({ type: 'PONG', stream: 0, data: m.data });
        return;
      case 'CONTROL':
        void this.control(client, m.stream, m.data);
        return;
      case 'EXEC': {
        if (client.streams.has(m.stream)) {
          client.link.send({ type: 'ERROR', stream: m.stream, message: `stream ${m.stream} is already in use` });
          return;
        }
        const agentStream = this.nextAgentStream++;
        client.streams.set(m.stream, agentStream);
        this.routes.set(agentStream, { client, clientStream: m.stream });
        agent.send({ ...m, stream: agentStream });
        return;
      }
      case 'STDIN':
      case 'SIGNAL':
      case 'RESIZE':
      case 'WINDOW': {
        const agentStream = client.streams.get(m.stream);
        if (agentStream === undefined) {
          // Credit returned just after EXIT is normal; an ERROR for it could hit a reused id.
          if (m.type !== 'WINDOW') {
            client.link.send({ type: 'ERROR', stream: m.stream, message: `unknown stream ${m.stream}` });
          }
          return;
        }
        agent.send({ ...m, stream: agentStream });
        return;
      }
      default:
        client.link.send({ type: 'ERROR', stream: m.stream, message: `unexpected ${m.type} from client` });
    }
  }

  private fromAgent(m: Message): void {
    if (m.stream === 0) {
      if (m.type === 'PONG') this.pendingPings.shift()?.(performance.now());
      else if (m.type === 'ERROR') this.log(`agent error: ${m.message}`);
      return;
    }
    const route = this.routes.get(m.stream);
    if (!route) {
      // Output of an execution whose client left: keep the agent's window open so it can finish.
      if ((m.type === 'STDOUT' || m.type === 'STDERR') && m.data.length > 0) {
        this.agent?.send({ type: 'WINDOW', stream: m.stream, fd: m.type === 'STDOUT' ? 1 : 2, bytes: m.data.length });
      }
      return;
    }
    route.client.link.send({ ...m, stream: route.clientStream });
    if (m.type === 'EXIT') {
      this.routes.delete(m.stream);
      route.client.streams.delete(route.clientStream);
    }
  }

  private async control(client: Client, stream: number, data: Buffer): Promise<void> {
    const reply = (body: object) =>
      client.link.send({ type: 'REPLY', stream, data: Buffer.from(JSON.stringify(body)) });
    try {
      const req = JSON.parse(data.toString('utf8')) as { op?: string };
      switch (req.op) {
        case 'info':
          reply({ ok: true, ...this.state });
          return;
        case 'ping':
          reply({ ok: true, rttMs: await this.pingAgent() });
          return;
        case 'stop':
          // Reply before the sockets close; the client then waits for the socket to end.
          await this.stop('stop requested by a client', () => reply({ ok: true }));
          return;
        default:
          reply({ ok: false, code: 'Internal', message: `internal error: unknown control op ${String(req.op)}` });
      }
    } catch (err) {
      reply({ ok: false, ...toBoxliteError(err).toJSON() });
    }
  }

  /** One PING/PONG over the agent link: the raw round trip that benchmarks compare against. */
  pingAgent(timeoutMs = 10_000): Promise<number> {
    const sent = performance.now();
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => reject(new PortalError(`agent did not answer PING within ${timeoutMs} ms`)), timeoutMs);
      this.pendingPings.push((at) => {
        clearTimeout(timer);
        if (at === undefined) reject(new PortalError('agent link lost'));
        else resolve(at - sent);
      });
      this.agent!.send({ type: 'PING', stream: 0, data: Buffer.alloc(8) });
    });
  }

  /** Graceful power-off (bounded), then force. Idempotent. */
  stop(reason: string, beforeCleanup?: () => void): Promise<void> {
    this.stopping ??= (async () => {
      this.log(`stopping: ${reason}`);
      const qemu = this.qemu;
      if (qemu && qemu.exitCode === null && qemu.signalCode === null) {
        this.agent?.send({ type: 'SHUTDOWN', stream: 0 });
        const graceful = await Promise.race([
          this.qemuExited.then(() => true),
          sleep(this.config.stopTimeoutMs).then(() => false),
        ]);
        if (!graceful) {
          this.log(`guest did not power off within ${this.config.stopTimeoutMs} ms; killing QEMU`);
          qemu.kill('SIGKILL');
          await this.qemuExited;
        }
      }
      beforeCleanup?.();
      this.cleanup();
    })();
    return this.stopping;
  }

  /** Forced teardown for when the shim itself must go (watchdog, fatal error). */
  kill(reason: string, exitCode = 0): void {
    this.log(`killing VM: ${reason}`);
    this.qemu?.kill('SIGKILL');
    this.cleanup(exitCode);
  }

  private onQemuExit(): void {
    if (this.stopping) return;
    this.log('VM exited without a stop request');
    this.cleanup(1);
  }

  private lockHeld = false;

  /**
   * One VM per box: the shim that creates shim.lock (O_EXCL) owns the box until it exits.
   * A second booter (another process, another handle) fails here and attaches instead.
   */
  private acquireLock(): void {
    const mine = JSON.stringify({ pid: process.pid, startTime: processStartTime(process.pid) });
    for (let attempt = 0; attempt < 2; attempt++) {
      try {
        fs.writeFileSync(this.paths.shimLock, mine, { flag: 'wx' });
        this.lockHeld = true;
        return;
      } catch (err) {
        if ((err as NodeJS.ErrnoException).code !== 'EEXIST') throw err;
      }
      const owner = readJson<{ pid: number; startTime?: string }>(this.paths.shimLock);
      if (owner && isProcessAlive(owner.pid, owner.startTime)) {
        throw new AlreadyExistsError(`box ${this.config.boxId} is already running or starting (shim pid ${owner.pid})`);
      }
      this.log(`taking over the stale lock of shim pid ${owner?.pid}`);
      fs.rmSync(this.paths.shimLock, { force: true });
    }
    throw new AlreadyExistsError(`box ${this.config.boxId} is being started by another process`);
  }

  private cleanupDone = false;
  private cleanup(exitCode = 0): void {
    if (this.cleanupDone) return;
    this.cleanupDone = true;
    for (const c of this.clients) c.link.close();
    for (const pending of this.pendingPings.splice(0)) pending();
    this.agent?.close();
    this.controlServer?.close();
    this.agentServer?.close();
    // Only the lock holder created these; a shim that lost the race must not touch them.
    if (this.lockHeld) {
      for (const p of [this.paths.agentSocket, this.paths.controlSocket, this.paths.shimState, this.paths.shimLock]) {
        fs.rmSync(p, { force: true });
      }
    }
    this.finish(exitCode);
  }
}

function findSetpriv(): string | undefined {
  for (const dir of (process.env.PATH ?? '').split(':').concat(['/usr/bin', '/bin'])) {
    const p = `${dir}/setpriv`;
    if (dir && fs.existsSync(p)) return p;
  }
  return undefined;
}

function listen(server: net.Server, socketPath: string): Promise<void> {
  return new Promise((resolve, reject) => {
    server.once('error', reject);
    server.listen(socketPath, () => {
      server.off('error', reject);
      resolve();
    });
  });
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/** Entry used by main.ts: run the shim, report readiness on stdout, live until the VM stops. */
export async function runShim(config: ShimConfig, out: NodeJS.WritableStream): Promise<void> {
  const shim = new Shim(config);
  const announce = (line: ShimReadyLine) => out.write(JSON.stringify(line) + '\n');
  process.on('SIGTERM', () => void shim.stop('SIGTERM'));
  process.on('SIGINT', () => void shim.stop('SIGINT'));
  process.on('uncaughtException', (err) => {
    shim.kill(`uncaught exception: ${err.stack ?? err.message}`, 1);
  });
  if (!config.detach) {
    // Watchdog: fd 3 is a pipe whose other end only the creating process holds.
    // When that process dies (even by SIGKILL) the pipe ends, and so does the box.
    // A net.Socket, not fs.createReadStream: an fs read blocks a threadpool thread
    // in read(2), and process.exit() then waits for that thread forever.
    const watchdog = new net.Socket({ fd: 3, readable: true, writable: false });
    watchdog.on('data', () => {});
    watchdog.on('close', () => shim.kill('the process that created this box exited'));
    watchdog.on('error', () => {});
  }
  try {
    const state = await shim.start();
    announce({ ready: true, state });
  } catch (err) {
    const e: BoxliteError = toBoxliteError(err, 'Engine');
    shim.kill(`start failed: ${e.message}`, 1);
    announce({ ready: false, error: e.toJSON() });
  }
  const exitCode = await shim.done;
  // Let the last replies flush before the process goes.
  setTimeout(() => process.exit(exitCode), 50);
}
