// The Mamba-1 selective scan over T > 1 tokens as one op (`selective_scan`, its kernel in lower/selectiveScanKernel.ts):
// its shape rule, its CPU reference (the recurrence, token by token) and its composition (the chunked cumulative-sum
// form dsl/nn/mamba.ts traced before: the kernel's test oracle and the unfused fallback). Inputs, as selectiveScan:
//   x [B,T,D], dt [B,T,D] (after softplus), A [D,N] (= -exp(A_log)), Bm [B,T,N], Cm [B,T,N], Dskip [D],
//   h0 [B,D,N], valid [B] i32 (tokens t >= valid[b] are padding: dt = 0 and x = 0 there, the state passes through).
// h_t = exp(dt_t A) h_{t-1} + dt_t x_t B_t;  y_t = C_t . h_t + D x_t.  `part` names the result: y [B,T,D] or hT [B,D,N].
import type { DType, Node, OpAttrs, OpName } from './ir.ts';
import { fmtShape } from './ir.ts';
import { type Composer, type Inferred, ShapeError } from './ops.ts';
import type { HostArray, Reference } from './references.ts';

export interface SelectiveScanDims {
  B: number;
  T: number;
  /** channels */
  D: number;
  /** state size */
  N: number;
}

export function selectiveScanDims(inputs: readonly Node[]): SelectiveScanDims {
  const [x, , A] = inputs as [Node, Node, Node];
  return { B: x.shape[0]!, T: x.shape[1]!, D: x.shape[2]!, N: A.shape[1]! };
}

export function selectiveScanRule(inputs: readonly Node[], attrs: OpAttrs['selective_scan']): Inferred {
  if (inputs.length !== 8) throw new ShapeError(`[selective_scan] takes 8 inputs (x, dt, A, Bm, Cm, Dskip, h0, valid), got ${inputs.length}`);
  const [x, , A] = inputs as [Node, Node, Node];
  if (x.shape.length !== 3 || A.shape.length !== 2) throw new ShapeError(`[selective_scan] x ${fmtShape(x.shape)}, A ${fmtShape(A.shape)}: ranks 3 and 2 expected`);
  const { B, T, D, N } = selectiveScanDims(inputs);
  const want: [string, number[], DType][] = [
    ['x', [B, T, D], 'f32'],
    ['dt', [B, T, D], 'f32'],
    ['A', [D, N], 'f32'],
    ['Bm', [B, T, N], 'f32'],
    ['Cm', [B, T, N], 'f32'],
    ['Dskip', [D], 'f32'],
    ['h0', [B, D, N], 'f32'],
    ['valid', [B], 'i32'],
  ];
  inputs.forEach((t, i) => {
    const [name, shape, dtype] = want[i]!;
    if (t.shape.join() !== shape.join() || t.dtype !== dtype) throw new ShapeError(`[selective_scan] ${name} is ${t.dtype}${fmtShape(t.shape)}, must be ${dtype}${fmtShape(shape)}`);
  });
  return { shape: attrs.part === 'y' ? [B, T, D] : [B, D, N], dtype: 'f32' };
}

/** The recurrence, token by token (the definition the kernel and the composition are tested against). */
export const selectiveScanReference: Reference = (n, args, out) => {
  const [x, dt, A, Bm, Cm, Dskip, h0, valid] = args as HostArray[];
  const { part } = (n as Node<'selective_scan'>).attrs;
  const { B, T, D, N } = selectiveScanDims(n.inputs);
  const h = new Float64Array(N);
  for (let b = 0; b < B; b++)
    for (let d = 0; d < D; d++) {
      for (let j = 0; j < N; j++) h[j] = h0!.data[(b * D + d) * N + j]!;
      for (let t = 0; t < T; t++) {
        const at = (b * T + t) * D + d;
        const real = t < valid!.data[b]!;
        const dtv = real ? dt!.data[at]! : 0;
        const xv = real ? x!.data[at]! : 0;
        let y = Dskip!.data[d]! * xv;
        for (let j = 0; j < N; j++) {
          h[j] = Math.exp(dtv * A!.data[d * N + j]!) * h[j]! + dtv * xv * Bm!.data[(b * T + t) * N + j]!;
          y += Cm!.data[(b * T + t) * N + j]! * h[j]!;
        }
        if (part === 'y') out.data[at] = y;
      }
      if (part === 'ssm') for (let j = 0; j < N; j++) out.data[(b * D + d) * N + j] = h[j]!;
    }
};

/** The op's composition (OPS.selective_scan.decompose): one part of selectiveScanChunked. */
export function selectiveScanComposition(c: Composer, inputs: Node[], attrs: OpAttrs['selective_scan']): Node {
  const r = selectiveScanChunked(c, inputs, attrs.chunkSize);
  return attrs.part === 'y' ? r.y : r.hT;
}

/**
 * The scan in chunks of Q tokens, both results (dsl/nn/mamba.ts traces this when the fused kernel is off). Within
 * a chunk, with L_t = sum_{j<=t} dt_j A: h_t = exp(L_t) h_in + sum_{s<=t} exp(L_t - L_s) dt_s B_s x_s, so a chunk
 * is a few fused kernels instead of T dependent steps; chunks pass the state along. Mamba-1's decay depends on
 * (d, n), so the quadratic term is [B,Q,Q,D,N] (never materialised: its sums are inline loops). Differences
 * L_t - L_s stay small within a chunk, which keeps the f32 cancellation error low.
 */
