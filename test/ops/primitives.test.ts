// Every primitive of the op table on WebGPU against the CPU reference, on random inputs from fast-check.
// Shapes include 1, primes and non-multiples of the 256-wide workgroup; reductions are taken both short
// (<= 16: a sequential loop) and long (> 16 and > 256: the cooperative workgroup path). lavapipe compiles each
// distinct shader slowly, so elementwise families are stacked into one kernel per shape and the fast-check runs
// vary the data (same shaders) more than the shapes.
import fc from 'fast-check';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { expect, it } from 'vitest';
import type { DType, Graph, OpName } from '../../compiler/ir.ts';
import { OPS } from '../../compiler/ops.ts';
import { SEQ_MAX } from '../../compiler/passes/lowerToWgsl.ts';
import { attention } from '../../dsl/nn/attention.ts';
import { Tensor } from '../../dsl/tensor.ts';
import { constant, iota, input, state, weight } from '../../dsl/trace.ts';
import type { NDArray } from '../../runtime/ndarray.ts';
import { type RunData, type Tolerance, expectClose, rng, runBoth, uniform } from '../helpers/gpu.ts';

const SEED = Number(process.env.STRATA_FC_SEED ?? 0x5eed);
/** Data-only runs reuse the compiled shaders, so they are cheap; each new shape compiles new pipelines. */
const RUNS = 2;
const seeds = fc.integer({ min: 0, max: 0x7fffffff });

async function forAll<T>(cases: readonly T[], body: (c: T, seed: number) => Promise<void>, runs = RUNS): Promise<void> {
  for (const c of cases) await fc.assert(fc.asyncProperty(seeds, (seed) => body(c, seed)), { numRuns: runs, seed: SEED, endOnFailure: true });
}

// ---------------------------------------------------------------- coverage of the op table

/** Which test covers each op. A new op in OPS fails 'covers every op' until it is listed here (and tested). */
const COVERAGE = {
  'unary float ops': ['exp', 'log', 'sqrt', 'rsqrt', 'sin', 'cos', 'floor', 'sigmoid', 'silu', 'softplus', 'tanh', 'gelu', 'gelu_tanh'],
  'neg and abs on f32 and i32': ['neg', 'abs'],
  'binary arithmetic on f32': ['add', 'sub', 'mul', 'div', 'mod', 'pow', 'max', 'min', 'const'],
  'binary arithmetic on i32 and u32': ['add', 'sub', 'mul', 'div', 'mod', 'max', 'min'],
  'bit ops on i32 and u32': ['xor', 'shl', 'shr'],
  'comparisons, logic and where': ['lt', 'le', 'gt', 'ge', 'eq', 'ne', 'and', 'or', 'where'],
  'casts among f32, i32, u32 and bool': ['cast'],
  'iota': ['iota'],
  'reductions short and long': ['sum', 'rmax', 'mean', 'permute'],
  'matmul with transposed operands and batch dims': ['matmul', 'permute', 'broadcast'],
  'reshape, permute and broadcast': ['reshape', 'permute', 'broadcast'],
  'slice with steps': ['slice'],
  'concat': ['concat'],
  'gather': ['gather', 'weight'],
  'scatter into a state': ['scatter', 'state', 'input'],
  'cumsum': ['cumsum'],
  'f16 and bf16 weights': ['weight', 'matmul'],
  'attention: keys past the limit are masked even where the mask allows them': ['attention'],
} satisfies Record<string, OpName[]>;
type TestName = keyof typeof COVERAGE;
/** Ops whose GPU-vs-CPU test lives in a file of its own (hand-written kernels tested against their composition). */
const ELSEWHERE: Partial<Record<OpName, string>> = {
  attention: 'test/ops/attention.test.ts',
  attention_split: 'test/ops/attention-split.test.ts',
  ssd_step: 'test/ops/ssdStep.test.ts',
  selective_step: 'test/ops/selectiveStep.test.ts',
  selective_scan: 'test/ops/selectiveScan.test.ts',
  fused_mlp: 'test/ops/fused-mlp.test.ts',
};

const traced = new Map<TestName, Set<OpName>>();
/** Records the ops a test actually traced, so a test cannot claim an op it never builds. */
function saw(test: TestName, graph: Graph): void {
  const set = traced.get(test) ?? new Set<OpName>();
  for (const n of graph.nodes) set.add(n.op);
  traced.set(test, set);
}
function expectTraced(test: TestName): void {
  const missing = COVERAGE[test].filter((op) => !traced.get(test)?.has(op));
  expect(missing, `ops '${test}' claims but never traced`).toEqual([]);
}

