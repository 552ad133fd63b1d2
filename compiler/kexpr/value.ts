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
    need(NUMERIC.has(a.type) || NUMERIC.has(/^vec[234]<(\w+)>$/.exec(a.type)?.[1] as KType), op, [a, b], 'needs numbers');
    return K.bin(op, a, b);
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
  /** Bitwise `^`, `&`, `|` on integers of one type. */
  bits(op: '^' | '&' | '|', a: KExpr, b: KExpr): KExpr {
    same(op, a, b);
    need(INTEGER.has(a.type), op, [a, b], 'needs integers');
    return K.bin(op, a, b);
  },
  /** A shift of an integer by a u32 count. */
  shift(op: '<<' | '>>', a: KExpr, count: KExpr): KExpr {
    need(INTEGER.has(a.type) && count.type === 'u32', op, [a, count], 'shifts an integer by a u32');
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
  bitcast(to: 'f32' | 'i32' | 'u32' | 'vec2<f16>', a: KExpr): KExpr {
    need(WORD.has(a.type), `bitcast<${to}>`, [a], 'reinterprets a 32-bit scalar');
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
  /** A vector of 2 to 4 scalars of one type (`vec4<f32>(a, b, c, d)`). */
  vector(args: readonly KExpr[]): KExpr {
    for (const x of args.slice(1)) same('vec', args[0]!, x);
    need(args.length >= 2 && args.length <= 4 && NUMERIC.has(args[0]!.type), 'vec', args, 'takes 2 to 4 numbers');
    const type = `vec${args.length as 2 | 3 | 4}<${args[0]!.type as Scalar}>` as const;
    return K.call(type, args, type);
  },
  /** A vector of `width` copies of a scalar (`vec2<f16>(0.5h)`). */
  splat(width: 2 | 3 | 4, a: KExpr): KExpr {
    need(NUMERIC.has(a.type), 'vec', [a], 'takes a number');
    const type = `vec${width}<${a.type as Scalar}>` as const;
    return K.call(type, [a], type);
  },
  /** A named component (`.x`) of a vector. */
  field: (a: KExpr, name: 'x' | 'y' | 'z' | 'w'): KExpr => K.field(a, name, component(a, `.${name}`)),
  /** An abstract literal in an expression of that type (`0.5`). */
  lit: (value: number, type: KType): KExpr => K.lit(value, type),
};
