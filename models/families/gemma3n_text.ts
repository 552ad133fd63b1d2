// Gemma 3n text decoder (Gemma3nForCausalLM, model_type gemma3n_text): sliding-window and full attention with
// q/k/v RMSNorms and scale 1, the last layers reading an earlier layer's KV, AltUp streams, LAuReL, per-layer
// inputs, gaussian top-k activation sparsity and final logit soft-capping (hybrid-architectures.md §13): its
// config.json schema (defaults from transformers' Gemma3nTextConfig) and its builder. Not on models/decoderStack.ts:
// its residual stream is N AltUp streams made from the embedding (with per-layer inputs beside them) and folded back
// to one before the final norm, so a one-tensor stack would need hooks at both ends that only this family uses.
import { z } from 'zod';
import {
  type AttentionConfig,
  type BaseModelConfig,
  type RopeConfig,
  attentionConfig,
  baseConfig,
  checkLayerCount,
  coreFields,
  layerTypes,
  nonNegativeInt,
  positiveInt,
  resolveRope,
  tokenIdFields,
  withDefault,
} from '../configs/common.ts';
import { lmHead } from '../decoderStack.ts';
import type { ModelDef } from '../model.ts';
import type { LayerMemorySpec } from '../../caches/spec.ts';
import type { StepContext } from '../../caches/stepContext.ts';
import { activate, linear, rope } from '../../dsl/nn/basic.ts';
import { ropeTables } from '../rope.ts';
import { Tensor } from '../../dsl/tensor.ts';

export type KvSharingRole = 'independent' | 'producer' | 'consumer';

export interface Gemma3nTextConfig extends BaseModelConfig<'gemma3n_text'> {
  /** MLP width per layer. */
  intermediateSizes: number[];
  /** Shared by both attention kinds; `scale` is 1 (q and k are RMS-normed); `rope` is the full-attention RoPE. */
  attention: AttentionConfig;
  /** RoPE of 'sliding_attention' layers. */
  slidingRope: RopeConfig;
  slidingWindow: number;
  /** logits = tanh(logits / cap) * cap; null: no capping. */
  finalLogitSoftcapping: number | null;
  kvSharing: {
    numSharedLayers: number;
    roles: KvSharingRole[];
    /** The layer whose K/V each layer attends over: itself, or for a consumer the last earlier layer of its kind. */
    sourceLayer: number[];
  };
  perLayerInput: { vocabSize: number; hiddenSize: number };
  altup: { activeIndex: number; coefClip: number | null; correctScale: boolean; numInputs: number };
  laurelRank: number;
  /** Per layer: the fraction of MLP activations zeroed by the gaussian top-k (0 = dense). */
  activationSparsity: number[];
}

const ropeParameterSet = z.looseObject({
  rope_theta: z.number().positive().nullish(),
  rope_type: z.string().nullish(),
  type: z.string().nullish(),
  partial_rotary_factor: z.number().gt(0).lte(1).nullish(),
});