it('covers every op in OPS', () => {
  const covered = new Set<string>([...Object.values(COVERAGE).flat(), ...Object.keys(ELSEWHERE)]);
  expect([...covered].sort()).toEqual(Object.keys(OPS).sort());
  for (const [op, file] of Object.entries(ELSEWHERE)) {
    const root = path.resolve(import.meta.dirname, '../..');
    expect(fs.existsSync(path.join(root, file)) && fs.readFileSync(path.join(root, file), 'utf8').includes(op), `${file} tests '${op}'`).toBe(true);
  }
});

// ---------------------------------------------------------------- helpers

/** Parts of equal shape and dtype stacked along a new leading axis: one kernel (one pipeline) for a whole family. */
function stack(parts: Tensor[]): Tensor {
  return Tensor.concat(parts.map((p) => p.unsqueeze(0)), 0);
}

function row(a: NDArray, i: number): NDArray {
  const n = a.data.length / a.shape[0]!;
  return { shape: a.shape.slice(1), dtype: a.dtype, data: a.data.slice(i * n, (i + 1) * n) };
}

/** Compares a stacked output row by row, each row with its own label and tolerance. */
function expectRowsClose(gpu: NDArray, cpu: NDArray, rows: { label: string; tol: Tolerance }[], shape: readonly number[]): void {
  rows.forEach(({ label, tol }, i) => expectClose({ [`${label} ${JSON.stringify(shape)}`]: row(gpu, i) }, { [`${label} ${JSON.stringify(shape)}`]: row(cpu, i) }, tol));
}

const numel = (shape: readonly number[]) => shape.reduce((a, b) => a * b, 1);
/** Sizes 1, primes, and non-multiples of the workgroup size (257, 300 elements). */
const ELEMENTWISE_SHAPES = [[1], [7], [13, 31], [257], [2, 3, 50]];

// ---------------------------------------------------------------- elementwise

// Tolerances follow the WGSL accuracy table (on top of the f32 rounding both sides share):
// exp (3 + 2|x|) ULP; log 2^-21 absolute near 1, else 3 ULP; sqrt/inverseSqrt 2.5 ULP; sin/cos 2^-11 absolute
// on [-pi, pi]; sigmoid, silu, softplus, tanh, gelu are built from exp/log and inherit their error, plus
// cancellation near 0 for tanh and softplus (hence the absolute part). floor of the same f32 is exact.
const UNARY: { op: OpName; f: (x: Tensor, p: Tensor) => Tensor; tol: Tolerance }[] = [
  { op: 'exp', f: (x) => x.exp(), tol: { atol: 1e-6, rtol: 4e-6 } },
  { op: 'log', f: (_, p) => p.log(), tol: { atol: 1e-6, rtol: 1e-6 } },
  { op: 'sqrt', f: (_, p) => p.sqrt(), tol: { atol: 0, rtol: 1e-6 } },
  { op: 'rsqrt', f: (_, p) => p.rsqrt(), tol: { atol: 0, rtol: 1e-6 } },
  { op: 'sin', f: (x) => x.mul(0.5).sin(), tol: { atol: 2 ** -11, rtol: 0 } },
  { op: 'cos', f: (x) => x.mul(0.5).cos(), tol: { atol: 2 ** -11, rtol: 0 } },
  { op: 'floor', f: (x) => x.floor(), tol: { atol: 0, rtol: 0 } },
  { op: 'sigmoid', f: (x) => x.sigmoid(), tol: { atol: 1e-6, rtol: 1e-5 } },
  { op: 'silu', f: (x) => x.silu(), tol: { atol: 1e-6, rtol: 1e-5 } },
  { op: 'softplus', f: (x) => x.softplus(), tol: { atol: 1e-6, rtol: 1e-5 } },
  { op: 'tanh', f: (x) => x.tanh(), tol: { atol: 1e-6, rtol: 1e-5 } },
  { op: 'gelu', f: (x) => x.gelu(), tol: { atol: 1e-6, rtol: 1e-5 } },
  { op: 'gelu_tanh', f: (x) => x.gelu('tanh'), tol: { atol: 1e-6, rtol: 1e-5 } },
];

it('unary float ops', async () => {
  await forAll(ELEMENTWISE_SHAPES, async (shape, seed) => {
    const r = rng(seed);
    const data: RunData = { inputs: { x: uniform(r, numel(shape), -6, 6), p: uniform(r, numel(shape), 0.05, 8) } };
    const res = await runBoth(() => {
      const [x, p] = [input('x', shape), input('p', shape)];
      return { y: stack(UNARY.map((u) => u.f(x, p))) };
    }, {}, data);
    saw('unary float ops', res.graph);
    expectRowsClose(res.gpu.outputs.y!, res.cpu.outputs.y!, UNARY.map((u) => ({ label: u.op, tol: u.tol })), shape);
  });
  expectTraced('unary float ops');
});

