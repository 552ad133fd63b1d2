// Causal depthwise conv1d with a carried state (hybrid-architectures.md §1.3), as used before every SSM and
// short-conv mixer. The state keeps the previous K-1 inputs (llama.cpp's layout; HF keeps K columns, one unused).
import { ShapeError } from '../../compiler/ops.ts';
import { Tensor } from '../tensor.ts';
import { iota } from '../trace.ts';

/** [B, T] bool: true for the real tokens of each sequence (t < valid[b]); padding sits at the end of a chunk. */
export function validMask(valid: Tensor, batch: number, tokens: number): Tensor {
  return iota([batch, tokens], 1).lt(valid.reshape(batch, 1));
}

/**
 * y_t[c] = bias[c] + sum_k W[c,k] * u_{t-K+1+k}[c] over concat(state, x) along time (PyTorch cross-correlation:
 * W[c,K-1] multiplies the current token). Tokens t >= valid[b] are padding: their outputs are meaningless and
 * the new state is the K-1 inputs ending at the last real token, i.e. window positions valid..valid+K-2 of the
 * concatenation, so a padded chunk leaves the state as if only its real tokens had been fed.
 *
 *   x [B,T,C], convState [B,C,K-1] (oldest first), weight [C,K] (or HF's [C,1,K]), bias [C], valid [B] i32
 *   -> y [B,T,C], newState [B,C,K-1]
 */
export function causalConv1d(x: Tensor, convState: Tensor, weight: Tensor, bias: Tensor | undefined, valid: Tensor): { y: Tensor; newState: Tensor } {
  const [B, T, C] = x.shape as [number, number, number];
  const w = weight.rank === 3 ? weight.reshape(weight.shape[0]!, weight.shape[2]!) : weight; // [C,K]
  const K = w.shape[1]!;
  if (w.shape[0] !== C) throw new ShapeError(`[causalConv1d] weight (${weight.shape.join(',')}) has ${w.shape[0]} channels, x (${x.shape.join(',')}) has ${C}`);
  if (K < 2) throw new ShapeError(`[causalConv1d] kernel size ${K}: needs K >= 2 (the state holds K-1 columns)`);
  if (convState.shape.join() !== [B, C, K - 1].join())
    throw new ShapeError(`[causalConv1d] convState (${convState.shape.join(',')}) must be (${B},${C},${K - 1}) for x (${x.shape.join(',')}) and K=${K}`);
  const span = K - 1 + T;
  const window = Tensor.concat([convState, x.permute(0, 2, 1)], 2); // [B,C,K-1+T]

  // Output t reads window positions t..t+K-1: a gather of time rows at iota(t)+iota(k), summed over k
  // (K <= 16, so the sum is an inline loop and the windows are never materialised).
  const timeMajor = window.permute(2, 0, 1); // [K-1+T, B, C]
  const taps = iota([T, K], 0).add(iota([T, K], 1)); // [T,K] i32
  const windows = timeMajor.gather(taps).permute(2, 0, 3, 1); // [B,T,C,K]
  let y = windows.mul(w).sum(-1); // [B,T,C]
  if (bias) y = y.add(bias);

  // New state: positions valid[b] + j, j < K-1, of each sequence's window (a per-batch row of a [B*span, C] table).
  const rows = window.permute(0, 2, 1).reshape(B * span, C);
  const at = iota([B, K - 1], 0).mul(span).add(valid.reshape(B, 1)).add(iota([B, K - 1], 1)); // [B,K-1]
  const newState = rows.gather(at).permute(0, 2, 1); // [B,C,K-1]
  return { y, newState };
}
