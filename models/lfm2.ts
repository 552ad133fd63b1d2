// LFM2 (Lfm2ForCausalLM): gated short-convolution layers and GQA attention with q/k RMSNorms, each followed by a
// SwiGLU MLP. The final norm is named embedding_norm (hybrid-architectures.md §12).
import type { Lfm2Config } from './config.ts';
import type { ModelDef } from './model.ts';
import type { LayerMemorySpec } from '../caches/spec.ts';
import type { StepContext } from '../caches/stepContext.ts';
import { gatedMlp, linear, rmsnorm, rope } from '../dsl/nn/basic.ts';
import { ropeTables } from './rope.ts';
import { causalConv1d } from '../dsl/nn/conv.ts';
import type { Tensor } from '../dsl/tensor.ts';

export function lfm2(config: Lfm2Config): ModelDef {
  const { hiddenSize: Hd, numLayers, vocabSize: V, ffnSize: I, normEps: eps, layerKinds } = config;
  const { numHeads: H, numKeyValueHeads: KVH, headDim: D, rope: ropeCfg, scale } = config.attention;
  const { kernel: K, bias: convBias } = config.conv;
  if (!ropeCfg) throw new Error('lfm2: attention without a rope');
  const rotary = ropeCfg.rotaryDim;
  const ropeTable = ropeTables(ropeCfg, config.attention.maxPositionEmbeddings);
  for (const [l, kind] of layerKinds.entries())
    if (kind !== 'attention' && kind !== 'short_conv') throw new Error(`lfm2: layer ${l} has kind '${kind}' (attention or short_conv only)`);

  return {
    family: 'lfm2',
    vocabSize: V,
    hiddenSize: Hd,
    eosTokenIds: config.eosTokenIds,
    memory: () =>
      layerKinds.map((kind): LayerMemorySpec =>
        kind === 'attention' ? { kv: { kvHeads: KVH, headDim: D }, states: [] } : { states: [{ name: 'conv', shape: [Hd, K - 1] }] },
      ),
    constants: () => ({ 'rope.inv_freq': ropeTable.invFreq }),
    forward(ctx: StepContext): Tensor {
      const { S, T } = ctx;
      const w = (name: string, shape: number[]) => ctx.weight(name, shape);
      const invFreq = ctx.constant('rope.inv_freq', [rotary / 2]);
      let h = w('model.embed_tokens.weight', [V, Hd]).gather(ctx.tokens); // [S,T,Hd]
      for (let l = 0; l < numLayers; l++) {
        const p = `model.layers.${l}.`;
        const x = rmsnorm(h, w(`${p}operator_norm.weight`, [Hd]), eps);
        if (layerKinds[l] === 'attention') {
          const headNorm = (t: Tensor, name: string) => rmsnorm(t, w(`${p}self_attn.${name}.weight`, [D]), eps);
          const q = headNorm(linear(x, w(`${p}self_attn.q_proj.weight`, [H * D, Hd])).reshape(S, T, H, D), 'q_layernorm');
          const k = headNorm(linear(x, w(`${p}self_attn.k_proj.weight`, [KVH * D, Hd])).reshape(S, T, KVH, D), 'k_layernorm');
          const v = linear(x, w(`${p}self_attn.v_proj.weight`, [KVH * D, Hd])).reshape(S, T, KVH, D);
          const a = ctx.attend(l, rope(q, ctx.positions, invFreq, rotary, ropeTable.attentionScaling), rope(k, ctx.positions, invFreq, rotary, ropeTable.attentionScaling), v, { scale });
          h = h.add(linear(a.reshape(S, T, H * D), w(`${p}self_attn.out_proj.weight`, [Hd, H * D])));
        } else {
          const bias = (name: string, size: number) => (convBias ? w(`${p}conv.${name}.bias`, [size]) : undefined);
          // in_proj splits into B | C | x; the conv runs over B*x and C gates its output (no activation)
          const [gateB, gateC, xs] = linear(x, w(`${p}conv.in_proj.weight`, [3 * Hd, Hd]), bias('in_proj', 3 * Hd)).split(2, [Hd, Hd, Hd]) as [Tensor, Tensor, Tensor];
          const { y, newState } = causalConv1d(gateB.mul(xs), ctx.readState(l, 'conv'), w(`${p}conv.conv.weight`, [Hd, 1, K]), bias('conv', Hd), ctx.valid);
          ctx.writeState(l, 'conv', newState);
          h = h.add(linear(gateC.mul(y), w(`${p}conv.out_proj.weight`, [Hd, Hd]), bias('out_proj', Hd)));
        }
        const y = rmsnorm(h, w(`${p}ffn_norm.weight`, [Hd]), eps);
        h = h.add(gatedMlp(y, w(`${p}feed_forward.w1.weight`, [I, Hd]), w(`${p}feed_forward.w3.weight`, [I, Hd]), w(`${p}feed_forward.w2.weight`, [Hd, I]), 'silu'));
      }
      return rmsnorm(h, w('model.embedding_norm.weight', [Hd]), eps);
    },
    logits(ctx, hidden) {
      return linear(hidden, ctx.weight(config.tieWordEmbeddings ? 'model.embed_tokens.weight' : 'lm_head.weight', [V, Hd]));
    },
  };
}
