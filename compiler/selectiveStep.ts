// The Mamba-1 decode step as one op (`selective_step`, its kernel in lower/selectiveStepKernel.ts): its shape rule,
// its CPU reference and its composition of primitives (the reference the kernel is tested against and the unfused
// fallback). Inputs, for S sequences of one token each (the conv and x_proj stay before it: x_proj needs every
// channel's conv output):
//   x [S,D] the conv output after its activation, z [S,D] the gate, dtLow [S,R], Bm [S,N], Cm [S,N] x_proj's
//   parts (raw: Jamba's RMSNorms are applied here), h0 [S,D,N] the SSM state, dtW [D,R], dtBias [D],
//   A [D,N] (= -exp(A_log)), Dskip [D], valid [S] i32 (0: a padding row, whose state stays as it was), and for
//   Jamba (14 inputs, not 11) the RMSNorm weights dtNorm [R], bNorm [N], cNorm [N] with eps `eps`.
// The step: dt = softplus(dtW . norm(dtLow) + dtBias); h = exp(dt A) h0 + dt x norm(B); y = (C' . h + D x) silu(z)
// with C' = norm(C); a padding row has dt = 0 and x = 0 (decay 1, no input).
import type { DType, Node, OpAttrs, OpName } from './ir.ts';
import { fmtShape } from './ir.ts';
import { type Composer, type Inferred, ShapeError } from './ops.ts';
import type { HostArray, Reference } from './references.ts';

export interface SelectiveStepDims {
  S: number;
  /** channels (the mixer's inner size) */
  D: number;
  /** dt rank */
  R: number;
  /** state size */
  N: number;
  /** dt, B and C go through RMSNorms (Jamba) */
  normed: boolean;
}

export function selectiveStepDims(inputs: readonly Node[]): SelectiveStepDims {
  const [x, , dtLow, Bm] = inputs as [Node, Node, Node, Node];
  return { S: x.shape[0]!, D: x.shape[1]!, R: dtLow.shape[1]!, N: Bm.shape[1]!, normed: inputs.length === 14 };
}

export function selectiveStepRule(inputs: readonly Node[], attrs: OpAttrs['selective_step']): Inferred {
  if (inputs.length !== 11 && inputs.length !== 14) throw new ShapeError(`[selective_step] takes 11 inputs (14 with the dt/B/C norms), got ${inputs.length}`);
  const [x, , dtLow, Bm] = inputs as [Node, Node, Node, Node];
  if (x.shape.length !== 2 || dtLow.shape.length !== 2 || Bm.shape.length !== 2)
    throw new ShapeError(`[selective_step] x ${fmtShape(x.shape)}, dtLow ${fmtShape(dtLow.shape)}, Bm ${fmtShape(Bm.shape)}: rank 2 expected`);
  const { S, D, R, N } = selectiveStepDims(inputs);
  const want: [string, number[], DType][] = [
    ['x', [S, D], 'f32'],
    ['z', [S, D], 'f32'],
    ['dtLow', [S, R], 'f32'],
    ['Bm', [S, N], 'f32'],
    ['Cm', [S, N], 'f32'],
    ['h0', [S, D, N], 'f32'],
    ['dtW', [D, R], 'f32'],
    ['dtBias', [D], 'f32'],
    ['A', [D, N], 'f32'],
    ['Dskip', [D], 'f32'],
    ['valid', [S], 'i32'],
    ['dtNorm', [R], 'f32'],
    ['bNorm', [N], 'f32'],
    ['cNorm', [N], 'f32'],
  ];
  inputs.forEach((t, i) => {
    const [name, shape, dtype] = want[i]!;
    if (t.shape.join() !== shape.join() || t.dtype !== dtype) throw new ShapeError(`[selective_step] ${name} is ${t.dtype}${fmtShape(t.shape)}, must be ${dtype}${fmtShape(shape)}`);
  });
  return { shape: attrs.part === 'y' ? [S, D] : [S, D, N], dtype: 'f32' };
}

const softplus = (x: number) => (x > 20 ? x : Math.log1p(Math.exp(x)));
const silu = (x: number) => x / (1 + Math.exp(-x));

