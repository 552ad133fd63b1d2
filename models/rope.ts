// The RoPE variants of transformers' modeling_rope_utils (ROPE_INIT_FUNCTIONS, transformers 5): inverse
// frequencies and the attention scaling that multiplies cos and sin, computed once from the config and rounded
// to f32 step by step as torch computes them. Frequencies that transformers recomputes as a sequence grows
// (dynamic past max_position_embeddings, longrope past original_max_position_embeddings) stay fixed here, so
// a session whose capacity reaches that far is refused (ropePositionLimit).
import { ropeInvFreq } from '../dsl/nn/basic.ts';
import { ConfigError, type RopeConfig } from './configs/common.ts';

export const ROPE_TYPES = ['default', 'linear', 'dynamic', 'yarn', 'llama3', 'longrope'] as const;
export type RopeType = (typeof ROPE_TYPES)[number];

export interface RopeTables {
  /** [rotaryDim / 2] */
  invFreq: Float32Array;
  /** Multiplies cos and sin (yarn, longrope); 1 for the others. */
  attentionScaling: number;
}

const f32 = Math.fround;
/** 1 / base^(2i/dim) in f32, as `1.0 / (base ** (torch.arange(0, dim, 2).float() / dim))`. */
const defaultInvFreq = (dim: number, base: number) => ropeInvFreq(dim, base);

/** Reads the scaling parameters of a rope config, naming `<group>.<key>` when one is missing or malformed. */
function parameterReader(rope: RopeConfig, group: string) {
  const number = (key: string, fallback?: number): number => {
    const value = rope.scaling[key];
    if (value === undefined || value === null) {
      if (fallback !== undefined) return fallback;
      throw new ConfigError(`config.json: ${group}.${key}: rope type "${rope.type}" needs a number here`);
    }
    if (typeof value !== 'number' || !Number.isFinite(value)) throw new ConfigError(`config.json: ${group}.${key}: expected a finite number`);
    return value;
  };
  const optional = (key: string): number | undefined => (rope.scaling[key] === undefined || rope.scaling[key] === null ? undefined : number(key));
  const list = (key: string, length: number): number[] => {
    const value = rope.scaling[key];
    if (!Array.isArray(value) || value.length !== length || !value.every((v) => typeof v === 'number' && Number.isFinite(v) && v > 0))
      throw new ConfigError(`config.json: ${group}.${key}: rope type "${rope.type}" needs ${length} positive numbers (rotary dim / 2)`);
    return value as number[];
  };
  const flag = (key: string, fallback: boolean): boolean => {
    const value = rope.scaling[key];
    if (value === undefined || value === null) return fallback;
    if (typeof value !== 'boolean') throw new ConfigError(`config.json: ${group}.${key}: expected true or false`);
    return value;
  };
  return { number, optional, list, flag };
}

/**
 * The tables of a rope config. `maxPositionEmbeddings` is the config's max_position_embeddings; `group` names
 * where the scaling parameters were written (rope_parameters or rope_scaling) for errors.
 */
export function ropeTables(rope: RopeConfig, maxPositionEmbeddings: number, group = 'rope_parameters'): RopeTables {
  const dim = rope.rotaryDim;
  const base = rope.theta;
  const read = parameterReader(rope, group);
  const type = rope.type as RopeType;
  switch (type) {
    case 'default':
      return { invFreq: defaultInvFreq(dim, base), attentionScaling: 1 };
    case 'linear': {
      const factor = read.number('factor');
      return { invFreq: defaultInvFreq(dim, base).map((v) => f32(v / factor)), attentionScaling: 1 };
    }
    case 'dynamic':
      // at seq_len <= max_position_embeddings the NTK base is unchanged: base * (factor - (factor - 1))^(...)
      read.number('factor');
      return { invFreq: defaultInvFreq(dim, base), attentionScaling: 1 };
    case 'yarn':
      return yarn(dim, base, maxPositionEmbeddings, read);
    case 'llama3':
      return llama3(dim, base, read);
    case 'longrope':
      return longrope(dim, base, maxPositionEmbeddings, read);
    default:
      throw new ConfigError(`config.json: ${group}.rope_type: rope type ${JSON.stringify(String(rope.type).slice(0, 80))} is not supported (supported: ${ROPE_TYPES.join(', ')})`);
  }
}

type Reader = ReturnType<typeof parameterReader>;

function originalMax(read: Reader, maxPositionEmbeddings: number): number {
  return read.number('original_max_position_embeddings', maxPositionEmbeddings);
}

