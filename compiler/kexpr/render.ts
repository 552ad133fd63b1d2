// WGSL text of a kernel expression. Sums are written flat, `(a + b * 3u + 5u)`, as the index arithmetic reads
// best; every other binary operation is parenthesised (WGSL forbids mixing some operators without parentheses).
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

/** The operands of a chain of additions, left to right. */
function addends(x: KExpr, out: KExpr[] = []): KExpr[] {
  if (x.k === 'bin' && x.op === '+') {
    addends(x.a, out);
    addends(x.b, out);
  } else out.push(x);
  return out;
}

const term = (x: KExpr): string => (x.k === 'bin' && x.op === '*' ? `${render(x.a)} * ${render(x.b)}` : render(x));

export function render(x: KExpr): string {
  switch (x.k) {
    case 'lit': return literal(x.value, x.type);
    case 'var': return x.name;
    case 'wgsl': return x.text;
    case 'bin': {
      if (x.op === '+') return `(${addends(x).map(term).join(' + ')})`;
      if (x.op === '-' && x.a.k === 'bin' && x.a.op === '+') return `(${addends(x.a).map(term).join(' + ')} - ${render(x.b)})`;
      if (x.op === '-') return `(${term(x.a)} - ${render(x.b)})`;
      return `(${render(x.a)} ${x.op} ${render(x.b)})`;
    }
    case 'un': return `(${x.op}${render(x.a)})`;
    case 'call': return `${x.fn}(${x.args.map(render).join(', ')})`;
    case 'load': return `${x.buffer}[${render(x.index)}]`;
    case 'at': return `${render(x.a)}[${render(x.i)}]`;
  }
}
