// GraniteMoeHybridForCausalLM (Granite 4.0-H) config.json: Mamba-2 + attention by layer_types, MoE with a shared
// MLP (or the shared MLP alone when num_local_experts = 0), muP-style multipliers.
// Defaults from transformers' GraniteMoeHybridConfig.

import { z } from 'zod';
import {
  type AttentionConfig,
  type BaseModelConfig,
  type Mamba2MixerConfig,
  attentionConfig,
  baseConfig,
  checkHybridMamba2,
  checkKeyValueHeads,
  checkLayerCount,
  coreFields,
  hybridLayerTypes,
  hybridMamba2Fields,
  nonNegativeInt,
  positiveInt,
  resolveHybridMamba2,
  ropeFields,
  tokenIdFields,
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
    layer_types: hybridLayerTypes('mamba2'),
    ...hybridMamba2Fields,
    ...ropeFields,
    ...tokenIdFields(1, 2, null),
  })
  .superRefine((config, context) => {
    checkLayerCount(context, 'layer_types', config.layer_types, config.num_hidden_layers);
    checkKeyValueHeads(context, config);
    checkHybridMamba2(context, config);
    if (config.num_local_experts > 0 && (config.num_experts_per_tok < 1 || config.num_experts_per_tok > config.num_local_experts)) {
      context.addIssue({
        code: 'custom',
        path: ['num_experts_per_tok'],
        message: `must be between 1 and num_local_experts = ${config.num_local_experts}, got ${config.num_experts_per_tok}`,
      });
    }
  })
  .transform((config): GraniteMoeHybridConfig => {
    const hasMoe = config.num_local_experts > 0;
    return {
      ...baseConfig(
        config,
        'granitemoehybrid',
        config.layer_types ?? 'mamba2',
        hasMoe ? 'moe' : 'dense',
        config.rms_norm_eps,
        config.hidden_act,
      ),
      intermediateSize: config.intermediate_size,
      sharedIntermediateSize: config.shared_intermediate_size,
      embeddingMultiplier: config.embedding_multiplier,
      residualMultiplier: config.residual_multiplier,
      logitsScaling: config.logits_scaling,
      attention: attentionConfig(config, config.position_embedding_type === 'rope' ? { theta: 10000 } : null, {
        bias: config.attention_bias,
        scale: config.attention_multiplier,
      }),
      mamba: resolveHybridMamba2(config),
      moe: hasMoe ? { numExperts: config.num_local_experts, numExpertsPerTok: config.num_experts_per_tok } : null,
    };
  });
