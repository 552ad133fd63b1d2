// Falcon-H1 (FalconH1ForCausalLM): attention and a Mamba-2 mixer side by side on the same normed input in every
// layer, then a SwiGLU MLP; muP multipliers everywhere (hybrid-architectures.md §8). Every layer keeps both a
// KV cache and conv/SSM state. Its config.json schema (defaults from transformers' FalconH1Config) and its
// builder on the shared decoder stack.
import { z } from 'zod';
import {
  type AttentionConfig,
  type BaseModelConfig,
  type Mamba2MixerConfig,
  attentionConfig,
  baseConfig,
  checkHybridMamba2,
  checkKeyValueHeads,
  coreFields,
  hybridMamba2Fields,
  positiveInt,
  resolveHybridMamba2,
  ropeFields,
  tokenIdFields,
  withDefault,
} from '../configs/common.ts';
import { decoderStack } from '../decoderStack.ts';
import type { ModelDef } from '../model.ts';
import type { LayerMemorySpec } from '../../caches/spec.ts';
import { type StepContext, kernelOptions } from '../../caches/stepContext.ts';
import { activate, linear, rope } from '../../dsl/nn/basic.ts';
import { ropeTables } from '../rope.ts';
import { gatedRmsNorm, mamba2ConvScan } from '../../dsl/nn/mamba2.ts';
import type { Tensor } from '../../dsl/tensor.ts';

export interface FalconH1Multipliers {
  /** Embeddings are multiplied by this. */
  embedding: number;
  /** Logits are multiplied by this. */
  lmHead: number;
  /** The normed input of attention is multiplied by this. */
  attentionIn: number;
  /** Attention output is multiplied by this. */
  attentionOut: number;
  /** k (not q, not v) is multiplied by this before RoPE. */
  key: number;
  /** The normed input of the mixer is multiplied by this. */
  ssmIn: number;
  /** Mixer output is multiplied by this. */
  ssmOut: number;
  /** in_proj output segments [z, x, B, C, dt] are multiplied by these (the muP vector, not in safetensors). */
  ssm: [number, number, number, number, number];
  /** MLP: up(x) * silu(gate(x) * mlpGate), then down(...) * mlpDown. */
  mlpGate: number;
  mlpDown: number;
}

export interface FalconH1Config extends BaseModelConfig<'falcon_h1'> {
  intermediateSize: number;
  mlpBias: boolean;
  attention: AttentionConfig;
  mamba: Mamba2MixerConfig;
  multipliers: FalconH1Multipliers;
}

export const falconH1ConfigSchema = z
  .looseObject({
    ...coreFields,
    model_type: z.literal('falcon_h1'),
    intermediate_size: withDefault(positiveInt, 14336),
    num_attention_heads: withDefault(positiveInt, 32),
    num_key_value_heads: positiveInt.nullable().default(8),
    head_dim: positiveInt.nullish(),
    hidden_act: withDefault(z.string(), 'silu'),
    rms_norm_eps: withDefault(z.number().positive(), 1e-5),
    max_position_embeddings: withDefault(positiveInt, 8192),
    tie_word_embeddings: withDefault(z.boolean(), false),
    attention_bias: withDefault(z.boolean(), false),
    mlp_bias: withDefault(z.boolean(), false),
    projectors_bias: withDefault(z.boolean(), false),
    // Absent: 1024 (the class default); null: mamba_expand * hidden_size.
    mamba_d_ssm: positiveInt.nullable().default(1024),
    mamba_norm_before_gate: withDefault(z.boolean(), true),
    mamba_rms_norm: withDefault(z.boolean(), false),
    embedding_multiplier: withDefault(z.number(), 1),
    lm_head_multiplier: withDefault(z.number(), 1),
    attention_in_multiplier: withDefault(z.number(), 1),
    attention_out_multiplier: withDefault(z.number(), 1),
    key_multiplier: withDefault(z.number(), 1),
    ssm_in_multiplier: withDefault(z.number(), 1),
    ssm_out_multiplier: withDefault(z.number(), 1),
    ssm_multipliers: withDefault(z.tuple([z.number(), z.number(), z.number(), z.number(), z.number()]), [1, 1, 1, 1, 1]),
    mlp_multipliers: withDefault(z.tuple([z.number(), z.number()]), [1, 1]),
    ...hybridMamba2Fields,
    ...ropeFields,
    ...tokenIdFields(1, 2, 0),
  })
  .superRefine((config, context) => {
    checkKeyValueHeads(context, config);
    checkHybridMamba2(context, config, config.mamba_d_ssm ?? config.mamba_expand * config.hidden_size);
  })
  .transform((config): FalconH1Config => {
    const [z, x, b, c, dt] = config.ssm_multipliers;
    return {
      ...baseConfig(config, 'falcon_h1', 'attention_mamba2', 'dense', config.rms_norm_eps, config.hidden_act),
      intermediateSize: config.intermediate_size,
      mlpBias: config.mlp_bias,
      // transformers 5's default theta (10000) when neither rope_parameters nor rope_theta is given;
      // transformers 4 configs always carry rope_theta.
      attention: attentionConfig(config, { theta: 10000 }, { bias: config.attention_bias }),
      mamba: resolveHybridMamba2(config, config.mamba_d_ssm ?? config.mamba_expand * config.hidden_size, {
        gatedNorm: config.mamba_rms_norm ? 'per_group' : 'none',
        normBeforeGate: config.mamba_norm_before_gate,
        outProjBias: config.projectors_bias,
      }),
      multipliers: {
        embedding: config.embedding_multiplier,
        lmHead: config.lm_head_multiplier,
        attentionIn: config.attention_in_multiplier,
        attentionOut: config.attention_out_multiplier,
        key: config.key_multiplier,
        ssmIn: config.ssm_in_multiplier,
        ssmOut: config.ssm_out_multiplier,
        ssm: [z, x, b, c, dt],
        mlpGate: config.mlp_multipliers[0],
        mlpDown: config.mlp_multipliers[1],
      },
    };
  });

