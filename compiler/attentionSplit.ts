// Attention over slices of the keys (`attention_split`, flash-decoding): the decode attention kernel run by one
// workgroup per query row and slice (lower/attentionDecode.ts), each writing its slice's running maximum m, its sum
// l of exp(score - m) and its unnormalised output sum exp(score - m) v; the caller combines the slices
// (dsl/nn/attention.ts combineSlices): out = sum_s exp(m_s - M) acc_s / sum_s exp(m_s - M) l_s, M = max_s m_s.
// Inputs as attention's: q [..., M, D], kT [..., D, E], v [..., E, Dv], mask [..., M, E] bool, limit [..., M] i32.
// Result [..., M, splits, Dv + 2]: m, l, then acc. The slices split the row's keys below its limit (read on the
// device, clamped to [0, E]) into parts that differ by one key at most, so that every slice's workgroup has work at
// any length; slice s holds keys sliceStart(s) up to sliceStart(s + 1). A slice with no attended key (a row
// shorter than its slices, or masked keys) has m = LOWEST_SCORE, l = 0 and acc = 0.
import { fmtShape } from './ir.ts';
import type { Node, OpAttrs } from './ir.ts';
import { type Composer, type Inferred, ShapeError, attentionRule } from './ops.ts';
import type { HostArray, Reference } from './references.ts';

/** The score a masked key and an empty slice's maximum take (the kernel's LOWEST): exp(LOWEST - m) is 0 for any real m. */
export const LOWEST_SCORE = -3.0e38;

/**
 * Flash-decoding's rule. A step traced with it (caches/stepContext.ts) over at most `sequences` sequences splits the
 * decode attention of every layer whose cache holds more than `from` keys into `slices` slices; the generator
 * (runtime/generator.ts) compiles that step beside the one-slice step and runs it for the batches whose longest
 * sequence holds `from` positions or more. The GPU default (runtime/compileLimits.ts) is 8 slices from 512 positions
 * for 1 or 2 sequences. On the H200 (bench/results/2026-12-04-h200-split/):
 * - a llama-400m step in caches of 4,224 keys took 1.04 against 1.39 ms after 1,024 positions and 1.12 against 2.12
 *   after 4,000, level after 512 (1.08 against 1.10), and 1.21-1.30 against 0.93-0.96 after 128: the combine kernels
 *   and the q/k/v matvec (the projection takes whole attentions only) cost 48 dispatches, which a few keys a slice
 *   do not pay for;
 * - after 4,000 positions 2 sequences decoded at 1,035 against 801 tok/s, 4 at 1,458 against 1,555
 *   (2026-12-04-h200-combine-tried/), 8 at 1,812 against 2,892: 8 sequences' one-slice kernels are 128 workgroups,
 *   which fill the GPU already, and 8 slices each are too many.
 * Software adapters keep one slice (lavapipe: tiny-granite-code's step 6.8 -> 11.2 ms with 8).
 */
export interface DecodeSplits {
  slices: number;
  from: number;
  sequences: number;
}

/** The first key of slice s of a row with `lim` keys: ceil(s * lim / splits) (so key c lies in slice s where s * lim <= c * splits < (s + 1) * lim). */
export const sliceStart = (s: number, lim: number, splits: number): number => Math.ceil((s * lim) / splits);

/** Whether `splits` is a number of slices for E keys: 2 or more, and no more than the keys. */
export const slicesFit = (E: number, splits: number): boolean => Number.isInteger(splits) && splits >= 2 && splits <= E;

export function attentionSplitRule(inputs: readonly Node[], attrs: OpAttrs['attention_split']): Inferred {
  const [, kT, v] = inputs as [Node, Node, Node];
  const { shape } = attentionRule(inputs, { scale: attrs.scale, softcap: attrs.softcap });
  const E = kT.shape[kT.shape.length - 1]!;
  const { splits } = attrs;
  if (!slicesFit(E, splits)) throw new ShapeError(`[attention_split] kT ${fmtShape(kT.shape)}: ${splits} slices of its ${E} keys must be 2 or more and at most the keys`);
  const Dv = v.shape[v.shape.length - 1]!;
  return { shape: [...shape.slice(0, -1), splits, Dv + 2], dtype: 'f32' };
}

