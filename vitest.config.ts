import { defineConfig } from 'vitest/config';

// GPU tests share one Dawn device per worker; lavapipe is CPU-bound, so two workers match the 2-core machines.
export default defineConfig({
  test: {
    include: ['test/**/*.test.ts'],
    testTimeout: 120_000,
    hookTimeout: 120_000,
    pool: 'forks',
    maxWorkers: 2,
  },
});
