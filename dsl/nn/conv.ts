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

/**
 * causalConv1d over a ring of the last K inputs: slot q % K of `ring` [B,C,K] holds the input of position q
 * (positions before 0 read zeros: a fresh ring is zero and its slots are written in position order). The step's
 * tokens are at positions start[b] + t. The new ring has slot q % K set for the real tokens' positions q (the
 * slot of position end - K, which no later step reads, keeps what it held). The Mamba-2 decode kernel reads and
 * writes this layout (compiler/ssdStep.ts): a ring lets it write a slot while other workgroups read the rest.
 *
 *   x [B,T,C], ring [B,C,K], weight [C,K] (or [C,1,K]), bias [C], valid [B] i32, start [B] i32 -> y [B,T,C], ring
 */
export function causalConv1dRing(x: Tensor, ring: Tensor, weight: Tensor, bias: Tensor | undefined, valid: Tensor, start: Tensor): { y: Tensor; newState: Tensor } {
  const [B, , C] = x.shape as [number, number, number];
  const K = weight.shape[weight.rank - 1]!;
  if (ring.shape.join() !== [B, C, K].join()) throw new ShapeError(`[causalConv1dRing] ring (${ring.shape.join(',')}) must be (${B},${C},${K}) for x (${x.shape.join(',')}) and K=${K}`);
  const slotRows = (slots: Tensor, width: number) => iota(slots.shape, 0).mul(width).add(slots); // [B, n] rows of a [B*width, C] table
  // the K-1 inputs before the step, oldest first: position start-K+1+j sits in slot (start + 1 + j) % K
  const past = iota([B, K - 1], 1).add(start.reshape(B, 1)).add(1).mod(K);
  const byTime = ring.permute(0, 2, 1).reshape(B * K, C);
  const window = byTime.gather(slotRows(past, K)).permute(0, 2, 1); // [B,C,K-1]
  const { y, newState } = causalConv1d(x, window, weight, bias, valid);
  // slot s holds the latest position q < end with q % K == s, q = end-1-age, age = (end-1-s) mod K; newState
  // holds positions end-K+1 .. end-1 (ages K-2 .. 0), so the slot of age K-1 keeps its value
  const end = start.add(valid).reshape(B, 1);
  const age = end.sub(1).sub(iota([B, K], 1)).add(K).mod(K); // end-1-s >= -K, so + K keeps it non-negative
  const fromState = newState.permute(0, 2, 1).reshape(B * (K - 1), C).gather(slotRows(age.minimum(K - 2).mul(-1).add(K - 2), K - 1)); // [B,K,C]
  const keep = age.eq(K - 1).reshape(B, K, 1).broadcastTo([B, K, C]);
  return { y, newState: Tensor.where(keep, ring.permute(0, 2, 1), fromState).permute(0, 2, 1) };
}