it('neg and abs on f32 and i32', async () => {
  await forAll([[7], [257]], async (shape, seed) => {
    const r = rng(seed);
    const ints = uniform(r, numel(shape), -(2 ** 31), 2 ** 31, 'i32');
    ints[0] = -(2 ** 31); // wraps to itself under both neg and abs, on both backends
    const data: RunData = { inputs: { x: uniform(r, numel(shape), -6, 6), i: ints } };
    const res = await runBoth(() => {
      const [x, i] = [input('x', shape), input('i', shape, 'i32')];
      return { f: stack([x.neg(), x.abs()]), i: stack([i.neg(), i.abs()]) };
    }, {}, data);
    saw('neg and abs on f32 and i32', res.graph);
    expectClose(res.gpu.outputs, res.cpu.outputs, { atol: 0, rtol: 0 }); // sign changes are exact
  });
  expectTraced('neg and abs on f32 and i32');
});

/** `a` with a / b at least 0.01 away from an integer, so floor(a / b) in mod cannot flip between backends. */
function modFriendly(r: () => number, count: number): { a: number[]; b: number[] } {
  const b = uniform(r, count, 0.25, 4).map((v) => (r() < 0.5 ? -v : v));
  const a = b.map((bv) => Math.fround(bv * (Math.floor(r() * 8) - 4 + 0.01 + 0.98 * r())));
  return { a, b };
}

it('binary arithmetic on f32', async () => {
  // add, sub, mul, max, min and multiplying by a constant are correctly rounded on both sides (the CPU's double
  // result rounds to the same f32), so exact. div is 2.5 ULP in WGSL; mod = a - b * floor(a / b) loses up to
  // an ULP of |a| <= 16 to cancellation; pow is exp2(b * log2(a)) and inherits exp2's (3 + 2|x|) ULP.
  const ops: { label: string; f: (a: Tensor, b: Tensor, p: Tensor, e: Tensor) => Tensor; tol: Tolerance }[] = [
    { label: 'add', f: (a, b) => a.add(b), tol: { atol: 0, rtol: 0 } },
    { label: 'sub', f: (a, b) => a.sub(b), tol: { atol: 0, rtol: 0 } },
    { label: 'mul', f: (a, b) => a.mul(b), tol: { atol: 0, rtol: 0 } },
    { label: 'div', f: (a, b) => a.div(b), tol: { atol: 0, rtol: 1e-6 } },
    { label: 'mod', f: (a, b) => a.mod(b), tol: { atol: 1e-5, rtol: 0 } },
    { label: 'pow', f: (_a, _b, p, e) => p.pow(e), tol: { atol: 1e-6, rtol: 1e-5 } },
    { label: 'max', f: (a, b) => a.maximum(b), tol: { atol: 0, rtol: 0 } },
    { label: 'min', f: (a, b) => a.minimum(b), tol: { atol: 0, rtol: 0 } },
    { label: 'const', f: (a) => a.mul(0.75).add(constant(-1.5)), tol: { atol: 0, rtol: 1e-7 } },
  ];
  await forAll(ELEMENTWISE_SHAPES, async (shape, seed) => {
    const r = rng(seed);
    const n = numel(shape);
    const { a, b } = modFriendly(r, n);
    const data: RunData = { inputs: { a, b, p: uniform(r, n, 0.05, 4), e: uniform(r, n, -2, 2) } };
    const res = await runBoth(() => {
      const [ta, tb, tp, te] = [input('a', shape), input('b', shape), input('p', shape), input('e', shape)];
      return { y: stack(ops.map((o) => o.f(ta, tb, tp, te))) };
    }, {}, data);
    saw('binary arithmetic on f32', res.graph);
    expectRowsClose(res.gpu.outputs.y!, res.cpu.outputs.y!, ops.map((o) => ({ label: o.label, tol: o.tol })), shape);
  });
  expectTraced('binary arithmetic on f32');
});

