// The Mamba-2 decode step as one op (`ssd_step`, its kernel in lower/ssdStepKernel.ts): its shape rule, its CPU
// reference and its composition of primitives (the reference the kernel is tested against and the unfused
// fallback). Inputs, for S sequences of one token each:
//   xbc [S,C] the conv input of the token (x | B | C channels, C = Hh P + 2 G N), dt [S,Hh] raw time steps,
//   ring [S,C,K] the conv ring (slot q % K holds the input of position q), h0 [S,Hh,P,N] the SSM state,
//   convW [C,K], convB [C], dtBias [Hh], A [Hh] (= -exp(A_log)), D [Hh], pos [S] i32 (the token's position),
//   valid [S] i32 (0: a padding row, whose state stays as it was).
// The step: u = silu(convB + sum_k convW[:,k] * (the inputs of positions pos-K+1 .. pos)), split into x, B, C;
// dt = clamp(softplus(dt + dtBias), dtMin, dtMax); h = exp(dt A) h0 + dt x (x) B; y = C . h + D x; the ring with
// slot pos % K set to xbc. A ring (not a shifted window) lets every workgroup of the kernel read the K-1 older
// slots while another writes the new one: no slot a reader needs is overwritten within the dispatch.
import type { DType, Node, OpAttrs, OpName } from './ir.ts';
import { fmtShape } from './ir.ts';
import { type Composer, type Inferred, ShapeError } from './ops.ts';
import type { HostArray, Reference } from './references.ts';

export interface SsdStepDims {
  S: number;
  C: number;
  K: number;
  Hh: number;
  P: number;
  N: number;
  G: number;
  /** Hh P: the x channels. */
  I: number;
}

export function ssdStepDims(inputs: readonly Node[]): SsdStepDims {
  const [xbc, , ring, h0] = inputs as [Node, Node, Node, Node];
  const [S, C] = xbc.shape as [number, number];
  const K = ring.shape[2]!;
  const [, Hh, P, N] = h0.shape as [number, number, number, number];
  const I = Hh * P;
  return { S, C, K, Hh, P, N, G: (C - I) / (2 * N), I };
}

export function ssdStepRule(inputs: readonly Node[], attrs: OpAttrs['ssd_step']): Inferred {
  if (inputs.length !== 11) throw new ShapeError(`[ssd_step] takes 11 inputs, got ${inputs.length}`);
  const [xbc, , ring, h0] = inputs as [Node, Node, Node, Node];
  if (xbc.shape.length !== 2 || ring.shape.length !== 3 || h0.shape.length !== 4)
    throw new ShapeError(`[ssd_step] xbc ${fmtShape(xbc.shape)}, ring ${fmtShape(ring.shape)}, h0 ${fmtShape(h0.shape)}: ranks 2, 3, 4 expected`);
  const d = ssdStepDims(inputs);
  if (!Number.isInteger(d.G) || d.G < 1 || d.Hh % d.G !== 0)
    throw new ShapeError(`[ssd_step] ${d.C} conv channels do not split into x (${d.Hh} x ${d.P}) and B, C of ${d.N}-wide groups dividing ${d.Hh} heads`);
  const want: [string, number[], DType][] = [
    ['xbc', [d.S, d.C], 'f32'],
    ['dt', [d.S, d.Hh], 'f32'],
    ['ring', [d.S, d.C, d.K], 'f32'],
    ['h0', [d.S, d.Hh, d.P, d.N], 'f32'],
    ['convW', [d.C, d.K], 'f32'],
    ['convB', [d.C], 'f32'],
    ['dtBias', [d.Hh], 'f32'],
    ['A', [d.Hh], 'f32'],
    ['D', [d.Hh], 'f32'],
    ['pos', [d.S], 'i32'],
    ['valid', [d.S], 'i32'],
  ];
  want.forEach(([name, shape, dtype], i) => {
    const x = inputs[i]!;
    if (x.shape.join() !== shape.join() || x.dtype !== dtype) throw new ShapeError(`[ssd_step] ${name} is ${x.dtype}${fmtShape(x.shape)}, must be ${dtype}${fmtShape(shape)}`);
  });
  if (d.K < 2) throw new ShapeError(`[ssd_step] a conv of ${d.K} taps: needs K >= 2`);
  const shape = attrs.part === 'y' ? [d.S, d.Hh, d.P] : attrs.part === 'ssm' ? [d.S, d.Hh, d.P, d.N] : [d.S, d.C, d.K];
  return { shape, dtype: 'f32' };
}

const softplus = (x: number) => (x > 20 ? x : Math.log1p(Math.exp(x)));
const silu = (x: number) => x / (1 + Math.exp(-x));

