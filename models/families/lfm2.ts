// LFM2 (Lfm2ForCausalLM): gated short-convolution layers and GQA attention with q/k RMSNorms, each followed by a
// SwiGLU MLP. The final norm is named embedding_norm (hybrid-architectures.md §12). Its config.json schema (defaults
// from transformers' Lfm2Config, with its aliases for Liquid's original key names) and its builder on the shared
// decoder stack.
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
} from '../configs/common.ts';
import { decoderStack } from '../decoderStack.ts';
import type { ModelDef } from '../model.ts';
import type { LayerMemorySpec } from '../../caches/spec.ts';
import { gatedMlp, linear, rmsnorm, rope } from '../../dsl/nn/basic.ts';
import { ropeTables } from '../rope.ts';
import { causalConv1d } from '../../dsl/nn/conv.ts';
import type { Tensor } from '../../dsl/tensor.ts';

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

export function lfm2(config: Lfm2Config): ModelDef {
  const { hiddenSize: Hd, ffnSize: I, normEps: eps, layerKinds } = config;
  const { numHeads: H, numKeyValueHeads: KVH, headDim: D, rope: ropeCfg, scale } = config.attention;
  const { kernel: K, bias: convBias } = config.conv;
  if (!ropeCfg) throw new Error('lfm2: attention without a rope');
  const rotary = ropeCfg.rotaryDim;
  const ropeTable = ropeTables(ropeCfg, config.attention.maxPositionEmbeddings);
  for (const [l, kind] of layerKinds.entries())
    if (kind !== 'attention' && kind !== 'short_conv') throw new Error(`lfm2: layer ${l} has kind '${kind}' (attention or short_conv only)`);

  return decoderStack({
    config,
    names: { finalNorm: 'model.embedding_norm.weight' },
    memory: () =>
      layerKinds.map((kind): LayerMemorySpec =>
        kind === 'attention' ? { kv: { kvHeads: KVH, headDim: D }, states: [] } : { states: [{ name: 'conv', shape: [Hd, K - 1] }] },
      ),
    constants: { 'rope.inv_freq': ropeTable.invFreq },
    prepare: (ctx) => ctx.constant('rope.inv_freq', [rotary / 2]),
    block({ ctx, index: l, weight: w, norm }, h, invFreq) {
      const { S, T } = ctx;
      const x = norm(h, 'operator_norm');
      if (layerKinds[l] === 'attention') {
        const headNorm = (t: Tensor, name: string) => rmsnorm(t, w(`self_attn.${name}.weight`, [D]), eps);
        const q = headNorm(linear(x, w('self_attn.q_proj.weight', [H * D, Hd])).reshape(S, T, H, D), 'q_layernorm');
        const k = headNorm(linear(x, w('self_attn.k_proj.weight', [KVH * D, Hd])).reshape(S, T, KVH, D), 'k_layernorm');
        const v = linear(x, w('self_attn.v_proj.weight', [KVH * D, Hd])).reshape(S, T, KVH, D);
        const a = ctx.attend(l, rope(q, ctx.positions, invFreq, rotary, ropeTable.attentionScaling), rope(k, ctx.positions, invFreq, rotary, ropeTable.attentionScaling), v, { scale });
        h = h.add(linear(a.reshape(S, T, H * D), w('self_attn.out_proj.weight', [Hd, H * D])));
      } else {
        const bias = (name: string, size: number) => (convBias ? w(`conv.${name}.bias`, [size]) : undefined);
        // in_proj splits into B | C | x; the conv runs over B*x and C gates its output (no activation)
        const [gateB, gateC, xs] = linear(x, w('conv.in_proj.weight', [3 * Hd, Hd]), bias('in_proj', 3 * Hd)).split(2, [Hd, Hd, Hd]) as [Tensor, Tensor, Tensor];
        const { y, newState } = causalConv1d(gateB.mul(xs), ctx.readState(l, 'conv'), w('conv.conv.weight', [Hd, 1, K]), bias('conv', Hd), ctx.valid);
        ctx.writeState(l, 'conv', newState);
        h = h.add(linear(gateC.mul(y), w('conv.out_proj.weight', [Hd, Hd]), bias('out_proj', Hd)));
      }
      const y = norm(h, 'ffn_norm');
      return h.add(gatedMlp(y, w('feed_forward.w1.weight', [I, Hd]), w('feed_forward.w3.weight', [I, Hd]), w('feed_forward.w2.weight', [Hd, I]), 'silu'));
    },
  });
}
