// The limits the compiler schedules against on an adapter (compileLimitsOf), from its profile, and the environment
// switches (Node) that override a kernel variant for a measurement. One place, so that the traced path and an AOT
// module compiled for the same adapter get the same kernels.
import { StrataUserError } from '../base/errors.ts';
import type { DeviceLimits } from '../compiler/compile.ts';
import { ROWS_ACCUMULATORS } from '../compiler/lower/matvecKernel.ts';
import { DEFAULT_MATVEC_ROWS, MATVEC_ROWS_VARIANTS, type MatvecRowsVariant } from '../compiler/lower/matvecRows.ts';
import { DEFAULT_TILED_VARIANT, TILED_VARIANTS, type TiledVariant } from '../compiler/lower/tiledMatmul.ts';
import type { MatrixTile } from '../compiler/lower/tiledMatrix.ts';
import { TILE_KEYS, TILE_ROWS, type Tiles, tilesOf } from '../compiler/lower/attentionPrefillKernel.ts';
import { TILED_ROWS_MAX } from '../compiler/lower/tiledRows.ts';
import { type AttentionDecodeVariant, defaultAttentionDecode, parseAttentionDecode } from '../compiler/lower/attentionDecodeVariants.ts';
import { GPU_QUANT_MATVEC, QUANT_MATVECS, type QuantMatvec, type QuantShape } from '../compiler/quantized.ts';
import type { AdapterProfile } from './device.ts';
import type { DecodeSplits } from '../compiler/attentionSplit.ts';

/**
 * The quantized matvec's K loop: STRATA_QUANT_MATVEC (Node) where set, else 'word' on a software adapter (the
 * smallest kernels: lavapipe's compile time) and GPU_QUANT_MATVEC on a GPU.
 */
function quantMatvecOf(software: boolean): QuantMatvec {
  const env = typeof process === 'undefined' ? undefined : process.env?.STRATA_QUANT_MATVEC;
  if (env !== undefined && !(QUANT_MATVECS as readonly string[]).includes(env)) throw new StrataUserError(`STRATA_QUANT_MATVEC must be one of ${QUANT_MATVECS.join(', ')}, got '${env}'`);
  return (env as QuantMatvec | undefined) ?? (software ? 'word' : GPU_QUANT_MATVEC);
}

/**
 * The quantized matvec's shape: STRATA_QUANT_SHAPE=cols=N,threads=N,short=N (Node; any may be left out) where set,
 * else the planner's (short: its column cap over short K; short=16 is the rule before that cap).
 */
function quantShapeOf(): QuantShape {
  const env = typeof process === 'undefined' ? undefined : process.env?.STRATA_QUANT_SHAPE;
  const shape: QuantShape = { cols: 0, threads: 0 };
  for (const part of env ? env.split(',') : []) {
    const m = /^(cols|threads|short)=(\d+)$/.exec(part);
    const v = m ? Number(m[2]) : 0;
    if (!m || v < 1 || (v & (v - 1)) !== 0 || v > 256) throw new StrataUserError(`STRATA_QUANT_SHAPE must be cols=N,threads=N (and short=N) with powers of two up to 256, got '${env}'`);
    shape[m[1] as 'cols' | 'threads' | 'short'] = v;
  }
  return shape;
}

/**
 * The limits the compiler schedules against on an adapter: what the traced path compiles for on it, and what an AOT
 * variant for it is compiled against (so both give the same kernels). STRATA_NO_SUBGROUPS=1 (Node) turns subgroups off.
 */
