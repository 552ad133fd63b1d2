import { defineConfig } from 'vitest/config';

// GPU tests share one Dawn device per worker; lavapipe is CPU-bound, so two workers match the 2-core machines.
// Timeouts are hang guards, not speed limits: a model test takes minutes on an idle 2-core machine with lavapipe
// and several times that beside another test run, so every test and hook gets 30 minutes before it counts as
// hung, and a worker (Dawn can take a while to let go of its device) 2 minutes to shut down.
const HANG_GUARD_MS = 1_800_000;

// Lavapipe with 4-wide vectors (LLVM's 128-bit SSE, not 256-bit AVX): the suite compiles ~1,600 distinct kernels,
// each once, and lavapipe's compile is most of a cold run; measured on this 2-core machine kind, 4-wide compiles a
// kernel in about half the CPU time (ops/quantized.test.ts cold: 26.6 s against 55 s). Mesa keys its shader cache by
// the width, so a cache filled at another width is not reused wrongly. Read by Mesa when Dawn creates its Vulkan
// instance in a worker (forks inherit this process's environment); a value already set wins. Tests only: the CLI
// and library leave the driver's default.
process.env.LP_NATIVE_VECTOR_WIDTH ??= '128';

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
