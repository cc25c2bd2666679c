// What the shim does on its own for a box's lifecycle options, because it is the one process
// that lives exactly as long as the VM (the SDK process may exit, a detached box has none):
// autoStop (stop after so long without an execution or an attached client) and healthCheck
// (the reference's: is the guest agent responsive, PING over the agent link, docker's rules
// for interval, timeout, retries and start period). Pure logic over injected clocks and probes;
// shim.ts wires them to the router, the QMP pause state and boxes/<id>/health.json.

/** `JsHealthCheckOptions` (seconds). */
export interface HealthCheckSpec {
  interval: number;
  timeout: number;
  retries: number;
  startPeriod: number;
}

/** `JsHealthStatus` of the reference. */
export interface HealthStatus {
  state: 'None' | 'Starting' | 'Healthy' | 'Unhealthy';
  failures: number;
  lastCheck?: string;
}

/** What the shim runs for a box; carried in ShimConfig.lifecycle. */
export interface LifecycleConfig {
  /** Idle seconds before the box is stopped (> 0). */
  autoStopSecs?: number;
  healthCheck?: HealthCheckSpec;
}

interface Clock {
  now(): number;
  setTimeout(fn: () => void, ms: number): unknown;
  clearTimeout(handle: unknown): void;
}

const realClock: Clock = {
  now: () => Date.now(),
  setTimeout: (fn, ms) => setTimeout(fn, ms),
  clearTimeout: (h) => clearTimeout(h as NodeJS.Timeout),
};

/**
 * Calls `onIdle` once the box was idle (`isBusy()` false) for `idleMs` without a break. Polled:
 * busy-ness is a count the router and the main process already keep, and polling it costs
 * nothing next to a VM, where hooks on every stream would couple this to their code.
 */
export class IdleWatch {
  private last: number;
  private wasBusy = false;
  private timer?: unknown;
  private done = false;
  private readonly tickMs: number;

  constructor(
    private readonly idleMs: number,
    private readonly isBusy: () => boolean,
    private readonly onIdle: () => void,
    private readonly clock: Clock = realClock,
  ) {
    this.last = clock.now();
    this.tickMs = Math.max(50, Math.min(1000, Math.floor(idleMs / 4)));
  }

  start(): void {
    this.schedule();
  }

  stop(): void {
    this.done = true;
    if (this.timer !== undefined) this.clock.clearTimeout(this.timer);
  }

  /** One poll; public for tests. */
  tick(): void {
    if (this.done) return;
    const now = this.clock.now();
    // Idle counts from the first poll that sees the box idle, not from the last one that saw it
    // busy: the work may have gone on for up to a poll after that, and autoStop must never be early.
    if (this.isBusy()) {
      this.last = now;
      this.wasBusy = true;
    } else if (this.wasBusy) {
      this.last = now;
      this.wasBusy = false;
    } else if (now - this.last >= this.idleMs) {
      this.done = true;
      this.onIdle();
      return;
    }
    this.schedule();
  }

  private schedule(): void {
    if (this.done) return;
    this.timer = this.clock.setTimeout(() => this.tick(), this.tickMs);
  }
}

/**
 * The reference's HealthStatus state machine: Starting from the boot; a passing check makes it
 * Healthy and resets the count; a failing one counts (not during the start period while still
 * Starting, as docker) and `retries` consecutive ones make it Unhealthy. Checks are skipped
 * while `skip()` (a paused VM cannot answer, and docker does not probe a paused container).
 */
export class HealthMonitor {
  private current: HealthStatus = { state: 'Starting', failures: 0 };
  private readonly startedAt: number;
  private timer?: unknown;
  private stopped = false;

  constructor(
    private readonly spec: HealthCheckSpec,
    private readonly probe: (timeoutMs: number) => Promise<unknown>,
    private readonly onChange: (status: HealthStatus) => void,
    private readonly skip: () => boolean = () => false,
    private readonly clock: Clock = realClock,
  ) {
    this.startedAt = clock.now();
  }

  get status(): HealthStatus {
    return { ...this.current };
  }

  start(): void {
    this.onChange(this.status);
    this.schedule();
  }

  stop(): void {
    this.stopped = true;
    if (this.timer !== undefined) this.clock.clearTimeout(this.timer);
  }

  /** One check now (public for tests); resolves with the status after it. */
  async check(): Promise<HealthStatus> {
    if (this.stopped || this.skip()) return this.status;
    const timeoutMs = Math.max(1, Math.round(this.spec.timeout * 1000));
    let ok: boolean;
    try {
      await withTimeout(this.probe(timeoutMs), timeoutMs, this.clock);
      ok = true;
    } catch {
      ok = false;
    }
    if (this.stopped) return this.status;
    const lastCheck = new Date(this.clock.now()).toISOString();
    if (ok) this.current = { state: 'Healthy', failures: 0, lastCheck };
    else if (this.current.state === 'Starting' && this.clock.now() - this.startedAt < this.spec.startPeriod * 1000) {
      this.current = { ...this.current, lastCheck };
    } else {
      const failures = this.current.failures + 1;
      this.current = { state: failures >= this.spec.retries ? 'Unhealthy' : this.current.state, failures, lastCheck };
    }
    this.onChange(this.status);
    return this.status;
  }

  private schedule(): void {
    if (this.stopped) return;
    this.timer = this.clock.setTimeout(() => {
      void this.check().finally(() => this.schedule());
    }, Math.max(10, Math.round(this.spec.interval * 1000)));
  }
}

function withTimeout<T>(p: Promise<T>, ms: number, clock: Clock): Promise<T> {
  return new Promise<T>((resolve, reject) => {
    const timer = clock.setTimeout(() => reject(new Error(`no answer within ${ms} ms`)), ms);
    p.then(
      (v) => {
        clock.clearTimeout(timer);
        resolve(v);
      },
      (e: unknown) => {
        clock.clearTimeout(timer);
        reject(e);
      },
    );
  });
}
