// tiny-granite-code with its f16 weights block-quantized on load (every linear layer and the tied embedding /
// LM head): q8 must give the reference greedy tokens up to near-ties and the logits of its dequantized weights; q4's
// per-token log-likelihood of a held-out text must stay within a measured bound of the f16 run's.
import * as path from 'node:path';
import { promises as fsp } from 'node:fs';
import { expect, test } from 'vitest';
import { type Generation, dequantizedSource, firstDivergence, maxAbsDiff, openRunner, teacherForcedLogits } from './parityHarness.ts';
import { openSafetensors } from '../../base/safetensors.ts';
import type { QuantMatvec } from '../../compiler/quantized.ts';
import { Tokenizer } from '../../runtime/tokenizer.ts';

const FOLDER = path.resolve(import.meta.dirname, '../../assets/models/tiny-granite-code');

// q8 moves tiny-granite-code's logits by up to 0.30 (mean 0.032; the logits spread 3.4 rms) along the reference
// generations, teacher-forced (scripts/quant-logit-error.ts). That is what int8 blocks give on this model, not a defect:
// the device computes what its dequantized weights compute (asserted below), an unrounded float64 scale gives the same
// (0.31, mean 0.032) and the error comes from every kind of weight (quantizing only the embedding / LM head: 0.17,
// mean 0.015; only the attention and Mamba projections: 0.20, 0.022; only the MLPs: 0.14, 0.017). But f16's own top
// two tokens are 0.014 (prompt 2) and 0.037 (prompt 3) apart at some reference positions, and q8 moves such a
// difference by 0.069 rms: whether all three generations survive is chance (5 of 10 equally good roundings, block
// scales stretched by 0.4%..4%, keep all three). Measured: prompts 1 and 2 give all 48 reference tokens; prompt 3
// its first 21, then, where f16's top two differ by 0.104, the runner-up. The test asserts exactly that rule: every
// token equals the reference until a divergence, and at a divergence the reference token is within NEAR_TIE of q8's
// own best logit (later tokens follow another prefix).
const NEAR_TIE = 0.3;

// Largest logit difference from the f32 run of the same values: the decodes are exact, so only the order of f32 sums
// differs (measured 9e-6 word, 3e-5 lanes, 5e-5 staged); 'half' sums in f16 (0.034) and 'dot4' rounds x to int8
// (0.36), each tested against its own rounding in test/ops/quantized*.test.ts.
const KERNEL_ERROR: { [K in QuantMatvec]: number } = { word: 1e-3, lanes: 1e-3, wide: 1e-3, auto: 1e-3, staged: 1e-3, half: 0.1, dot4: 0.6 };

// Timeout: as tiny-granite-code.test.ts (two buckets compile per run, 48 batched steps), more on a loaded machine.
test('q8 weights give the reference greedy tokens of tiny-granite-code up to near-ties, and the logits of the dequantized weights', async () => {
  const { greedy } = JSON.parse(await fsp.readFile(path.join(FOLDER, 'reference.json'), 'utf8')) as { greedy: Generation[] };
  const longest = Math.max(...greedy.map((g) => g.prompt_ids.length));
  const open = (opts: Parameters<typeof openRunner>[1]) => openRunner(FOLDER, { slots: greedy.length, capacity: 64, chunks: [1, longest], ...opts });
  const runner = await open({ weights: 'q8' });
  const weights = Object.values((await runner.program(greedy.length, 1, 'last')).program.buffers).filter((b) => b.role === 'weight');
  expect(weights.filter((b) => b.storage === 'q8').map((b) => b.name)).toContain('model.embed_tokens.weight');
  const q8 = await teacherForcedLogits(runner, greedy);
  const diverged = firstDivergence(q8, greedy);
  console.log(`q8 greedy: ${diverged.map((d, i) => `prompt ${i + 1} ${d ? `diverges at token ${d.step + 1} (q8 margin ${d.margin.toFixed(3)})` : 'equal'}`).join('; ')}`);
  for (const d of diverged) if (d) expect(d.margin).toBeLessThan(NEAR_TIE);
  // most of the generations must agree, not only near-ties everywhere
  expect(diverged.filter((d) => d === undefined).length).toBeGreaterThanOrEqual(2);

  // the error is the weights' values, not the kernels'
  const dequantized = (await teacherForcedLogits(await open({ checkpoint: dequantizedSource(await openSafetensors(FOLDER), 'q8', () => true) }), greedy)).flat();
  const worst = Math.max(...q8.flat().map((row, i) => maxAbsDiff(row, dequantized[i]!)));
  const matvec = runner.runtime.limits.quantMatvec;
  console.log(`q8 (${matvec}) vs the f32 run of its dequantized weights: max |d logit| ${worst.toExponential(2)}`);
  expect(worst).toBeLessThan(KERNEL_ERROR[matvec]);
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
