// Index arithmetic shared by the CPU reference (numbers) and the WGSL lowering (u32 expressions), so a view
// op's index mapping is written once and both backends agree by construction.

export interface IndexAlgebra<T> {
  lit(n: number): T;
  add(a: T, b: T): T;
  /** a - c for a known to be >= c */
  sub(a: T, c: number): T;
  mul(a: T, c: number): T;
  div(a: T, c: number): T;
  mod(a: T, c: number): T;
}

export const numberIndex: IndexAlgebra<number> = {
  lit: (n) => n,
  add: (a, b) => a + b,
  sub: (a, c) => a - c,
  mul: (a, c) => a * c,
  div: (a, c) => Math.floor(a / c),
  mod: (a, c) => a % c,
};

const isLit = (s: string) => /^\d+u$/.test(s);
const litVal = (s: string) => Number(s.slice(0, -1));

/** WGSL u32 expressions with light constant folding so generated shaders stay readable. */
export const wgslIndex: IndexAlgebra<string> = {
  lit: (n) => `${n}u`,
  add: (a, b) => {
    if (isLit(a) && isLit(b)) return `${litVal(a) + litVal(b)}u`;
    if (a === '0u') return b;
    if (b === '0u') return a;
    return `(${a} + ${b})`;
  },
  sub: (a, c) => {
    if (c === 0) return a;
    // a literal below c wraps like the runtime u32 would (concat reads its unselected parts at such indices, then clamps)
    if (isLit(a)) return `${(litVal(a) - c) >>> 0}u`;
    return `(${a} - ${c}u)`;
  },
  mul: (a, c) => {
    if (c === 0) return '0u';
    if (c === 1) return a;
    if (isLit(a)) return `${litVal(a) * c}u`;
    return `(${a} * ${c}u)`;
  },
  div: (a, c) => {
    if (c === 1) return a;
    if (isLit(a)) return `${Math.floor(litVal(a) / c)}u`;
    return `(${a} / ${c}u)`;
  },
  mod: (a, c) => {
    if (c === 1) return '0u';
    if (isLit(a)) return `${litVal(a) % c}u`;
    return `(${a} % ${c}u)`;
  },
};

/** Row-major linear offset of a multi-index. */
export function linearize<T>(alg: IndexAlgebra<T>, idx: readonly T[], shape: readonly number[]): T {
  let acc = alg.lit(0);
  let stride = 1;
  for (let i = shape.length - 1; i >= 0; i--) {
    acc = alg.add(alg.mul(idx[i]!, stride), acc);
    stride *= shape[i]!;
  }
  return acc;
}

/** Multi-index of a row-major linear offset. */
export function delinearize<T>(alg: IndexAlgebra<T>, lin: T, shape: readonly number[]): T[] {
  const out = new Array<T>(shape.length);
  let stride = 1;
  for (let i = shape.length - 1; i >= 0; i--) {
    const d = shape[i]!;
    out[i] = i === 0 ? alg.div(lin, stride) : alg.mod(alg.div(lin, stride), d);
    stride *= d;
  }
  return out;
}

/** An affine form over atoms (names or opaque sub-expressions): sum of coef * atom, plus a constant. */
interface Affine {
  terms: Map<string, number>;
  c: number;
}

/**
 * WGSL u32 index expressions kept as affine forms with known upper bounds, so that the div/mod chains that view
 * ops produce fold away: `(x * C + y) / C` is `x + y / C`, and `y / C` is 0 and `y % C` is `y` when `y < C`.
 * One instance per kernel: atom bounds (output coordinates, loop indices, clamps) are registered by the emitter
 * and the templates, and every string this algebra returns maps back to its form.
 */
export class BoundedIndex implements IndexAlgebra<string> {
  private readonly forms = new Map<string, Affine>();
  private readonly bounds = new Map<string, number>();
  /** Results by operation and operands: views re-derive the same indices many times per kernel. */
  private readonly results = new Map<string, string>();

  private cached(key: string, compute: () => string): string {
    const hit = this.results.get(key);
    if (hit !== undefined) return hit;
    const out = compute();
    this.results.set(key, out);
    return out;
  }

  /** Declares that a name (or expression) never exceeds `max`. */
  bound(name: string, max: number): void {
    const was = this.bounds.get(name);
    if (was !== undefined && was <= max) return;
    this.bounds.set(name, max);
    this.results.clear(); // folds that used the looser bound may now go further
  }

