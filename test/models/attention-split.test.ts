// Decode attention over slices of the keys (flash-decoding: kernelOptions.attentionSplits, the GPU default from 512 positions)
// against transformers: cached decode and greedy tokens with 4 slices of the 64-entry caches (the first positions
// leave the last slices empty), in a dense model and in hybrids.
import { afterAll, beforeAll, expect, test } from 'vitest';
import { kernelOptions } from '../../caches/stepContext.ts';
import { runParity } from './parityHarness.ts';

let before: typeof kernelOptions.attentionSplits;
beforeAll(() => {
  before = kernelOptions.attentionSplits;
  kernelOptions.attentionSplits = { slices: 4, from: 0, sequences: Number.MAX_SAFE_INTEGER };
});
afterAll(() => {
  kernelOptions.attentionSplits = before;
});

// Each family's own tolerances (its parity test): f32 on both sides, the slices only change the order of the sums.
// Attention layers: llama 2, the hybrids 1 each.
const FAMILIES: [fixture: string, tolerance: number, attentions: number, chunks?: number[]][] = [
  ['llama', 1e-4, 2],
  ['granitemoehybrid', 1e-4, 1, [1, 3]],
  ['jamba', 1e-5, 1, [1, 3]],
];
for (const [fixture, tolerance, attentions, chunks] of FAMILIES)
  test(`${fixture} with decode attention over 4 slices of the keys matches transformers: prefill, cached decode, greedy`, async () => {
    const r = await runParity(fixture, chunks ? { chunks } : {});
    expect(r.decodeTemplates.filter((t) => t === 'attention/split')).toHaveLength(attentions);
    expect(r.prefillMaxAbs).toBeLessThan(tolerance);
    expect(r.decodeMaxAbs).toBeLessThan(tolerance);
    expect(r.greedy).toEqual(r.greedyExpected);
  });
