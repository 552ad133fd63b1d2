// Measures the per-kernel profile of a loaded program: timestamp queries where the adapter has them and they are
// not quantized, otherwise each kernel timed alone by wall clock. The analysis is in kernelProfile.ts.
import type { Executable, GpuRuntime } from '../runtime/gpuRuntime.ts';
import { type KernelProfile, buildKernelProfile, median } from './kernelProfile.ts';
import { detectQuantization, kernelTimestamps, timeKernelsAlone } from './timing.ts';

export interface MeasureOptions {
  copyBytesPerSecond: number;
  /** Profiled runs with timestamps (per-kernel median). */
  repeats: number;
  /** Dispatches per kernel when timed alone. */
  aloneIters: number;
  /** Time each kernel alone even when timestamps are available. */
  wallclock?: boolean;
  /** Puts the program's state back before each timestamped run (a prefill bucket must not grow the context). */
  beforeRun?: () => Promise<void>;
}

export async function measureKernelProfile(rt: GpuRuntime, exe: Executable, o: MeasureOptions): Promise<KernelProfile> {
  const stamps = o.wallclock ? null : await kernelTimestamps(rt, exe, o.repeats, o.beforeRun);
  const quantization = stamps ? detectQuantization(stamps.runs.flat()) : undefined;
  if (stamps && !quantization!.quantized) {
    const ms = stamps.names.map((_, i) => median(stamps.runs.map((run) => Number(run[i]!.end - run[i]!.begin) / 1e6)));
    return buildKernelProfile(exe.program, ms, { timer: 'timestamp', repeats: o.repeats, copyBytesPerSecond: o.copyBytesPerSecond, ...(quantization ? { quantization } : {}) });
  }
  const ms = await timeKernelsAlone(rt, exe, o.aloneIters);
  return buildKernelProfile(exe.program, ms, { timer: 'wallclock-alone', repeats: o.aloneIters, copyBytesPerSecond: o.copyBytesPerSecond, ...(quantization ? { quantization } : {}) });
}
