// Random small graphs (elementwise chains, reductions, matmuls, views, gathers, scans, 16-bit weights), each
// compiled and run on WebGPU and compared to the CPU reference. fast-check draws a list of choices per graph
// and a builder turns the choices into a shape-correct trace, so every drawn list is a valid graph. Twenty
// graphs share one traced program (separate outputs) to bound the number of programs compiled.
import fc from 'fast-check';
import { expect, it } from 'vitest';
import type { Graph } from '../../compiler/ir.ts';
import { compile } from '../../compiler/compile.ts';
import type { Program } from '../../compiler/program.ts';
import { Tensor } from '../../dsl/tensor.ts';
import { constant, input, iota, trace, weight } from '../../dsl/trace.ts';
import type { NDArray } from '../../runtime/ndarray.ts';
import { type RunOptions, closeness, randomData, runGraphBoth } from '../helpers/gpu.ts';

const SEED = Number(process.env.STRATA_FC_SEED ?? 0x6a9f);
const GRAPHS_PER_PROGRAM = 20;
const FUSED_PROGRAMS = 15; // 300 graphs
const MAX_DEPTH = 4;
/** Dims: 1, small primes and composites; LONG ones make reductions over them cooperative (> 16, > 256). */
const DIMS = [1, 2, 3, 5, 7, 13, 17, 31];
const LONG = [257, 300];
const MAX_ELEMENTS = 4096;
/** About 300 cold shader compiles: a minute of CPU on lavapipe, several of wall time on a machine shared with other suites. */
const COMPILE_HEAVY_TIMEOUT = 1_800_000; // hang guard (vitest.config.ts), not a speed limit

/** The choices fast-check drew for one graph; exhausted, it answers 0 (the simplest option: a leaf). */
class Choices {
  private at = 0;
  constructor(private readonly values: readonly number[]) {}
  next(options: number): number {
    return this.at < this.values.length ? this.values[this.at++]! % options : 0;
  }
  pick<T>(options: readonly T[]): T {
    return options[this.next(options.length)]!;
  }
}

interface Expr {
  t: Tensor;
  /** How the graph was built, for failure messages. */
  d: string;
}

const numel = (shape: readonly number[]) => shape.reduce((a, b) => a * b, 1);
const fmt = (shape: readonly number[]) => `[${shape.join(',')}]`;

// Unary forms whose output stays in a range where f32 error stays small: the raw transcendental ops are fed
// bounded arguments (exp of tanh, sin of 3 tanh), the others grow at most linearly.
const UNARY: [string, (t: Tensor) => Tensor][] = [
  ['neg', (t) => t.neg()],
  ['abs', (t) => t.abs()],
  ['tanh', (t) => t.tanh()],
  ['sigmoid', (t) => t.sigmoid()],
  ['silu', (t) => t.silu()],
  ['gelu', (t) => t.gelu()],
  ['gelu_tanh', (t) => t.gelu('tanh')],
  ['softplus', (t) => t.softplus()],
  ['exp∘tanh', (t) => t.tanh().exp()],
  ['sin∘3tanh', (t) => t.tanh().mul(3).sin()],
  ['cos∘3tanh', (t) => t.tanh().mul(3).cos()],
  ['log(|x|+0.5)', (t) => t.abs().add(0.5).log()],
  ['sqrt(|x|+0.1)', (t) => t.abs().add(0.1).sqrt()],
  ['rsqrt(x²+0.5)', (t) => t.square().add(0.5).rsqrt()],
  ['half', (t) => t.mul(0.5)],
];

/** Builds one random graph from its choices; inputs and weights are named `<tag>_<n>`. */
class GraphBuilder {
  private inputs = 0;
  constructor(
    private readonly c: Choices,
    private readonly tag: string,
  ) {}

  private name(): string {
    return `${this.tag}_${this.inputs++}`;
  }

  private shape(maxRank = 3): number[] {
    const rank = 1 + this.c.next(maxRank);
    const shape = Array.from({ length: rank }, () => this.c.pick(DIMS));
    if (this.c.next(5) === 0) shape[rank - 1] = this.c.pick(LONG);
    while (numel(shape) > MAX_ELEMENTS) shape.shift();
    return shape;
  }