export const gemma3nTextConfigSchema = z
  .looseObject({
    ...coreFields,
    model_type: z.literal('gemma3n_text'),
    intermediate_size: withDefault(z.union([positiveInt, z.array(positiveInt)]), 16384),
    num_attention_heads: withDefault(positiveInt, 8),
    num_key_value_heads: withDefault(positiveInt, 2),
    head_dim: withDefault(positiveInt, 256),
    hidden_activation: withDefault(z.string(), 'gelu_pytorch_tanh'),
    max_position_embeddings: withDefault(positiveInt, 32768),
    rms_norm_eps: withDefault(z.number().positive(), 1e-6),
    tie_word_embeddings: withDefault(z.boolean(), true),
    attention_bias: withDefault(z.boolean(), false),
    sliding_window: withDefault(positiveInt, 512),
    layer_types: layerTypes({
      sliding_attention: 'sliding_attention',
      full_attention: 'attention',
      attention: 'attention',
    }).nullish(),
    final_logit_softcapping: z.number().positive().nullable().default(30),
    // transformers 4: rope_theta (full), rope_local_base_freq (sliding), rope_scaling (full only).
    rope_theta: z.number().positive().nullish(),
    rope_local_base_freq: z.number().positive().nullish(),
    rope_scaling: z.record(z.string(), z.unknown()).nullish(),
    // transformers 5: {full_attention: {...}, sliding_attention: {...}} (a flat set applies to full attention).
    rope_parameters: ropeParameterSet
      .extend({ full_attention: ropeParameterSet.nullish(), sliding_attention: ropeParameterSet.nullish() })
      .nullish(),
    vocab_size_per_layer_input: withDefault(positiveInt, 262144),
    hidden_size_per_layer_input: withDefault(positiveInt, 256),
    altup_active_idx: withDefault(nonNegativeInt, 0),
    altup_coef_clip: z.number().positive().nullable().default(120),
    altup_correct_scale: withDefault(z.boolean(), true),
    altup_num_inputs: withDefault(positiveInt, 4),
    num_kv_shared_layers: withDefault(nonNegativeInt, 15),
    laurel_rank: withDefault(positiveInt, 64),
    activation_sparsity_pattern: z.union([z.number().min(0).lt(1), z.array(z.number().min(0).lt(1))]).nullish(),
    ...tokenIdFields(2, 1, 0),
  })
  .superRefine((config, context) => {
    checkLayerCount(context, 'layer_types', config.layer_types, config.num_hidden_layers);
    if (Array.isArray(config.intermediate_size)) {
      checkLayerCount(context, 'intermediate_size', config.intermediate_size, config.num_hidden_layers);
    }
    if (Array.isArray(config.activation_sparsity_pattern)) {
      checkLayerCount(context, 'activation_sparsity_pattern', config.activation_sparsity_pattern, config.num_hidden_layers);
    }
    if (config.num_kv_shared_layers >= config.num_hidden_layers) {
      context.addIssue({
        code: 'custom',
        path: ['num_kv_shared_layers'],
        message: `${config.num_kv_shared_layers} leaves no layer to produce KV (num_hidden_layers = ${config.num_hidden_layers})`,
      });
    }
  })
  .transform((config, context): Gemma3nTextConfig => {
    const count = config.num_hidden_layers;
    const layers = [...Array(count).keys()];
    const layerKinds = config.layer_types ?? layers.map((i) => ((i + 1) % 5 === 0 ? 'attention' : 'sliding_attention'));

    const parameters = config.rope_parameters ?? {};
    const { full_attention: fullParameters, sliding_attention: slidingParameters, ...flatParameters } = parameters;
    const headDim = config.head_dim;
    const rope = resolveRope(
      {
        rope_theta: config.rope_theta,
        rope_scaling: config.rope_scaling,
        rope_parameters: fullParameters ?? (Object.keys(flatParameters).length > 0 ? flatParameters : null),
      },
      headDim,
      { theta: 1_000_000 },
    );
    const slidingRope = resolveRope(
      { rope_theta: config.rope_local_base_freq, rope_parameters: slidingParameters },
      headDim,
      { theta: 10_000 },
    );

    // KV sharing as Gemma3nTextConfig.kv_sharing_roles: per kind, layers from first_shared on consume the last
    // earlier layer of their kind.
    const firstShared = count - config.num_kv_shared_layers;
    const roles: KvSharingRole[] = Array(count).fill('independent');
    const sourceLayer = [...layers];
    for (const kind of ['attention', 'sliding_attention'] as const) {
      const ofKind = layers.filter((i) => layerKinds[i] === kind);
      const consumers = ofKind.filter((i) => i >= firstShared);
      if (consumers.length === 0) continue;
      const producers = ofKind.filter((i) => i < firstShared);
      if (producers.length === 0) {
        context.addIssue({
          code: 'custom',
          path: ['num_kv_shared_layers'],
          message: `layer ${consumers[0]} (${kind}) shares KV but no earlier ${kind} layer produces it`,
        });
        return z.NEVER;
      }
      const producer = producers[producers.length - 1]!;
      roles[producer] = 'producer';
      for (const consumer of consumers) {
        roles[consumer] = 'consumer';
        sourceLayer[consumer] = producer;
      }
    }

    const sparsity = config.activation_sparsity_pattern;
    const sparseLayers = count > 10 ? 10 : 0;
    return {
      ...baseConfig(config, 'gemma3n_text', layerKinds, 'dense', config.rms_norm_eps, config.hidden_activation),
      intermediateSizes: Array.isArray(config.intermediate_size)
        ? config.intermediate_size
        : Array(count).fill(config.intermediate_size),
      attention: attentionConfig(config, () => rope, { bias: config.attention_bias, scale: 1 }),
      slidingRope,
      slidingWindow: config.sliding_window,
      finalLogitSoftcapping: config.final_logit_softcapping,
      kvSharing: { numSharedLayers: config.num_kv_shared_layers, roles, sourceLayer },
      perLayerInput: { vocabSize: config.vocab_size_per_layer_input, hiddenSize: config.hidden_size_per_layer_input },
      altup: {
        activeIndex: config.altup_active_idx,
        coefClip: config.altup_coef_clip,
        correctScale: config.altup_correct_scale,
        numInputs: config.altup_num_inputs,
      },
      laurelRank: config.laurel_rank,
      activationSparsity: Array.isArray(sparsity)
        ? sparsity
        : typeof sparsity === 'number'
          ? Array(count).fill(sparsity)
          : layers.map((i) => (i < sparseLayers ? 0.95 : 0)),
    };
  });

