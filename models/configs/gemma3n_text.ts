// Gemma3nForCausalLM (text decoder) config.json: sliding-window + full attention, the last layers reading an
// earlier layer's KV cache, AltUp, LAuReL and per-layer inputs. Defaults from transformers' Gemma3nTextConfig.

import { z } from 'zod';
import {
  type AttentionConfig,
  type BaseModelConfig,
  type RopeConfig,
  attentionConfig,
  baseConfig,
  checkLayerCount,
  coreFields,
  layerTypes,
  nonNegativeInt,
  positiveInt,
  resolveRope,
  tokenIdFields,
  withDefault,
} from './common.ts';

export type KvSharingRole = 'independent' | 'producer' | 'consumer';

export interface Gemma3nTextConfig extends BaseModelConfig<'gemma3n_text'> {
  /** MLP width per layer. */
  intermediateSizes: number[];
  /** Shared by both attention kinds; `scale` is 1 (q and k are RMS-normed); `rope` is the full-attention RoPE. */
  attention: AttentionConfig;
  /** RoPE of 'sliding_attention' layers. */
  slidingRope: RopeConfig;
  slidingWindow: number;
  /** logits = tanh(logits / cap) * cap; null: no capping. */
  finalLogitSoftcapping: number | null;
  kvSharing: {
    numSharedLayers: number;
    roles: KvSharingRole[];
    /** The layer whose K/V each layer attends over: itself, or for a consumer the last earlier layer of its kind. */
    sourceLayer: number[];
  };
  perLayerInput: { vocabSize: number; hiddenSize: number };
  altup: { activeIndex: number; coefClip: number | null; correctScale: boolean; numInputs: number };
  laurelRank: number;
  /** Per layer: the fraction of MLP activations zeroed by the gaussian top-k (0 = dense). */
  activationSparsity: number[];
}

const ropeParameterSet = z.looseObject({
  rope_theta: z.number().positive().nullish(),
  rope_type: z.string().nullish(),
  type: z.string().nullish(),
  partial_rotary_factor: z.number().gt(0).lte(1).nullish(),
});

