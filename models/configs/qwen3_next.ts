// Qwen3NextForCausalLM config.json: Gated DeltaNet linear attention + gated full attention, MoE with a shared
// expert. Defaults from transformers' Qwen3NextConfig.

import { z } from 'zod';
import {
  type AttentionConfig,
  type BaseModelConfig,
  checkDivides,
  checkLayerCount,
  coreFields,
  eosTokenIds,
  layerTypes,
  nonNegativeInt,
  positiveInt,
  resolveRope,
  ropeFields,
  tokenId,
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
    bos_token_id: tokenId(null),
    eos_token_id: eosTokenIds(null),
    pad_token_id: tokenId(null),
  })
  .superRefine((config, context) => {
    checkLayerCount(context, 'layer_types', config.layer_types, config.num_hidden_layers);
    checkDivides(context, 'num_key_value_heads', config.num_key_value_heads, 'num_key_value_heads', config.num_attention_heads, 'num_attention_heads');
    checkDivides(context, 'linear_num_key_heads', config.linear_num_key_heads, 'linear_num_key_heads', config.linear_num_value_heads, 'linear_num_value_heads');
  })
  .transform((config): Qwen3NextConfig => {
    const layers = [...Array(config.num_hidden_layers).keys()];
    const mlpOnly = new Set(config.mlp_only_layers);
    const keyDim = config.linear_num_key_heads * config.linear_key_head_dim;
    const valueDim = config.linear_num_value_heads * config.linear_value_head_dim;
    return {
      modelType: 'qwen3_next',
      vocabSize: config.vocab_size,
      hiddenSize: config.hidden_size,
      numLayers: config.num_hidden_layers,
      layerKinds:
        config.layer_types ??
        layers.map((i) => ((i + 1) % config.full_attention_interval === 0 ? 'attention' : 'gated_deltanet')),
      ffnKinds: layers.map((i) =>
        !mlpOnly.has(i) && config.num_experts > 0 && (i + 1) % config.decoder_sparse_step === 0 ? 'moe' : 'dense',
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
        headDim: config.head_dim,
        bias: config.attention_bias,
        scale: config.head_dim ** -0.5,
        rope: resolveRope(config, config.head_dim, { theta: 10000, partialRotaryFactor: 0.25 }),
        maxPositionEmbeddings: config.max_position_embeddings,
      },
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