/**
 * HF's compute_mup_vector: the per-channel multiplier of in_proj's output, one value per segment
 * [z (I) | x (I) | B (G N) | C (G N) | dt (Hh)]. Not in the checkpoint; rebuilt from ssm_multipliers.
 */
export function falconH1MupVector(config: FalconH1Config): Float32Array {
  const { innerSize: I, numGroups: G, stateSize: N, numHeads: Hh } = config.mamba;
  const sizes = [I, I, G * N, G * N, Hh];
  const out = new Float32Array(2 * I + 2 * G * N + Hh);
  let at = 0;
  sizes.forEach((size, segment) => {
    out.fill(config.multipliers.ssm[segment]!, at, at + size);
    at += size;
  });
  return out;
}

export function falconH1(config: FalconH1Config): ModelDef {
  const { hiddenSize: Hd, numLayers, intermediateSize: F, mamba: m, multipliers: mult } = config;
  const { numHeads: H, numKeyValueHeads: KVH, headDim: D, rope: ropeCfg, scale } = config.attention;
  if (!ropeCfg) throw new Error('falcon_h1: attention without a rope');
  const rotary = ropeCfg.rotaryDim;
  const ropeTable = ropeTables(ropeCfg, config.attention.maxPositionEmbeddings);
  const { numHeads: Hh, headDim: P, numGroups: G, stateSize: N, convKernel: K, innerSize: I, convDim } = m;
  const projSize = I + convDim + Hh;

  /** The Mamba-2 branch on the normed input x [S,T,Hd] (FalconH1Mixer.torch_forward); reads and writes the layer's state. */
  function mixer(ctx: StepContext, l: number, x: Tensor, mup: Tensor): Tensor {
    const { S, T } = ctx;
    const p = `model.layers.${l}.mamba.`;
    const w = (name: string, shape: number[]) => ctx.weight(p + name, shape);
    const zxbcdt = linear(x.mul(mult.ssmIn), w('in_proj.weight', [projSize, Hd]), m.inProjBias ? w('in_proj.bias', [projSize]) : undefined).mul(mup);
    const [z, xBC, dtRaw] = zxbcdt.split(-1, [I, convDim, Hh]) as [Tensor, Tensor, Tensor];
    const scan = mamba2ConvScan(
      xBC,
      dtRaw,
      { convWeight: w('conv1d.weight', [convDim, 1, K]), convBias: m.convBias ? w('conv1d.bias', [convDim]) : undefined, dtBias: w('dt_bias', [Hh]), ALog: w('A_log', [Hh]), D: w('D', [Hh]) },
      { conv: ctx.readState(l, 'conv'), ssm: ctx.readState(l, 'ssm'), start: ctx.start },
      ctx.valid,
      {
        numHeads: Hh,
        headDim: P,
        nGroups: G,
        stateSize: N,
        eps: m.normEps,
        normGroups: G,
        timeStepLimit: m.timeStepLimit,
        activation: config.hiddenAct,
        chunkSize: Math.min(m.chunkSize, 64),
        fusedStep: kernelOptions.fusedSsdStep,
        fusedScan: kernelOptions.fusedSsdScan,
      },
    );
    ctx.writeState(l, 'conv', scan.state.conv);
    ctx.writeState(l, 'ssm', scan.state.ssm);
    const y = scan.y;
    // mamba_rms_norm: per-group gated RMSNorm in the order mamba_norm_before_gate says; otherwise y * silu(z).
    const o = m.gatedNorm === 'none' ? y.mul(z.silu()) : gatedRmsNorm(y, z, w('norm.weight', [I]), m.gatedNorm === 'per_group' ? G : 1, m.normEps, m.normBeforeGate);
    return linear(o, w('out_proj.weight', [Hd, I]), m.outProjBias ? w('out_proj.bias', [Hd]) : undefined);
  }

  function attention(ctx: StepContext, l: number, x: Tensor, invFreq: Tensor): Tensor {
    const { S, T } = ctx;
    const p = `model.layers.${l}.self_attn.`;
    const w = (name: string, shape: number[]) => ctx.weight(p + name, shape);
    const bias = (n: string, size: number) => (config.attention.bias ? w(`${n}.bias`, [size]) : undefined);
    const q = linear(x, w('q_proj.weight', [H * D, Hd]), bias('q_proj', H * D)).reshape(S, T, H, D);
    // key_multiplier scales k only, before RoPE
    const k = linear(x, w('k_proj.weight', [KVH * D, Hd]), bias('k_proj', KVH * D)).mul(mult.key).reshape(S, T, KVH, D);
    const v = linear(x, w('v_proj.weight', [KVH * D, Hd]), bias('v_proj', KVH * D)).reshape(S, T, KVH, D);
    const a = ctx.attend(l, rope(q, ctx.positions, invFreq, rotary, ropeTable.attentionScaling), rope(k, ctx.positions, invFreq, rotary, ropeTable.attentionScaling), v, { scale });
    return linear(a.reshape(S, T, H * D), w('o_proj.weight', [Hd, H * D]), bias('o_proj', Hd));
  }

  function mlp(ctx: StepContext, l: number, x: Tensor): Tensor {
    const p = `model.layers.${l}.feed_forward.`;
    const w = (name: string, shape: number[]) => ctx.weight(p + name, shape);
    const bias = (n: string, size: number) => (config.mlpBias ? w(`${n}.bias`, [size]) : undefined);
    const gate = linear(x, w('gate_proj.weight', [F, Hd]), bias('gate_proj', F)).mul(mult.mlpGate);
    const up = linear(x, w('up_proj.weight', [F, Hd]), bias('up_proj', F));
    return linear(up.mul(activate(gate, config.hiddenAct)), w('down_proj.weight', [Hd, F]), bias('down_proj', Hd)).mul(mult.mlpDown);
  }

  return decoderStack({
    config,
    names: { finalNorm: 'model.final_layernorm.weight' },
    memory: () =>
      Array.from(
        { length: numLayers },
        (): LayerMemorySpec => ({
          kv: { kvHeads: KVH, headDim: D },
          states: [
            { name: 'conv', shape: [convDim, K] }, // a ring of the conv's last inputs: slot q % K holds position q's
            { name: 'ssm', shape: [Hh, P, N] },
          ],
        }),
      ),
    constants: { 'rope.inv_freq': ropeTable.invFreq, 'mamba.mup_vector': falconH1MupVector(config) },
    embeddingMultiplier: mult.embedding,
    prepare: (ctx) => ({ invFreq: ctx.constant('rope.inv_freq', [rotary / 2]), mup: ctx.constant('mamba.mup_vector', [projSize]) }),
    block({ ctx, index: l, norm }, h, { invFreq, mup }) {
      const x = norm(h, 'input_layernorm');
      const ssm = mixer(ctx, l, x, mup).mul(mult.ssmOut);
      const attn = attention(ctx, l, x.mul(mult.attentionIn), invFreq).mul(mult.attentionOut);
      h = h.add(ssm.add(attn));
      return h.add(mlp(ctx, l, norm(h, 'pre_ff_layernorm')));
    },
    scaleLogits: (logits) => logits.mul(mult.lmHead),
  });
}
