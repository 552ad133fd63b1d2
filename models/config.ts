// Loads a Hugging Face config.json and turns it into one normalized, typed object per model family, so model
// code never sees HF's spellings (transformers 4 vs 5), its null-means-default fields or its float tags.

import type { z } from 'zod';
import { describeJson, elide } from '../base/errors.ts';
import { type ModelSource, isModelSource, readFailureReason } from '../base/modelSource.ts';
import { sourceFor } from '../base/defaultSource.ts';
import { ConfigError, type RopeConfig } from './configs/common.ts';
import { ROPE_TYPES, ropeTables } from './rope.ts';
import { MODELS, modelEntry } from './registry.ts';
import { MAX_CONFIG_DEPTH, checkConfigLimits, checkJsonDepth, checkTensorSizes } from './configs/limits.ts';
import type { BambaConfig } from './families/bamba.ts';
import type { FalconH1Config } from './families/falcon_h1.ts';
import type { Gemma3nTextConfig } from './families/gemma3n_text.ts';
import type { GraniteMoeHybridConfig } from './families/granitemoehybrid.ts';
import type { JambaConfig } from './families/jamba.ts';
import type { Lfm2Config } from './families/lfm2.ts';
import type { LlamaConfig } from './families/llama.ts';
import type { MambaConfig } from './families/mamba.ts';
import type { Mamba2Config } from './families/mamba2.ts';
import type { Qwen3NextConfig } from './families/qwen3_next.ts';

export { ConfigError } from './configs/common.ts';
export type {
  AttentionConfig,
  BaseModelConfig,
  FfnKind,
  LayerKind,
  Mamba1MixerConfig,
  Mamba2MixerConfig,
  RopeConfig,
} from './configs/common.ts';
export type {
  BambaConfig,
  FalconH1Config,
  Gemma3nTextConfig,
  GraniteMoeHybridConfig,
  JambaConfig,
  Lfm2Config,
  LlamaConfig,
  MambaConfig,
  Mamba2Config,
  Qwen3NextConfig,
};
export type { FalconH1Multipliers } from './families/falcon_h1.ts';
export type { KvSharingRole } from './families/gemma3n_text.ts';
export type { GatedDeltaNetConfig } from './families/qwen3_next.ts';

export interface ConfigByModelType {
  llama: LlamaConfig;
  mamba: MambaConfig;
  mamba2: Mamba2Config;
  jamba: JambaConfig;
  bamba: BambaConfig;
  granitemoehybrid: GraniteMoeHybridConfig;
  falcon_h1: FalconH1Config;
  lfm2: Lfm2Config;
  qwen3_next: Qwen3NextConfig;
  gemma3n_text: Gemma3nTextConfig;
}

export type ModelType = keyof ConfigByModelType;
export type ModelConfig = ConfigByModelType[ModelType];

export const supportedModelTypes = Object.keys(MODELS) as ModelType[];

const floatTags: Record<string, number> = { Infinity: Infinity, '-Infinity': -Infinity, NaN: NaN };

/**
 * Replaces transformers 5's `{"__float__": "Infinity"}` (and -Infinity, NaN) by the number, at any depth up to
 * MAX_CONFIG_DEPTH (deeper input is refused, not recursed into).
 */
export function restoreTaggedFloats(value: unknown, depth = 0): unknown {
  if (typeof value !== 'object' || value === null) return value;
  if (depth >= MAX_CONFIG_DEPTH) throw new ConfigError(`config JSON nested deeper than ${MAX_CONFIG_DEPTH} levels`);
  if (Array.isArray(value)) return value.map((item) => restoreTaggedFloats(item, depth + 1));
  const entries = Object.entries(value);
  if (entries.length === 1 && entries[0]![0] === '__float__' && typeof entries[0]![1] === 'string') {
    const tag = entries[0]![1];
    if (Object.hasOwn(floatTags, tag)) return floatTags[tag];
  }
  return Object.fromEntries(entries.map(([key, item]) => [key, restoreTaggedFloats(item, depth + 1)]));
}

/** Python's json.dumps writes bare Infinity / -Infinity / NaN (transformers 4 configs); turn them into tags. */
function tagBareFloats(text: string): string {
  let out = '';
  let inString = false;
  for (let i = 0; i < text.length; i++) {
    const char = text[i]!;
    if (inString) {
      out += char;
      if (char === '\\') out += text[++i] ?? '';
      else if (char === '"') inString = false;
      continue;
    }
    if (char === '"') {
      inString = true;
      out += char;
      continue;
    }
    const bare = ['-Infinity', 'Infinity', 'NaN'].find((token) => text.startsWith(token, i));
    if (bare) {
      out += `{"__float__": "${bare}"}`;
      i += bare.length - 1;
      continue;
    }
    out += char;
  }
  return out;
}