it('binary arithmetic on i32 and u32', async () => {
  // Integer results are exact on both sides: add, sub and mul wrap modulo 2^32, division truncates, x / 0 is x
  // and x % 0 is 0 (WGSL's definitions, which the CPU reference follows).
  const ops: { label: string; f: (a: Tensor, b: Tensor, d: Tensor) => Tensor }[] = [
    { label: 'add', f: (a, b) => a.add(b) },
    { label: 'sub', f: (a, b) => a.sub(b) },
    { label: 'mul', f: (a, b) => a.mul(b) },
    { label: 'div', f: (a, _b, d) => a.div(d) },
    { label: 'mod', f: (a, _b, d) => a.mod(d) },
    { label: 'max', f: (a, b) => a.maximum(b) },
    { label: 'min', f: (a, b) => a.minimum(b) },
  ];
  const cases = [[7], [13, 31], [300]].flatMap((shape) => (['i32', 'u32'] as const).map((dtype) => ({ shape, dtype })));
  await forAll(cases, async ({ shape, dtype }, seed) => {
    const r = rng(seed);
    const n = numel(shape);
    const [lo, hi] = dtype === 'i32' ? [-(2 ** 31), 2 ** 31] : [0, 2 ** 32];
    const data: RunData = {
      // divisors include 0 and (for i32) negatives; the full range makes add/sub/mul overflow
      inputs: { a: uniform(r, n, lo, hi, dtype), b: uniform(r, n, lo, hi, dtype), d: uniform(r, n, dtype === 'i32' ? -5 : 0, 6, dtype) },
    };
    const res = await runBoth(() => {
      const [a, b, d] = [input('a', shape, dtype), input('b', shape, dtype), input('d', shape, dtype)];
      return { y: stack(ops.map((o) => o.f(a, b, d))) };
    }, {}, data);
    saw('binary arithmetic on i32 and u32', res.graph);
    expectRowsClose(res.gpu.outputs.y!, res.cpu.outputs.y!, ops.map((o) => ({ label: `${dtype} ${o.label}`, tol: { atol: 0, rtol: 0 } })), shape);
  });
  expectTraced('binary arithmetic on i32 and u32');
});

it('bit ops on i32 and u32', async () => {
  // Full-range patterns; shift counts include 0, 31 and counts >= 32 (both sides use the low 5 bits).
  const ops: { label: string; f: (a: Tensor, b: Tensor, c: Tensor) => Tensor }[] = [
    { label: 'xor', f: (a, b) => a.xor(b) },
    { label: 'shl', f: (a, _b, c) => a.shl(c) },
    { label: 'shr', f: (a, _b, c) => a.shr(c) },
  ];
  const cases = [[7], [300]].flatMap((shape) => (['i32', 'u32'] as const).map((dtype) => ({ shape, dtype })));
  await forAll(cases, async ({ shape, dtype }, seed) => {
    const r = rng(seed);
    const n = numel(shape);
    const [lo, hi] = dtype === 'i32' ? [-(2 ** 31), 2 ** 31] : [0, 2 ** 32];
    const data: RunData = { inputs: { a: uniform(r, n, lo, hi, dtype), b: uniform(r, n, lo, hi, dtype), c: uniform(r, n, 0, 40, dtype) } };
    const res = await runBoth(() => {
      const [a, b, c] = [input('a', shape, dtype), input('b', shape, dtype), input('c', shape, dtype)];
      return { y: stack(ops.map((o) => o.f(a, b, c))) };
    }, {}, data);
    saw('bit ops on i32 and u32', res.graph);
    expectRowsClose(res.gpu.outputs.y!, res.cpu.outputs.y!, ops.map((o) => ({ label: `${dtype} ${o.label}`, tol: { atol: 0, rtol: 0 } })), shape);
  });
  expectTraced('bit ops on i32 and u32');
});

it('comparisons, logic and where', async () => {
  // Values on a quarter grid so that equality and ties actually occur; every result is exact.
  await forAll([[7], [257], [2, 3, 50]], async (shape, seed) => {
    const r = rng(seed);
    const n = numel(shape);
    const grid = () => uniform(r, n, -8, 8, 'i32').map((v) => v / 4);
    const data: RunData = {
      inputs: { a: grid(), b: grid(), i: uniform(r, n, -3, 3, 'i32'), j: uniform(r, n, -3, 3, 'i32'), u: uniform(r, n, 0, 4, 'u32'), w: uniform(r, n, 0, 4, 'u32'), p: uniform(r, n, 0, 2, 'bool'), q: uniform(r, n, 0, 2, 'bool') },
    };
    const res = await runBoth(() => {
      const [a, b] = [input('a', shape), input('b', shape)];
      const [i, j] = [input('i', shape, 'i32'), input('j', shape, 'i32')];
      const [u, w] = [input('u', shape, 'u32'), input('w', shape, 'u32')];
      const [p, q] = [input('p', shape, 'bool'), input('q', shape, 'bool')];
      const compare = (x: Tensor, y: Tensor) => [x.lt(y), x.le(y), x.gt(y), x.ge(y), x.eq(y), x.ne(y)];
      return {
        cmp: stack([...compare(a, b), ...compare(i, j), ...compare(u, w), p.eq(q), p.ne(q), p.and(q), p.or(q), a.gt(b).and(p).or(q)]),
        whereF: stack([Tensor.where(p, a, b), Tensor.where(a.lt(b), a, 0), Tensor.where(q, 1.5, b)]),
        whereI: Tensor.where(p, i, j.mul(2)),
      };
    }, {}, data);
    saw('comparisons, logic and where', res.graph);
    expectClose(res.gpu.outputs, res.cpu.outputs, { atol: 0, rtol: 0 });
  });
  expectTraced('comparisons, logic and where');
});

