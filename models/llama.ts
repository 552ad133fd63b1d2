// Llama (LlamaForCausalLM): GQA attention with RoPE and a SwiGLU MLP. The plain-transformer baseline.
import type { LlamaConfig } from './config.ts';
import type { ModelDef } from './model.ts';
import type { StepContext } from '../caches/stepContext.ts';
import { gatedMlp, linear, rmsnorm, rope, ropeInvFreq } from '../dsl/nn/basic.ts';
import type { Tensor } from '../dsl/tensor.ts';

export function llama(config: LlamaConfig): ModelDef {
  const { hiddenSize: Hd, numLayers, vocabSize: V, intermediateSize: I, normEps: eps } = config;
  const { numHeads: H, numKeyValueHeads: KVH, headDim: D, rope: ropeCfg, scale } = config.attention;
  if (!ropeCfg || ropeCfg.type !== 'default') throw new Error(`llama: rope type '${ropeCfg?.type}' is not supported yet (default only)`);
  const rotary = ropeCfg.rotaryDim;
  return {
    family: 'llama',
    vocabSize: V,
    hiddenSize: Hd,
    eosTokenIds: config.eosTokenIds,
    memory: () => Array.from({ length: numLayers }, () => ({ kv: { kvHeads: KVH, headDim: D }, states: [] })),
    constants: () => ({ 'rope.inv_freq': ropeInvFreq(rotary, ropeCfg.theta) }),
    forward(ctx: StepContext): Tensor {
      const { S, T } = ctx;
      const w = (name: string, shape: number[]) => ctx.weight(name, shape);
      const invFreq = ctx.constant('rope.inv_freq', [rotary / 2]);
      let h = w('model.embed_tokens.weight', [V, Hd]).gather(ctx.tokens); // [S,T,Hd]
      for (let l = 0; l < numLayers; l++) {
        const p = `model.layers.${l}.`;
        const x = rmsnorm(h, w(`${p}input_layernorm.weight`, [Hd]), eps);
        const bias = (n: string, size: number) => (config.attention.bias ? w(`${p}self_attn.${n}.bias`, [size]) : undefined);
        const q = linear(x, w(`${p}self_attn.q_proj.weight`, [H * D, Hd]), bias('q_proj', H * D)).reshape(S, T, H, D);
        const k = linear(x, w(`${p}self_attn.k_proj.weight`, [KVH * D, Hd]), bias('k_proj', KVH * D)).reshape(S, T, KVH, D);
        const v = linear(x, w(`${p}self_attn.v_proj.weight`, [KVH * D, Hd]), bias('v_proj', KVH * D)).reshape(S, T, KVH, D);
        const a = ctx.attend(l, rope(q, ctx.positions, invFreq, rotary), rope(k, ctx.positions, invFreq, rotary), v, { scale });
        h = h.add(linear(a.reshape(S, T, H * D), w(`${p}self_attn.o_proj.weight`, [Hd, H * D]), bias('o_proj', Hd)));
        const y = rmsnorm(h, w(`${p}post_attention_layernorm.weight`, [Hd]), eps);
        h = h.add(gatedMlp(y, w(`${p}mlp.gate_proj.weight`, [I, Hd]), w(`${p}mlp.up_proj.weight`, [I, Hd]), w(`${p}mlp.down_proj.weight`, [Hd, I]), config.hiddenAct));
      }
      return rmsnorm(h, w('model.norm.weight', [Hd]), eps);
    },
    logits(ctx, hidden) {
      return linear(hidden, ctx.weight(config.tieWordEmbeddings ? 'model.embed_tokens.weight' : 'lm_head.weight', [V, Hd]));
    },
  };
}