  /** Largest value an expression can take (Infinity when unknown). */
  max(s: string): number {
    const f = this.form(s);
    let m = f.c;
    for (const [atom, coef] of f.terms) m += coef * this.atomMax(atom);
    return m;
  }

  private atomMax(atom: string): number {
    const known = this.bounds.get(atom);
    if (known !== undefined) return known;
    const clamp = /^min\(.*, (\d+)u\)$/.exec(atom);
    return clamp ? Number(clamp[1]) : Infinity;
  }

  private form(s: string): Affine {
    const known = this.forms.get(s);
    if (known) return known;
    if (isLit(s)) return { terms: new Map(), c: litVal(s) };
    return { terms: new Map([[s, 1]]), c: 0 };
  }

  private render(f: Affine): string {
    const parts = [...f.terms].filter(([, k]) => k !== 0).map(([atom, k]) => (k === 1 ? atom : `${atom} * ${k}u`));
    let s: string;
    if (parts.length === 0) s = `${f.c >>> 0}u`;
    else if (parts.length === 1 && f.c === 0) s = f.terms.size === 1 && [...f.terms.values()][0] === 1 ? parts[0]! : `(${parts[0]})`;
    else s = `(${parts.join(' + ')}${f.c > 0 ? ` + ${f.c}u` : f.c < 0 ? ` - ${-f.c}u` : ''})`;
    if (!this.forms.has(s)) this.forms.set(s, f);
    return s;
  }

  private atom(expr: string, max: number): Affine {
    this.bound(expr, max);
    return { terms: new Map([[expr, 1]]), c: 0 };
  }

  lit(n: number): string {
    return `${n}u`;
  }
  add(a: string, b: string): string {
    if (a === '0u') return b;
    if (b === '0u') return a;
    return this.cached(`+${a}|${b}`, () => this.addForms(a, b));
  }
  private addForms(a: string, b: string): string {
    const [x, y] = [this.form(a), this.form(b)];
    const terms = new Map(x.terms);
    for (const [atom, k] of y.terms) terms.set(atom, (terms.get(atom) ?? 0) + k);
    return this.render({ terms, c: x.c + y.c });
  }
  sub(a: string, c: number): string {
    const x = this.form(a);
    return this.render({ terms: new Map(x.terms), c: x.c - c });
  }
  mul(a: string, c: number): string {
    if (c === 1) return a;
    if (c === 0) return '0u';
    return this.cached(`*${a}|${c}`, () => this.mulForm(a, c));
  }
  private mulForm(a: string, c: number): string {
    const x = this.form(a);
    return this.render({ terms: new Map([...x.terms].map(([atom, k]) => [atom, k * c])), c: x.c * c });
  }
  div(a: string, c: number): string {
    if (c === 1) return a;
    return this.cached(`/${a}|${c}`, () => this.divForm(a, c));
  }
  private divForm(a: string, c: number): string {
    const x = this.form(a);
    if (x.c < 0) return this.render(this.atom(`(${a} / ${c}u)`, Math.floor(this.max(a) / c)));
    const quotient: Affine = { terms: new Map(), c: Math.floor(x.c / c) };
    const rest: Affine = { terms: new Map(), c: x.c % c };
    for (const [atom, k] of x.terms) (k % c === 0 ? quotient.terms.set(atom, k / c) : rest.terms.set(atom, k));
    const restMax = this.maxOf(rest);
    if (restMax < c) return this.render(quotient);
    const part = this.render(rest);
    const q = this.atom(`(${part} / ${c}u)`, Math.floor(restMax / c));
    return this.add(this.render(quotient), this.render(q));
  }
  mod(a: string, c: number): string {
    if (c === 1) return '0u';
    return this.cached(`%${a}|${c}`, () => this.modForm(a, c));
  }
  private modForm(a: string, c: number): string {
    const x = this.form(a);
    if (x.c < 0) return this.render(this.atom(`(${a} % ${c}u)`, c - 1));
    const rest: Affine = { terms: new Map(), c: x.c % c };
    for (const [atom, k] of x.terms) if (k % c !== 0) rest.terms.set(atom, k);
    if (this.maxOf(rest) < c) return this.render(rest);
    return this.render(this.atom(`(${this.render(rest)} % ${c}u)`, c - 1));
  }

  private maxOf(f: Affine): number {
    let m = f.c;
    for (const [atom, k] of f.terms) m += k * this.atomMax(atom);
    return m;
  }
}
