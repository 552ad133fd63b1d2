// The prefix cache: a prompt sharing a cached prefix prefills only the rest and gets the logits of a cold run,
// on a hybrid (tiny-granite-code: Mamba-2 + attention), the jamba fixture (Mamba + attention + MoE) and a pure
// attention model, where an entry can also be cut back to a shorter prefix; a full cache evicts the least
// recently used entry.
import * as path from 'node:path';
import { describe, expect, test } from 'vitest';
import { loadConfig } from '../../models/config.ts';
import { buildModel } from '../../models/registry.ts';
import { ModelRunner, type RunnerOptions } from '../../runtime/modelRunner.ts';
import { PrefixCache } from '../../runtime/prefixCache.ts';
import { openSafetensors } from '../../base/safetensors.ts';
import { getRuntime } from '../helpers/gpu.ts';
import { openFixture, prompt } from './memoryHarness.ts';

const TINY_GRANITE = path.resolve(import.meta.dirname, '../../assets/models/tiny-granite-code');

async function openTinyGranite(options: Partial<RunnerOptions>): Promise<ModelRunner> {
  const config = await loadConfig(TINY_GRANITE);
  return new ModelRunner(await getRuntime(), buildModel(config), await openSafetensors(TINY_GRANITE), { slots: 3, capacity: 64, chunks: [16], config, ...options });
}

/** Slot 2 is the cache's; slot 0 runs cold, slot 1 puts the prefix in the cache, slot 0 then runs warm. */
async function warmAgainstCold(runner: ModelRunner, prefixLength: number, restLength: number): Promise<void> {
  const cache = new PrefixCache(runner.caches, { slots: [2], every: 0 });
  const ids = prompt(prefixLength + restLength, 11);
  runner.resetSlot(0);
  const cold = await runner.prefill(0, ids, 'all');

  runner.resetSlot(1);
  await runner.prefill(1, ids.slice(0, prefixLength));
  cache.insert(1, ids.slice(0, prefixLength));
  runner.resetSlot(0);
  expect(cache.restore(0, ids)).toBe(prefixLength);
  expect(runner.lengths[0]).toBe(prefixLength);
  const warm = await runner.prefill(0, ids.slice(prefixLength), 'all');
  const V = runner.model.vocabSize;
  // only the rest was fed: its logits, one row per token, equal the cold run's from the prefix on
  expect(warm.length).toBe(restLength * V);
  expect(warm).toEqual(cold.slice(prefixLength * V));
  expect(cache.stats()).toMatchObject({ entries: 1, lookups: 1, hits: 1, hitTokens: prefixLength, insertions: 1, evictions: 0 });
}

describe('a prompt sharing a cached prefix prefills only the rest, with the logits of a cold run', () => {
  test('tiny-granite-code (Mamba-2 + attention hybrid): 32 cached tokens, 9 prefilled', async () => {
    await warmAgainstCold(await openTinyGranite({}), 32, 9);
  });

  test('jamba fixture (Mamba + attention + MoE): 8 cached tokens, 5 prefilled', async () => {
    await warmAgainstCold(await openFixture('jamba', { slots: 3, capacity: 32, chunks: [4] }), 8, 5);
  });
});

describe('entries, eviction and stats', () => {
  test('pure attention (llama fixture): an entry is cut back to the part of it a prompt shares', async () => {
    const runner = await openFixture('llama', { slots: 3, capacity: 32, chunks: [4] });
    const cache = new PrefixCache(runner.caches, { slots: [2], every: 0 });
    expect(cache.truncatable).toBe(true);
    const long = prompt(12, 3);
    await runner.prefill(1, long);
    cache.insert(1, long);
    // shares 6 tokens with the entry, then differs
    const ids = [...long.slice(0, 6), ...prompt(3, 4)];
    runner.resetSlot(0);
    const cold = await runner.prefill(0, ids, 'all');
    runner.resetSlot(0);
    expect(cache.restore(0, ids)).toBe(6);
    const warm = await runner.prefill(0, ids.slice(6), 'all');
    expect(warm).toEqual(cold.slice(6 * runner.model.vocabSize));
  });

  test('a hybrid (jamba) only reuses whole entries, leaves a token to prefill, and evicts the least recently used', async () => {
    const runner = await openFixture('jamba', { slots: 3, capacity: 32, chunks: [4] });
    const cache = new PrefixCache(runner.caches, { slots: [1, 2], every: 4 });
    expect(cache.truncatable).toBe(false);
    const [a, b, c] = [prompt(8, 5), prompt(8, 6), prompt(8, 7)];
    for (const ids of [a, b]) {
      runner.resetSlot(0);
      await runner.prefill(0, ids);
      cache.insert(0, ids);
    }
    runner.resetSlot(0);
    expect(cache.restore(0, [...a.slice(0, 6), 1, 2])).toBe(0); // shares 6 of a's 8: a recurrent state holds only position 8
    expect(cache.restore(0, a)).toBe(0); // the whole prompt: nothing would be left to sample from
    expect(cache.restore(0, [...a, 9])).toBe(8); // a is now the most recently used
    runner.resetSlot(0);
    await runner.prefill(0, c);
    cache.insert(0, c); // full: b goes
    runner.resetSlot(0);
    expect(cache.restore(0, [...b, 9])).toBe(0);
    expect(cache.restore(0, [...a, 9])).toBe(8);
    expect(cache.restore(0, [...c, 9])).toBe(8);
    const stats = cache.stats();
    expect(stats).toMatchObject({ entries: 2, maxEntries: 2, lookups: 6, hits: 3, hitTokens: 24, insertions: 3, evictions: 1 });
    expect(stats.bytes).toBe(stats.budgetBytes);
    expect(stats.bytes).toBe(2 * cache.slotBytes);
    expect(() => cache.insert(0, [...c, 9])).toThrow(/slot 0 holds 8 positions, not the 9 ids given/);
  });
});
