// The model registry: for every model_type, the zod schema of its config.json and the builder of its forward
// pass, in one table typed over ModelType, so a family with one and not the other is a compile error.
import type { z } from 'zod';
import type { ConfigByModelType, ModelConfig, ModelType } from './config.ts';
import { bambaConfigSchema } from './configs/bamba.ts';
import { falconH1ConfigSchema } from './configs/falcon_h1.ts';
import { gemma3nTextConfigSchema } from './configs/gemma3n_text.ts';
import { granitemoehybridConfigSchema } from './configs/granitemoehybrid.ts';
import { jambaConfigSchema } from './configs/jamba.ts';
import { lfm2ConfigSchema } from './configs/lfm2.ts';
import { llamaConfigSchema } from './configs/llama.ts';
import { mambaConfigSchema } from './configs/mamba.ts';
import { mamba2ConfigSchema } from './configs/mamba2.ts';
import { qwen3NextConfigSchema } from './configs/qwen3_next.ts';
import type { ModelDef } from './model.ts';
import { bamba } from './bamba.ts';
import { falconH1 } from './falconH1.ts';
import { gemma3nText } from './gemma3n.ts';
import { granitemoehybrid } from './granitemoehybrid.ts';
import { jamba } from './jamba.ts';
import { lfm2 } from './lfm2.ts';
import { llama } from './llama.ts';
import { mamba } from './mamba.ts';
import { mamba2 } from './mamba2.ts';
import { qwen3Next } from './qwen3Next.ts';

export interface ModelEntry<K extends ModelType> {
  schema: z.ZodType<ConfigByModelType[K]>;
  build: (config: ConfigByModelType[K]) => ModelDef;
}

export const MODELS: { readonly [K in ModelType]: ModelEntry<K> } = {
  llama: { schema: llamaConfigSchema, build: llama },
  mamba: { schema: mambaConfigSchema, build: mamba },
  mamba2: { schema: mamba2ConfigSchema, build: mamba2 },
  jamba: { schema: jambaConfigSchema, build: jamba },
  bamba: { schema: bambaConfigSchema, build: bamba },
  granitemoehybrid: { schema: granitemoehybridConfigSchema, build: granitemoehybrid },
  falcon_h1: { schema: falconH1ConfigSchema, build: falconH1 },
  qwen3_next: { schema: qwen3NextConfigSchema, build: qwen3Next },
  gemma3n_text: { schema: gemma3nTextConfigSchema, build: gemma3nText },
  lfm2: { schema: lfm2ConfigSchema, build: lfm2 },
};

/** The entry of a model type (the table is exhaustive; the cast only joins the union back to its key). */
export function modelEntry(modelType: ModelType): ModelEntry<ModelType> {
  return MODELS[modelType] as unknown as ModelEntry<ModelType>;
}

export function buildModel(config: ModelConfig): ModelDef {
  return modelEntry(config.modelType).build(config as never);
}
