// The generator's submissions from an idle GPU (runtime/generator.ts rampSteps): short ones first, so that the GPU
// starts after one short recording and the first decoded tokens come back soon, doubling up to K.
import { expect, test } from 'vitest';
import { rampSteps, submissionSteps } from '../../runtime/generator.ts';

test('submissions start at K / 8 steps (at least 1) and double up to K', () => {
  expect([0, 1, 2, 3, 4, 5].map((b) => rampSteps(32, b))).toEqual([4, 8, 16, 32, 32, 32]);
  expect([0, 1, 2, 3, 4].map((b) => rampSteps(8, b))).toEqual([1, 2, 4, 8, 8]);
  expect([0, 1, 2].map((b) => rampSteps(1, b))).toEqual([1, 1, 1]);
  expect(rampSteps(32, 1000)).toBe(32);
});

test('the steps of a decode are dealt to submissions in that order, the last one short', () => {
  expect(submissionSteps(32, 128)).toEqual([4, 8, 16, 32, 32, 32, 4]);
  expect(submissionSteps(8, 8)).toEqual([1, 2, 4, 1]);
  expect(submissionSteps(8, 64)).toEqual([1, 2, 4, 8, 8, 8, 8, 8, 8, 8, 1]);
  expect(submissionSteps(8, 0)).toEqual([]);
  for (const [K, n] of [[8, 37], [32, 1000], [3, 10]] as const) expect(submissionSteps(K, n).reduce((a, x) => a + x, 0)).toBe(n);
});
