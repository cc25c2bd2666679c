// Which HELLO feature bits (docs/protocol.md §4) each operation needs. Pure: the
// client and the shim both check an EXEC against the agent's HELLO before sending it,
// so an agent that lacks a feature gives an immediate, named refusal instead of a
// request it would drop (an older agent answers an unknown EXEC flag with a stream-0
// ERROR only, and the caller would wait forever).
import { Feature } from './codec.js';

export const EXEC_FLAG_TTY = 0x1;
export const EXEC_FLAG_TOOL = 0x2;
export const EXEC_FLAG_MAIN = 0x4;

/** Every feature this host implements; sent in the host's own HELLO. */
export const HOST_FEATURES = Feature.EXEC | Feature.TTY | Feature.WINDOW | Feature.TIMEOUT | Feature.TOOL | Feature.MAIN | Feature.TRUST;
/** The version string of the host's own HELLO (shim to agent, client to shim). */
export const HOST_VERSION = '0.1.0';

const FEATURE_NAMES: ReadonlyArray<[number, string]> = [
  [Feature.EXEC, 'EXEC (0x1, command execution)'],
  [Feature.TTY, 'TTY (0x2, terminals)'],
  [Feature.WINDOW, 'WINDOW (0x4, flow control)'],
  [Feature.TIMEOUT, 'TIMEOUT (0x8, execution timeouts)'],
  [Feature.TOOL, 'TOOL (0x10, the agent toolbox used by copyIn/copyOut)'],
  [Feature.MAIN, 'MAIN (0x20, the image\'s main process as the container init)'],
  [Feature.TRUST, 'TRUST (0x40, the box CA in the container\'s trust store, for secrets)'],
];

/**
 * Bits an EXEC needs. Every execution needs WINDOW as well as EXEC: the host's
 * stdin writer and output accounting are built on credit, and without it stdin would
 * stall after the first window.
 */
export function execFeatures(exec: { flags: number; timeoutMs: number }): number {
  let need = Feature.EXEC | Feature.WINDOW;
  if (exec.flags & EXEC_FLAG_TTY) need |= Feature.TTY;
  if (exec.flags & EXEC_FLAG_TOOL) need |= Feature.TOOL;
  if (exec.flags & EXEC_FLAG_MAIN) need |= Feature.MAIN;
  if (exec.timeoutMs > 0) need |= Feature.TIMEOUT;
  return need;
}

/** Names of the bits of `needed` that `advertised` lacks; [] when all are there. */
export function missingFeatures(needed: number, advertised: number): string[] {
  const missing = needed & ~advertised;
  return FEATURE_NAMES.filter(([bit]) => missing & bit).map(([, name]) => name);
}
