// FalconH1ForCausalLM config.json: attention and a Mamba-2 mixer in parallel in every layer, SwiGLU MLP,
// muP multipliers. Defaults from transformers' FalconH1Config.

import { z } from 'zod';
import {
  type AttentionConfig,
  type BaseModelConfig,
  type Mamba2MixerConfig,
  attentionConfig,
  baseConfig,
  checkHybridMamba2,
  checkKeyValueHeads,
  coreFields,
  hybridMamba2Fields,
  positiveInt,
  resolveHybridMamba2,
  ropeFields,
  tokenIdFields,
  withDefault,
} from './common.ts';

export interface FalconH1Multipliers {
  /** Embeddings are multiplied by this. */
  embedding: number;
  /** Logits are multiplied by this. */
  lmHead: number;
  /** The normed input of attention is multiplied by this. */
  attentionIn: number;
  /** Attention output is multiplied by this. */
  attentionOut: number;
  /** k (not q, not v) is multiplied by this before RoPE. */
  key: number;
  /** The normed input of the mixer is multiplied by this. */
  ssmIn: number;
  /** Mixer output is multiplied by this. */
  ssmOut: number;
  /** in_proj output segments [z, x, B, C, dt] are multiplied by these (the muP vector, not in safetensors). */
  ssm: [number, number, number, number, number];
  /** MLP: up(x) * silu(gate(x) * mlpGate), then down(...) * mlpDown. */
  mlpGate: number;
  mlpDown: number;
}

export interface FalconH1Config extends BaseModelConfig<'falcon_h1'> {
  intermediateSize: number;
  mlpBias: boolean;
  attention: AttentionConfig;
  mamba: Mamba2MixerConfig;
  multipliers: FalconH1Multipliers;
}

export const falconH1ConfigSchema = z
  .looseObject({
    ...coreFields,
    model_type: z.literal('falcon_h1'),
    intermediate_size: withDefault(positiveInt, 14336),
    num_attention_heads: withDefault(positiveInt, 32),
    num_key_value_heads: positiveInt.nullable().default(8),
    head_dim: positiveInt.nullish(),
    hidden_act: withDefault(z.string(), 'silu'),
    rms_norm_eps: withDefault(z.number().positive(), 1e-5),
    max_position_embeddings: withDefault(positiveInt, 8192),
    tie_word_embeddings: withDefault(z.boolean(), false),
    attention_bias: withDefault(z.boolean(), false),
    mlp_bias: withDefault(z.boolean(), false),
    projectors_bias: withDefault(z.boolean(), false),
    // Absent: 1024 (the class default); null: mamba_expand * hidden_size.
    mamba_d_ssm: positiveInt.nullable().default(1024),
    mamba_norm_before_gate: withDefault(z.boolean(), true),
    mamba_rms_norm: withDefault(z.boolean(), false),
    embedding_multiplier: withDefault(z.number(), 1),
    lm_head_multiplier: withDefault(z.number(), 1),
    attention_in_multiplier: withDefault(z.number(), 1),
    attention_out_multiplier: withDefault(z.number(), 1),
    key_multiplier: withDefault(z.number(), 1),
    ssm_in_multiplier: withDefault(z.number(), 1),
    ssm_out_multiplier: withDefault(z.number(), 1),
    ssm_multipliers: withDefault(z.tuple([z.number(), z.number(), z.number(), z.number(), z.number()]), [1, 1, 1, 1, 1]),
    mlp_multipliers: withDefault(z.tuple([z.number(), z.number()]), [1, 1]),
    ...hybridMamba2Fields,
    ...ropeFields,
    ...tokenIdFields(1, 2, 0),
  })
  .superRefine((config, context) => {
    checkKeyValueHeads(context, config);
    checkHybridMamba2(context, config, config.mamba_d_ssm ?? config.mamba_expand * config.hidden_size);
  })
  .transform((config): FalconH1Config => {
    const [z, x, b, c, dt] = config.ssm_multipliers;
    return {
      ...baseConfig(config, 'falcon_h1', 'attention_mamba2', 'dense', config.rms_norm_eps, config.hidden_act),
      intermediateSize: config.intermediate_size,
      mlpBias: config.mlp_bias,
      // transformers 5's default theta (10000) when neither rope_parameters nor rope_theta is given;
      // transformers 4 configs always carry rope_theta.
      attention: attentionConfig(config, { theta: 10000 }, { bias: config.attention_bias }),
      mamba: resolveHybridMamba2(config, config.mamba_d_ssm ?? config.mamba_expand * config.hidden_size, {
        gatedNorm: config.mamba_rms_norm ? 'per_group' : 'none',
        normBeforeGate: config.mamba_norm_before_gate,
        outProjBias: config.projectors_bias,
      }),
      multipliers: {
        embedding: config.embedding_multiplier,
        lmHead: config.lm_head_multiplier,
        attentionIn: config.attention_in_multiplier,
        attentionOut: config.attention_out_multiplier,
        key: config.key_multiplier,
        ssmIn: config.ssm_in_multiplier,
        ssmOut: config.ssm_out_multiplier,
        ssm: [z, x, b, c, dt],
        mlpGate: config.mlp_multipliers[0],
        mlpDown: config.mlp_multipliers[1],
      },
    };
  });
