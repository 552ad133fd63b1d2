// Wall-clock timing of GPU work: many runs encoded into one submission, then waiting for the queue to drain.
import type { GpuRuntime } from '../runtime/gpuRuntime.ts';

/** Seconds per run of `encode`, averaged over `iters` runs submitted together (after one warm-up run). */
export async function timeGpu(rt: GpuRuntime, encode: (pass: GPUComputePassEncoder) => void, iters: number): Promise<number> {
  const run = async (n: number) => {
    const enc = rt.device.createCommandEncoder();
    const pass = enc.beginComputePass();
    for (let i = 0; i < n; i++) encode(pass);
    pass.end();
    const t0 = performance.now();
    rt.submit([enc.finish()]);
    await rt.device.queue.onSubmittedWorkDone();
    return (performance.now() - t0) / 1000;
  };
  await run(1);
  return (await run(iters)) / iters;
}

/** Per-kernel GPU time from timestamp queries, summed by kernel name; null when the adapter has no timestamp-query. */
export async function profileKernels(rt: GpuRuntime, exe: { encodeProfiled(e: GPUCommandEncoder, q: GPUQuerySet, first: number): string[]; program: { kernels: unknown[] } }): Promise<{ name: string; ms: number }[] | null> {
  if (!rt.strata.features.includes('timestamp-query')) return null;
  const n = exe.program.kernels.length;
  const querySet = rt.device.createQuerySet({ type: 'timestamp', count: 2 * n });
  const resolve = rt.device.createBuffer({ size: 16 * n, usage: GPUBufferUsage.QUERY_RESOLVE | GPUBufferUsage.COPY_SRC });
  const enc = rt.device.createCommandEncoder();
  const names = exe.encodeProfiled(enc, querySet, 0);
  enc.resolveQuerySet(querySet, 0, 2 * n, resolve, 0);
  rt.submit([enc.finish()]);
  const raw = new BigUint64Array(await rt.readBuffer(resolve, 16 * n));
  querySet.destroy();
  resolve.destroy();
  return names.map((name, i) => ({ name, ms: Number(raw[2 * i + 1]! - raw[2 * i]!) / 1e6 }));
}
