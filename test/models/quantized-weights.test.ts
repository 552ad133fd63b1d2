// tiny-granite-code with its f16 weights block-quantized on load (every linear layer and the tied embedding /
// LM head): q8 must give the reference greedy tokens; q4's per-token log-likelihood of a held-out text must stay
// within a measured bound of the f16 run's.
import * as path from 'node:path';
import { promises as fsp } from 'node:fs';
import { expect, test } from 'vitest';
import { type Generation, greedyDivergence, openRunner } from './parityHarness.ts';
import { Tokenizer } from '../../runtime/tokenizer.ts';

const FOLDER = path.resolve(import.meta.dirname, '../../assets/models/tiny-granite-code');

// q8 moves tiny-granite-code's logits by at most ~0.3 (measured along the reference generations: 0.10-0.30 per
// position), so greedy decoding can only flip where f16's two best tokens are closer than that. Measured: prompts 1
// and 2 give all 48 reference tokens; prompt 3 gives its first 21 and then, where f16's top two differ by 0.104,
// picks the runner-up. The test asserts exactly that rule: every token equals the reference until a divergence, and
// at a divergence the reference token is within NEAR_TIE of q8's own best logit (later tokens follow another prefix).
const NEAR_TIE = 0.3;

// Timeout: as tiny-granite-code.test.ts (two buckets compile, 48 batched steps), more on a loaded machine.
test('q8 weights give the reference greedy tokens of tiny-granite-code, up to near-ties', async () => {
  const reference = JSON.parse(await fsp.readFile(path.join(FOLDER, 'reference.json'), 'utf8')) as { greedy: Generation[] };
  const longest = Math.max(...reference.greedy.map((g) => g.prompt_ids.length));
  const runner = await openRunner(FOLDER, { slots: reference.greedy.length, capacity: 64, chunks: [1, longest], weights: 'q8' });
  const weights = Object.values((await runner.program(reference.greedy.length, 1, 'last')).program.buffers).filter((b) => b.role === 'weight');
  expect(weights.filter((b) => b.storage === 'q8').map((b) => b.name)).toContain('model.embed_tokens.weight');
  const diverged = await greedyDivergence(runner, reference.greedy);
  console.log(`q8 greedy: ${diverged.map((d, i) => `prompt ${i + 1} ${d ? `diverges at token ${d.step + 1} (q8 margin ${d.margin.toFixed(3)})` : 'equal'}`).join('; ')}`);
  for (const d of diverged) if (d) expect(d.margin).toBeLessThan(NEAR_TIE);
  // most of the generations must agree, not only near-ties everywhere
  expect(diverged.filter((d) => d === undefined).length).toBeGreaterThanOrEqual(2);
}, 900_000);

// Not one of the reference prompts, nor (as far as a hand-written snippet can be) in the model's training text.
const HELD_OUT = `def merge_sorted(left, right):
    result = []
    i = j = 0
    while i < len(left) and j < len(right):
        if left[i] <= right[j]:
            result.append(left[i])
            i += 1
        else:
            result.append(right[j])
            j += 1
    return result + left[i:] + right[j:]
`;

/** log p(next token) at every position of a prefill with logits for all tokens. */
function tokenLogLikelihoods(logits: Float32Array, ids: number[], vocab: number): number[] {
  const out: number[] = [];
  for (let t = 0; t + 1 < ids.length; t++) {
    const row = logits.subarray(t * vocab, (t + 1) * vocab);
    let max = -Infinity;
    for (const v of row) max = Math.max(max, v);
    let sum = 0;
    for (const v of row) sum += Math.exp(v - max);
    out.push(row[ids[t + 1]!]! - max - Math.log(sum));
  }
  return out;
}

test('q4 weights keep the per-token log-likelihood of a held-out text within a measured bound of f16', async () => {
  const tokenizer = await Tokenizer.load(FOLDER);
  const ids = tokenizer.encode(HELD_OUT);
  expect(ids.length).toBeGreaterThan(50);
  expect(ids.length).toBeLessThanOrEqual(128);
  const run = async (weights?: 'q4') => {
    const runner = await openRunner(FOLDER, { slots: 1, capacity: 128, chunks: [128], ...(weights ? { weights } : {}) });
    return tokenLogLikelihoods(await runner.prefill(0, ids, 'all'), ids, runner.model.vocabSize);
  };
  const f16 = await run();
  const q4 = await run('q4');
  const mean = (xs: number[]) => xs.reduce((a, b) => a + b, 0) / xs.length;
  const meanAbs = mean(f16.map((lp, i) => Math.abs(lp - q4[i]!)));
  const nllIncrease = mean(f16) - mean(q4);
  console.log(`q4 vs f16 over ${f16.length} tokens: mean |dlogp| ${meanAbs.toFixed(4)}, mean NLL f16 ${(-mean(f16)).toFixed(4)} q4 ${(-mean(q4)).toFixed(4)} (+${nllIncrease.toFixed(4)} nats)`);
  // measured on lavapipe: mean |dlogp| 0.340 nats per token, mean NLL 2.258 (f16) -> 2.444 (q4), +0.187 nats
  expect(meanAbs).toBeLessThan(0.45);
  expect(Math.abs(nllIncrease)).toBeLessThan(0.3);
}, 900_000);
