// Llama (LlamaForCausalLM): GQA attention with RoPE and a SwiGLU MLP, the plain-transformer baseline: its
// config.json schema (defaults from transformers' LlamaConfig) and its builder on the shared decoder stack.
import { z } from 'zod';
import {
  type AttentionConfig,
  type BaseModelConfig,
  attentionConfig,
  baseConfig,
  checkKeyValueHeads,
  coreFields,
  positiveInt,
  ropeFields,
  tokenIdFields,
  withDefault,
} from '../configs/common.ts';
import { attentionConstants, attentionKv, attentionLayer } from '../attention.ts';
import { checkpointGatedMlp, decoderStack } from '../decoderStack.ts';
import type { ModelDef } from '../model.ts';

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
    ...tokenIdFields(1, 2, null),
    ...ropeFields,
  })
  .superRefine((config, context) => checkKeyValueHeads(context, config))
  .transform(
    (config): LlamaConfig => ({
      ...baseConfig(config, 'llama', 'attention', 'dense', config.rms_norm_eps, config.hidden_act),
      intermediateSize: config.intermediate_size,
      mlpBias: config.mlp_bias,
      attention: attentionConfig(config, { theta: 10000 }, { bias: config.attention_bias }),
    }),
  );

export function llama(config: LlamaConfig): ModelDef {
  const { hiddenSize: Hd, intermediateSize: I, attention } = config;
  return decoderStack({
    config,
    memory: () => Array.from({ length: config.numLayers }, () => ({ kv: attentionKv(attention), states: [] })),
    constants: attentionConstants(attention),
    block(layer, h) {
      h = h.add(attentionLayer(layer.ctx, layer.index, attention, Hd, layer.norm(h, 'input_layernorm'), `${layer.prefix}self_attn.`));
      return h.add(checkpointGatedMlp(layer.ctx, `${layer.prefix}mlp.`, layer.norm(h, 'post_attention_layernorm'), Hd, I, config.hiddenAct));
    },
  });
}
