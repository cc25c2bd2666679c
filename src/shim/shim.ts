// The per-box shim process, one module per job: the box lock (lock.ts), VM supervision
// (vm.ts), the agent handshake (handshake.ts), stream routing (router.ts) and control
// commands (control.ts). This file wires them together and owns the shim's lifetime.
import fs from 'node:fs';
import net from 'node:net';
import { PortalError, BoxliteError, InvalidStateError, UnsupportedError, toBoxliteError } from '../errors/index.js';
import { Feature } from '../protocol/codec.js';
import { missingFeatures } from '../protocol/features.js';
import { Link } from '../protocol/link.js';
import { boxPaths, type ShimConfig, type ShimReadyLine, type ShimState } from './config.js';
import { processStartTime, readTail, writeFileAtomic } from '../util/fs.js';
import { serveControl, type ControlHandlers } from './control.js';
import { agentHandshake, type Hello } from './handshake.js';
import { HealthMonitor, IdleWatch } from './lifecycle.js';
import { ShimLock } from './lock.js';
import { sendResume } from './resume.js';
import { mark, startupTimings } from './startup.js';
import { discardPreloadedNetWorker, takePreloadedNetWorker } from './net-preload.js';
import { QmpClient } from './qmp.js';
import { activeRootFile, recoverRootSwitch, switchRootOverlay } from './disk-ops.js';
import { FEATURE_FORK_MAIN, forkAttach, forkSave, sendForkResume } from './fork.js';
import { MainProcess } from './main-process.js';
import { NetworkSupervisor } from './network.js';
import { StreamRouter } from './router.js';
import { VmSupervisor } from './vm.js';

/** How long a held main process waits for the client that booted the box to attach. */
const HOLD_TIMEOUT_MS = 30_000;
/** How long the stop after the main process's end waits for executions still in flight. */
const EXEC_SETTLE_MS = 2_000;

export class Shim {
  private readonly paths;
  private readonly lock: ShimLock;
  private readonly vm: VmSupervisor;
  /** The box's own network stack (a worker thread), when its NIC is a `stream` one. */
  private net?: NetworkSupervisor;
  private agent?: Link;
  private router?: StreamRouter;
  private main?: MainProcess;
  private holdTimer?: NodeJS.Timeout;
  private controlServer?: net.Server;
  private agentServer?: net.Server;
  private stopping?: Promise<void>;
  private state?: ShimState;
  /** Why the box's link ended, told to every client before their sockets close. */
  private linkError?: string;
  private finish!: (exitCode: number) => void;
  /** Resolves with the process exit code once the VM is gone and everything is cleaned up. */
  readonly done = new Promise<number>((resolve) => (this.finish = resolve));
  private readonly log: (line: string) => void;
  /** The one QMP connection (QEMU serves one at a time), made on first use. */
  private qmpClient?: Promise<QmpClient>;
  private paused = false;
  private idle?: IdleWatch;
  private health?: HealthMonitor;

  constructor(private readonly config: ShimConfig) {
    this.paths = boxPaths(config.boxDir);
    fs.mkdirSync(this.paths.logsDir, { recursive: true });
    const logFd = fs.openSync(this.paths.shimLog, 'a');
    this.log = (line) => {
      try {
        fs.writeSync(logFd, `${new Date().toISOString()} [${process.pid}] ${line}\n`);
      } catch {
        // Best effort: the log is called from socket handlers and exit paths, and a full
        // disk (ENOSPC) there must not end a box that is otherwise fine.
      }
    };
    this.lock = new ShimLock(this.paths.shimLock, config.boxId, this.log);
    this.vm = new VmSupervisor(config, this.paths, this.log);
  }

