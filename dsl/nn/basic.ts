// Building blocks every model uses, as compositions of primitives: linear, RMSNorm (both HF forms), softmax,
// RoPE (full and partial, HF rotate_half layout) and the MLPs.
import { Tensor } from '../tensor.ts';

/** x [..., in] times W [out, in] (HF layout) plus optional bias [out]. */
export function linear(x: Tensor, w: Tensor, bias?: Tensor): Tensor {
  const y = x.matmul(w.T);
  return bias ? y.add(bias) : y;
}

/**
 * RMSNorm over the last axis. `offset` 0 is Llama's x/rms * w; 1 is Gemma's x/rms * (1 + w).
 * Computed in f32 throughout, as HF does before casting back.
 */
export function rmsnorm(x: Tensor, weight: Tensor | undefined, eps: number, offset: 0 | 1 = 0): Tensor {
  const normed = x.mul(x.square().mean(-1, true).add(eps).rsqrt());
  if (!weight) return normed;
  return normed.mul(offset ? weight.add(1) : weight);
}

export function softmax(x: Tensor, axis = -1): Tensor {
  const e = x.sub(x.max(axis, true)).exp();
  return e.div(e.sum(axis, true));
}

/** HF's inverse frequencies for default RoPE, rounded to f32 at each step as torch does. */
export function ropeInvFreq(rotaryDim: number, theta: number): Float32Array {
  const out = new Float32Array(rotaryDim / 2);
  for (let i = 0; i < rotaryDim / 2; i++) out[i] = Math.fround(1 / Math.fround(Math.pow(theta, Math.fround((2 * i) / rotaryDim))));
  return out;
}

/**
 * Rotary embedding on x [S, T, H, D] at positions [S, T] (i32) with invFreq [rotaryDim/2]. Only the first
 * rotaryDim dims rotate (partial RoPE); the layout is HF's rotate_half (first half, second half). `scaling`
 * multiplies cos and sin (the attention_scaling of yarn and longrope).
 */
export function rope(x: Tensor, positions: Tensor, invFreq: Tensor, rotaryDim: number, scaling = 1): Tensor {
  const [S, T, , D] = x.shape as [number, number, number, number];
  const half = rotaryDim / 2;
  const angle = positions.cast('f32').reshape(S, T, 1, 1).mul(invFreq.reshape(1, 1, 1, half)); // [S,T,1,half]
  const cos = scaling === 1 ? angle.cos() : angle.cos().mul(scaling);
  const sin = scaling === 1 ? angle.sin() : angle.sin().mul(scaling);
  const rot = rotaryDim === D ? x : x.slice(3, 0, rotaryDim);
  const x1 = rot.slice(3, 0, half);
  const x2 = rot.slice(3, half, rotaryDim);
  const out = Tensor.concat([x1.mul(cos).sub(x2.mul(sin)), x2.mul(cos).add(x1.mul(sin))], 3);
  return rotaryDim === D ? out : Tensor.concat([out, x.slice(3, rotaryDim, D)], 3);
}

export type Activation = 'silu' | 'gelu' | 'gelu_tanh' | 'relu';

export function activate(x: Tensor, act: string): Tensor {
  switch (act) {
    case 'silu':
    case 'swish':
      return x.silu();
    case 'gelu':
      return x.gelu();
    case 'gelu_pytorch_tanh':
    case 'gelu_new':
    case 'gelu_tanh':
      return x.gelu('tanh');
    case 'relu':
      return x.relu();
    default:
      throw new Error(`activation '${act}' is not supported (silu, gelu, gelu_pytorch_tanh, relu)`);
  }
}

/** act(x Wg^T) * (x Wu^T) then Wd: the gated MLP of Llama-style models. */
export function gatedMlp(x: Tensor, gate: Tensor, up: Tensor, down: Tensor, act = 'silu'): Tensor {
  return linear(activate(linear(x, gate), act).mul(linear(x, up)), down);
}
