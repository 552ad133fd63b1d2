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
