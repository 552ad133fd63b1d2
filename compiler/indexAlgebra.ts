// Index arithmetic shared by the CPU reference (numbers) and the WGSL lowering (kernel expressions, see
// kexpr/kernelIndex.ts), so a view op's index mapping is written once and both backends agree by construction.

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
