// Parity with transformers: runs a checkpoint against a reference file in the fixtures' format
// (prefill.input_ids/logits, decode.last_logits_per_step + decode.prefill_len, greedy.prompt/output).
import type { QuantStorage } from '../compiler/quantized.ts';
import * as path from 'node:path';
import { loadConfig, parseConfig } from '../models/config.ts';
import { openGguf } from './gguf.ts';
import { hfQuantization, hfQuantizedSource } from './hfQuantized.ts';
import { buildModel } from '../models/registry.ts';
import { getSharedDevice } from './device.ts';
import { GpuRuntime } from './gpuRuntime.ts';
import { ModelRunner } from './modelRunner.ts';
import { type TensorSource, openSafetensors } from '../base/safetensors.ts';
import { toFloat32, toInt32 } from '../base/tensorValues.ts';

export interface Reference {
  inputIds: Int32Array; // [rows, T]
  logits: Float32Array; // [rows, T, V]
  rows: number;
  T: number;
  V: number;
  prefillLen: number;
  decodeLogits: Float32Array; // [steps, rows, V]
  greedyPrompt: number[];
  greedyOutput: number[];
}

/** Reads a reference file, or `reference.safetensors` in a folder. */
export async function loadReference(fileOrDir: string): Promise<Reference> {
  const file = fileOrDir.endsWith('.safetensors') ? fileOrDir : path.join(fileOrDir, 'reference.safetensors');
  const ref = await openSafetensors(file);
  try {
    const need = ['prefill.input_ids', 'prefill.logits', 'decode.last_logits_per_step', 'greedy.prompt', 'greedy.output'];
    for (const n of need) if (!ref.has(n)) throw new Error(`${file}: reference tensor '${n}' is missing (expected: ${need.join(', ')})`);
    const ids = await ref.readTensor('prefill.input_ids');
    const logits = await ref.readTensor('prefill.logits');
    const prefillLen = Number(ref.metadata['decode.prefill_len']);
    if (!Number.isInteger(prefillLen) || prefillLen < 1) throw new Error(`${file}: __metadata__ 'decode.prefill_len' must be a positive integer`);
    return {
      inputIds: toInt32(ids),
      logits: toFloat32(logits),
      rows: ids.shape[0]!,
      T: ids.shape[1]!,
      V: logits.shape[2]!,
      prefillLen,
      decodeLogits: toFloat32(await ref.readTensor('decode.last_logits_per_step')),
      greedyPrompt: [...toInt32(await ref.readTensor('greedy.prompt'))],
      greedyOutput: [...toInt32(await ref.readTensor('greedy.output'))],
    };
  } finally {
    await ref.close();
  }
}

/** A runner over a model folder or GGUF file; `checkpoint` replaces the folder's tensors (a test's composed source). */
export async function openRunner(dir: string, opts: { slots?: number; capacity?: number; chunks?: number[]; fuse?: boolean; window?: number; weights?: QuantStorage; checkpoint?: TensorSource } = {}): Promise<ModelRunner> {
  // a GGUF file stands for its folder: config and tensors from the file
  const gguf = dir.endsWith('.gguf') ? await openGguf(dir) : undefined;
  const config = gguf ? parseConfig(gguf.config, dir) : await loadConfig(dir);
  const model = buildModel(config);
  const quantization = gguf ? undefined : hfQuantization(config.raw, path.join(dir, 'config.json'));
  const checkpoint = opts.checkpoint ?? (gguf ? gguf.checkpoint : hfQuantizedSource(await openSafetensors(dir), quantization));
  const runtime = new GpuRuntime(await getSharedDevice());
  return new ModelRunner(runtime, model, checkpoint, {
    slots: opts.slots ?? 2,
    capacity: opts.capacity ?? 64,
    chunks: opts.chunks ?? [1, 4, 16],
    ...(opts.fuse !== undefined ? { fuse: opts.fuse } : {}),
    ...(opts.window !== undefined ? { window: opts.window } : {}),
    ...(opts.weights ? { weights: opts.weights } : {}),
  });
}

export function maxAbsDiff(a: ArrayLike<number>, b: ArrayLike<number>): number {
  if (a.length !== b.length) return Infinity;
  let m = 0;
  for (let i = 0; i < a.length; i++) m = Math.max(m, Math.abs(a[i]! - b[i]!));
  return m;
}

export function maxRelDiff(a: ArrayLike<number>, b: ArrayLike<number>): number {
  let scale = 0;
  for (let i = 0; i < b.length; i++) scale = Math.max(scale, Math.abs(b[i]!));
  return maxAbsDiff(a, b) / Math.max(scale, 1e-30);
}

