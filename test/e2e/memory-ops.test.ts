// Session memory on the GPU: buffers allocated up front and reported exactly, and the sequence operations
// (clear, fork, keep, remove a range, snapshots and rollback) checked against fresh runs of the same tokens.
import { describe, expect, test } from 'vitest';
import { MemoryError } from '../../caches/hybridMemory.ts';
import { ropeInvFreq } from '../../dsl/nn/basic.ts';
import { loadConfig } from '../../models/config.ts';
import * as path from 'node:path';
import { type Continuation, FIXTURES, firstRegistered, greedy, maxAbs, openFixture, prompt, registered } from './memoryHarness.ts';

// Hybrids first: a recurrent model for the tests that need one.
const RECURRENT = firstRegistered('jamba', 'falcon_h1', 'bamba', 'granitemoehybrid', 'lfm2', 'mamba', 'mamba2', 'qwen3_next');
// Slot count and capacity are baked into the kernels, so each other pair compiles the model's programs again (tens
// of seconds a program on lavapipe). Every runner that runs programs takes one of two pairs, the ones
// memory-save.test.ts uses, so that in a suite run the shader cache serves one file's kernels to the other.
const SHAPE = { slots: 2, capacity: 40 };
const THREE_SLOTS = { slots: 3, capacity: 24 };
const FAMILIES = ['llama', 'mamba', 'mamba2', 'jamba', 'bamba', 'falcon_h1', 'granitemoehybrid', 'lfm2', 'qwen3_next', 'gemma3n_text'].filter(registered);

describe('allocation', () => {
  test.each(FAMILIES)('%s: every buffer exists before the first program, and the report equals what is allocated', async (family) => {
    const runner = await openFixture(family, { slots: 3, capacity: 40, snapshots: { perSlot: 2 } });
    const memory = runner.caches;
    const keys = runner.runtime.namedKeys().filter((k) => k.startsWith(runner.namespace));
    expect(keys.sort()).toEqual(memory.bufferKeys().sort());
    expect(memory.allocatedBytes()).toBe(memory.report().totalBytes);
    const spec = runner.model.memory();
    spec.forEach((l, i) => {
      expect(keys.includes(`${runner.namespace}state:L${i}.k`)).toBe(l.kv !== undefined && l.kv.sharesWith === undefined);
      for (const s of l.states) expect(keys).toContain(`${runner.namespace}state:L${i}.${s.name}`);
    });
  });

  test('programs use the memory\'s buffers and allocate no cache of their own', async () => {
    const runner = await openFixture(RECURRENT ?? 'llama', SHAPE);
    const before = new Set(runner.runtime.namedKeys());
    await runner.prefill(0, prompt(6, 1));
    const added = runner.runtime.namedKeys().filter((k) => !before.has(k));
    expect(added.filter((k) => k.includes('state:') || k.includes('snapshot:'))).toEqual([]);
  });
});

describe('clear', () => {
  test('a cleared slot reads zero state at position 0, and continues like a fresh one', async () => {
    const family = RECURRENT ?? 'llama';
    const runner = await openFixture(family, SHAPE);
    const fresh = await runner.prefill(0, prompt(5, 2));
    await runner.prefill(0, prompt(7, 3));
    const readbacks = runner.runtime.counters.readbacks;
    runner.resetSlot(0); // HybridMemory.clear: device copies only
    expect(runner.runtime.counters.readbacks).toBe(readbacks);
    const slot = await runner.caches.readSlot(0);
    expect([...new Int32Array(slot.get('pos')!.buffer)]).toEqual([0]);
    for (const s of runner.caches.recurrent.states) expect(slot.get(`L${s.layer}.${s.name}`)!.every((b) => b === 0)).toBe(true);
    expect(await runner.prefill(0, prompt(5, 2))).toEqual(fresh);
  });
});

/** Two prompts sharing a prefix, run fresh and from a fork; returns the largest logit difference. */
async function forkAgainstFresh(family: string): Promise<number> {
  const runner = await openFixture(family, THREE_SLOTS);
  const prefix = prompt(7, 4);
  const tails = [prompt(3, 5), prompt(5, 6)];
  const fresh: { last: Float32Array; more: Continuation }[] = [];
  for (const tail of tails) {
    runner.resetSlot(2);
    const last = await runner.prefill(2, [...prefix, ...tail]);
    fresh.push({ last, more: await greedy(runner, 2, last, 4) });
  }
  await runner.prefill(0, prefix);
  runner.caches.fork(0, 1);
  expect(runner.lengths.slice(0, 2)).toEqual([7, 7]);
  let worst = 0;
  for (const [slot, tail] of tails.entries()) {
    const last = await runner.prefill(slot, tail);
    const more = await greedy(runner, slot, last, 4);
    worst = Math.max(worst, maxAbs(last, fresh[slot]!.last), ...more.logits.map((l, i) => maxAbs(l, fresh[slot]!.more.logits[i]!)));
    expect(more.tokens).toEqual(fresh[slot]!.more.tokens);
  }
  return worst;
}