it('casts among f32, i32, u32 and bool', async () => {
  // Float to integer truncates toward zero and saturates (WGSL); integer to integer keeps the bits. Integer to
  // f32 may round either way when the value is not representable (WGSL leaves the direction to the
  // implementation): rtol 2^-23 is one ULP. Everything else is exact.
  const DTYPES: DType[] = ['f32', 'i32', 'u32', 'bool'];
  await forAll([[7], [300]], async (shape, seed) => {
    const r = rng(seed);
    const n = numel(shape);
    const f = uniform(r, n, -100, 100);
    f.splice(0, 6, 3e9, -3e9, 5e9, -0.5, 0, 0.75); // saturation, negative to u32, rounding toward zero
    const data: RunData = {
      inputs: { f: f.slice(0, n), i: uniform(r, n, -(2 ** 31), 2 ** 31, 'i32'), u: uniform(r, n, 0, 2 ** 32, 'u32'), b: uniform(r, n, 0, 2, 'bool') },
    };
    const res = await runBoth(() => {
      const src: Record<DType, Tensor> = { f32: input('f', shape), i32: input('i', shape, 'i32'), u32: input('u', shape, 'u32'), bool: input('b', shape, 'bool') };
      // one stacked output per target dtype: every other source dtype cast to it
      return Object.fromEntries(DTYPES.map((to) => [to, stack(DTYPES.filter((from) => from !== to).map((from) => src[from].cast(to)))]));
    }, {}, data);
    saw('casts among f32, i32, u32 and bool', res.graph);
    for (const to of DTYPES) {
      const rows = DTYPES.filter((from) => from !== to).map((from) => ({ label: `cast ${from}->${to}`, tol: { atol: 0, rtol: to === 'f32' && from !== 'bool' ? 2 ** -23 : 0 } }));
      expectRowsClose(res.gpu.outputs[to]!, res.cpu.outputs[to]!, rows, shape);
    }
  });
  expectTraced('casts among f32, i32, u32 and bool');
});

it('iota', async () => {
  const cases: { shape: number[]; axis: number; dtype: DType }[] = [
    { shape: [1], axis: 0, dtype: 'i32' },
    { shape: [300], axis: 0, dtype: 'u32' },
    { shape: [13, 31], axis: 0, dtype: 'f32' },
    { shape: [2, 7, 3], axis: 1, dtype: 'i32' },
  ];
  await forAll(cases, async ({ shape, axis, dtype }, seed) => {
    const offsets = uniform(rng(seed), numel(shape), 0, 100, dtype);
    const res = await runBoth(() => {
      const ramp = iota(shape, axis, dtype);
      return { ramp, shifted: ramp.add(input('x', shape, dtype)) }; // alone, and inlined into arithmetic
    }, {}, { inputs: { x: offsets } });
    saw('iota', res.graph);
    expectClose(res.gpu.outputs, res.cpu.outputs, { atol: 0, rtol: 0 });
  }, 1);
  expectTraced('iota');
});

// ---------------------------------------------------------------- reductions

it('reductions short and long', async () => {
  // Lengths on both sides of SEQ_MAX and of the workgroup size (256). The three f32 reductions share one stacked
  // kernel (several cooperative phases in one kernel when long), as do the two i32 ones.
  const LENGTHS = [1, 7, SEQ_MAX, SEQ_MAX + 1, 31, 257, 300];
  // f32 sums: the GPU adds in f32 in loop or tree order, the CPU in double; for |x| <= 1 the difference is below
  // len * 2^-23 * max|partial sum| <= len * 1e-6 (absolute). max is exact; mean divides the sum's error by len.
  await forAll(LENGTHS.map((len, i) => ({ len, rows: [1, 3, 5][i % 3]! })), async ({ len, rows }, seed) => {
    const r = rng(seed);
    const data: RunData = { inputs: { x: uniform(r, rows * len, -1, 1), t: uniform(r, len * rows, -1, 1), k: uniform(r, rows * len, -1000, 1000, 'i32') } };
    const res = await runBoth(() => {
      const x = input('x', [rows, len]);
      const k = input('k', [rows, len], 'i32');
      return {
        f: stack([x.sum(-1), x.max(-1), x.mean(-1)]),
        // a row statistic read back by every element of the row (row mode when long)
        centered: x.sub(x.mean(-1, true)),
        // over the leading axis: a permuted (strided) read
        sum0: input('t', [len, rows]).sum(0),
        i: stack([k.sum(-1), k.max(-1)]),
      };
    }, {}, data);
    saw('reductions short and long', res.graph);
    const sumTol = { atol: 1e-6 * len, rtol: 1e-5 };
    expectRowsClose(res.gpu.outputs.f!, res.cpu.outputs.f!, [{ label: 'sum', tol: sumTol }, { label: 'max', tol: { atol: 0, rtol: 0 } }, { label: 'mean', tol: { atol: 1e-6, rtol: 1e-5 } }], [rows, len]);
    expectClose({ sum0: res.gpu.outputs.sum0! }, { sum0: res.cpu.outputs.sum0! }, sumTol);
    expectClose({ centered: res.gpu.outputs.centered! }, { centered: res.cpu.outputs.centered! }, { atol: 1e-6, rtol: 1e-5 });
    expectClose({ i: res.gpu.outputs.i! }, { i: res.cpu.outputs.i! }, { atol: 0, rtol: 0 });
    const longKernel = res.program.kernels.some((kern) => kern.templates.some((t) => t === 'row' || t === 'element'));
    expect(longKernel, `len ${len}: cooperative kernel`).toBe(len > SEQ_MAX);
  });
  expectTraced('reductions short and long');
});

