// What llama.cpp's converter (convert_hf_to_gguf.py, gguf-py constants / tensor_mapping) writes for each
// architecture Strata maps, one entry per GGUF `general.architecture`: the HF config.json rebuilt from the
// metadata, and the GGUF tensor names to HF names with what the converter changed in them (runtime/gguf.ts undoes
// it). Each entry names the converter class it inverts.
import { StrataUserError } from '../base/errors.ts';
import { sparsityStdMultiplier } from '../models/families/gemma3n_text.ts';

export class GgufError extends StrataUserError {
  override name = 'GgufError';
}

export type Meta = Record<string, unknown>;

/** How one architecture's GGUF tensors become HF tensors. */
export interface GgufLayout {
  modelType: string;
  /** `shape` gives a GGUF tensor's dims in HF order (outermost first), undefined when absent. */
  config(meta: Meta, arch: string, has: (name: string) => boolean, vocab: number, shape: (name: string) => number[] | undefined): Record<string, unknown>;
  /** HF prefix of layer N's tensors (N and a dot follow). */
  layers: string;
  /** HF name for a GGUF tensor name within a block (`blk.N.` stripped) or at the top level. */
  block: Record<string, string>;
  top: Record<string, string>;
  /**
   * GGUF block tensors concatenated along rows into one HF tensor: [gguf names] -> HF name, with the HF row order
   * when the converter also moved rows (`rows(meta, arch)[i]` is the concatenation's row that HF row i is).
   */
  concat?: [string[], string, ((meta: Meta, arch: string) => number[])?][];
  /**
   * 3-D GGUF tensors the converter stacked on a new outer dim (Jamba's experts, Gemma 3n's AltUp projections) -> the
   * HF name of one slice, `{e}` its index: block-local names within a block, full names at the top level.
   */
  stacked?: Record<string, string>;
  /** GGUF block tensors the converter squeezed from [C, 1, K] to [C, K] (conv weights). */
  squeezed?: string[];
  /** attn_q/attn_k rows were permuted for llama.cpp's RoPE (LlamaModel.permute). */
  permutedQK?: boolean;
  /** GGUF block tensors the converter gave a trailing dim or split into groups, whose HF form is 1-D. */
  flat?: string[];
  /** Norm weights (block-local or top-level GGUF names) the converter stored as w + 1 (zero-centred RMSNorms). */
  shiftedNorms?: string[];
}

export const metaNumber = (meta: Meta, key: string): number => {
  const v = meta[key];
  if (typeof v === 'number') return v;
  if (typeof v === 'bigint') return Number(v);
  throw new GgufError(`GGUF metadata ${key}: missing (expected a number)`);
};
const num = metaNumber;
/** The shortest decimal of a float32 metadata value (1e-6, not 9.99999997e-7: what the HF config said). */
const f32Decimal = (x: number): number => Number(Math.fround(x).toPrecision(7));
export const metaOptional = (meta: Meta, key: string, fallback: number): number => (meta[key] === undefined ? fallback : num(meta, key));
const opt = metaOptional;
const eps = (meta: Meta, a: string) => f32Decimal(num(meta, `${a}.attention.layer_norm_rms_epsilon`));

/**
 * rope_parameters from a theta key and the scaling TextModel.set_gguf_parameters wrote: none, or linear with its
 * factor; the other types need more than their keys (llama3's rope_freqs tensor, yarn's attention factor) and are
 * refused by name.
 */
function ropeParameters(meta: Meta, a: string, thetaKey = `${a}.rope.freq_base`): Record<string, unknown> {
  const theta = opt(meta, thetaKey, 10000);
  const type = meta[`${a}.rope.scaling.type`];
  if (type === undefined || type === 'none') return { rope_theta: theta, rope_type: 'default' };
  if (type === 'linear') return { rope_theta: theta, rope_type: 'linear', factor: f32Decimal(num(meta, `${a}.rope.scaling.factor`)) };
  throw new GgufError(`GGUF ${a}: rope.scaling.type "${String(type).slice(0, 40)}" is not mapped (none, linear)`);
}

/** A metadata array (per-layer values), refused when missing. */
function metaArray(meta: Meta, key: string): unknown[] {
  const v = meta[key];
  if (!Array.isArray(v)) throw new GgufError(`GGUF metadata ${key}: missing (expected an array)`);
  return v;
}

/**
 * Gemma3NModel stores activation_sparsity_pattern s as the f32 std multiplier Φ⁻¹(s) (-inf for 0). Back to s: the
 * shortest decimal whose multiplier, as Strata computes it (models/families/gemma3n_text.ts), is the stored one
 * (torch and Strata's f32 quantiles may differ by an ulp: then the nearest one Strata reaches).
 */
