// GGUF files written by llama.cpp's converter (test/fixtures/gguf/README.md) against the safetensors path: the
// config, tokenizer and tensors rebuilt from the file must give the same model.
import * as path from 'node:path';
import { promises as fsp } from 'node:fs';
import { expect, test } from 'vitest';
import { argmax, greedyDivergence, type Generation, maxAbsDiff, openRunner } from './parityHarness.ts';
import { openGguf } from '../../runtime/gguf.ts';
import type { TensorSource } from '../../base/safetensors.ts';
import { Tokenizer } from '../../runtime/tokenizer.ts';
import { type GgufFamily, dequantizedSource, openGgufReference } from '../helpers/ggufReference.ts';

const GGUF = path.resolve(import.meta.dirname, '../fixtures/gguf');
const TINY = path.resolve(import.meta.dirname, '../../assets/models/tiny-granite-code');

/** A fixture model's runner and its prefill logits [16, vocab] of one fixed prompt (one program). */
async function prefilled(source: string, checkpoint?: TensorSource): Promise<{ runner: Awaited<ReturnType<typeof openRunner>>; all: Float32Array }> {
  const runner = await openRunner(source, { slots: 1, capacity: 32, chunks: [16], ...(checkpoint ? { checkpoint } : {}) });
  return { runner, all: await runner.prefill(0, [0, 200, 300, 17, 9, 88, 497, 12, 5, 600, 33, 1024, 7, 8, 9, 10], 'all') };
}
const prefillLogits = async (source: string, checkpoint?: TensorSource) => (await prefilled(source, checkpoint)).all;
const greedy = (all: Float32Array) => Array.from({ length: all.length / 2048 }, (_, t) => argmax(all.subarray(t * 2048, (t + 1) * 2048)));

test('a granitehybrid GGUF (f16, NoPE attention + Mamba-2) gives the logits and greedy tokens of its safetensors folder', async () => {
  // the folder holds the same values (test/unit/gguf-layouts.test.ts, which also compares the configs), so the
  // models must agree exactly
  const reference = await openGgufReference('granite');
  const st = await prefilled(reference.folder, reference.checkpoint);
  const gg = await prefilled(path.join(GGUF, 'granite-gguf-f16.gguf'));
  // measured 0 on lavapipe (A = -exp(A_log) stored by the converter and log(-A) here round-trip in f32)
  expect(maxAbsDiff(gg.all, st.all)).toBeLessThanOrEqual(1e-5);
  // and decoding from there picks the same tokens
  let [a, b] = [st.all.subarray(-2048), gg.all.subarray(-2048)];
  for (let step = 0; step < 4; step++) {
    expect(argmax(b)).toBe(argmax(a));
    [a] = await st.runner.step([{ slot: 0, tokens: [argmax(a)] }], 'last');
    [b] = await gg.runner.step([{ slot: 0, tokens: [argmax(b)] }], 'last');
  }
}, 900_000);

test('tiny-granite-code as a Q8_0 GGUF (llama.cpp converter): its tokenizer and greedy generations match the folder', async () => {
  const file = path.join(GGUF, 'tiny-granite-code-q8_0.gguf');
  const reference = JSON.parse(await fsp.readFile(path.join(TINY, 'reference.json'), 'utf8')) as { greedy: Generation[] };
  const gguf = await openGguf(file);
  const tokenizer = new Tokenizer(gguf.tokenizer!.json, gguf.tokenizer!.config);
  const folderTokenizer = await Tokenizer.load(TINY);
  const text = `${reference.greedy.map((g) => g.prompt).join('\n')}\n  héllo wörld 🚀 <|endoftext|>`;
  expect(tokenizer.encode(text)).toEqual(folderTokenizer.encode(text));
  expect(reference.greedy.map((g) => tokenizer.encode(g.prompt))).toEqual(reference.greedy.map((g) => g.prompt_ids));
  expect(tokenizer.decode(reference.greedy[0]!.output_ids)).toBe(folderTokenizer.decode(reference.greedy[0]!.output_ids));
  expect(tokenizer.eosTokenIds).toEqual(folderTokenizer.eosTokenIds);

  const longest = Math.max(...reference.greedy.map((g) => g.prompt_ids.length));
  const runner = await openRunner(file, { slots: reference.greedy.length, capacity: 64, chunks: [1, longest] });
  const program = (await runner.program(reference.greedy.length, 1, 'last')).program;
  expect(program.buffers.filter((b) => b.role === 'weight' && b.storage === 'q8').length).toBe(29); // the embedding and every projection
  // Q8_0 moves this model's logits by up to ~0.3 (see quantized-weights.test.ts): tokens may differ only at near-ties
  const diverged = await greedyDivergence(runner, reference.greedy);
  console.log(`Q8_0 GGUF greedy: ${diverged.map((d, i) => `prompt ${i + 1} ${d ? `diverges at token ${d.step + 1} (margin ${d.margin.toFixed(3)})` : 'equal'}`).join('; ')}`);
  for (const d of diverged) if (d) expect(d.margin).toBeLessThan(0.3);
  expect(diverged.filter((d) => d === undefined).length).toBeGreaterThanOrEqual(2);
}, 900_000);

