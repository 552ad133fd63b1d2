// Masked attention: the composition softmax(where(mask, scale * q kT, -inf)) v, and its fused kernel.
// The fused kernel is the default; the composition is its reference (tests) and the fallback (fused: false).
import { OPS } from '../../compiler/ops.ts';
import { Tensor } from '../tensor.ts';
import { composer } from '../trace.ts';

export interface AttentionOptions {
  scale: number;
  /** tanh soft-capping of scores; 0 or absent for none. */
  softcap?: number;
  /** false: emit the composition of primitives instead of the fused kernel. */
  fused?: boolean;
  /** Also each query row's softmax probabilities over the keys (H2O's scores): the result is [..., M, Dv + E]. */
  weights?: boolean;
  /**
   * Split the keys into this many slices, each scored by workgroups of its own, and combine the slices' results
   * (flash-decoding: compiler/attentionSplit.ts). For few query rows (decode); not with `weights`. 0 or absent: one.
   */
  splits?: number;
}

/**
 * q [..., M, D], kT [..., D, E], v [..., E, Dv], mask [..., M, E] (bool, true = attend),
 * limit [..., M] (i32: keys at index >= limit are masked; lets the kernel stop early) -> [..., M, Dv], or with
 * `weights` [..., M, Dv + E]: each row's output, then the probability it gave each key (0 where masked).
 */
export function attention(q: Tensor, kT: Tensor, v: Tensor, mask: Tensor, limit: Tensor, opts: AttentionOptions): Tensor {
  const attrs = { scale: opts.scale, softcap: opts.softcap ?? 0, ...(opts.weights ? { weights: true as const } : {}) };
  const inputs = [q.node, kT.node, v.node, mask.node, limit.node];
  // the op table's composition: one definition for the reference and the fallback
  if (opts.fused === false) return new Tensor(OPS.attention.decompose(composer, inputs, attrs));
  if (opts.splits && opts.splits > 1 && !opts.weights) return combineSlices(new Tensor(composer.emit('attention_split', inputs, { scale: attrs.scale, softcap: attrs.softcap, splits: opts.splits })));
  return new Tensor(composer.emit('attention', inputs, attrs));
}

/**
 * The slices of attention_split [..., M, S, Dv + 2] (m, l, acc) as attention's result [..., M, Dv]: each slice's
 * sums rescaled to the largest maximum, out = sum_s w_s acc_s / sum_s w_s l_s. The slice holding the largest
 * maximum has w = 1 and l >= 1, so the total is 1 or more wherever a key is attended and 0 (with the sum) where none
 * is: dividing by max(total, 1) gives 0 there without a second reader of the total (one combine kernel, not two).
 */
function combineSlices(parts: Tensor): Tensor {
  const W = parts.shape[parts.rank - 1]!;
  const m = parts.slice(-1, 0, 1);
  const w = m.sub(m.max(-2, true)).exp(); // [..., M, S, 1]
  const total = w.mul(parts.slice(-1, 1, 2)).sum(-2); // [..., M, 1]
  const sum = w.mul(parts.slice(-1, 2, W)).sum(-2); // [..., M, Dv]
  return sum.div(total.maximum(1));
}
