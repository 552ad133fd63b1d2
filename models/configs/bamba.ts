// BambaForCausalLM config.json: Mamba-2 layers with attention at attn_layer_indices, SwiGLU MLP in every layer.
// Defaults from transformers' BambaConfig; HF hard-codes partial_rotary_factor = 0.5 and no attention/MLP bias.

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

export interface BambaConfig extends BaseModelConfig<'bamba'> {
  intermediateSize: number;
  attention: AttentionConfig;
  mamba: Mamba2MixerConfig;
}

export const bambaConfigSchema = z
  .looseObject({
    ...coreFields,
    model_type: z.literal('bamba'),
    intermediate_size: withDefault(positiveInt, 14336),
    num_attention_heads: withDefault(positiveInt, 32),
    num_key_value_heads: withDefault(positiveInt, 8),
    head_dim: positiveInt.nullish(),
    hidden_act: withDefault(z.string(), 'silu'),
    rms_norm_eps: withDefault(z.number().positive(), 1e-5),
    max_position_embeddings: withDefault(positiveInt, 262144),
    tie_word_embeddings: withDefault(z.boolean(), false),
    attn_layer_indices: z.array(nonNegativeInt).nullish(),
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
    pad_token_id: tokenId(0),
  })
  .superRefine((config, context) => {
    checkLayerCount(context, 'layer_types', config.layer_types, config.num_hidden_layers);
    checkDivides(context, 'num_key_value_heads', config.num_key_value_heads, 'num_key_value_heads', config.num_attention_heads, 'num_attention_heads');
    checkHybridMamba2(context, config, config.mamba_expand * config.hidden_size);
    for (const [position, index] of (config.attn_layer_indices ?? []).entries()) {
      if (index >= config.num_hidden_layers) {
        context.addIssue({
          code: 'custom',
          path: ['attn_layer_indices', position],
          message: `layer ${index} does not exist (num_hidden_layers = ${config.num_hidden_layers})`,
        });
      }
    }
  })
  .transform((config): BambaConfig => {
    const attentionLayers = new Set(config.attn_layer_indices ?? []);
    const headDim = config.head_dim ?? Math.floor(config.hidden_size / config.num_attention_heads);
    return {
      modelType: 'bamba',
      vocabSize: config.vocab_size,
      hiddenSize: config.hidden_size,
      numLayers: config.num_hidden_layers,
      layerKinds:
        config.layer_types ??
        [...Array(config.num_hidden_layers).keys()].map((i) => (attentionLayers.has(i) ? 'attention' : 'mamba2')),
      ffnKinds: Array(config.num_hidden_layers).fill('dense'),
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
        rope: resolveRope(config, headDim, { theta: 10000, forcePartialRotaryFactor: 0.5 }),
        maxPositionEmbeddings: config.max_position_embeddings,
      },
      mamba: resolveHybridMamba2(config, config.mamba_expand * config.hidden_size, config.rms_norm_eps),
    };
  });
