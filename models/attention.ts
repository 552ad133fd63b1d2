// The plain GQA attention layer of the hybrid families (Bamba, GraniteMoeHybrid): q/k/v/o projections with
// optional bias, optional (partial) RoPE of any type in models/rope.ts or none (NoPE), a family-chosen softmax scale.
import type { AttentionConfig } from './config.ts';
import type { KvSpec } from '../caches/spec.ts';
import type { StepContext } from '../caches/stepContext.ts';
import { linear, rope } from '../dsl/nn/basic.ts';
import { ropeTables } from './rope.ts';
import type { Tensor } from '../dsl/tensor.ts';

const INV_FREQ = 'rope.inv_freq';

/** The KV cache an attention layer with this config needs. */
export function attentionKv(cfg: AttentionConfig): KvSpec {
  return { kvHeads: cfg.numKeyValueHeads, headDim: cfg.headDim };
}

/** The computed constants of the layer (RoPE inverse frequencies), or none for NoPE. */
export function attentionConstants(cfg: AttentionConfig): Record<string, Float32Array> {
  if (!cfg.rope) return {};
  return { [INV_FREQ]: ropeTables(cfg.rope, cfg.maxPositionEmbeddings).invFreq };
}

/**
 * Self-attention on x [S,T,hidden] through layer `layer`'s KV cache; returns o_proj's output [S,T,hidden]
 * (the caller adds the residual). `prefix` is the checkpoint prefix, e.g. `model.layers.3.self_attn.`.
 */
export function attentionLayer(ctx: StepContext, layer: number, cfg: AttentionConfig, hidden: number, x: Tensor, prefix: string): Tensor {
  const { S, T } = ctx;
  const { numHeads: H, numKeyValueHeads: KVH, headDim: D } = cfg;
  const w = (name: string, shape: number[]) => ctx.weight(prefix + name, shape);
  const proj = (name: string, out: number, inp: number, v: Tensor) => linear(v, w(`${name}.weight`, [out, inp]), cfg.bias ? w(`${name}.bias`, [out]) : undefined);
  let q = proj('q_proj', H * D, hidden, x).reshape(S, T, H, D);
  let k = proj('k_proj', KVH * D, hidden, x).reshape(S, T, KVH, D);
  const v = proj('v_proj', KVH * D, hidden, x).reshape(S, T, KVH, D);
  if (cfg.rope) {
    const rotary = cfg.rope.rotaryDim;
    const invFreq = ctx.constant(INV_FREQ, [rotary / 2]);
    const { attentionScaling } = ropeTables(cfg.rope, cfg.maxPositionEmbeddings);
    q = rope(q, ctx.positions, invFreq, rotary, attentionScaling);
    k = rope(k, ctx.positions, invFreq, rotary, attentionScaling);
  }
  const a = ctx.attend(layer, q, k, v, { scale: cfg.scale }); // [S,T,H,D]
  return proj('o_proj', hidden, H * D, a.reshape(S, T, H * D));
}