  /** Boots the VM and resolves once the agent said HELLO and the control socket listens. */
  async start(): Promise<ShimState> {
    this.lock.acquire();
    await recoverRootSwitch(this.config.boxDir, this.log);
    for (const p of [this.paths.agentSocket, this.paths.controlSocket, this.paths.qmpSocket, this.paths.healthFile, this.paths.autoStopFile]) {
      fs.rmSync(p, { force: true });
    }

    // box.fork(): QEMU serves the agent socket and the shim connects once the state is loaded (src/shim/fork.ts).
    const fork = !!this.config.fork && !this.config.agentPeer;
    this.agentServer = net.createServer();
    let agentConnected = new Promise<net.Socket>((resolve) => this.agentServer!.once('connection', resolve));
    if (!fork) await listen(this.agentServer, this.paths.agentSocket);
    mark('listening');
    if (this.config.net) {
      // Before QEMU: it connects to the NIC socket the worker listens on, and a port the worker
      // cannot bind is a NetworkError before anything boots.
      this.net = new NetworkSupervisor(this.config.net, this.log, (err) => {
        if (this.stopping || this.cleanupDone) return;
        // Like a lost agent link: without its network the box cannot do what it was made for,
        // and a guest waiting on a dead stack would hang; end it and tell every client why.
        this.linkError ??= err.message;
        this.kill(err.message, 1);
      }, takePreloadedNetWorker);
      await this.net.start();
      mark('net');
    } else discardPreloadedNetWorker();
    await this.vm.launch();
    mark('spawned');
    void this.vm.exited.then(() => this.onVmExit());

    if (fork) {
      agentConnected = forkAttach(() => this.qmp(), this.paths.agentSocket, this.config.agentTimeoutMs, this.log);
      agentConnected.catch(() => undefined);
    }
    const hello = await this.waitForHello(agentConnected);
    const bootMs = Math.round(performance.now() - this.vm.spawnedAt);
    mark('hello');
    if (!fork) this.agentServer.close();
    if (this.config.template && !this.config.agentPeer) sendResume(this.agent!, this.config.plan, hello, this.log);
    // box.fork(): the source's main process runs on in the copied memory: adopted below, not started again.
    const adoptMain = fork && !!this.config.main && !!(hello.features & FEATURE_FORK_MAIN);
    if (fork && !adoptMain) sendForkResume(this.agent!, hello.features, this.log);
    if (this.net?.caPem) this.sendTrust(hello, this.net.caPem);

    if (this.config.main) {
      const main = this.config.main;
      // An agent that cannot run it would answer the MAIN EXEC with a stream-0 ERROR only and the
      // box would wait for its init forever: refuse the boot instead, with the reason.
      const missing = missingFeatures(Feature.MAIN, hello.features);
      if (missing.length) {
        throw new UnsupportedError(
          `the box's guest agent (${hello.version}) lacks ${missing.join(', ')}: it cannot run the image's main process ${JSON.stringify(main.argv)}`,
        );
      }
      this.main = new MainProcess(this.router!, this.paths, main, this.log, (record) => {
        // The box is its main process: when it ends, so does the box (docker's container exit).
        // Executions still in flight get their EXIT out first (bounded).
        void this.router!.executionsSettled(EXEC_SETTLE_MS).then(() => this.stop(`the main process ended (exit code ${record.exitCode})`));
      });
      // Before any client can connect, so no exec ever runs ahead of the container's init.
      if (adoptMain) sendForkResume(this.agent!, hello.features, this.log, this.main.adopt());
      else if (fork) this.main = undefined; // an older agent: the main process runs on detached
      else if (!main.hold) this.main.start();
      else {
        fs.rmSync(this.paths.exitFile, { force: true });
        // Held for a client that attaches right after the boot; one that never does (it died,
        // or lost the race) must not leave the box without its init forever.
        const holdMs = main.holdTimeoutMs ?? HOLD_TIMEOUT_MS;
        this.holdTimer = setTimeout(() => {
          this.log(`no client attached within ${holdMs} ms; starting the held main process`);
          this.main?.start();
        }, holdMs);
      }
    }

    if (fork) await this.router!.dropStaleFramesUntilFence(this.config.agentTimeoutMs);

    this.controlServer = net.createServer((socket) => this.router?.addClient(new Link(socket)));
    await listen(this.controlServer, this.paths.controlSocket);

    this.state = {
      shimPid: process.pid,
      shimStartTime: processStartTime(process.pid),
      qemuPid: this.vm.pid!,
      qemuStartTime: processStartTime(this.vm.pid!),
      accel: this.config.plan.accel,
      accelReason: this.config.accelReason,
      startedAt: new Date().toISOString(),
      bootMs,
      agentVersion: hello.version,
      agentFeatures: hello.features,
      publishedPorts: this.net ? this.net.ports : this.vm.ports,
      ...(this.config.template && !this.config.agentPeer ? { template: this.config.template.key } : {}),
      timings: (mark('ready'), startupTimings()),
    };
    writeFileAtomic(this.paths.shimState, JSON.stringify(this.state, null, 2));
    this.log(`ready in ${bootMs} ms (agent ${hello.version}, features 0x${hello.features.toString(16)})`);
    this.startLifecycle();
    return this.state;
  }

