// Masked attention: the composition softmax(where(mask, scale * q kT, -inf)) v, and its fused kernel.
// The fused kernel is the default; the composition is its reference (tests) and the fallback (fused: false).
import { Tensor } from '../tensor.ts';
import { emit } from '../trace.ts';
import { softmax } from './basic.ts';

export interface AttentionOptions {
  scale: number;
  /** tanh soft-capping of scores; 0 or absent for none. */
  softcap?: number;
  /** false: emit the composition of primitives instead of the fused kernel. */
  fused?: boolean;
}

/**
 * q [..., M, D], kT [..., D, E], v [..., E, Dv], mask [..., M, E] (bool, true = attend),
 * limit [..., M] (i32: keys at index >= limit are masked; lets the kernel stop early) -> [..., M, Dv].
 */
export function attention(q: Tensor, kT: Tensor, v: Tensor, mask: Tensor, limit: Tensor, opts: AttentionOptions): Tensor {
  const softcap = opts.softcap ?? 0;
  if (opts.fused === false) {
    let scores = q.matmul(kT).mul(opts.scale);
    if (softcap) scores = scores.div(softcap).tanh().mul(softcap);
    return softmax(Tensor.where(mask, scores, -Infinity)).matmul(v);
  }
  return new Tensor(emit('attention', [q.node, kT.node, v.node, mask.node, limit.node], { scale: opts.scale, softcap }));
}
