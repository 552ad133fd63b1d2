// Kernel-level figures on the adapter at hand: the copy roofline, matvec bandwidth as a fraction of it, and an
// elementwise chain fused vs unfused.
import { GPU_QUANT_MATVEC, QUANT_FORMATS, QUANT_MATVECS, type QuantMatvec, isQuantized, quantMatvecRuns } from '../compiler/quantized.ts';
import { type DeviceLimits, compile } from '../compiler/compile.ts';
import { input, trace, weight } from '../dsl/trace.ts';
import type { Tensor } from '../dsl/tensor.ts';
import type { GpuRuntime } from '../runtime/gpuRuntime.ts';
import { MATVEC_ROWS_VARIANTS, type MatvecRowsVariant } from '../compiler/lower/matvecRows.ts';
import { type TiledRow, tiledBench } from './tiledBench.ts';
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

/**
 * Seconds per run of a matvec compiled with these limits: the better of two timings (the first also brings the
 * GPU's clocks back up after the compile before it); its buffers are released after.
 */
export async function timeMatvec(rt: GpuRuntime, fn: () => Record<string, Tensor>, iters: number, limits: Partial<DeviceLimits>): Promise<number> {
  const program = compile(trace(fn), { limits: { ...rt.limits, ...limits } });
  const namespace = `bench-matvec-${Math.random()}/`;
  const exe = await rt.load(program, { namespace });
  const a = await timeGpu(rt, (pass) => exe.encode(pass), iters);
  const b = await timeGpu(rt, (pass) => exe.encode(pass), iters);
  rt.releaseNamed(namespace);
  return Math.min(a, b);
}

export interface OpsReport {
  copyGBps: number;
  /**
   * `x [batch, cols] @ W.T` for W [rows, cols]: bytes actually read (packed values and block constants, x) and
   * written; q8/q4 once per K loop of the quantized matvec (`variant`, DeviceLimits.quantMatvec); `accumulators`:
   * the rows path's budget (DeviceLimits.matvecAccumulators; 0: the generic loop) where varied; `matvecRows`: the
   * rows path's variant (DeviceLimits.matvecRows) where not the default.
   */
  matvec: { storage: string; variant?: QuantMatvec; accumulators?: number; matvecRows?: MatvecRowsVariant; batch: number; rows: number; cols: number; GBps: number; fractionOfCopy: number }[];
  elementwiseChain: { elements: number; ops: number; fusedMs: number; unfusedMs: number; fusedKernels: number; unfusedKernels: number; speedup: number };
  /** The tiled matmul's variants at prefill shapes (bench/tiledBench.ts). */
  tiled: TiledRow[];
}

/**
 * Matvec shapes [batch, rows, cols]: one large weight (the headline figure), then llama-400m's projections (q, k
 * and v together; gate and up together; down; LM head), at batch 1 and 8, the shapes its decode reads.
 */
/** The rows path's accumulator budgets measured for f16 at batch 8 (0: the generic loop, as before it). */
const ROWS_BUDGETS = [0, 16, 32, 64];

const MATVEC_SHAPES: [number, number, number][] = [1, 8].flatMap((b): [number, number, number][] => [
  [b, 8192, 4096],
  [b, 3072, 1024],
  [b, 5632, 1024],
  [b, 1024, 2816],
  [b, 32000, 1024],
]);

/** The rows path's staged variants (matvecRows.ts), measured at batch 8 at these budgets (R = budget / 8 columns a thread). */
const STAGED_ROWS = (Object.keys(MATVEC_ROWS_VARIANTS) as MatvecRowsVariant[]).filter((v) => MATVEC_ROWS_VARIANTS[v].staged);
const STAGED_BUDGETS = [32, 64];

type MatvecSetting = { variant?: QuantMatvec; accumulators?: number; matvecRows?: MatvecRowsVariant };

/**
 * The compile settings measured for a storage and batch: each quantized K loop; f16 batches at each rows budget; f32
 * and f16 batches with each staged rows variant. `rows`: only the batched 16/32-bit matvecs, the default and these
 * rows variants.
 */
