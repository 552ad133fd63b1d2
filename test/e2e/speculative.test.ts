// Speculative decoding: greedy output equals plain greedy decoding, with prompt-lookup proposals and with a
// draft model, on tiny-granite-code (Mamba-2 + attention: rejected proposals roll the recurrent state back to a
// snapshot and re-feed), on the jamba fixture, whose random weights make most proposals wrong, and on the llama
// fixture under lastRecent, whose evicted keys also come back only through a snapshot.
import * as fs from 'node:fs';
import * as path from 'node:path';
import { describe, expect, test } from 'vitest';
import { loadConfig } from '../../models/config.ts';
import { buildModel } from '../../models/registry.ts';
import { ModelRunner } from '../../runtime/modelRunner.ts';
import { openSafetensors } from '../../base/safetensors.ts';
import { mulberry32 } from '../../base/random.ts';
import { ModelDraft, PromptLookupDraft, speculativeGenerate, verifyProposal } from '../../runtime/speculative.ts';
import { getRuntime } from '../helpers/gpu.ts';
import { greedy, openFixture, prompt } from './memoryHarness.ts';

const DIR = path.resolve(import.meta.dirname, '../../assets/models/tiny-granite-code');
interface Greedy {
  prompt_ids: number[];
  output_ids: number[];
}
const reference: { greedy: Greedy[] } = JSON.parse(fs.readFileSync(path.join(DIR, 'reference.json'), 'utf8'));

async function openTinyGranite(): Promise<ModelRunner> {
  const config = await loadConfig(DIR);
  return new ModelRunner(await getRuntime(), buildModel(config), await openSafetensors(DIR), { slots: 1, capacity: 96, chunks: [16], config });
}

describe('greedy speculative decoding equals plain decoding', () => {
  test('tiny-granite-code, prompt lookup (k = 4): two reference generations, with rejections rolled back', async () => {
    const target = await openTinyGranite();
    let rollbacks = 0;
    let accepted = 0;
    let steps = 0;
    let plainSteps = 0;
    for (const g of reference.greedy.slice(0, 2)) {
      const expected = g.output_ids.slice(g.prompt_ids.length, g.prompt_ids.length + 24);
      const r = await speculativeGenerate(target, 0, g.prompt_ids, { draft: new PromptLookupDraft(), k: 4, maxNewTokens: expected.length, stopIds: [] });
      expect(r.ids).toEqual(expected);
      steps += r.verifySteps;
      plainSteps += expected.length - 1;
      rollbacks += r.rollbacks;
      accepted += r.accepted;
      expect(r.recomputes).toBe(r.rollbacks); // a recurrent state goes back only through a snapshot and a re-feed
    }
    expect(accepted).toBeGreaterThan(0);
    expect(steps).toBeLessThan(plainSteps); // accepted proposals saved steps
    expect(rollbacks).toBeGreaterThan(0);
  });

  test('tiny-granite-code with a draft model of the same tokenizer (itself: every proposal is accepted)', async () => {
    const target = await openTinyGranite();
    const draft = new ModelDraft(await openTinyGranite());
    const g = reference.greedy[0]!;
    const expected = g.output_ids.slice(g.prompt_ids.length, g.prompt_ids.length + 20);
    const r = await speculativeGenerate(target, 0, g.prompt_ids, { draft, k: 3, maxNewTokens: expected.length, stopIds: [] });
    expect(r.ids).toEqual(expected);
    expect(r.acceptanceRate).toBe(1);
    expect(r.verifySteps).toBe(Math.ceil((expected.length - 1) / 4));
  });

  test('jamba fixture (Mamba + attention): mostly rejected prompt-lookup proposals, same tokens as one-token decoding', async () => {
    const runner = await openFixture('jamba', { slots: 1, capacity: 64, chunks: [4] });
    const ids = [...prompt(6, 21), ...prompt(6, 21)];
    runner.resetSlot(0);
    const plain = await greedy(runner, 0, await runner.prefill(0, ids), 24);
    const r = await speculativeGenerate(runner, 0, ids, { draft: new PromptLookupDraft(2), k: 3, maxNewTokens: 24, stopIds: [] });
    expect(r.ids).toEqual(plain.tokens);
    expect(r.rollbacks).toBeGreaterThan(0);
    expect(r.recomputes).toBe(r.rollbacks);
  });

  test('llama fixture under lastRecent (evicting past 7 positions): rejections go back through a snapshot, same tokens as one-token decoding', async () => {
    const runner = await openFixture('llama', { slots: 1, capacity: 64, chunks: [4], kvPolicy: { kind: 'lastRecent', sinks: 2, recent: 5 } });
    expect(runner.caches.snapshotsPerSlot).toBe(2); // evicting layers get snapshot planes by default
    const ids = [...prompt(6, 22), ...prompt(6, 22)];
    runner.resetSlot(0);
    const plain = await greedy(runner, 0, await runner.prefill(0, ids), 20);
    const r = await speculativeGenerate(runner, 0, ids, { draft: new PromptLookupDraft(2), k: 3, maxNewTokens: 20, stopIds: [] });
    expect(r.ids).toEqual(plain.tokens);
    expect(r.rollbacks).toBeGreaterThan(0);
    expect(r.recomputes).toBe(r.rollbacks);
  });
});

describe('prompt lookup', () => {
  test('proposes what followed the latest earlier occurrence of the longest matching n-gram', async () => {
    const draft = new PromptLookupDraft(3);
    expect(await draft.propose([1, 2, 3, 9, 9, 1, 2, 3, 7, 1, 2, 3], 3)).toEqual([7, 1, 2]);
    expect(await draft.propose([5, 6, 5], 4)).toEqual([6, 5]);
    expect(await draft.propose([1, 2, 3], 4)).toEqual([]);
  });
});

describe('the acceptance rule with sampling', () => {
  test('the token that comes out follows the target distribution whatever was proposed (20,000 seeded draws)', () => {
    const logits = Float32Array.from([2, 1, 0.5, 0, -1]);
    const sampling = { temperature: 1, topP: 1 };
    const weights = Array.from(logits, (l) => Math.exp(l));
    const total = weights.reduce((a, b) => a + b, 0);
    const random = mulberry32(42);
    for (const proposal of [0, 3]) {
      const counts = new Array<number>(logits.length).fill(0);
      const draws = 20_000;
      for (let i = 0; i < draws; i++) counts[verifyProposal(logits, proposal, sampling, random).token]!++;
      // 4 standard deviations of a binomial count
      counts.forEach((count, token) => {
        const p = weights[token]! / total;
        expect(Math.abs(count / draws - p), `proposal ${proposal}, token ${token}`).toBeLessThan(4 * Math.sqrt((p * (1 - p)) / draws));
      });
    }
    // greedy: kept only when it is the argmax
    expect(verifyProposal(logits, 0, { temperature: 0, topP: 1 }, random)).toEqual({ kept: true, token: 0 });
    expect(verifyProposal(logits, 2, { temperature: 0, topP: 1 }, random)).toEqual({ kept: false, token: 0 });
  });
});
