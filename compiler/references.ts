// CPU references on whole arrays: what the op table's entries point to for ops that are not a scalar function, an
// index remapping or a plain reduction (those are evaluated by their fusion class's generic rule, below), and
// the generic rules themselves. The CPU backend (runtime/cpuBackend.ts) is a lookup into the table.
import { type DType, type Node, numel } from './ir.ts';
import { delinearize, linearize, numberIndex } from './indexAlgebra.ts';
import type { OpDef } from './ops.ts';

/** A host array as the references see it (runtime/ndarray.ts's NDArray has this shape). */
export interface HostArray {
  shape: number[];
  dtype: DType;
  data: { [i: number]: number; length: number; set(a: ArrayLike<number>, offset?: number): void; subarray(a: number, b: number): ArrayLike<number> };
}

/** What a reference may ask of the run: the value of a source (input, weight, state) by its node. */
export interface ReferenceContext {
  source(n: Node): HostArray;
}

/** Writes the value of node n into `out` (already allocated for n's shape and dtype), or returns another array. */
export type Reference = (n: Node, args: readonly HostArray[], out: HostArray, ctx: ReferenceContext) => HostArray | void;

export const sourceReference: Reference = (n, _args, _out, ctx) => ctx.source(n);

export const constReference: Reference = (n, _args, out) => {
  out.data[0] = (n as Node<'const'>).attrs.value;
};

export const scatterReference: Reference = (_n, args, out) => {
  const [target, idx, values] = args as [HostArray, HostArray, HostArray];
  out.data.set(target.data as ArrayLike<number>);
  const row = numel(target.shape.slice(1));
  for (let i = 0; i < idx.data.length; i++) {
    const r = idx.data[i]!;
    if (r < 0 || r >= target.shape[0]!) continue; // out-of-range rows are dropped, as on the GPU
    out.data.set(values.data.subarray(i * row, (i + 1) * row), r * row);
  }
};

export const cumsumReference: Reference = (n, args, out) => {
  const x = args[0]!;
  const len = n.shape[n.shape.length - 1]!;
  for (let base = 0; base < out.data.length; base += len) {
    let acc = 0;
    for (let k = 0; k < len; k++) out.data[base + k] = acc += x.data[base + k]!;
  }
};

/** A plain triple loop: the generic reduce rule would re-derive each operand index per product. */
export const matmulReference: Reference = (n, args, out) => {
  const [a, b] = args as [HostArray, HostArray];
  const r = n.shape.length;
  const [m, nn] = [n.shape[r - 2]!, n.shape[r - 1]!];
  const k = a.shape[r - 1]!;
  const batches = out.data.length / (m * nn);
  for (let bt = 0; bt < batches; bt++)
    for (let i = 0; i < m; i++)
      for (let j = 0; j < nn; j++) {
        let acc = 0;
        for (let p = 0; p < k; p++) acc += a.data[bt * m * k + i * k + p]! * b.data[bt * k * nn + p * nn + j]!;
        out.data[bt * m * nn + i * nn + j] = acc;
      }
};

/**
 * The composition softmax(where(mask, softcap(scale * q kT), -inf)) v, row by row, keys at or past the row's limit
 * masked; with `weights`, each row's probabilities after its output.
 */
export const attentionReference: Reference = (n, args, out) => {
  const [q, kT, v, mask, limit] = args as [HostArray, HostArray, HostArray, HostArray, HostArray];
  const { scale, softcap, weights } = (n as Node<'attention'>).attrs;
  const r = n.shape.length;
  const [M, W] = [n.shape[r - 2]!, n.shape[r - 1]!]; // W: a row of the result (Dv, or Dv + E with weights)
  const D = q.shape[r - 1]!;
  const E = kT.shape[r - 1]!;
  const Dv = v.shape[r - 1]!;
  const batches = out.data.length / (M * W);
  const scores = new Float64Array(E);
  for (let b = 0; b < batches; b++)
    for (let m = 0; m < M; m++) {
      let max = -Infinity;
      for (let c = 0; c < E; c++) {
        // keys at or past the row's limit are masked, as in the kernel (which stops there)
        if (!mask.data[(b * M + m) * E + c] || c >= limit.data[b * M + m]!) { scores[c] = -Infinity; continue; }
        let s = 0;
        for (let d = 0; d < D; d++) s += q.data[(b * M + m) * D + d]! * kT.data[(b * D + d) * E + c]!;
        s *= scale;
        if (softcap) s = Math.tanh(s / softcap) * softcap;
        scores[c] = s;
        max = Math.max(max, s);
      }
      let sum = 0;
      for (let c = 0; c < E; c++) sum += scores[c] = max === -Infinity ? 0 : Math.exp(scores[c]! - max);
      for (let dv = 0; dv < Dv; dv++) {
        let acc = 0;
        for (let c = 0; c < E; c++) if (scores[c]) acc += scores[c]! * v.data[(b * E + c) * Dv + dv]!;
        out.data[(b * M + m) * W + dv] = sum ? acc / sum : 0;
      }
      if (weights) for (let c = 0; c < E; c++) out.data[(b * M + m) * W + Dv + c] = sum ? scores[c]! / sum : 0;
    }
};

// ---------------------------------------------------------------- the generic rules of the fusion classes

/** The reference of an entry: its own, or its fusion class's rule. */
export function referenceOf(def: OpDef<never>): Reference {
  if (def.reference) return def.reference;
  switch (def.kind) {
    case 'elementwise': return (n, args, out) => {
      const vals = new Array<number>(args.length);
      for (let i = 0; i < out.data.length; i++) {
        for (let a = 0; a < args.length; a++) vals[a] = args[a]!.data[i]!;
        const at = def.indexArgs ? def.indexArgs(delinearize(numberIndex, i, n.shape), n.attrs as never) : vals;
        out.data[i] = def.cpu(at, n.attrs as never, n.inputs);
      }
    };
    case 'view': return (n, args, out) => {
      for (let i = 0; i < out.data.length; i++) {
        const outIdx = delinearize(numberIndex, i, n.shape);
        const cands = def.index(numberIndex, outIdx, n.attrs as never, n.inputs, n);
        if (def.indirect) {
          const [at, rest] = cands as [(typeof cands)[0], (typeof cands)[0]];
          const rows = n.inputs[rest.input]!.shape[0]!;
          const r = args[at.input]!.data[linearize(numberIndex, at.index, n.inputs[at.input]!.shape)]!;
          const row = r < 0 || r >= rows ? rows - 1 : r;
          out.data[i] = args[rest.input]!.data[linearize(numberIndex, [row, ...rest.index], n.inputs[rest.input]!.shape)]!;
          continue;
        }
        // concat: the candidate whose index is within its input; other views have one candidate
        const pick = cands.find((c) => c.index.every((v, d) => v >= 0 && v < n.inputs[c.input]!.shape[d]!)) ?? cands[0]!;
        out.data[i] = args[pick.input]!.data[linearize(numberIndex, pick.index, n.inputs[pick.input]!.shape)]!;
      }
    };
    case 'reduce': return (_n, args, out) => {
      const x = args[0]!;
      const len = x.shape[x.shape.length - 1]!;
      for (let o = 0; o < out.data.length; o++) {
        let acc = def.identity;
        for (let k = 0; k < len; k++) acc = def.combine.cpu(acc, x.data[o * len + k]!);
        out.data[o] = def.finish ? def.finish.cpu(acc, len) : acc;
      }
    };
    default:
      throw new Error(`op table: a ${def.kind} entry needs a reference of its own`);
  }
}
