// Qwen3-Next (Qwen3NextForCausalLM): Gated DeltaNet linear-attention layers with every full_attention_interval-th
// layer a gated full attention (partial RoPE, q/k norms); a MoE with a sigmoid-gated shared expert (or a dense
// MLP) after each mixer. All regular norms are the zero-centred x/rms * (1 + w) (hybrid-architectures.md §11).
// Its config.json schema (defaults from transformers' Qwen3NextConfig) and its builder on the shared decoder stack.
import { z } from 'zod';
import {
  type AttentionConfig,
  type BaseModelConfig,
  attentionConfig,
  baseConfig,
  checkDivides,
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
import { checkpointGatedMlp, decoderStack } from '../decoderStack.ts';
import type { ModelDef } from '../model.ts';
import type { LayerMemorySpec } from '../../caches/spec.ts';
import type { StepContext } from '../../caches/stepContext.ts';
import { linear, rmsnorm, rope } from '../../dsl/nn/basic.ts';
import { ropeTables } from '../rope.ts';
import { causalConv1d } from '../../dsl/nn/conv.ts';
import { gatedDeltaRule, gatedDeltaRuleChunked, repeatHeads } from '../../dsl/nn/deltaRule.ts';
import { gatedRmsNorm } from '../../dsl/nn/mamba2.ts';
import { route } from '../../dsl/nn/moe.ts';
import { Tensor } from '../../dsl/tensor.ts';

export interface GatedDeltaNetConfig {
  numKeyHeads: number;
  numValueHeads: number;
  keyHeadDim: number;
  valueHeadDim: number;
  convKernel: number;
  /** 2 * numKeyHeads * keyHeadDim + numValueHeads * valueHeadDim: channels through the causal conv. */
  convDim: number;
}

export interface Qwen3NextConfig extends BaseModelConfig<'qwen3_next'> {
  /** Width of the dense MLP on layers whose ffnKind is 'dense'. */
  intermediateSize: number;
  /** Full-attention layers: q_proj yields query and a sigmoid output gate per head; q/k RMSNorm; partial RoPE. */
  attention: AttentionConfig;
  linearAttention: GatedDeltaNetConfig;
  moe: {
    numExperts: number;
    numExpertsPerTok: number;
    /** Per-expert MLP width. */
    intermediateSize: number;
    sharedExpertIntermediateSize: number;
    /** Renormalise the top-k softmax weights to sum to 1. */
    normTopkProb: boolean;
  };
}

export const qwen3NextConfigSchema = z
  .looseObject({
    ...coreFields,
    model_type: z.literal('qwen3_next'),
    intermediate_size: withDefault(positiveInt, 5632),
    num_attention_heads: withDefault(positiveInt, 16),
    num_key_value_heads: withDefault(positiveInt, 2),
    head_dim: withDefault(positiveInt, 256),
    hidden_act: withDefault(z.string(), 'silu'),
    max_position_embeddings: withDefault(positiveInt, 32768),
    rms_norm_eps: withDefault(z.number().positive(), 1e-6),
    tie_word_embeddings: withDefault(z.boolean(), false),
    attention_bias: withDefault(z.boolean(), false),
    linear_conv_kernel_dim: withDefault(positiveInt, 4),
    linear_key_head_dim: withDefault(positiveInt, 128),
    linear_value_head_dim: withDefault(positiveInt, 128),
    linear_num_key_heads: withDefault(positiveInt, 16),
    linear_num_value_heads: withDefault(positiveInt, 32),
    decoder_sparse_step: withDefault(positiveInt, 1),
    moe_intermediate_size: withDefault(positiveInt, 512),
    shared_expert_intermediate_size: withDefault(positiveInt, 512),
    num_experts_per_tok: withDefault(nonNegativeInt, 10),
    num_experts: withDefault(nonNegativeInt, 512),
    norm_topk_prob: withDefault(z.boolean(), true),
    mlp_only_layers: withDefault(z.array(nonNegativeInt), []),
    full_attention_interval: withDefault(positiveInt, 4),
    layer_types: layerTypes({
      linear_attention: 'gated_deltanet',
      mamba: 'gated_deltanet',
      full_attention: 'attention',
      attention: 'attention',
    }).nullish(),
    ...ropeFields,
    ...tokenIdFields(null, null, null),
  })
  .superRefine((config, context) => {
    checkLayerCount(context, 'layer_types', config.layer_types, config.num_hidden_layers);
    checkKeyValueHeads(context, config);
    checkDivides(context, 'linear_num_key_heads', config.linear_num_key_heads, 'linear_num_key_heads', config.linear_num_value_heads, 'linear_num_value_heads');
  })
  .transform((config): Qwen3NextConfig => {
    const mlpOnly = new Set(config.mlp_only_layers);
    const keyDim = config.linear_num_key_heads * config.linear_key_head_dim;
    const valueDim = config.linear_num_value_heads * config.linear_value_head_dim;
    const layerKinds =
      config.layer_types ??
      ((i: number) => ((i + 1) % config.full_attention_interval === 0 ? 'attention' : 'gated_deltanet'));
    const ffnKinds = (i: number) =>
      !mlpOnly.has(i) && config.num_experts > 0 && (i + 1) % config.decoder_sparse_step === 0 ? 'moe' : 'dense';
    return {
      ...baseConfig(config, 'qwen3_next', layerKinds, ffnKinds, config.rms_norm_eps, config.hidden_act),
      intermediateSize: config.intermediate_size,
      attention: attentionConfig(config, { theta: 10000, partialRotaryFactor: 0.25 }, { bias: config.attention_bias }),
      linearAttention: {
        numKeyHeads: config.linear_num_key_heads,
        numValueHeads: config.linear_num_value_heads,
        keyHeadDim: config.linear_key_head_dim,
        valueHeadDim: config.linear_value_head_dim,
        convKernel: config.linear_conv_kernel_dim,
        convDim: 2 * keyDim + valueDim,
      },
      moe: {
        numExperts: config.num_experts,
        numExpertsPerTok: config.num_experts_per_tok,
        intermediateSize: config.moe_intermediate_size,
        sharedExpertIntermediateSize: config.shared_expert_intermediate_size,
        normTopkProb: config.norm_topk_prob,
      },
    };
  });

export function qwen3Next(config: Qwen3NextConfig): ModelDef {
  const { hiddenSize: Hd, normEps: eps, layerKinds, ffnKinds, moe } = config;
  const { numHeads: H, numKeyValueHeads: KVH, headDim: D, rope: ropeCfg, scale } = config.attention;
  const { numKeyHeads: Hk, numValueHeads: Hv, keyHeadDim: dk, valueHeadDim: dv, convKernel: K, convDim } = config.linearAttention;
  if (!ropeCfg) throw new Error('qwen3_next: attention without a rope');
  const ropeTable = ropeTables(ropeCfg, config.attention.maxPositionEmbeddings);
  for (const [l, kind] of layerKinds.entries())
    if (kind !== 'attention' && kind !== 'gated_deltanet') throw new Error(`qwen3_next: layer ${l} has kind '${kind}' (attention or gated_deltanet only)`);
  const rotary = ropeCfg.rotaryDim;
  const r = Hv / Hk; // value heads per key head
  const norm = (x: Tensor, weight: Tensor) => rmsnorm(x, weight, eps, 1); // Qwen3NextRMSNorm: (1 + w)

  /** Qwen3NextGatedDeltaNet on the normed input x [S,T,Hd]; reads and writes the layer's conv and delta state. */
  function gatedDeltaNet(ctx: StepContext, l: number, x: Tensor): Tensor {
    const { S, T } = ctx;
    const w = (name: string, shape: number[]) => ctx.weight(`model.layers.${l}.linear_attn.${name}`, shape);
    // Projections are grouped by key head j: [q_j | k_j | v of value heads j r..j r+r-1 | z of the same heads].
    const qkvz = linear(x, w('in_proj_qkvz.weight', [2 * Hk * dk + 2 * Hv * dv, Hd])).reshape(S, T, Hk, 2 * dk + 2 * r * dv);
    const [q, k, v, z] = qkvz.split(-1, [dk, dk, r * dv, r * dv]) as [Tensor, Tensor, Tensor, Tensor];
    const [b, a] = linear(x, w('in_proj_ba.weight', [2 * Hv, Hd])).reshape(S, T, Hk, 2 * r).split(-1, [r, r]) as [Tensor, Tensor];
    // The conv runs over channels [all q | all k | all v].
    const mixed = Tensor.concat([q.reshape(S, T, Hk * dk), k.reshape(S, T, Hk * dk), v.reshape(S, T, Hv * dv)], 2);
    const conv = causalConv1d(mixed, ctx.readState(l, 'conv'), w('conv1d.weight', [convDim, 1, K]), undefined, ctx.valid);
    ctx.writeState(l, 'conv', conv.newState);
    const [qc, kc, vc] = conv.y.silu().split(-1, [Hk * dk, Hk * dk, Hv * dv]) as [Tensor, Tensor, Tensor];
    const beta = b.reshape(S, T, Hv).sigmoid();
    const g = w('A_log', [Hv]).exp().neg().mul(a.reshape(S, T, Hv).add(w('dt_bias', [Hv])).softplus()); // log decay <= 0
    const args = {
      q: repeatHeads(qc.reshape(S, T, Hk, dk), r), // value head h reads key head h // r (repeat_interleave)
      k: repeatHeads(kc.reshape(S, T, Hk, dk), r),
      v: vc.reshape(S, T, Hv, dv),
      g,
      beta,
      S0: ctx.readState(l, 'delta'),
      valid: ctx.valid,
      useQkL2Norm: true,
      chunkSize: 64,
    };
    // Decode is HF's recurrent rule; a multi-token step is the chunked form continued from the stored state.
    const rule = T === 1 ? gatedDeltaRule(args) : gatedDeltaRuleChunked(args);
    ctx.writeState(l, 'delta', rule.ST);
    // Qwen3NextRMSNormGated per value head: plain weight, norm before the silu(z) gate.
    const o = gatedRmsNorm(rule.o, z.reshape(S, T, Hv, dv), w('norm.weight', [dv]), 1, eps, true);
    return linear(o.reshape(S, T, Hv * dv), w('out_proj.weight', [Hd, Hv * dv]));
  }

  /** Qwen3NextAttention: q_proj yields [query_h | gate_h] per head; q/k norms before partial RoPE; sigmoid output gate. */
  function attention(ctx: StepContext, l: number, x: Tensor, invFreq: Tensor): Tensor {
    const { S, T } = ctx;
    const w = (name: string, shape: number[]) => ctx.weight(`model.layers.${l}.self_attn.${name}`, shape);
    const bias = (n: string, size: number) => (config.attention.bias ? w(`${n}.bias`, [size]) : undefined);
    const [query, gate] = linear(x, w('q_proj.weight', [2 * H * D, Hd]), bias('q_proj', 2 * H * D)).reshape(S, T, H, 2 * D).split(-1, [D, D]) as [Tensor, Tensor];
    const q = norm(query, w('q_norm.weight', [D]));
    const k = norm(linear(x, w('k_proj.weight', [KVH * D, Hd]), bias('k_proj', KVH * D)).reshape(S, T, KVH, D), w('k_norm.weight', [D]));
    const v = linear(x, w('v_proj.weight', [KVH * D, Hd]), bias('v_proj', KVH * D)).reshape(S, T, KVH, D);
    const att = ctx.attend(l, rope(q, ctx.positions, invFreq, rotary, ropeTable.attentionScaling), rope(k, ctx.positions, invFreq, rotary, ropeTable.attentionScaling), v, { scale });
    return linear(att.mul(gate.sigmoid()).reshape(S, T, H * D), w('o_proj.weight', [Hd, H * D]), bias('o_proj', Hd));
  }

  /**
   * Qwen3NextSparseMoeBlock: softmax over all experts (f32), top-k, renormalised when norm_topk_prob; plus the
   * shared expert scaled by sigmoid(shared_expert_gate x). Experts are read by their checkpoint names
   * (experts.{e}.*) and evaluated densely, each weighted by its routing weight (zero when not chosen): exact,
   * and cheap for few experts; a many-expert checkpoint wants stacked weights and dsl/nn/moe.ts's gather path.
   */
  function sparseMoe(ctx: StepContext, l: number, y: Tensor): Tensor {
    const [S, T] = [ctx.S, ctx.T];
    const p = `model.layers.${l}.mlp.`;
    const w = (name: string, shape: number[]) => ctx.weight(p + name, shape);
    const x = y.reshape(S * T, Hd);
    const { dense } = route(linear(x, w('gate.weight', [moe.numExperts, Hd])), moe.numExpertsPerTok, 'softmax-then-topk', moe.normTopkProb); // [N,E]
    const I = moe.intermediateSize;
    const expert = (q: string, width: number) => checkpointGatedMlp(ctx, p + q, x, Hd, width, config.hiddenAct);
    let out = expert('experts.0.', I).mul(dense.slice(1, 0, 1));
    for (let e = 1; e < moe.numExperts; e++) out = out.add(expert(`experts.${e}.`, I).mul(dense.slice(1, e, e + 1)));
    const shared = expert('shared_expert.', moe.sharedExpertIntermediateSize).mul(linear(x, w('shared_expert_gate.weight', [1, Hd])).sigmoid());
    return out.add(shared).reshape(S, T, Hd);
  }

  return decoderStack({
    config,
    norm,
    memory: () =>
      layerKinds.map(
        (kind): LayerMemorySpec =>
          kind === 'attention'
            ? { kv: { kvHeads: KVH, headDim: D }, states: [] }
            : {
                states: [
                  { name: 'conv', shape: [convDim, K - 1] }, // the last K-1 conv inputs, oldest first
                  { name: 'delta', shape: [Hv, dk, dv] }, // the delta-rule state S per value head
                ],
              },
      ),
    constants: { 'rope.inv_freq': ropeTable.invFreq },
    prepare: (ctx) => ctx.constant('rope.inv_freq', [rotary / 2]),
    block({ ctx, index: l, prefix: p, norm: layerNorm }, h, invFreq) {
      const x = layerNorm(h, 'input_layernorm');
      h = h.add(layerKinds[l] === 'attention' ? attention(ctx, l, x, invFreq) : gatedDeltaNet(ctx, l, x));
      const y = layerNorm(h, 'post_attention_layernorm');
      return h.add(ffnKinds[l] === 'moe' ? sparseMoe(ctx, l, y) : checkpointGatedMlp(ctx, `${p}mlp.`, y, Hd, config.intermediateSize, config.hiddenAct));
    },
  });
}