export function sparsityFromStdMultiplier(scale: number): number {
  if (scale === -Infinity) return 0;
  const target = Math.fround(scale);
  if (!Number.isFinite(target)) throw new GgufError(`GGUF activation_sparsity_scale ${scale}: not the multiplier of a sparsity in [0, 1)`);
  // the multiplier grows with s: bisect for the smallest s reaching the target
  let [low, high] = [1e-9, 1 - 1e-9];
  for (let i = 0; i < 60; i++) {
    const mid = (low + high) / 2;
    if (sparsityStdMultiplier(mid) < target) low = mid;
    else high = mid;
  }
  const reached = [low, high].map(sparsityStdMultiplier).reduce((x, y) => (Math.abs(y - target) < Math.abs(x - target) ? y : x));
  if (Math.abs(reached - target) > 4e-7 * Math.max(1, Math.abs(target))) throw new GgufError(`GGUF activation_sparsity_scale ${scale}: no sparsity in (0, 1) gives it`);
  for (let digits = 1; digits <= 17; digits++)
    for (const bound of [high, low]) {
      const s = Number(bound.toPrecision(digits));
      if (s > 0 && s < 1 && sparsityStdMultiplier(s) === reached) return s;
    }
  return high;
}

/** attention.head_count_kv per layer (an array in hybrids: 0 for a layer without attention). */
function kvPerLayer(meta: Meta, a: string): number[] {
  const kv = meta[`${a}.attention.head_count_kv`];
  const layers = num(meta, `${a}.block_count`);
  if (Array.isArray(kv)) return kv.map(Number);
  return Array.from({ length: layers }, () => opt(meta, `${a}.attention.head_count_kv`, num(meta, `${a}.attention.head_count`)));
}

/**
 * The (period, offset) with layer i flagged exactly when i % period == offset, the smallest period first (Jamba's
 * attn_layer_* / expert_layer_*, which the converter writes only as per-layer facts); undefined when none fits.
 */
function periodOf(flags: boolean[]): { period: number; offset: number } | undefined {
  const n = flags.length;
  if (!flags.includes(true)) return { period: n + 1, offset: n };
  for (let period = 1; period <= n; period++)
    for (let offset = 0; offset < period; offset++) if (flags.every((f, i) => f === (i % period === offset))) return { period, offset };
  return undefined;
}

const LLAMA_ATTENTION = {
  'attn_norm.weight': 'input_layernorm.weight',
  'ffn_norm.weight': 'post_attention_layernorm.weight',
  'attn_q.weight': 'self_attn.q_proj.weight',
  'attn_k.weight': 'self_attn.k_proj.weight',
  'attn_v.weight': 'self_attn.v_proj.weight',
  'attn_output.weight': 'self_attn.o_proj.weight',
};
const TOP = { 'token_embd.weight': 'model.embed_tokens.weight', 'output_norm.weight': 'model.norm.weight', 'output.weight': 'lm_head.weight' };
/** Mamba-1 mixer tensors (MambaModel / JambaModel: A = -exp(A_log), conv1d [I,1,K] squeezed to [I,K]). */
const mamba1Mixer = (p: string) => ({
  'ssm_in.weight': `${p}in_proj.weight`,
  'ssm_in.bias': `${p}in_proj.bias`,
  'ssm_conv1d.weight': `${p}conv1d.weight`,
  'ssm_conv1d.bias': `${p}conv1d.bias`,
  'ssm_x.weight': `${p}x_proj.weight`,
  'ssm_dt.weight': `${p}dt_proj.weight`,
  'ssm_dt.bias': `${p}dt_proj.bias`,
  ssm_a: `${p}A_log`,
  ssm_d: `${p}D`,
  'ssm_out.weight': `${p}out_proj.weight`,
  'ssm_out.bias': `${p}out_proj.bias`,
});
/** Mamba-2 mixer tensors (Mamba2Model: dt_bias renamed ssm_dt.bias, A and D given a trailing 1, norm split [G, I/G]). */
const mamba2Mixer = (p: string) => ({
  'ssm_in.weight': `${p}in_proj.weight`,
  'ssm_in.bias': `${p}in_proj.bias`,
  'ssm_conv1d.weight': `${p}conv1d.weight`,
  'ssm_conv1d.bias': `${p}conv1d.bias`,
  'ssm_dt.bias': `${p}dt_bias`,
  ssm_a: `${p}A_log`,
  ssm_d: `${p}D`,
  'ssm_norm.weight': `${p}norm.weight`,
  'ssm_out.weight': `${p}out_proj.weight`,
  'ssm_out.bias': `${p}out_proj.bias`,
});
const MAMBA2_FLAT = ['ssm_a', 'ssm_d', 'ssm_norm.weight'];
const SQUEEZED_SSM_CONV = ['ssm_conv1d.weight'];
const BACKBONE_TOP = { 'token_embd.weight': 'backbone.embeddings.weight', 'output_norm.weight': 'backbone.norm_f.weight', 'output.weight': 'lm_head.weight' };
/** The SSM metadata every Mamba-style converter writes (MambaModel.set_gguf_parameters and its kin). */
const ssm = (meta: Meta, a: string) => ({
  hidden: num(meta, `${a}.embedding_length`),
  inner: num(meta, `${a}.ssm.inner_size`),
  state: num(meta, `${a}.ssm.state_size`),
  conv: num(meta, `${a}.ssm.conv_kernel`),
  dtRank: num(meta, `${a}.ssm.time_step_rank`),
});
/** Layer index of the first block holding this GGUF tensor, for "has a bias" questions. */
const firstWith = (has: (name: string) => boolean, layers: number, local: string) => Array.from({ length: layers }, (_, i) => has(`blk.${i}.${local}`)).includes(true);

