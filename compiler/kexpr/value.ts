// Typed builders of value expressions, for the op table's lowerings and the emitter's reductions: each checks its
// operands as WGSL would, so that a lowering mixing f32 with i32 fails when the kernel is built, naming the
// operation and the types, not when the adapter compiles the shader.
import { K, type KExpr, type KType, type Scalar } from './expr.ts';

/** A value expression whose operand types WGSL rejects: a compiler bug (the tracer checked the user's dtypes). */
export class KTypeError extends Error {
  override name = 'KTypeError';
}

const NUMERIC: ReadonlySet<KType> = new Set(['f32', 'f16', 'i32', 'u32']);
const INTEGER: ReadonlySet<KType> = new Set(['i32', 'u32']);

function need(ok: boolean, op: string, operands: readonly KExpr[], rule: string): void {
  if (!ok) throw new KTypeError(`[${op}] ${operands.map((o) => `${o} : ${o.type}`).join(', ')}: ${rule}`);
}
const WORD: ReadonlySet<KType> = new Set(['f32', 'i32', 'u32']);

/** The scalar type of a scalar or a vector type. */
const scalarOf = (t: KType): KType => (/^vec[234]<(\w+)>$/.exec(t)?.[1] as KType | undefined) ?? t;

/** The component type of a vector operand. */
function component(a: KExpr, op: string): KType {
  const m = /^vec[234]<(\w+)>$/.exec(a.type);
  need(m !== null, op, [a], 'needs a vector');
  return m![1] as KType;
}
const same = (op: string, a: KExpr, b: KExpr) => need(a.type === b.type, op, [a, b], 'operands must have one type');

