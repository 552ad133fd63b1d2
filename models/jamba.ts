// Jamba (JambaForCausalLM): Mamba-1 mixers (with dt/B/C RMSNorms) and, every attn_layer_period layers, GQA
// attention without positional encoding; after every mixer a SwiGLU MLP or, every expert_layer_period layers, a
// mixture of experts routed by softmax over all experts then top-k, without renormalisation.
import type { JambaConfig } from './config.ts';
import type { ModelDef } from './model.ts';
import { attentionKv, attentionLayer } from './attention.ts';
import { mamba1Layer, mamba1States } from './mamba.ts';
import type { StepContext } from '../caches/stepContext.ts';
import { gatedMlp, linear, rmsnorm } from '../dsl/nn/basic.ts';
import { route } from '../dsl/nn/moe.ts';
import type { Tensor } from '../dsl/tensor.ts';

export function jamba(config: JambaConfig): ModelDef {
  const { hiddenSize: Hd, numLayers, vocabSize: V, intermediateSize: I, normEps: eps, mamba: mixer, moe } = config;
  if (config.attention.rope) throw new Error('jamba: attention has no positional encoding, but the config resolved a rope');
  const E = moe.numExperts;
  return {
    family: 'jamba',
    vocabSize: V,
    hiddenSize: Hd,
    eosTokenIds: config.eosTokenIds,
    memory: () =>
      config.layerKinds.map((kind) => (kind === 'attention' ? { kv: attentionKv(config.attention), states: [] } : { states: mamba1States(mixer) })),
    constants: () => ({}),
    forward(ctx: StepContext): Tensor {
      const { S, T } = ctx;
      const w = (name: string, shape: number[]) => ctx.weight(name, shape);
      const mlp = (x: Tensor, p: string) =>
        gatedMlp(x, w(`${p}gate_proj.weight`, [I, Hd]), w(`${p}up_proj.weight`, [I, Hd]), w(`${p}down_proj.weight`, [Hd, I]), config.hiddenAct);
      let h = w('model.embed_tokens.weight', [V, Hd]).gather(ctx.tokens); // [S,T,Hd]
      for (let l = 0; l < numLayers; l++) {
        const p = `model.layers.${l}.`;
        const x = rmsnorm(h, w(`${p}input_layernorm.weight`, [Hd]), eps);
        h = h.add(
          config.layerKinds[l] === 'attention'
            ? attentionLayer(ctx, l, config.attention, Hd, x, `${p}self_attn.`)
            : mamba1Layer(ctx, l, mixer, Hd, x, { prefix: `${p}mamba.`, activation: config.hiddenAct, normEps: eps }),
        );
        const y = rmsnorm(h, w(`${p}pre_ff_layernorm.weight`, [Hd]), eps);
        const ff = `${p}feed_forward.`;
        if (config.ffnKinds[l] === 'moe') {
          const tokens = y.reshape(S * T, Hd);
          const { dense } = route(linear(tokens, w(`${ff}router.weight`, [E, Hd])), moe.numExpertsPerTok, 'softmax-then-topk'); // [S*T,E]
          // Every expert runs on every token, unselected ones weighted 0: the checkpoint keeps one tensor per expert
          // and dsl/nn/moe.ts's gather strategy wants them stacked [E, out, in].
          let experts = mlp(tokens, `${ff}experts.0.`).mul(dense.slice(1, 0, 1));
          for (let e = 1; e < E; e++) experts = experts.add(mlp(tokens, `${ff}experts.${e}.`).mul(dense.slice(1, e, e + 1)));
          h = h.add(experts.reshape(S, T, Hd));
        } else {
          h = h.add(mlp(y, ff));
        }
      }
      return rmsnorm(h, w('model.final_layernorm.weight', [Hd]), eps);
    },
    logits(ctx, hidden) {
      return linear(hidden, ctx.weight(config.tieWordEmbeddings ? 'model.embed_tokens.weight' : 'lm_head.weight', [V, Hd]));
    },
  };
}
