// Pieces shared by the per-family config schemas: zod helpers for HF's conventions (null means "use the
// default", two layer_types spellings, rope_theta vs rope_parameters) and the normalized types model code reads.

import { z } from 'zod';
import { StrataUserError } from '../../base/errors.ts';

export class ConfigError extends StrataUserError {
  override name = 'ConfigError';
}

/**
 * What a layer's token mixer is. `attention_mamba2` is Falcon-H1's layer that runs attention and a Mamba-2 mixer
 * side by side on the same input. `mamba` is Mamba-1 (selective scan with x_proj/dt_proj).
 */
export type LayerKind =
  | 'attention'
  | 'sliding_attention'
  | 'mamba'
  | 'mamba2'
  | 'attention_mamba2'
  | 'short_conv'
  | 'gated_deltanet';

/** What follows the mixer in a layer: nothing, a dense gated MLP, or a mixture of experts. */
export type FfnKind = 'none' | 'dense' | 'moe';

export interface RopeConfig {
  /** HF rope_type: 'default', 'linear', 'dynamic', 'llama3', 'yarn', 'longrope', ... */
  type: string;
  theta: number;
  /** Fraction of head_dim that is rotated (1 = all of it). */
  partialRotaryFactor: number;
  /** int(headDim * partialRotaryFactor): the leading dims of each head that rotate. */
  rotaryDim: number;
  /** The remaining rope_parameters / rope_scaling entries (factor, original_max_position_embeddings, ...). */
  scaling: Readonly<Record<string, unknown>>;
}

export interface AttentionConfig {
  numHeads: number;
  numKeyValueHeads: number;
  headDim: number;
  /** Bias on the q/k/v/o projections. */
  bias: boolean;
  /** Multiplier of q·k before softmax (head_dim^-0.5 unless the family says otherwise). */
  scale: number;
  /** null: no positional encoding in attention (NoPE). */
  rope: RopeConfig | null;
  maxPositionEmbeddings: number;
}

/** Mamba-1 selective SSM (MambaForCausalLM and Jamba's mixer). */
export interface Mamba1MixerConfig {
  innerSize: number;
  stateSize: number;
  convKernel: number;
  dtRank: number;
  convBias: boolean;
  /** Bias on in_proj and out_proj (dt_proj always has one). */
  projBias: boolean;
  /** Jamba: RMSNorms on dt, B and C after x_proj (eps = the model's normEps). */
  dtBcNorms: boolean;
}

/** Mamba-2 / SSD mixer, shared by mamba2, bamba, granitemoehybrid, falcon_h1. */
export interface Mamba2MixerConfig {
  numHeads: number;
  headDim: number;
  numGroups: number;
  stateSize: number;
  convKernel: number;
  /** numHeads * headDim, the width of x and z. */
  innerSize: number;
  /** innerSize + 2 * numGroups * stateSize: channels through the causal conv. */
  convDim: number;
  chunkSize: number;
  convBias: boolean;
  inProjBias: boolean;
  outProjBias: boolean;
  /**
   * The RMSNorm on y gated by z: 'full_width' is one RMS over all innerSize channels (HF Mamba2, Bamba, Granite,
   * even with several groups), 'per_group' one RMS per innerSize/numGroups channels (Falcon-H1 with
   * mamba_rms_norm), 'none' no norm and no weight (Falcon-H1 default: o = y * silu(z)).
   */
  gatedNorm: 'full_width' | 'per_group' | 'none';
  /** Only with a norm: true = (w * norm(y)) * silu(z), false = w * norm(y * silu(z)). */
  normBeforeGate: boolean;
  /** Clamp of softplus(dt + dt_bias); [0, Infinity] is a no-op. */
  timeStepLimit: [number, number];
  timeStepMin: number;
  timeStepMax: number;
  /** eps of the gated RMSNorm on the mixer output. */
  normEps: number;
}

export interface BaseModelConfig<ModelType extends string> {
  modelType: ModelType;
  vocabSize: number;
  hiddenSize: number;
  numLayers: number;
  /** One entry per layer. */
  layerKinds: LayerKind[];
  /** One entry per layer. */
  ffnKinds: FfnKind[];
  tieWordEmbeddings: boolean;
  bosTokenId: number | null;
  /** eos_token_id as a list (HF allows one id or several); empty when the config has none. */
  eosTokenIds: number[];
  padTokenId: number | null;
  /** Activation of MLPs (and of Mamba convs/gates where the family uses hidden_act). */
  hiddenAct: string;
  /** eps of the block RMSNorms (rms_norm_eps, layer_norm_epsilon or norm_eps, whichever the family uses). */
  normEps: number;
  /** config.json as read (floats restored), for fields no normalized name covers. */
  raw: Readonly<Record<string, unknown>>;
}