// ---------------------------------------------------------------- matmul

it('matmul with transposed operands and batch dims', async () => {
  // Same accumulation argument as sums: |a|, |b| <= 1, so atol K * 1e-6.
  type Case = { batch: number[]; m: number; k: number; n: number; layout: 'plain' | 'aT' | 'bT' | 'bothT' | 'broadcastB' };
  const cases: Case[] = [
    { batch: [], m: 1, k: 1, n: 1, layout: 'plain' },
    { batch: [], m: 7, k: 13, n: 5, layout: 'bT' }, // short K: sequential loop in a map kernel
    { batch: [2], m: 3, k: SEQ_MAX, n: 1, layout: 'aT' },
    { batch: [], m: 5, k: 31, n: 7, layout: 'bothT' }, // long K: cooperative
    { batch: [], m: 1, k: 300, n: 1, layout: 'plain' }, // one output per workgroup
    { batch: [2, 3], m: 2, k: 257, n: 3, layout: 'broadcastB' },
    { batch: [3], m: 13, k: 17, n: 31, layout: 'bT' },
  ];
  await forAll(cases, async ({ batch, m, k, n, layout }, seed) => {
    const r = rng(seed);
    const aShape = layout === 'aT' || layout === 'bothT' ? [...batch, k, m] : [...batch, m, k];
    const bShape = layout === 'bT' || layout === 'bothT' ? [...batch, n, k] : layout === 'broadcastB' ? [k, n] : [...batch, k, n];
    const data: RunData = { inputs: { a: uniform(r, numel(aShape), -1, 1), b: uniform(r, numel(bShape), -1, 1) } };
    const res = await runBoth(() => {
      const a = input('a', aShape);
      const b = input('b', bShape);
      const lhs = layout === 'aT' || layout === 'bothT' ? a.T : a;
      const rhs = layout === 'bT' || layout === 'bothT' ? b.T : b;
      return { c: lhs.matmul(rhs) };
    }, {}, data);
    saw('matmul with transposed operands and batch dims', res.graph);
    expect(res.gpu.outputs.c!.shape).toEqual([...batch, m, n]);
    expectClose(res.gpu.outputs, res.cpu.outputs, { atol: 1e-6 * k, rtol: 1e-5 });
  });
  expectTraced('matmul with transposed operands and batch dims');
});

// ---------------------------------------------------------------- views (values are moved, never computed: exact)

it('reshape, permute and broadcast', async () => {
  await forAll([{ shape: [2, 3, 5, 7] }, { shape: [1, 13, 1, 31] }], async ({ shape }, seed) => {
    const x = uniform(rng(seed), numel(shape), -1, 1);
    const res = await runBoth(() => {
      const t = input('x', shape);
      const [d0, d1, d2, d3] = shape as [number, number, number, number];
      return {
        reshaped: t.reshape(d0 * d1, d2 * d3).reshape(d2, -1),
        permuted: t.permute(3, 1, 0, 2),
        swapped: t.transpose(0, 2).mul(2), // a view inlined into arithmetic
        broadcast: t.slice(1, 0, 1).broadcastTo([d0, 4, d2, d3]),
        added: t.add(input('row', [d3])), // numpy broadcasting of a lower-rank operand
        unsqueezed: t.reshape(d0, d1 * d2 * d3).unsqueeze(1).permute(2, 1, 0),
      };
    }, {}, { inputs: { x, row: uniform(rng(seed + 1), shape[3]!, -1, 1) } });
    saw('reshape, permute and broadcast', res.graph);
    expectClose(res.gpu.outputs, res.cpu.outputs, { atol: 0, rtol: 0 });
  }, 1);
  expectTraced('reshape, permute and broadcast');
});

