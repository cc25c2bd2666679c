// Start-up timestamps of the shim process (docs/fast-start.md "Where the time goes"): milliseconds
// since this process started (performance.timeOrigin), written to shim.json as `timings` so
// a bench can line them up with the SDK's own clock (epoch = timeOrigin + the mark).
const marks: Record<string, number> = {};

export function mark(name: string): void {
  marks[name] ??= Math.round(performance.now() * 10) / 10;
}

export function startupTimings(): { origin: number; marks: Record<string, number> } {
  return { origin: Math.round(performance.timeOrigin), marks: { ...marks } };
}
