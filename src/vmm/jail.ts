// The jailer (`security.jailerEnabled`): QEMU runs inside bubblewrap, in its own user, mount, pid,
// ipc, uts and cgroup namespaces, as an unprivileged uid, seeing only /usr (read-only), the files
// of its plan and a private /dev, /proc and /tmp. The network namespace is shared: slirp's
// published ports must be reachable on the host. Recipe and cost: ARCHITECTURE.md section 4b.
import fs from 'node:fs';
import path from 'node:path';
import { EngineError } from '../errors/index.js';
import type { QemuCommand } from './qemu.js';
import type { VmPlan } from './plan.js';

/** The uid/gid QEMU runs as inside its user namespace (the reference's default: nobody). */
export const JAIL_ID = 65534;

/** The host facts jailArgs needs; tests pass fixed ones. */
export interface JailHost {
  /** The symlink target of a top-level directory such as /lib (merged /usr), null when it is a directory, undefined when missing. */
  topLevel(p: string): string | null | undefined;
  /** The backing files of a disk image, nearest first (absolute paths). */
  backingChain(image: string): string[];
}

const realHost: JailHost = {
  topLevel(p) {
    try {
      return fs.lstatSync(p).isSymbolicLink() ? fs.readlinkSync(p) : null;
    } catch {
      return undefined;
    }
  },
  backingChain: qcow2BackingChain,
};

/**
 * The bwrap argv that runs `cmd` (QEMU for `plan`) jailed. `infoFd`: the fd on which bwrap
 * reports the pid QEMU has on the host (it is PID 1 of its pid namespace).
 */
export function jailArgs(bwrap: string, cmd: QemuCommand, plan: VmPlan, infoFd: number, host: JailHost = realHost): QemuCommand {
  const args = [
    '--die-with-parent', '--new-session', '--clearenv', '--as-pid-1',
    '--unshare-all', '--unshare-user', '--disable-userns',
    // Only slirp (BOXLITE_NET=slirp) opens host sockets inside QEMU; with the box's own stack QEMU
    // talks to the shim over net.sock in the box dir, so it gets an empty network namespace.
    ...(plan.nics.some((n) => n.kind === 'user') ? ['--share-net'] : []),
    '--uid', String(JAIL_ID), '--gid', String(JAIL_ID),
    '--info-fd', String(infoFd),
    '--ro-bind', '/usr', '/usr',
  ];
  for (const dir of ['/bin', '/sbin', '/lib', '/lib32', '/lib64', '/libx32']) {
    const target = host.topLevel(dir);
    if (target === null) args.push('--ro-bind', dir, dir);
    else if (target !== undefined) args.push('--symlink', target, dir);
  }
  // The dynamic loader's cache; QEMU reads nothing else from /etc.
  args.push('--ro-bind-try', '/etc/ld.so.cache', '/etc/ld.so.cache');
  args.push('--dev', '/dev', '--proc', '/proc', '--tmpfs', '/tmp');
  if (plan.accel === 'kvm') args.push('--dev-bind', '/dev/kvm', '/dev/kvm');

  const ro = new Set<string>();
  const rw = new Set<string>();
  if (path.isAbsolute(cmd.binary) && !cmd.binary.startsWith('/usr/')) ro.add(cmd.binary);
  ro.add(plan.boot.kernelPath).add(plan.boot.initrdPath);
  for (const d of plan.disks) {
    (d.readOnly ? ro : rw).add(d.path);
    for (const b of host.backingChain(d.path)) ro.add(b);
  }
  for (const s of plan.shares) (s.readOnly ? ro : rw).add(s.hostPath);
  // Sockets are connected to (agent) or created (QMP), and the console log is appended to: their directories.
  for (const p of [plan.console.logPath, plan.agent.socketPath, plan.controlSocketPath]) if (p) rw.add(path.dirname(p));
  // Parents first, so a later bind of a file inside a bound directory is not hidden by it.
  const binds = [...[...ro].map((p) => ['--ro-bind', p] as const), ...[...rw].map((p) => ['--bind', p] as const)]
    .filter(([flag, p]) => !(flag === '--ro-bind' && rw.has(p)))
    .sort((a, b) => a[1].split('/').length - b[1].split('/').length);
  for (const [flag, p] of binds) args.push(flag, p, p);

  // A relative binary (PATH lookup) is looked up by bwrap in the jail's /usr.
  args.push('--', cmd.binary, ...cmd.args);
  return { binary: bwrap, args };
}

/**
 * The backing files of a qcow2 image, nearest first; [] for a raw image or one without a
 * backing file. Reads the header only (QCOW2 spec: backing_file_offset at 8, size at 16).
 */
export function qcow2BackingChain(image: string): string[] {
  const chain: string[] = [];
  let current = image;
  for (let depth = 0; depth < 16; depth++) {
    let fd: number;
    try {
      fd = fs.openSync(current, 'r');
    } catch {
      return chain;
    }
    try {
      const header = Buffer.alloc(20);
      if (fs.readSync(fd, header, 0, 20, 0) < 20 || header.readUInt32BE(0) !== 0x514649fb) return chain;
      const offset = Number(header.readBigUInt64BE(8));
      const size = header.readUInt32BE(16);
      if (!offset || !size || size > 1023) return chain;
      const name = Buffer.alloc(size);
      fs.readSync(fd, name, 0, size, offset);
      const backing = name.toString('utf8');
      // QEMU resolves a relative backing file against the directory of the image naming it.
      current = path.resolve(path.dirname(current), backing);
      if (backing.includes(':') && !fs.existsSync(current)) {
        throw new EngineError(`disk ${image}: backing file ${backing} is not a plain file; the jailer cannot expose it`);
      }
      chain.push(current);
    } finally {
      fs.closeSync(fd);
    }
  }
  return chain;
}

/** bubblewrap on PATH (or BOXLITE_BWRAP); throws an Engine error naming the package when missing. */
export function locateBwrap(env: NodeJS.ProcessEnv = process.env): string {
  const override = env.BOXLITE_BWRAP;
  const candidates = override ? [override] : (env.PATH ?? '').split(':').filter(Boolean).concat('/usr/bin').map((d) => path.join(d, 'bwrap'));
  for (const c of candidates) {
    try {
      fs.accessSync(c, fs.constants.X_OK);
      return c;
    } catch {
      // next
    }
  }
  throw new EngineError(
    override
      ? `BOXLITE_BWRAP=${override} is not an executable file`
      : 'security.jailerEnabled needs bubblewrap (bwrap) on PATH; install it (Debian: apt-get install bubblewrap) or leave the jailer off',
  );
}
