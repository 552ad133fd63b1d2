// Kernel-level figures on the adapter at hand: the copy roofline, matvec bandwidth as a fraction of it, and an
// elementwise chain fused vs unfused.
import { QUANT_FORMATS, isQuantized } from '../compiler/quantized.ts';
import { type DeviceLimits, compile } from '../compiler/compile.ts';
import { input, trace, weight } from '../dsl/trace.ts';
import type { Tensor } from '../dsl/tensor.ts';
import type { GpuRuntime } from '../runtime/gpuRuntime.ts';
import { timeGpu } from './timing.ts';

/** The copy size for the roofline: 256 MiB (16 MiB quick), within the adapter's storage binding limit. */
export function copyRooflineBytes(rt: GpuRuntime, quick: boolean): number {
  return Math.min(quick ? 16 << 20 : 256 << 20, Math.floor(rt.limits.maxStorageBufferBindingSize / (1 << 20)) << 20);
}

/** Bytes read + written per second by a vec4 copy of `bytes` bytes. */
export async function copyRoofline(rt: GpuRuntime, bytes: number, iters: number): Promise<number> {
  const n4 = bytes / 16;
  const wgsl = `@group(0) @binding(0) var<storage, read> src: array<vec4<f32>>;
@group(0) @binding(1) var<storage, read_write> dst: array<vec4<f32>>;
@compute @workgroup_size(256)
fn main(@builtin(global_invocation_id) g: vec3<u32>, @builtin(num_workgroups) nw: vec3<u32>) {
  let i = g.x + g.y * nw.x * 256u;
  if (i < ${n4}u) { dst[i] = src[i]; }
}`;
  const pipeline = await rt.pipeline(wgsl, 'copy');
  const src = rt.createBuffer(bytes, 'copy-src');
  const dst = rt.createBuffer(bytes, 'copy-dst');
  const bind = rt.device.createBindGroup({ layout: pipeline.getBindGroupLayout(0), entries: [{ binding: 0, resource: { buffer: src } }, { binding: 1, resource: { buffer: dst } }] });
  const groups = Math.ceil(n4 / 256);
  const x = Math.min(groups, 65535);
  const y = Math.ceil(groups / x);
  const seconds = await timeGpu(rt, (pass) => {
    pass.setPipeline(pipeline);
    pass.setBindGroup(0, bind);
    pass.dispatchWorkgroups(x, y);
  }, iters);
  src.destroy();
  dst.destroy();
  return (2 * bytes) / seconds;
}

async function timeProgram(rt: GpuRuntime, fn: () => Record<string, Tensor>, fuse: boolean, iters: number, limits: Partial<DeviceLimits> = {}): Promise<{ seconds: number; kernels: number }> {
  const program = compile(trace(fn), { fuse, limits: { ...rt.limits, ...limits } });
  const exe = await rt.load(program, { namespace: `bench-${Math.random()}/` });
  return { seconds: await timeGpu(rt, (pass) => exe.encode(pass), iters), kernels: program.kernels.length };
}

export interface OpsReport {
  copyGBps: number;
  /** `x [batch, cols] @ W.T` for W [rows, cols]: bytes actually read (packed values and block constants, x) and written. */
  /** `accumulators`: the rows path's budget (DeviceLimits.matvecAccumulators; 0: the generic loop) where varied. */
  matvec: { storage: string; accumulators?: number; batch: number; rows: number; cols: number; GBps: number; fractionOfCopy: number }[];
  elementwiseChain: { elements: number; ops: number; fusedMs: number; unfusedMs: number; fusedKernels: number; unfusedKernels: number; speedup: number };
}

/**
 * Matvec shapes [batch, rows, cols]: one large weight (the headline figure), then llama-400m's projections (gate or
 * up, down, LM head) at batch 1 and 8, the shapes its decode reads.
 */
/** The rows path's accumulator budgets measured for f16 at batch 8 (0: the generic loop, as before it). */
const ROWS_BUDGETS = [0, 16, 32, 64];

const MATVEC_SHAPES: [number, number, number][] = [
  [1, 8192, 4096],
  ...[1, 8].flatMap((b): [number, number, number][] => [[b, 2816, 1024], [b, 1024, 2816], [b, 32000, 1024]]),
];

export async function opsBench(rt: GpuRuntime, quick: boolean): Promise<OpsReport> {
  const iters = quick ? 5 : 50;
  const copyBytes = copyRooflineBytes(rt, quick);
  const copyGBps = (await copyRoofline(rt, copyBytes, iters)) / 1e9;
  const matvec: OpsReport['matvec'] = [];
  for (const [batch, rows, cols] of quick ? [[1, 1024, 1024]] : MATVEC_SHAPES)
    for (const storage of ['f32', 'f16', 'q8', 'q4'] as const)
      for (const accumulators of storage === 'f16' && batch > 1 ? ROWS_BUDGETS : [undefined]) {
        const limits = accumulators === undefined ? {} : { matvecAccumulators: accumulators };
        const { seconds } = await timeProgram(rt, () => ({ y: input('x', [batch, cols]).matmul(weight(`w_${storage}`, [rows, cols], storage).T) }), true, iters, limits);
        // bytes actually read: packed values and their block constants (not the buffer's padding), x; and y written
        const weightBytes = isQuantized(storage) ? QUANT_FORMATS[storage].readBytes(rows * cols) : rows * cols * (storage === 'f32' ? 4 : 2);
        const bytes = weightBytes + 4 * batch * (cols + rows);
        const GBps = bytes / seconds / 1e9;
        matvec.push({ storage, ...(accumulators === undefined ? {} : { accumulators }), batch, rows, cols, GBps, fractionOfCopy: GBps / copyGBps });
      }
  const elements = quick ? 1 << 18 : 1 << 24;
  const chain = () => {
    let x = input('x', [elements]);
    const y = input('y', [elements]);
    for (let i = 0; i < 5; i++) x = x.mul(y).add(1).silu();
    return { z: x };
  };
  const fused = await timeProgram(rt, chain, true, iters);
  const unfused = await timeProgram(rt, chain, false, iters);
  return {
    copyGBps,
    matvec,
    elementwiseChain: { elements, ops: 15, fusedMs: fused.seconds * 1e3, unfusedMs: unfused.seconds * 1e3, fusedKernels: fused.kernels, unfusedKernels: unfused.kernels, speedup: unfused.seconds / fused.seconds },
  };
}
