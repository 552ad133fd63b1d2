// WGSL text of a kernel expression. u32 arithmetic is the index arithmetic: sums are written flat,
// `(a + b * 3u + 5u)`, as it reads best, and every other binary operation is parenthesised (WGSL forbids mixing
// some operators without parentheses). Values (f32, i32, bool) parenthesise every binary operation too, except as
// a call's argument and as the left operand of a chain of the same `+` or `*`: `(0.5 * x * (1.0 + erf(x * c)))`.
import type { KExpr, KType } from './expr.ts';

export function literal(value: number | boolean, type: KType): string {
  if (typeof value === 'boolean') return String(value);
  switch (type) {
    case 'u32': return `${value >>> 0}u`;
    case 'i32': return `${value | 0}i`;
    case 'f16': return `${Number.isInteger(value) ? value.toFixed(1) : value}h`;
    default: return Number.isInteger(value) ? value.toFixed(1) : String(value);
  }
}

/** A constant with its type's constructor; WGSL's constant evaluation rejects infinities and NaN literals. */
export function typedLiteral(value: number | boolean, type: KType): string {
  if (typeof value === 'boolean') return String(value);
  if (type === 'i32') return `i32(${Math.trunc(value)})`;
  if (type === 'u32') return `${Math.trunc(value) >>> 0}u`;
  if (Number.isNaN(value)) return `bitcast<${type}>(0x7fc00000u)`;
  // the largest finite f32 stands in for an infinity (exp of it still underflows to 0)
  if (value >= 3.4028234e38) return `bitcast<${type}>(0x7f7fffffu)`;
  if (value <= -3.4028234e38) return `bitcast<${type}>(0xff7fffffu)`;
  return `${type}(${Math.fround(value).toPrecision(9)})`;
}

/** The operands of a chain of additions, left to right. */
function addends(x: KExpr, out: KExpr[] = []): KExpr[] {
  if (x.k === 'bin' && x.op === '+') {
    addends(x.a, out);
    addends(x.b, out);
  } else out.push(x);
  return out;
}

const term = (x: KExpr): string => (x.k === 'bin' && x.op === '*' ? `${render(x.a)} * ${render(x.b)}` : render(x));

const isValueBin = (x: KExpr): x is Extract<KExpr, { k: 'bin' }> => x.k === 'bin' && x.type !== 'u32';

/** A value's binary operation without its outer parentheses. */
function bare(x: KExpr): string {
  if (!isValueBin(x)) return render(x);
  const chain = x.a.k === 'bin' && x.a.op === x.op && (x.op === '+' || x.op === '*');
  return `${chain ? bare(x.a) : render(x.a)} ${x.op} ${render(x.b)}`;
}

export function render(x: KExpr): string {
  switch (x.k) {
    case 'lit': return x.typed ? typedLiteral(x.value, x.type) : x.hex ? `0x${Number(x.value).toString(16).padStart(x.hex, '0')}u` : literal(x.value, x.type);
    case 'var': return x.name;
    case 'wgsl': return x.text;
    case 'bin': {
      if (x.type !== 'u32') return `(${bare(x)})`;
      if (x.op === '+') return `(${addends(x).map(term).join(' + ')})`;
      if (x.op === '-' && x.a.k === 'bin' && x.a.op === '+') return `(${addends(x.a).map(term).join(' + ')} - ${render(x.b)})`;
      if (x.op === '-') return `(${term(x.a)} - ${render(x.b)})`;
      return `(${render(x.a)} ${x.op} ${render(x.b)})`;
    }
    case 'un': return `(${x.op}${render(x.a)})`;
    case 'call': return `${x.fn}(${x.args.map(bare).join(', ')})`;
    case 'load': return `${x.buffer}[${render(x.index)}]`;
    case 'at': return `${render(x.a)}[${render(x.i)}]`;
    case 'field': return `${render(x.a)}.${x.name}`;
  }
}