function matvecSettings(storage: string, batch: number, variants: readonly QuantMatvec[] = QUANT_MATVECS, rows?: readonly MatvecRowsVariant[]): MatvecSetting[] {
  if (isQuantized(storage)) return variants.map((variant) => ({ variant }));
  if (batch === 1) return [{}];
  const staged = (rows ?? STAGED_ROWS).flatMap((r) => (MATVEC_ROWS_VARIANTS[r].staged ? STAGED_BUDGETS.map((accumulators) => ({ accumulators, matvecRows: r })) : []));
  if (rows) return [{}, ...staged];
  return [...(storage === 'f16' ? ROWS_BUDGETS.map((accumulators) => ({ accumulators })) : [{}]), ...staged];
}

/** One matvec figure as the bench prints it. */
export function formatMatvec(m: OpsReport['matvec'][number]): string {
  return `${`${m.storage}${m.variant ? ` ${m.variant}` : ''}${m.accumulators === undefined ? '' : `/acc${m.accumulators}`}${m.matvecRows ? `/${m.matvecRows}` : ''}`.padEnd(10)} [${m.batch}x${m.cols}]x[${m.cols}x${m.rows}] ${m.GBps.toFixed(1).padStart(7)} GB/s ${(m.fractionOfCopy * 100).toFixed(0).padStart(4)}%`;
}

/**
 * The ops figures; `log` gets each matvec line as it is measured (a run cut short still shows what it timed).
 * `variants`: only the q8 and q4 matvecs, with these K loops (`bench ops --variants dot4,word`); `rows`: only the f32 and
 * f16 matvecs at batch 8, the default rows path and these variants (`bench ops --rows staged,staged-wide`).
 */
export async function opsBench(rt: GpuRuntime, quick: boolean, log: (line: string) => void = () => {}, variants?: readonly QuantMatvec[], rows?: readonly MatvecRowsVariant[]): Promise<OpsReport> {
  const iters = quick ? 5 : 50;
  const rowsOnly = rows;
  const copyBytes = copyRooflineBytes(rt, quick);
  const copyGBps = (await copyRoofline(rt, copyBytes, iters)) / 1e9;
  log(`copy roofline ${copyGBps.toFixed(1)} GB/s; matvec, % of it in bytes read:`);
  // a variant the adapter cannot run compiles the GPU default (compiler/passes/planKernels.ts): say so
  for (const v of variants ?? QUANT_MATVECS) if (!quantMatvecRuns(v, rt.limits)) log(`  (${v}: not on this adapter, measured as ${GPU_QUANT_MATVEC})`);
  const matvec: OpsReport['matvec'] = [];
  // every matvec dispatched 4x as often as the copy: a small one runs for microseconds, and the submission's own
  // cost would otherwise count
  const shapes = quick ? [[rowsOnly ? 8 : 1, 1024, 1024]] : MATVEC_SHAPES.filter(([batch]) => !rowsOnly || batch > 1);
  const storages = variants ? (['q8', 'q4'] as const) : rowsOnly ? (['f32', 'f16'] as const) : (['f32', 'f16', 'q8', 'q4'] as const);
  for (const [batch, rows, cols] of shapes)
    for (const storage of storages)
      for (const setting of matvecSettings(storage, batch, variants, rowsOnly)) {
        const fn = () => ({ y: input('x', [batch, cols]).matmul(weight(`w_${storage}`, [rows, cols], storage).T) });
        const { variant, accumulators, matvecRows } = setting;
        const limits = {
          ...(variant ? { quantMatvec: variant } : {}),
          ...(accumulators === undefined ? {} : { matvecAccumulators: accumulators }),
          ...(matvecRows ? { matvecRows } : {}),
        };
        const seconds = await timeMatvec(rt, fn, 4 * iters, limits);
        // bytes actually read: packed values and their block constants (not the buffer's padding), x; and y written
        const weightBytes = isQuantized(storage) ? QUANT_FORMATS[storage].readBytes(rows * cols) : rows * cols * (storage === 'f32' ? 4 : 2);
        const bytes = weightBytes + 4 * batch * (cols + rows);
        const GBps = bytes / seconds / 1e9;
        matvec.push({ storage, ...setting, batch, rows, cols, GBps, fractionOfCopy: GBps / copyGBps });
        log(`  ${formatMatvec(matvec[matvec.length - 1]!)}`);
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
  const tiled = await tiledBench(rt, quick);
  return {
    copyGBps,
    matvec,
    elementwiseChain: { elements, ops: 15, fusedMs: fused.seconds * 1e3, unfusedMs: unfused.seconds * 1e3, fusedKernels: fused.kernels, unfusedKernels: unfused.kernels, speedup: unfused.seconds / fused.seconds },
    tiled,
  };
}