it('slice with steps', async () => {
  await forAll([[13, 31], [7, 300]], async (shape, seed) => {
    const [rows, cols] = shape as [number, number];
    const x = uniform(rng(seed), rows * cols, -1, 1);
    const res = await runBoth(() => {
      const t = input('x', shape);
      return {
        stepped: t.slice(1, 2, cols - 2, 3), // 2:cols-2:3
        both: t.slice(0, 1, rows, 5).slice(1, -7, undefined, 2), // negative start, open end
        single: t.slice(0, rows - 1).slice(1, 0, 1), // the last row's first element
        ofPermuted: t.T.slice(0, 3, cols, 7).add(1), // x + 1 rounds the same on both sides
        pieces: Tensor.concat(t.split(1, [1, cols - 3, 2]).reverse(), 1),
      };
    }, {}, { inputs: { x } });
    saw('slice with steps', res.graph);
    expectClose(res.gpu.outputs, res.cpu.outputs, { atol: 0, rtol: 0 });
  }, 1);
  expectTraced('slice with steps');
});

it('concat', async () => {
  await forAll([{ n: 7 }, { n: 300 }], async ({ n }, seed) => {
    const r = rng(seed);
    const data: RunData = { inputs: { a: uniform(r, 3 * n, -1, 1), b: uniform(r, 1 * n, -1, 1), c: uniform(r, 5 * n, -1, 1), i: uniform(r, 2 * 3, -9, 9, 'i32'), j: uniform(r, 2 * 13, -9, 9, 'i32') } };
    const res = await runBoth(() => {
      const [a, b, c] = [input('a', [3, n]), input('b', [1, n]), input('c', [5, n])];
      const [i, j] = [input('i', [2, 3], 'i32'), input('j', [2, 13], 'i32')];
      return {
        rows: Tensor.concat([a, b, c], 0), // parts of 3, 1 and 5 rows
        cols: Tensor.concat([a.T, b.T.exp(), c.T], -1), // along the last axis, one part computed
        ints: Tensor.concat([i, j, i], 1),
        nested: Tensor.concat([Tensor.concat([b, b], 0), a.slice(0, 1)], 0).sum(-1),
      };
    }, {}, data);
    saw('concat', res.graph);
    expectClose(res.gpu.outputs, res.cpu.outputs, { atol: 1e-6 * n, rtol: 4e-6 }); // exp (WGSL ULP) and the sum of n terms
  }, 1);
  expectTraced('concat');
});

// ---------------------------------------------------------------- indexing

it('gather', async () => {
  // Rows come out exactly; indices past either end read the last row (both backends clamp).
  await forAll([{ rows: 31, width: 7 }, { rows: 5, width: 300 }], async ({ rows, width }, seed) => {
    const r = rng(seed);
    const idx = uniform(r, 13, 0, rows, 'i32');
    idx[3] = rows + 4;
    idx[7] = -1;
    const data: RunData = { weights: { table: uniform(r, rows * width, -1, 1) }, inputs: { idx, uidx: uniform(r, 10, 0, rows, 'u32'), itab: uniform(r, rows * 3, -50, 50, 'i32') } };
    const res = await runBoth(() => {
      const table = weight('table', [rows, width]);
      return {
        rows: table.gather(input('idx', [13], 'i32')),
        grid: table.gather(input('uidx', [2, 5], 'u32')).mul(2), // [2, 5, width], inlined into arithmetic
        ints: input('itab', [rows, 3], 'i32').gather(input('uidx', [2, 5], 'u32')),
      };
    }, {}, data);
    saw('gather', res.graph);
    expectClose(res.gpu.outputs, res.cpu.outputs, { atol: 0, rtol: 0 });
  });
  expectTraced('gather');
});