// ---------------------------------------------------------------------------------------------------------------
// zod helpers

export const positiveInt = z.number().int().positive();
export const nonNegativeInt = z.number().int().nonnegative();
/** A float that may be ±Infinity (restored from {"__float__": "Infinity"} or Python's bare Infinity). */
export const extendedNumber = z.union([z.number(), z.literal(Infinity), z.literal(-Infinity)]);

/** Absent or null both mean "HF's default", which is what HF does for these fields. */
export function withDefault<T extends z.ZodType>(schema: T, fallback: z.output<T>) {
  return schema
    .nullish()
    .transform((value): z.output<T> => (value ?? fallback) as z.output<T>);
}

/** A token id field: absent gives the family default, null stays null (no such token). */
export function tokenId(fallback: number | null) {
  return nonNegativeInt.nullable().default(fallback);
}

export function eosTokenIds(fallback: number | null) {
  return z
    .union([nonNegativeInt, z.array(nonNegativeInt)])
    .nullable()
    .default(fallback)
    .transform((value): number[] => (value === null ? [] : Array.isArray(value) ? value : [value]));
}

/** bos_token_id, eos_token_id and pad_token_id with the family's defaults. */
export function tokenIdFields(bos: number | null, eos: number | null, pad: number | null) {
  return { bos_token_id: tokenId(bos), eos_token_id: eosTokenIds(eos), pad_token_id: tokenId(pad) };
}

export const timeStepLimit = withDefault(z.tuple([extendedNumber, extendedNumber]), [0, Infinity]).transform(
  (value): [number, number] => [value[0], value[1]],
);

/**
 * layer_types with every spelling HF accepts for this family mapped to a LayerKind
 * (transformers 5 writes "linear_attention"/"full_attention" where 4 wrote "mamba"/"attention").
 */
export function layerTypes<const Spelling extends string>(mapping: Record<Spelling, LayerKind>) {
  const spellings = Object.keys(mapping) as [Spelling, ...Spelling[]];
  return z.array(z.enum(spellings)).transform((names) => names.map((name) => mapping[name]));
}

/** layer_types of a hybrid of attention and one SSM mixer, in both spellings. */
export function hybridLayerTypes(mixer: 'mamba' | 'mamba2') {
  return layerTypes({
    mamba: mixer,
    linear_attention: mixer,
    attention: 'attention',
    full_attention: 'attention',
  }).nullish();
}

/** Both spellings of rope settings: top-level rope_theta / rope_scaling / partial_rotary_factor (transformers 4)
 *  and rope_parameters {rope_type, rope_theta, partial_rotary_factor, ...} (transformers 5). */
export const ropeFields = {
  rope_theta: z.number().positive().nullish(),
  rope_scaling: z.record(z.string(), z.unknown()).nullish(),
  partial_rotary_factor: z.number().gt(0).lte(1).nullish(),
  rope_parameters: z
    .looseObject({
      rope_theta: z.number().positive().nullish(),
      rope_type: z.string().nullish(),
      type: z.string().nullish(),
      partial_rotary_factor: z.number().gt(0).lte(1).nullish(),
    })
    .nullish(),
};

type RopeFieldValues = {
  rope_theta?: number | null;
  rope_scaling?: Record<string, unknown> | null;
  partial_rotary_factor?: number | null;
  rope_parameters?: { rope_theta?: number | null; rope_type?: string | null; type?: string | null; partial_rotary_factor?: number | null; [key: string]: unknown } | null;
};

export interface RopeDefaults {
  theta: number;
  partialRotaryFactor?: number;
  /** Bamba hard-codes the factor whatever the config says. */
  forcePartialRotaryFactor?: number;
}

/** rope_parameters wins over the top-level keys, as in transformers 5's standardize_rope_params. */
export function resolveRope(values: RopeFieldValues, headDim: number, defaults: RopeDefaults): RopeConfig {
  const parameters = values.rope_parameters ?? {};
  const scalingSource = values.rope_scaling ?? {};
  const {
    rope_theta: ignoredTheta,
    rope_type: parameterType,
    type: parameterLegacyType,
    partial_rotary_factor: parameterFactor,
    ...parameterRest
  } = parameters;
  const { rope_type: scalingType, type: scalingLegacyType, ...scalingRest } = scalingSource as Record<string, unknown>;
  void ignoredTheta;
  const type =
    parameterType ??
    parameterLegacyType ??
    (typeof scalingType === 'string' ? scalingType : undefined) ??
    (typeof scalingLegacyType === 'string' ? scalingLegacyType : undefined) ??
    'default';
  const theta = parameters.rope_theta ?? values.rope_theta ?? defaults.theta;
  const partialRotaryFactor =
    defaults.forcePartialRotaryFactor ??
    parameterFactor ??
    values.partial_rotary_factor ??
    defaults.partialRotaryFactor ??
    1;
  return {
    type,
    theta,
    partialRotaryFactor,
    rotaryDim: Math.floor(headDim * partialRotaryFactor),
    scaling: { ...scalingRest, ...parameterRest },
  };
}