  private fresh(shape: readonly number[]): Expr {
    const name = this.name();
    return { t: input(name, shape), d: `${name}${fmt(shape)}` };
  }

  leaf(): Expr {
    switch (this.c.next(6)) {
      case 0: {
        const shape = this.shape(2);
        const axis = this.c.next(shape.length);
        return { t: iota(shape, axis, 'i32').cast('f32').mul(0.25), d: `iota${fmt(shape)}@${axis}` };
      }
      case 1: {
        // rows of a table at i32 indices (random in [0, 8): past the end they clamp to the last row on both sides)
        const [rows, width, count] = [this.c.pick(DIMS), this.c.pick([...DIMS, ...LONG]), this.c.pick(DIMS)];
        const [table, idx] = [this.name(), this.name()];
        return { t: input(table, [rows, width]).gather(input(idx, [count], 'i32')), d: `gather(${table}[${rows},${width}], ${idx}[${count}])` };
      }
      case 2: {
        const storage = this.c.pick(['f32', 'f16', 'bf16'] as const);
        const shape = this.shape(2);
        const name = this.name();
        return { t: weight(name, shape, storage), d: `${name}:${storage}${fmt(shape)}` };
      }
      default:
        return this.fresh(this.shape());
    }
  }

  /** A second operand for a binary op: a constant, a broadcastable fresh input, or a function of `a` itself (a shared node). */
  private partner(a: Expr): Expr {
    switch (this.c.next(4)) {
      case 0: {
        const v = this.c.pick([0.5, -1.25, 2, 3]);
        return { t: constant(v), d: String(v) };
      }
      case 1: {
        const [name, f] = this.c.pick(UNARY);
        return { t: f(a.t), d: `${name}(…)` };
      }
      default: {
        // some dims 1 (broadcast), maybe fewer leading dims
        const shape = a.t.shape.map((d) => (this.c.next(3) === 0 ? 1 : d)).slice(this.c.next(a.t.rank + 1) === 0 ? 1 : 0);
        return this.fresh(shape.length ? shape : [1]);
      }
    }
  }

  /** At least `rank` dims, padding with leading 1s. */
  private atLeast(a: Expr, rank: number): Expr {
    if (a.t.rank >= rank) return a;
    return { t: a.t.reshape(...Array(rank - a.t.rank).fill(1), ...a.t.shape), d: a.d };
  }

  gen(depth: number): Expr {
    if (depth === 0) return this.leaf();
    switch (this.c.next(11)) {
      case 0:
        return this.leaf();
      case 1:
      case 2: {
        const [name, f] = this.c.pick(UNARY);
        const a = this.gen(depth - 1);
        return { t: f(a.t), d: `${name}(${a.d})` };
      }
      case 3:
      case 4: {
        const a = this.gen(depth - 1);
        const b = this.partner(a);
        const op = this.c.pick(['add', 'sub', 'mul', 'max', 'min', 'div', 'where-min'] as const);
        const t =
          op === 'div' ? a.t.div(b.t.abs().add(0.5)) // denominator kept away from 0
          : op === 'where-min' ? Tensor.where(a.t.lt(b.t), a.t, b.t) // continuous at ties, so no backend-dependent jumps
          : op === 'max' ? a.t.maximum(b.t)
          : op === 'min' ? a.t.minimum(b.t)
          : a.t[op](b.t);
        return { t, d: `${op}(${a.d}, ${b.d})` };
      }
      case 5: {
        const a = this.atLeast(this.gen(depth - 1), 1);
        const axis = this.c.next(a.t.rank);
        const keep = this.c.next(2) === 1;
        const op = this.c.pick(['sum', 'max', 'mean'] as const);
        return { t: a.t[op](axis, keep), d: `${op}(${a.d}, ${axis}${keep ? ', keep' : ''})` };
      }
      case 6:
        return this.matmul(depth);
      case 7:
      case 8:
        return this.view(this.gen(depth - 1));
      case 9: {
        const a = this.atLeast(this.gen(depth - 1), 1);
        const axis = this.c.next(a.t.rank);
        return { t: a.t.cumsum(axis), d: `cumsum(${a.d}, ${axis})` };
      }
      default: {
        const a = this.atLeast(this.gen(depth - 1), 1);
        const axis = this.c.next(a.t.rank);
        const other = this.c.next(2) === 0 ? { t: a.t.tanh(), d: 'tanh(…)' } : this.fresh(a.t.shape.map((d, i) => (i === axis ? this.c.pick(DIMS) : d)));
        if (numel(a.t.shape) + numel(other.t.shape) > MAX_ELEMENTS) return a;
        return { t: Tensor.concat([a.t, other.t], axis), d: `concat(${a.d}, ${other.d}, ${axis})` };
      }
    }
  }

