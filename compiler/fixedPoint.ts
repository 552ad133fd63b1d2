// Fixed-point sums through integer atomics: how a kernel whose workgroups each hold a partial sum of an element adds
// them without float atomics (WGSL has none) and without depending on their order (which float adds would). A
// partial s is s 2^32 = A 2^42 + B 2^21 + C with integers |A|, |B|, |C| <= 2^21, added into three i32 words: no
// carries between words, so each add stands alone (fire and forget), the words' sums are exact in any order, and
// 2^10 partials cannot overflow. Readers decode A 2^10 + B 2^-11 + C 2^-32: exact to 2^-33 a partial, f32 rounding
// once. Used by the fused MLP (lower/mlpKernel.ts); bench/mlpFusion.ts measured the scheme on the H200.
import { K, type KExpr } from './kexpr/expr.ts';
import { V } from './kexpr/value.ts';

/** i32 words an element takes. */
export const FIXED_WORDS = 3;

const f = (x: number) => K.lit(x, 'f32');

/** The value of element `at` of a fixed-point buffer (`buffer` bound as array<i32>, `count` elements). */
export function fixedElement(buffer: string, at: KExpr, count: number): KExpr {
  const word = (w: number) => V.cast('f32', K.load(buffer, V.arith('+', V.arith('*', at, K.u32(FIXED_WORDS)), K.u32(w)), count * FIXED_WORDS, 'i32'));
  return V.sum([V.arith('*', word(0), f(1024)), V.arith('*', word(1), f(2 ** -11)), V.arith('*', word(2), f(2 ** -32))]);
}

/** Statements adding the f32 `value` to element `at` of a fixed-point buffer bound as array<atomic<i32>>. */
export function fixedAdd(buffer: string, at: KExpr, value: KExpr, fresh: (prefix: string) => string): string[] {
  const [a, r, b, c] = ['fa', 'fr', 'fb', 'fc'].map(fresh) as [string, string, string, string];
  const word = (w: number) => `${buffer}[${V.arith('+', V.arith('*', at, K.u32(FIXED_WORDS)), K.u32(w))}]`;
  const v = (name: string) => K.v(name, 'f32');
  return [
    `let ${a} = ${V.fn('round', [V.arith('*', value, f(2 ** -10))])};`,
    `let ${r} = ${V.arith('-', value, V.arith('*', v(a), f(1024)))};`,
    `let ${b} = ${V.fn('round', [V.arith('*', v(r), f(2048))])};`,
    `let ${c} = ${V.fn('round', [V.arith('*', V.arith('-', v(r), V.arith('*', v(b), f(2 ** -11))), f(2 ** 32))])};`,
    ...[a, b, c].map((x, w) => `atomicAdd(&${word(w)}, ${V.cast('i32', v(x))});`),
  ];
}

/** The three words of `value` as the kernel adds them (the CPU's encoding, for tests). */
export function fixedWords(value: number): [number, number, number] {
  const a = Math.round(Math.fround(value * 2 ** -10));
  const r = Math.fround(value - a * 1024);
  const b = Math.round(Math.fround(r * 2048));
  const c = Math.round(Math.fround(Math.fround(r - b * 2 ** -11) * 2 ** 32));
  return [a, b, c];
}

/** The value three words hold. */
export const fixedValue = (words: readonly number[]): number => words[0]! * 1024 + words[1]! * 2 ** -11 + words[2]! * 2 ** -32;
