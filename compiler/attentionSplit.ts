// Attention over slices of the keys (`attention_split`, flash-decoding): the decode attention kernel run by one
// workgroup per query row and slice (lower/attentionDecode.ts), each writing its slice's running maximum m, its sum
// l of exp(score - m) and its unnormalised output sum exp(score - m) v; the caller combines the slices
// (dsl/nn/attention.ts combineSlices): out = sum_s exp(m_s - M) acc_s / sum_s exp(m_s - M) l_s, M = max_s m_s.
// Inputs as attention's: q [..., M, D], kT [..., D, E], v [..., E, Dv], mask [..., M, E] bool, limit [..., M] i32.
// Result [..., M, splits, Dv + 2]: m, l, then acc. Slice s holds keys s * ceil(E / splits) up to the next slice's
// first; a slice with no attended key has m = LOWEST_SCORE, l = 0 and acc = 0.
import { fmtShape } from './ir.ts';
import type { Node, OpAttrs } from './ir.ts';
import { type Composer, type Inferred, ShapeError, attentionRule } from './ops.ts';
import type { HostArray, Reference } from './references.ts';

/** The score a masked key and an empty slice's maximum take (the kernel's LOWEST): exp(LOWEST - m) is 0 for any real m. */
export const LOWEST_SCORE = -3.0e38;

/** Keys a slice holds: E split into `splits` slices, none empty. */
export const sliceKeys = (E: number, splits: number): number => Math.ceil(E / splits);

/** Whether E keys make `splits` slices (2 or more) of sliceKeys each with none left empty. */
export const slicesFit = (E: number, splits: number): boolean => Number.isInteger(splits) && splits >= 2 && sliceKeys(E, splits) * (splits - 1) < E;

export function attentionSplitRule(inputs: readonly Node[], attrs: OpAttrs['attention_split']): Inferred {
  const [, kT, v] = inputs as [Node, Node, Node];
  const { shape } = attentionRule(inputs, { scale: attrs.scale, softcap: attrs.softcap });
  const E = kT.shape[kT.shape.length - 1]!;
  const { splits } = attrs;
  if (!slicesFit(E, splits)) throw new ShapeError(`[attention_split] kT ${fmtShape(kT.shape)}: ${splits} slices of its ${E} keys must be 2 or more, none empty`);
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
  const C = sliceKeys(E, splits);
  const batches = q.data.length / (M * D);
  const p = new Float64Array(C);
  for (let b = 0; b < batches; b++)
    for (let m = 0; m < M; m++)
      for (let s = 0; s < splits; s++) {
        const [a, z] = [s * C, Math.min(E, (s + 1) * C)];
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

/** The same as primitives: per slice, the masked scores' maximum, the sum of their exponentials and their product with v. */
export function attentionSplitComposition(c: Composer, inputs: Node[], attrs: OpAttrs['attention_split']): Node {
  const [q, kT, v, mask] = inputs as [Node, Node, Node, Node];
  const emit = c.emit.bind(c);
  const r = q.shape.length;
  const E = kT.shape[r - 1]!;
  const C = sliceKeys(E, attrs.splits);
  const scalar = (value: number, like: Node) => emit('broadcast', [emit('reshape', [c.constant(value)], { shape: like.shape.map(() => 1) })], { shape: [...like.shape] });
  /** x's elements a..z along `axis`. */
  const slice = (x: Node, axis: number, a: number, z: number) =>
    emit('slice', [x], { starts: x.shape.map((_, d) => (d === axis ? a : 0)), ends: x.shape.map((n, d) => (d === axis ? z : n)), steps: x.shape.map(() => 1) });
  const column = (x: Node) => emit('reshape', [x], { shape: [...x.shape, 1] });
  const parts: Node[] = [];
  for (let s = 0; s < attrs.splits; s++) {
    const [a, z] = [s * C, Math.min(E, (s + 1) * C)];
    const m = slice(mask, r - 1, a, z);
    let scores = emit('matmul', [q, slice(kT, r - 1, a, z)], {});
    scores = emit('mul', [scores, scalar(attrs.scale, scores)], {});
    if (attrs.softcap) scores = emit('mul', [emit('tanh', [emit('div', [scores, scalar(attrs.softcap, scores)], {})], {}), scalar(attrs.softcap, scores)], {});
    const masked = emit('where', [m, scores, scalar(LOWEST_SCORE, scores)], {});
    const max = emit('rmax', [masked], {});
    const e = emit('where', [m, emit('exp', [emit('sub', [masked, emit('broadcast', [column(max)], { shape: [...masked.shape] })], {})], {}), scalar(0, masked)], {});
    const part = emit('concat', [column(max), column(emit('sum', [e], {})), emit('matmul', [e, slice(v, r - 2, a, z)], {})], { axis: r - 1 });
    parts.push(emit('reshape', [part], { shape: [...part.shape.slice(0, -1), 1, part.shape[r - 1]!] }));
  }
  return emit('concat', parts, { axis: r - 1 });
}
