// Model-level figures: prefill and decode throughput, dispatches per step, compile time, cache and weight bytes,
// and decode bandwidth as a fraction of the copy roofline measured in the same run.
import { isQuantized } from '../compiler/quantized.ts';
import type { StorageDType } from '../compiler/ir.ts';
import { kernelOptions } from '../caches/stepContext.ts';
import { type KvPolicy, describePolicy, memoryReport } from '../caches/spec.ts';
import { parseConfig } from '../models/config.ts';
import { buildModel } from '../models/registry.ts';
import type { GpuRuntime } from '../runtime/gpuRuntime.ts';
import { submissionSteps } from '../runtime/generator.ts';
import { ModelRunner } from '../runtime/modelRunner.ts';
import { randomCheckpoint } from '../runtime/randomWeights.ts';
import type { KernelProfile } from './kernelProfile.ts';
import { measureKernelProfile } from './measureKernels.ts';
import { hostEncodeSeconds, submitSeconds, timeGpu, timeGpuStamped, timePipelined } from './timing.ts';

export interface ModelBenchCase {
  config: string;
  storage: StorageDType;
  batch: number;
  fused: boolean;
  /** The attention layers' KV policy when not the model's own ('h2o recent 32 + heavy 32'). */
  kvPolicy?: string;
  promptTokens: number;
  newTokens: number;
  prefillTokensPerSecond: number;
  decodeTokensPerSecond: number;
  decodeStepMs: number;
  /** The step time of each repetition of the decode run (decodeStepMs is their median). */
  decodeStepMsRuns: number[];
  /**
   * Host time to record one decode step; wall time of one in a submission of pre-recorded steps (Dawn's own
   * recording for the driver at submit included); and the GPU's time of one by the pass's timestamps, where the
   * adapter has them.
   */
  hostEncodeMs: number;
  /** Host time of Dawn's submit of one recorded step (its recording for the driver). */
  submitMs: number;
  gpuStepMs: number;
  gpuStampedStepMs?: number;
  dispatchesPerDecodeStep: number;
  submitsPerToken: number;
  readbacksPerToken: number;
  compileSeconds: number;
  pipelines: number;
  cacheBytes: number;
  weightBytes: number;
  /** weight bytes read per decode step / step time, over the copy roofline */
  rooflineFraction: number;
  topKernels?: { name: string; ms: number; count: number }[];
  /** The decode step's per-kernel profile (per kernel and per template, bytes, fraction of the copy roofline). */
  kernelProfile?: KernelProfile;
}

/** Timed decode runs of each case (their median is reported). */
const DECODE_REPEATS = 5;

const median = (xs: readonly number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]!;

export interface ModelBenchOptions {
  name: string;
  config: Record<string, unknown>;
  storage: StorageDType;
  batch: number;
  fused: boolean;
  /** A KV policy for every attention layer (the model's own when absent). */
  kvPolicy?: KvPolicy;
  promptTokens: number;
  newTokens: number;
  /** decode steps encoded per submission */
  stepsPerSubmit: number;
  copyBytesPerSecond: number;
  profile: boolean;
  /** Dispatches per kernel when kernels are timed alone (no or quantized timestamps). */
  profileAloneIters?: number;
}

