// Shared parity checks against the transformers fixtures: prefill logits, cached decode vs prefill logits,
// greedy tokens. Tolerances are stated by each caller.
import * as path from 'node:path';
import { openSafetensors, toFloat32, toInt32 } from '../../runtime/safetensors.ts';
import { loadConfig } from '../../models/config.ts';
import { buildModel } from '../../models/registry.ts';
import { ModelRunner } from '../../runtime/modelRunner.ts';
import { GpuRuntime } from '../../runtime/gpuRuntime.ts';
import { getSharedDevice } from '../../runtime/device.ts';

export const FIXTURES = path.resolve(import.meta.dirname, '../fixtures/hf');

export interface Reference {
  inputIds: Int32Array; // [2, T]
  logits: Float32Array; // [2, T, V]
  T: number;
  V: number;
  prefillLen: number;
  decodeLogits: Float32Array; // [steps, 2, V]
  greedyPrompt: number[];
  greedyOutput: number[];
}

export async function loadReference(dir: string): Promise<Reference> {
  const ref = await openSafetensors(path.join(dir, 'reference.safetensors'));
  const ids = await ref.readTensor('prefill.input_ids');
  const logits = await ref.readTensor('prefill.logits');
  const dec = await ref.readTensor('decode.last_logits_per_step');
  const gp = await ref.readTensor('greedy.prompt');
  const go = await ref.readTensor('greedy.output');
  const out: Reference = {
    inputIds: toInt32(ids),
    logits: toFloat32(logits),
    T: ids.shape[1]!,
    V: logits.shape[2]!,
    prefillLen: Number(ref.metadata['decode.prefill_len']),
    decodeLogits: toFloat32(dec),
    greedyPrompt: [...toInt32(gp)],
    greedyOutput: [...toInt32(go)],
  };
  await ref.close();
  return out;
}

export async function openRunner(dir: string, opts: { slots?: number; capacity?: number; chunks?: number[] } = {}) {
  const config = await loadConfig(dir);
  const model = buildModel(config);
  const checkpoint = await openSafetensors(dir);
  const runtime = new GpuRuntime(await getSharedDevice());
  return new ModelRunner(runtime, model, checkpoint, { slots: opts.slots ?? 2, capacity: opts.capacity ?? 64, chunks: opts.chunks ?? [1, 8, 32] });
}

export function maxAbsDiff(a: ArrayLike<number>, b: ArrayLike<number>): number {
  let m = 0;
  for (let i = 0; i < a.length; i++) m = Math.max(m, Math.abs(a[i]! - b[i]!));
  if (a.length !== b.length) return Infinity;
  return m;
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
  /** cached decode (prefill of P tokens, then one at a time) vs the full-prefill logits at the same positions */
  decodeMaxAbs: number;
  /** the same steps vs transformers' own cached-decode logits (weaker reference, for information) */
  decodeVsHfDecodeMaxAbs: number;
  greedy: number[];
  greedyExpected: number[];
}

/**
 * Runs the three fixture checks on WebGPU: prefill of both sequences in one batched step; cached decode per
 * sequence (chunked prefill of P tokens, then single tokens); greedy generation from the fixture prompt.
 */
export async function runParity(name: string, opts: { chunks?: number[] } = {}): Promise<ParityResult> {
  const dir = path.join(FIXTURES, name);
  const ref = await loadReference(dir);
  const runner = await openRunner(dir, { capacity: 64, chunks: opts.chunks ?? [1, 4, 16] });
  const rows = [0, 1].map((r) => ({ slot: r, tokens: [...ref.inputIds.subarray(r * ref.T, (r + 1) * ref.T)] }));
  const logits = await runner.step(rows, 'all', { rows: 2, tokens: ref.T });
  const prefillMaxAbs = Math.max(...[0, 1].map((r) => maxAbsDiff(logits[r]!, ref.logits.subarray(r * ref.T * ref.V, (r + 1) * ref.T * ref.V))));
  runner.resetSlot(0);
  runner.resetSlot(1);
  const P = ref.prefillLen;
  let decodeMaxAbs = 0;
  let decodeVsHf = 0;
  const hfStep = (step: number, r: number) => ref.decodeLogits.subarray((step * 2 + r) * ref.V, (step * 2 + r + 1) * ref.V);
  for (const r of [0, 1]) {
    const toks = rows[r]!.tokens;
    let last = await runner.prefill(r, toks.slice(0, P), 'last');
    decodeMaxAbs = Math.max(decodeMaxAbs, maxAbsDiff(last, refRow(ref, r, P - 1)));
    decodeVsHf = Math.max(decodeVsHf, maxAbsDiff(last, hfStep(0, r)));
    for (let t = P; t < ref.T; t++) {
      [last] = (await runner.step([{ slot: r, tokens: [toks[t]!] }], 'last', { rows: 1, tokens: 1 })) as [Float32Array];
      decodeMaxAbs = Math.max(decodeMaxAbs, maxAbsDiff(last, refRow(ref, r, t)));
      if (t - P + 1 < ref.decodeLogits.length / (2 * ref.V)) decodeVsHf = Math.max(decodeVsHf, maxAbsDiff(last, hfStep(t - P + 1, r)));
    }
  }
  runner.resetSlot(0);
  const ids = [...ref.greedyPrompt];
  let l = await runner.prefill(0, ids, 'last');
  while (ids.length < ref.greedyOutput.length) {
    const t = argmax(l);
    ids.push(t);
    [l] = (await runner.step([{ slot: 0, tokens: [t] }], 'last', { rows: 1, tokens: 1 })) as [Float32Array];
  }
  return { prefillMaxAbs, decodeMaxAbs, decodeVsHfDecodeMaxAbs: decodeVsHf, greedy: ids, greedyExpected: ref.greedyOutput };
}
