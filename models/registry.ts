// Picks the architecture from config.json's model_type.
import type { ModelConfig } from './config.ts';
import type { ModelDef } from './model.ts';
import { falconH1 } from './falconH1.ts';
import { qwen3Next } from './qwen3Next.ts';
import { gemma3nText } from './gemma3n.ts';
import { jamba } from './jamba.ts';
import { lfm2 } from './lfm2.ts';
import { llama } from './llama.ts';
import { mamba } from './mamba.ts';
import { mamba2 } from './mamba2.ts';
import { bamba } from './bamba.ts';
import { granitemoehybrid } from './granitemoehybrid.ts';

type Builder = (config: never) => ModelDef;

export const MODEL_BUILDERS: Partial<Record<ModelConfig['modelType'], Builder>> = {
  llama: llama as Builder,
  mamba: mamba as Builder,
  jamba: jamba as Builder,
  mamba2: mamba2 as Builder,
  bamba: bamba as Builder,
  granitemoehybrid: granitemoehybrid as Builder,
  falcon_h1: falconH1 as Builder,
  qwen3_next: qwen3Next as Builder,
  gemma3n_text: gemma3nText as Builder,
  lfm2: lfm2 as Builder,
};

export function buildModel(config: ModelConfig): ModelDef {
  const build = MODEL_BUILDERS[config.modelType];
  if (!build) throw new Error(`model_type '${config.modelType}' has a config schema but no forward pass yet; runnable: ${Object.keys(MODEL_BUILDERS).join(', ')}`);
  return build(config as never);
}
