// Lfm2ForCausalLM config.json: gated short-convolution layers + attention with q/k norms.
// Defaults from transformers' Lfm2Config, including its aliases for Liquid's original key names.

import { z } from 'zod';
import {
  type AttentionConfig,
  type BaseModelConfig,
  attentionConfig,
  baseConfig,
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

export interface Lfm2Config extends BaseModelConfig<'lfm2'> {
  /** intermediate_size as written. */
  intermediateSize: number;
  /** The MLP width actually built (w1/w3 rows) after HF's block_auto_adjust_ff_dim arithmetic. */
  ffnSize: number;
  attention: AttentionConfig;
  /** Short conv: in_proj -> B, C, x; conv over B*x with `kernel` taps (conv_L_cache), no activation. */
  conv: { kernel: number; bias: boolean };
}

// Liquid's original names, accepted by Lfm2Config's attribute_map.
const aliases = { theta: 'rope_theta', block_ff_dim: 'intermediate_size', tie_embedding: 'tie_word_embeddings' } as const;

function applyAliases(input: unknown): unknown {
  if (typeof input !== 'object' || input === null || Array.isArray(input)) return input;
  const copy: Record<string, unknown> = { ...(input as Record<string, unknown>) };
  for (const [alias, name] of Object.entries(aliases)) {
    if (alias in copy && !(name in copy)) copy[name] = copy[alias];
  }
  return copy;
}

export const lfm2ConfigSchema = z.preprocess(
  applyAliases,
  z
    .looseObject({
      ...coreFields,
      model_type: z.literal('lfm2'),
      intermediate_size: withDefault(positiveInt, 12288),
      num_attention_heads: withDefault(positiveInt, 32),
      num_key_value_heads: withDefault(positiveInt, 8),
      max_position_embeddings: withDefault(positiveInt, 128000),
      norm_eps: withDefault(z.number().positive(), 1e-5),
      tie_word_embeddings: withDefault(z.boolean(), true),
      conv_bias: withDefault(z.boolean(), false),
      conv_L_cache: withDefault(positiveInt, 3),
      block_multiple_of: withDefault(positiveInt, 256),
      // null is meaningful here: no multiplier.
      block_ffn_dim_multiplier: z.number().positive().nullable().default(1),
      block_auto_adjust_ff_dim: withDefault(z.boolean(), true),
      full_attn_idxs: z.array(nonNegativeInt).nullish(),
      layer_types: layerTypes({
        conv: 'short_conv',
        full_attention: 'attention',
        attention: 'attention',
      }).nullish(),
      ...ropeFields,
      ...tokenIdFields(1, 2, 0),
    })
    .superRefine((config, context) => {
      checkLayerCount(context, 'layer_types', config.layer_types, config.num_hidden_layers);
      checkKeyValueHeads(context, config);
    })
    .transform((config): Lfm2Config => {
      // Without full_attn_idxs (or layer_types) every layer is attention.
      const attentionLayers = config.full_attn_idxs ? new Set(config.full_attn_idxs) : null;
      const layerKinds =
        config.layer_types ?? ((i: number) => (!attentionLayers || attentionLayers.has(i) ? 'attention' : 'short_conv'));
      let ffnSize = config.intermediate_size;
      if (config.block_auto_adjust_ff_dim) {
        ffnSize = Math.floor((2 * ffnSize) / 3);
        // HF rounds up to block_multiple_of only inside the multiplier branch
        if (config.block_ffn_dim_multiplier !== null) {
          ffnSize = Math.floor(config.block_ffn_dim_multiplier * ffnSize);
          ffnSize = config.block_multiple_of * Math.ceil(ffnSize / config.block_multiple_of);
        }
      }
      return {
        ...baseConfig(config, 'lfm2', layerKinds, 'dense', config.norm_eps, 'silu'),
        intermediateSize: config.intermediate_size,
        ffnSize,
        // HF's Lfm2 has no head_dim: always hidden_size / num_attention_heads.
        attention: attentionConfig(config, { theta: 1_000_000 }, {
          bias: false,
          headDim: Math.floor(config.hidden_size / config.num_attention_heads),
        }),
        conv: { kernel: config.conv_L_cache, bias: config.conv_bias },
      };
    }),
);