describe('fork', () => {
  test('llama: two sequences continuing from a forked prefix equal two fresh runs of the full prompts', async () => {
    const worst = await forkAgainstFresh('llama');
    console.log(`fork llama: max |logits - fresh| = ${worst.toExponential(2)}`);
    expect(worst).toBeLessThan(1e-5);
  });

  test.runIf(RECURRENT)(`${RECURRENT}: two sequences continuing from a forked prefix equal two fresh runs`, async () => {
    const worst = await forkAgainstFresh(RECURRENT!);
    console.log(`fork ${RECURRENT}: max |logits - fresh| = ${worst.toExponential(2)}`);
    expect(worst).toBeLessThan(1e-5);
  });

  test('keep clears every other slot', async () => {
    const runner = await openFixture(RECURRENT ?? 'llama', THREE_SLOTS);
    for (const slot of [0, 1, 2]) await runner.prefill(slot, prompt(3 + slot, slot));
    const kept = await runner.caches.readSlot(1);
    runner.caches.keep(1);
    expect(runner.lengths).toEqual([0, 4, 0]);
    expect(await runner.caches.readSlot(1)).toEqual(kept);
    const cleared = await runner.caches.readSlot(2);
    expect([...new Int32Array(cleared.get('pos')!.buffer)]).toEqual([0]);
  });
});