/** Cross-field check for a zod superRefine: a per-layer list must have one entry per layer. */
export function checkLayerCount(
  context: z.RefinementCtx,
  field: string,
  list: readonly unknown[] | null | undefined,
  numLayers: number,
): void {
  if (list && list.length !== numLayers) {
    context.addIssue({
      code: 'custom',
      path: [field],
      message: `has ${list.length} entries, expected one per layer (num_hidden_layers = ${numLayers})`,
    });
  }
}

/** HF's check that the KV heads divide the query heads (num_key_value_heads absent or null: as many as heads). */
export function checkKeyValueHeads(
  context: z.RefinementCtx,
  config: { num_attention_heads: number; num_key_value_heads?: number | null },
): void {
  const kvHeads = config.num_key_value_heads ?? config.num_attention_heads;
  checkDivides(context, 'num_key_value_heads', kvHeads, 'num_key_value_heads', config.num_attention_heads, 'num_attention_heads');
}

export function checkDivides(
  context: z.RefinementCtx,
  field: string,
  divisor: number,
  divisorName: string,
  dividend: number,
  dividendName: string,
): void {
  if (dividend % divisor !== 0) {
    context.addIssue({
      code: 'custom',
      path: [field],
      message: `${divisorName} = ${divisor} must divide ${dividendName} = ${dividend}`,
    });
  }
}

/** The fields every family reads the same way. */
export const coreFields = {
  model_type: z.string(),
  vocab_size: positiveInt,
  hidden_size: positiveInt,
  num_hidden_layers: positiveInt,
};

/** The mamba_* keys of Bamba, GraniteMoeHybrid and Falcon-H1 (same names, same defaults). */
export const hybridMamba2Fields = {
  mamba_n_heads: withDefault(positiveInt, 128),
  mamba_d_head: withDefault(z.union([positiveInt, z.literal('auto')]), 'auto'),
  mamba_n_groups: withDefault(positiveInt, 1),
  mamba_d_state: withDefault(positiveInt, 256),
  mamba_d_conv: withDefault(positiveInt, 4),
  mamba_expand: withDefault(positiveInt, 2),
  mamba_chunk_size: withDefault(positiveInt, 256),
  mamba_conv_bias: withDefault(z.boolean(), true),
  mamba_proj_bias: withDefault(z.boolean(), false),
  time_step_min: withDefault(z.number(), 0.001),
  time_step_max: withDefault(z.number(), 0.1),
  time_step_limit: timeStepLimit,
};

type HybridMamba2Values = {
  hidden_size: number;
  rms_norm_eps: number;
  mamba_expand: number;
  mamba_n_heads: number;
  mamba_d_head: number | 'auto';
  mamba_n_groups: number;
  mamba_d_state: number;
  mamba_d_conv: number;
  mamba_chunk_size: number;
  mamba_conv_bias: boolean;
  mamba_proj_bias: boolean;
  time_step_min: number;
  time_step_max: number;
  time_step_limit: [number, number];
};

/** HF's checks on the Mamba-2 head layout, for a superRefine. `innerSize`: expand·H unless given (Falcon's d_ssm). */
export function checkHybridMamba2(
  context: z.RefinementCtx,
  values: HybridMamba2Values,
  innerSize = values.mamba_expand * values.hidden_size,
): void {
  if (innerSize % values.mamba_n_heads !== 0) {
    context.addIssue({
      code: 'custom',
      path: ['mamba_n_heads'],
      message: `mamba_n_heads = ${values.mamba_n_heads} must divide the mamba inner size ${innerSize}`,
    });
    return;
  }
  const headDim = values.mamba_d_head === 'auto' ? innerSize / values.mamba_n_heads : values.mamba_d_head;
  if (headDim * values.mamba_n_heads !== innerSize) {
    context.addIssue({
      code: 'custom',
      path: ['mamba_d_head'],
      message: `mamba_d_head * mamba_n_heads = ${headDim * values.mamba_n_heads} must equal the mamba inner size ${innerSize}`,
    });
  }
  if (values.mamba_n_heads % values.mamba_n_groups !== 0) {
    context.addIssue({
      code: 'custom',
      path: ['mamba_n_groups'],
      message: `mamba_n_groups = ${values.mamba_n_groups} must divide mamba_n_heads = ${values.mamba_n_heads}`,
    });
  }
}

