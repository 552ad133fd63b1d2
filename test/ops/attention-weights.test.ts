// The attention op's `weights` variant (H2O's scores): each query row's softmax probabilities over the keys after
// its output, written by the fused kernels themselves. Each of the three kernels (decode, one-row, tiled prefill)
// against the op's CPU reference, the reference against the composition, and every row's probabilities summing to
// 1 (0 for a row that sees no key).
import { expect, test } from 'vitest';
import { input, iota, output, trace } from '../../dsl/trace.ts';
import { attention } from '../../dsl/nn/attention.ts';
import { closeness, runBoth } from '../helpers/gpu.ts';
import { runCpu } from '../../runtime/cpuBackend.ts';
import { ndarray } from '../../runtime/ndarray.ts';
import { mulberry32 } from '../../base/random.ts';

// B batch indices, M query rows each, E keys, D and Dv head sizes; kernel: the template the shape selects
// (compiler/passes/lowerToWgsl.ts): decode for <= 15 rows and heads <= 64, tiled from 16 rows, one-row otherwise
// (here a head of 72), or with tiles that do not fit (storage).
interface Case { kernel: string; B: number; M: number; E: number; D: number; Dv: number; softcap: number; subgroups: boolean; storage: number; variant: string }
const CASES: Case[] = [
  { kernel: 'decode', B: 3, M: 5, E: 37, D: 16, Dv: 24, softcap: 0, subgroups: true, storage: 16384, variant: 'decode' },
  { kernel: 'decode, two trips, no subgroups', B: 2, M: 8, E: 300, D: 18, Dv: 38, softcap: 5, subgroups: false, storage: 16384, variant: 'decode' },
  { kernel: 'one-row', B: 2, M: 3, E: 140, D: 72, Dv: 72, softcap: 0, subgroups: true, storage: 16384, variant: 'row' },
  { kernel: 'tiled', B: 2, M: 38, E: 45, D: 16, Dv: 24, softcap: 0, subgroups: true, storage: 8192, variant: 'tiles' },
];

function build({ B, M, E, D, Dv, softcap }: Case, fused: boolean) {
  const len = input('len', [B, M], 'i32');
  const mask = iota([B, M, E], 2, 'i32').lt(len.reshape(B, M, 1));
  output('out', attention(input('q', [B, M, D]), input('kT', [B, D, E]), input('v', [B, E, Dv]), mask, len, { scale: 0.3, softcap, fused, weights: true }));
}

function inputs({ B, M, E, D, Dv }: Case): Record<string, number[]> {
  const rand = mulberry32(11);
  const r = (n: number) => Array.from({ length: n }, () => rand() * 2 - 1);
  // an empty row, a full one, and lengths across the key range (past 256: the decode kernel's second trip)
  const len = Array.from({ length: B * M }, (_, i) => (i % 7 === 3 ? 0 : i % 7 === 1 ? E : 1 + ((i * 37) % E)));
  return { q: r(B * M * D), kT: r(B * D * E), v: r(B * E * Dv), len };
}

test.each(CASES.map((c) => [c.kernel, c] as const))('attention with weights matches the reference (%s)', async (_name, c) => {
  const { B, M, E, D, Dv } = c;
  const data = inputs(c);
  const both = await runBoth(() => build(c, true), {}, { inputs: data }, { limits: { subgroups: c.subgroups, maxComputeWorkgroupStorageSize: c.storage } });
  expect(both.program.kernels.map((k) => k.templates)).toEqual([[`attention/${c.variant}`]]);
  const gpu = both.gpu.outputs.out!;
  expect(gpu.shape).toEqual([B, M, Dv + E]);
  // f32 on both sides, the online softmax summing in another order: the tolerance of the attention tests
  expect(closeness(gpu, both.cpu.outputs.out!, { atol: 1e-5, rtol: 1e-4 })).toBeUndefined();
  for (let row = 0; row < B * M; row++) {
    const probs = [...gpu.data.slice(row * (Dv + E) + Dv, (row + 1) * (Dv + E))];
    const total = probs.reduce((a, p) => a + p, 0);
    expect(total).toBeCloseTo(data.len![row] === 0 ? 0 : 1, 5);
    expect(probs.slice(data.len![row]!).every((p) => p === 0)).toBe(true); // keys past the row's limit weigh 0
  }
  // the composition (the unfused fallback) agrees with the reference on every row that sees a key
  const shapes: Record<string, number[]> = { q: [B, M, D], kT: [B, D, E], v: [B, E, Dv], len: [B, M] };
  const composed = runCpu(trace(() => build(c, false)), { inputs: Object.fromEntries(Object.entries(data).map(([k, v]) => [k, ndarray(shapes[k]!, k === 'len' ? 'i32' : 'f32', v)])) }).out!;
  const ref = both.cpu.outputs.out!.data;
  for (let row = 0; row < B * M; row++) {
    if (data.len![row] === 0) continue;
    for (let i = row * (Dv + E); i < (row + 1) * (Dv + E); i++) expect(Math.abs(composed.data[i]! - ref[i]!)).toBeLessThan(1e-6);
  }
});
