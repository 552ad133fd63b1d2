// LlamaForCausalLM config.json: the plain-transformer baseline (GQA attention, RoPE, SwiGLU MLP).
// Defaults from transformers' LlamaConfig.

import { z } from 'zod';
import {
  type AttentionConfig,
  type BaseModelConfig,
  checkDivides,
  coreFields,
  eosTokenIds,
  positiveInt,
  resolveRope,
  ropeFields,
  tokenId,
  withDefault,
} from './common.ts';

export interface LlamaConfig extends BaseModelConfig<'llama'> {
  intermediateSize: number;
  mlpBias: boolean;
  attention: AttentionConfig;
}

export const llamaConfigSchema = z
  .looseObject({
    ...coreFields,
    model_type: z.literal('llama'),
    intermediate_size: withDefault(positiveInt, 11008),
    num_attention_heads: withDefault(positiveInt, 32),
    num_key_value_heads: positiveInt.nullish(),
    head_dim: positiveInt.nullish(),
    hidden_act: withDefault(z.string(), 'silu'),
    max_position_embeddings: withDefault(positiveInt, 2048),
    rms_norm_eps: withDefault(z.number().positive(), 1e-6),
    tie_word_embeddings: withDefault(z.boolean(), false),
    attention_bias: withDefault(z.boolean(), false),
    mlp_bias: withDefault(z.boolean(), false),
    bos_token_id: tokenId(1),
    eos_token_id: eosTokenIds(2),
    pad_token_id: tokenId(null),
    ...ropeFields,
  })
  .superRefine((config, context) => {
    const kvHeads = config.num_key_value_heads ?? config.num_attention_heads;
    checkDivides(context, 'num_key_value_heads', kvHeads, 'num_key_value_heads', config.num_attention_heads, 'num_attention_heads');
  })
  .transform((config): LlamaConfig => {
    const headDim = config.head_dim ?? Math.floor(config.hidden_size / config.num_attention_heads);
    return {
      modelType: 'llama',
      vocabSize: config.vocab_size,
      hiddenSize: config.hidden_size,
      numLayers: config.num_hidden_layers,
      layerKinds: Array(config.num_hidden_layers).fill('attention'),
      ffnKinds: Array(config.num_hidden_layers).fill('dense'),
      tieWordEmbeddings: config.tie_word_embeddings,
      bosTokenId: config.bos_token_id,
      eosTokenIds: config.eos_token_id,
      padTokenId: config.pad_token_id,
      hiddenAct: config.hidden_act,
      normEps: config.rms_norm_eps,
      raw: config,
      intermediateSize: config.intermediate_size,
      mlpBias: config.mlp_bias,
      attention: {
        numHeads: config.num_attention_heads,
        numKeyValueHeads: config.num_key_value_heads ?? config.num_attention_heads,
        headDim,
        bias: config.attention_bias,
        scale: headDim ** -0.5,
        rope: resolveRope(config, headDim, { theta: 10000 }),
        maxPositionEmbeddings: config.max_position_embeddings,
      },
    };
  });
