// Mamba-1 (MambaForCausalLM): pre-norm residual blocks around the selective-scan mixer, no attention, no MLP: its
// config.json schema (defaults from transformers' MambaConfig) and its builder. Also home of the Mamba-1 layer
// helper that Jamba's mamba layers share (weights, memory, state plumbing).
import { z } from 'zod';
import {
  type BaseModelConfig,
  type Mamba1MixerConfig,
  baseConfig,
  coreFields,
  positiveInt,
  tokenIdFields,
  withDefault,
} from '../configs/common.ts';
import { BACKBONE_NAMES, decoderStack } from '../decoderStack.ts';
import type { ModelDef } from '../model.ts';
import type { RecurrentStateSpec } from '../../caches/spec.ts';
import { type StepContext, kernelOptions } from '../../caches/stepContext.ts';
import { type MambaWeights, mambaMixer } from '../../dsl/nn/mamba.ts';
import type { Tensor } from '../../dsl/tensor.ts';

export interface MambaConfig extends BaseModelConfig<'mamba'> {
  mamba: Mamba1MixerConfig;
  /** The residual stream is kept in f32 (moot when activations are f32). */
  residualInFp32: boolean;
}

export const mambaConfigSchema = z
  .looseObject({
    ...coreFields,
    model_type: z.literal('mamba'),
    state_size: withDefault(positiveInt, 16),
    expand: withDefault(z.number().positive(), 2),
    intermediate_size: positiveInt.nullish(),
    conv_kernel: withDefault(positiveInt, 4),
    time_step_rank: withDefault(z.union([positiveInt, z.literal('auto')]), 'auto'),
    use_bias: withDefault(z.boolean(), true),
    use_conv_bias: withDefault(z.boolean(), true),
    hidden_act: withDefault(z.string(), 'silu'),
    layer_norm_epsilon: withDefault(z.number().positive(), 1e-5),
    residual_in_fp32: withDefault(z.boolean(), true),
    tie_word_embeddings: withDefault(z.boolean(), true),
    ...tokenIdFields(0, 0, 0),
  })
  .transform((config): MambaConfig => ({
    ...baseConfig(config, 'mamba', 'mamba', 'none', config.layer_norm_epsilon, config.hidden_act),
    residualInFp32: config.residual_in_fp32,
    mamba: {
      innerSize: config.intermediate_size ?? Math.floor(config.expand * config.hidden_size),
      stateSize: config.state_size,
      convKernel: config.conv_kernel,
      dtRank: config.time_step_rank === 'auto' ? Math.ceil(config.hidden_size / 16) : config.time_step_rank,
      convBias: config.use_conv_bias,
      projBias: config.use_bias,
      dtBcNorms: false,
    },
  }));

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
  const mixed = mambaMixer(x, weights, state, ctx.valid, { activation: opts.activation, rmsNormEps: opts.normEps, fusedStep: kernelOptions.fusedSelectiveStep, fusedScan: kernelOptions.fusedSelectiveScan });
  ctx.writeState(layer, 'conv', mixed.state.conv);
  ctx.writeState(layer, 'ssm', mixed.state.ssm);
  return mixed.out;
}

export function mamba(config: MambaConfig): ModelDef {
  const { hiddenSize: Hd, mamba: mixer } = config;
  return decoderStack({
    config,
    names: BACKBONE_NAMES,
    memory: () => Array.from({ length: config.numLayers }, () => ({ states: mamba1States(mixer) })),
    block: (layer, h) =>
      h.add(mamba1Layer(layer.ctx, layer.index, mixer, Hd, layer.norm(h, 'norm'), { prefix: `${layer.prefix}mixer.`, activation: config.hiddenAct, normEps: config.normEps })),
  });
}
