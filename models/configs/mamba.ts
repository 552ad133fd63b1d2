// MambaForCausalLM config.json (Mamba-1, no attention, no MLP). Defaults from transformers' MambaConfig.

import { z } from 'zod';
import {
  type BaseModelConfig,
  type Mamba1MixerConfig,
  baseConfig,
  coreFields,
  positiveInt,
  tokenIdFields,
  withDefault,
} from './common.ts';

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
