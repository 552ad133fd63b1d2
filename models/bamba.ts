// Bamba (BambaForCausalLM): Mamba-2 layers with GQA attention at attn_layer_indices (partial RoPE), a SwiGLU MLP
// after every mixer (hybrid-architectures.md §6).
import type { BambaConfig } from './config.ts';
import type { ModelDef } from './model.ts';
import type { LayerMemorySpec } from '../caches/spec.ts';
import type { StepContext } from '../caches/stepContext.ts';
import { gatedMlp, linear, rmsnorm } from '../dsl/nn/basic.ts';
import type { Tensor } from '../dsl/tensor.ts';
import { attentionConstants, attentionKv, attentionLayer } from './attention.ts';
import { mamba2Layer, mamba2States } from './mamba2.ts';

export function bamba(config: BambaConfig): ModelDef {
  const { hiddenSize: Hd, numLayers, vocabSize: V, intermediateSize: I, normEps: eps, layerKinds, attention, mamba: mixer } = config;
  for (const [l, kind] of layerKinds.entries())
    if (kind !== 'attention' && kind !== 'mamba2') throw new Error(`bamba: layer ${l} has kind '${kind}' (attention or mamba2 only)`);
  const constants = attentionConstants(attention);
  return {
    family: 'bamba',
    vocabSize: V,
    hiddenSize: Hd,
    eosTokenIds: config.eosTokenIds,
    memory: () =>
      layerKinds.map((kind): LayerMemorySpec => (kind === 'attention' ? { kv: attentionKv(attention), states: [] } : { states: mamba2States(mixer) })),
    constants: () => constants,
    forward(ctx: StepContext): Tensor {
      const w = (name: string, shape: number[]) => ctx.weight(name, shape);
      let h = w('model.embed_tokens.weight', [V, Hd]).gather(ctx.tokens); // [S,T,Hd]
      for (let l = 0; l < numLayers; l++) {
        const p = `model.layers.${l}.`;
        const x = rmsnorm(h, w(`${p}input_layernorm.weight`, [Hd]), eps);
        h = h.add(
          layerKinds[l] === 'attention'
            ? attentionLayer(ctx, l, attention, Hd, x, `${p}self_attn.`)
            : mamba2Layer(ctx, l, mixer, Hd, x, { prefix: `${p}mamba.`, activation: config.hiddenAct }),
        );
        const y = rmsnorm(h, w(`${p}pre_ff_layernorm.weight`, [Hd]), eps);
        const ff = `${p}feed_forward.`;
        h = h.add(gatedMlp(y, w(`${ff}gate_proj.weight`, [I, Hd]), w(`${ff}up_proj.weight`, [I, Hd]), w(`${ff}down_proj.weight`, [Hd, I]), config.hiddenAct));
      }
      return rmsnorm(h, w('model.final_layernorm.weight', [Hd]), eps);
    },
    logits(ctx, hidden) {
      return linear(hidden, ctx.weight(config.tieWordEmbeddings ? 'model.embed_tokens.weight' : 'lm_head.weight', [V, Hd]));
    },
  };
}
