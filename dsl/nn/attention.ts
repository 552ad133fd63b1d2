// Masked attention: the composition softmax(where(mask, scale * q kT, -inf)) v, and its fused kernel.
// The fused kernel is the default; the composition is its reference (tests) and the fallback (fused: false).
import { OPS } from '../../compiler/ops.ts';
import { Tensor } from '../tensor.ts';
import { constant, emit } from '../trace.ts';

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
  const inputs = [q.node, kT.node, v.node, mask.node, limit.node];
  // the op table's composition: one definition for the reference and the fallback
  if (opts.fused === false) return new Tensor(OPS.attention.decompose({ emit, constant: (value: number) => constant(value).node }, inputs, { scale: opts.scale, softcap }));
  return new Tensor(emit('attention', inputs, { scale: opts.scale, softcap }));
}
