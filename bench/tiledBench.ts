// The tiled matmul's variants (compiler/lower/tiledMatmul.ts, DeviceLimits.tiledMatmul) at the prefill shapes of the bench
// models: TFLOPS of each, and how far each variant's output is from the first one's on the same random data.
import { compile } from '../compiler/compile.ts';
import { TILED_VARIANTS, type TiledVariant } from '../compiler/lower/tiledMatmul.ts';
import type { MatrixTile } from '../compiler/lower/tiledMatrix.ts';
import type { DeviceLimits } from '../compiler/compile.ts';
import { linear } from '../dsl/nn/basic.ts';
import { input, trace, weight } from '../dsl/trace.ts';
import type { Tensor } from '../dsl/tensor.ts';
import type { Executable, GpuRuntime } from '../runtime/gpuRuntime.ts';
import { timeGpu } from './timing.ts';

/** `x [M, K] @ W.T` for f16 W [N, K], alone, under a residual add, or as SwiGLU's gate and up (two [N, K] weights). */
interface TiledShape {
  name: string;
  M: number;
  K: number;
  N: number;
  kind: 'linear' | 'residual' | 'swiglu';
}

/** 128-token prefill at batch 1 of granite4h-350m-like (profiled at 2b8020f) and llama-400m. */
const TILED_SHAPES: TiledShape[] = [
  { name: 'granite gate/up', M: 128, K: 768, N: 4096, kind: 'linear' },
  { name: 'granite down', M: 128, K: 2048, N: 768, kind: 'residual' },
  { name: 'granite in_proj', M: 128, K: 768, N: 3352, kind: 'linear' },
  { name: 'granite out_proj', M: 128, K: 1536, N: 768, kind: 'residual' },
  { name: 'llama 1024->3072', M: 128, K: 1024, N: 3072, kind: 'linear' },
  { name: 'llama gate/up', M: 128, K: 1024, N: 2816, kind: 'swiglu' },
  { name: 'llama down', M: 128, K: 2816, N: 1024, kind: 'residual' },
];
const QUICK_SHAPES: TiledShape[] = [{ name: 'quick', M: 32, K: 128, N: 96, kind: 'residual' }];

export interface TiledRow {
  shape: string;
  M: number;
  K: number;
  /** Output columns of all matmuls together (SwiGLU: 2 N). */
  N: number;
  /**
   * A tiled variant, or 'matrix' (the subgroup matrix kernel, DeviceLimits.subgroupMatrix, where the adapter has it:
   * its tiling by shape) and 'matrix tm/tn/slices/tk' (a fixed tiling, DeviceLimits.matrixTile).
   */
  variant: string;
  workgroups: number;
  us: number;
  tflops: number;
  /** max |y - y_first| / max |y_first| against the first variant's output. */
  relDiff: number;
}

function program(s: TiledShape): () => Record<string, Tensor> {
  return () => {
    const x = input('x', [s.M, s.K]);
    const w = (name: string) => weight(name, [s.N, s.K], 'f16');
    if (s.kind === 'swiglu') return { y: linear(x, w('g')).silu().mul(linear(x, w('u'))) };
    const y = linear(x, w('w'));
    return { y: s.kind === 'residual' ? input('h', [s.M, s.N]).add(y) : y };
  };
}

/** Random values in [-1, 1) as f32, or as f16 bits two to a word (magnitudes 2^-4 to 1). */
function randomFill(bytes: number, f16: boolean, seed: number): Uint32Array | Float32Array {
  let state = seed >>> 0 || 1;
  const next = () => ((state = (Math.imul(state, 1664525) + 1013904223) >>> 0), state);
  if (!f16) return Float32Array.from({ length: bytes / 4 }, () => next() / 2 ** 31 - 1);
  const half = () => { const r = next(); return ((r >>> 31) << 15) | ((11 + ((r >>> 10) & 3)) << 10) | (r & 0x3ff); };
  return Uint32Array.from({ length: bytes / 4 }, () => half() | (half() << 16));
}

function fillInputs(rt: GpuRuntime, exe: Executable): void {
  const p = exe.program;
  for (const [name, id] of Object.entries(p.inputs)) exe.writeInput(name, randomFill(p.buffers[id]!.bytes, false, name.charCodeAt(0)));
  for (const [name, id] of Object.entries(p.weights)) rt.write(exe.buffer('weight', name)!, randomFill(p.buffers[id]!.bytes, true, 7 + name.charCodeAt(0)));
}

