// The fused MLP (DeviceLimits.mlpFusion) on 16-bit weights: tiny-granite-code (f16, kept 16-bit on the GPU) with the
// switch on decodes its reference generations exactly, alone (the batch-1 step, which holds the fused kernels: one
// dispatch fewer a layer) and batched (without them), with nothing compiled or created after the load; a second
// generation starts from accumulators the first left zeroed.
import { afterAll, beforeAll, expect, test } from 'vitest';
import { getSharedDevice } from '../../runtime/device.ts';
import { compileLimitsOf } from '../../runtime/compileLimits.ts';
import { Session } from '../../runtime/session.ts';
import { type Greedy, TINY_GRANITE as DIR, generated, reference } from '../helpers/tinyGranite.ts';

const SLOW = { timeout: 1_800_000 }; // hang guard (vitest.config.ts), not a speed limit

let fused: Session;
let plain: Session;
beforeAll(async () => {
  const limits = compileLimitsOf(await getSharedDevice());
  const load = (mlpFusion: boolean) => Session.load(DIR, { slots: 2, capacity: 128, prefillChunks: [16], stepsPerSubmit: 8, warmUp: false, compileLimits: { ...limits, mlpFusion } });
  fused = await load(true);
  plain = await load(false);
}, 1_800_000);
afterAll(async () => {
  await fused?.close();
  await plain?.close();
});

test('the batch-1 decode step has one dispatch fewer for each of the 6 layers', () => {
  expect(fused.generator.dispatchesPerStep(1, 'greedy')).toBe(plain.generator.dispatchesPerStep(1, 'greedy') - 6);
  expect(fused.generator.dispatchesPerStep(2, 'greedy')).toBe(plain.generator.dispatchesPerStep(2, 'greedy'));
});

test('greedy ids equal the reference with fused MLPs, alone and batched', SLOW, async () => {
  const before = { ...fused.counters };
  for (const ref of reference.greedy) {
    const r = await fused.generate(ref.prompt, { maxNewTokens: generated(ref).length }).result();
    expect(r.ids).toEqual(generated(ref));
    expect(r.stats.dispatchesPerDecodeStep).toBe(fused.generator.dispatchesPerStep(1, 'greedy'));
  }
  const [a, b] = reference.greedy as [Greedy, Greedy];
  const [ra, rb] = await Promise.all([a, b].map((ref) => fused.generate(ref.prompt, { maxNewTokens: generated(ref).length }).result()));
  expect(ra!.ids).toEqual(generated(a));
  expect(rb!.ids).toEqual(generated(b));
  const after = fused.counters;
  for (const k of ['pipelines', 'bindGroups', 'buffers'] as const) expect(after[k] - before[k], k).toBe(0);
});
