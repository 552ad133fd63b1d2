// An ahead-of-time model module: every Program a session runs (prefill chunks, decode buckets), compiled once by
// `strata compile` and written as TypeScript (compiler/emitModule.ts). Session.load({ aot }) uses its programs
// instead of tracing and compiling, so a page starts generating after weights upload and pipeline creation.
// A module holds one variant per compile target (an adapter's limits and features); the loader runs the first one
// the device can run, so a module can carry a fast variant for known devices and a portable one for the rest.
import type { DeviceLimits } from './compile.ts';
import type { Program } from './program.ts';
import type { SubgroupMatrixConfig } from './lower/tiledMatrix.ts';

export const AOT_FORMAT = 'strata-aot/2';

/** The session shape the programs were compiled for: a session loading them takes these. */
export interface AotSessionShape {
  slots: number;
  capacity: number;
  prefillChunks: number[];
  decodeRows: number[];
  stepsPerSubmit: number;
}

/** Every program of the session shape, compiled for one target. */
export interface AotVariant {
  /** What it was compiled for, for messages: 'portable', or an adapter's name. */
  target: string;
  /** What the kernels were scheduled against: a device needs at least these. */
  limits: DeviceLimits;
  /** By program key (runtime/generator.ts: gen:prefill:T, gen:decode:rows:mode, gen:decode:rows:mode:split). */
  programs: Record<string, Program>;
}

export interface AotModel {
  format: typeof AOT_FORMAT;
  family: string;
  /** Fingerprint of config, checkpoint tensor names/shapes/dtypes and constants (caches/sessionFile.ts). */
  modelFingerprint: string;
  session: AotSessionShape;
  /**
   * Per-layer memory the programs address: the model's MemorySpec (caches/spec.ts; not imported here, so that the
   * compiler depends on no layer above it), for reading; checked at load.
   */
  memory: readonly unknown[];
  /** Most demanding first: the loader takes the first variant the device can run. */
  variants: AotVariant[];
}

/**
 * WebGPU's default limits, which every adapter offers, and no subgroups or unrolling: a variant compiled against
 * these runs on any WebGPU device (with more, smaller kernels than a device with more storage buffers needs).
 */
export const PORTABLE_LIMITS: DeviceLimits = {
  maxStorageBuffersPerShaderStage: 8,
  maxComputeWorkgroupsPerDimension: 65535,
  maxStorageBufferBindingSize: 128 << 20,
  maxComputeWorkgroupStorageSize: 16384,
  subgroups: false,
  unroll: false,
};

/** The limits a compiled kernel relies on, in the order they are checked. */
export const REQUIRED_LIMITS = ['maxStorageBuffersPerShaderStage', 'maxComputeWorkgroupsPerDimension', 'maxStorageBufferBindingSize', 'maxComputeWorkgroupStorageSize'] as const;

/** Why a device cannot run kernels compiled against `needed`, or null. */
export function limitsShortfall(
  needed: DeviceLimits,
  device: Readonly<Record<string, number>>,
  features: readonly string[],
  keys: readonly (typeof REQUIRED_LIMITS)[number][] = REQUIRED_LIMITS,
  subgroupMatrix?: SubgroupMatrixConfig,
): string | null {
  for (const key of keys) {
    const want = needed[key];
    if (want !== undefined && (device[key] ?? 0) < want) return `${key} is ${device[key] ?? 0} on this device, ${want} needed`;
  }
  if (needed.subgroups && !features.includes('subgroups')) return "subgroup operations are needed and this device lacks the 'subgroups' feature";
  if (needed.quantMatvec === 'half' && needed.shaderF16 && !features.includes('shader-f16')) return "f16 arithmetic is needed and this device lacks the 'shader-f16' feature";
  // the kernels are written for one matrix shape and subgroup size
  const m = needed.subgroupMatrix;
  if (m && !(subgroupMatrix && m.m === subgroupMatrix.m && m.n === subgroupMatrix.n && m.k === subgroupMatrix.k && m.size === subgroupMatrix.size))
    return `f16 subgroup matrices of ${m.m}x${m.n}x${m.k} on subgroups of ${m.size} are needed and this device has ${subgroupMatrix ? `${subgroupMatrix.m}x${subgroupMatrix.n}x${subgroupMatrix.k} on ${subgroupMatrix.size}` : 'none'}`;
  return null;
}

/** The first variant the device can run, or why none can (one reason per variant). */
export function pickVariant(model: AotModel, device: Readonly<Record<string, number>>, features: readonly string[], subgroupMatrix?: SubgroupMatrixConfig): AotVariant | { refused: string } {
  const reasons: string[] = [];
  for (const variant of model.variants) {
    const shortfall = limitsShortfall(variant.limits, device, features, REQUIRED_LIMITS, subgroupMatrix);
    if (!shortfall) return variant;
    reasons.push(`${variant.target}: ${shortfall}`);
  }
  return { refused: reasons.join('; ') };
}