export async function benchModel(rt: GpuRuntime, o: ModelBenchOptions): Promise<ModelBenchCase> {
  const model = buildModel(parseConfig(o.config, `${o.name}.json`));
  // q8 / q4: random f16 weights, block-quantized on load as `--weights` does
  const quantized = isQuantized(o.storage) ? o.storage : undefined;
  const checkpoint = randomCheckpoint(model, { storage: quantized ? 'f16' : o.storage });
  const capacity = o.promptTokens + 2 * (o.newTokens + o.stepsPerSubmit) + 8; // room for the warm-up submissions and the GPU-only timing
  const runner = new ModelRunner(rt, model, checkpoint, { slots: o.batch, capacity, chunks: [1, o.promptTokens], fuse: o.fused, ...(quantized ? { weights: quantized } : {}), ...(o.kvPolicy ? { kvPolicy: o.kvPolicy } : {}) });
  const before = { ...rt.counters };
  const options = { ...kernelOptions };
  kernelOptions.fusedAttention = o.fused;
  kernelOptions.fusedSsdStep = o.fused;
  kernelOptions.fusedSelectiveStep &&= o.fused;
  const t0 = performance.now();
  let prefill, decode;
  try {
    prefill = await runner.program(o.batch, o.promptTokens, 'last');
    decode = await runner.program(o.batch, 1, 'last');
  } finally {
    Object.assign(kernelOptions, options);
  }
  const compileSeconds = (performance.now() - t0) / 1000;
  const pipelines = rt.counters.pipelines - before.pipelines;
  const slots = new Int32Array(o.batch).map((_, i) => i);
  const prompt = new Int32Array(o.batch * o.promptTokens).map((_, i) => (i * 7919) % 32000);
  const runPrefill = async () => {
    for (let s = 0; s < o.batch; s++) runner.resetSlot(s);
    prefill.writeInput('tokens', prompt);
    prefill.writeInput('slot_ids', slots);
    prefill.writeInput('valid', new Int32Array(o.batch).fill(o.promptTokens));
    await rt.device.queue.onSubmittedWorkDone(); // the slot's clear is not the prefill's time
    const t = performance.now();
    prefill.run();
    await rt.device.queue.onSubmittedWorkDone();
    return (performance.now() - t) / 1000;
  };
  // A GPU leaves its idle clocks only under sustained load (an H200 idles at 345 MHz; after the seconds of
  // compiling, a lone 13 ms prefill measured 40-50 ms): warm it for half a second before timing anything.
  const warmUntil = performance.now() + 500;
  for (let i = 0; i < 3 || performance.now() < warmUntil; i++) await runPrefill();
  const prefillRuns: number[] = [];
  for (let i = 0; i < 9; i++) prefillRuns.push(await runPrefill());
  const prefillSeconds = median(prefillRuns); // each from an empty cache
  const decodeInputs = () => {
    decode.writeInput('tokens', new Int32Array(o.batch).fill(17));
    decode.writeInput('slot_ids', slots);
    decode.writeInput('valid', new Int32Array(o.batch).fill(1));
  };
  decodeInputs();
  const submitsBefore = rt.counters.submits;
  const readbacksBefore = rt.counters.readbacks;
  // as the generator runs: short submissions first (the GPU idle), then K steps each, the next recorded while the
  // GPU runs the last
  const sizes = submissionSteps(o.stepsPerSubmit, o.newTokens);
  const steps = o.newTokens;
  // Five repetitions, each from the same prefilled prompt, and their median (llama-bench repeats five times too): a
  // single 128-token run of a small model lasts ~100 ms, within which the GPU's clocks still move (jamba-small at
  // batch 1 read 721, 1,240 and 1,566 tok/s in three calls of the same code).
  const stepRuns: number[] = [];
  let counted = { submits: 0, readbacks: 0 }; // over the first repetition (the others run a prefill first)
  for (let r = 0; r < DECODE_REPEATS; r++) {
    if (r > 0) {
      await runPrefill();
      decodeInputs();
    }
    stepRuns.push(await timePipelined(rt, (pass) => decode.encode(pass), sizes));
    if (r === 0) counted = { submits: rt.counters.submits - submitsBefore - 1, readbacks: rt.counters.readbacks - readbacksBefore }; // less the warm-up submission
  }
  const decodeSeconds = median(stepRuns) * steps;
  // where a step's time goes: the host recording it, and the GPU running it with the recording done beforehand
  const hostEncodeMs = hostEncodeSeconds(rt, (pass) => decode.encode(pass), o.stepsPerSubmit) * 1e3;
  const gpuStepMs = (await timeGpu(rt, (pass) => decode.encode(pass), steps)) * 1e3;
  const submitMs = (await submitSeconds(rt, (pass) => decode.encode(pass), steps)) * 1e3;
  // the GPU's own time over the same positions as the timed runs (the two measures above ran past them)
  await runPrefill();
  decodeInputs();
  const stamped = await timeGpuStamped(rt, (pass) => decode.encode(pass), steps);
  const { submits, readbacks } = counted;
  const weightBytes = decode.program.buffers.filter((b) => b.role === 'weight').reduce((a, b) => a + b.bytes, 0);
  const stepSeconds = decodeSeconds / steps;
  let topKernels: ModelBenchCase['topKernels'];
  let kernelProfile: KernelProfile | undefined;
  if (o.profile) {
    kernelProfile = await measureKernelProfile(rt, decode, { copyBytesPerSecond: o.copyBytesPerSecond, repeats: 5, aloneIters: o.profileAloneIters ?? 20 });
    const byName = new Map<string, { ms: number; count: number }>();
    for (const k of kernelProfile.kernels) {
      const key = k.name.replace(/^k\d+_/, '');
      const e = byName.get(key) ?? { ms: 0, count: 0 };
      byName.set(key, { ms: e.ms + k.ms, count: e.count + 1 });
    }
    topKernels = [...byName].map(([name, v]) => ({ name, ...v })).sort((a, b) => b.ms - a.ms).slice(0, 8);
  }
  const cacheBytes = memoryReport(runner.spec, runner.memory).totalBytes;
  return {
    config: o.name,
    storage: o.storage,
    batch: o.batch,
    fused: o.fused,
    ...(o.kvPolicy ? { kvPolicy: describePolicy(o.kvPolicy) } : {}),
    promptTokens: o.promptTokens,
    newTokens: steps,
    prefillTokensPerSecond: (o.batch * o.promptTokens) / prefillSeconds,
    decodeTokensPerSecond: (o.batch * steps) / decodeSeconds,
    decodeStepMs: stepSeconds * 1e3,
    decodeStepMsRuns: stepRuns.map((x) => x * 1e3),
    hostEncodeMs,
    submitMs,
    gpuStepMs,
    ...(stamped === null ? {} : { gpuStampedStepMs: stamped * 1e3 }),
    dispatchesPerDecodeStep: decode.program.kernels.length,
    submitsPerToken: submits / steps,
    readbacksPerToken: readbacks / steps,
    compileSeconds,
    pipelines,
    cacheBytes,
    weightBytes,
    rooflineFraction: weightBytes / stepSeconds / o.copyBytesPerSecond,
    ...(topKernels ? { topKernels } : {}),
    ...(kernelProfile ? { kernelProfile } : {}),
  };
}
