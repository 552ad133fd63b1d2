// Value arithmetic as kernel expressions: the op table's lowerings build typed nodes (compiler/kexpr/value.ts)
// whose WGSL text is fixed here, operands WGSL would reject fail when the kernel is built, and a kernel declares
// only the helper functions its values call. No GPU: lowerings and compiled programs are text.
import { describe, expect, it } from 'vitest';
import type { DType, Node, OpName } from '../../compiler/ir.ts';
import { K, type KExpr } from '../../compiler/kexpr/expr.ts';
import { KTypeError, V } from '../../compiler/kexpr/value.ts';
import { OPS } from '../../compiler/ops.ts';
import { compileFn } from '../../dsl/compileFn.ts';
import { input } from '../../dsl/trace.ts';

const x = K.v('x', 'f32');
const y = K.v('y', 'f32');
const n = K.v('n', 'i32');

/** An elementwise op's lowering of argument expressions, its inputs of `dtype`. */
function lower(op: OpName, args: KExpr[], dtype: DType = 'f32', attrs: unknown = {}, out: DType = dtype): string {
  const def = OPS[op];
  if (def.kind !== 'elementwise') throw new Error(`${op} is not elementwise`);
  const inputs = args.map(() => ({ dtype }) as Node);
  return `${def.wgsl(args, attrs as never, inputs, out)}`;
}

describe('value expressions', () => {
  it('render as the WGSL of each lowering: a binary operation parenthesised, bare as an argument or a chain', () => {
    expect(lower('add', [x, y])).toBe('(x + y)');
    expect(lower('silu', [x])).toBe('(x * strata_sigmoid(x))');
    expect(lower('gelu', [x])).toBe('(0.5 * x * (1.0 + strata_erf(x * 0.70710678118)))');
    expect(lower('gelu_tanh', [x])).toBe('(0.5 * x * (1.0 + strata_tanh(0.7978845608 * (x + (0.044715 * x * x * x)))))');
    expect(lower('mod', [x, y])).toBe('(x - (y * floor(x / y)))');
    expect(lower('mod', [n, K.v('m', 'i32')], 'i32')).toBe('(n % m)');
    expect(lower('shl', [n, K.v('m', 'i32')], 'i32')).toBe('(n << u32(m))');
    expect(lower('where', [K.v('c', 'bool'), x, y])).toBe('select(y, x, c)');
    expect(lower('cast', [x], 'f32', { to: 'bool' }, 'bool')).toBe('(x != f32(0.00000000))');
    expect(lower('cast', [K.v('c', 'bool')], 'bool', { to: 'i32' }, 'i32')).toBe('select(i32(0), i32(1), c)');
    // u32 arithmetic keeps the index style (flat sums) inside a value: concat's choice of part
    expect(`${V.select(x, y, V.compare('<', K.bin('+', K.v('o0'), K.u32(3)), K.u32(5)))}`).toBe('select(x, y, (o0 + 3u) < 5u)');
  });

  it('constants are written with their type, infinities as the largest finite f32', () => {
    expect([0.5, -3, Infinity, -Infinity, NaN].map((v) => `${V.constant(v, 'f32')}`)).toEqual([
      'f32(0.500000000)',
      'f32(-3.00000000)',
      'bitcast<f32>(0x7f7fffffu)',
      'bitcast<f32>(0xff7fffffu)',
      'bitcast<f32>(0x7fc00000u)',
    ]);
    expect([V.constant(-3.7, 'i32'), V.constant(-1, 'u32'), V.constant(2, 'bool')].map(String)).toEqual(['i32(-3)', '4294967295u', 'true']);
  });

  it('operands WGSL rejects fail at build time, naming the operation and the types', () => {
    expect(() => lower('add', [x, n])).toThrow(KTypeError);
    expect(() => lower('add', [x, n])).toThrow('[+] x : f32, n : i32: operands must have one type');
    expect(() => V.select(x, y, n)).toThrow('[select] n : i32: the condition must be bool');
    expect(() => V.shift('<<', n, n)).toThrow('[<<] n : i32, n : i32: shifts an integer by a u32');
    expect(() => V.neg(K.v('u', 'u32'))).toThrow('[neg] u : u32: needs a signed number');
    expect(() => V.compare('<', K.v('c', 'bool'), K.v('d', 'bool'))).toThrow('orders numbers only');
  });

  it('a kernel declares only the helpers its values call', () => {
    const wgsl = (fn: () => ReturnType<Parameters<typeof compileFn>[0]>) => compileFn(fn).kernels.map((k) => k.wgsl).join('\n');
    const sigmoid = wgsl(() => ({ y: input('x', [8]).sigmoid() }));
    expect(sigmoid).toContain('fn strata_sigmoid(');
    expect(sigmoid).not.toContain('fn strata_erf(');
    const gelu = wgsl(() => ({ y: input('x', [8]).gelu() }));
    expect(gelu).toContain('fn strata_erf(');
    expect(gelu).not.toContain('fn strata_sigmoid(');
  });
});
