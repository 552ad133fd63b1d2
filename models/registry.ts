// The model registry: for every model_type, the zod schema of its config.json and the builder of its forward
// pass (both in models/families/<model_type>.ts), in one table typed over ModelType, so a family with one and not
// the other is a compile error.
import type { z } from 'zod';
import type { ConfigByModelType, ModelConfig, ModelType } from './config.ts';
import type { ModelDef } from './model.ts';
import { bamba, bambaConfigSchema } from './families/bamba.ts';
import { falconH1, falconH1ConfigSchema } from './families/falcon_h1.ts';
import { gemma3nText, gemma3nTextConfigSchema } from './families/gemma3n_text.ts';
import { granitemoehybrid, granitemoehybridConfigSchema } from './families/granitemoehybrid.ts';
import { jamba, jambaConfigSchema } from './families/jamba.ts';
import { lfm2, lfm2ConfigSchema } from './families/lfm2.ts';
import { llama, llamaConfigSchema } from './families/llama.ts';
import { mamba, mambaConfigSchema } from './families/mamba.ts';
import { mamba2, mamba2ConfigSchema } from './families/mamba2.ts';
import { qwen3Next, qwen3NextConfigSchema } from './families/qwen3_next.ts';

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
