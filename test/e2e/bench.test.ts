// The benchmark runs end to end on whatever adapter is present (figures are not asserted, only that they exist).
import { expect, test } from 'vitest';
import { getSharedDevice } from '../../runtime/device.ts';
import { GpuRuntime } from '../../runtime/gpuRuntime.ts';
import { benchModel } from '../../bench/models.ts';
import { copyRoofline } from '../../bench/ops.ts';
import { TINY_BENCH_CONFIG } from '../../bench/configs.ts';
import { formatTiled, tiledBench } from '../../bench/tiledBench.ts';
import { hostRecording } from '../../bench/hostRecording.ts';
import { TILED_VARIANTS } from '../../compiler/lower/tiledMatmul.ts';

test('bench: the tiny configuration reports every figure', async () => {
  const rt = new GpuRuntime(await getSharedDevice());
  const copy = await copyRoofline(rt, 1 << 20, 2);
  expect(copy).toBeGreaterThan(0);
  const r = await benchModel(rt, {
    name: 'tiny-llama', config: TINY_BENCH_CONFIG, storage: 'f16', batch: 2, fused: true,
    promptTokens: 8, newTokens: 8, stepsPerSubmit: 4, copyBytesPerSecond: copy, profile: true, profileAloneIters: 1,
  });
  for (const key of ['prefillTokensPerSecond', 'decodeTokensPerSecond', 'decodeStepMs', 'hostEncodeMs', 'submitMs', 'gpuStepMs', 'compileSeconds', 'cacheBytes', 'weightBytes', 'rooflineFraction'] as const)
    expect(r[key], key).toBeGreaterThan(0);
  expect(r.dispatchesPerDecodeStep).toBeGreaterThan(0);
  // the GPU's own time of a step, by the pass's timestamps, wherever the adapter has them
  expect(r.gpuStampedStepMs === undefined).toBe(!rt.strata.features.includes('timestamp-query'));
  if (r.gpuStampedStepMs !== undefined) expect(r.gpuStampedStepMs).toBeGreaterThan(0);
  // decode is timed five times from the same prefilled prompt; the median is reported
  expect(r.decodeStepMsRuns).toHaveLength(5);
  expect(r.decodeStepMs).toBe([...r.decodeStepMsRuns].sort((a, b) => a - b)[2]);
  expect(r.readbacksPerToken).toBe(0); // the bench loop reads nothing back
  // 8 steps at K = 4 from an idle GPU: submissions of 1, 2, 4 and 1 steps (submissionSteps), as the generator makes
  expect(r.submitsPerToken).toBeCloseTo(4 / 8, 5);
  // the decode step's profile covers every kernel, each with its template and bound bytes
  expect(r.kernelProfile?.kernels).toHaveLength(r.dispatchesPerDecodeStep);
  for (const k of r.kernelProfile!.kernels) expect(k.bytes, k.name).toBeGreaterThan(0);
  expect(r.kernelProfile!.templates.reduce((a, t) => a + t.kernels, 0)).toBe(r.dispatchesPerDecodeStep);
});

test('bench host-record: every round of the tiny configuration reports its recording, submit and memory', async () => {
  const rt = new GpuRuntime(await getSharedDevice());
  const r = await hostRecording(rt, 'tiny-llama', TINY_BENCH_CONFIG, 2, 2);
  expect(r.dispatches).toBeGreaterThan(0);
  expect(r.rounds).toHaveLength(2);
  for (const x of r.rounds) for (const v of [x.recordUs, x.submitUs, x.residentMiB]) expect(v).toBeGreaterThan(0);
});

test('bench tiled: every variant of the tiled matmul runs and agrees with the first', async () => {
  const rt = new GpuRuntime(await getSharedDevice());
  const rows = await tiledBench(rt, true);
  expect(rows.map((r) => r.variant)).toEqual(Object.keys(TILED_VARIANTS));
  for (const r of rows) {
    expect(r.tflops, r.variant).toBeGreaterThan(0);
    expect(r.relDiff, r.variant).toBeLessThan(1e-5);
  }
  expect(formatTiled(rows)).toContain('fill');
});