export function argmax(a: ArrayLike<number>): number {
  let best = 0;
  for (let i = 1; i < a.length; i++) if (a[i]! > a[best]!) best = i;
  return best;
}

/** Row r of the reference prefill logits at token t. */
export function refRow(ref: Reference, r: number, t: number): Float32Array {
  return ref.logits.subarray((r * ref.T + t) * ref.V, (r * ref.T + t + 1) * ref.V);
}

export interface ParityResult {
  prefillMaxAbs: number;
  prefillMaxRel: number;
  /** cached decode (prefill of P tokens, then one at a time) vs the full-prefill logits at the same positions */
  decodeMaxAbs: number;
  decodeMaxRel: number;
  /** the same steps vs transformers' own cached-decode logits (weaker reference, for information) */
  decodeVsHfDecodeMaxAbs: number;
  greedy: number[];
  greedyExpected: number[];
  /** The kernel templates of the one-token decode program the checks ran (what the schedule chose on this adapter). */
  decodeTemplates: string[];
}

/**
 * The three checks on the device: prefill of all reference rows in one batched step; cached decode per row
 * (bucketed prefill of P tokens, then single tokens); greedy generation from the reference prompt.
 */
export async function runParity(dir: string, opts: { reference?: string; chunks?: number[]; fuse?: boolean; window?: number } = {}): Promise<ParityResult> {
  const ref = await loadReference(opts.reference ?? path.join(dir, 'reference.safetensors'));
  const runner = await openRunner(dir, { slots: ref.rows, capacity: Math.max(64, ref.T + 1, ref.greedyOutput.length + 1), ...opts });
  const rows = Array.from({ length: ref.rows }, (_, r) => ({ slot: r, tokens: [...ref.inputIds.subarray(r * ref.T, (r + 1) * ref.T)] }));
  const logits = await runner.step(rows, 'all', { rows: ref.rows, tokens: ref.T });
  let prefillMaxAbs = 0;
  let prefillMaxRel = 0;
  rows.forEach((_, r) => {
    const want = ref.logits.subarray(r * ref.T * ref.V, (r + 1) * ref.T * ref.V);
    prefillMaxAbs = Math.max(prefillMaxAbs, maxAbsDiff(logits[r]!, want));
    prefillMaxRel = Math.max(prefillMaxRel, maxRelDiff(logits[r]!, want));
  });
  rows.forEach((r) => runner.resetSlot(r.slot));
  const P = ref.prefillLen;
  const steps = ref.decodeLogits.length / (ref.rows * ref.V);
  const hfStep = (step: number, r: number) => ref.decodeLogits.subarray((step * ref.rows + r) * ref.V, (step * ref.rows + r + 1) * ref.V);
  let decodeMaxAbs = 0;
  let decodeMaxRel = 0;
  let decodeVsHf = 0;
  for (const { slot: r, tokens } of rows) {
    const check = (got: Float32Array, t: number) => {
      decodeMaxAbs = Math.max(decodeMaxAbs, maxAbsDiff(got, refRow(ref, r, t)));
      decodeMaxRel = Math.max(decodeMaxRel, maxRelDiff(got, refRow(ref, r, t)));
      if (t - P + 1 < steps) decodeVsHf = Math.max(decodeVsHf, maxAbsDiff(got, hfStep(t - P + 1, r)));
    };
    check(await runner.prefill(r, tokens.slice(0, P), 'last'), P - 1);
    for (let t = P; t < ref.T; t++) {
      const [got] = await runner.step([{ slot: r, tokens: [tokens[t]!] }], 'last', { rows: 1, tokens: 1 });
      check(got!, t);
    }
  }
  runner.resetSlot(0);
  const ids = [...ref.greedyPrompt];
  let last = await runner.prefill(0, ids, 'last');
  while (ids.length < ref.greedyOutput.length) {
    const t = argmax(last);
    ids.push(t);
    if (ids.length < ref.greedyOutput.length) [last] = (await runner.step([{ slot: 0, tokens: [t] }], 'last', { rows: 1, tokens: 1 })) as [Float32Array];
  }
  const decodeTemplates = (await runner.program(1, 1, 'last')).program.kernels.flatMap((k) => k.templates);
  return { prefillMaxAbs, prefillMaxRel, decodeMaxAbs, decodeMaxRel, decodeVsHfDecodeMaxAbs: decodeVsHf, greedy: ids, greedyExpected: ref.greedyOutput, decodeTemplates };
}
