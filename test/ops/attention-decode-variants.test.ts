// The decode attention kernel's variants (compiler/lower/attentionDecodeVariants.ts, STRATA_ATTN_DECODE) against
// the op's CPU reference: the shapes of attention.test.ts (odd key counts, heads no multiple of the lanes, two trips),
// a sliding-window mask, several query rows sharing one K/V batch index (GQA), softcap and the `weights` output.
import { afterEach, expect, test } from 'vitest';
import { input, iota, output } from '../../dsl/trace.ts';
import { attention } from '../../dsl/nn/attention.ts';
import { closeness, runBoth } from '../helpers/gpu.ts';
import { mulberry32 } from '../../base/random.ts';
import { parseAttentionDecode } from '../../compiler/lower/attentionDecodeVariants.ts';
import { compileLimitsOf } from '../../runtime/compileLimits.ts';

// B K/V batch indices, M query rows each (the query heads of a KV head), E keys, D and Dv head sizes; window: keys
// visible are (len - window, len) when set (a sliding window), else [0, len)
interface Case { variant: string; B: number; M: number; E: number; D: number; Dv: number; softcap: number; subgroups: boolean; weights: boolean; window?: number }
const CASES: Case[] = [
  // contiguous runs a lane, two trips of keys, partial lanes (18 and 38 are no multiples of 8), on lavapipe's
  // subgroups (smaller than nothing here: the group's shuffles) and through shared memory
  { variant: 'vec', B: 2, M: 8, E: 300, D: 18, Dv: 38, softcap: 5, subgroups: true, weights: true },
  { variant: 'vec:loads=64', B: 3, M: 5, E: 37, D: 16, Dv: 24, softcap: 0, subgroups: false, weights: false, window: 9 },
  { variant: 'sector:loads=64', B: 3, M: 5, E: 37, D: 16, Dv: 24, softcap: 0, subgroups: true, weights: true, window: 9 },
  // (fewer loads a trip where the first case has covered several keys a trip: lavapipe's compile time)
  // a group wider than any subgroup here (the run-time branch's shared path), one element a lane or none
  { variant: 'lanes:lanes=32,wg=64,loads=8', B: 2, M: 4, E: 45, D: 18, Dv: 20, softcap: 0, subgroups: true, weights: false },
  // 512 threads: the value combine in passes of 4 accumulators (10 a lane: passes of 4, 4, 2)
  { variant: 'vec:lanes=4,wg=512', B: 1, M: 3, E: 29, D: 20, Dv: 38, softcap: 0, subgroups: true, weights: true },
];

function build({ B, M, E, D, Dv, softcap, weights, window }: Case) {
  const len = input('len', [B, M], 'i32');
  const c = iota([B, M, E], 2, 'i32');
  const upTo = len.reshape(B, M, 1);
  const mask = window === undefined ? c.lt(upTo) : c.lt(upTo).and(c.gt(upTo.sub(window + 1)));
  output('out', attention(input('q', [B, M, D]), input('kT', [B, D, E]), input('v', [B, E, Dv]), mask, len, { scale: 0.3, softcap, weights }));
}

function inputs({ B, M, E, D, Dv }: Case): Record<string, number[]> {
  const rand = mulberry32(5);
  const r = (n: number) => Array.from({ length: n }, () => rand() * 2 - 1);
  // an empty row, a full one, odd lengths across the key range
  const len = Array.from({ length: B * M }, (_, i) => (i % 7 === 3 ? 0 : i % 7 === 1 ? E : 1 + ((i * 37) % E)));
  return { q: r(B * M * D), kT: r(B * D * E), v: r(B * E * Dv), len };
}

test.each(CASES.map((c) => [c.variant, c.subgroups, c] as const))('decode attention variant %s matches the reference (subgroups %s)', async (_name, _sg, c) => {
  const both = await runBoth(() => build(c), {}, { inputs: inputs(c) }, { limits: { subgroups: c.subgroups, attentionDecode: parseAttentionDecode(c.variant) } });
  expect(both.program.kernels.map((k) => k.templates)).toEqual([['attention/decode']]);
  // f32 on both sides, the online softmax summing in another order: the tolerance of the attention tests
  expect(closeness(both.gpu.outputs.out!, both.cpu.outputs.out!, { atol: 1e-5, rtol: 1e-4 })).toBeUndefined();
});

afterEach(() => {
  delete process.env.STRATA_ATTN_DECODE;
});

test('STRATA_ATTN_DECODE picks the variant and its constants; anything else is one line', () => {
  const profile = { limits: {}, features: [] };
  // unset: 'sector' on a GPU, 'lanes' on a software adapter
  expect(compileLimitsOf(profile).attentionDecode).toEqual({ lanes: 8, loads: 128, wg: 256, order: 'strided', clamp: 'limit' });
  expect(compileLimitsOf({ ...profile, isFallback: true }).attentionDecode).toEqual({ lanes: 4, loads: 128, wg: 256, order: 'strided', clamp: 'capacity' });
  process.env.STRATA_ATTN_DECODE = 'lanes:loads=64,order=blocked,clamp=limit';
  expect(compileLimitsOf(profile).attentionDecode).toEqual({ lanes: 4, loads: 64, wg: 256, order: 'blocked', clamp: 'limit' });
  process.env.STRATA_ATTN_DECODE = 'fast';
  expect(() => compileLimitsOf(profile)).toThrow(/^STRATA_ATTN_DECODE must be one of lanes, sector, vec, optionally with :lanes=1\.\.32,.*; unknown variant 'fast' in 'fast'$/);
  process.env.STRATA_ATTN_DECODE = 'vec:lanes=3';
  expect(() => compileLimitsOf(profile)).toThrow(/lanes '3' in 'vec:lanes=3'$/);
});