export function compileLimitsOf(profile: Pick<AdapterProfile, 'limits' | 'features' | 'wgslFeatures' | 'isFallback' | 'subgroupMatrix'>): Required<DeviceLimits> {
  const l = profile.limits;
  const subgroupMatrix = flagOf('STRATA_SUBGROUP_MATRIX', true) && profile.subgroupMatrix !== undefined ? profile.subgroupMatrix : false;
  return {
    maxStorageBuffersPerShaderStage: l.maxStorageBuffersPerShaderStage ?? 8,
    maxComputeWorkgroupsPerDimension: l.maxComputeWorkgroupsPerDimension ?? 65535,
    maxStorageBufferBindingSize: l.maxStorageBufferBindingSize ?? 128 << 20,
    maxComputeWorkgroupStorageSize: l.maxComputeWorkgroupStorageSize ?? 16384,
    subgroups: profile.features.includes('subgroups') && (typeof process === 'undefined' || process.env?.STRATA_NO_SUBGROUPS !== '1'),
    // a software adapter (lavapipe, SwiftShader) compiles unrolled kernels slowly and runs them no faster
    unroll: profile.isFallback !== true,
    opaqueLoops: opaqueLoopsOf(profile.isFallback === true),
    matvecAccumulators: matvecAccumulatorsOf(profile.isFallback === true),
    matvecRows: matvecRowsOf(),
    matvecPreload: flagOf('STRATA_MATVEC_PRELOAD'),
    // GPUs (measured on the H200, bench/results/2026-12-04-h200-mlp-fusion/): the GPU's batch-1 step ~7% longer, a
    // fifth fewer dispatches for the host; software adapters keep the separate matvecs (not measured there)
    mlpFusion: flagOf('STRATA_MLP_FUSION', profile.isFallback !== true),
    mlpThreads: l.maxComputeInvocationsPerWorkgroup ?? 256,
    vectorLoads: flagOf('STRATA_VECTOR_LOADS', true),
    quantMatvec: quantMatvecOf(profile.isFallback === true),
    quantShape: quantShapeOf(),
    tiledMatmul: tiledMatmulOf(),
    attentionDecode: attentionDecodeOf(profile.isFallback === true),
    packedDot: profile.wgslFeatures?.includes('packed_4x8_integer_dot_product') ?? false,
    shaderF16: profile.features.includes('shader-f16'),
    subgroupMatrix,
    matrixTile: matrixTileOf(),
    attentionTiles: attentionTilesOf(),
    tiledRows: tiledRowsOf(subgroupMatrix !== false),
    // on where tiledRows is: the GPU check of tiles-parity.sh passed on the H200 (q8, q4: max |d logit| 1.3e-2, 1.2e-2)
    tiledRowsQuantized: flagOf('STRATA_TILED_ROWS_QUANT', true),
    oneGroupFusion: flagOf('STRATA_ONE_GROUP_FUSION', true),
    // measured on the H200 (2026-12-04-h200-projection-default/plain-left/): 128-token prefill +13% (llama-400m,
    // granite4h-350m-like), +15% (jamba-small); on lavapipe tiny-granite-code's 133-token prefill as fast or faster
    tiledPlainLeft: switchOf('STRATA_TILED_PLAIN_LEFT', 'norms', true),
    // every decode bucket on GPUs (measured on the H200: compile.ts); software adapters keep the separate projections
    // (lavapipe: tiny-granite-code decode within its noise either way)
    attentionProjection: switchOf('STRATA_ATTN_PROJECTION', 'batched', profile.isFallback !== true),
    ssdProjection: switchOf('STRATA_SSD_PROJECTION', 'heads', false),
    ssdThreads: ssdThreadsOf(l.maxComputeInvocationsPerWorkgroup ?? 256),
    decodeSplits: decodeSplitsOf(typeof process === 'undefined' ? undefined : process.env?.STRATA_ATTN_SPLITS) ?? (profile.isFallback === true ? false : GPU_DECODE_SPLITS),
  };
}

/** Flash-decoding on GPUs: 8 slices from 512 positions for 1 or 2 sequences (measured: compiler/attentionSplit.ts DecodeSplits). */
export const GPU_DECODE_SPLITS: DecodeSplits = { slices: 8, from: 512, sequences: 2 };

/**
 * STRATA_ATTN_SPLITS (Node): unset, the adapter's choice (undefined); 0, one slice; N from 2 to 64, N slices at
 * every length the slices fit and every batch (a measurement switch).
 */