/**
 * Every variant at every shape: compiled, filled with the same random data, run once and read back, then timed in
 * rounds that alternate the variants (clock changes hit all alike); a row keeps its best round.
 */
export async function tiledBench(rt: GpuRuntime, quick: boolean): Promise<TiledRow[]> {
  // fixed tilings (a tiling that does not fit shortens its K step): beside the defaults' two, the longer steps with
  // fewer slices that two right operands (SwiGLU's gate and up) fit in 32 KiB
  const tiles: MatrixTile[] = [{ tm: 64, tn: 64, slices: 1, tk: 64 }, { tm: 32, tn: 64, slices: 2, tk: 32 }, { tm: 32, tn: 64, slices: 1, tk: 64 }, { tm: 32, tn: 32, slices: 4, tk: 32 }, { tm: 32, tn: 32, slices: 2, tk: 64 }, { tm: 16, tn: 32, slices: 8, tk: 32 }];
  const limitsOf = new Map<string, Partial<DeviceLimits>>([
    ...(Object.keys(TILED_VARIANTS) as TiledVariant[]).map((v) => [v, { tiledMatmul: v, subgroupMatrix: false }] as const),
    ...(rt.limits.subgroupMatrix ? [['matrix', { matrixTile: false }] as const, ...tiles.map((t) => [`matrix ${t.tm}/${t.tn}/${t.slices}/${t.tk}`, { matrixTile: t }] as const)] : []),
  ]);
  const variants = [...limitsOf.keys()];
  const [iters, rounds] = quick ? [2, 1] : [100, 3];
  const rows: TiledRow[] = [];
  for (const s of quick ? QUICK_SHAPES : TILED_SHAPES) {
    const exes: Executable[] = [];
    for (const v of variants) {
      const p = compile(trace(program(s)), { limits: { ...rt.limits, ...limitsOf.get(v) } });
      const exe = await rt.load(p, { namespace: `tiled-bench-${s.name}-${v}/` });
      fillInputs(rt, exe);
      exes.push(exe);
    }
    const outputs: Float32Array[] = [];
    for (const exe of exes) {
      exe.run();
      outputs.push((await exe.readOutput('y')).data as Float32Array);
    }
    // about half a second of work lifts the GPU off idle clocks before the first shape's timing
    if (rows.length === 0 && !quick) await timeGpu(rt, (pass) => exes[0]!.encode(pass), 8000);
    const best = variants.map(() => Infinity);
    for (let r = 0; r < rounds; r++)
      for (const [i, exe] of exes.entries()) best[i] = Math.min(best[i]!, await timeGpu(rt, (pass) => exe.encode(pass), iters));
    const ref = outputs[0]!;
    const scale = ref.reduce((m, x) => Math.max(m, Math.abs(x)), 0) || 1;
    const N = s.kind === 'swiglu' ? 2 * s.N : s.N;
    variants.forEach((v, i) => {
      const diff = outputs[i]!.reduce((m, x, j) => Math.max(m, Math.abs(x - ref[j]!)), 0);
      const workgroups = exes[i]!.program.kernels.reduce((n, k) => n + k.workgroups[0] * k.workgroups[1] * k.workgroups[2], 0);
      rows.push({ shape: s.name, M: s.M, K: s.K, N, variant: v, workgroups, us: best[i]! * 1e6, tflops: (2 * s.M * s.K * N) / best[i]! / 1e12, relDiff: diff / scale });
    });
    rt.releaseNamed('tiled-bench-');
  }
  return rows;
}

/** One line per shape: each variant's TFLOPS, microseconds and workgroups, and its output's distance from the first's. */
export function formatTiled(rows: TiledRow[]): string {
  const shapes = [...new Set(rows.map((r) => r.shape))];
  return shapes
    .map((name) => {
      const of = rows.filter((r) => r.shape === name);
      const head = `${name} [${of[0]!.M}x${of[0]!.K}]x[${of[0]!.K}x${of[0]!.N}]`;
      return `${head.padEnd(44)} ${of.map((r) => `${r.variant} ${r.tflops.toFixed(2)} TFLOPS ${r.us.toFixed(1)} us ${r.workgroups} wg${r.relDiff > 1e-3 ? ` DIFF ${r.relDiff.toExponential(1)}` : ''}`).join(' | ')}`;
    })
    .join('\n');
}
