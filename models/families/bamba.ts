// Bamba (BambaForCausalLM): Mamba-2 layers with GQA attention at attn_layer_indices (partial RoPE), a SwiGLU MLP
// after every mixer (hybrid-architectures.md §6): its config.json schema (defaults from transformers' BambaConfig;
// HF hard-codes partial_rotary_factor = 0.5 and no attention/MLP bias) and its builder on the shared decoder stack.
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
} from '../configs/common.ts';
import type { ModelDef } from '../model.ts';
import type { LayerMemorySpec } from '../../caches/spec.ts';
import { attentionConstants, attentionKv, attentionLayer } from '../attention.ts';
import { checkpointGatedMlp, decoderStack } from '../decoderStack.ts';
import { mamba2Layer, mamba2States } from './mamba2.ts';

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
    layer_types: hybridLayerTypes('mamba2'),
    ...hybridMamba2Fields,
    ...ropeFields,
    ...tokenIdFields(1, 2, 0),
  })
  .superRefine((config, context) => {
    checkLayerCount(context, 'layer_types', config.layer_types, config.num_hidden_layers);
    checkKeyValueHeads(context, config);
    checkHybridMamba2(context, config);
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
    const layerKinds = config.layer_types ?? ((i: number) => (attentionLayers.has(i) ? 'attention' : 'mamba2'));
    return {
      ...baseConfig(config, 'bamba', layerKinds, 'dense', config.rms_norm_eps, config.hidden_act),
      intermediateSize: config.intermediate_size,
      attention: attentionConfig(config, { theta: 10000, forcePartialRotaryFactor: 0.5 }, { bias: false }),
      mamba: resolveHybridMamba2(config),
    };
  });

export function bamba(config: BambaConfig): ModelDef {
  const { hiddenSize: Hd, intermediateSize: I, layerKinds, attention, mamba: mixer } = config;
  for (const [l, kind] of layerKinds.entries())
    if (kind !== 'attention' && kind !== 'mamba2') throw new Error(`bamba: layer ${l} has kind '${kind}' (attention or mamba2 only)`);
  return decoderStack({
    config,
    names: { finalNorm: 'model.final_layernorm.weight' },
    memory: () =>
      layerKinds.map((kind): LayerMemorySpec => (kind === 'attention' ? { kv: attentionKv(attention), states: [] } : { states: mamba2States(mixer) })),
    constants: attentionConstants(attention),
    block({ ctx, index: l, prefix: p, norm }, h) {
      const x = norm(h, 'input_layernorm');
      h = h.add(
        layerKinds[l] === 'attention'
          ? attentionLayer(ctx, l, attention, Hd, x, `${p}self_attn.`)
          : mamba2Layer(ctx, l, mixer, Hd, x, { prefix: `${p}mamba.`, activation: config.hiddenAct }),
      );
      return h.add(checkpointGatedMlp(ctx, `${p}feed_forward.`, norm(h, 'pre_ff_layernorm'), Hd, I, config.hiddenAct));
    },
  });
}