const FALCON_H1_UNIT_MULTIPLIERS = {
  embedding_multiplier: 1,
  lm_head_multiplier: 1,
  attention_in_multiplier: 1,
  attention_out_multiplier: 1,
  key_multiplier: 1,
  ssm_in_multiplier: 1,
  ssm_out_multiplier: 1,
  ssm_multipliers: [1, 1, 1, 1, 1],
  mlp_multipliers: [1, 1],
};

/**
 * Qwen3NextModel's in_proj_qkvz: HF rows are per key head h [q_h (dk), k_h (dk), v_h (r dv), z_h (r dv)], r value
 * heads per key head; the converter wrote [q_0..q_H, k_0..k_H, v_0..v_H] (attn_qkv) then [z_0..z_H] (attn_gate).
 */
function qkvzRows(meta: Meta, a: string): number[] {
  const keyHeads = num(meta, `${a}.ssm.group_count`);
  const dk = num(meta, `${a}.ssm.state_size`);
  const vPerKeyHead = num(meta, `${a}.ssm.inner_size`) / keyHeads;
  const sizes = [dk, dk, vPerKeyHead, vPerKeyHead];
  const starts = sizes.map((_, s) => sizes.slice(0, s).reduce((x, y) => x + y * keyHeads, 0));
  return Array.from({ length: keyHeads }, (_, h) => sizes.flatMap((size, s) => Array.from({ length: size }, (_, j) => starts[s]! + h * size + j))).flat();
}