/** Row by row and slice by slice, keys at or past the row's limit masked (as attention's reference). */
export const attentionSplitReference: Reference = (n, args, out) => {
  const [q, kT, v, mask, limit] = args as [HostArray, HostArray, HostArray, HostArray, HostArray];
  const { scale, softcap, splits } = (n as Node<'attention_split'>).attrs;
  const r = q.shape.length;
  const [M, D] = [q.shape[r - 2]!, q.shape[r - 1]!];
  const E = kT.shape[r - 1]!;
  const Dv = v.shape[r - 1]!;
  const W = Dv + 2;
  const batches = q.data.length / (M * D);
  const p = new Float64Array(E);
  for (let b = 0; b < batches; b++)
    for (let m = 0; m < M; m++)
      for (let s = 0; s < splits; s++) {
        const lim = Math.min(E, Math.max(0, limit.data[b * M + m]!));
        const [a, z] = [sliceStart(s, lim, splits), sliceStart(s + 1, lim, splits)];
        let max = LOWEST_SCORE;
        for (let c = a; c < z; c++) {
          if (!mask.data[(b * M + m) * E + c] || c >= limit.data[b * M + m]!) { p[c - a] = NaN; continue; }
          let dot = 0;
          for (let d = 0; d < D; d++) dot += q.data[(b * M + m) * D + d]! * kT.data[(b * D + d) * E + c]!;
          dot *= scale;
          if (softcap) dot = Math.tanh(dot / softcap) * softcap;
          p[c - a] = dot;
          max = Math.max(max, dot);
        }
        let sum = 0;
        for (let c = a; c < z; c++) sum += p[c - a] = Number.isNaN(p[c - a]!) ? 0 : Math.exp(p[c - a]! - max);
        const at = ((b * M + m) * splits + s) * W;
        out.data[at] = max;
        out.data[at + 1] = sum;
        for (let dv = 0; dv < Dv; dv++) {
          let acc = 0;
          for (let c = a; c < z; c++) if (p[c - a]) acc += p[c - a]! * v.data[(b * E + c) * Dv + dv]!;
          out.data[at + 2 + dv] = acc;
        }
      }
};

/**
 * The same as primitives: per slice, the scores of its keys (the mask and the slice's bounds, s * lim <= c * splits <
 * (s + 1) * lim), their maximum, the sum of their exponentials and their product with v.
 */
export function attentionSplitComposition(c: Composer, inputs: Node[], attrs: OpAttrs['attention_split']): Node {
  const [q, kT, v, mask, limit] = inputs as [Node, Node, Node, Node, Node];
  const emit = c.emit.bind(c);
  const r = q.shape.length;
  const E = kT.shape[r - 1]!;
  const S = attrs.splits;
  const scalar = (value: number, like: Node) => emit('broadcast', [emit('reshape', [c.constant(value, like.dtype)], { shape: like.shape.map(() => 1) })], { shape: [...like.shape] });
  const column = (x: Node) => emit('reshape', [x], { shape: [...x.shape, 1] });
  // the limit as the kernel reads it, clamped to [0, E], beside each key; and each key's index times S
  const clamped = emit('min', [emit('max', [limit, scalar(0, limit)], {}), scalar(E, limit)], {});
  const lim = emit('broadcast', [column(clamped)], { shape: [...mask.shape] });
  const keyS = emit('mul', [c.iota([...mask.shape], r - 1), scalar(S, lim)], {});
  let scores = emit('matmul', [q, kT], {});
  scores = emit('mul', [scores, scalar(attrs.scale, scores)], {});
  if (attrs.softcap) scores = emit('mul', [emit('tanh', [emit('div', [scores, scalar(attrs.softcap, scores)], {})], {}), scalar(attrs.softcap, scores)], {});
  const parts: Node[] = [];
  for (let s = 0; s < S; s++) {
    const inSlice = emit('and', [emit('ge', [keyS, emit('mul', [lim, scalar(s, lim)], {})], {}), emit('lt', [keyS, emit('mul', [lim, scalar(s + 1, lim)], {})], {})], {});
    const m = emit('and', [mask, inSlice], {});
    const masked = emit('where', [m, scores, scalar(LOWEST_SCORE, scores)], {});
    const max = emit('rmax', [masked], {});
    const e = emit('where', [m, emit('exp', [emit('sub', [masked, emit('broadcast', [column(max)], { shape: [...masked.shape] })], {})], {}), scalar(0, masked)], {});
    const part = emit('concat', [column(max), column(emit('sum', [e], {})), emit('matmul', [e, v], {})], { axis: r - 1 });
    parts.push(emit('reshape', [part], { shape: [...part.shape.slice(0, -1), 1, part.shape[r - 1]!] }));
  }
  return emit('concat', parts, { axis: r - 1 });
}