/** The Mamba-2 mixer from the mamba_* keys; its gated norm uses the model's rms_norm_eps. */
export function resolveHybridMamba2(
  values: HybridMamba2Values,
  innerSize = values.mamba_expand * values.hidden_size,
  norm: Pick<Mamba2MixerConfig, 'gatedNorm' | 'normBeforeGate' | 'outProjBias'> = {
    gatedNorm: 'full_width',
    normBeforeGate: false,
    outProjBias: values.mamba_proj_bias,
  },
): Mamba2MixerConfig {
  const headDim = values.mamba_d_head === 'auto' ? innerSize / values.mamba_n_heads : values.mamba_d_head;
  return {
    numHeads: values.mamba_n_heads,
    headDim,
    numGroups: values.mamba_n_groups,
    stateSize: values.mamba_d_state,
    convKernel: values.mamba_d_conv,
    innerSize,
    convDim: innerSize + 2 * values.mamba_n_groups * values.mamba_d_state,
    chunkSize: values.mamba_chunk_size,
    convBias: values.mamba_conv_bias,
    inProjBias: values.mamba_proj_bias,
    ...norm,
    timeStepLimit: values.time_step_limit,
    timeStepMin: values.time_step_min,
    timeStepMax: values.time_step_max,
    normEps: values.rms_norm_eps,
  };
}

// ---------------------------------------------------------------------------------------------------------------
// Builders of the normalized objects, for the families' transforms

/** A per-layer list: one value for every layer, the list itself, or a function of the layer index. */
export type PerLayer<T extends string> = T | T[] | ((layer: number) => T);

function perLayer<T extends string>(count: number, spec: PerLayer<T>): T[] {
  if (typeof spec === 'string') return Array<T>(count).fill(spec);
  if (typeof spec === 'function') return Array.from({ length: count }, (_, layer) => spec(layer));
  return spec;
}

type BaseFieldValues = Readonly<Record<string, unknown>> & {
  vocab_size: number;
  hidden_size: number;
  num_hidden_layers: number;
  tie_word_embeddings: boolean;
  bos_token_id: number | null;
  eos_token_id: number[];
  pad_token_id: number | null;
};

/** The BaseModelConfig fields; `raw` is the validated config itself. */
export function baseConfig<ModelType extends string>(
  config: BaseFieldValues,
  modelType: ModelType,
  layerKinds: PerLayer<LayerKind>,
  ffnKinds: PerLayer<FfnKind>,
  normEps: number,
  hiddenAct: string,
): BaseModelConfig<ModelType> {
  return {
    modelType,
    vocabSize: config.vocab_size,
    hiddenSize: config.hidden_size,
    numLayers: config.num_hidden_layers,
    layerKinds: perLayer(config.num_hidden_layers, layerKinds),
    ffnKinds: perLayer(config.num_hidden_layers, ffnKinds),
    tieWordEmbeddings: config.tie_word_embeddings,
    bosTokenId: config.bos_token_id,
    eosTokenIds: config.eos_token_id,
    padTokenId: config.pad_token_id,
    hiddenAct,
    normEps,
    raw: config,
  };
}

type AttentionFieldValues = RopeFieldValues & {
  hidden_size: number;
  num_attention_heads: number;
  num_key_value_heads?: number | null;
  head_dim?: number | null;
  max_position_embeddings: number;
};

export interface AttentionOptions {
  /** attention_bias, or false where the family has none. Never read from the config: a loose schema passes
   *  through keys the family does not declare. */
  bias: boolean;
  /** Default: head_dim ?? floor(hidden_size / num_attention_heads). A family without head_dim must pass it. */
  headDim?: number;
  /** Default: headDim ** -0.5. */
  scale?: number;
}

/**
 * The attention sub-object. `rope`: the defaults to resolve the config's rope fields with, null for NoPE, or a
 * function of headDim for a family that resolves its RoPE otherwise.
 */
export function attentionConfig(
  config: AttentionFieldValues,
  rope: RopeDefaults | null | ((headDim: number) => RopeConfig),
  options: AttentionOptions,
): AttentionConfig {
  const headDim = options.headDim ?? config.head_dim ?? Math.floor(config.hidden_size / config.num_attention_heads);
  return {
    numHeads: config.num_attention_heads,
    numKeyValueHeads: config.num_key_value_heads ?? config.num_attention_heads,
    headDim,
    bias: options.bias,
    scale: options.scale ?? headDim ** -0.5,
    rope: rope === null ? null : typeof rope === 'function' ? rope(headDim) : resolveRope(config, headDim, rope),
    maxPositionEmbeddings: config.max_position_embeddings,
  };
}
