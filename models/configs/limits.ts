// Upper bounds on the sizes in a config.json, checked before a schema builds anything from them: a hostile or
// mistyped config is refused with the field, its value and the bound, instead of exhausting memory while building
// per-layer lists, RoPE frequency tables or a memory plan.
//
// The bounds sit far above every published checkpoint (the deepest have ~130 layers, the widest vocabularies ~262k
// ids, the largest heads 512 dims) and below what breaks: per-layer lists and programs grow with the layer count,
// JS arrays stop at 2^32 - 1 entries, WGSL indexes buffers with u32, and a token id must stay exact where a kernel
// carries it as f32 (2^24).

import { ConfigError } from './common.ts';

/** Largest element count of one weight tensor: WGSL kernels index buffers with u32. */
export const MAX_TENSOR_ELEMENTS = 2 ** 32 - 1;

/** Deepest nesting of JSON accepted in a config (HF configs nest 3 levels at most). */
export const MAX_CONFIG_DEPTH = 64;

const LAYERS = 1024;
const HEADS = 4096;
const HEAD_DIM = 2048;
const WIDTH = 1 << 20;
const POSITIONS = 1 << 24;
const EXPERTS = 4096;
const STATE = 4096;
const KERNEL = 64;

/** Bound per config.json field name, whatever the family (families share HF's spellings). */
export const CONFIG_LIMITS: Readonly<Record<string, number>> = {
  num_hidden_layers: LAYERS,
  num_kv_shared_layers: LAYERS,
  attn_layer_period: LAYERS,
  attn_layer_offset: LAYERS,
  expert_layer_period: LAYERS,
  expert_layer_offset: LAYERS,
  full_attention_interval: LAYERS,
  decoder_sparse_step: LAYERS,
  vocab_size: POSITIONS,
  vocab_size_per_layer_input: POSITIONS,
  hidden_size: 1 << 16,
  hidden_size_per_layer_input: 1 << 16,
  intermediate_size: WIDTH,
  moe_intermediate_size: WIDTH,
  shared_intermediate_size: WIDTH,
  shared_expert_intermediate_size: WIDTH,
  mamba_d_ssm: WIDTH,
  num_attention_heads: HEADS,
  num_key_value_heads: HEADS,
  mamba_n_heads: HEADS,
  num_heads: HEADS,
  linear_num_key_heads: HEADS,
  linear_num_value_heads: HEADS,
  head_dim: HEAD_DIM,
  mamba_d_head: HEAD_DIM,
  linear_key_head_dim: HEAD_DIM,
  linear_value_head_dim: HEAD_DIM,
  max_position_embeddings: POSITIONS,
  sliding_window: POSITIONS,
  num_experts: EXPERTS,
  num_local_experts: EXPERTS,
  num_experts_per_tok: EXPERTS,
  mamba_d_state: STATE,
  state_size: STATE,
  mamba_n_groups: HEADS,
  n_groups: HEADS,
  mamba_expand: 64,
  expand: 64,
  mamba_d_conv: KERNEL,
  conv_kernel: KERNEL,
  linear_conv_kernel_dim: KERNEL,
  conv_L_cache: KERNEL,
  mamba_chunk_size: 1 << 16,
  chunk_size: 1 << 16,
  mamba_dt_rank: WIDTH,
  time_step_rank: WIDTH,
  laurel_rank: WIDTH,
  altup_num_inputs: 64,
  block_multiple_of: WIDTH,
};

function refuse(file: string, field: string, value: number, limit: number, what = 'the limit'): never {
  throw new ConfigError(`${file}: ${field}: ${value} is above ${what} ${limit}`);
}

/**
 * Checks every bounded field present at the top level of `json` (numbers, or lists of numbers such as Gemma 3n's
 * per-layer intermediate_size) and the lengths of lists that hold one entry per layer. Other types are left
 * to the schema, which names them.
 */
export function checkConfigLimits(json: Readonly<Record<string, unknown>>, file: string): void {
  for (const [field, limit] of Object.entries(CONFIG_LIMITS)) {
    const value = json[field];
    if (typeof value === 'number' && value > limit) refuse(file, field, value, limit);
    if (Array.isArray(value) && value.length <= LAYERS) {
      value.forEach((item, index) => {
        if (typeof item === 'number' && item > limit) refuse(file, `${field}[${index}]`, item, limit);
      });
    }
  }
  for (const field of PER_LAYER_LISTS) {
    const value = json[field];
    if (Array.isArray(value) && value.length > LAYERS) refuse(file, `${field} (length)`, value.length, LAYERS, 'the layer limit');
  }
}

/** The lists the schemas read that hold at most one entry per layer. */
const PER_LAYER_LISTS = ['layer_types', 'intermediate_size', 'activation_sparsity_pattern', 'attn_layer_indices', 'full_attn_idxs', 'mlp_only_layers'];

/** The weight matrices a config implies, by the fields that size them, each within MAX_TENSOR_ELEMENTS. */
export function checkTensorSizes(
  file: string,
  sizes: readonly { fields: string; dims: readonly number[] }[],
): void {
  for (const { fields, dims } of sizes) {
    const elements = dims.reduce((product, dim) => product * dim, 1);
    if (elements > MAX_TENSOR_ELEMENTS) {
      throw new ConfigError(
        `${file}: ${fields}: a weight of ${dims.join(' x ')} = ${elements} elements is above the limit ${MAX_TENSOR_ELEMENTS} of one GPU tensor (u32 indices)`,
      );
    }
  }
}

/** Refuses JSON nested deeper than MAX_CONFIG_DEPTH, without recursing (the input is untrusted). */
export function checkJsonDepth(value: unknown, file: string, maxDepth = MAX_CONFIG_DEPTH): void {
  const pending: { value: unknown; depth: number; path: string }[] = [{ value, depth: 0, path: '' }];
  while (pending.length > 0) {
    const { value: item, depth, path } = pending.pop()!;
    if (typeof item !== 'object' || item === null) continue;
    if (depth >= maxDepth) {
      throw new ConfigError(`${file}: ${path.slice(0, 200) || '(root)'}: JSON nested deeper than ${maxDepth} levels`);
    }
    if (Array.isArray(item)) item.forEach((child, index) => pending.push({ value: child, depth: depth + 1, path: `${path}[${index}]` }));
    else for (const [key, child] of Object.entries(item)) pending.push({ value: child, depth: depth + 1, path: path ? `${path}.${key}` : key });
  }
}
