// The Mamba-2 decode step that computes its own in_proj rows (DeviceLimits.ssdProjection, STRATA_SSD_PROJECTION=1)
// against transformers: the granitemoehybrid and bamba fixtures' cached decode and greedy tokens with the switch on.
import { expect, test } from 'vitest';
import { useEnv } from '../helpers/env.ts';
import { runParity } from './parityHarness.ts';

useEnv('STRATA_SSD_PROJECTION', '1');

// Same tolerances as granitemoehybrid.test.ts and bamba.test.ts: f32 on both sides, the projection only changes the
// order of the K sums.
for (const fixture of ['granitemoehybrid', 'bamba'])
  test(`${fixture} with the in_proj projection matches transformers: prefill, cached decode, greedy`, async () => {
    const r = await runParity(fixture, { chunks: [1, 3] });
    expect(r.prefillMaxAbs).toBeLessThan(1e-4);
    expect(r.decodeMaxAbs).toBeLessThan(1e-4);
    expect(r.greedy).toEqual(r.greedyExpected);
  });
