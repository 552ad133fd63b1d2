// GraniteMoeHybridForCausalLM (Granite 4.0-H) config.json: Mamba-2 + attention by layer_types, MoE with a shared
// MLP (or the shared MLP alone when num_local_experts = 0), muP-style multipliers.
// Defaults from transformers' GraniteMoeHybridConfig.

import { z } from 'zod';
import {
  type AttentionConfig,
  type BaseModelConfig,
  type Mamba2MixerConfig,
  checkDivides,
  checkHybridMamba2,
  checkLayerCount,
  coreFields,
  eosTokenIds,
  hybridMamba2Fields,
  layerTypes,
  nonNegativeInt,
  positiveInt,
  resolveHybridMamba2,
  resolveRope,
  ropeFields,
  tokenId,
  withDefault,
} from './common.ts';

export interface GraniteMoeHybridConfig extends BaseModelConfig<'granitemoehybrid'> {
  /** Per-expert intermediate size (block_sparse_moe.input_linear is [E, 2 * this, H]). */
  intermediateSize: number;
  /** shared_mlp.input_linear is [2 * this, H]. */
  sharedIntermediateSize: number;
  /** Embeddings are multiplied by this. */
  embeddingMultiplier: number;
  /** Each branch output (mixer, then FFN) is multiplied by this before its residual add. */
  residualMultiplier: number;
  /** Logits are divided by this. */
  logitsScaling: number;
  /** `scale` is attention_multiplier; `rope` is null unless position_embedding_type is "rope". */
  attention: AttentionConfig;
  mamba: Mamba2MixerConfig;
  /** Top-k on raw router logits, then softmax over the k. null when num_local_experts = 0 (dense). */
  moe: { numExperts: number; numExpertsPerTok: number } | null;
}

export const granitemoehybridConfigSchema = z
  .looseObject({
    ...coreFields,
    model_type: z.literal('granitemoehybrid'),
    intermediate_size: withDefault(positiveInt, 11008),
    shared_intermediate_size: withDefault(positiveInt, 1024),
    num_attention_heads: withDefault(positiveInt, 32),
    num_key_value_heads: positiveInt.nullish(),
    head_dim: positiveInt.nullish(),
    hidden_act: withDefault(z.string(), 'silu'),
    rms_norm_eps: withDefault(z.number().positive(), 1e-6),
    max_position_embeddings: withDefault(positiveInt, 2048),
    tie_word_embeddings: withDefault(z.boolean(), false),
    attention_bias: withDefault(z.boolean(), false),
    embedding_multiplier: withDefault(z.number(), 1),
    logits_scaling: withDefault(z.number(), 1),
    residual_multiplier: withDefault(z.number(), 1),
    attention_multiplier: withDefault(z.number(), 1),
    num_local_experts: withDefault(nonNegativeInt, 8),
    num_experts_per_tok: withDefault(nonNegativeInt, 2),
    position_embedding_type: z.enum(['rope', 'nope']).nullish(),
    layer_types: layerTypes({
      mamba: 'mamba2',
      linear_attention: 'mamba2',
      attention: 'attention',
      full_attention: 'attention',
    }).nullish(),
    ...hybridMamba2Fields,
    ...ropeFields,
    bos_token_id: tokenId(1),
    eos_token_id: eosTokenIds(2),
    pad_token_id: tokenId(null),
  })
  .superRefine((config, context) => {
    checkLayerCount(context, 'layer_types', config.layer_types, config.num_hidden_layers);
    const kvHeads = config.num_key_value_heads ?? config.num_attention_heads;
    checkDivides(context, 'num_key_value_heads', kvHeads, 'num_key_value_heads', config.num_attention_heads, 'num_attention_heads');
    checkHybridMamba2(context, config, config.mamba_expand * config.hidden_size);
    if (config.num_local_experts > 0 && (config.num_experts_per_tok < 1 || config.num_experts_per_tok > config.num_local_experts)) {
      context.addIssue({
        code: 'custom',
        path: ['num_experts_per_tok'],
        message: `must be between 1 and num_local_experts = ${config.num_local_experts}, got ${config.num_experts_per_tok}`,
      });
    }
  })
  .transform((config): GraniteMoeHybridConfig => {
    const headDim = config.head_dim ?? Math.floor(config.hidden_size / config.num_attention_heads);
    const hasMoe = config.num_local_experts > 0;
    return {
      modelType: 'granitemoehybrid',
      vocabSize: config.vocab_size,
      hiddenSize: config.hidden_size,
      numLayers: config.num_hidden_layers,
      layerKinds: config.layer_types ?? Array(config.num_hidden_layers).fill('mamba2'),
      ffnKinds: Array(config.num_hidden_layers).fill(hasMoe ? 'moe' : 'dense'),
      tieWordEmbeddings: config.tie_word_embeddings,
      bosTokenId: config.bos_token_id,
      eosTokenIds: config.eos_token_id,
      padTokenId: config.pad_token_id,
      hiddenAct: config.hidden_act,
      normEps: config.rms_norm_eps,
      raw: config,
      intermediateSize: config.intermediate_size,
      sharedIntermediateSize: config.shared_intermediate_size,
      embeddingMultiplier: config.embedding_multiplier,
      residualMultiplier: config.residual_multiplier,
      logitsScaling: config.logits_scaling,
      attention: {
        numHeads: config.num_attention_heads,
        numKeyValueHeads: config.num_key_value_heads ?? config.num_attention_heads,
        headDim,
        bias: config.attention_bias,
        scale: config.attention_multiplier,
        rope: config.position_embedding_type === 'rope' ? resolveRope(config, headDim, { theta: 10000 }) : null,
        maxPositionEmbeddings: config.max_position_embeddings,
      },
      mamba: resolveHybridMamba2(config, config.mamba_expand * config.hidden_size, config.rms_norm_eps),
      moe: hasMoe ? { numExperts: config.num_local_experts, numExpertsPerTok: config.num_experts_per_tok } : null,
    };
  });
