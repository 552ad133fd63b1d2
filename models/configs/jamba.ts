// JambaForCausalLM config.json: Mamba-1 + attention without RoPE, MoE on every other layer.
// Defaults from transformers' JambaConfig.

import { z } from 'zod';
import {
  type AttentionConfig,
  type BaseModelConfig,
  type Mamba1MixerConfig,
  checkDivides,
  checkLayerCount,
  coreFields,
  eosTokenIds,
  layerTypes,
  nonNegativeInt,
  positiveInt,
  tokenId,
  withDefault,
} from './common.ts';

export interface JambaConfig extends BaseModelConfig<'jamba'> {
  intermediateSize: number;
  /** Jamba attention has no positional encoding: `attention.rope` is null. */
  attention: AttentionConfig;
  mamba: Mamba1MixerConfig;
  /** Softmax over all experts, then top-k without renormalisation. */
  moe: { numExperts: number; numExpertsPerTok: number };
}

export const jambaConfigSchema = z
  .looseObject({
    ...coreFields,
    model_type: z.literal('jamba'),
    intermediate_size: withDefault(positiveInt, 14336),
    num_attention_heads: withDefault(positiveInt, 32),
    num_key_value_heads: withDefault(positiveInt, 8),
    head_dim: positiveInt.nullish(),
    hidden_act: withDefault(z.string(), 'silu'),
    rms_norm_eps: withDefault(z.number().positive(), 1e-6),
    max_position_embeddings: withDefault(positiveInt, 262144),
    tie_word_embeddings: withDefault(z.boolean(), false),
    num_experts: positiveInt.nullish(),
    num_local_experts: positiveInt.nullish(), // attribute_map alias of num_experts
    num_experts_per_tok: withDefault(positiveInt, 2),
    expert_layer_period: withDefault(positiveInt, 2),
    expert_layer_offset: withDefault(nonNegativeInt, 1),
    attn_layer_period: withDefault(positiveInt, 8),
    attn_layer_offset: withDefault(nonNegativeInt, 4),
    layer_types: layerTypes({
      mamba: 'mamba',
      linear_attention: 'mamba',
      attention: 'attention',
      full_attention: 'attention',
    }).nullish(),
    mamba_d_state: withDefault(positiveInt, 16),
    mamba_d_conv: withDefault(positiveInt, 4),
    mamba_expand: withDefault(positiveInt, 2),
    mamba_dt_rank: withDefault(z.union([positiveInt, z.literal('auto')]), 'auto'),
    mamba_conv_bias: withDefault(z.boolean(), true),
    mamba_proj_bias: withDefault(z.boolean(), false),
    bos_token_id: tokenId(1),
    eos_token_id: eosTokenIds(2),
    pad_token_id: tokenId(0),
  })
  .superRefine((config, context) => {
    checkLayerCount(context, 'layer_types', config.layer_types, config.num_hidden_layers);
    checkDivides(context, 'num_key_value_heads', config.num_key_value_heads, 'num_key_value_heads', config.num_attention_heads, 'num_attention_heads');
    for (const [offset, period] of [
      ['attn_layer_offset', 'attn_layer_period'],
      ['expert_layer_offset', 'expert_layer_period'],
    ] as const) {
      if (config[offset] >= config[period]) {
        context.addIssue({ code: 'custom', path: [offset], message: `${offset} = ${config[offset]} must be < ${period} = ${config[period]}` });
      }
    }
  })
  .transform((config): JambaConfig => {
    const layers = [...Array(config.num_hidden_layers).keys()];
    const numExperts = config.num_experts ?? config.num_local_experts ?? 16;
    const headDim = config.head_dim ?? Math.floor(config.hidden_size / config.num_attention_heads);
    return {
      modelType: 'jamba',
      vocabSize: config.vocab_size,
      hiddenSize: config.hidden_size,
      numLayers: config.num_hidden_layers,
      layerKinds:
        config.layer_types ??
        layers.map((i) => (i % config.attn_layer_period === config.attn_layer_offset ? 'attention' : 'mamba')),
      ffnKinds: layers.map((i) =>
        i % config.expert_layer_period === config.expert_layer_offset && numExperts > 1 ? 'moe' : 'dense',
      ),
      tieWordEmbeddings: config.tie_word_embeddings,
      bosTokenId: config.bos_token_id,
      eosTokenIds: config.eos_token_id,
      padTokenId: config.pad_token_id,
      hiddenAct: config.hidden_act,
      normEps: config.rms_norm_eps,
      raw: config,
      intermediateSize: config.intermediate_size,
      attention: {
        numHeads: config.num_attention_heads,
        numKeyValueHeads: config.num_key_value_heads,
        headDim,
        bias: false,
        scale: headDim ** -0.5,
        rope: null,
        maxPositionEmbeddings: config.max_position_embeddings,
      },
      mamba: {
        innerSize: config.mamba_expand * config.hidden_size,
        stateSize: config.mamba_d_state,
        convKernel: config.mamba_d_conv,
        dtRank: config.mamba_dt_rank === 'auto' ? Math.ceil(config.hidden_size / 16) : config.mamba_dt_rank,
        convBias: config.mamba_conv_bias,
        projBias: config.mamba_proj_bias,
        dtBcNorms: true,
      },
      moe: { numExperts, numExpertsPerTok: config.num_experts_per_tok },
    };
  });
