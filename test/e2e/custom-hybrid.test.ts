// The user-defined hybrid of examples/custom-hybrid.ts: its memory plan, and decode that agrees with prefill
// across window wraps and a layer reading another layer's KV.
import { expect, test } from 'vitest';
import { customHybrid } from '../../examples/custom-hybrid.ts';
import { memoryReport } from '../../caches/spec.ts';
import { getSharedDevice } from '../../runtime/device.ts';
import { GpuRuntime } from '../../runtime/gpuRuntime.ts';
import { ModelRunner } from '../../runtime/modelRunner.ts';
import { maxAbsDiff } from '../../runtime/parity.ts';
import { randomCheckpoint } from '../../runtime/randomWeights.ts';

test('custom hybrid: memory plan by layer kind', () => {
  const plan = memoryReport(customHybrid.memory(), { slots: 2, capacity: 64, maxChunk: 8 });
  const kinds = plan.layers.map((l) => l.kind);
  expect(kinds).toEqual(['recurrent', 'recurrent', 'attention', 'recurrent', 'recurrent', 'attention', 'shared-kv']);
  // sliding window 8 with chunks of up to 8: a ring of 8 + 8 - 1 entries, keys and values, 2 kv heads x 16, f32, 2 slots
  expect(plan.layers[2]!.kvBytes).toBe(2 * 15 * 2 * (16 + 16) * 4);
  expect(plan.layers[6]!.kvBytes).toBe(0);
  expect(plan.layers[6]!.sharesKvWith).toBe(5);
  expect(plan.layers[0]!.kvBytes).toBe(0);
  expect(plan.layers[0]!.stateBytes).toBeGreaterThan(0);
});

// f32 throughout; chunked prefill and single-token decode sum in different orders: 1e-4 on logits of size ~1.
test('custom hybrid: token-by-token decode equals full-sequence logits past the window', async () => {
  const runtime = new GpuRuntime(await getSharedDevice());
  const runner = new ModelRunner(runtime, customHybrid, randomCheckpoint(customHybrid, { scale: 0.2 }), { slots: 2, capacity: 64, chunks: [1, 40] });
  // > 4 windows, in one 40-token chunk: its matmuls take the tiled kernel (>= 32 rows)
  const tokens = Array.from({ length: 40 }, (_, i) => (i * 37 + 11) % 256);
  const all = await runner.prefill(0, tokens, 'all');
  const V = customHybrid.vocabSize;
  let worst = 0;
  for (const [t, tok] of tokens.entries()) {
    const [l] = await runner.step([{ slot: 1, tokens: [tok] }], 'last', { rows: 1, tokens: 1 });
    worst = Math.max(worst, maxAbsDiff(l!, all.subarray(t * V, (t + 1) * V)));
  }
  expect(worst).toBeLessThan(1e-4);
});
