// What llama.cpp's converter (convert_hf_to_gguf.py, gguf-py constants / tensor_mapping) writes for each
// architecture Strata maps, one entry per GGUF `general.architecture`: the HF config.json rebuilt from the
// metadata, and the GGUF tensor names to HF names with what the converter changed in them (runtime/gguf.ts undoes
// it). Each entry names the converter class it inverts.
import { StrataUserError } from '../base/errors.ts';

export class GgufError extends StrataUserError {
  override name = 'GgufError';
}

export type Meta = Record<string, unknown>;

/** How one architecture's GGUF tensors become HF tensors. */
export interface GgufLayout {
  modelType: string;
  config(meta: Meta, arch: string, has: (name: string) => boolean, vocab: number): Record<string, unknown>;
  /** HF prefix of layer N's tensors (N and a dot follow). */
  layers: string;
  /** HF name for a GGUF tensor name within a block (`blk.N.` stripped) or at the top level. */
  block: Record<string, string>;
  top: Record<string, string>;
  /** GGUF block tensors concatenated along rows into one HF tensor: [gguf names] -> HF name. */
  concat?: [string[], string][];
  /** 3-D GGUF tensors of experts stacked on the outer dim -> the HF name of one expert, `{e}` its index. */
  experts?: Record<string, string>;
  /** attn_q/attn_k rows were permuted for llama.cpp's RoPE (LlamaModel.permute). */
  permutedQK?: boolean;
  /** GGUF block tensors the converter gave a trailing dim or split into groups, whose HF form is 1-D. */
  flat?: string[];
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
      rope_parameters: { rope_theta: opt(meta, `${a}.rope.freq_base`, 10000), rope_type: 'default' },
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
        rope_parameters: { rope_theta: opt(meta, `${a}.rope.freq_base`, 10000), rope_type: 'default' },
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
    experts: {
      'ffn_gate_exps.weight': 'feed_forward.experts.{e}.gate_proj.weight',
      'ffn_up_exps.weight': 'feed_forward.experts.{e}.up_proj.weight',
      'ffn_down_exps.weight': 'feed_forward.experts.{e}.down_proj.weight',
    },
    top: { ...TOP, 'output_norm.weight': 'model.final_layernorm.weight' },
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
};