it('scatter into a state', async () => {
  // Rows at distinct in-range indices are replaced; out-of-range ones (-1, rows, rows + 90) are dropped. Two
  // writes to one row in a single scatter would race on the GPU, so in-range indices are distinct.
  await forAll([{ rows: 13, width: 7 }, { rows: 31, width: 300 }], async ({ rows, width }, seed) => {
    const r = rng(seed);
    const perm = [...Array(rows).keys()].sort(() => r() - 0.5);
    const idx = [perm[0]!, -1, perm[1]!, rows, perm[2]!, rows + 90];
    const data: RunData = {
      inputs: { idx, vals: uniform(r, 6 * width, -1, 1), pos: [perm[3]!, perm[4]!], counts: [perm[5]!, rows + 1, perm[6]!] },
      states: { cache: uniform(r, rows * width, -1, 1), hits: uniform(r, rows, 0, 9, 'i32') },
    };
    const res = await runBoth(() => {
      const cache = state('cache', [rows, width]);
      const before = cache.sum(-1); // reads the state before the write
      const written = cache.scatter(input('idx', [6], 'i32'), input('vals', [6, width]).mul(2));
      // a second write whose values are read from the state itself: they need a buffer of their own
      const again = written.scatter(input('pos', [2], 'u32'), written.slice(0, 0, 2).neg());
      const hits = state('hits', [rows], 'i32');
      hits.scatter(input('counts', [3], 'i32'), hits.slice(0, 0, 3).add(1));
      return { before, after: again.max(-1) };
    }, {}, data);
    saw('scatter into a state', res.graph);
    expectClose(res.gpu.states, res.cpu.states, { atol: 0, rtol: 0 });
    expectClose(res.gpu.outputs, res.cpu.outputs, { atol: 1e-6 * width, rtol: 1e-5 });
  });
  expectTraced('scatter into a state');
});

it('cumsum', async () => {
  // A sequential running sum on both sides, f32 on the GPU and double on the CPU: atol len * 1e-6 for |x| <= 1.
  // 64: the kernel's 8 steps a trip (lengths that are no multiple of 8 take one).
  await forAll([1, 7, 31, 64, 300].map((len) => ({ len })), async ({ len }, seed) => {
    const r = rng(seed);
    const data: RunData = { inputs: { x: uniform(r, 3 * len, -1, 1), k: uniform(r, 2 * len, -9, 9, 'i32') } };
    const res = await runBoth(() => ({
      last: input('x', [3, len]).cumsum(-1),
      first: input('x', [3, len]).T.cumsum(0), // over a permuted axis
      ints: input('k', [2, len], 'i32').cumsum(),
    }), {}, data);
    saw('cumsum', res.graph);
    expectClose(res.gpu.outputs, res.cpu.outputs, { atol: 1e-6 * len, rtol: 1e-5 });
  }, 1);
  expectTraced('cumsum');
});

// ---------------------------------------------------------------- storage types

it('f16 and bf16 weights', async () => {
  // The helper rounds the weights to f16/bf16 for the CPU as the device stores them, so only the matmul's f32
  // accumulation differs: atol K * 1e-6 with |x|, |w| <= 1. Odd element counts check the padded last word.
  const cases = (['f16', 'bf16'] as const).flatMap((storage) => [
    { storage, n: 7, k: 13 },
    { storage, n: 5, k: 257 },
  ]);
  await forAll(cases, async ({ storage, n, k }, seed) => {
    const r = rng(seed);
    const data: RunData = { inputs: { x: uniform(r, 3 * k, -1, 1) }, weights: { w: uniform(r, n * k, -1, 1), g: uniform(r, k, -2, 2) } };
    const res = await runBoth(() => {
      const x = input('x', [3, k]);
      const w = weight('w', [n, k], storage); // a linear layer's [out, in]
      const g = weight('g', [k], storage);
      return { linear: x.mul(g).matmul(w.T), raw: w.add(0.5) };
    }, {}, data);
    saw('f16 and bf16 weights', res.graph);
    expect(res.program.buffers.find((b) => b.name === 'w')).toMatchObject({ storage, bytes: Math.ceil((n * k) / 2) * 4 });
    expectClose(res.gpu.outputs, res.cpu.outputs, { atol: 1e-6 * k, rtol: 1e-5 });
  }, 1);
  expectTraced('f16 and bf16 weights');
});

it('attention: keys past the limit are masked even where the mask allows them', async () => {
  // The full GPU-vs-composition test is test/ops/attention.test.ts; this pins the limit input's meaning on both
  // backends (the CPU reference once ignored it). Online softmax vs two-pass: 1e-5.
  await forAll([{ queries: 3, keys: 37 }], async ({ queries, keys }, seed) => {
    const r = rng(seed);
    const data: RunData = {
      inputs: { q: uniform(r, queries * 8, -1, 1), kT: uniform(r, 8 * keys, -1, 1), v: uniform(r, keys * 5, -1, 1), mask: Array(queries * keys).fill(1), limit: [1, 17, keys] },
    };
    const res = await runBoth(() => ({
      out: attention(input('q', [1, queries, 8]), input('kT', [1, 8, keys]), input('v', [1, keys, 5]), input('mask', [1, queries, keys], 'bool'), input('limit', [1, queries], 'i32'), { scale: 0.35 }),
    }), {}, data);
    saw('attention: keys past the limit are masked even where the mask allows them', res.graph);
    expectClose(res.gpu.outputs, res.cpu.outputs, { atol: 1e-5, rtol: 1e-4 });
  }, 1);
  expectTraced('attention: keys past the limit are masked even where the mask allows them');
});
