// Timing of GPU work: wall clock over many runs in one submission, per-kernel timestamp queries, per-kernel wall
// clock (each dispatch repeated alone), and a check of whether the timestamps are quantized.
import type { Executable, GpuRuntime } from '../runtime/gpuRuntime.ts';

/** Records `runs` runs of `encode` into one compute pass and submits them; `encoded` is called once they are recorded. */
function submitRuns(rt: GpuRuntime, encode: (pass: GPUComputePassEncoder) => void, runs: number, encoded?: () => void): void {
  rt.submitWork('timing', (enc) => {
    const pass = enc.beginComputePass();
    for (let i = 0; i < runs; i++) encode(pass);
    pass.end();
    encoded?.();
  });
}

/** Seconds per run of `encode`, averaged over `iters` runs submitted together (after one warm-up run). */
export async function timeGpu(rt: GpuRuntime, encode: (pass: GPUComputePassEncoder) => void, iters: number): Promise<number> {
  const run = async (n: number) => {
    let t0 = 0;
    submitRuns(rt, encode, n, () => (t0 = performance.now())); // encoding is host work, not timed
    await rt.device.queue.onSubmittedWorkDone();
    return (performance.now() - t0) / 1000;
  };
  await run(1);
  return (await run(iters)) / iters;
}

/**
 * Seconds per run of `encode` by the GPU's own clock: `iters` runs in one pass between the pass's begin and end
 * timestamps (the host's recording, and Dawn's at submit, are outside them); null without timestamp-query.
 */
export async function timeGpuStamped(rt: GpuRuntime, encode: (pass: GPUComputePassEncoder) => void, iters: number): Promise<number | null> {
  if (!rt.strata.features.includes('timestamp-query')) return null;
  const querySet = rt.device.createQuerySet({ type: 'timestamp', count: 2 });
  const resolve = rt.device.createBuffer({ size: 16, usage: GPUBufferUsage.QUERY_RESOLVE | GPUBufferUsage.COPY_SRC });
  try {
    rt.submitWork('timing', (enc) => {
      const pass = enc.beginComputePass({ timestampWrites: { querySet, beginningOfPassWriteIndex: 0, endOfPassWriteIndex: 1 } });
      for (let i = 0; i < iters; i++) encode(pass);
      pass.end();
      enc.resolveQuerySet(querySet, 0, 2, resolve, 0);
    });
    const [begin, end] = new BigUint64Array(await rt.readBuffer(resolve, 16));
    return Number(end! - begin!) / 1e9 / iters;
  } finally {
    querySet.destroy();
    resolve.destroy();
  }
}

/**
 * Seconds per run of `encode` as the generator decodes: submissions of `sizes` runs each (runtime/generator.ts
 * submissionSteps: short ones first, from an idle GPU), encoded and submitted back to back after one warm-up
 * submission of the first size (it also lifts the GPU off its idle clocks), so the host records the next while the
 * GPU runs the last (the generator keeps one batch in flight while it encodes the next). Host time the GPU waits on
 * counts.
 */
export async function timePipelined(rt: GpuRuntime, encode: (pass: GPUComputePassEncoder) => void, sizes: readonly number[]): Promise<number> {
  submitRuns(rt, encode, sizes[0]!);
  await rt.device.queue.onSubmittedWorkDone();
  const t0 = performance.now();
  for (const n of sizes) submitRuns(rt, encode, n);
  await rt.device.queue.onSubmittedWorkDone();
  return (performance.now() - t0) / 1000 / sizes.reduce((a, n) => a + n, 0);
}

/** `runs` runs of `encode` in one compute pass of a new command encoder, finished (neither submitted nor counted). */
export function recordRuns(rt: GpuRuntime, encode: (pass: GPUComputePassEncoder) => void, runs: number): GPUCommandBuffer {
  const enc = rt.device.createCommandEncoder();
  const pass = enc.beginComputePass();
  for (let i = 0; i < runs; i++) encode(pass);
  pass.end();
  return enc.finish();
}

/**
 * Host seconds to record one run of `encode` (into a pass of a command encoder that is finished, never submitted):
 * the CPU's share of a step. When it is near the pipelined step time, decode waits on the host, not the GPU.
 */
export function hostEncodeSeconds(rt: GpuRuntime, encode: (pass: GPUComputePassEncoder) => void, runs: number): number {
  let best = Infinity;
  for (let round = 0; round < 3; round++) {
    const t0 = performance.now();
    recordRuns(rt, encode, runs);
    best = Math.min(best, (performance.now() - t0) / 1000 / runs);
  }
  return best;
}

/**
 * Host seconds Dawn takes to submit one recorded run of `encode`: `runs` runs in one command buffer, finished
 * beforehand, and only the submit call timed (Dawn records its commands for the driver there, on this thread).
 */
export async function submitSeconds(rt: GpuRuntime, encode: (pass: GPUComputePassEncoder) => void, runs: number): Promise<number> {
  const commands = recordRuns(rt, encode, runs);
  const t0 = performance.now();
  rt.device.queue.submit([commands]);
  const seconds = (performance.now() - t0) / 1000 / runs;
  await rt.device.queue.onSubmittedWorkDone();
  return seconds;
}

type Profilable = Pick<Executable, 'encodeProfiled' | 'program'>;

