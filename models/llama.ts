// Llama (LlamaForCausalLM): GQA attention with RoPE and a SwiGLU MLP. The plain-transformer baseline.
import type { LlamaConfig } from './config.ts';
import type { ModelDef } from './model.ts';
import type { StepContext } from '../caches/stepContext.ts';
import { gatedMlp, linear, rmsnorm } from '../dsl/nn/basic.ts';
import type { Tensor } from '../dsl/tensor.ts';
import { attentionConstants, attentionKv, attentionLayer } from './attention.ts';

export function llama(config: LlamaConfig): ModelDef {
  const { hiddenSize: Hd, numLayers, vocabSize: V, intermediateSize: I, normEps: eps, attention } = config;
  const constants = attentionConstants(attention);
  return {
    family: 'llama',
    vocabSize: V,
    hiddenSize: Hd,
    eosTokenIds: config.eosTokenIds,
    memory: () => Array.from({ length: numLayers }, () => ({ kv: attentionKv(attention), states: [] })),
    constants: () => constants,
    forward(ctx: StepContext): Tensor {
      const w = (name: string, shape: number[]) => ctx.weight(name, shape);
      let h = w('model.embed_tokens.weight', [V, Hd]).gather(ctx.tokens); // [S,T,Hd]
      for (let l = 0; l < numLayers; l++) {
        const p = `model.layers.${l}.`;
        const x = rmsnorm(h, w(`${p}input_layernorm.weight`, [Hd]), eps);
        h = h.add(attentionLayer(ctx, l, attention, Hd, x, `${p}self_attn.`));
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
