// The fused MLP (DeviceLimits.mlpFusion, STRATA_MLP_FUSION=1: a gated MLP's matvecs, activation and down projection
// as one batch-1 kernel that sums in fixed point with integer atomics) against transformers: each family's cached
// decode and greedy tokens with the switch on, and its batch-1 decode program holding the fused kernels.
import { expect, test } from 'vitest';
import { useEnv } from '../helpers/env.ts';
import { runParity } from './parityHarness.ts';

useEnv('STRATA_MLP_FUSION', '1');

// The families' own decode tolerances (their parity tests): the fused kernel changes the order of the sums, and adds
// the down projection's partial sums exactly (to 2^-33 each) before one f32 rounding. Prefill programs have no fused
// MLPs (batch 1 decode only), so only the cached decode and the greedy tokens are checked here.
const FAMILIES: [string, number][] = [
  ['llama', 1e-4],
  ['granitemoehybrid', 1e-4],
  ['bamba', 1e-4],
  ['lfm2', 1e-4],
  ['falcon_h1', 1e-4],
  ['jamba', 1e-5],
  ['gemma3n_text', 2e-5],
];
// qwen3_next's MLPs are MoE experts and a gated shared expert, each scaled by a computed weight: not fused
// (passes/fuseMlp.ts), and mamba's and mamba2's layers have none.
for (const [fixture, tol] of FAMILIES)
  test(`${fixture} with fused MLPs matches transformers: cached decode, greedy`, async () => {
    const r = await runParity(fixture, { chunks: [1, 3] });
    expect(r.decodeTemplates).toContain('mlp');
    expect(r.decodeMaxAbs).toBeLessThan(tol);
    expect(r.greedy).toEqual(r.greedyExpected);
  });
