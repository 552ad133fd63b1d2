import { defineConfig } from 'vitest/config';

// GPU tests share one Dawn device per worker; lavapipe is CPU-bound, so two workers match the 2-core machines.
// Timeouts are hang guards, not speed limits: a model test takes minutes on an idle 2-core machine with lavapipe
// and several times that beside another test run, so every test and hook gets 30 minutes before it counts as
// hung, and a worker (Dawn can take a while to let go of its device) 2 minutes to shut down.
const HANG_GUARD_MS = 1_800_000;

export default defineConfig({
  test: {
    include: ['test/**/*.test.ts'],
    testTimeout: HANG_GUARD_MS,
    hookTimeout: HANG_GUARD_MS,
    teardownTimeout: 120_000,
    pool: 'forks',
    maxWorkers: 2,
  },
});
