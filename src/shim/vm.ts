// VM supervision: the one place the shim turns the box's VM description into a process
// (QEMU, under setpriv --pdeathsig so it dies with the shim), watches it and explains a
// failed boot. Host tests replace QEMU by an agent peer (ShimConfig.agentPeer): a process
// that connects to the agent socket itself, such as boxlite-guest --host-mode.
import { spawn, type ChildProcess } from 'node:child_process';
import fs from 'node:fs';
import { EngineError, type BoxliteError } from '../errors/index.js';
import { jailArgs, locateBwrap } from '../vmm/jail.js';
import type { VmPlan } from '../vmm/plan.js';
import { qemuArgs } from '../vmm/qemu.js';
import { restoreArgs } from '../vmm/template.js';
import { forkAgentArgs } from './fork.js';
import { readTail } from '../util/fs.js';
import type { ShimConfig } from './config.js';
import { hostForwardFailure, publishedPorts, resolveHostPorts, type PublishedPort } from './ports.js';

export interface VmPaths {
  agentSocket: string;
  consoleLog: string;
  qemuLog: string;
}

export class VmSupervisor {
  private child?: ChildProcess;
  /** Resolves with the exit code (null: killed or never spawned) once the VM process is gone. */
  exited: Promise<number | null> = Promise.resolve(null);
  /** The host ports the VM publishes, resolved at launch. */
  ports: PublishedPort[] = [];
  spawnedAt = 0;

  constructor(
    private readonly config: ShimConfig,
    private readonly paths: VmPaths,
    private readonly log: (line: string) => void,
  ) {}

  get pid(): number | undefined {
    return this.jailedPid ?? this.child?.pid;
  }

  /** QEMU's own pid when jailed (the child is bwrap then). */
  private jailedPid?: number;

  get isRunning(): boolean {
    return !!this.child && this.child.exitCode === null && this.child.signalCode === null;
  }

  /** Spawns the VM; the agent socket must already listen. Throws NetworkError for a busy port. */
  async launch(): Promise<void> {
    const [binary, args] = await this.command();
    fs.writeFileSync(this.paths.consoleLog, '');
    const qemuLog = fs.openSync(this.paths.qemuLog, 'w');
    const setpriv = findSetpriv();
    if (!setpriv) this.log('setpriv not found: the VM will not die with a SIGKILLed shim');
    const [file, argv] = setpriv ? [setpriv, ['--pdeathsig', 'KILL', '--', binary, ...args]] : [binary, args];
    this.log(`spawn ${binary} ${args.join(' ')}`);
    this.spawnedAt = performance.now();
    const jailed = this.jailed();
    // Fast start: QEMU reads the saved state from this descriptor (restoreArgs: the next stdio slot).
    const state = this.restoring() ? [fs.openSync(this.config.fork?.statePath ?? this.config.template!.statePath, 'r')] : [];
    // A template's guest RAM file (mapped private by QEMU, restoreArgs): the next descriptor.
    if (this.restoring() && !this.config.fork && this.config.template?.ramPath) state.push(fs.openSync(this.config.template.ramPath, 'r'));
    const child = spawn(file, argv, { stdio: ['ignore', qemuLog, qemuLog, ...(jailed ? (['pipe'] as const) : []), ...state] });
    fs.closeSync(qemuLog);
    for (const fd of state) fs.closeSync(fd);
    this.child = child;
    this.exited = new Promise((resolve) => {
      child.once('exit', (code, signal) => {
        this.log(`vm exited code=${code} signal=${signal}`);
        resolve(code);
      });
      child.once('error', (err) => {
        this.log(`vm spawn error: ${err.message}`);
        resolve(null);
      });
    });
    // After `exited` listens: bwrap may already be gone by the time it has reported.
    if (jailed) {
      this.jailedPid = await jailedQemuPid(child);
      if (this.jailedPid === undefined) this.log('bwrap did not report the jailed pid; recording its own');
    }
  }

