// Mamba-2 (Mamba2ForCausalLM): pre-norm residual blocks around the SSD mixer, no attention, no MLP.
// Also home of the Mamba-2 layer helper that Bamba and GraniteMoeHybrid share (weights, memory, state plumbing).
import type { Mamba2Config, Mamba2MixerConfig } from './config.ts';
import type { ModelDef } from './model.ts';
import type { RecurrentStateSpec } from '../caches/spec.ts';
import type { StepContext } from '../caches/stepContext.ts';
import { linear, rmsnorm } from '../dsl/nn/basic.ts';
import { type Mamba2Weights, mamba2Mixer } from '../dsl/nn/mamba2.ts';
import type { Tensor } from '../dsl/tensor.ts';

/** Recurrent state of one Mamba-2 layer per slot: the last K-1 conv inputs and the SSM state. */
export function mamba2States(cfg: Mamba2MixerConfig): RecurrentStateSpec[] {
  return [
    { name: 'conv', shape: [cfg.convDim, cfg.convKernel - 1] }, // [I + 2GN, K-1], oldest column first
    { name: 'ssm', shape: [cfg.numHeads, cfg.headDim, cfg.stateSize] }, // [Hh, P, N]
  ];
}

export interface Mamba2LayerOptions {
  /** Checkpoint prefix of the mixer's tensors, e.g. `backbone.layers.3.mixer.` or `model.layers.3.mamba.`. */
  prefix: string;
  /** Conv activation (hidden_act). */
  activation: string;
}

/**
 * One Mamba-2 mixer on x [S,T,H]: reads the layer's conv/ssm state, runs the SSD mixer (padding tokens leave the
 * state as it was), writes the new state back. Returns the mixer output [S,T,H] (the caller adds the residual).
 * A multi-token step continues from the stored state, so a chunked prefill equals a full one.
 */
export function mamba2Layer(ctx: StepContext, layer: number, cfg: Mamba2MixerConfig, hidden: number, x: Tensor, opts: Mamba2LayerOptions): Tensor {
  const { innerSize: I, convDim: C, numHeads: Hh, convKernel: K } = cfg;
  const w = (name: string, shape: number[]) => ctx.weight(opts.prefix + name, shape);
  const projected = 2 * I + 2 * cfg.numGroups * cfg.stateSize + Hh; // [z | xBC | dt]
  const weights: Mamba2Weights = {
    inProj: w('in_proj.weight', [projected, hidden]),
    inProjBias: cfg.inProjBias ? w('in_proj.bias', [projected]) : undefined,
    convWeight: w('conv1d.weight', [C, 1, K]),
    convBias: cfg.convBias ? w('conv1d.bias', [C]) : undefined,
    dtBias: w('dt_bias', [Hh]),
    ALog: w('A_log', [Hh]),
    D: w('D', [Hh]),
    norm: cfg.gatedNorm === 'none' ? undefined : w('norm.weight', [I]),
    outProj: w('out_proj.weight', [hidden, I]),
    outProjBias: cfg.outProjBias ? w('out_proj.bias', [hidden]) : undefined,
  };
  const state = { conv: ctx.readState(layer, 'conv'), ssm: ctx.readState(layer, 'ssm') };
  const mixed = mamba2Mixer(x, weights, state, ctx.valid, {
    numHeads: Hh,
    headDim: cfg.headDim,
    nGroups: cfg.numGroups,
    stateSize: cfg.stateSize,
    eps: cfg.normEps,
    normGroups: cfg.gatedNorm === 'per_group' ? cfg.numGroups : 1,
    normBeforeGate: cfg.normBeforeGate,
    // Mamba2/Bamba/Granite clamp to time_step_limit only; time_step_min is an init-time value for them (§3.7)
    timeStepLimit: cfg.timeStepLimit,
    activation: opts.activation,
    // any chunk length gives the same result (§3.8); past 64 the QxQ intra-chunk blocks only cost more
    chunkSize: Math.min(cfg.chunkSize, 64),
  });
  ctx.writeState(layer, 'conv', mixed.state.conv);
  ctx.writeState(layer, 'ssm', mixed.state.ssm);
  return mixed.out;
}

export function mamba2(config: Mamba2Config): ModelDef {
  const { hiddenSize: Hd, numLayers, vocabSize: V, normEps: eps, mamba: mixer } = config;
  const embeddings = 'backbone.embeddings.weight';
  return {
    family: 'mamba2',
    vocabSize: V,
    hiddenSize: Hd,
    eosTokenIds: config.eosTokenIds,
    memory: () => Array.from({ length: numLayers }, () => ({ states: mamba2States(mixer) })),
    constants: () => ({}),
    forward(ctx: StepContext): Tensor {
      let h = ctx.weight(embeddings, [V, Hd]).gather(ctx.tokens); // [S,T,Hd]
      for (let l = 0; l < numLayers; l++) {
        const p = `backbone.layers.${l}.`;
        const x = rmsnorm(h, ctx.weight(`${p}norm.weight`, [Hd]), eps);
        h = h.add(mamba2Layer(ctx, l, mixer, Hd, x, { prefix: `${p}mixer.`, activation: config.hiddenAct }));
      }
      return rmsnorm(h, ctx.weight('backbone.norm_f.weight', [Hd]), eps);
    },
    logits(ctx, hidden) {
      return linear(hidden, ctx.weight(config.tieWordEmbeddings ? embeddings : 'lm_head.weight', [V, Hd]));
    },
  };
}
