// Value arithmetic as kernel expressions: the op table's lowerings build typed nodes (compiler/kexpr/value.ts)
// whose WGSL text is fixed here, operands WGSL would reject fail when the kernel is built, and a kernel declares
// only the helper functions its values call. No GPU: lowerings and compiled programs are text.
import { describe, expect, it } from 'vitest';
import type { DType, Node, OpName } from '../../compiler/ir.ts';
import { K, type KExpr } from '../../compiler/kexpr/expr.ts';
import { KTypeError, V } from '../../compiler/kexpr/value.ts';
import { OPS } from '../../compiler/ops.ts';
import { halfElement, halfPair } from '../../compiler/halfStorage.ts';
import { QUANT_FORMATS } from '../../compiler/quantized.ts';
import { canonical } from '../../bench/sameWgsl.ts';
import { expDiff, fv, inverseOf, scaled, softcapped, sumOf, weightOf } from '../../compiler/lower/attentionValues.ts';
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

  it('the quantized staging\'s builders: a vector scaled by its component type, int8 packing, a sum of terms', () => {
    const v4 = K.v('xv', 'vec4<f32>');
    expect(`${V.pack4xI8(V.cast('vec4<i32>', V.fn('round', [V.scale(v4, x)])))}`).toBe('pack4xI8(vec4<i32>(round(xv * x)))');
    expect(`${V.sum([x, y, x])}`).toBe('(x + y + x)');
    expect(() => V.scale(x, y)).toThrow('[*] x : f32, y : f32: scales a vector of numbers by its component type');
    expect(() => V.scale(v4, n)).toThrow('scales a vector of numbers by its component type');
    expect(() => V.pack4xI8(v4)).toThrow('[pack4xI8] xv : vec4<f32>: packs a vec4<i32>');
    expect(() => V.sum([])).toThrow('sums at least one term');
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

  it('storage decoders are typed nodes: their WGSL, and the types they check', () => {
    const i = K.v('ix3');
    expect(`${halfElement('f16', 'w', i, 8)}`).toBe('unpack2x16float(w[(ix3 >> 1u)])[(ix3 & 1u)]');
    expect(`${halfElement('bf16', 'w', i, 8)}`).toBe('bitcast<f32>(select((w[(ix3 >> 1u)] << 16u), (w[(ix3 >> 1u)] & 0xffff0000u), (ix3 & 1u) == 1u))');
    expect(halfPair('f16', K.v('v1'), () => 'v2')).toMatchObject({ lines: ['let v2 = unpack2x16float(v1);'] });
    expect(halfPair('f16', K.v('v1'), () => 'v2').values.map(String)).toEqual(['v2.x', 'v2.y']);
    expect(`${QUANT_FORMATS.q8.element('q', i, 64)}`).toBe(
      '(f32(extractBits(bitcast<i32>(q[((ix3 >> 2u) >> 2u)][((ix3 >> 2u) & 3u)]), ((ix3 & 3u) * 8u), 8u)) * unpack2x16float(q[((16u + (ix3 >> 6u)) >> 2u)][((16u + (ix3 >> 6u)) & 3u)])[((ix3 >> 5u) & 1u)])',
    );
    const q4 = QUANT_FORMATS.q4.mantissa.decode(K.v('w'), (p) => `${p}0`);
    expect(q4.values.map((v) => v.type)).toEqual(Array(8).fill('f32'));
    expect(`${q4.values[1]}`).toBe('bitcast<f32>(((qs0 & 0x780000u) | 0x3f800000u))');
    expect(() => V.bitcast('f32', K.v('p', 'vec2<f32>'))).toThrow('[bitcast<f32>] p : vec2<f32>: reinterprets a 32-bit scalar');
    expect(() => V.unpack2x16float(n)).toThrow('unpacks a u32');
    expect(() => V.field(x, 'y')).toThrow('[.y] x : f32: needs a vector');
    expect(V.vector([x, y, x, y]).type).toBe('vec4<f32>');
  });

  it("the attention templates' online softmax: scores, weights against a running maximum, rescales", () => {
    const [sc, max, sum] = ['sc', 'run_max', 'run_sum'].map(fv) as [KExpr, KExpr, KExpr];
    expect(`${softcapped(scaled(fv('dot'), 0.25), 30)}`).toBe('(strata_tanh((dot * f32(0.250000000)) / f32(30.0000000)) * f32(30.0000000))');
    expect(`${weightOf(sc, max)}`).toBe('select(0.0, exp(sc - run_max), sc > -1.0e38)');
    expect(`${sumOf([V.arith('*', sum, expDiff(max, fv('new_max'))), fv('p0'), fv('p1')])}`).toBe('((run_sum * exp(run_max - new_max)) + p0 + p1)');
    expect(`${inverseOf(sum)}`).toBe('select(0.0, 1.0 / run_sum, run_sum > 0.0)');
    expect(`${V.arith('+', sum, V.shuffleXor(sum, K.u32(2)))}`).toBe('(run_sum + subgroupShuffleXor(run_sum, 2u))');
    expect(() => V.shuffleXor(sum, n)).toThrow('[subgroupShuffleXor] run_sum : f32, n : i32: takes a u32 lane mask');
  });

  it('dumps compare as expression trees: redundant parentheses and i32 literals for abstract ones pass, the rest does not', () => {
    expect(canonical('let a = buf[(ix5) >> 1u] + x * y;')).toBe(canonical('let a = (buf[(ix5 >> 1u)] + (x * y));'));
    expect(canonical('let at = u32(max(v2, 0)) % 4u;')).toBe(canonical('let at = (u32(max(v2, 0i)) % 4u);'));
    expect(canonical('let a = x - (y - z);')).not.toBe(canonical('let a = x - y - z;'));
    expect(canonical('let a = v[0];')).not.toBe(canonical('let a = v[0u];'));
  });
});
