import { defineConfig } from 'vitest/config';

// Test tiers (docs/architecture.md#tests): unit, protocol and host need no VM;
// integration boots real VMs (TCG here) and runs files one at a time so two
// cores are not oversubscribed by parallel boots across files.
export default defineConfig({
  test: {
    projects: [
      { test: { name: 'unit', include: ['test/unit/**/*.test.ts'] } },
      { test: { name: 'protocol', include: ['test/protocol/**/*.test.ts'] } },
      { test: { name: 'host', include: ['test/host/**/*.test.ts'], testTimeout: 30_000, hookTimeout: 30_000 } },
      {
        test: {
          name: 'integration',
          include: ['test/integration/**/*.test.ts'],
          testTimeout: 240_000,
          hookTimeout: 240_000,
          fileParallelism: false,
          globalSetup: ['test/integration/global-setup.ts'],
          setupFiles: ['test/integration/setup.ts'],
        },
      },
      {
        // The box types (issue 8) on their images: slow under TCG, run serially and on their own
        // (scripts/test.sh runs this project after the others, never alongside them).
        test: {
          name: 'boxtypes',
          include: ['test/boxtypes/**/*.test.ts'],
          testTimeout: 600_000,
          hookTimeout: 600_000,
          fileParallelism: false,
          globalSetup: ['test/integration/global-setup.ts'],
          setupFiles: ['test/integration/setup.ts'],
        },
      },
    ],
  },
});