export const GGUF_LAYOUTS: Record<string, GgufLayout> = {
  // LlamaModel
  llama: {
    modelType: 'llama',
    layers: 'model.layers.',
    block: { ...LLAMA_ATTENTION, 'ffn_gate.weight': 'mlp.gate_proj.weight', 'ffn_up.weight': 'mlp.up_proj.weight', 'ffn_down.weight': 'mlp.down_proj.weight' },
    top: TOP,
    permutedQK: true,
    config: (meta, a, has, vocab) => ({
      model_type: 'llama',
      hidden_size: num(meta, `${a}.embedding_length`),
      intermediate_size: num(meta, `${a}.feed_forward_length`),
      num_hidden_layers: num(meta, `${a}.block_count`),
      num_attention_heads: num(meta, `${a}.attention.head_count`),
      num_key_value_heads: opt(meta, `${a}.attention.head_count_kv`, num(meta, `${a}.attention.head_count`)),
      head_dim: opt(meta, `${a}.attention.key_length`, num(meta, `${a}.embedding_length`) / num(meta, `${a}.attention.head_count`)),
      rms_norm_eps: eps(meta, a),
      max_position_embeddings: num(meta, `${a}.context_length`),
      rope_parameters: ropeParameters(meta, a),
      vocab_size: vocab,
      tie_word_embeddings: !has('output.weight'),
      attention_bias: has('blk.0.attn_q.bias'),
      hidden_act: 'silu',
    }),
  },
  // GraniteHybridModel (Mamba2Model + GraniteMoeModel): dense shared MLP only
  granitehybrid: {
    modelType: 'granitemoehybrid',
    layers: 'model.layers.',
    block: { ...LLAMA_ATTENTION, 'ffn_down.weight': 'shared_mlp.output_linear.weight', ...mamba2Mixer('mamba.') },
    top: TOP,
    permutedQK: true,
    flat: MAMBA2_FLAT,
    squeezed: SQUEEZED_SSM_CONV,
    concat: [[['ffn_gate.weight', 'ffn_up.weight'], 'shared_mlp.input_linear.weight']],
    config: (meta, a, has, vocab) => {
      const kv = kvPerLayer(meta, a);
      const { hidden, inner, state, conv, dtRank: heads } = ssm(meta, a);
      const experts = opt(meta, `${a}.expert_count`, 0);
      if (experts > 0) throw new GgufError(`GGUF ${a} with ${experts} experts: only the shared-MLP (dense) form is mapped`);
      return {
        model_type: 'granitemoehybrid',
        hidden_size: hidden,
        intermediate_size: num(meta, `${a}.feed_forward_length`),
        shared_intermediate_size: opt(meta, `${a}.expert_shared_feed_forward_length`, num(meta, `${a}.feed_forward_length`)),
        num_hidden_layers: kv.length,
        layer_types: kv.map((n) => (n > 0 ? 'full_attention' : 'linear_attention')),
        num_attention_heads: num(meta, `${a}.attention.head_count`),
        num_key_value_heads: Math.max(...kv),
        rms_norm_eps: eps(meta, a),
        max_position_embeddings: num(meta, `${a}.context_length`),
        // the converter records position_embedding_type == "rope" as rope.scaling.finetuned (llama.cpp reads it so)
        position_embedding_type: meta[`${a}.rope.scaling.finetuned`] === true ? 'rope' : 'nope',
        rope_parameters: ropeParameters(meta, a),
        attention_multiplier: opt(meta, `${a}.attention.scale`, 1),
        embedding_multiplier: opt(meta, `${a}.embedding_scale`, 1),
        residual_multiplier: opt(meta, `${a}.residual_scale`, 1),
        logits_scaling: opt(meta, `${a}.logit_scale`, 1),
        num_local_experts: 0,
        num_experts_per_tok: 0,
        mamba_d_conv: conv,
        mamba_d_state: state,
        mamba_n_groups: num(meta, `${a}.ssm.group_count`),
        mamba_n_heads: heads,
        mamba_d_head: inner / heads,
        mamba_expand: inner / hidden,
        mamba_conv_bias: firstWith(has, kv.length, 'ssm_conv1d.bias'),
        mamba_proj_bias: false,
        mamba_chunk_size: 64,
        attention_bias: false,
        hidden_act: 'silu',
        vocab_size: vocab,
        tie_word_embeddings: !has('output.weight'),
        time_step_limit: [0, Infinity],
      };
    },
  },
  // MambaModel (also FalconMamba, which sets ssm.dt_b_c_rms: refused, Strata has no falcon_mamba family)
  mamba: {
    modelType: 'mamba',
    layers: 'backbone.layers.',
    block: { 'attn_norm.weight': 'norm.weight', ...mamba1Mixer('mixer.') },
    top: BACKBONE_TOP,
    squeezed: SQUEEZED_SSM_CONV,
    config: (meta, a, has, vocab) => {
      if (meta[`${a}.ssm.dt_b_c_rms`] === true) throw new GgufError(`GGUF ${a} with ssm.dt_b_c_rms (FalconMamba's dt/B/C norms): not a Strata family`);
      const { hidden, inner, state, conv, dtRank } = ssm(meta, a);
      const layers = num(meta, `${a}.block_count`);
      return {
        model_type: 'mamba',
        hidden_size: hidden,
        intermediate_size: inner,
        expand: inner / hidden,
        state_size: state,
        conv_kernel: conv,
        time_step_rank: dtRank,
        num_hidden_layers: layers,
        use_bias: firstWith(has, layers, 'ssm_in.bias'),
        use_conv_bias: firstWith(has, layers, 'ssm_conv1d.bias'),
        layer_norm_epsilon: eps(meta, a),
        hidden_act: 'silu',
        vocab_size: vocab,
        tie_word_embeddings: !has('output.weight'),
      };
    },
  },
  // Mamba2Model
  mamba2: {
    modelType: 'mamba2',
    layers: 'backbone.layers.',
    block: { 'attn_norm.weight': 'norm.weight', ...mamba2Mixer('mixer.') },
    top: BACKBONE_TOP,
    flat: MAMBA2_FLAT,
    squeezed: SQUEEZED_SSM_CONV,
    config: (meta, a, has, vocab) => {
      const { hidden, inner, state, conv, dtRank: heads } = ssm(meta, a);
      const layers = num(meta, `${a}.block_count`);
      const bias = firstWith(has, layers, 'ssm_in.bias');
      if (bias !== firstWith(has, layers, 'ssm_out.bias')) throw new GgufError(`GGUF ${a}: ssm_in and ssm_out disagree on a bias (HF's use_bias covers both)`);
      return {
        model_type: 'mamba2',
        hidden_size: hidden,
        expand: inner / hidden,
        num_heads: heads,
        head_dim: inner / heads,
        n_groups: num(meta, `${a}.ssm.group_count`),
        // not recorded; any chunk length gives the same result, and Strata runs at most 64 (models/families/mamba2.ts)
        chunk_size: 64,
        state_size: state,
        conv_kernel: conv,
        num_hidden_layers: layers,
        use_bias: bias,
        use_conv_bias: firstWith(has, layers, 'ssm_conv1d.bias'),
        layer_norm_epsilon: eps(meta, a),
        hidden_act: 'silu',
        time_step_limit: [0, Infinity],
        vocab_size: vocab,
        tie_word_embeddings: !has('output.weight'),
      };
    },
  },
  // JambaModel: no RoPE (so no Q/K permutation), experts stacked [E, out, in] per projection, dense layers'
  // MLP as feed_forward.*, attention and expert layers known only from head_count_kv and ffn_gate_inp
  jamba: {
    modelType: 'jamba',
    layers: 'model.layers.',
    block: {
      ...LLAMA_ATTENTION,
      'ffn_norm.weight': 'pre_ff_layernorm.weight',
      ...mamba1Mixer('mamba.'),
      'ssm_dt_norm.weight': 'mamba.dt_layernorm.weight',
      'ssm_b_norm.weight': 'mamba.b_layernorm.weight',
      'ssm_c_norm.weight': 'mamba.c_layernorm.weight',
      'ffn_gate_inp.weight': 'feed_forward.router.weight',
      'ffn_gate.weight': 'feed_forward.gate_proj.weight',
      'ffn_up.weight': 'feed_forward.up_proj.weight',
      'ffn_down.weight': 'feed_forward.down_proj.weight',
    },
    stacked: {
      'ffn_gate_exps.weight': 'feed_forward.experts.{e}.gate_proj.weight',
      'ffn_up_exps.weight': 'feed_forward.experts.{e}.up_proj.weight',
      'ffn_down_exps.weight': 'feed_forward.experts.{e}.down_proj.weight',
    },
    top: { ...TOP, 'output_norm.weight': 'model.final_layernorm.weight' },
    squeezed: SQUEEZED_SSM_CONV,
    config: (meta, a, has, vocab) => {
      const kv = kvPerLayer(meta, a);
      const layers = kv.length;
      const { hidden, inner, state, conv, dtRank } = ssm(meta, a);
      const attention = periodOf(kv.map((n) => n > 0));
      const moe = Array.from({ length: layers }, (_, i) => has(`blk.${i}.ffn_gate_inp.weight`));
      const experts = periodOf(moe);
      if (!experts) throw new GgufError(`GGUF ${a}: expert layers ${moe.flatMap((m, i) => (m ? [i] : [])).join(', ')} follow no expert_layer_period / expert_layer_offset`);
      return {
        model_type: 'jamba',
        hidden_size: hidden,
        intermediate_size: num(meta, `${a}.feed_forward_length`),
        num_hidden_layers: layers,
        num_attention_heads: num(meta, `${a}.attention.head_count`),
        num_key_value_heads: Math.max(...kv),
        ...(attention ? { attn_layer_period: attention.period, attn_layer_offset: attention.offset } : { layer_types: kv.map((n) => (n > 0 ? 'attention' : 'mamba')) }),
        num_experts: moe.includes(true) ? opt(meta, `${a}.expert_count`, 1) : 1,
        num_experts_per_tok: opt(meta, `${a}.expert_used_count`, 1),
        expert_layer_period: experts.period,
        expert_layer_offset: experts.offset,
        mamba_d_state: state,
        mamba_d_conv: conv,
        mamba_expand: inner / hidden,
        mamba_dt_rank: dtRank,
        mamba_conv_bias: firstWith(has, layers, 'ssm_conv1d.bias'),
        mamba_proj_bias: firstWith(has, layers, 'ssm_in.bias'),
        rms_norm_eps: eps(meta, a),
        max_position_embeddings: num(meta, `${a}.context_length`),
        hidden_act: 'silu',
        vocab_size: vocab,
        tie_word_embeddings: !has('output.weight'),
      };
    },
  },
  // LFM2Model (TextModel: no Q/K permutation): the final norm is model.embedding_norm (token_embd_norm), the short
  // conv weight [C, 1, K] squeezed to [C, K], layers' kinds known only from head_count_kv, and feed_forward_length
  // the MLP width after HF's block_auto_adjust_ff_dim arithmetic (so written back with the adjustment off). Conv
  // biases are not mapped: the converter's squeeze(1) fails on them.
  lfm2: {
    modelType: 'lfm2',
    layers: 'model.layers.',
    block: {
      'attn_norm.weight': 'operator_norm.weight',
      'ffn_norm.weight': 'ffn_norm.weight',
      'attn_q.weight': 'self_attn.q_proj.weight',
      'attn_k.weight': 'self_attn.k_proj.weight',
      'attn_v.weight': 'self_attn.v_proj.weight',
      'attn_output.weight': 'self_attn.out_proj.weight',
      'attn_q_norm.weight': 'self_attn.q_layernorm.weight',
      'attn_k_norm.weight': 'self_attn.k_layernorm.weight',
      'shortconv.conv.weight': 'conv.conv.weight',
      'shortconv.in_proj.weight': 'conv.in_proj.weight',
      'shortconv.out_proj.weight': 'conv.out_proj.weight',
      'ffn_gate.weight': 'feed_forward.w1.weight',
      'ffn_up.weight': 'feed_forward.w3.weight',
      'ffn_down.weight': 'feed_forward.w2.weight',
    },
    top: { 'token_embd.weight': 'model.embed_tokens.weight', 'token_embd_norm.weight': 'model.embedding_norm.weight', 'output.weight': 'lm_head.weight' },
    squeezed: ['shortconv.conv.weight'],
    config: (meta, a, has, vocab) => {
      const kv = kvPerLayer(meta, a);
      return {
        model_type: 'lfm2',
        hidden_size: num(meta, `${a}.embedding_length`),
        intermediate_size: num(meta, `${a}.feed_forward_length`),
        block_auto_adjust_ff_dim: false,
        num_hidden_layers: kv.length,
        layer_types: kv.map((n) => (n > 0 ? 'full_attention' : 'conv')),
        num_attention_heads: num(meta, `${a}.attention.head_count`),
        num_key_value_heads: Math.max(...kv) || num(meta, `${a}.attention.head_count`),
        norm_eps: eps(meta, a),
        conv_L_cache: num(meta, `${a}.shortconv.l_cache`),
        conv_bias: false,
        max_position_embeddings: num(meta, `${a}.context_length`),
        rope_parameters: ropeParameters(meta, a),
        vocab_size: vocab,
        tie_word_embeddings: !has('output.weight'),
      };
    },
  },
  // Gemma3NModel (Gemma3Model with norm_shift 0, so norms as stored; TextModel: no Q/K permutation): AltUp's
  // projections stacked [3, H, H], `_scale` tensors given a `.weight`, the KV-sharing layers without k/v (HF has
  // none either), activation_sparsity_pattern stored as Φ⁻¹(s). Not recorded, so taken as HF's defaults / llama.cpp's
  // behaviour: hidden_activation gelu_pytorch_tanh (llama.cpp's only one), altup_coef_clip 120 (HF's default, the
  // clamp of the correction coefficients; llama.cpp applies none), and vocab_size_per_layer_input = the rows of
  // the per-layer table, which the converter pads with zero rows up to vocab_size: ids past HF's per-layer
  // vocabulary (Gemma 3n's 256 multimodal ids) then read a zero row where HF reads row 0, as llama.cpp does.
  gemma3n: {
    modelType: 'gemma3n_text',
    layers: 'model.layers.',
    block: {
      'attn_norm.weight': 'input_layernorm.weight',
      'attn_q.weight': 'self_attn.q_proj.weight',
      'attn_k.weight': 'self_attn.k_proj.weight',
      'attn_v.weight': 'self_attn.v_proj.weight',
      'attn_output.weight': 'self_attn.o_proj.weight',
      'attn_q.bias': 'self_attn.q_proj.bias',
      'attn_k.bias': 'self_attn.k_proj.bias',
      'attn_v.bias': 'self_attn.v_proj.bias',
      'attn_output.bias': 'self_attn.o_proj.bias',
      'attn_q_norm.weight': 'self_attn.q_norm.weight',
      'attn_k_norm.weight': 'self_attn.k_norm.weight',
      'post_attention_norm.weight': 'post_attention_layernorm.weight',
      'ffn_norm.weight': 'pre_feedforward_layernorm.weight',
      'post_ffw_norm.weight': 'post_feedforward_layernorm.weight',
      'ffn_gate.weight': 'mlp.gate_proj.weight',
      'ffn_up.weight': 'mlp.up_proj.weight',
      'ffn_down.weight': 'mlp.down_proj.weight',
      'altup_correct_coef.weight': 'altup.correction_coefs.weight',
      'altup_correct_scale.weight': 'altup.correct_output_scale',
      'altup_predict_coef.weight': 'altup.prediction_coefs.weight',
      'altup_router.weight': 'altup.modality_router.weight',
      'altup_router_norm.weight': 'altup.router_norm.weight',
      'laurel_l.weight': 'laurel.linear_left.weight',
      'laurel_r.weight': 'laurel.linear_right.weight',
      'laurel_post_norm.weight': 'laurel.post_laurel_norm.weight',
      'inp_gate.weight': 'per_layer_input_gate.weight',
      'proj.weight': 'per_layer_projection.weight',
      'post_norm.weight': 'post_per_layer_input_norm.weight',
    },
    top: {
      ...TOP,
      'per_layer_token_embd.weight': 'model.embed_tokens_per_layer.weight',
      'per_layer_model_proj.weight': 'model.per_layer_model_projection.weight',
      'per_layer_proj_norm.weight': 'model.per_layer_projection_norm.weight',
    },
    stacked: { 'altup_proj.weight': 'model.altup_projections.{e}.weight', 'altup_unembd_proj.weight': 'model.altup_unembed_projections.{e}.weight' },
    config: (meta, a, has, vocab, shape) => {
      const ffn = meta[`${a}.feed_forward_length`];
      const perLayer = shape('per_layer_token_embd.weight');
      const laurel = shape('blk.0.laurel_l.weight');
      if (!perLayer || !laurel) throw new GgufError(`GGUF ${a}: ${perLayer ? 'blk.0.laurel_l' : 'per_layer_token_embd'}.weight is missing`);
      const softcap = meta[`${a}.final_logit_softcapping`];
      return {
        model_type: 'gemma3n_text',
        hidden_size: num(meta, `${a}.embedding_length`),
        intermediate_size: Array.isArray(ffn) ? ffn.map(Number) : num(meta, `${a}.feed_forward_length`),
        num_hidden_layers: num(meta, `${a}.block_count`),
        layer_types: metaArray(meta, `${a}.attention.sliding_window_pattern`).map((swa) => (swa === true ? 'sliding_attention' : 'full_attention')),
        num_attention_heads: num(meta, `${a}.attention.head_count`),
        num_key_value_heads: num(meta, `${a}.attention.head_count_kv`),
        head_dim: num(meta, `${a}.attention.key_length`),
        num_kv_shared_layers: num(meta, `${a}.attention.shared_kv_layers`),
        sliding_window: num(meta, `${a}.attention.sliding_window`),
        hidden_activation: 'gelu_pytorch_tanh',
        rms_norm_eps: eps(meta, a),
        max_position_embeddings: num(meta, `${a}.context_length`),
        rope_parameters: {
          full_attention: ropeParameters(meta, a),
          sliding_attention: { rope_theta: num(meta, `${a}.rope.freq_base_swa`), rope_type: 'default' },
        },
        final_logit_softcapping: softcap === undefined ? null : f32Decimal(num(meta, `${a}.final_logit_softcapping`)),
        attention_bias: has('blk.0.attn_q.bias'),
        vocab_size: vocab,
        vocab_size_per_layer_input: perLayer[0],
        hidden_size_per_layer_input: num(meta, `${a}.embedding_length_per_layer_input`),
        altup_active_idx: num(meta, `${a}.altup.active_idx`),
        altup_num_inputs: num(meta, `${a}.altup.num_inputs`),
        altup_correct_scale: has('blk.0.altup_correct_scale.weight'),
        altup_coef_clip: 120,
        laurel_rank: laurel[0],
        activation_sparsity_pattern: metaArray(meta, `${a}.activation_sparsity_scale`).map((x) => sparsityFromStdMultiplier(Number(x))),
        tie_word_embeddings: !has('output.weight'),
      };
    },
  },
  // FalconH1Model (Mamba2Model; LlamaModel's permute unused: llama.cpp's falcon-h1 RoPE is NeoX, HF's order): every
  // muP multiplier folded into a weight and not recorded, so the config says 1 and the weights carry them:
  // embedding and lm_head times embedding / lm_head_multiplier, q/v times attention_in, k times key * attention_in,
  // o times attention_out, gate times mlp_multipliers[0], down times [1], in_proj times ssm_in and its row segments
  // [z, x, B, C, dt] times ssm_multipliers, out_proj times ssm_out. Equal in exact arithmetic (each multiplier
  // scales a linear map's input or output); the f16 file rounds w * m where HF rounds nothing, about 2^-11 relative
  // per weight. Biases are scaled too, which matches HF only for o/out_proj/gate/down (q/k/v and in_proj biases
  // get the input multiplier HF applies before them: Strata then computes what llama.cpp does). Not recorded,
  // taken as llama.cpp's behaviour: a grouped norm after the gate (mamba_norm_before_gate false), no dt clamp.
  'falcon-h1': {
    modelType: 'falcon_h1',
    layers: 'model.layers.',
    block: {
      'attn_norm.weight': 'input_layernorm.weight',
      // the converter matches pre_ff_layernorm.weight whole (FFN_PRE_NORM), so no .weight suffix
      ffn_norm: 'pre_ff_layernorm.weight',
      'ffn_norm.weight': 'pre_ff_layernorm.weight',
      ...Object.fromEntries(['q', 'k', 'v'].flatMap((x) => ['weight', 'bias'].map((t) => [`attn_${x}.${t}`, `self_attn.${x}_proj.${t}`]))),
      'attn_output.weight': 'self_attn.o_proj.weight',
      'attn_output.bias': 'self_attn.o_proj.bias',
      ...Object.fromEntries(['gate', 'up', 'down'].flatMap((x) => ['weight', 'bias'].map((t) => [`ffn_${x}.${t}`, `feed_forward.${x}_proj.${t}`]))),
      ...mamba2Mixer('mamba.'),
    },
    top: { ...TOP, 'output_norm.weight': 'model.final_layernorm.weight' },
    flat: MAMBA2_FLAT,
    squeezed: SQUEEZED_SSM_CONV,
    config: (meta, a, has, vocab) => {
      const { hidden, inner, state, conv, dtRank: heads } = ssm(meta, a);
      const layers = num(meta, `${a}.block_count`);
      return {
        model_type: 'falcon_h1',
        hidden_size: hidden,
        intermediate_size: num(meta, `${a}.feed_forward_length`),
        num_hidden_layers: layers,
        num_attention_heads: num(meta, `${a}.attention.head_count`),
        num_key_value_heads: num(meta, `${a}.attention.head_count_kv`),
        head_dim: num(meta, `${a}.attention.key_length`),
        rms_norm_eps: eps(meta, a),
        max_position_embeddings: num(meta, `${a}.context_length`),
        rope_parameters: ropeParameters(meta, a),
        attention_bias: firstWith(has, layers, 'attn_q.bias'),
        mlp_bias: firstWith(has, layers, 'ffn_gate.bias'),
        projectors_bias: firstWith(has, layers, 'ssm_out.bias'),
        mamba_d_ssm: inner,
        mamba_n_heads: heads,
        mamba_d_head: inner / heads,
        mamba_n_groups: num(meta, `${a}.ssm.group_count`),
        mamba_d_state: state,
        mamba_d_conv: conv,
        // not recorded; any chunk length gives the same result up to rounding, and Strata runs at most 64
        mamba_chunk_size: 64,
        mamba_conv_bias: firstWith(has, layers, 'ssm_conv1d.bias'),
        mamba_proj_bias: firstWith(has, layers, 'ssm_in.bias'),
        mamba_rms_norm: firstWith(has, layers, 'ssm_norm.weight'),
        mamba_norm_before_gate: false,
        time_step_limit: [0, Infinity],
        ...FALCON_H1_UNIT_MULTIPLIERS,
        hidden_act: 'silu',
        vocab_size: vocab,
        tie_word_embeddings: !has('output.weight'),
      };
    },
  },
  // Qwen3NextModel (Qwen2MoeModel, TextModel: no Q/K permutation): experts stacked [E, out, in] per projection,
  // in_proj_qkvz's per-key-head [q k v z] groups regrouped as all q, all k, all v (attn_qkv) and all z (attn_gate),
  // zero-centred norms stored as w + 1 (not the gated DeltaNet norm), A = -exp(A_log), dt_bias renamed, conv1d
  // squeezed, attention layers known from which blocks have attn_q and dense MLP layers from which lack a router.
  // Not recorded, taken as llama.cpp's behaviour: top-k weights renormalised (norm_topk_prob). Files with MTP
  // layers (converted without --no-mtp) are refused: Strata has no MTP head.
  qwen3next: {
    modelType: 'qwen3_next',
    layers: 'model.layers.',
    block: {
      'attn_norm.weight': 'input_layernorm.weight',
      'post_attention_norm.weight': 'post_attention_layernorm.weight',
      ...Object.fromEntries(['q', 'k', 'v'].flatMap((x) => ['weight', 'bias'].map((t) => [`attn_${x}.${t}`, `self_attn.${x}_proj.${t}`]))),
      'attn_output.weight': 'self_attn.o_proj.weight',
      'attn_output.bias': 'self_attn.o_proj.bias',
      'attn_q_norm.weight': 'self_attn.q_norm.weight',
      'attn_k_norm.weight': 'self_attn.k_norm.weight',
      'ssm_conv1d.weight': 'linear_attn.conv1d.weight',
      'ssm_dt.bias': 'linear_attn.dt_bias',
      ssm_a: 'linear_attn.A_log',
      'ssm_ba.weight': 'linear_attn.in_proj_ba.weight',
      'ssm_norm.weight': 'linear_attn.norm.weight',
      'ssm_out.weight': 'linear_attn.out_proj.weight',
      'ffn_gate_inp.weight': 'mlp.gate.weight',
      'ffn_gate_shexp.weight': 'mlp.shared_expert.gate_proj.weight',
      'ffn_up_shexp.weight': 'mlp.shared_expert.up_proj.weight',
      'ffn_down_shexp.weight': 'mlp.shared_expert.down_proj.weight',
      'ffn_gate_inp_shexp.weight': 'mlp.shared_expert_gate.weight',
      'ffn_gate.weight': 'mlp.gate_proj.weight',
      'ffn_up.weight': 'mlp.up_proj.weight',
      'ffn_down.weight': 'mlp.down_proj.weight',
    },
    stacked: {
      'ffn_gate_exps.weight': 'mlp.experts.{e}.gate_proj.weight',
      'ffn_up_exps.weight': 'mlp.experts.{e}.up_proj.weight',
      'ffn_down_exps.weight': 'mlp.experts.{e}.down_proj.weight',
    },
    concat: [[['attn_qkv.weight', 'attn_gate.weight'], 'linear_attn.in_proj_qkvz.weight', qkvzRows]],
    top: TOP,
    squeezed: SQUEEZED_SSM_CONV,
    shiftedNorms: ['attn_norm.weight', 'post_attention_norm.weight', 'attn_q_norm.weight', 'attn_k_norm.weight', 'output_norm.weight'],
    config: (meta, a, has, vocab) => {
      const mtp = opt(meta, `${a}.nextn_predict_layers`, 0);
      if (mtp > 0) throw new GgufError(`GGUF ${a} with ${mtp} MTP layers: not mapped (convert with --no-mtp)`);
      const layers = num(meta, `${a}.block_count`);
      const { inner, state, conv, dtRank: valueHeads } = ssm(meta, a);
      const headDim = num(meta, `${a}.attention.key_length`);
      const all = Array.from({ length: layers }, (_, i) => i);
      return {
        model_type: 'qwen3_next',
        hidden_size: num(meta, `${a}.embedding_length`),
        intermediate_size: num(meta, `${a}.feed_forward_length`),
        num_hidden_layers: layers,
        layer_types: all.map((i) => (has(`blk.${i}.attn_q.weight`) ? 'full_attention' : 'linear_attention')),
        num_attention_heads: num(meta, `${a}.attention.head_count`),
        num_key_value_heads: num(meta, `${a}.attention.head_count_kv`),
        head_dim: headDim,
        rms_norm_eps: eps(meta, a),
        max_position_embeddings: num(meta, `${a}.context_length`),
        rope_parameters: { ...ropeParameters(meta, a), partial_rotary_factor: num(meta, `${a}.rope.dimension_count`) / headDim },
        attention_bias: firstWith(has, layers, 'attn_q.bias'),
        linear_conv_kernel_dim: conv,
        linear_key_head_dim: state,
        linear_num_key_heads: num(meta, `${a}.ssm.group_count`),
        linear_num_value_heads: valueHeads,
        linear_value_head_dim: inner / valueHeads,
        num_experts: opt(meta, `${a}.expert_count`, 0),
        num_experts_per_tok: opt(meta, `${a}.expert_used_count`, 0),
        moe_intermediate_size: opt(meta, `${a}.expert_feed_forward_length`, 0) || 1,
        shared_expert_intermediate_size: opt(meta, `${a}.expert_shared_feed_forward_length`, 0) || 1,
        norm_topk_prob: true,
        decoder_sparse_step: 1,
        mlp_only_layers: all.filter((i) => !has(`blk.${i}.ffn_gate_inp.weight`)),
        hidden_act: 'silu',
        vocab_size: vocab,
        tie_word_embeddings: !has('output.weight'),
      };
    },
  },
};
