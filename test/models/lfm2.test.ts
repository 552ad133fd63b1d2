import { expect, test } from 'vitest';
import { runParity } from './parityHarness.ts';

// Tolerance 1e-4 absolute on logits of magnitude ~1: both sides compute in f32, so what remains is accumulation
// order. Chunks [1, 3] make the cached decode carry the conv state across chunks, including a padded one (the
// 5-token prefill is 3 + 2-in-3, the greedy prompt 3 + 1). Measured on lavapipe: prefill 2.4e-7, cached decode
// 2.4e-7 (1.8e-7 against transformers' own cached decode). Greedy tokens must be identical.
test('lfm2 matches transformers: prefill, cached decode, greedy', async () => {
  const r = await runParity('lfm2', { chunks: [1, 3] });
  console.log(`lfm2 parity: prefill ${r.prefillMaxAbs}, decode ${r.decodeMaxAbs}, decode vs HF decode ${r.decodeVsHfDecodeMaxAbs}`);
  expect(r.prefillMaxAbs).toBeLessThan(1e-4);
  expect(r.decodeMaxAbs).toBeLessThan(1e-4);
  expect(r.greedy).toEqual(r.greedyExpected);
});
