// Parity checks against the transformers fixtures copied into test/fixtures/hf (see runtime/parity.ts).
import * as path from 'node:path';
import { type ParityResult, argmax, runParity as runParityIn } from '../../runtime/parity.ts';
import type { ModelRunner } from '../../runtime/modelRunner.ts';

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

/**
 * Runs the reference prompts as one batch (a ragged prefill, then one decode step per token) greedily and returns,
 * per prompt, undefined when every token equals the reference, or the first step where it does not and by how much
 * the chosen token's logit beat the reference token's there (later tokens follow another prefix: not compared).
 */
export async function greedyDivergence(runner: ModelRunner, greedy: readonly Generation[]): Promise<({ step: number; margin: number } | undefined)[]> {
  const ids = greedy.map((g) => [...g.prompt_ids]);
  const longest = Math.max(...ids.map((p) => p.length));
  const diverged: ({ step: number; margin: number } | undefined)[] = ids.map(() => undefined);
  let logits = await runner.step(ids.map((prompt, slot) => ({ slot, tokens: prompt })), 'last', { rows: ids.length, tokens: longest });
  const newTokens = greedy[0]!.output_ids.length - greedy[0]!.prompt_ids.length;
  for (let step = 0; step < newTokens; step++) {
    const next = logits.map((l) => argmax(l));
    next.forEach((token, slot) => {
      const want = greedy[slot]!.output_ids[ids[slot]!.length]!;
      if (!diverged[slot] && token !== want) diverged[slot] = { step, margin: logits[slot]![token]! - logits[slot]![want]! };
      ids[slot]!.push(token);
    });
    if (step < newTokens - 1) logits = await runner.step(next.map((token, slot) => ({ slot, tokens: [token] })), 'last');
  }
  return diverged;
}
