import * as path from 'node:path';
import { promises as fsp } from 'node:fs';
import { expect, test } from 'vitest';
import { argmax, openRunner } from './parityHarness.ts';
import { Tokenizer } from '../../runtime/tokenizer.ts';

// A trained GraniteMoeHybrid (Mamba-2 + attention with RoPE, shared MLP only, tied embeddings) stored in f16: the
// weights stay packed on the GPU and everything is computed in f32. Its reference.json holds transformers'
// greedy generations (48 new tokens each); they must come back token for token. The three prompts run as one
// batch of three slots: one ragged prefill step (each row padded to the longest prompt), then decode steps
// with every slot at its own position.
const FOLDER = path.resolve(import.meta.dirname, '../../assets/models/tiny-granite-code');

interface Generation {
  prompt: string;
  prompt_ids: number[];
  output_ids: number[];
}

// Timeout: two buckets compile in ~20 s on lavapipe and the 48 steps run in ~2 min of CPU; more on a loaded machine.
test('tiny-granite-code (f16) reproduces its reference greedy generations', async () => {
  const reference = JSON.parse(await fsp.readFile(path.join(FOLDER, 'reference.json'), 'utf8')) as { greedy: Generation[] };
  const tokenizer = await Tokenizer.load(FOLDER);
  const ids = reference.greedy.map((g) => tokenizer.encode(g.prompt));
  expect(ids).toEqual(reference.greedy.map((g) => g.prompt_ids));

  const longest = Math.max(...ids.map((p) => p.length));
  const runner = await openRunner(FOLDER, { slots: ids.length, capacity: 64, chunks: [1, longest] });
  let logits = await runner.step(ids.map((prompt, slot) => ({ slot, tokens: prompt })), 'last', { rows: ids.length, tokens: longest });
  const newTokens = reference.greedy[0]!.output_ids.length - reference.greedy[0]!.prompt_ids.length;
  for (let step = 0; step < newTokens; step++) {
    const next = logits.map((l) => argmax(l));
    next.forEach((token, slot) => ids[slot]!.push(token));
    if (step < newTokens - 1) logits = await runner.step(next.map((token, slot) => ({ slot, tokens: [token] })), 'last');
  }
  expect(ids).toEqual(reference.greedy.map((g) => g.output_ids));
});
