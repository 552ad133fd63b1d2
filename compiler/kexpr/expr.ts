// The kernel-expression IR: typed nodes for the index and value arithmetic of a kernel, built by the emitter, the
// op table's lowerings (value.ts checks their types) and the templates, simplified (simplify.ts) with ranges
// (range.ts), range-checked where they address a buffer and rendered to WGSL (render.ts) last. Nodes are
// immutable; `print` is their text form.
import { render } from './render.ts';

export type Scalar = 'u32' | 'i32' | 'f32' | 'f16' | 'bool';
export type KType = Scalar | `vec${2 | 3 | 4}<${Scalar}>`;

export type BinOp = '+' | '-' | '*' | '/' | '%' | '&' | '|' | '^' | '<<' | '>>' | '<' | '<=' | '>' | '>=' | '==' | '!=' | '&&' | '||';
export type UnOp = '-' | '!' | '~';

export type KExpr =
  /**
   * A literal. `typed` ones are written with their type's constructor (`f32(0.500000000)`, `i32(3)`), as the op
   * table's constants are; others as WGSL abstract literals (`0.5`) that take the type of what they meet.
   */
  | { readonly k: 'lit'; readonly type: KType; readonly value: number | boolean; readonly typed?: true; readonly hex?: number }
  /** A named value: a builtin (lid), a loop index, an output coordinate or a value the kernel declared. */
  | { readonly k: 'var'; readonly type: KType; readonly name: string }
  | { readonly k: 'bin'; readonly type: KType; readonly op: BinOp; readonly a: KExpr; readonly b: KExpr }
  | { readonly k: 'un'; readonly type: KType; readonly op: UnOp; readonly a: KExpr }
  /** min/max/select/clamp, builtins, casts (`fn` is the type) and the op table's helpers (strata_sigmoid). */
  | { readonly k: 'call'; readonly type: KType; readonly fn: string; readonly args: readonly KExpr[] }
  /** Element `index` of a buffer of `length` elements: the range check proves the index below the length. */
  | { readonly k: 'load'; readonly type: KType; readonly buffer: string; readonly index: KExpr; readonly length: number }
  /** A component of a vector value. */
  | { readonly k: 'at'; readonly type: KType; readonly a: KExpr; readonly i: KExpr }
  /** Named components of a vector value (`.x`, `.xxyy`). */
  | { readonly k: 'field'; readonly type: KType; readonly a: KExpr; readonly name: string }
  /** Fixed template text (a workgroup array's element, a storage format's decoder); opaque to the simplifier. */
  | { readonly k: 'wgsl'; readonly type: KType; readonly text: string };

// Interpolating a node into a template line renders it (`let ${name} = ${expr};`), so fixed template bodies keep
// their text while the index math they splice in is built and simplified as nodes.
const PROTO = { toString(this: KExpr): string { return render(this); } };
const make = <T extends KExpr>(fields: T): T => Object.freeze(Object.assign(Object.create(PROTO) as object, fields)) as T;

export const K = {
  u32: (value: number): KExpr => make({ k: 'lit', type: 'u32', value }),
  /** A u32 bit pattern (a mask, a float's exponent bits), written in hex of at least `digits` digits (`0x00ff00ffu`). */
  bits: (value: number, digits = 1): KExpr => make({ k: 'lit', type: 'u32', value: value >>> 0, hex: digits }),
  lit: (value: number | boolean, type: KType): KExpr => make({ k: 'lit', type, value }),
  /** A constant written with its type's constructor (see the 'lit' node). */
  typed: (value: number | boolean, type: KType): KExpr => make({ k: 'lit', type, value, typed: true }),
  v: (name: string, type: KType = 'u32'): KExpr => make({ k: 'var', type, name }),
  bin: (op: BinOp, a: KExpr, b: KExpr, type: KType = COMPARISON.has(op) ? 'bool' : a.type): KExpr => make({ k: 'bin', type, op, a, b }),
  un: (op: UnOp, a: KExpr): KExpr => make({ k: 'un', type: op === '!' ? 'bool' : a.type, op, a }),
  call: (fn: string, args: readonly KExpr[], type: KType = args[0]?.type ?? 'u32'): KExpr => make({ k: 'call', type, fn, args }),
  cast: (type: KType, a: KExpr): KExpr => make({ k: 'call', type, fn: type, args: [a] }),
  load: (buffer: string, index: KExpr, length: number, type: KType): KExpr => make({ k: 'load', type, buffer, index, length }),
  at: (a: KExpr, i: KExpr, type: KType): KExpr => make({ k: 'at', type, a, i }),
  field: (a: KExpr, name: string, type: KType): KExpr => make({ k: 'field', type, a, name }),
  wgsl: (text: string, type: KType): KExpr => make({ k: 'wgsl', type, text }),
};

const COMPARISON = new Set<BinOp>(['<', '<=', '>', '>=', '==', '!=', '&&', '||']);

export const isLit = (x: KExpr, value?: number): x is Extract<KExpr, { k: 'lit' }> & { value: number } =>
  x.k === 'lit' && typeof x.value === 'number' && (value === undefined || x.value === value);

export function children(x: KExpr): readonly KExpr[] {
  switch (x.k) {
    case 'bin': return [x.a, x.b];
    case 'un': return [x.a];
    case 'call': return x.args;
    case 'load': return [x.index];
    case 'at': return [x.a, x.i];
    case 'field': return [x.a];
    default: return [];
  }
}

const printed = new WeakMap<KExpr, string>();
/** The text form: an S-expression with typed literals, `(+ gi (* o1 4u))`. Also the key of a node's value. */
export function print(x: KExpr): string {
  const hit = printed.get(x);
  if (hit !== undefined) return hit;
  let s: string;
  switch (x.k) {
    case 'lit': s = typeof x.value === 'boolean' ? String(x.value) : `${x.value}${x.type === 'u32' ? 'u' : x.type === 'i32' ? 'i' : x.type === 'f16' ? 'h' : 'f'}`; break;
    case 'var': s = x.name; break;
    case 'wgsl': s = `{${x.text}}`; break;
    case 'bin': s = `(${x.op} ${print(x.a)} ${print(x.b)})`; break;
    case 'un': s = `(${x.op} ${print(x.a)})`; break;
    case 'call': s = `(${x.fn} ${x.args.map(print).join(' ')})`; break;
    case 'load': s = `(load ${x.buffer}:${x.length} ${print(x.index)})`; break;
    case 'at': s = `(at ${print(x.a)} ${print(x.i)})`; break;
    case 'field': s = `(.${x.name} ${print(x.a)})`; break;
  }
  printed.set(x, s);
  return s;
}

/** Every named value an expression reads (var names, and the words of opaque WGSL values). */
export function names(x: KExpr, out = new Set<string>()): Set<string> {
  if (x.k === 'var') out.add(x.name);
  else if (x.k === 'wgsl') for (const m of x.text.replace(/@B\d+@/g, '').matchAll(/\b[A-Za-z_]\w*\b/g)) out.add(m[0]);
  for (const c of children(x)) names(c, out);
  return out;
}