  /** autoStop and healthCheck (src/shim/lifecycle.ts): the shim owns them, it lives as long as the VM. */
  private startLifecycle(): void {
    const lc = this.config.lifecycle;
    if (lc?.autoStopSecs) {
      const secs = lc.autoStopSecs;
      // A paused box is not idle: it was frozen on purpose, and stopping it would lose its memory.
      const busy = () => this.paused || this.router!.openExecutions() > 0 || (this.main?.attachedCount ?? 0) > 0;
      this.idle = new IdleWatch(secs * 1000, busy, () => {
        // The SDK reads it after the link ends: a box stopped by autoStop is removed with autoDelete.
        try {
          writeFileAtomic(this.paths.autoStopFile, JSON.stringify({ idleSecs: secs, at: new Date().toISOString() }));
        } catch (err) {
          this.log(`cannot record the autoStop: ${(err as Error).message}`);
        }
        void this.stop(`autoStop: no execution or attached client for ${secs} s`);
      });
      this.idle.start();
    }
    if (lc?.healthCheck) {
      this.health = new HealthMonitor(
        lc.healthCheck,
        (ms) => this.router!.pingAgent(ms),
        (status) => {
          try {
            writeFileAtomic(this.paths.healthFile, JSON.stringify(status));
          } catch (err) {
            this.log(`cannot write health status: ${(err as Error).message}`);
          }
        },
        () => this.paused,
      );
      this.health.start();
    }
  }

  /** The VM's QMP monitor (plan.controlSocketPath), connected once and kept. */
  private qmp(): Promise<QmpClient> {
    const socketPath = this.config.plan.controlSocketPath;
    if (this.config.agentPeer || !socketPath) {
      return Promise.reject(new UnsupportedError('this box\'s VM has no control socket (QMP): it cannot be paused'));
    }
    this.qmpClient ??= QmpClient.connect(socketPath).catch((err: unknown) => {
      this.qmpClient = undefined;
      throw err;
    });
    return this.qmpClient.then((c) => {
      if (!c.isClosed) return c;
      this.qmpClient = undefined;
      return this.qmp();
    });
  }

  /** Freezes (QMP stop) or thaws (cont) every vCPU; recorded in shim.json so info() says `paused`. */
  private async setPaused(paused: boolean): Promise<void> {
    if (this.stopping || this.cleanupDone) throw new InvalidStateError('the box is stopping');
    if (this.paused === paused) return;
    await (await this.qmp()).execute(paused ? 'stop' : 'cont');
    this.paused = paused;
    this.log(paused ? 'paused (QMP stop)' : 'resumed (QMP cont)');
    if (this.state) {
      this.state = { ...this.state, paused };
      writeFileAtomic(this.paths.shimState, JSON.stringify(this.state, null, 2));
    }
  }

  /**
   * The box CA (secrets) to the agent, right after the handshake and so before the main process
   * and any exec: the container's trust store gets it before anything in the box runs (an
   * exec-only box's container waits for it: boxlite.trust). An agent without TRUST could not
   * install it and every HTTPS call to a secret host would fail verification: refuse the boot.
   */
  private sendTrust(hello: Hello, caPem: string): void {
    const missing = missingFeatures(Feature.TRUST, hello.features);
    if (missing.length) {
      throw new UnsupportedError(`the box's guest agent (${hello.version}) lacks ${missing.join(', ')}: it cannot install the CA that secrets need`);
    }
    this.agent!.send({ type: 'TRUST', stream: 0, data: Buffer.from(caPem, 'utf8') });
    this.log(`box CA sent to the agent (TRUST, ${caPem.length} bytes)`);
  }

