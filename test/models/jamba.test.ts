import { expect, test } from 'vitest';
import { runParity } from './parityHarness.ts';

// Tolerance 1e-5 absolute on logits of magnitude ~1: f32 on both sides; the Mamba-1 scan is the cumulative-sum
// form where HF multiplies step by step, and the MoE runs every expert weighted by its (possibly zero) routing
// weight. Measured on lavapipe: 1.8e-7 to 2.1e-7 abs (3.4e-7 relative) prefill, 1.8e-7 abs (4.4e-7 relative)
// cached decode. Greedy tokens must be identical. Chunks [1, 3]: the 5-token prefill runs as 3 + 2 padded to 3
// (state carried into a multi-token chunk; padding must leave the conv/SSM state and the attention KV untouched).
test('jamba matches transformers: prefill, cached decode, greedy', async () => {
  const r = await runParity('jamba', { chunks: [1, 3] });
  expect(r.prefillMaxAbs).toBeLessThan(1e-5);
  expect(r.decodeMaxAbs).toBeLessThan(1e-5);
  expect(r.greedy).toEqual(r.greedyExpected);
});
