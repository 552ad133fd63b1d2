// Mamba2ForCausalLM config.json (pure Mamba-2 / SSD). Defaults from transformers' Mamba2Config.

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
} from './common.ts';

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
