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
  return new Tensor(composer.emit('attention', inputs, attrs));
}