/** Gemma3nRMSNorm: x / sqrt(mean(x²) + eps) · w, in f32 (no (1 + w) offset, unlike Gemma 1/2; no weight for v_norm). */
function gemmaNorm(x: Tensor, weight: Tensor | undefined, eps: number): Tensor {
  const normed = x.div(x.square().mean(-1, true).add(eps).sqrt());
  return weight ? normed.mul(weight) : normed;
}

/**
 * The standard normal quantile Φ⁻¹(p) (Acklam's rational approximation, relative error < 1.2e-9, well inside
 * f32 rounding). HF computes Normal(0, 1).icdf(sparsity) in f32, i.e. of 2p - 1 rounded to f32 first.
 */
export function normalQuantile(p: number): number {
  const a = [-39.69683028665376, 220.9460984245205, -275.9285104469687, 138.357751867269, -30.66479806614716, 2.506628277459239];
  const b = [-54.47609879822406, 161.5858368580409, -155.6989798598866, 66.80131188771972, -13.28068155288572];
  const c = [-0.007784894002430293, -0.3223964580411365, -2.400758277161838, -2.549732539343734, 4.374664141464968, 2.938163982698783];
  const d = [0.007784695709041462, 0.3224671290700398, 2.445134137142996, 3.754408661907416];
  const low = 0.02425;
  if (p <= 0 || p >= 1) throw new RangeError(`normalQuantile: p = ${p} must lie in (0, 1)`);
  if (p < low) {
    const q = Math.sqrt(-2 * Math.log(p));
    return (((((c[0]! * q + c[1]!) * q + c[2]!) * q + c[3]!) * q + c[4]!) * q + c[5]!) / ((((d[0]! * q + d[1]!) * q + d[2]!) * q + d[3]!) * q + 1);
  }
  if (p > 1 - low) return -normalQuantile(1 - p);
  const q = p - 0.5;
  const r = q * q;
  return ((((((a[0]! * r + a[1]!) * r + a[2]!) * r + a[3]!) * r + a[4]!) * r + a[5]!) * q) / (((((b[0]! * r + b[1]!) * r + b[2]!) * r + b[3]!) * r + b[4]!) * r + 1);
}

