// KV policies beyond dense: lastRecent (sinks + a recent ring) and h2o (a recent ring, then heavy hitters by
// accumulated attention, evicted on the GPU), on llama and a hybrid (granitemoehybrid). One token stream per
// family is fed to a dense, a lastRecent and an h2o runner: while the budget holds the sequence they equal dense;
// past it the positions kept match a CPU reference of each policy, step by step for h2o; decode runs past 4x the
// budget with constant memory and nothing compiled or created after the first step; a rollback goes back to a
// snapshot exactly and is refused (typed, saying why) anywhere else.
import { readFileSync } from 'node:fs';
import * as path from 'node:path';
import { describe, expect, test } from 'vitest';
import { MemoryError } from '../../caches/hybridMemory.ts';
import { kvStateName, policyStateName } from '../../caches/stateTable.ts';
import type { ModelRunner } from '../../runtime/modelRunner.ts';
import { argmax } from '../../runtime/parity.ts';
import { FIXTURES, maxAbs, openFixture, prompt } from './memoryHarness.ts';

const CHUNK = 4; // openFixture's largest prefill chunk: a recent ring holds recent + CHUNK - 1 entries
const LAST_RECENT = { kind: 'lastRecent', sinks: 2, recent: 5 } as const; // budget 7
const H2O = { kind: 'h2o', recent: 3, heavy: 4 } as const; // budget 7
const SPAN = { lastRecent: LAST_RECENT.recent + CHUNK - 1, h2o: H2O.recent + CHUNK - 1 };

const step = async (runner: ModelRunner, token: number) => (await runner.step([{ slot: 0, tokens: [token] }], 'last', { rows: 1, tokens: 1 }))[0]!;

/** A slot's K rows of one layer as hex strings (equal rows: equal keys). */
async function keyRows(runner: ModelRunner, layer: number): Promise<string[]> {
  const k = (await runner.caches.readSlot(0)).get(kvStateName(layer, 'k'))!;
  const kv = runner.spec[layer]!.kv!;
  const row = kv.kvHeads * kv.headDim * 4;
  return Array.from({ length: k.byteLength / row }, (_, r) => Buffer.from(k.subarray(r * row, (r + 1) * row)).toString('hex'));
}

async function h2oState(runner: ModelRunner, layer: number): Promise<{ kpos: number[]; score: number[] }> {
  const slot = await runner.caches.readSlot(0);
  const bytes = (name: string) => slot.get(name)!.slice().buffer;
  return { kpos: [...new Int32Array(bytes(policyStateName(layer, 'kpos')))], score: [...new Float32Array(bytes(policyStateName(layer, 'score')))] };
}

/** The policy's CPU reference for one decode step: the positions an h2o layer holds after it. */
function h2oReference(before: { kpos: number[]; score: number[] }, position: number): number[] {
  const entry = position % SPAN.h2o; // ring entries first, heavy places after
  // the entry this step overwrites competes with the heavy places by score; ties keep the incumbent
  const heavy = before.kpos.slice(SPAN.h2o).map((p, i) => ({ p, s: before.score[SPAN.h2o + i]! }));
  const winners = [...heavy, { p: before.kpos[entry]!, s: before.score[entry]! }]
    .map((c, i) => ({ ...c, i }))
    .filter((c) => c.p > 0)
    .sort((a, b) => b.s - a.s || a.i - b.i)
    .slice(0, H2O.heavy);
  const ring = before.kpos.slice(0, SPAN.h2o).map((p, i) => (i === entry ? position + 1 : p));
  return [...winners.map((c) => c.p), ...ring].filter((p) => p > 0).map((p) => p - 1).sort((a, b) => a - b);
}

