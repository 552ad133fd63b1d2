// Jamba (JambaForCausalLM): Mamba-1 mixers (with dt/B/C RMSNorms) and, every attn_layer_period layers, GQA
// attention without positional encoding; after every mixer a SwiGLU MLP or, every expert_layer_period layers, a
// mixture of experts routed by softmax over all experts then top-k, without renormalisation: its config.json schema
// (defaults from transformers' JambaConfig) and its builder on the shared decoder stack.
import { z } from 'zod';
import {
  type AttentionConfig,
  type BaseModelConfig,
  type Mamba1MixerConfig,
  attentionConfig,
  baseConfig,
  checkKeyValueHeads,
  checkLayerCount,
  coreFields,
  hybridLayerTypes,
  nonNegativeInt,
  positiveInt,
  tokenIdFields,
  withDefault,
} from '../configs/common.ts';
import type { ModelDef } from '../model.ts';
import { attentionKv, attentionLayer } from '../attention.ts';
import { checkpointGatedMlp, decoderStack } from '../decoderStack.ts';
import { mamba1Layer, mamba1States } from './mamba.ts';
import { linear } from '../../dsl/nn/basic.ts';
import { route, topkProbabilityColumns } from '../../dsl/nn/moe.ts';
import { kernelOptions } from '../../caches/stepContext.ts';
import type { Tensor } from '../../dsl/tensor.ts';

export interface JambaConfig extends BaseModelConfig<'jamba'> {
  intermediateSize: number;
  /** Jamba attention has no positional encoding: `attention.rope` is null. */
  attention: AttentionConfig;
  mamba: Mamba1MixerConfig;
  /** Softmax over all experts, then top-k without renormalisation. */
  moe: { numExperts: number; numExpertsPerTok: number };
}

export const jambaConfigSchema = z
  .looseObject({
    ...coreFields,
    model_type: z.literal('jamba'),
    intermediate_size: withDefault(positiveInt, 14336),
    num_attention_heads: withDefault(positiveInt, 32),
    num_key_value_heads: withDefault(positiveInt, 8),
    head_dim: positiveInt.nullish(),
    hidden_act: withDefault(z.string(), 'silu'),
    rms_norm_eps: withDefault(z.number().positive(), 1e-6),
    max_position_embeddings: withDefault(positiveInt, 262144),
    tie_word_embeddings: withDefault(z.boolean(), false),
    num_experts: positiveInt.nullish(),
    num_local_experts: positiveInt.nullish(), // attribute_map alias of num_experts
    num_experts_per_tok: withDefault(positiveInt, 2),
    expert_layer_period: withDefault(positiveInt, 2),
    expert_layer_offset: withDefault(nonNegativeInt, 1),
    attn_layer_period: withDefault(positiveInt, 8),
    attn_layer_offset: withDefault(nonNegativeInt, 4),
    layer_types: hybridLayerTypes('mamba'),
    mamba_d_state: withDefault(positiveInt, 16),
    mamba_d_conv: withDefault(positiveInt, 4),
    mamba_expand: withDefault(positiveInt, 2),
    mamba_dt_rank: withDefault(z.union([positiveInt, z.literal('auto')]), 'auto'),
    mamba_conv_bias: withDefault(z.boolean(), true),
    mamba_proj_bias: withDefault(z.boolean(), false),
    ...tokenIdFields(1, 2, 0),
  })
  .superRefine((config, context) => {
    checkLayerCount(context, 'layer_types', config.layer_types, config.num_hidden_layers);
    checkKeyValueHeads(context, config);
    for (const [offset, period] of [
      ['attn_layer_offset', 'attn_layer_period'],
      ['expert_layer_offset', 'expert_layer_period'],
    ] as const) {
      if (config[offset] >= config[period]) {
        context.addIssue({ code: 'custom', path: [offset], message: `${offset} = ${config[offset]} must be < ${period} = ${config[period]}` });
      }
    }
  })
  .transform((config): JambaConfig => {
    const numExperts = config.num_experts ?? config.num_local_experts ?? 16;
    const layerKinds =
      config.layer_types ??
      ((i: number) => (i % config.attn_layer_period === config.attn_layer_offset ? 'attention' : 'mamba'));
    const ffnKinds = (i: number) =>
      i % config.expert_layer_period === config.expert_layer_offset && numExperts > 1 ? 'moe' : 'dense';
    return {
      ...baseConfig(config, 'jamba', layerKinds, ffnKinds, config.rms_norm_eps, config.hidden_act),
      intermediateSize: config.intermediate_size,
      attention: attentionConfig(config, null, { bias: false }),
      mamba: {
        innerSize: config.mamba_expand * config.hidden_size,
        stateSize: config.mamba_d_state,
        convKernel: config.mamba_d_conv,
        dtRank: config.mamba_dt_rank === 'auto' ? Math.ceil(config.hidden_size / 16) : config.mamba_dt_rank,
        convBias: config.mamba_conv_bias,
        projBias: config.mamba_proj_bias,
        dtBcNorms: true,
      },
      moe: { numExperts, numExpertsPerTok: config.num_experts_per_tok },
    };
  });

export function jamba(config: JambaConfig): ModelDef {
  const { hiddenSize: Hd, intermediateSize: I, normEps: eps, mamba: mixer, moe } = config;
  if (config.attention.rope) throw new Error('jamba: attention has no positional encoding, but the config resolved a rope');
  const E = moe.numExperts;
  return decoderStack({
    config,
    names: { finalNorm: 'model.final_layernorm.weight' },
    memory: () =>
      config.layerKinds.map((kind) => (kind === 'attention' ? { kv: attentionKv(config.attention), states: [] } : { states: mamba1States(mixer) })),
    block({ ctx, index: l, prefix: p, weight, norm }, h) {
      const { S, T } = ctx;
      const mlp = (x: Tensor, prefix: string) => checkpointGatedMlp(ctx, prefix, x, Hd, I, config.hiddenAct);
      const x = norm(h, 'input_layernorm');
      h = h.add(
        config.layerKinds[l] === 'attention'
          ? attentionLayer(ctx, l, config.attention, Hd, x, `${p}self_attn.`)
          : mamba1Layer(ctx, l, mixer, Hd, x, { prefix: `${p}mamba.`, activation: config.hiddenAct, normEps: eps }),
      );
      const y = norm(h, 'pre_ff_layernorm');
      const ff = `${p}feed_forward.`;
      if (config.ffnKinds[l] !== 'moe') return h.add(mlp(y, ff));
      const tokens = y.reshape(S * T, Hd);
      const logits = linear(tokens, weight('feed_forward.router.weight', [E, Hd])); // [S*T,E]
      const dense = kernelOptions.rankRouting ? undefined : route(logits, moe.numExpertsPerTok, 'softmax-then-topk').dense;
      const chosen = dense ? Array.from({ length: E }, (_, e) => dense.slice(1, e, e + 1)) : topkProbabilityColumns(logits, moe.numExpertsPerTok); // E x [S*T,1]
      // Every expert runs on every token, unselected ones weighted 0: the checkpoint keeps one tensor per expert
      // and dsl/nn/moe.ts's gather strategy wants them stacked [E, out, in]. The routing weights inline into the
      // down projections' kernel, so the router logits' matvec shares a dispatch with the experts' gate/up.
      let experts = mlp(tokens, `${ff}experts.0.`).mul(chosen[0]!);
      for (let e = 1; e < E; e++) experts = experts.add(mlp(tokens, `${ff}experts.${e}.`).mul(chosen[e]!));
      return h.add(experts.reshape(S, T, Hd));
    },
  });
}