/** The step, sequence by sequence (the definition the kernel and the composition are tested against). */
export const ssdStepReference: Reference = (n, args, out) => {
  const [xbc, dtRaw, ring, h0, W, convB, dtBias, A, D, pos, valid] = args as HostArray[];
  const { part, dtMin, dtMax } = (n as Node<'ssd_step'>).attrs;
  const { S, C, K, Hh, P, N, G, I } = ssdStepDims(n.inputs);
  const R = Hh / G;
  for (let s = 0; s < S; s++) {
    const p = pos!.data[s]!;
    const real = valid!.data[s]! > 0;
    const xin = (c: number) => xbc!.data[s * C + c]!;
    const slot = (q: number) => ((q % K) + K) % K; // the ring slot of position q
    if (part === 'conv') {
      for (let c = 0; c < C; c++)
        for (let k = 0; k < K; k++) out.data[(s * C + c) * K + k] = real && k === slot(p) ? xin(c) : ring!.data[(s * C + c) * K + k]!;
      continue;
    }
    const u = new Float64Array(C);
    for (let c = 0; c < C; c++) {
      let acc = convB!.data[c]! + W!.data[c * K + K - 1]! * xin(c);
      for (let k = 0; k < K - 1; k++) acc += W!.data[c * K + k]! * ring!.data[(s * C + c) * K + slot(p - (K - 1) + k)]!;
      u[c] = silu(acc);
    }
    for (let h = 0; h < Hh; h++) {
      const g = Math.floor(h / R);
      let dt = Math.min(Math.max(softplus(dtRaw!.data[s * Hh + h]! + dtBias!.data[h]!), dtMin), dtMax);
      if (!real) dt = 0;
      const decay = Math.exp(dt * A!.data[h]!);
      for (let q = 0; q < P; q++) {
        const x = real ? u[h * P + q]! : 0;
        let y = D!.data[h]! * x;
        for (let j = 0; j < N; j++) {
          const at = ((s * Hh + h) * P + q) * N + j;
          const v = decay * h0!.data[at]! + dt * x * u[I + g * N + j]!;
          if (part === 'ssm') out.data[at] = v;
          y += u[I + G * N + g * N + j]! * v;
        }
        if (part === 'y') out.data[(s * Hh + h) * P + q] = y;
      }
    }
  }
};

/** The step as primitives (dsl/nn/mamba2.ts emits it when the fused kernel is off). */
export function ssdStepComposition(c: Composer, inputs: Node[], attrs: OpAttrs['ssd_step']): Node {
  const [xbc, dtRaw, ring, h0, W, convB, dtBias, A, D, pos, valid] = inputs as [Node, Node, Node, Node, Node, Node, Node, Node, Node, Node, Node];
  const { S, C, K, Hh, P, N, G, I } = ssdStepDims(inputs);
  const R = Hh / G;
  const e = <K extends OpName>(op: K, ins: Node[], attrs?: OpAttrs[K]): Node => c.emit(op, ins, (attrs ?? {}) as OpAttrs[K]);
  const rs = (x: Node, ...shape: number[]) => e('reshape', [x], { shape });
  const bc = (x: Node, ...shape: number[]) => e('broadcast', [x], { shape });
  const full = (v: number, shape: number[], dtype: DType = 'f32') => bc(rs(c.constant(v, dtype), ...shape.map(() => 1)), ...shape);
  const slice = (x: Node, from: number, to: number) => e('slice', [x], { starts: [0, from], ends: [S, to], steps: [1, 1] });
  const real = e('lt', [full(0, [S], 'i32'), valid]); // [S]
  if (attrs.part === 'conv') {
    const slot = e('mod', [bc(rs(pos, S, 1, 1), S, C, K), full(K, [S, C, K], 'i32')]);
    const write = e('and', [e('eq', [c.iota([S, C, K], 2), slot]), bc(rs(real, S, 1, 1), S, C, K)]);
    return e('where', [write, bc(rs(xbc, S, C, 1), S, C, K), ring]);
  }
  // tap k < K-1 reads position pos-K+1+k, ring slot (pos + 1 + k) % K; tap K-1 is this token's input
  const taps = [S, K - 1];
  const slot = e('mod', [e('add', [bc(rs(pos, S, 1), ...taps), e('add', [c.iota(taps, 1), full(1, taps, 'i32')])]), full(K, taps, 'i32')]);
  const rows = e('add', [slot, e('mul', [c.iota(taps, 0), full(K, taps, 'i32')])]);
  const past = e('gather', [rs(e('permute', [ring], { perm: [0, 2, 1] }), S * K, C), rows]); // [S,K-1,C]
  const window = e('permute', [e('concat', [past, rs(xbc, S, 1, C)], { axis: 1 })], { perm: [0, 2, 1] }); // [S,C,K]
  const conv = e('sum', [e('mul', [window, bc(rs(W, 1, C, K), S, C, K)])]);
  const u = e('silu', [e('add', [conv, bc(rs(convB, 1, C), S, C)])]); // [S,C]
  let dt = e('softplus', [e('add', [dtRaw, bc(rs(dtBias, 1, Hh), S, Hh)])]);
  if (attrs.dtMin > 0) dt = e('max', [dt, full(attrs.dtMin, [S, Hh])]);
  if (attrs.dtMax < Infinity) dt = e('min', [dt, full(attrs.dtMax, [S, Hh])]);
  dt = e('where', [bc(rs(real, S, 1), S, Hh), dt, full(0, [S, Hh])]);
  const x = e('where', [bc(rs(real, S, 1), S, I), slice(u, 0, I), full(0, [S, I])]);
  const perHead = (v: Node) => bc(rs(bc(rs(v, S, G, 1, N), S, G, R, N), S, Hh, 1, N), S, Hh, P, N); // group values per head
  const state = [S, Hh, P, N];
  const dt4 = bc(rs(dt, S, Hh, 1, 1), ...state);
  const decay = e('exp', [e('mul', [dt4, bc(rs(A, 1, Hh, 1, 1), ...state)])]);
  const input = e('mul', [e('mul', [dt4, bc(rs(x, S, Hh, P, 1), ...state)]), perHead(slice(u, I, I + G * N))]);
  const h = e('add', [e('mul', [decay, h0]), input]);
  if (attrs.part === 'ssm') return h;
  const read = e('sum', [e('mul', [h, perHead(slice(u, I + G * N, I + 2 * G * N))])]); // [S,Hh,P]
  return e('add', [read, e('mul', [rs(x, S, Hh, P), bc(rs(D, 1, Hh, 1), S, Hh, P)])]);
}
