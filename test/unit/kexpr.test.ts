// The kernel-expression IR: its text forms, the simplifier and the range analysis checked against numeric
// evaluation (WGSL's wrapping u32 arithmetic) on random expressions, and the emitter's range check of buffer offsets.
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { delinearize, linearize } from '../../compiler/indexAlgebra.ts';
import { K, type KExpr, print } from '../../compiler/kexpr/expr.ts';
import { evaluate } from '../../compiler/kexpr/evaluate.ts';
import { IndexRangeError, KernelIndex } from '../../compiler/kexpr/kernelIndex.ts';
import { rangeOf } from '../../compiler/kexpr/range.ts';
import { simplify } from '../../compiler/kexpr/simplify.ts';
import { Emitter, assemble, finish } from '../../compiler/lower/emitter.ts';
import { trace, input } from '../../dsl/trace.ts';

/** Names and their largest values: a kernel's coordinates and loop indices. */
const MAX: Record<string, number> = { a: 7, b: 15, c: 40, d: 1, e: 1000 };
const declared = (key: string) => MAX[key];

const expr: fc.Arbitrary<KExpr> = fc.letrec<{ node: KExpr }>((tie) => ({
  node: fc.oneof(
    { depthSize: 'small', withCrossShrink: true },
    fc.constantFrom(...Object.keys(MAX)).map((n) => K.v(n)),
    fc.integer({ min: 0, max: 50 }).map((n) => K.u32(n)),
    fc.tuple(tie('node'), tie('node')).map(([a, b]) => K.bin('+', a, b)),
    fc.tuple(tie('node'), fc.integer({ min: 0, max: 12 })).map(([a, c]) => K.bin('*', a, K.u32(c))),
    fc.tuple(tie('node'), fc.integer({ min: 1, max: 48 })).map(([a, c]) => K.bin('/', a, K.u32(c))),
    fc.tuple(tie('node'), fc.integer({ min: 1, max: 48 })).map(([a, c]) => K.bin('%', a, K.u32(c))),
    fc.tuple(tie('node'), fc.integer({ min: 0, max: 60 })).map(([a, c]) => K.call('min', [a, K.u32(c)])),
    // differences wrap below zero, as on the GPU
    fc.tuple(tie('node'), fc.integer({ min: 0, max: 9 })).map(([a, c]) => K.bin('-', a, K.u32(c))),
  ),
})).node;

/** Values of the names within their declared ranges. */
const env = fc.record(Object.fromEntries(Object.entries(MAX).map(([n, max]) => [n, fc.integer({ min: 0, max })])) as Record<string, fc.Arbitrary<number>>);

describe('kernel expressions', () => {
  it('print a typed S-expression and render flat WGSL sums', () => {
    const x = K.bin('/', K.bin('+', K.v('gi'), K.bin('*', K.v('o1'), K.u32(4))), K.u32(3));
    expect(print(x)).toBe('(/ (+ gi (* o1 4u)) 3u)');
    expect(`${x}`).toBe('((gi + o1 * 4u) / 3u)');
    expect(`${K.call('min', [K.cast('u32', K.wgsl('v5', 'i32')), K.u32(9)])}`).toBe('min(u32(v5), 9u)');
  });

  it('simplify keeps the value of every expression (random expressions and values, u32 semantics)', () => {
    fc.assert(
      fc.property(expr, env, (x, values) => {
        const s = simplify(x, declared);
        expect(evaluate(s, (n) => values[n]!), `${x} -> ${s}`).toBe(evaluate(x, (n) => values[n]!));
      }),
      { numRuns: 3000 },
    );
  });

  it('the range of an expression holds every value it takes', () => {
    fc.assert(
      fc.property(expr, env, (x, values) => {
        const v = evaluate(x, (n) => values[n]!);
        const [lo, hi] = rangeOf(x, declared);
        expect(v >= lo && v <= hi, `${x} = ${v} outside [${lo}, ${hi}]`).toBe(true);
      }),
      { numRuns: 3000 },
    );
  });

  it('fold identities: x * 1, x + 0, strides, clamps, and delinearize then linearize', () => {
    const ix = new KernelIndex();
    const [a, b] = [ix.bound('a', 7), ix.bound('b', 15)];
    expect(ix.add(ix.mul(a, 1), ix.lit(0))).toBe(a);
    expect(`${ix.div(ix.add(ix.mul(a, 16), b), 16)}`).toBe('a'); // b < 16
    expect(`${ix.mod(ix.add(ix.mul(a, 16), b), 16)}`).toBe('b');
    expect(`${ix.div(ix.mul(a, 6), 3)}`).toBe('(a * 2u)');
    expect(`${ix.div(ix.add(ix.mul(a, 6), ix.lit(1)), 4)}`).toBe('((a * 3u) / 2u)'); // (6a + 1) / 4 = 3a / 2
    expect(`${ix.div(ix.div(a, 2), 3)}`).toBe('(a / 6u)');
    expect(`${ix.min(a, 9)}`).toBe('a');
    expect(`${ix.min(a, 3)}`).toBe('min(a, 3u)');
    const t = ix.bound('t', 23);
    expect(linearize(ix, delinearize(ix, t, [2, 3, 4]), [2, 3, 4])).toBe(t);
    // a reshape of a reshape: [6, 4] -> [2, 3, 4] reads the same offset
    expect(`${linearize(ix, delinearize(ix, linearize(ix, delinearize(ix, t, [6, 4]), [6, 4]), [2, 3, 4]), [2, 3, 4])}`).toBe('t');
    // a coordinate split at a coarser stride: (o * 192 + k) / 1536 with k < 192 is o / 8
    const [o, k] = [ix.bound('o', 15), ix.bound('k', 191)];
    expect(`${ix.div(ix.add(k, ix.mul(o, 192)), 1536)}`).toBe('(o / 8u)');
    expect(`${ix.mod(ix.add(k, ix.mul(o, 192)), 1536)}`).toBe('((o % 8u) * 192u + k)');
  });

  it('a sum that may wrap past 2^32 is not split by a division', () => {
    const ix = new KernelIndex();
    const big = ix.bound('x', 2 ** 31);
    expect(`${ix.div(ix.add(ix.mul(big, 4), ix.lit(3)), 4)}`).toBe('((x * 4u + 3u) / 4u)');
  });

  it('names are as bounded as the expressions they name, also for bounds declared later', () => {
    const ix = new KernelIndex();
    const named = ix.define('ix0', ix.add(K.v('j'), ix.lit(1)));
    expect(ix.max(named)).toBe(Infinity);
    ix.bound('j', 62);
    expect(ix.max(named)).toBe(63);
  });

  it('a buffer offset the ranges do not bound fails the kernel with an error naming it', () => {
    const g = trace(() => ({ y: input('x', [4]).add(input('z', [4])) }));
    const root = g.nodes.find((n) => n.op === 'add')!;
    const kernel = (max?: number) => {
      const e = new Emitter(root, () => false, 'map');
      const t = max === undefined ? K.v('t') : e.bound('t', max);
      e.line(e.store(root, t, '0.0'));
      return () => finish(e, 'map', assemble(e, e.topLines(), 32), 1);
    };
    expect(kernel()).toThrow(IndexRangeError);
    expect(kernel()).toThrow(new RegExp(`^kernel %${root.id} \\(add, map template\\), write of %${root.id}: index t is unbounded, the buffer holds 4`));
    expect(kernel(4)).toThrow(/index t may reach 4, the buffer holds 4/);
    expect(kernel(3)).not.toThrow();
  });
});