export function decodeSplitsOf(value: string | undefined): DecodeSplits | false | undefined {
  if (value === undefined) return undefined;
  if (value === '0') return false;
  const n = Number(value);
  if (!Number.isInteger(n) || n < 2 || n > 64) throw new StrataUserError(`STRATA_ATTN_SPLITS must be 0 (off) or a number of key slices from 2 to 64, got '${value}'`);
  return { slices: n, from: 0, sequences: Number.MAX_SAFE_INTEGER };
}

/** Threads of an SSD step workgroup that projects its inputs: STRATA_SSD_THREADS=256|512|1024 (Node, at most the adapter's) where set, else 1024 where the adapter allows it. */
function ssdThreadsOf(max: number): number {
  const env = typeof process === 'undefined' ? undefined : process.env?.STRATA_SSD_THREADS;
  if (env === undefined) return max >= 1024 ? 1024 : 256;
  const n = Number(env);
  if (![256, 512, 1024].includes(n) || n > max) throw new StrataUserError(`STRATA_SSD_THREADS must be 256, 512 or 1024 and at most the adapter's ${max} invocations a workgroup, got '${env}'`);
  return n;
}

/** The subgroup matrix kernel's tiling: STRATA_MATRIX_TILE=tm,tn,slices,tk (Node, a measurement knob) where set, else by shape. */
function matrixTileOf(): MatrixTile | false {
  const env = typeof process === 'undefined' ? undefined : process.env?.STRATA_MATRIX_TILE;
  if (env === undefined) return false;
  const [tm, tn, slices, tk] = env.split(',').map(Number);
  const of = (v: number | undefined, options: number[]) => v !== undefined && options.includes(v);
  if (!of(tm, [16, 32, 64]) || !of(tn, [16, 32, 64]) || !of(slices, [1, 2, 4, 8]) || !of(tk, [16, 32, 64])) throw new StrataUserError(`STRATA_MATRIX_TILE must be tm,tn,slices,tk with tm and tn 16|32|64, slices 1|2|4|8, tk 16|32|64, got '${env}'`);
  return { tm, tn, slices, tk } as MatrixTile;
}

/** The prefill attention's tile: STRATA_ATTN_TILES=rows,keys (Node, a measurement knob) where set, else the largest that fits. */
function attentionTilesOf(): Tiles | false {
  const env = typeof process === 'undefined' ? undefined : process.env?.STRATA_ATTN_TILES;
  if (env === undefined) return false;
  const [rows, keys] = env.split(',').map(Number);
  if (!(TILE_ROWS as readonly number[]).includes(rows!) || !(TILE_KEYS as readonly number[]).includes(keys!) || env.split(',').length !== 2)
    throw new StrataUserError(`STRATA_ATTN_TILES must be rows,keys with rows ${TILE_ROWS.join('|')} and keys ${TILE_KEYS.join('|')}, got '${env}'`);
  return tilesOf(rows!, keys!);
}

/** Rows from which batched decode takes the tiled kernel (DeviceLimits.tiledRows): STRATA_TILED_ROWS=N (Node, 0 off) where set, else 2 with subgroup matrices. */
function tiledRowsOf(matrices: boolean): number | false {
  const env = typeof process === 'undefined' ? undefined : process.env?.STRATA_TILED_ROWS;
  if (env === undefined) return matrices ? 2 : false;
  const n = Number(env);
  if (!Number.isInteger(n) || n < 0 || n === 1 || n > TILED_ROWS_MAX) throw new StrataUserError(`STRATA_TILED_ROWS must be 0 (off) or a row count from 2 to ${TILED_ROWS_MAX}, got '${env}'`);
  return n === 0 ? false : n;
}

/** Opaque sequential loop bounds (DeviceLimits.opaqueLoops): STRATA_OPAQUE_LOOPS=0/1 (Node) where set, else on a software adapter. */
function opaqueLoopsOf(software: boolean): boolean {
  const env = typeof process === 'undefined' ? undefined : process.env?.STRATA_OPAQUE_LOOPS;
  if (env !== undefined && env !== '0' && env !== '1') throw new StrataUserError(`STRATA_OPAQUE_LOOPS must be 0 or 1, got '${env}'`);
  return env === undefined ? software : env === '1';
}