  private async waitForHello(agentConnected: Promise<net.Socket>): Promise<Hello> {
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
    const died = this.vm.exited.then((code) => {
      throw this.vm.bootFailure(code);
    });
    const hello = (async () => {
      const link = new Link(await agentConnected);
      this.agent = link;
      const { hello, early } = await agentHandshake(link);
      this.log(`agent HELLO after ${Math.round(performance.now() - this.vm.spawnedAt)} ms`);
      const router = new StreamRouter(link, hello, {
        log: this.log,
        onViolation: (err) => {
          this.linkError = err.message;
          link.close(err);
        },
        onControl: (client, stream, data) =>
          void serveControl(
            this.controlHandlers,
            data,
            (body) => client.link.send({ type: 'REPLY', stream, data: Buffer.from(JSON.stringify(body)) }),
            { client, stream },
          ),
        onUnrouted: (client, m) => this.main?.fromClient(client, m) ?? false,
        onClientGone: (client) => this.main?.detach(client),
      });
      this.router = router;
      link.onMessage((m) => router.fromAgent(m));
      for (const m of early) if (!link.isClosed) router.fromAgent(m);
      link.onClose((err) => {
        if (this.stopping) return;
        this.linkError ??= new PortalError(`agent link lost${err ? `: ${err.message}` : ''}`).message;
        // Without the agent link nothing in the box can be reached: end the box rather
        // than leave callers waiting on a VM that can no longer answer.
        this.kill(this.linkError, 1);
      });
      if (link.isClosed) throw new PortalError(this.linkError ?? 'agent link lost during the handshake');
      return hello;
    })();
    try {
      return await Promise.race([hello, timeout, died]);
    } finally {
      clearTimeout(timer);
    }
  }

  private readonly controlHandlers: ControlHandlers = {
    info: async (_req, reply) => reply(this.state!),
    network: async (_req, reply) => {
      if (!this.net) throw new UnsupportedError('the box has no network stack of its own (network disabled, or BOXLITE_NET=slirp)');
      reply({ counters: this.net.counters(), snapshot: (await this.net.snapshot()) ?? null });
    },
    ping: async (_req, reply) => reply({ rttMs: await this.router!.pingAgent() }),
    // Reply before the sockets close; the client then waits for the socket to end.
    stop: (_req, reply) => this.stop('stop requested by a client', () => reply({})),
    attach: async (req, reply, ctx) => {
      if (!this.main) throw new InvalidStateError('the box has no main process (its image has no Entrypoint or Cmd, and the box sets neither)');
      if (this.stopping && !this.main.hasExited) throw new InvalidStateError('the box is stopping');
      this.main.attach(ctx.client, ctx.stream, reply, (req as { tty?: boolean }).tty);
    },
    pause: async (_req, reply) => {
      await this.setPaused(true);
      reply({ paused: true });
    },
    resume: async (_req, reply) => {
      await this.setPaused(false);
      reply({ paused: false });
    },
    disk: async (req, reply) => {
      if (this.stopping || this.cleanupDone) throw new InvalidStateError('the box is stopping');
      const qmp = await this.qmp();
      // Test hook (kill -9 of the shim mid-operation): hold before or after the switch. A file in
      // the box's directory, not the environment: a spare shim (fast start) predates the test's env.
      const hold = /^(before|switched|after):(\d+)$/.exec(readTestHook(`${this.config.boxDir}/.test-live-disk-hold`));
      if (hold?.[1] === 'before' && req.overlay) await sleep(Number(hold[2]));
      const held = hold?.[1] === 'switched' ? async () => void (await sleep(Number(hold[2]))) : undefined;
      if (req.overlay && req.state) {
        // The save pauses and thaws the VM: a box the user paused must stay paused.
        if (this.paused) throw new InvalidStateError('the box is paused; resume it before forking it');
        const saved = await forkSave(qmp, this.config.boxDir, req.overlay, req.state, this.log);
        this.log(`root drive now on ${saved.file}, memory saved (${saved.stateBytes} bytes, paused ${saved.pausedMs} ms): fork`);
        return reply(saved);
      }
      // pause (export): the switch happens with the VM stopped, thawed here whatever happens, so
      // neither an error nor a killed SDK leaves the box paused.
      const frozen = !!req.pause && !this.paused;
      if (frozen) await qmp.execute('stop');
      let file: string;
      try {
        file = req.overlay ? await switchRootOverlay(qmp, this.config.boxDir, req.overlay, held) : await activeRootFile(qmp);
      } finally {
        if (frozen) await qmp.execute('cont').catch((err: unknown) => this.log(`cannot resume the VM after the switch: ${(err as Error).message}`));
      }
      if (req.overlay) this.log(`root drive now on ${file} (live snapshot)`);
      if (hold?.[1] === 'after' && req.overlay) await sleep(Number(hold[2]));
      reply({ file });
    },
  };