/** Parses config.json text; accepts tagged and bare non-finite floats. */
export function parseConfigJson(text: string, file = 'config.json'): Record<string, unknown> {
  let json: unknown;
  try {
    json = JSON.parse(text);
  } catch (error) {
    try {
      json = JSON.parse(tagBareFloats(text));
    } catch {
      throw new ConfigError(`${file}: not valid JSON (${elide((error as Error).message)})`);
    }
  }
  if (typeof json !== 'object' || json === null || Array.isArray(json)) {
    throw new ConfigError(`${file}: expected a JSON object at the top level`);
  }
  checkJsonDepth(json, file);
  return restoreTaggedFloats(json) as Record<string, unknown>;
}

function describeValue(value: unknown): string {
  if (value === null) return 'null';
  if (Array.isArray(value)) return 'array';
  if (typeof value === 'number' && !Number.isFinite(value)) return String(value);
  return typeof value;
}

function formatPath(segments: readonly PropertyKey[]): string {
  let out = '';
  for (const segment of segments) {
    if (typeof segment === 'number') out += `[${segment}]`;
    else out += out ? `.${String(segment)}` : String(segment);
  }
  return out || '(root)';
}

function describeIssue(issue: z.core.$ZodIssue): { path: PropertyKey[]; text: string } {
  const input = (issue as { input?: unknown }).input;
  switch (issue.code) {
    case 'invalid_type': {
      const expected = issue.expected === 'int' ? 'integer' : issue.expected;
      if (input === undefined) return { path: issue.path, text: `missing (expected ${expected})` };
      return { path: issue.path, text: `expected ${expected}, got ${describeValue(input)}` };
    }
    case 'invalid_value':
      return {
        path: issue.path,
        text: `expected ${issue.values.length === 1 ? '' : 'one of '}${issue.values.map((value) => JSON.stringify(value)).join(', ')}, got ${describeJson(input)}`,
      };
    case 'too_small':
    case 'too_big': {
      const bound = issue.code === 'too_small' ? issue.minimum : issue.maximum;
      const relation =
        issue.code === 'too_small' ? (issue.inclusive ? '>=' : '>') : issue.inclusive ? '<=' : '<';
      const subject = issue.origin === 'array' ? 'length' : 'value';
      const actual = Array.isArray(input) ? input.length : input;
      return { path: issue.path, text: `expected ${subject} ${relation} ${String(bound)}, got ${elide(String(actual))}` };
    }
    case 'invalid_union': {
      // Report the first alternative's complaint; for a scalar-or-list field that is the scalar one.
      const first = issue.errors[0]?.[0];
      if (first) {
        const inner = describeIssue(first);
        return { path: [...issue.path, ...inner.path], text: inner.text };
      }
      return { path: issue.path, text: issue.message };
    }
    default:
      return { path: issue.path, text: issue.message };
  }
}

export function formatConfigIssues(issues: readonly z.core.$ZodIssue[], file: string): string {
  return issues
    .map((issue) => {
      const { path: issuePath, text } = describeIssue(issue);
      return `${file}: ${elide(formatPath(issuePath))}: ${elide(text)}`;
    })
    .slice(0, 20)
    .join('\n');
}

/** Validates and normalizes an already parsed config.json object (floats restored). */
export function parseConfig(json: Record<string, unknown>, file = 'config.json'): ModelConfig {
  checkJsonDepth(json, file);
  const modelType = json.model_type;
  if (typeof modelType !== 'string') {
    throw new ConfigError(
      `${file}: model_type: ${modelType === undefined ? 'missing' : `expected string, got ${describeValue(modelType)}`} (supported: ${supportedModelTypes.join(', ')})`,
    );
  }
  if (!Object.hasOwn(MODELS, modelType)) {
    throw new ConfigError(
      `${file}: model_type: unsupported model_type "${elide(modelType, 80)}"; supported: ${supportedModelTypes.join(', ')}`,
    );
  }
  checkConfigLimits(json, file);
  const schema = modelEntry(modelType as ModelType).schema as z.ZodType<ModelConfig>;
  const result = schema.safeParse(json, { reportInput: true });
  if (!result.success) throw new ConfigError(formatConfigIssues(result.error.issues, file));
  checkTensorSizes(file, impliedWeights(result.data));
  return result.data;
}

