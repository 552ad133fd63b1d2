// The decode attention that projects its own q/k/v (DeviceLimits.attentionProjection: the GPU default, here switched
// on by STRATA_ATTN_PROJECTION=1 on the software adapter, which keeps the separate matvecs by default) against
// transformers, in every family whose attention it takes: cached decode and greedy tokens with the switch on.
import { expect, test } from 'vitest';
import { useEnv } from '../helpers/env.ts';
import { runParity } from './parityHarness.ts';

useEnv('STRATA_ATTN_PROJECTION', '1');

// Each family's own tolerances (its parity test): f32 on both sides, the projection only changes the order of the
// K sums. Attention layers: llama 2, the hybrids 1 each (bamba, granitemoehybrid, jamba). The plan declines the
// attentions of falcon_h1, lfm2, gemma3n_text and qwen3_next (passes/planProjections.ts): they keep their matvecs.
const FAMILIES: [fixture: string, tolerance: number, attentions: number, chunks?: number[]][] = [
  ['llama', 1e-4, 2],
  ['bamba', 1e-4, 1, [1, 3]],
  ['granitemoehybrid', 1e-4, 1, [1, 3]],
  ['jamba', 1e-5, 1, [1, 3]],
];
for (const [fixture, tolerance, attentions, chunks] of FAMILIES)
  test(`${fixture} with the attention projection matches transformers: prefill, cached decode, greedy`, async () => {
    const r = await runParity(fixture, chunks ? { chunks } : {});
    expect(r.decodeTemplates.filter((t) => t === 'attention/decode+qkv')).toHaveLength(attentions);
    expect(r.prefillMaxAbs).toBeLessThan(tolerance);
    expect(r.decodeMaxAbs).toBeLessThan(tolerance);
    expect(r.greedy).toEqual(r.greedyExpected);
  });
