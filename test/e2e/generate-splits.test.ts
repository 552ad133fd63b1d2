// Flash-decoding in the generator (runtime/generator.ts splitFrom): a session whose caches hold more keys than the
// rule's length compiles each decode bucket's step with key slices beside its one-slice step, and a batch runs the
// split step once its longest sequence holds that many positions. Forced on the software adapter (4 slices from 24
// positions for up to 2 sequences; GPUs take 8 from 512): tiny-granite-code's greedy ids equal transformers' across
// the switch, alone and batched, with nothing compiled or created after the load.
import { beforeAll, expect, test } from 'vitest';
import { getSharedDevice } from '../../runtime/device.ts';
import { compileLimitsOf } from '../../runtime/compileLimits.ts';
import { Session } from '../../runtime/session.ts';
import { type Greedy, TINY_GRANITE as DIR, generated, reference } from '../helpers/tinyGranite.ts';

const SLOW = { timeout: 1_800_000 }; // hang guard (vitest.config.ts), not a speed limit

let session: Session;
beforeAll(async () => {
  const device = await getSharedDevice();
  const compileLimits = { ...compileLimitsOf(device), decodeSplits: { slices: 4, from: 24, sequences: 2 } };
  session = await Session.load(DIR, { slots: 2, capacity: 128, prefillChunks: [16], stepsPerSubmit: 8, warmUp: false, compileLimits });
}, 1_800_000);

test('each decode bucket has a split step: one combine kernel more for each of the 2 attention layers', () => {
  const g = session.generator;
  for (const rows of g.decodeRows)
    for (const mode of ['greedy', 'sample'] as const) expect(g.dispatchesPerStep(rows, mode, true)).toBe(g.dispatchesPerStep(rows, mode) + 2);
});

test('greedy ids equal the reference when the step switches to key slices at 24 positions, alone and batched', SLOW, async () => {
  const before = { ...session.counters };
  const g = session.generator;
  for (const [i, ref] of reference.greedy.entries()) {
    // prompts of 10 and 6 tokens, 48 new ones: the first steps run one slice, the later ones 4
    const r = await session.generate(ref.prompt, { maxNewTokens: generated(ref).length }).result();
    expect(r.ids).toEqual(generated(ref));
    expect(r.stats.dispatchesPerDecodeStep).toBe(g.dispatchesPerStep(1, 'greedy', true));
    // nothing warmed at load: the first generation's first runs say which steps ran, in order
    if (i === 0) expect(r.stats.firstRuns).toEqual(['prefill T=16', 'decode rows=1 greedy', 'decode rows=1 greedy split']);
  }
  const [a, b] = reference.greedy as [Greedy, Greedy];
  const [ra, rb] = await Promise.all([a, b].map((ref) => session.generate(ref.prompt, { maxNewTokens: generated(ref).length }).result()));
  expect(ra!.ids).toEqual(generated(a));
  expect(rb!.ids).toEqual(generated(b));
  expect(ra!.stats.dispatchesPerDecodeStep).toBe(g.dispatchesPerStep(2, 'greedy', true));
  const after = session.counters;
  for (const k of ['shaderModules', 'pipelines', 'bindGroups', 'buffers'] as const) expect(after[k] - before[k], k).toBe(0);
});

test('a bucket of more sequences than the rule takes, or caches that never hold its length, get no split step', SLOW, async () => {
  const device = await getSharedDevice();
  const load = (capacity: number, sequences: number) => Session.load(DIR, { slots: 2, capacity, prefillChunks: [16], warmUp: false, compileLimits: { ...compileLimitsOf(device), decodeSplits: { slices: 4, from: 24, sequences } } });
  const one = await load(128, 1);
  try {
    expect(one.generator.dispatchesPerStep(1, 'greedy', true)).toBeGreaterThan(0);
    expect(one.generator.dispatchesPerStep(2, 'greedy')).toBeGreaterThan(0);
    expect(one.generator.dispatchesPerStep(2, 'greedy', true)).toBe(0);
  } finally {
    await one.close();
  }
  const short = await load(24, 2);
  try {
    expect(short.generator.dispatchesPerStep(1, 'greedy')).toBeGreaterThan(0);
    expect(short.generator.dispatchesPerStep(1, 'greedy', true)).toBe(0);
  } finally {
    await short.close();
  }
});

test('ModelRunner.step picks the one-slice decode step below the rule\'s length and the split one from it: greedy ids equal the reference', SLOW, async () => {
  const runner = session.runner;
  const ref = reference.greedy[0]!;
  runner.resetSlot(0);
  const counters = runner.runtime.counters;
  let [logits] = await runner.step([{ slot: 0, tokens: ref.prompt_ids }], 'last', { rows: 1, tokens: 16 });
  const ids: number[] = [];
  const dispatches: number[] = [];
  const argmax = (row: Float32Array) => row.reduce((best, v, i) => (v > row[best]! ? i : best), 0);
  for (let i = 0; i < 24; i++) {
    ids.push(argmax(logits!));
    const before = counters.dispatches;
    [logits] = await runner.step([{ slot: 0, tokens: [ids.at(-1)!] }], 'last', { rows: 1, tokens: 1 });
    dispatches.push(counters.dispatches - before);
  }
  expect(ids).toEqual(generated(ref).slice(0, 24));
  // the prompt's 10 tokens, then steps at 10..33 positions: one slice below 24, 4 slices (a combine kernel for each
  // of the 2 attention layers) from 24
  const split = ref.prompt_ids.length + dispatches.length - 24;
  expect(split).toBeGreaterThan(0);
  const [one, sliced] = [dispatches.slice(0, -split), dispatches.slice(-split)];
  expect(new Set(one).size).toBe(1);
  expect(new Set(sliced).size).toBe(1);
  expect(sliced[0]).toBe(one[0]! + 2);
  runner.resetSlot(0);
});