describe.each(['llama', 'granitemoehybrid'])('%s', (family) => {
  test('lastRecent and h2o: equal to dense within the budget, the kept positions of a CPU reference past it, constant memory past 4x the budget, rollback only to a snapshot', async () => {
    const open = (kvPolicy?: typeof LAST_RECENT | typeof H2O) => openFixture(family, { slots: 1, capacity: 64, ...(kvPolicy ? { kvPolicy } : {}) });
    const [dense, lastRecent, h2o] = [await open(), await open(LAST_RECENT), await open(H2O)];
    for (const r of [lastRecent, h2o]) {
      expect(r.caches.report().layers.some((l) => l.policy)).toBe(true);
      // the report counts what is allocated, the snapshot planes of the evicting layers included
      expect(r.caches.allocatedBytes()).toBe(r.caches.report().totalBytes);
      expect(r.caches.report().snapshotBytes).toBeGreaterThan(dense.caches.report().snapshotBytes);
    }
    const layer = dense.spec.findIndex((l) => l.kv && l.kv.sharesWith === undefined); // its keys depend on the tokens alone
    const heads = JSON.parse(readFileSync(path.join(FIXTURES, family, 'config.json'), 'utf8')).num_attention_heads as number;

    // 6 positions: every policy holds them all, in dense's order: equal to the last bit
    const tokens = prompt(6, 3);
    const prefill = await Promise.all([dense, lastRecent, h2o].map((r) => r.prefill(0, tokens, 'all')));
    expect(maxAbs(prefill[1]!, prefill[0]!)).toBe(0);
    expect(maxAbs(prefill[2]!, prefill[0]!)).toBe(0);
    // a 7th (= each budget): h2o's ring of 6 moves one position into a heavy place, so only the order of keys changes
    let token = argmax(prefill[0]!.slice(prefill[0]!.length - dense.model.vocabSize));
    let logits = await Promise.all([dense, lastRecent, h2o].map((r) => step(r, token)));
    expect(maxAbs(logits[1]!, logits[0]!)).toBe(0);
    expect(maxAbs(logits[2]!, logits[0]!)).toBeLessThan(1e-5);
    expect(argmax(logits[2]!)).toBe(argmax(logits[0]!));

    // past the budget: dense's greedy tokens are fed to all three (teacher forcing), h2o checked against its reference
    const created = (r: ModelRunner) => { const c = r.runtime.counters; return [c.shaderModules, c.pipelines, c.bindGroups, c.buffers]; };
    const counts = created(dense);
    const bytes = [lastRecent, h2o].map((r) => r.caches.allocatedBytes());
    let before = await h2oState(h2o, layer);
    const steps = 4 * 7 + 5;
    for (let i = 0; i < steps; i++) {
      token = argmax(logits[0]!);
      const position = h2o.lengths[0]!;
      logits = await Promise.all([dense, lastRecent, h2o].map((r) => step(r, token)));
      const after = await h2oState(h2o, layer);
      expect(after.kpos.filter((p) => p > 0).map((p) => p - 1).sort((a, b) => a - b)).toEqual(h2oReference(before, position));
      // the scores grew by this step's attention weights: one softmax per query head, each summing to 1
      const had = new Map(before.kpos.map((p, e) => [p, before.score[e]!]));
      const added = after.kpos.reduce((sum, p, e) => sum + (p > 0 ? after.score[e]! - (p === position + 1 ? 0 : had.get(p)!) : 0), 0);
      expect(added).toBeCloseTo(heads, 3);
      before = after;
    }
    // (reading the slots back above made staging buffers; decoding itself makes none) the runtime is shared
    expect(created(dense).slice(0, 3)).toEqual(counts.slice(0, 3));
    const quiet = created(dense);
    for (let i = 0; i < 4; i++) logits = await Promise.all([dense, lastRecent, h2o].map((r) => step(r, argmax(logits[0]!))));
    expect(created(dense)).toEqual(quiet);
    expect([lastRecent, h2o].map((r) => r.caches.allocatedBytes())).toEqual(bytes);
    expect(h2o.lengths[0]).toBe(7 + steps + 4);
    expect(before.kpos.filter((p) => p > 0)).toHaveLength(H2O.heavy + SPAN.h2o);
    for (const l of logits) expect(l.every(Number.isFinite)).toBe(true);

    // lastRecent holds the sinks and its recent ring: each entry holds dense's key of the position the reference
    // puts there (a NoPE layer may hold equal keys at several positions, so entries are compared, not searched)
    const length = lastRecent.lengths[0]!;
    const denseRows = await keyRows(dense, layer);
    const rows = await keyRows(lastRecent, layer);
    const reference = [...Array(length).keys()].filter((p) => p < LAST_RECENT.sinks || p >= length - SPAN.lastRecent);
    const entryOf = (p: number) => (p < LAST_RECENT.sinks ? p : LAST_RECENT.sinks + ((p - LAST_RECENT.sinks) % SPAN.lastRecent));
    expect(reference).toHaveLength(rows.length);
    expect(reference.map((p) => rows[entryOf(p)])).toEqual(reference.map((p) => denseRows[p]));

    // evicted positions cannot come back without a snapshot: a rollback is refused, says why, and changes nothing
    for (const r of [lastRecent, h2o]) {
      expect(() => r.caches.rollback(0, 3)).toThrow(MemoryError);
      expect(() => r.caches.rollback(0, 3)).toThrow(/evict positions for good: they go back only to a snapshot \(or to 0\)[.;]/);
      expect(() => r.caches.rollback(0, 3)).toThrow(new RegExp(`Positions it can go back to: 0, ${length}$`));
      expect(r.lengths[0]).toBe(length);
    }
    // to a snapshot they go back exactly (entries, h2o positions and scores, recurrent states), past steps that evicted
    for (const r of [lastRecent, h2o]) {
      const at = r.caches.snapshot(0);
      const saved = await r.caches.readSlot(0);
      const next = await step(r, 5);
      for (const t of [6, 7, 8]) await step(r, t);
      expect(r.caches.restorablePositions(0)).toEqual([0, at, at + 4]);
      r.caches.rollback(0, at);
      expect(r.lengths[0]).toBe(at);
      const restored = await r.caches.readSlot(0);
      expect([...restored.keys()]).toEqual([...saved.keys()]);
      for (const [name, bytes] of saved) expect(Buffer.from(restored.get(name)!).equals(Buffer.from(bytes)), name).toBe(true);
      expect(maxAbs(await step(r, 5), next)).toBe(0);
    }
  });
});
