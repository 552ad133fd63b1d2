// The fixed-point words a fused MLP's workgroups add with integer atomics (compiler/fixedPoint.ts): each word within
// 2^21, so 2^10 partials cannot overflow an i32, and the value back to 2^-33 (the rounding of the last word).
import { expect, test } from 'vitest';
import { fixedValue, fixedWords } from '../../compiler/fixedPoint.ts';

test('the three words of a partial sum: within 2^21 each, the value back to 2^-33', () => {
  let seed = 12345;
  const random = () => ((seed = (seed * 1103515245 + 12345) % 2 ** 31) / 2 ** 31) * 2 - 1;
  const values = [0, 1, -1, 2 ** -30, -(2 ** -30), 1023.9999, -1024.5, 5e5, -7.25e5, ...Array.from({ length: 2000 }, () => Math.fround(random() * 10 ** Math.floor(random() * 8)))];
  for (const v of values) {
    const words = fixedWords(Math.fround(v));
    for (const w of words) expect(Math.abs(w)).toBeLessThanOrEqual(2 ** 21);
    expect(Math.abs(fixedValue(words) - Math.fround(v))).toBeLessThanOrEqual(2 ** -33);
  }
});

test('sums of words are the sums of the values, in any order (integer adds are exact)', () => {
  const parts = [0.5, -3.25e-7, 1234.5678, -0.001, 7.5e-9, -999.75].map(Math.fround);
  const sum = (order: number[]) => order.map((i) => fixedWords(parts[i]!)).reduce<number[]>((a, w) => a.map((x, k) => x + w[k]!), [0, 0, 0]);
  const a = sum([0, 1, 2, 3, 4, 5]);
  expect(sum([5, 3, 1, 0, 2, 4])).toEqual(a);
  expect(Math.abs(fixedValue(a) - parts.reduce((s, x) => s + x, 0))).toBeLessThan(6 * 2 ** -33 + 1e-12);
});