/** The tiled matmul's variant: STRATA_TILED (Node) where set, else DEFAULT_TILED_VARIANT. */
function tiledMatmulOf(): TiledVariant {
  const env = typeof process === 'undefined' ? undefined : process.env?.STRATA_TILED;
  if (env !== undefined && !(env in TILED_VARIANTS)) throw new StrataUserError(`STRATA_TILED must be one of ${Object.keys(TILED_VARIANTS).join(', ')}, got '${env}'`);
  return (env as TiledVariant | undefined) ?? DEFAULT_TILED_VARIANT;
}

/** The decode attention kernel's variant: STRATA_ATTN_DECODE (Node, `name[:key=value,...]`) where set, else the default (GPU or software adapter). */
function attentionDecodeOf(software: boolean): AttentionDecodeVariant {
  const env = typeof process === 'undefined' ? undefined : process.env?.STRATA_ATTN_DECODE;
  return env === undefined ? defaultAttentionDecode(software) : parseAttentionDecode(env);
}

/** A switch read from the environment (Node): '1' on, '0' off, unset `fallback`. */
function flagOf(name: string, fallback = false): boolean {
  const env = typeof process === 'undefined' ? undefined : process.env?.[name];
  if (env !== undefined && env !== '0' && env !== '1') throw new StrataUserError(`${name} must be 0 or 1, got '${env}'`);
  return env === undefined ? fallback : env === '1';
}

/**
 * A switch with one named mode, read from the environment (Node): '0' off, '1' on, `mode` itself, unset `fallback`
 * (STRATA_ATTN_PROJECTION=batched: buckets of several sequences; STRATA_SSD_PROJECTION=heads: a head's state rows
 * in one workgroup).
 */
function switchOf<M extends string>(name: string, mode: M, fallback: boolean | M): boolean | M {
  const env = typeof process === 'undefined' ? undefined : process.env?.[name];
  if (env === mode) return mode;
  if (env !== undefined && env !== '0' && env !== '1') throw new StrataUserError(`${name} must be 0, 1 or ${mode}, got '${env}'`);
  return env === undefined ? fallback : env === '1';
}

/** The matvec rows path's variant: STRATA_MATVEC_ROWS (Node) where set, else DEFAULT_MATVEC_ROWS. */
function matvecRowsOf(): MatvecRowsVariant {
  const env = typeof process === 'undefined' ? undefined : process.env?.STRATA_MATVEC_ROWS;
  if (env !== undefined && !Object.hasOwn(MATVEC_ROWS_VARIANTS, env)) throw new StrataUserError(`STRATA_MATVEC_ROWS must be one of ${Object.keys(MATVEC_ROWS_VARIANTS).join(', ')}, got '${env}'`);
  return (env as MatvecRowsVariant | undefined) ?? DEFAULT_MATVEC_ROWS;
}

/**
 * Accumulators per thread of the matvec's rows path: STRATA_MATVEC_ACCUMULATORS (Node; 0 turns the path off) where set, else 16 on a
 * software adapter (lavapipe compiles each accumulator's reduction slowly) and ROWS_ACCUMULATORS on a GPU.
 */
function matvecAccumulatorsOf(software: boolean): number {
  const env = typeof process === 'undefined' ? undefined : process.env?.STRATA_MATVEC_ACCUMULATORS;
  if (env !== undefined && !/^(0|4|8|16|32|64|128)$/.test(env)) throw new StrataUserError(`STRATA_MATVEC_ACCUMULATORS must be 0 (no rows path) or a power of two from 4 to 128, got '${env}'`);
  return env !== undefined ? Number(env) : software ? 16 : ROWS_ACCUMULATORS;
}

/** Human-readable summary: adapter, backend, features and the limits the compiler schedules against. */
