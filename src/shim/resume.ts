// The shim's side of fast start (docs/fast-start.md): a box restored from a template gets its
// own boot words, clock and entropy in one RESUME, right after the agent's HELLO and before
// anything else reaches the agent (TRUST, the main process, any exec).
import { EngineError } from '../errors/index.js';
import { Feature } from '../protocol/codec.js';
import type { Link } from '../protocol/link.js';
import { resumeWords } from '../vmm/template.js';
import type { VmPlan } from '../vmm/plan.js';
import type { Hello } from './handshake.js';

export function sendResume(agent: Link, plan: VmPlan, hello: Hello, log: (line: string) => void): void {
  // A guest that says HELLO without RESUME booted cold under us (not from the template):
  // RESUME would be ignored, and the box would miss nothing. But a restored guest that lacks
  // it cannot be: refuse rather than run a box without its config.
  if (!(hello.features & Feature.RESUME)) {
    throw new EngineError(`the restored guest's agent (${hello.version}) does not take RESUME; the template is unusable`);
  }
  const words = resumeWords(plan);
  agent.send({ type: 'RESUME', stream: 0, data: Buffer.from(words, 'utf8') });
  log(`RESUME sent (${words.split(' ').length} words)`);
}