/** The largest weight matrices of a config, with the fields that size them. */
function impliedWeights(config: ModelConfig): { fields: string; dims: number[] }[] {
  const weights = [{ fields: 'vocab_size x hidden_size', dims: [config.vocabSize, config.hiddenSize] }];
  const withMlp = config as { intermediateSize?: number; intermediateSizes?: number[] };
  const widest = Math.max(withMlp.intermediateSize ?? 0, ...(withMlp.intermediateSizes ?? []).slice(0, 1024));
  if (widest > 0) weights.push({ fields: 'intermediate_size x hidden_size', dims: [widest, config.hiddenSize] });
  const attention = (config as { attention?: { numHeads: number; headDim: number } }).attention;
  if (attention) weights.push({ fields: 'num_attention_heads x head_dim x hidden_size', dims: [attention.numHeads * attention.headDim, config.hiddenSize] });
  if (config.modelType === 'gemma3n_text') {
    const { vocabSize, hiddenSize } = config.perLayerInput;
    weights.push({ fields: 'vocab_size_per_layer_input x num_hidden_layers x hidden_size_per_layer_input', dims: [vocabSize, config.numLayers * hiddenSize] });
  }
  return weights;
}

/**
 * Refuses what a config may describe but Strata cannot run yet (a RoPE variant models/rope.ts does not
 * implement, or one missing its parameters), naming the field; called before anything is loaded, where parsing
 * alone would accept it.
 */
export function checkRunnable(config: ModelConfig, file = 'config.json'): void {
  const attention = (config as { attention?: { rope: RopeConfig | null; maxPositionEmbeddings: number } }).attention;
  const ropes = [attention?.rope];
  if (config.modelType === 'gemma3n_text') ropes.push(config.slidingRope);
  for (const rope of ropes) {
    if (!rope) continue;
    const field = ropeTypeField(config.raw, rope.type);
    if (!(ROPE_TYPES as readonly string[]).includes(rope.type)) {
      throw new ConfigError(`${file}: ${field}: rope type ${JSON.stringify(elide(rope.type, 80))} is not supported (supported: ${ROPE_TYPES.join(', ')})`);
    }
    try {
      ropeTables(rope, attention?.maxPositionEmbeddings ?? 0, field.slice(0, field.lastIndexOf('.')));
    } catch (error) {
      if (error instanceof ConfigError) throw new ConfigError(error.message.replace(/^config\.json: /, `${file}: `));
      throw error;
    }
  }
}

/** Where in config.json a rope type was written (rope_parameters wins over rope_scaling, as in resolveRope). */
function ropeTypeField(raw: Readonly<Record<string, unknown>>, type: string): string {
  const candidates: [string, unknown][] = [];
  for (const group of ['rope_parameters', 'rope_scaling']) {
    const value = raw[group];
    if (typeof value !== 'object' || value === null) continue;
    const entries = value as Record<string, unknown>;
    for (const key of ['rope_type', 'type']) candidates.push([`${group}.${key}`, entries[key]]);
    for (const kind of ['full_attention', 'sliding_attention']) {
      const nested = entries[kind];
      if (typeof nested === 'object' && nested !== null) {
        for (const key of ['rope_type', 'type']) candidates.push([`${group}.${kind}.${key}`, (nested as Record<string, unknown>)[key]]);
      }
    }
  }
  return candidates.find(([, value]) => value === type)?.[0] ?? 'rope_parameters.rope_type';
}

/** Larger than any config.json (they are a few KiB); a bigger file is refused unread. */
const MAX_CONFIG_BYTES = 16 << 20;

/** Reads `config.json` of a folder or source (or the given .json file), dispatching on model_type. */
export async function loadConfig(location: string | ModelSource): Promise<ModelConfig> {
  let source: ModelSource;
  let name = 'config.json';
  if (isModelSource(location)) source = location;
  else if (location.endsWith('.json')) {
    const slash = location.lastIndexOf('/');
    source = sourceFor(slash < 0 ? '.' : location.slice(0, slash) || '/');
    name = location.slice(slash + 1);
  } else source = sourceFor(location);
  const file = source.where(name);
  let text: string;
  try {
    text = await source.readText(name, MAX_CONFIG_BYTES);
  } catch (error) {
    throw new ConfigError(`${file}: cannot read (${readFailureReason(error)})`);
  }
  return parseConfig(parseConfigJson(text, file), file);
}

/** Narrows a loaded config to one family, with an error naming what was found instead. */
export function expectModelType<K extends ModelType>(config: ModelConfig, modelType: K): ConfigByModelType[K] {
  if (config.modelType !== modelType) {
    throw new ConfigError(`config.json: model_type: expected "${modelType}", got "${config.modelType}"`);
  }
  return config as ConfigByModelType[K];
}
