// Mamba-1 (MambaForCausalLM): pre-norm residual blocks around the selective-scan mixer, no attention, no MLP.
// Also home of the Mamba-1 layer helper that Jamba's mamba layers share (weights, memory, state plumbing).
import type { Mamba1MixerConfig, MambaConfig } from './config.ts';
import type { ModelDef } from './model.ts';
import type { RecurrentStateSpec } from '../caches/spec.ts';
import type { StepContext } from '../caches/stepContext.ts';
import { linear, rmsnorm } from '../dsl/nn/basic.ts';
import { type MambaWeights, mambaMixer } from '../dsl/nn/mamba.ts';
import type { Tensor } from '../dsl/tensor.ts';

/** Recurrent state of one Mamba-1 layer per slot: the last K-1 conv inputs and the SSM state. */
export function mamba1States(cfg: Mamba1MixerConfig): RecurrentStateSpec[] {
  return [
    { name: 'conv', shape: [cfg.innerSize, cfg.convKernel - 1] }, // [I, K-1], oldest column first
    { name: 'ssm', shape: [cfg.innerSize, cfg.stateSize] }, // [I, N]
  ];
}

export interface Mamba1LayerOptions {
  /** Checkpoint prefix of the mixer's tensors, e.g. `backbone.layers.3.mixer.` or `model.layers.3.mamba.`. */
  prefix: string;
  /** Conv and gate activation (hidden_act). */
  activation: string;
  /** eps of Jamba's dt/B/C RMSNorms (only read when `cfg.dtBcNorms`). */
  normEps: number;
}

/**
 * One Mamba-1 mixer on x [S,T,H]: reads the layer's conv/ssm state, runs the mixer (padding tokens leave the
 * state as it was), writes the new state back. Returns the mixer output [S,T,H] (the caller adds the residual).
 */
export function mamba1Layer(ctx: StepContext, layer: number, cfg: Mamba1MixerConfig, hidden: number, x: Tensor, opts: Mamba1LayerOptions): Tensor {
  const { innerSize: I, stateSize: N, convKernel: K, dtRank: R } = cfg;
  const w = (name: string, shape: number[]) => ctx.weight(opts.prefix + name, shape);
  const weights: MambaWeights = {
    inProj: w('in_proj.weight', [2 * I, hidden]),
    inProjBias: cfg.projBias ? w('in_proj.bias', [2 * I]) : undefined,
    convWeight: w('conv1d.weight', [I, 1, K]),
    convBias: cfg.convBias ? w('conv1d.bias', [I]) : undefined,
    xProj: w('x_proj.weight', [R + 2 * N, I]),
    dtProjWeight: w('dt_proj.weight', [I, R]),
    dtProjBias: w('dt_proj.bias', [I]),
    ALog: w('A_log', [I, N]),
    D: w('D', [I]),
    outProj: w('out_proj.weight', [hidden, I]),
    outProjBias: cfg.projBias ? w('out_proj.bias', [hidden]) : undefined,
    ...(cfg.dtBcNorms
      ? { dtNorm: w('dt_layernorm.weight', [R]), bNorm: w('b_layernorm.weight', [N]), cNorm: w('c_layernorm.weight', [N]) }
      : {}),
  };
  const state = { conv: ctx.readState(layer, 'conv'), ssm: ctx.readState(layer, 'ssm') };
  const mixed = mambaMixer(x, weights, state, ctx.valid, { activation: opts.activation, rmsNormEps: opts.normEps });
  ctx.writeState(layer, 'conv', mixed.state.conv);
  ctx.writeState(layer, 'ssm', mixed.state.ssm);
  return mixed.out;
}

export function mamba(config: MambaConfig): ModelDef {
  const { hiddenSize: Hd, numLayers, vocabSize: V, normEps: eps, mamba: mixer } = config;
  const embeddings = 'backbone.embeddings.weight';
  return {
    family: 'mamba',
    vocabSize: V,
    hiddenSize: Hd,
    eosTokenIds: config.eosTokenIds,
    memory: () => Array.from({ length: numLayers }, () => ({ states: mamba1States(mixer) })),
    constants: () => ({}),
    forward(ctx: StepContext): Tensor {
      let h = ctx.weight(embeddings, [V, Hd]).gather(ctx.tokens); // [S,T,Hd]
      for (let l = 0; l < numLayers; l++) {
        const p = `backbone.layers.${l}.`;
        const x = rmsnorm(h, ctx.weight(`${p}norm.weight`, [Hd]), eps);
        h = h.add(mamba1Layer(ctx, l, mixer, Hd, x, { prefix: `${p}mixer.`, activation: config.hiddenAct, normEps: eps }));
      }
      return rmsnorm(h, ctx.weight('backbone.norm_f.weight', [Hd]), eps);
    },
    logits(ctx, hidden) {
      return linear(hidden, ctx.weight(config.tieWordEmbeddings ? embeddings : 'lm_head.weight', [V, Hd]));
    },
  };
}