test('a Q4_K GGUF (llama-quantize: Q4_K, with Q5_0 / Q6_K / Q8_0 where rows are no multiple of 256) stays near its f16 model', async () => {
  const gguf = await openGguf(path.join(GGUF, 'granite-gguf-q4_K-quantize.gguf'));
  const types = new Set(gguf.checkpoint.tensorNames().map((n) => gguf.checkpoint.info(n).dtype));
  expect([...types].sort()).toEqual(['F32', 'Q4_K', 'Q8_0']); // Q5_0 and Q6_K are served as Q8_0
  const folder = await openGgufReference('granite');
  const reference = await prefillLogits(folder.folder, folder.checkpoint);
  const quantized = await prefillLogits(path.join(GGUF, 'granite-gguf-q4_K-quantize.gguf'));
  const diff = maxAbsDiff(quantized, reference);
  console.log(`Q4_K GGUF vs f16: max |d logit| ${diff.toFixed(4)}`);
  // measured 0.132 on lavapipe (random weights: logits within about +-1)
  expect(diff).toBeGreaterThan(0);
  expect(diff).toBeLessThan(0.25);
}, 900_000);

test.each(['jamba', 'mamba', 'mamba2', 'lfm2', 'gemma3n', 'qwen3_next'] as GgufFamily[])('a %s GGUF (f16, llama.cpp converter) gives the logits and greedy tokens of its reference folder', async (family) => {
  // the folder holds the same values (test/unit/gguf-layouts.test.ts), so the models must agree exactly
  const reference = await openGgufReference(family);
  const st = await prefillLogits(reference.folder, reference.checkpoint);
  const gg = await prefillLogits(path.join(GGUF, `${family}-gguf-f16.gguf`));
  console.log(`${family} GGUF f16 vs folder: max |d logit| ${maxAbsDiff(gg, st)}`);
  expect(maxAbsDiff(gg, st)).toBeLessThanOrEqual(1e-5);
  expect(greedy(gg)).toEqual(greedy(st));
}, 900_000);

test('a Falcon-H1 GGUF (f16, muP multipliers folded into its weights by the converter) stays within f16 rounding of its reference folder', async () => {
  // the folder holds f16(w) and applies the multipliers; the file holds f16(w * m) with multipliers 1: the same
  // model in exact arithmetic, each weight 2^-11 relative apart (test/unit/gguf-layouts.test.ts)
  const reference = await openGgufReference('falcon_h1');
  const st = await prefillLogits(reference.folder, reference.checkpoint);
  const gg = await prefillLogits(path.join(GGUF, 'falcon_h1-gguf-f16.gguf'));
  const diff = maxAbsDiff(gg, st);
  console.log(`falcon_h1 GGUF f16 vs folder: max |d logit| ${diff}, max |logit| ${Math.max(...st.map(Math.abs))}`);
  // measured 7.1e-5 on lavapipe (logits up to 0.45): about 2^-12 of them, f16 rounding of w * m against w
  expect(diff).toBeLessThanOrEqual(3e-4);
  expect(greedy(gg)).toEqual(greedy(st));
}, 900_000);

test('a Mamba-2 Q4_0 GGUF (llama-quantize: Q4_0 projections, Q8_0 embedding) runs its blocks exactly and stays near its f16 model', async () => {
  const file = path.join(GGUF, 'mamba2-gguf-q4_0-quantize.gguf');
  const gguf = await openGguf(file);
  const reference = await openGgufReference('mamba2');
  const st = await prefillLogits(reference.folder, reference.checkpoint);
  const q = await prefillLogits(file);
  // the kernels decode q8/q4 blocks as the host does: the same values served as f32 give the same logits
  const host = await prefillLogits(file, dequantizedSource(gguf.checkpoint));
  expect(maxAbsDiff(q, host)).toBeLessThan(1e-4); // measured 1.3e-6
  // what is left is Q4_0's own error: 8.5% rms of these random weights (test/unit/gguf-layouts.test.ts), through
  // Mamba-2's exp(dt * A) into logits of up to 3.3
  const diff = maxAbsDiff(q, st);
  const same = greedy(q).filter((t, i) => t === greedy(st)[i]).length;
  console.log(`Mamba-2 Q4_0 GGUF vs f16: max |d logit| ${diff.toFixed(4)}, greedy tokens equal at ${same} of 16 positions`);
  // measured 1.01 and 12 of 16 on lavapipe
  expect(diff).toBeGreaterThan(0);
  expect(diff).toBeLessThan(1.5);
  expect(same).toBeGreaterThanOrEqual(10);
}, 900_000);