/** The step, sequence by sequence (the definition the kernel and the composition are tested against). */
export const selectiveStepReference: Reference = (n, args, out) => {
  const [x, z, dtLow, Bm, Cm, h0, dtW, dtBias, A, Dskip, valid, dtNorm, bNorm, cNorm] = args as HostArray[];
  const { part, eps } = (n as Node<'selective_step'>).attrs;
  const { S, D, R, N, normed } = selectiveStepDims(n.inputs);
  /** Row s of a [S,W] input, RMS-normed with weight w when the step has norms. */
  const row = (a: HostArray, s: number, W: number, w: HostArray | undefined): number[] => {
    const v = Array.from({ length: W }, (_, i) => a.data[s * W + i]!);
    if (!normed) return v;
    const scale = 1 / Math.sqrt(v.reduce((acc, t) => acc + t * t, 0) / W + eps);
    return v.map((t, i) => t * scale * w!.data[i]!);
  };
  for (let s = 0; s < S; s++) {
    const real = valid!.data[s]! > 0;
    const [u, b, c] = [row(dtLow!, s, R, dtNorm), row(Bm!, s, N, bNorm), row(Cm!, s, N, cNorm)];
    for (let d = 0; d < D; d++) {
      let lin = dtBias!.data[d]!;
      for (let r = 0; r < R; r++) lin += dtW!.data[d * R + r]! * u[r]!;
      const dt = real ? softplus(lin) : 0;
      const xv = real ? x!.data[s * D + d]! : 0;
      let y = Dskip!.data[d]! * xv;
      for (let j = 0; j < N; j++) {
        const at = (s * D + d) * N + j;
        const h = Math.exp(dt * A!.data[d * N + j]!) * h0!.data[at]! + dt * xv * b[j]!;
        if (part === 'ssm') out.data[at] = h;
        y += c[j]! * h;
      }
      if (part === 'y') out.data[s * D + d] = y * silu(z!.data[s * D + d]!);
    }
  }
};

/** The step as primitives (dsl/nn/mamba.ts emits it when the fused kernel is off). */
export function selectiveStepComposition(c: Composer, inputs: Node[], attrs: OpAttrs['selective_step']): Node {
  const [x, z, dtLow, Bm, Cm, h0, dtW, dtBias, A, Dskip, valid, dtNorm, bNorm, cNorm] = inputs as Node[];
  const { S, D, N, normed } = selectiveStepDims(inputs);
  const e = <K extends OpName>(op: K, ins: Node[], attrs?: OpAttrs[K]): Node => c.emit(op, ins, (attrs ?? {}) as OpAttrs[K]);
  const rs = (t: Node, ...shape: number[]) => e('reshape', [t], { shape });
  const bc = (t: Node, ...shape: number[]) => e('broadcast', [t], { shape });
  const full = (v: number, shape: number[], dtype: DType = 'f32') => bc(rs(c.constant(v, dtype), ...shape.map(() => 1)), ...shape);
  /** v [S,W] * rsqrt(mean(v^2) + eps) * w */
  const rms = (v: Node, w: Node): Node => {
    const W = v.shape[1]!;
    const scale = e('rsqrt', [e('add', [e('mean', [e('mul', [v, v])]), full(attrs.eps, [S])])]);
    return e('mul', [e('mul', [v, bc(rs(scale, S, 1), S, W)]), bc(rs(w, 1, W), S, W)]);
  };
  const [u, b, cc] = normed ? [rms(dtLow!, dtNorm!), rms(Bm!, bNorm!), rms(Cm!, cNorm!)] : [dtLow!, Bm!, Cm!];
  const real = bc(rs(e('lt', [full(0, [S], 'i32'), valid!]), S, 1), S, D);
  const lin = e('add', [e('matmul', [u, e('permute', [dtW!], { perm: [1, 0] })]), bc(rs(dtBias!, 1, D), S, D)]);
  const dt = e('where', [real, e('softplus', [lin]), full(0, [S, D])]);
  const xv = e('where', [real, x!, full(0, [S, D])]);
  const state = [S, D, N];
  const decay = e('exp', [e('mul', [bc(rs(dt, S, D, 1), ...state), bc(rs(A!, 1, D, N), ...state)])]);
  const h = e('add', [e('mul', [decay, h0!]), e('mul', [bc(rs(e('mul', [dt, xv]), S, D, 1), ...state), bc(rs(b, S, 1, N), ...state)])]);
  if (attrs.part === 'ssm') return h;
  const read = e('sum', [e('mul', [h, bc(rs(cc, S, 1, N), ...state)])]); // [S,D]
  const y = e('add', [read, e('mul', [xv, bc(rs(Dskip!, 1, D), S, D)])]);
  return e('mul', [y, e('silu', [z!])]);
}
