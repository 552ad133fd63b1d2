// GraniteMoeHybrid (GraniteMoeHybridForCausalLM, Granite 4.0-H): Mamba-2 and GQA attention layers by layer_types
// (RoPE or NoPE), each followed by a top-k-then-softmax MoE plus a shared SwiGLU expert (or the shared expert
// alone), with muP multipliers on the embeddings, both residual branches, the attention scale and the logits
// (hybrid-architectures.md §7): its config.json schema (num_local_experts = 0 means the shared MLP alone; defaults
// from transformers' GraniteMoeHybridConfig) and its builder on the shared decoder stack.
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
import { activate, linear } from '../../dsl/nn/basic.ts';
import { moe as mixtureOfExperts } from '../../dsl/nn/moe.ts';
import type { Tensor } from '../../dsl/tensor.ts';
import { attentionConstants, attentionKv, attentionLayer } from '../attention.ts';
import { decoderStack } from '../decoderStack.ts';
import { mamba2Layer, mamba2States } from './mamba2.ts';

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

export function granitemoehybrid(config: GraniteMoeHybridConfig): ModelDef {
  const { hiddenSize: Hd, layerKinds, attention, mamba: mixer, moe } = config;
  const { intermediateSize: I, sharedIntermediateSize: Is, residualMultiplier, hiddenAct: act } = config;
  for (const [l, kind] of layerKinds.entries())
    if (kind !== 'attention' && kind !== 'mamba2') throw new Error(`granitemoehybrid: layer ${l} has kind '${kind}' (attention or mamba2 only)`);
  return decoderStack({
    config,
    memory: () =>
      layerKinds.map((kind): LayerMemorySpec => (kind === 'attention' ? { kv: attentionKv(attention), states: [] } : { states: mamba2States(mixer) })),
    constants: attentionConstants(attention),
    embeddingMultiplier: config.embeddingMultiplier,
    block({ ctx, index: l, prefix: p, weight: w, norm }, h) {
      const { S, T } = ctx;
      const x = norm(h, 'input_layernorm');
      const mixed =
        layerKinds[l] === 'attention'
          ? attentionLayer(ctx, l, attention, Hd, x, `${p}self_attn.`) // scale = attention_multiplier
          : mamba2Layer(ctx, l, mixer, Hd, x, { prefix: `${p}mamba.`, activation: act });
      h = h.add(mixed.mul(residualMultiplier));

      const y = norm(h, 'post_attention_layernorm').reshape(S * T, Hd);
      // shared_mlp: input_linear [2 Is, H] -> chunk 2 -> act(first) * second -> output_linear [H, Is]
      const sharedIn = w('shared_mlp.input_linear.weight', [2 * Is, Hd]);
      const sharedOut = w('shared_mlp.output_linear.weight', [Hd, Is]);
      let ffn: Tensor;
      if (moe) {
        const e = 'block_sparse_moe.';
        ffn = mixtureOfExperts(
          y,
          w(`${e}router.layer.weight`, [moe.numExperts, Hd]),
          { gateUp: w(`${e}input_linear.weight`, [moe.numExperts, 2 * I, Hd]), down: w(`${e}output_linear.weight`, [moe.numExperts, Hd, I]) },
          moe.numExpertsPerTok,
          'topk-then-softmax',
          { weights: { gateUp: sharedIn, down: sharedOut } },
          // decode reads only the chosen experts' weights; a multi-token step runs every expert densely
          { strategy: T === 1 ? 'gather' : 'dense', activation: act },
        );
      } else {
        const [gate, up] = linear(y, sharedIn).split(-1, [Is, Is]) as [Tensor, Tensor];
        ffn = linear(activate(gate, act).mul(up), sharedOut);
      }
      return h.add(ffn.reshape(S, T, Hd).mul(residualMultiplier));
    },
    scaleLogits: (logits) => logits.div(config.logitsScaling),
  });
}
