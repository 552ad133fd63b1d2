// GraniteMoeHybrid (GraniteMoeHybridForCausalLM, Granite 4.0-H): Mamba-2 and GQA attention layers by layer_types
// (RoPE or NoPE), each followed by a top-k-then-softmax MoE plus a shared SwiGLU expert (or the shared expert
// alone), with muP multipliers on the embeddings, both residual branches, the attention scale and the logits
// (hybrid-architectures.md §7).
import type { GraniteMoeHybridConfig } from './config.ts';
import type { ModelDef } from './model.ts';
import type { LayerMemorySpec } from '../caches/spec.ts';
import type { StepContext } from '../caches/stepContext.ts';
import { activate, linear, rmsnorm } from '../dsl/nn/basic.ts';
import { moe as mixtureOfExperts } from '../dsl/nn/moe.ts';
import type { Tensor } from '../dsl/tensor.ts';
import { attentionConstants, attentionKv, attentionLayer } from './attention.ts';
import { mamba2Layer, mamba2States } from './mamba2.ts';

export function granitemoehybrid(config: GraniteMoeHybridConfig): ModelDef {
  const { hiddenSize: Hd, numLayers, vocabSize: V, normEps: eps, layerKinds, attention, mamba: mixer, moe } = config;
  const { intermediateSize: I, sharedIntermediateSize: Is, residualMultiplier, hiddenAct: act } = config;
  for (const [l, kind] of layerKinds.entries())
    if (kind !== 'attention' && kind !== 'mamba2') throw new Error(`granitemoehybrid: layer ${l} has kind '${kind}' (attention or mamba2 only)`);
  const constants = attentionConstants(attention);
  const embeddings = 'model.embed_tokens.weight';
  return {
    family: 'granitemoehybrid',
    vocabSize: V,
    hiddenSize: Hd,
    eosTokenIds: config.eosTokenIds,
    memory: () =>
      layerKinds.map((kind): LayerMemorySpec => (kind === 'attention' ? { kv: attentionKv(attention), states: [] } : { states: mamba2States(mixer) })),
    constants: () => constants,
    forward(ctx: StepContext): Tensor {
      const { S, T } = ctx;
      const w = (name: string, shape: number[]) => ctx.weight(name, shape);
      let h = w(embeddings, [V, Hd]).gather(ctx.tokens).mul(config.embeddingMultiplier); // [S,T,Hd]
      for (let l = 0; l < numLayers; l++) {
        const p = `model.layers.${l}.`;
        const x = rmsnorm(h, w(`${p}input_layernorm.weight`, [Hd]), eps);
        const mixed =
          layerKinds[l] === 'attention'
            ? attentionLayer(ctx, l, attention, Hd, x, `${p}self_attn.`) // scale = attention_multiplier
            : mamba2Layer(ctx, l, mixer, Hd, x, { prefix: `${p}mamba.`, activation: act });
        h = h.add(mixed.mul(residualMultiplier));

        const y = rmsnorm(h, w(`${p}post_attention_layernorm.weight`, [Hd]), eps).reshape(S * T, Hd);
        // shared_mlp: input_linear [2 Is, H] -> chunk 2 -> act(first) * second -> output_linear [H, Is]
        const sharedIn = w(`${p}shared_mlp.input_linear.weight`, [2 * Is, Hd]);
        const sharedOut = w(`${p}shared_mlp.output_linear.weight`, [Hd, Is]);
        let ffn: Tensor;
        if (moe) {
          const e = `${p}block_sparse_moe.`;
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
        h = h.add(ffn.reshape(S, T, Hd).mul(residualMultiplier));
      }
      return rmsnorm(h, w('model.norm.weight', [Hd]), eps);
    },
    logits(ctx, hidden) {
      return linear(hidden, ctx.weight(config.tieWordEmbeddings ? embeddings : 'lm_head.weight', [V, Hd])).div(config.logitsScaling);
    },
  };
}