  private matmul(depth: number): Expr {
    const a = this.atLeast(this.gen(depth - 1), 2);
    const k = a.t.shape[a.t.rank - 1]!;
    const m = a.t.shape[a.t.rank - 2]!;
    const batch = a.t.shape.slice(0, -2);
    switch (this.c.next(4)) {
      case 0: {
        if (numel(batch) * m * m > MAX_ELEMENTS) return a;
        return { t: a.t.matmul(a.t.T), d: `gram(${a.d})` }; // the same operand on both sides, one transposed
      }
      case 1: {
        const n = this.c.pick(DIMS);
        const name = this.name();
        return { t: a.t.matmul(weight(name, [n, k], this.c.pick(['f32', 'f16'] as const)).T), d: `linear(${a.d}, ${name}[${n},${k}])` };
      }
      case 2: {
        const n = this.c.pick(DIMS);
        const b = this.fresh([...batch, k, n]);
        return { t: a.t.matmul(b.t), d: `matmul(${a.d}, ${b.d})` };
      }
      default: {
        const n = this.c.pick(DIMS);
        const b = this.fresh([k, n]); // batch dims broadcast
        return { t: a.t.matmul(b.t), d: `matmul(${a.d}, ${b.d})` };
      }
    }
  }

  private view(a: Expr): Expr {
    const s = a.t.shape;
    switch (this.c.next(5)) {
      case 0: {
        if (a.t.rank < 2) return { t: a.t.unsqueeze(this.c.next(2)), d: `unsqueeze(${a.d})` };
        const perm = [...Array(a.t.rank).keys()];
        for (let i = perm.length - 1; i > 0; i--) {
          const j = this.c.next(i + 1);
          [perm[i], perm[j]] = [perm[j]!, perm[i]!];
        }
        return { t: a.t.permute(...perm), d: `permute(${a.d}, ${perm})` };
      }
      case 1: {
        if (a.t.rank >= 2) {
          const i = this.c.next(a.t.rank - 1);
          const merged = [...s.slice(0, i), s[i]! * s[i + 1]!, ...s.slice(i + 2)];
          return { t: a.t.reshape(...merged), d: `reshape(${a.d}, ${fmt(merged)})` };
        }
        const d = s[0] ?? 1;
        const f = [2, 3, 5, 7].find((p) => d % p === 0 && d > p);
        return f ? { t: a.t.reshape(f, d / f), d: `reshape(${a.d}, [${f},${d / f}])` } : { t: a.t.reshape(1, d), d: `reshape(${a.d}, [1,${d}])` };
      }
      case 2: {
        if (a.t.rank === 0) return a;
        const axis = this.c.next(a.t.rank);
        const d = s[axis]!;
        if (d === 1) return a;
        const start = this.c.next(d);
        const end = start + 1 + this.c.next(d - start);
        const step = 1 + this.c.next(3);
        return { t: a.t.slice(axis, start, end, step), d: `slice(${a.d}, ${axis}, ${start}:${end}:${step})` };
      }
      case 3: {
        const copies = this.c.pick([2, 3]);
        if (numel(s) * copies > MAX_ELEMENTS) return a;
        return { t: a.t.unsqueeze(0).broadcastTo([copies, ...s]), d: `broadcast(${a.d}, ${copies})` };
      }
      default:
        return a.t.rank >= 2 ? { t: a.t.T, d: `T(${a.d})` } : a;
    }
  }
}