/** Raw begin/end timestamps (ns) of each kernel over `repeats` profiled runs; null without timestamp-query. */
export async function kernelTimestamps(rt: GpuRuntime, exe: Profilable, repeats: number, beforeRun?: () => Promise<void>): Promise<{ names: string[]; runs: { begin: bigint; end: bigint }[][] } | null> {
  if (!rt.strata.features.includes('timestamp-query')) return null;
  const n = exe.program.kernels.length;
  const querySet = rt.device.createQuerySet({ type: 'timestamp', count: 2 * n });
  const resolve = rt.device.createBuffer({ size: 16 * n, usage: GPUBufferUsage.QUERY_RESOLVE | GPUBufferUsage.COPY_SRC });
  let names: string[] = [];
  const runs: { begin: bigint; end: bigint }[][] = [];
  try {
    for (let r = 0; r < repeats; r++) {
      await beforeRun?.();
      rt.submitWork('profile', (enc) => {
        names = exe.encodeProfiled(enc, querySet, 0);
        enc.resolveQuerySet(querySet, 0, 2 * n, resolve, 0);
      });
      const raw = new BigUint64Array(await rt.readBuffer(resolve, 16 * n));
      runs.push(names.map((_, i) => ({ begin: raw[2 * i]!, end: raw[2 * i + 1]! })));
    }
  } finally {
    querySet.destroy();
    resolve.destroy();
  }
  return { names, runs };
}

/** Per-kernel GPU time from timestamp queries (one run); null when the adapter has no timestamp-query. */
export async function profileKernels(rt: GpuRuntime, exe: Profilable): Promise<{ name: string; ms: number }[] | null> {
  const stamps = await kernelTimestamps(rt, exe, 1);
  if (!stamps) return null;
  return stamps.names.map((name, i) => ({ name, ms: Number(stamps.runs[0]![i]!.end - stamps.runs[0]![i]!.begin) / 1e6 }));
}

/**
 * Milliseconds of each kernel run alone: `iters` dispatches of it in one pass (Dawn puts a barrier between
 * dispatches that write storage, so they do not overlap), by wall clock. For adapters without timestamps, or
 * with quantized ones. Kernels that update state in place leave it changed: profile only, never mid-generation.
 */
export async function timeKernelsAlone(rt: GpuRuntime, exe: Pick<Executable, 'program' | 'buffers'>, iters: number): Promise<number[]> {
  const ms: number[] = [];
  for (const kernel of exe.program.kernels) {
    const pipeline = await rt.pipeline(kernel.wgsl, kernel.name); // cached by WGSL text: the program's own pipeline
    const bindGroup = rt.device.createBindGroup({
      layout: pipeline.getBindGroupLayout(0),
      entries: kernel.bindings.map((b, i) => ({ binding: i, resource: { buffer: exe.buffers[b]! } })),
      label: `${kernel.name}-alone`,
    });
    const seconds = await timeGpu(rt, (pass) => {
      pass.setPipeline(pipeline);
      pass.setBindGroup(0, bindGroup);
      pass.dispatchWorkgroups(...kernel.workgroups);
    }, iters);
    ms.push(seconds * 1e3);
  }
  return ms;
}

export interface TimestampQuantization {
  /** Largest step (ns) that every timestamp of the run is a whole multiple of, measured from the first one. */
  stepNs: number;
  /** Kernels whose end timestamp equals their begin timestamp. */
  zeroDeltas: number;
  kernels: number;
  quantized: boolean;
  note: string;
}

const gcd = (a: bigint, b: bigint): bigint => (b === 0n ? a : gcd(b, a % b));

/**
 * Whether timestamps look rounded: Dawn's quantization (on unless `timestamp_quantization` is disabled) masks
 * them to ~65 us (2^16 ns) steps, so every value is a multiple of a large step and short kernels read 0.
 * A GPU clock read directly ticks at 1 ns to 1 us.
 */
export function detectQuantization(stamps: { begin: bigint; end: bigint }[]): TimestampQuantization {
  const first = stamps[0]?.begin ?? 0n;
  let step = 0n;
  for (const s of stamps) {
    for (const t of [s.begin, s.end]) step = gcd(step, t >= first ? t - first : first - t);
  }
  const zeroDeltas = stamps.filter((s) => s.end === s.begin).length;
  const stepNs = Number(step);
  const mostlyZero = stamps.length >= 8 && zeroDeltas > stamps.length / 2;
  // decode kernels take 2-50 us: a step of 10 us or more makes their times meaningless; 1-10 us only blurs them
  const quantized = stepNs >= 10_000 || mostlyZero;
  const us = (stepNs / 1000).toFixed(stepNs < 10_000 ? 2 : 1);
  const note = quantized
    ? `timestamps look quantized: every value a multiple of ${us} us, ${zeroDeltas} of ${stamps.length} kernels read 0; per-kernel times are not trustworthy`
    : stepNs >= 1000
      ? `timestamps are coarse but usable: every value a multiple of ${us} us (${zeroDeltas} of ${stamps.length} kernels read 0); kernels of a few steps are imprecise`
      : `timestamps look unquantized (common step ${stepNs} ns, ${zeroDeltas} of ${stamps.length} kernels read 0)`;
  return { stepNs, zeroDeltas, kernels: stamps.length, quantized, note };
}