  private async command(): Promise<[string, string[]]> {
    const peer = this.config.agentPeer;
    if (peer) {
      this.ports = [];
      return [peer.command, peer.args.map((a) => a.replaceAll('{agentSocket}', this.paths.agentSocket))];
    }
    const plan = this.config.plan;
    // Published ports of a slirp NIC: pick the "any" ones, probe the others (NetworkError before
    // QEMU starts). A `stream` NIC's ports are bound by the shim's network worker instead.
    const forwards = await resolveHostPorts(plan.nics.flatMap((n) => (n.kind === 'user' ? n.ports : [])));
    this.ports = publishedPorts(forwards);
    const vmPlan: VmPlan = {
      ...plan,
      nics: plan.nics.map((n) => (n.kind === 'user' ? { ...n, ports: forwards } : n)),
      agent: { socketPath: this.paths.agentSocket },
      console: { logPath: this.paths.consoleLog },
    };
    const cmd = qemuArgs(vmPlan);
    if (this.restoring()) {
      const fd = this.jailed() ? JAIL_INFO_FD + 1 : 3;
      const ram = !this.config.fork && this.config.template?.ramPath ? { fd: fd + 1, memoryMib: plan.resources.memoryMib } : undefined;
      cmd.args.push(...restoreArgs(fd, ram));
    }
    if (this.config.fork) cmd.args = forkAgentArgs(cmd.args);
    const jailed = this.jailed() ? jailArgs(locateBwrap(), cmd, vmPlan, JAIL_INFO_FD) : cmd;
    return [jailed.binary, jailed.args];
  }

  private restoring(): boolean {
    return !this.config.agentPeer && (!!this.config.template || !!this.config.fork);
  }

  private jailed(): boolean {
    return !this.config.agentPeer && !!this.config.plan.jail;
  }

  /** Why the VM exited during boot, from what QEMU and the guest console said. */
  bootFailure(code: number | null): BoxliteError {
    const qemuSaid = readTail(this.paths.qemuLog, 10);
    if (this.config.agentPeer) {
      return new EngineError(`agent peer ${this.config.agentPeer.command} exited before HELLO (code ${code}); it said:\n${qemuSaid}`);
    }
    return (
      hostForwardFailure(qemuSaid) ??
      new EngineError(
        `QEMU exited during boot (code ${code}); last console lines:\n${readTail(this.paths.consoleLog, 20)}` +
          `\nQEMU said:\n${qemuSaid}` +
          (this.jailed() && /^bwrap:/m.test(qemuSaid)
            ? '\nThe jailer (bubblewrap) could not start QEMU; hosts that restrict user namespaces need a bwrap profile, or leave security.jailerEnabled off'
            : ''),
      )
    );
  }

  kill(): void {
    this.child?.kill('SIGKILL');
  }
}

/** The fd bwrap writes its info JSON to (the 4th stdio entry of the spawn). */
const JAIL_INFO_FD = 3;

/** QEMU's host pid from bwrap's info JSON; undefined when bwrap exits or says nothing within 5 s. */
function jailedQemuPid(child: ChildProcess): Promise<number | undefined> {
  const info = child.stdio[JAIL_INFO_FD] as NodeJS.ReadableStream | null;
  return new Promise((resolve) => {
    if (child.exitCode !== null || child.signalCode !== null) return resolve(undefined);
    let text = '';
    // The stream stays open and read to its end: bwrap writes the JSON in pieces, and a closed
    // reader would kill it with SIGPIPE mid-report.
    const done = (pid?: number) => {
      clearTimeout(timer);
      resolve(pid);
    };
    const timer = setTimeout(() => done(), 5000);
    child.once('exit', () => done());
    child.once('error', () => done());
    info?.on('data', (chunk: Buffer) => {
      text += chunk.toString('utf8');
      const m = /"child-pid"\s*:\s*(\d+)/.exec(text);
      if (m) done(Number(m[1]));
    });
  });
}

function findSetpriv(): string | undefined {
  for (const dir of (process.env.PATH ?? '').split(':').concat(['/usr/bin', '/bin'])) {
    const p = `${dir}/setpriv`;
    if (dir && fs.existsSync(p)) return p;
  }
  return undefined;
}