/** _compute_yarn_parameters: NTK-by-parts interpolation with a linear ramp between beta_fast and beta_slow. */
function yarn(dim: number, base: number, maxPositionEmbeddings: number, read: Reader): RopeTables {
  const original = originalMax(read, maxPositionEmbeddings);
  const factor = read.optional('factor') ?? maxPositionEmbeddings / original;
  const mscale = read.optional('mscale');
  const mscaleAllDim = read.optional('mscale_all_dim');
  const getMscale = (scale: number, m = 1) => (scale <= 1 ? 1 : 0.1 * m * Math.log(scale) + 1);
  const attentionScaling = read.optional('attention_factor') ?? (mscale && mscaleAllDim ? getMscale(factor, mscale) / getMscale(factor, mscaleAllDim) : getMscale(factor));
  const betaFast = read.optional('beta_fast') || 32;
  const betaSlow = read.optional('beta_slow') || 1;
  const truncate = read.flag('truncate', true);
  const correctionDim = (rotations: number) => (dim * Math.log(original / (rotations * 2 * Math.PI))) / (2 * Math.log(base));
  let low = correctionDim(betaFast);
  let high = correctionDim(betaSlow);
  if (truncate) [low, high] = [Math.floor(low), Math.ceil(high)];
  [low, high] = [Math.max(low, 0), Math.min(high, dim - 1)];
  if (low === high) high += 0.001;
  const invFreq = new Float32Array(dim / 2);
  for (let i = 0; i < dim / 2; i++) {
    const posFreq = f32(Math.pow(base, f32((2 * i) / dim)));
    const extrapolation = f32(1 / posFreq);
    const interpolation = f32(1 / f32(factor * posFreq));
    const ramp = f32(Math.min(1, Math.max(0, f32(f32(i - low) / f32(high - low)))));
    const extrapolationFactor = f32(1 - ramp);
    invFreq[i] = f32(f32(interpolation * f32(1 - extrapolationFactor)) + f32(extrapolation * extrapolationFactor));
  }
  return { invFreq, attentionScaling };
}

/** _compute_llama3_parameters: low frequencies divided by factor, high ones kept, a smooth blend between. */
function llama3(dim: number, base: number, read: Reader): RopeTables {
  const factor = read.number('factor');
  const lowFreqFactor = read.number('low_freq_factor');
  const highFreqFactor = read.number('high_freq_factor');
  const oldContext = read.number('original_max_position_embeddings');
  const lowFreqWavelen = oldContext / lowFreqFactor;
  const highFreqWavelen = oldContext / highFreqFactor;
  const invFreq = defaultInvFreq(dim, base).map((v) => {
    const wavelen = f32((2 * Math.PI) / v);
    const scaled = wavelen > lowFreqWavelen ? f32(v / factor) : v;
    if (wavelen < highFreqWavelen || wavelen > lowFreqWavelen) return scaled;
    const smooth = f32(f32(f32(oldContext / wavelen) - lowFreqFactor) / (highFreqFactor - lowFreqFactor));
    return f32(f32(f32(f32(1 - smooth) * scaled) / factor) + f32(smooth * scaled));
  });
  return { invFreq, attentionScaling: 1 };
}

/** _compute_longrope_parameters at sequence lengths up to original_max_position_embeddings (short_factor). */
function longrope(dim: number, base: number, maxPositionEmbeddings: number, read: Reader): RopeTables {
  const original = originalMax(read, maxPositionEmbeddings);
  read.list('long_factor', dim / 2);
  const short = read.list('short_factor', dim / 2);
  const factor = read.optional('factor') ?? maxPositionEmbeddings / original;
  const attentionScaling = read.optional('attention_factor') ?? (factor <= 1 ? 1 : Math.sqrt(1 + Math.log(factor) / Math.log(original)));
  const invFreq = new Float32Array(dim / 2);
  for (let i = 0; i < dim / 2; i++) invFreq[i] = f32(1 / f32(f32(short[i]!) * f32(Math.pow(base, f32((2 * i) / dim)))));
  return { invFreq, attentionScaling };
}

/**
 * The last position the fixed tables are right for, or undefined when they hold everywhere: transformers
 * recomputes dynamic frequencies past max_position_embeddings and switches longrope to long_factor past
 * original_max_position_embeddings.
 */
export function ropePositionLimit(rope: RopeConfig | null | undefined, maxPositionEmbeddings: number): { positions: number; field: string } | undefined {
  if (!rope) return undefined;
  if (rope.type === 'dynamic') return { positions: maxPositionEmbeddings, field: 'max_position_embeddings' };
  if (rope.type === 'longrope') {
    const original = rope.scaling.original_max_position_embeddings;
    return { positions: typeof original === 'number' ? original : maxPositionEmbeddings, field: 'original_max_position_embeddings' };
  }
  return undefined;
}