describe('rollback and removal', () => {
  test.runIf(RECURRENT)(`${RECURRENT}: generate, roll back to a snapshot, generate again: identical to the run that never went past it`, async () => {
    const runner = await openFixture(RECURRENT!, { ...SHAPE, snapshots: { perSlot: 3, every: 4 } });
    const memory = runner.caches;
    const last = await runner.prefill(0, prompt(8, 7)); // chunks 4 + 4: snapshots at 4 and 8
    expect(memory.snapshotsOf(0)).toEqual([4, 8]);
    const first = await greedy(runner, 0, last, 10); // positions 8..17; snapshots at 12, 16 (4 dropped: 3 planes)
    expect(memory.snapshotsOf(0)).toEqual([8, 12, 16]);
    memory.rollback(0, 12);
    expect(runner.lengths[0]).toBe(12);
    expect(memory.snapshotsOf(0)).toEqual([8, 12]);
    // position 12 onwards again: feed the token the first run fed there
    const again = await greedy(runner, 0, first.logits[3]!, 6);
    expect(again.tokens).toEqual(first.tokens.slice(4));
    again.logits.forEach((l, i) => expect(l).toEqual(first.logits[4 + i]));
  });

  test.runIf(RECURRENT)(`${RECURRENT}: removal past the last snapshot is refused, names the restorable positions, and changes nothing`, async () => {
    const runner = await openFixture(RECURRENT!, { ...SHAPE, snapshots: { perSlot: 2, every: 4 } });
    const memory = runner.caches;
    const last = await runner.prefill(0, prompt(8, 8));
    const run = await greedy(runner, 0, last, 3); // length 11, snapshots at 4, 8
    const before = await memory.readSlot(0);
    const error = await memory.removeRange(0, 9).catch((e: unknown) => e);
    expect(error).toBeInstanceOf(MemoryError);
    expect((error as Error).message).toMatch(/slot 0 \(11 positions\): cannot remove positions 9\.\.10: recurrent layers [\d, ]+ hold no state at position 9/);
    expect((error as Error).message).toContain('Positions it can go back to: 0, 4, 8, 11');
    expect(() => memory.rollback(0, 2)).toThrow(/Positions it can go back to: 0, 4, 8, 11/);
    await expect(memory.removeRange(0, 2, 5)).rejects.toThrow(/cannot forget positions 2\.\.4 from the middle/);
    expect(runner.lengths[0]).toBe(11);
    expect(memory.snapshotsOf(0)).toEqual([4, 8]);
    expect(await memory.readSlot(0)).toEqual(before);
    // and it continues exactly as if nothing had been asked
    const control = await openFixture(RECURRENT!, SHAPE);
    const controlRun = await greedy(control, 0, await control.prefill(0, prompt(8, 8)), 5);
    const rest = await greedy(runner, 0, run.logits[2]!, 2);
    expect(rest.logits[1]).toEqual(controlRun.logits[4]);
  });

  test('llama: a suffix goes back to any position without snapshots and matches a fresh run', async () => {
    const runner = await openFixture('llama', SHAPE);
    expect(runner.caches.snapshotsPerSlot).toBe(0);
    const tokens = prompt(12, 9);
    await runner.prefill(0, tokens);
    await runner.caches.removeRange(0, 5);
    expect(runner.lengths[0]).toBe(5);
    const after = await runner.prefill(0, [17, 23]);
    const fresh = await openFixture('llama', SHAPE);
    expect(maxAbs(after, await fresh.prefill(0, [...tokens.slice(0, 5), 17, 23]))).toBeLessThan(1e-5);
  });

  test('llama: a middle range moves later KV entries down and re-rotates their keys (layer 0 equals a fresh run of the cut prompt)', async () => {
    const config = await loadConfig(path.join(FIXTURES, 'llama'));
    const rope = config.modelType === 'llama' ? config.attention.rope! : undefined;
    const keyShift = { kind: 'rope' as const, layer: () => ({ invFreq: ropeInvFreq(rope!.rotaryDim, rope!.theta), rotaryDim: rope!.rotaryDim }) };
    const runner = await openFixture('llama', { ...SHAPE, keyShift });
    const tokens = prompt(14, 10);
    await runner.prefill(1, tokens);
    const before = await runner.caches.readSlot(1);
    await runner.caches.removeRange(1, 3, 8);
    expect(runner.lengths[1]).toBe(9);
    const after = await runner.caches.readSlot(1);
    expect([...new Int32Array(after.get('pos')!.buffer)]).toEqual([9]);
    // values move as they are; entries before the cut stay
    const row = 2 * 16 * 4; // kvHeads * headDim * 4 bytes
    const v0 = before.get('L0.v')!;
    expect(after.get('L0.v')).toEqual(new Uint8Array([...v0.subarray(0, 3 * row), ...v0.subarray(8 * row, 14 * row)]));
    // layer 0's keys depend only on token and position: equal to a fresh run of the prompt without 3..7
    const fresh = await openFixture('llama', SHAPE);
    await fresh.prefill(0, [...tokens.slice(0, 3), ...tokens.slice(8)]);
    const want = new Float32Array((await fresh.caches.readSlot(0)).get('L0.k')!.buffer);
    const got = new Float32Array(after.get('L0.k')!.buffer);
    console.log(`middle removal: layer-0 keys vs fresh run of the cut prompt: max abs ${maxAbs(got, want).toExponential(2)}`);
    expect(maxAbs(got, want)).toBeLessThan(1e-5);
  });

  test('without a key shift, a middle range is refused for rotary attention and nothing changes', async () => {
    const runner = await openFixture('llama', SHAPE);
    await runner.prefill(0, prompt(6, 11));
    const before = await runner.caches.readSlot(0);
    await expect(runner.caches.removeRange(0, 1, 3)).rejects.toThrow(/moving them down needs a keyShift/);
    expect(await runner.caches.readSlot(0)).toEqual(before);
    expect(runner.lengths[0]).toBe(6);
  });

  test.runIf(registered('gemma3n_text'))('gemma3n: a sliding-window ring rolls back within its slack without snapshots, further only to a snapshot', async () => {
    // window 8, chunks up to 4: rings of 11 entries; 30 positions wrap them twice
    const runner = await openFixture('gemma3n_text', { slots: 1, capacity: 48, snapshots: { perSlot: 2, every: 8 } });
    const memory = runner.caches;
    expect(memory.kv.rings.map((l) => l.entries)).toEqual([11, 11, 11]);
    const first = await greedy(runner, 0, await runner.prefill(0, prompt(4, 12)), 26); // length 30; snapshots at 8, 16, 24, the last two kept
    const snaps = memory.snapshotsOf(0);
    expect(snaps).toEqual([16, 24]);
    expect(memory.restorablePositions(0)).toEqual([0, ...snaps.filter((p) => p < 26), 26, 27, 28, 29, 30].filter((p, i, a) => a.indexOf(p) === i).sort((a, b) => a - b));
    memory.rollback(0, 27); // within the slack: no snapshot needed
    let again = await greedy(runner, 0, first.logits[22]!, 3);
    expect(again.logits).toEqual(first.logits.slice(23, 26));
    const target = snaps[0]!;
    expect(() => memory.rollback(0, target - 1)).toThrow(/sliding-window layers 0, 1, 3 keep a ring of 11 entries/);
    memory.rollback(0, target);
    again = await greedy(runner, 0, first.logits[target - 5]!, 30 - target);
    expect(again.logits).toEqual(first.logits.slice(target - 4));
  });
});