/** The f32 std multiplier of Gemma3nTextMLP._gaussian_topk for a target sparsity. */
export function sparsityStdMultiplier(sparsity: number): number {
  const y = Math.fround(Math.fround(2 * Math.fround(sparsity)) - 1); // torch: 2 * value - 1 in f32
  return Math.fround(normalQuantile((1 + y) / 2));
}

/**
 * Gemma3nTextMLP._gaussian_topk: keeps what exceeds mean + std · Φ⁻¹(sparsity) along the last axis, shifted down
 * by that cutoff (relu(x - cutoff)); std is the population one (unbiased=False). Sparsity 0 is the identity.
 */
export function gaussianTopK(x: Tensor, sparsity: number): Tensor {
  if (sparsity <= 0) return x;
  const mean = x.mean(-1, true);
  const std = x.sub(mean).square().mean(-1, true).sqrt();
  return x.sub(mean.add(std.mul(sparsityStdMultiplier(sparsity)))).relu();
}

export function gemma3nText(config: Gemma3nTextConfig): ModelDef {
  const { hiddenSize: Hd, numLayers, vocabSize: V, normEps: eps, layerKinds, intermediateSizes, hiddenAct } = config;
  const { numHeads: H, numKeyValueHeads: KVH, headDim: D, rope: fullRope, scale, bias: projBias } = config.attention;
  const { slidingRope, slidingWindow, finalLogitSoftcapping: softcap, kvSharing, laurelRank: R } = config;
  const { vocabSize: PV, hiddenSize: P } = config.perLayerInput;
  const { numInputs: N, activeIndex: active, coefClip, correctScale } = config.altup;
  if (!fullRope) throw new Error('gemma3n: full attention without a rope');
  const tables = { full: ropeTables(fullRope, config.attention.maxPositionEmbeddings), sliding: ropeTables(slidingRope, config.attention.maxPositionEmbeddings) };
  for (const [l, kind] of layerKinds.entries())
    if (kind !== 'attention' && kind !== 'sliding_attention') throw new Error(`gemma3n: layer ${l} has kind '${kind}' (attention or sliding_attention only)`);
  const ropeOf = (l: number) => (layerKinds[l] === 'sliding_attention' ? slidingRope : fullRope!);
  const ropeName = (l: number) => (layerKinds[l] === 'sliding_attention' ? 'rope.sliding.inv_freq' : 'rope.full.inv_freq');

  // f32 scalars as HF makes them (python float -> f32 tensor)
  const embedScale = Math.fround(Math.sqrt(Hd));
  const perLayerEmbedScale = Math.fround(Math.sqrt(P));
  const perLayerProjectionScale = Math.fround(Hd ** -0.5);
  const perLayerInputScale = Math.fround(1 / Math.SQRT2);
  const routerInputScale = Math.fround(1 / Hd);

  return {
    family: 'gemma3n_text',
    vocabSize: V,
    hiddenSize: Hd,
    eosTokenIds: config.eosTokenIds,
    memory: () =>
      layerKinds.map((kind, l): LayerMemorySpec => {
        const window = kind === 'sliding_attention' ? { window: slidingWindow } : {};
        const source = kvSharing.sourceLayer[l]!;
        return { kv: { kvHeads: KVH, headDim: D, ...window, ...(source !== l ? { sharesWith: source } : {}) }, states: [] };
      }),
    constants: () => ({
      'rope.full.inv_freq': tables.full.invFreq,
      'rope.sliding.inv_freq': tables.sliding.invFreq,
    }),
    forward(ctx: StepContext): Tensor {
      const { S, T } = ctx;
      const w = (name: string, shape: number[]) => ctx.weight(name, shape);
      const invFreq = { 'rope.full.inv_freq': ctx.constant('rope.full.inv_freq', [fullRope!.rotaryDim / 2]), 'rope.sliding.inv_freq': ctx.constant('rope.sliding.inv_freq', [slidingRope.rotaryDim / 2]) };
      const h0 = w('model.embed_tokens.weight', [V, Hd]).gather(ctx.tokens).mul(embedScale); // [S,T,Hd]

      // Per-layer inputs [S,T,L,P]: a token embedding per layer plus a projection of the main embedding.
      // Ids beyond the per-layer vocabulary (multimodal tokens) read row 0, as Gemma3nModel masks them.
      const perLayerTokens = V > PV ? Tensor.where(ctx.tokens.lt(PV), ctx.tokens, 0) : ctx.tokens;
      const perLayerEmbed = w('model.embed_tokens_per_layer.weight', [PV, numLayers * P]).gather(perLayerTokens).mul(perLayerEmbedScale).reshape(S, T, numLayers, P);
      const perLayerProjection = gemmaNorm(
        linear(h0, w('model.per_layer_model_projection.weight', [numLayers * P, Hd])).mul(perLayerProjectionScale).reshape(S, T, numLayers, P),
        w('model.per_layer_projection_norm.weight', [P]),
        eps,
      );
      const perLayerInputs = perLayerProjection.add(perLayerEmbed).mul(perLayerInputScale);

      // AltUp: N streams [S,T,N,Hd]; stream 0 is the embedding, the others projections of it at its RMS magnitude.
      const magnitude = (x: Tensor) => x.square().mean(-1, true).sqrt();
      const rescaled = (x: Tensor, target: Tensor) => x.mul(target).div(x.square().mean(-1, true).maximum(1e-5).sqrt());
      const target0 = magnitude(h0);
      const streams0 = [h0];
      for (let i = 1; i < N; i++) streams0.push(rescaled(linear(h0, w(`model.altup_projections.${i - 1}.weight`, [Hd, Hd])), target0));
      let streams = Tensor.concat(streams0.map((s) => s.reshape(S, T, 1, Hd)), 2); // [S,T,N,Hd]
      const stream = (x: Tensor, i: number) => x.slice(2, i, i + 1).reshape(S, T, Hd);

      for (let l = 0; l < numLayers; l++) {
        const p = `model.layers.${l}.`;
        const router = (x: Tensor) =>
          linear(gemmaNorm(x, w(`${p}altup.router_norm.weight`, [Hd]), eps).mul(routerInputScale), w(`${p}altup.modality_router.weight`, [N, Hd])).tanh(); // [S,T,N]

        // AltUp predict: stream_i + sum_j coef_ij(active stream) * stream_j
        const predictionCoefs = linear(router(stream(streams, active)), w(`${p}altup.prediction_coefs.weight`, [N * N, N])).reshape(S, T, N, N);
        const predictions = predictionCoefs.matmul(streams).add(streams); // [S,T,N,Hd]
        const activePrediction = stream(predictions, active);
        const x = gemmaNorm(activePrediction, w(`${p}input_layernorm.weight`, [Hd]), eps);

        // LAuReL: low-rank residual branch
        const laurelLow = linear(x, w(`${p}laurel.linear_left.weight`, [R, Hd]));
        const laurel = x.add(gemmaNorm(linear(laurelLow, w(`${p}laurel.linear_right.weight`, [Hd, R])), w(`${p}laurel.post_laurel_norm.weight`, [Hd]), eps));

        // attention: q/k normed with weights, v without; consumers read their producer's K/V
        const bias = (n: string, size: number) => (projBias ? w(`${p}self_attn.${n}.bias`, [size]) : undefined);
        const rotary = ropeOf(l)!.rotaryDim;
        const freq = invFreq[ropeName(l)];
        const ropeScaling = tables[layerKinds[l] === 'sliding_attention' ? 'sliding' : 'full'].attentionScaling;
        const q = rope(gemmaNorm(linear(x, w(`${p}self_attn.q_proj.weight`, [H * D, Hd]), bias('q_proj', H * D)).reshape(S, T, H, D), w(`${p}self_attn.q_norm.weight`, [D]), eps), ctx.positions, freq, rotary, ropeScaling);
        let k: Tensor | undefined;
        let v: Tensor | undefined;
        if (kvSharing.sourceLayer[l] === l) {
          k = rope(gemmaNorm(linear(x, w(`${p}self_attn.k_proj.weight`, [KVH * D, Hd]), bias('k_proj', KVH * D)).reshape(S, T, KVH, D), w(`${p}self_attn.k_norm.weight`, [D]), eps), ctx.positions, freq, rotary, ropeScaling);
          v = gemmaNorm(linear(x, w(`${p}self_attn.v_proj.weight`, [KVH * D, Hd]), bias('v_proj', KVH * D)).reshape(S, T, KVH, D), undefined, eps);
        }
        const attended = ctx.attend(l, q, k, v, { scale });
        const attn = gemmaNorm(linear(attended.reshape(S, T, H * D), w(`${p}self_attn.o_proj.weight`, [Hd, H * D]), bias('o_proj', Hd)), w(`${p}post_attention_layernorm.weight`, [Hd]), eps);
        const attnLaurel = activePrediction.add(attn).add(laurel).div(Math.SQRT2);

        // MLP (GeGLU), with gaussian top-k sparsity on the gate where the layer asks for it
        const I = intermediateSizes[l]!;
        const xf = gemmaNorm(attnLaurel, w(`${p}pre_feedforward_layernorm.weight`, [Hd]), eps);
        const gate = gaussianTopK(linear(xf, w(`${p}mlp.gate_proj.weight`, [I, Hd])), config.activationSparsity[l]!);
        const mlp = linear(activate(gate, hiddenAct).mul(linear(xf, w(`${p}mlp.up_proj.weight`, [I, Hd]))), w(`${p}mlp.down_proj.weight`, [Hd, I]));
        const activated = attnLaurel.add(gemmaNorm(mlp, w(`${p}post_feedforward_layernorm.weight`, [Hd]), eps));

        // AltUp correct: every stream moves by the innovation of the active one, weighted per stream
        let correctionWeight = w(`${p}altup.correction_coefs.weight`, [N, N]);
        if (coefClip !== null) correctionWeight = correctionWeight.maximum(-coefClip).minimum(coefClip); // HF clamps these at inference too
        const correctionCoefs = linear(router(activated), correctionWeight).add(1); // [S,T,N]
        const innovation = activated.sub(activePrediction).reshape(S, T, 1, Hd);
        const corrected = innovation.mul(correctionCoefs.reshape(S, T, N, 1)).add(predictions);

        // per-layer input: gated by the (scaled) active stream, projected back and added to streams 1..N-1
        let first = stream(corrected, active);
        if (correctScale) first = first.mul(w(`${p}altup.correct_output_scale`, [Hd]));
        const perLayerInput = perLayerInputs.slice(2, l, l + 1).reshape(S, T, P);
        const gated = activate(linear(first, w(`${p}per_layer_input_gate.weight`, [P, Hd])), hiddenAct).mul(perLayerInput);
        const perLayerOut = gemmaNorm(linear(gated, w(`${p}per_layer_projection.weight`, [Hd, P])), w(`${p}post_per_layer_input_norm.weight`, [Hd]), eps);
        streams = N === 1 ? corrected : Tensor.concat([corrected.slice(2, 0, 1), corrected.slice(2, 1, N).add(perLayerOut.reshape(S, T, 1, Hd))], 2);
      }

      // Streams back to one: unembed projections at stream 0's magnitude, then the mean of all streams.
      const last0 = stream(streams, 0);
      const targetLast = magnitude(last0);
      let sum = last0;
      for (let i = 1; i < N; i++) sum = sum.add(rescaled(linear(stream(streams, i), w(`model.altup_unembed_projections.${i - 1}.weight`, [Hd, Hd])), targetLast));
      return gemmaNorm(sum.div(N), w('model.norm.weight', [Hd]), eps);
    },
    logits(ctx, hidden) {
      const logits = lmHead(ctx, config, hidden);
      return softcap === null ? logits : logits.div(softcap).tanh().mul(softcap);
    },
  };
}
