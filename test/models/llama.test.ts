import { expect, test } from 'vitest';
import { runParity } from './parityHarness.ts';

// Tolerance 1e-4 absolute on logits of magnitude ~1: both sides compute in f32; the residual difference is
// accumulation order (measured 1.8e-7 on lavapipe). Greedy tokens must be identical.
test('llama matches transformers: prefill, cached decode, greedy', async () => {
  const r = await runParity('llama');
  expect(r.prefillMaxAbs).toBeLessThan(1e-4);
  expect(r.decodeMaxAbs).toBeLessThan(1e-4);
  expect(r.greedy).toEqual(r.greedyExpected);
});