export const gemma3nTextConfigSchema = z
  .looseObject({
    ...coreFields,
    model_type: z.literal('gemma3n_text'),
    intermediate_size: withDefault(z.union([positiveInt, z.array(positiveInt)]), 16384),
    num_attention_heads: withDefault(positiveInt, 8),
    num_key_value_heads: withDefault(positiveInt, 2),
    head_dim: withDefault(positiveInt, 256),
    hidden_activation: withDefault(z.string(), 'gelu_pytorch_tanh'),
    max_position_embeddings: withDefault(positiveInt, 32768),
    rms_norm_eps: withDefault(z.number().positive(), 1e-6),
    tie_word_embeddings: withDefault(z.boolean(), true),
    attention_bias: withDefault(z.boolean(), false),
    sliding_window: withDefault(positiveInt, 512),
    layer_types: layerTypes({
      sliding_attention: 'sliding_attention',
      full_attention: 'attention',
      attention: 'attention',
    }).nullish(),
    final_logit_softcapping: z.number().positive().nullable().default(30),
    // transformers 4: rope_theta (full), rope_local_base_freq (sliding), rope_scaling (full only).
    rope_theta: z.number().positive().nullish(),
    rope_local_base_freq: z.number().positive().nullish(),
    rope_scaling: z.record(z.string(), z.unknown()).nullish(),
    // transformers 5: {full_attention: {...}, sliding_attention: {...}} (a flat set applies to full attention).
    rope_parameters: ropeParameterSet
      .extend({ full_attention: ropeParameterSet.nullish(), sliding_attention: ropeParameterSet.nullish() })
      .nullish(),
    vocab_size_per_layer_input: withDefault(positiveInt, 262144),
    hidden_size_per_layer_input: withDefault(positiveInt, 256),
    altup_active_idx: withDefault(nonNegativeInt, 0),
    altup_coef_clip: z.number().positive().nullable().default(120),
    altup_correct_scale: withDefault(z.boolean(), true),
    altup_num_inputs: withDefault(positiveInt, 4),
    num_kv_shared_layers: withDefault(nonNegativeInt, 15),
    laurel_rank: withDefault(positiveInt, 64),
    activation_sparsity_pattern: z.union([z.number().min(0).lt(1), z.array(z.number().min(0).lt(1))]).nullish(),
    ...tokenIdFields(2, 1, 0),
  })
  .superRefine((config, context) => {
    checkLayerCount(context, 'layer_types', config.layer_types, config.num_hidden_layers);
    if (Array.isArray(config.intermediate_size)) {
      checkLayerCount(context, 'intermediate_size', config.intermediate_size, config.num_hidden_layers);
    }
    if (Array.isArray(config.activation_sparsity_pattern)) {
      checkLayerCount(context, 'activation_sparsity_pattern', config.activation_sparsity_pattern, config.num_hidden_layers);
    }
    if (config.num_kv_shared_layers >= config.num_hidden_layers) {
      context.addIssue({
        code: 'custom',
        path: ['num_kv_shared_layers'],
        message: `${config.num_kv_shared_layers} leaves no layer to produce KV (num_hidden_layers = ${config.num_hidden_layers})`,
      });
    }
  })
  .transform((config, context): Gemma3nTextConfig => {
    const count = config.num_hidden_layers;
    const layers = [...Array(count).keys()];
    const layerKinds = config.layer_types ?? layers.map((i) => ((i + 1) % 5 === 0 ? 'attention' : 'sliding_attention'));

    const parameters = config.rope_parameters ?? {};
    const { full_attention: fullParameters, sliding_attention: slidingParameters, ...flatParameters } = parameters;
    const headDim = config.head_dim;
    const rope = resolveRope(
      {
        rope_theta: config.rope_theta,
        rope_scaling: config.rope_scaling,
        rope_parameters: fullParameters ?? (Object.keys(flatParameters).length > 0 ? flatParameters : null),
      },
      headDim,
      { theta: 1_000_000 },
    );
    const slidingRope = resolveRope(
      { rope_theta: config.rope_local_base_freq, rope_parameters: slidingParameters },
      headDim,
      { theta: 10_000 },
    );

    // KV sharing as Gemma3nTextConfig.kv_sharing_roles: per kind, layers from first_shared on consume the last
    // earlier layer of their kind.
    const firstShared = count - config.num_kv_shared_layers;
    const roles: KvSharingRole[] = Array(count).fill('independent');
    const sourceLayer = [...layers];
    for (const kind of ['attention', 'sliding_attention'] as const) {
      const ofKind = layers.filter((i) => layerKinds[i] === kind);
      const consumers = ofKind.filter((i) => i >= firstShared);
      if (consumers.length === 0) continue;
      const producers = ofKind.filter((i) => i < firstShared);
      if (producers.length === 0) {
        context.addIssue({
          code: 'custom',
          path: ['num_kv_shared_layers'],
          message: `layer ${consumers[0]} (${kind}) shares KV but no earlier ${kind} layer produces it`,
        });
        return z.NEVER;
      }
      const producer = producers[producers.length - 1]!;
      roles[producer] = 'producer';
      for (const consumer of consumers) {
        roles[consumer] = 'consumer';
        sourceLayer[consumer] = producer;
      }
    }

    const sparsity = config.activation_sparsity_pattern;
    const sparseLayers = count > 10 ? 10 : 0;
    return {
      ...baseConfig(config, 'gemma3n_text', layerKinds, 'dense', config.rms_norm_eps, config.hidden_activation),
      intermediateSizes: Array.isArray(config.intermediate_size)
        ? config.intermediate_size
        : Array(count).fill(config.intermediate_size),
      attention: attentionConfig(config, () => rope, { bias: config.attention_bias, scale: 1 }),
      slidingRope,
      slidingWindow: config.sliding_window,
      finalLogitSoftcapping: config.final_logit_softcapping,
      kvSharing: { numSharedLayers: config.num_kv_shared_layers, roles, sourceLayer },
      perLayerInput: { vocabSize: config.vocab_size_per_layer_input, hiddenSize: config.hidden_size_per_layer_input },
      altup: {
        activeIndex: config.altup_active_idx,
        coefClip: config.altup_coef_clip,
        correctScale: config.altup_correct_scale,
        numInputs: config.altup_num_inputs,
      },
      laurelRank: config.laurel_rank,
      activationSparsity: Array.isArray(sparsity)
        ? sparsity
        : typeof sparsity === 'number'
          ? Array(count).fill(sparsity)
          : layers.map((i) => (i < sparseLayers ? 0.95 : 0)),
    };
  });
