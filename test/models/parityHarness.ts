// Parity checks against the transformers fixtures copied into test/fixtures/hf (see runtime/parity.ts).
import * as path from 'node:path';
import { readFileSync } from 'node:fs';
import { type ParityResult, argmax, runParity as runParityIn } from '../../runtime/parity.ts';
import type { ModelRunner } from '../../runtime/modelRunner.ts';
import type { TensorSource } from '../../base/safetensors.ts';
import { type QuantStorage, quantizable } from '../../compiler/quantized.ts';
import { numel } from '../../compiler/ir.ts';
import { dequantize, encodeWeight } from '../../runtime/quantize.ts';

export { argmax, loadReference, maxAbsDiff, openRunner, refRow } from '../../runtime/parity.ts';
export type { ParityResult, Reference } from '../../runtime/parity.ts';

export const FIXTURES = path.resolve(import.meta.dirname, '../fixtures/hf');

/** runParity on a fixture folder by name (e.g. 'llama'). */
export function runParity(name: string, opts: { chunks?: number[]; fuse?: boolean; window?: number } = {}): Promise<ParityResult> {
  return runParityIn(path.join(FIXTURES, name), opts);
}

/** One greedy generation of a model folder's reference.json. */
export interface Generation {
  prompt: string;
  prompt_ids: number[];
  output_ids: number[];
}

/** The greedy generations of a model folder's reference.json. */
export function readGenerations(dir: string): Generation[] {
  return (JSON.parse(readFileSync(path.join(dir, 'reference.json'), 'utf8')) as { greedy: Generation[] }).greedy;
}

/**
 * Runs the reference prompts as one batch (a ragged prefill, then one decode step per new token), each step fed
 * the reference token, and returns every step's last-token logits, [step][slot]. Greedy decoding feeds the same
 * tokens until the first step whose argmax is not the reference token (firstDivergence).
 */
export async function teacherForcedLogits(runner: ModelRunner, greedy: readonly Generation[]): Promise<Float32Array[][]> {
  const prompts = greedy.map((g) => g.prompt_ids);
  const longest = Math.max(...prompts.map((p) => p.length));
  const steps: Float32Array[][] = [];
  let logits = await runner.step(prompts.map((tokens, slot) => ({ slot, tokens })), 'last', { rows: prompts.length, tokens: longest });
  const newTokens = greedy[0]!.output_ids.length - greedy[0]!.prompt_ids.length;
  for (let step = 0; step < newTokens; step++) {
    steps.push(logits);
    if (step < newTokens - 1) logits = await runner.step(greedy.map((g, slot) => ({ slot, tokens: [g.output_ids[g.prompt_ids.length + step]!] })), 'last');
  }
  return steps;
}

/**
 * Per prompt, from teacher-forced logits: undefined when greedy decoding gives every reference token, or the first
 * step where it does not and by how much the chosen token's logit beat the reference token's there (later tokens
 * would follow another prefix: not compared).
 */
export function firstDivergence(logits: readonly Float32Array[][], greedy: readonly Generation[]): ({ step: number; margin: number } | undefined)[] {
  return greedy.map((g, slot) => {
    for (let step = 0; step < logits.length; step++) {
      const row = logits[step]![slot]!;
      const [token, want] = [argmax(row), g.output_ids[g.prompt_ids.length + step]!];
      if (token !== want) return { step, margin: row[token]! - row[want]! };
    }
    return undefined;
  });
}

/** firstDivergence of the reference prompts decoded on `runner`. */
export async function greedyDivergence(runner: ModelRunner, greedy: readonly Generation[]): Promise<({ step: number; margin: number } | undefined)[]> {
  return firstDivergence(await teacherForcedLogits(runner, greedy), greedy);
}

/**
 * `source` with the tensors `pick` names replaced by the f32 values their `storage` blocks decode to (runtime/quantize.ts):
 * what a quantized run computes with, run through the float kernels; rows must be whole blocks.
 */
export function dequantizedSource(source: TensorSource, storage: QuantStorage, pick: (name: string) => boolean): TensorSource {
  const picked = (name: string) => pick(name) && quantizable(source.info(name).shape);
  return {
    metadata: source.metadata,
    tensorNames: () => source.tensorNames(),
    has: (name) => source.has(name),
    info: (name) => (picked(name) ? { ...source.info(name), dtype: 'F32' } : source.info(name)),
    readTensor: async (name) => {
      const tensor = await source.readTensor(name);
      if (!picked(name)) return tensor;
      const values = dequantize(encodeWeight(tensor, storage) as Uint32Array, numel(tensor.shape), storage);
      return { dtype: 'F32', shape: tensor.shape, bytes: new Uint8Array(values.buffer as ArrayBuffer) };
    },
    close: () => source.close(),
  };
}