  /** Graceful power-off (bounded), then force. Idempotent. */
  stop(reason: string, beforeCleanup?: () => void): Promise<void> {
    this.stopping ??= (async () => {
      this.log(`stopping: ${reason}`);
      clearTimeout(this.holdTimer);
      this.idle?.stop();
      this.health?.stop();
      this.main?.stopped();
      if (this.vm.isRunning && this.paused) {
        // A frozen guest cannot power itself off: thaw it first, else every stop of a paused box waits out the timeout.
        await this.qmp()
          .then((c) => c.execute('cont', undefined, 5_000))
          .then(() => (this.paused = false))
          .catch((err: unknown) => this.log(`cannot resume the paused VM before stopping: ${(err as Error).message}`));
      }
      if (this.vm.isRunning) {
        this.agent?.send({ type: 'SHUTDOWN', stream: 0 });
        const graceful = await Promise.race([
          this.vm.exited.then(() => true),
          sleep(this.config.stopTimeoutMs).then(() => false),
        ]);
        if (!graceful) {
          this.log(`guest did not power off within ${this.config.stopTimeoutMs} ms; killing the VM`);
          this.vm.kill();
          await this.vm.exited;
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
    this.vm.kill();
    this.cleanup(exitCode);
  }

  private onVmExit(): void {
    if (this.stopping) return;
    this.log('VM exited without a stop request');
    this.cleanup(1);
  }

  private cleanupDone = false;
  private cleanup(exitCode = 0): void {
    if (this.cleanupDone) return;
    this.cleanupDone = true;
    clearTimeout(this.holdTimer);
    this.idle?.stop();
    this.health?.stop();
    void this.qmpClient?.then((c) => c.close()).catch(() => undefined);
    void this.net?.stop();
    const clientsGone = this.router?.closeAll(this.linkError) ?? Promise.resolve();
    this.agent?.close();
    this.controlServer?.close();
    this.agentServer?.close();
    // Only the lock holder created these; a shim that lost the race must not touch them.
    if (this.lock.isHeld) {
      for (const p of [this.paths.agentSocket, this.paths.controlSocket, this.paths.shimState, this.paths.healthFile, this.paths.qmpSocket, this.paths.shimLock]) {
        fs.rmSync(p, { force: true });
      }
    }
    // The process exits on `done`: let the clients read their last frames first (bounded).
    void clientsGone.then(() => this.finish(exitCode));
  }
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

function readTestHook(file: string): string {
  try {
    return fs.readFileSync(file, 'utf8').trim();
  } catch {
    return '';
  }
}

/** Entry used by boxlite-shim.ts: run the shim, report readiness on stdout, live until the VM stops. */
export async function runShim(config: ShimConfig, out: NodeJS.WritableStream): Promise<void> {
  const shim = new Shim(config);
  let announced = false;
  const announce = (line: ShimReadyLine) => {
    if (announced) return;
    announced = true;
    out.write(JSON.stringify(line) + '\n');
  };
  process.on('SIGTERM', () => void shim.stop('SIGTERM'));
  process.on('SIGINT', () => void shim.stop('SIGINT'));
  process.on('uncaughtException', (err) => {
    shim.kill(`uncaught exception: ${err.stack ?? err.message}`, 1);
    // During start the SDK waits for this line: say why instead of just exiting with 1.
    announce({ ready: false, error: toBoxliteError(err, 'Engine').toJSON() });
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
