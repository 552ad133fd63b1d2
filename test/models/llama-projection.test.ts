// The decode attention that projects its own q/k/v (DeviceLimits.attentionProjection, STRATA_ATTN_PROJECTION=1)
// against transformers: the llama fixture's cached decode and greedy tokens with the switch on.
import { afterAll, beforeAll, expect, test } from 'vitest';
import { runParity } from './parityHarness.ts';

const saved = process.env.STRATA_ATTN_PROJECTION;
beforeAll(() => {
  process.env.STRATA_ATTN_PROJECTION = '1';
});
afterAll(() => {
  if (saved === undefined) delete process.env.STRATA_ATTN_PROJECTION;
  else process.env.STRATA_ATTN_PROJECTION = saved;
});

// Same tolerances as llama.test.ts: f32 on both sides, the projection only changes the order of the K sum.
test('llama with the attention projection matches transformers: prefill, cached decode, greedy', async () => {
  const r = await runParity('llama');
  expect(r.prefillMaxAbs).toBeLessThan(1e-4);
  expect(r.decodeMaxAbs).toBeLessThan(1e-4);
  expect(r.greedy).toEqual(r.greedyExpected);
});