export const V = {
  /** `a op b` on two numbers (or vectors of numbers) of one type. */
  arith(op: '+' | '-' | '*' | '/' | '%', a: KExpr, b: KExpr): KExpr {
    same(op, a, b);
    need(NUMERIC.has(scalarOf(a.type)), op, [a, b], 'needs numbers');
    return K.bin(op, a, b);
  },
  /** `a + b + ...`, left to right (at least one term). */
  sum(terms: readonly KExpr[]): KExpr {
    need(terms.length > 0, '+', terms, 'sums at least one term');
    return terms.reduce((a, b) => V.arith('+', a, b));
  },
  /** A comparison of two values of one type (ordering only on numbers). */
  compare(op: '<' | '<=' | '>' | '>=' | '==' | '!=', a: KExpr, b: KExpr): KExpr {
    same(op, a, b);
    need(op === '==' || op === '!=' || NUMERIC.has(a.type), op, [a, b], 'orders numbers only');
    return K.bin(op, a, b, 'bool');
  },
  logic(op: '&&' | '||', a: KExpr, b: KExpr): KExpr {
    need(a.type === 'bool' && b.type === 'bool', op, [a, b], 'needs bools');
    return K.bin(op, a, b, 'bool');
  },
  /** Bitwise `^`, `&`, `|` on integers (or integer vectors) of one type. */
  bits(op: '^' | '&' | '|', a: KExpr, b: KExpr): KExpr {
    same(op, a, b);
    need(INTEGER.has(scalarOf(a.type)), op, [a, b], 'needs integers');
    return K.bin(op, a, b);
  },
  /** A shift of an integer by a u32 count (of integer vectors, componentwise by a u32 vector of their width). */
  shift(op: '<<' | '>>', a: KExpr, count: KExpr): KExpr {
    const ok = INTEGER.has(a.type) ? count.type === 'u32' : INTEGER.has(scalarOf(a.type)) && count.type === a.type.replace(/<\w+>/, '<u32>');
    need(ok, op, [a, count], 'shifts an integer by a u32');
    return K.bin(op, a, count);
  },
  neg(a: KExpr): KExpr {
    need(a.type === 'f32' || a.type === 'f16' || a.type === 'i32', 'neg', [a], 'needs a signed number');
    return K.un('-', a);
  },
  /** A builtin or helper function whose arguments and result share one type (exp, max, pow, strata_sigmoid). */
  fn(name: string, args: readonly KExpr[]): KExpr {
    for (const x of args.slice(1)) same(name, args[0]!, x);
    return K.call(name, args, args[0]!.type);
  },
  /** `t` where cond holds, else `f` (WGSL's argument order). */
  select(f: KExpr, t: KExpr, cond: KExpr): KExpr {
    same('select', f, t);
    need(cond.type === 'bool', 'select', [cond], 'the condition must be bool');
    return K.call('select', [f, t, cond], f.type);
  },
  /** A value conversion (`f32(x)`, `u32(x)`). */
  cast: (to: KType, a: KExpr): KExpr => K.cast(to, a),
  /** A constant written with its type's constructor (`f32(0.500000000)`). */
  constant(value: number, type: KType): KExpr {
    return type === 'bool' ? K.typed(Boolean(value), 'bool') : K.typed(value, type);
  },
  /** The same 32 bits read as another type (`bitcast<f32>(w)`, `bitcast<vec2<f16>>(w)`: storage decoders). */
  bitcast(to: 'f32' | 'i32' | 'u32' | 'vec2<f16>' | 'vec4<f32>', a: KExpr): KExpr {
    const ok = to === 'vec4<f32>' ? a.type === 'vec4<u32>' : WORD.has(a.type);
    need(ok, `bitcast<${to}>`, [a], 'reinterprets a 32-bit scalar (or a u32x4 as a vec4<f32>)');
    return K.call(`bitcast<${to}>`, [a], to);
  },
  /** The two f16 halves of a u32 as f32s (low half in .x). */
  unpack2x16float(a: KExpr): KExpr {
    need(a.type === 'u32', 'unpack2x16float', [a], 'unpacks a u32');
    return K.call('unpack2x16float', [a], 'vec2<f32>');
  },
  /** `count` bits of an integer from bit `offset`, sign-extended for i32. */
  extractBits(a: KExpr, offset: KExpr, count: KExpr): KExpr {
    need(INTEGER.has(a.type) && offset.type === 'u32' && count.type === 'u32', 'extractBits', [a, offset, count], 'takes an integer and u32 offset and count');
    return K.call('extractBits', [a, offset, count], a.type);
  },
  /** Component `i` (a u32) of a vector. */
  at(a: KExpr, i: KExpr): KExpr {
    need(i.type === 'u32', '[]', [a, i], 'indexes a vector by a u32');
    return K.at(a, i, component(a, '[]'));
  },
  /** The dot product of two u32s' four signed bytes (WGSL's packed_4x8_integer_dot_product). */
  dot4I8Packed(a: KExpr, b: KExpr): KExpr {
    need(a.type === 'u32' && b.type === 'u32', 'dot4I8Packed', [a, b], 'takes two packed u32s');
    return K.call('dot4I8Packed', [a, b], 'i32');
  },
  /** Four i32s' low bytes packed into a u32 (WGSL's packed_4x8_integer_dot_product: `pack4xI8`). */
  pack4xI8(a: KExpr): KExpr {
    need(a.type === 'vec4<i32>', 'pack4xI8', [a], 'packs a vec4<i32>');
    return K.call('pack4xI8', [a], 'u32');
  },
  /** A vector of 2 to 4 components of one type, from scalars and smaller vectors (`vec4<f32>(a, b, c, d)`). */
  vector(args: readonly KExpr[]): KExpr {
    const scalar = scalarOf(args[0]!.type);
    const width = args.reduce((n, x) => n + Number(/^vec(\d)/.exec(x.type)?.[1] ?? 1), 0);
    need(args.every((x) => scalarOf(x.type) === scalar) && width >= 2 && width <= 4 && NUMERIC.has(scalar), 'vec', args, 'takes 2 to 4 components of one number type');
    const type = `vec${width as 2 | 3 | 4}<${scalar as Scalar}>` as const;
    return K.call(type, args, type);
  },
  /** The dot product of two vectors of one type. */
  dot(a: KExpr, b: KExpr): KExpr {
    same('dot', a, b);
    return K.call('dot', [a, b], component(a, 'dot'));
  },
  /** Two f32s as f16 halves of a u32 (.x in the low half). */
  pack2x16float(a: KExpr): KExpr {
    need(a.type === 'vec2<f32>', 'pack2x16float', [a], 'packs a vec2<f32>');
    return K.call('pack2x16float', [a], 'u32');
  },
  /** Every component of a vector times a scalar of its component type (`v * s`). */
  scale(a: KExpr, s: KExpr): KExpr {
    need(NUMERIC.has(scalarOf(a.type)) && s.type === scalarOf(a.type) && a.type !== s.type, '*', [a, s], 'scales a vector of numbers by its component type');
    return K.bin('*', a, s);
  },
  /** A vector of `width` copies of a scalar (`vec2<f16>(0.5h)`). */
  splat(width: 2 | 3 | 4, a: KExpr): KExpr {
    need(NUMERIC.has(a.type), 'vec', [a], 'takes a number');
    const type = `vec${width}<${a.type as Scalar}>` as const;
    return K.call(type, [a], type);
  },
  /** A named component (`.x`) of a vector. */
  field: (a: KExpr, name: 'x' | 'y' | 'z' | 'w'): KExpr => K.field(a, name, component(a, `.${name}`)),
  /** Components of a vector by name, repeated or reordered (`.xxyy`). */
  swizzle(a: KExpr, names: string): KExpr {
    need(/^[xyzw]{2,4}$/.test(names), `.${names}`, [a], 'takes 2 to 4 of x, y, z, w');
    return K.field(a, names, `vec${names.length as 2 | 3 | 4}<${component(a, `.${names}`) as Scalar}>`);
  },
  /** x's value in the subgroup's lane `lane ^ mask` (a u32). */
  shuffleXor(x: KExpr, mask: KExpr): KExpr {
    need(mask.type === 'u32', 'subgroupShuffleXor', [x, mask], 'takes a u32 lane mask');
    return K.call('subgroupShuffleXor', [x, mask], x.type);
  },
  /** An abstract literal in an expression of that type (`0.5`). */
  lit: (value: number, type: KType): KExpr => K.lit(value, type),
};
