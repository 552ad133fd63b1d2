// Falcon-H1 (FalconH1ForCausalLM): attention and a Mamba-2 mixer side by side on the same normed input in every
// layer, then a SwiGLU MLP; muP multipliers everywhere (hybrid-architectures.md §8). Every layer keeps both a
// KV cache and conv/SSM state.
import type { FalconH1Config } from './config.ts';
import type { ModelDef } from './model.ts';
import type { LayerMemorySpec } from '../caches/spec.ts';
import type { StepContext } from '../caches/stepContext.ts';
import { activate, linear, rmsnorm, rope } from '../dsl/nn/basic.ts';
import { ropeTables } from './rope.ts';
import { causalConv1d } from '../dsl/nn/conv.ts';
import { gatedRmsNorm, ssdScan } from '../dsl/nn/mamba2.ts';
import type { Tensor } from '../dsl/tensor.ts';

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
  const { hiddenSize: Hd, numLayers, vocabSize: V, intermediateSize: F, normEps: eps, mamba: m, multipliers: mult } = config;
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
    const conv = causalConv1d(xBC, ctx.readState(l, 'conv'), w('conv1d.weight', [convDim, 1, K]), m.convBias ? w('conv1d.bias', [convDim]) : undefined, ctx.valid);
    const [xs, Bm, Cm] = activate(conv.y, config.hiddenAct).split(-1, [I, G * N, G * N]) as [Tensor, Tensor, Tensor];
    let dt = dtRaw.add(w('dt_bias', [Hh])).softplus();
    const [lo, hi] = m.timeStepLimit;
    if (lo > 0) dt = dt.maximum(lo);
    if (hi < Infinity) dt = dt.minimum(hi);
    const scan = ssdScan({
      x: xs.reshape(S, T, Hh, P),
      dt,
      A: w('A_log', [Hh]).exp().neg(),
      Bm: Bm.reshape(S, T, G, N),
      Cm: Cm.reshape(S, T, G, N),
      D: w('D', [Hh]),
      h0: ctx.readState(l, 'ssm'),
      valid: ctx.valid,
      chunkSize: Math.min(m.chunkSize, 64),
    });
    ctx.writeState(l, 'conv', conv.newState);
    ctx.writeState(l, 'ssm', scan.hT);
    const y = scan.y.reshape(S, T, I);
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

  return {
    family: 'falcon_h1',
    vocabSize: V,
    hiddenSize: Hd,
    eosTokenIds: config.eosTokenIds,
    memory: () =>
      Array.from(
        { length: numLayers },
        (): LayerMemorySpec => ({
          kv: { kvHeads: KVH, headDim: D },
          states: [
            { name: 'conv', shape: [convDim, K - 1] }, // the last K-1 inputs of the conv, oldest first
            { name: 'ssm', shape: [Hh, P, N] },
          ],
        }),
      ),
    constants: () => ({ 'rope.inv_freq': ropeTable.invFreq, 'mamba.mup_vector': falconH1MupVector(config) }),
    forward(ctx: StepContext): Tensor {
      const w = (name: string, shape: number[]) => ctx.weight(name, shape);
      const invFreq = ctx.constant('rope.inv_freq', [rotary / 2]);
      const mup = ctx.constant('mamba.mup_vector', [projSize]);
      let h = w('model.embed_tokens.weight', [V, Hd]).gather(ctx.tokens).mul(mult.embedding); // [S,T,Hd]
      for (let l = 0; l < numLayers; l++) {
        const p = `model.layers.${l}.`;
        const x = rmsnorm(h, w(`${p}input_layernorm.weight`, [Hd]), eps);
        const ssm = mixer(ctx, l, x, mup).mul(mult.ssmOut);
        const attn = attention(ctx, l, x.mul(mult.attentionIn), invFreq).mul(mult.attentionOut);
        h = h.add(ssm.add(attn));
        h = h.add(mlp(ctx, l, rmsnorm(h, w(`${p}pre_ff_layernorm.weight`, [Hd]), eps)));
      }
      return rmsnorm(h, w('model.final_layernorm.weight', [Hd]), eps);
    },
    logits(ctx, hidden) {
      return linear(hidden, ctx.weight(config.tieWordEmbeddings ? 'model.embed_tokens.weight' : 'lm_head.weight', [V, Hd])).mul(mult.lmHead);
    },
  };
}
