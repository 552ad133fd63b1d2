// Qwen3NextForCausalLM config.json: Gated DeltaNet linear attention + gated full attention, MoE with a shared
// expert. Defaults from transformers' Qwen3NextConfig.

import { z } from 'zod';
import {
  type AttentionConfig,
  type BaseModelConfig,
  attentionConfig,
  baseConfig,
  checkDivides,
  checkKeyValueHeads,
  checkLayerCount,
  coreFields,
  layerTypes,
  nonNegativeInt,
  positiveInt,
  ropeFields,
  tokenIdFields,
  withDefault,
} from './common.ts';

export interface GatedDeltaNetConfig {
  numKeyHeads: number;
  numValueHeads: number;
  keyHeadDim: number;
  valueHeadDim: number;
  convKernel: number;
  /** 2 * numKeyHeads * keyHeadDim + numValueHeads * valueHeadDim: channels through the causal conv. */
  convDim: number;
}

export interface Qwen3NextConfig extends BaseModelConfig<'qwen3_next'> {
  /** Width of the dense MLP on layers whose ffnKind is 'dense'. */
  intermediateSize: number;
  /** Full-attention layers: q_proj yields query and a sigmoid output gate per head; q/k RMSNorm; partial RoPE. */
  attention: AttentionConfig;
  linearAttention: GatedDeltaNetConfig;
  moe: {
    numExperts: number;
    numExpertsPerTok: number;
    /** Per-expert MLP width. */
    intermediateSize: number;
    sharedExpertIntermediateSize: number;
    /** Renormalise the top-k softmax weights to sum to 1. */
    normTopkProb: boolean;
  };
}

export const qwen3NextConfigSchema = z
  .looseObject({
    ...coreFields,
    model_type: z.literal('qwen3_next'),
    intermediate_size: withDefault(positiveInt, 5632),
    num_attention_heads: withDefault(positiveInt, 16),
    num_key_value_heads: withDefault(positiveInt, 2),
    head_dim: withDefault(positiveInt, 256),
    hidden_act: withDefault(z.string(), 'silu'),
    max_position_embeddings: withDefault(positiveInt, 32768),
    rms_norm_eps: withDefault(z.number().positive(), 1e-6),
    tie_word_embeddings: withDefault(z.boolean(), false),
    attention_bias: withDefault(z.boolean(), false),
    linear_conv_kernel_dim: withDefault(positiveInt, 4),
    linear_key_head_dim: withDefault(positiveInt, 128),
    linear_value_head_dim: withDefault(positiveInt, 128),
    linear_num_key_heads: withDefault(positiveInt, 16),
    linear_num_value_heads: withDefault(positiveInt, 32),
    decoder_sparse_step: withDefault(positiveInt, 1),
    moe_intermediate_size: withDefault(positiveInt, 512),
    shared_expert_intermediate_size: withDefault(positiveInt, 512),
    num_experts_per_tok: withDefault(nonNegativeInt, 10),
    num_experts: withDefault(nonNegativeInt, 512),
    norm_topk_prob: withDefault(z.boolean(), true),
    mlp_only_layers: withDefault(z.array(nonNegativeInt), []),
    full_attention_interval: withDefault(positiveInt, 4),
    layer_types: layerTypes({
      linear_attention: 'gated_deltanet',
      mamba: 'gated_deltanet',
      full_attention: 'attention',
      attention: 'attention',
    }).nullish(),
    ...ropeFields,
    ...tokenIdFields(null, null, null),
  })
  .superRefine((config, context) => {
    checkLayerCount(context, 'layer_types', config.layer_types, config.num_hidden_layers);
    checkKeyValueHeads(context, config);
    checkDivides(context, 'linear_num_key_heads', config.linear_num_key_heads, 'linear_num_key_heads', config.linear_num_value_heads, 'linear_num_value_heads');
  })
  .transform((config): Qwen3NextConfig => {
    const mlpOnly = new Set(config.mlp_only_layers);
    const keyDim = config.linear_num_key_heads * config.linear_key_head_dim;
    const valueDim = config.linear_num_value_heads * config.linear_value_head_dim;
    const layerKinds =
      config.layer_types ??
      ((i: number) => ((i + 1) % config.full_attention_interval === 0 ? 'attention' : 'gated_deltanet'));
    const ffnKinds = (i: number) =>
      !mlpOnly.has(i) && config.num_experts > 0 && (i + 1) % config.decoder_sparse_step === 0 ? 'moe' : 'dense';
    return {
      ...baseConfig(config, 'qwen3_next', layerKinds, ffnKinds, config.rms_norm_eps, config.hidden_act),
      intermediateSize: config.intermediate_size,
      attention: attentionConfig(config, { theta: 10000, partialRotaryFactor: 0.25 }, { bias: config.attention_bias }),
      linearAttention: {
        numKeyHeads: config.linear_num_key_heads,
        numValueHeads: config.linear_num_value_heads,
        keyHeadDim: config.linear_key_head_dim,
        valueHeadDim: config.linear_value_head_dim,
        convKernel: config.linear_conv_kernel_dim,
        convDim: 2 * keyDim + valueDim,
      },
      moe: {
        numExperts: config.num_experts,
        numExpertsPerTok: config.num_experts_per_tok,
        intermediateSize: config.moe_intermediate_size,
        sharedExpertIntermediateSize: config.shared_expert_intermediate_size,
        normTopkProb: config.norm_topk_prob,
      },
    };
  });
