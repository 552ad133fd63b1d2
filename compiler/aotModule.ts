// An ahead-of-time model module: every Program a session runs (prefill chunks, decode buckets), compiled once by
// `strata compile` and written as TypeScript (compiler/emitModule.ts). Session.load({ aot }) uses its programs
// instead of tracing and compiling, so a page starts generating after weights upload and pipeline creation.
import type { DeviceLimits } from './compile.ts';
import type { Program } from './program.ts';

export const AOT_FORMAT = 'strata-aot/1';

/** The session shape the programs were compiled for: a session loading them takes these. */
export interface AotSessionShape {
  slots: number;
  capacity: number;
  prefillChunks: number[];
  decodeRows: number[];
  stepsPerSubmit: number;
}

export interface AotModel {
  format: typeof AOT_FORMAT;
  family: string;
  /** Fingerprint of config, checkpoint tensor names/shapes/dtypes and constants (caches/sessionFile.ts). */
  modelFingerprint: string;
  session: AotSessionShape;
  /** What the kernels were scheduled against: a device needs at least these. */
  limits: DeviceLimits;
  /**
   * Per-layer memory the programs address: the model's MemorySpec (caches/spec.ts; not imported here, so that the
   * compiler depends on no layer above it), for reading; checked at load.
   */
  memory: readonly unknown[];
  /** By program key (runtime/generator.ts: gen:prefill:T, gen:decode:rows:mode). */
  programs: Record<string, Program>;
}

/**
 * Limits an AOT module is compiled against by default: WebGPU's defaults, which every adapter offers, and no
 * subgroups or unrolling, so one module runs on any WebGPU device.
 */
export const PORTABLE_LIMITS: DeviceLimits = {
  maxStorageBuffersPerShaderStage: 8,
  maxComputeWorkgroupsPerDimension: 65535,
  maxStorageBufferBindingSize: 128 << 20,
  maxComputeWorkgroupStorageSize: 16384,
  subgroups: false,
  unroll: false,
};

/** Why a device cannot run a module compiled against `needed`, or null. */
export function limitsShortfall(needed: DeviceLimits, device: Readonly<Record<string, number>>, features: readonly string[]): string | null {
  for (const key of ['maxStorageBuffersPerShaderStage', 'maxComputeWorkgroupsPerDimension', 'maxStorageBufferBindingSize', 'maxComputeWorkgroupStorageSize'] as const) {
    const want = needed[key];
    if (want !== undefined && (device[key] ?? 0) < want) return `${key} is ${device[key] ?? 0} on this device, the module was compiled for ${want}`;
  }
  if (needed.subgroups && !features.includes('subgroups')) return "the module was compiled with subgroup operations and this device lacks the 'subgroups' feature";
  return null;
}
