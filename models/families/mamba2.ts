// Mamba-2 (Mamba2ForCausalLM): pre-norm residual blocks around the SSD mixer, no attention, no MLP: its
// config.json schema (defaults from transformers' Mamba2Config) and its builder. Also home of the Mamba-2 layer
// helper that Bamba, GraniteMoeHybrid and user models share (weights, memory, state plumbing).
import { z } from 'zod';
import {
  type BaseModelConfig,
  type Mamba2MixerConfig,
  baseConfig,
  checkLayerCount,
  coreFields,
  positiveInt,
  layerTypes,
  timeStepLimit,
  tokenIdFields,
  withDefault,
} from '../configs/common.ts';
import { BACKBONE_NAMES, decoderStack } from '../decoderStack.ts';
import type { ModelDef } from '../model.ts';
import type { RecurrentStateSpec } from '../../caches/spec.ts';
import { type StepContext, kernelOptions } from '../../caches/stepContext.ts';
import { type Mamba2Weights, mamba2Mixer } from '../../dsl/nn/mamba2.ts';
import type { Tensor } from '../../dsl/tensor.ts';

export interface Mamba2Config extends BaseModelConfig<'mamba2'> {
  mamba: Mamba2MixerConfig;
  residualInFp32: boolean;
}

export const mamba2ConfigSchema = z
  .looseObject({
    ...coreFields,
    model_type: z.literal('mamba2'),
    num_heads: withDefault(positiveInt, 128),
    head_dim: withDefault(positiveInt, 64),
    state_size: withDefault(positiveInt, 128),
    expand: withDefault(z.number().positive(), 2),
    n_groups: withDefault(positiveInt, 8),
    conv_kernel: withDefault(positiveInt, 4),
    chunk_size: withDefault(positiveInt, 256),
    use_bias: withDefault(z.boolean(), false),
    use_conv_bias: withDefault(z.boolean(), true),
    hidden_act: withDefault(z.string(), 'silu'),
    layer_norm_epsilon: withDefault(z.number().positive(), 1e-5),
    residual_in_fp32: withDefault(z.boolean(), true),
    time_step_min: withDefault(z.number(), 0.001),
    time_step_max: withDefault(z.number(), 0.1),
    time_step_limit: timeStepLimit,
    tie_word_embeddings: withDefault(z.boolean(), false),
    // transformers 5 may list the (all-SSM) layers.
    layer_types: layerTypes({ mamba: 'mamba2', linear_attention: 'mamba2' }).nullish(),
    ...tokenIdFields(0, 2, 1),
  })
  .superRefine((config, context) => {
    checkLayerCount(context, 'layer_types', config.layer_types, config.num_hidden_layers);
    const innerSize = Math.floor(config.expand * config.hidden_size);
    if (config.num_heads * config.head_dim !== innerSize) {
      context.addIssue({
        code: 'custom',
        path: ['num_heads'],
        message: `num_heads * head_dim = ${config.num_heads * config.head_dim} must equal expand * hidden_size = ${innerSize}`,
      });
    }
    if (config.num_heads % config.n_groups !== 0) {
      context.addIssue({ code: 'custom', path: ['n_groups'], message: `n_groups = ${config.n_groups} must divide num_heads = ${config.num_heads}` });
    }
  })
  .transform((config): Mamba2Config => {
    const innerSize = config.num_heads * config.head_dim;
    return {
      ...baseConfig(config, 'mamba2', 'mamba2', 'none', config.layer_norm_epsilon, config.hidden_act),
      residualInFp32: config.residual_in_fp32,
      mamba: {
        numHeads: config.num_heads,
        headDim: config.head_dim,
        numGroups: config.n_groups,
        stateSize: config.state_size,
        convKernel: config.conv_kernel,
        innerSize,
        convDim: innerSize + 2 * config.n_groups * config.state_size,
        chunkSize: config.chunk_size,
        convBias: config.use_conv_bias,
        inProjBias: config.use_bias,
        outProjBias: config.use_bias,
        gatedNorm: 'full_width',
        normBeforeGate: false,
        timeStepLimit: config.time_step_limit,
        timeStepMin: config.time_step_min,
        timeStepMax: config.time_step_max,
        normEps: config.layer_norm_epsilon,
      },
    };
  });

/** Recurrent state of one Mamba-2 layer per slot: the last conv inputs (a ring of K) and the SSM state. */
export function mamba2States(cfg: Mamba2MixerConfig): RecurrentStateSpec[] {
  return [
    { name: 'conv', shape: [cfg.convDim, cfg.convKernel] }, // [I + 2GN, K], a ring: slot q % K holds position q's input
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
  const state = { conv: ctx.readState(layer, 'conv'), ssm: ctx.readState(layer, 'ssm'), start: ctx.start };
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
    fusedStep: kernelOptions.fusedSsdStep,
    fusedScan: kernelOptions.fusedSsdScan,
  });
  ctx.writeState(layer, 'conv', mixed.state.conv);
  ctx.writeState(layer, 'ssm', mixed.state.ssm);
  return mixed.out;
}

export function mamba2(config: Mamba2Config): ModelDef {
  const { hiddenSize: Hd, mamba: mixer } = config;
  return decoderStack({
    config,
    names: BACKBONE_NAMES,
    memory: () => Array.from({ length: config.numLayers }, () => ({ states: mamba2States(mixer) })),
    block: (layer, h) => h.add(mamba2Layer(layer.ctx, layer.index, mixer, Hd, layer.norm(h, 'norm'), { prefix: `${layer.prefix}mixer.`, activation: config.hiddenAct })),
  });
}
