// `bench env-parity`'s comparison (bench/envParity.ts): two runs' teacher-forced logits, [step][slot] rows, reduced
// to the largest absolute difference and the rows whose argmax differs; a missing or extra row counts as a failure.
import { expect, test } from 'vitest';
import { TOLERANCE, logitDifference } from '../../bench/envParity.ts';

const rows = (...steps: number[][][]) => steps.map((slots) => slots.map((r) => Float32Array.from(r)));

test('equal runs differ by 0 with no argmax change', () => {
  const a = rows([[1, 2, 3], [3, 2, 1]], [[0, 5, 1], [2, 2, 9]]);
  expect(logitDifference(a, a)).toEqual({ worst: 0, flips: 0 });
});

test('the largest difference over every row, and the rows whose argmax moves', () => {
  const a = rows([[1, 2, 3], [3, 2, 1]], [[0, 5, 1], [2, 2, 9]]);
  const b = rows([[1, 2, 3.01], [3, 2, 1]], [[0, 5, 5.25], [2, 2, 9]]);
  const d = logitDifference(a, b);
  expect(d.worst).toBeCloseTo(4.25, 6);
  expect(d.flips).toBe(1);
  expect(d.worst).toBeGreaterThan(TOLERANCE);
});

test('runs of different lengths fail', () => {
  const a = rows([[1, 2]], [[1, 2]]);
  expect(logitDifference(a, rows([[1, 2]])).worst).toBe(Infinity);
  expect(logitDifference(rows([[1, 2], [3, 4]]), rows([[1, 2]])).worst).toBe(Infinity);
});