export function selectiveScanChunked(c: Composer, inputs: Node[], chunkSize: number): { y: Node; hT: Node } {
  const [xIn, dtIn, A, Bm, Cm, Dskip, h0, valid] = inputs as Node[];
  const { B, T, D, N } = selectiveScanDims(inputs);
  const e = <K extends OpName>(op: K, ins: Node[], attrs?: OpAttrs[K]): Node => c.emit(op, ins, (attrs ?? {}) as OpAttrs[K]);
  const rs = (t: Node, ...shape: number[]) => (t.shape.join() === shape.join() ? t : e('reshape', [t], { shape }));
  const bc = (t: Node, shape: readonly number[]) => (t.shape.join() === shape.join() ? t : e('broadcast', [t], { shape: [...shape] }));
  const full = (v: number, shape: readonly number[], dtype: DType = 'f32') => bc(rs(c.constant(v, dtype), ...shape.map(() => 1)), shape);
  /** An elementwise op of inputs of one rank, broadcast along their size-1 axes. */
  const op = (name: OpName, ...ins: Node[]): Node => {
    const shape = ins[0]!.shape.map((_, i) => Math.max(...ins.map((t) => t.shape[i]!)));
    return e(name, ins.map((t) => bc(t, shape)));
  };
  const perm = (t: Node, ...p: number[]) => e('permute', [t], { perm: p });
  const slice1 = (t: Node, from: number, to: number) => e('slice', [t], { starts: t.shape.map((_, i) => (i === 1 ? from : 0)), ends: t.shape.map((s, i) => (i === 1 ? to : s)), steps: t.shape.map(() => 1) });

  // Padded steps: `where` rather than a multiply, so that garbage (even NaN) in padded rows cannot reach the state.
  const real = rs(op('lt', c.iota([B, T], 1), rs(valid!, B, 1)), B, T, 1);
  const dt = op('where', real, dtIn!, full(0, [1, 1, 1]));
  const x = op('where', real, xIn!, full(0, [1, 1, 1]));
  const u = op('mul', dt, x); // [B,T,D] dt_t x_t
  const A4 = rs(A!, 1, 1, D, N);

  const Q = Math.max(1, Math.min(chunkSize, T));
  const ys: Node[] = [];
  let h = h0!;
  for (let start = 0; start < T; start += Q) {
    const q = Math.min(T, start + Q) - start;
    const [dtC, xC, uC, bC, cC] = [dt, x, u, Bm!, Cm!].map((t) => slice1(t, start, start + q)) as [Node, Node, Node, Node, Node];
    // running log-decay over the chunk (<= 0, decreasing): cumsum along the tokens, moved last and back
    const L = perm(e('cumsum', [perm(op('mul', rs(dtC, B, q, D, 1), A4), 0, 2, 3, 1)]), 0, 3, 1, 2); // [B,q,D,N]
    // quadratic term: y_diag[t,d] = sum_{s<=t} u_s[d] sum_n C_t[n] B_s[n] exp(L_t[d,n] - L_s[d,n]); masking the
    // exponent (not the product) keeps exp(L_t - L_s) for s > t from overflowing
    const causal = rs(op('le', c.iota([q, q], 1), c.iota([q, q], 0)), 1, q, q, 1, 1); // [t,s]: s <= t
    const decay = e('exp', [op('where', causal, op('sub', rs(L, B, q, 1, D, N), rs(L, B, 1, q, D, N)), full(-Infinity, [1, 1, 1, 1, 1]))]);
    const cb = op('mul', rs(cC, B, q, 1, 1, N), rs(bC, B, 1, q, 1, N)); // [B,t,s,1,N]
    const yDiag = e('sum', [perm(op('mul', e('sum', [op('mul', decay, cb)]), rs(uC, B, 1, q, D)), 0, 1, 3, 2)]); // [B,q,D]
    // carried-in state: y_off[t,d] = sum_n C_t[n] exp(L_t[d,n]) h_in[d,n]
    const yOff = e('sum', [op('mul', op('mul', e('exp', [L]), rs(h, B, 1, D, N)), rs(cC, B, q, 1, N))]);
    ys.push(op('add', op('add', yDiag, yOff), op('mul', xC, rs(Dskip!, 1, 1, D))));
    // the state at the chunk's end: exp(L_last) h_in + sum_s exp(L_last - L_s) B_s u_s
    const last = slice1(L, q - 1, q); // [B,1,D,N]
    const inflow = e('sum', [perm(op('mul', op('mul', e('exp', [op('sub', last, L)]), rs(bC, B, q, 1, N)), rs(uC, B, q, D, 1)), 0, 2, 3, 1)]);
    h = op('add', op('mul', e('exp', [rs(last, B, D, N)]), h), inflow);
  }
  // the chunks' y joined in a tree of concats of at most 4: a flat concat of every chunk reads one buffer a chunk,
  // past what a portable 8 storage buffers bind; the planner gives an inner concat a kernel of its own instead
  const join = (parts: Node[]): Node => {
    if (parts.length === 1) return parts[0]!;
    if (parts.length <= 4) return e('concat', parts, { axis: 1 });
    const groups: Node[] = [];
    for (let i = 0; i < parts.length; i += 4) groups.push(join(parts.slice(i, i + 4)));
    return join(groups);
  };
  return { y: join(ys), hT: h };
}