// Unbiased: fast-check's default bias toward small values would make nearly every choice the first option.
const graphChoices = fc.noBias(fc.array(fc.nat({ max: 1 << 20 }), { minLength: 16, maxLength: 48 }));
const batchArb = fc.array(graphChoices, { minLength: GRAPHS_PER_PROGRAM, maxLength: GRAPHS_PER_PROGRAM });

/** Traces a batch of graphs as one program with outputs g0..g19. */
function traceBatch(batch: readonly number[][]): { graph: Graph; descriptions: string[] } {
  const descriptions: string[] = [];
  const graph = trace(() => {
    const outputs: Record<string, Tensor> = {};
    batch.forEach((choices, i) => {
      const e = new GraphBuilder(new Choices(choices), `g${i}`).gen(MAX_DEPTH);
      outputs[`g${i}`] = e.t;
      descriptions.push(e.d);
    });
    return outputs;
  });
  return { graph, descriptions };
}

function maxAbs(a: NDArray): number {
  let m = 0;
  for (const v of a.data) m = Math.max(m, Math.abs(v));
  return m;
}

let graphsChecked = 0;

/**
 * Runs one batch on both backends and checks every graph. Tolerance: each graph chains at most four ops, with
 * sums over up to 300 terms and WGSL transcendental error (a few ULP), so 1e-4 relative to the output's largest
 * magnitude (and 1e-4 of each element) bounds the differences with a wide margin; a wrong index or a lost
 * operand errs by O(1) of that magnitude.
 */
async function checkBatch(batch: number[][], seed: number, options: RunOptions): Promise<{ graph: Graph; program: Program }> {
  const { graph, descriptions } = traceBatch(batch);
  const res = await runGraphBoth(graph, (g) => randomData(g, seed), options);
  const failures: string[] = [];
  descriptions.forEach((d, i) => {
    const name = `g${i}`;
    const cpu = res.cpu.outputs[name]!;
    const gpu = res.gpu.outputs[name];
    const msg = gpu ? closeness(gpu, cpu, { atol: 1e-4 * Math.max(1, maxAbs(cpu)), rtol: 1e-4 }) : 'missing on the GPU';
    if (msg) failures.push(`${name} = ${d}\n${msg}`);
  });
  graphsChecked += descriptions.length;
  expect(failures, `fuse=${options.fuse ?? true} seed=${seed}`).toEqual([]);
  return res;
}

it(`${FUSED_PROGRAMS * GRAPHS_PER_PROGRAM} random graphs, fused, agree with the CPU reference`, async () => {
  let kernels = 0;
  await fc.assert(
    fc.asyncProperty(batchArb, fc.nat(), async (batch, seed) => {
      kernels += (await checkBatch(batch, seed, {})).program.kernels.length;
    }),
    { numRuns: FUSED_PROGRAMS, seed: SEED, endOnFailure: true },
  );
  expect(graphsChecked).toBeGreaterThanOrEqual(300);
  // fusion keeps most graphs to a kernel or two even with shared nodes and long reductions
  expect(kernels).toBeLessThan(FUSED_PROGRAMS * GRAPHS_PER_PROGRAM * 3);
}, COMPILE_HEAVY_TIMEOUT);

it('the first random batches agree unfused (fuse: false) too', async () => {
  // Same seed: the same first batches as the fused run, now one kernel per compute op.
  await fc.assert(
    fc.asyncProperty(batchArb, fc.nat(), async (batch, seed) => {
      await checkBatch(batch, seed, { fuse: false });
    }),
    { numRuns: 2, seed: SEED, endOnFailure: true },
  );
}, COMPILE_HEAVY_TIMEOUT);

it('random batches agree with at most 3 storage buffers per kernel (fused kernels split)', async () => {
  let splits = 0;
  await fc.assert(
    fc.asyncProperty(batchArb, fc.nat(), async (batch, seed) => {
      const { graph, program } = await checkBatch(batch, seed, { limits: { maxStorageBuffersPerShaderStage: 3 } });
      splits += program.kernels.length - compile(graph).kernels.length;
    }),
    { numRuns: 2, seed: SEED, endOnFailure: true },
  );
  expect(splits, 'kernels split off to respect the limit').toBeGreaterThan(0);
}, COMPILE_HEAVY_TIMEOUT);
