// The fused attention kernel against its composition (CPU) on random data, with masks and device limits.
import { expect, test } from 'vitest';
import { input, iota, output, state } from '../../dsl/trace.ts';
import { attention } from '../../dsl/nn/attention.ts';
import { runBoth, closeness } from '../helpers/gpu.ts';
import { runCpu } from '../../runtime/cpuBackend.ts';
import { trace } from '../../dsl/trace.ts';
import { ndarray } from '../../runtime/ndarray.ts';

function rand(n: number, seed: number): number[] {
  let s = seed;
  return Array.from({ length: n }, () => ((s = (s * 1103515245 + 12345) % 2147483648) / 2147483648) * 2 - 1);
}

// B batch rows, M queries, E keys, D and Dv head sizes. The first two shapes have few rows per batch index and take
// the decode kernel (compiler/lower/attentionDecode.ts): the first keys in one trip, the second in two trips of 256
// (E = 300) with D and Dv no multiples of the 4 lanes that share a key (18, 38) and value dimensions in two combine
// passes. The third has more rows (M = 20) and takes a many-row kernel (attentionPrefillKernel.ts or attentionKernel.ts).
interface Shape { B: number; M: number; E: number; D: number; Dv: number; lens: number[] }
const SHAPES: Shape[] = [
  { B: 3, M: 5, E: 37, D: 16, Dv: 24, lens: [0, 1, 7, 36, 37] }, // includes an empty row (output 0)
  { B: 2, M: 8, E: 300, D: 18, Dv: 38, lens: [300, 257, 256, 0, 33, 1, 299, 200] },
  { B: 1, M: 20, E: 140, D: 20, Dv: 8, lens: [140, 129, 128, 0, 33] },
];

function build({ B, M, E, D, Dv }: Shape, fused: boolean, softcap = 0) {
  const q = input('q', [B, M, D]);
  const kT = input('kT', [B, D, E]);
  const v = input('v', [B, E, Dv]);
  const len = input('len', [B, M], 'i32');
  // causal-style mask from a per-row length: key c is visible when c < len
  const mask = iota([B, M, E], 2, 'i32').lt(len.reshape(B, M, 1));
  output('out', attention(q, kT, v, mask, len, { scale: 0.3, softcap, fused }));
}

const data = ({ B, M, E, D, Dv, lens }: Shape) => ({
  inputs: {
    q: rand(B * M * D, 1),
    kT: rand(B * D * E, 2),
    v: rand(B * E * Dv, 3),
    len: Array.from({ length: B * M }, (_, i) => lens[i % lens.length]!),
  },
});

// f32 on both sides; an online softmax sums in a different order than the reference: 1e-5.
// Subgroups on and off: the decode kernel adds partial dot products by subgroup shuffles or through shared memory.
test.each([
  [0, 0, true],
  [5, 0, false],
  [0, 1, true],
  [0, 1, false],
  [0, 2, true],
])('fused attention matches the composition (softcap %d, shape %d, subgroups %s)', async (softcap, shapeIndex, subgroups) => {
  const shape = SHAPES[shapeIndex]!;
  const { B, M, E, D, Dv } = shape;
  const both = await runBoth(() => build(shape, true, softcap), {}, data(shape), { limits: { subgroups } });
  expect(closeness(both.gpu.outputs.out!, both.cpu.outputs.out!, { atol: 1e-5, rtol: 1e-4 })).toBeUndefined();
  const inputs = data(shape).inputs;
  const composed = runCpu(trace(() => build(shape, false, softcap)), {
    inputs: Object.fromEntries(Object.entries(inputs).map(([k, v]) => [k, ndarray(k === 'q' ? [B, M, D] : k === 'kT' ? [B, D, E] : k === 'v' ? [B, E, Dv] : [B, M], k === 'len' ? 'i32' : 'f32', v)])),
  });
  // rows with no visible key: the kernel returns 0, the composition a uniform average; compare the others
  const fused = both.gpu.outputs.out!.data;
  const ref = composed.out!.data;
  for (let r = 0; r < B * M; r++) {
    if (inputs.len[r] === 0) continue;
    for (let d = 0; d < Dv; d++) expect(Math.abs(fused[r * Dv + d]! - ref[r * Dv + d]!)).toBeLessThan(1e-5);
  }
  expect(both.program.kernels.filter((k) => k.name.includes('attention'))).toHaveLength(1);
});

// A decode step's cache writes: the K and V scatters of the step's rows are absorbed by the decode attention kernel
// that reads them (compiler/passes/absorbScatters.ts), so the step is one dispatch; outputs and the written caches
// match the CPU exactly as the separate kernels did (f32, the same tolerance as above).
test('the K/V scatters of a decode step run inside the attention kernel', async () => {
  const [B, M, E, D] = [2, 3, 24, 8];
  const pos = [5, 23];
  const build = () => {
    const slotRow = iota([B], 0, 'i32').mul(E).add(input('pos', [B], 'i32'));
    const k = state('k', [B * E, D]).scatter(slotRow, input('kNew', [B, D]).mul(2));
    const v = state('v', [B * E, D]).scatter(slotRow, input('vNew', [B, D]).neg());
    const len = input('pos', [B], 'i32').add(1).reshape(B, 1).broadcastTo([B, M]);
    const mask = iota([B, M, E], 2, 'i32').lt(len.reshape(B, M, 1));
    const kT = k.reshape(B, E, D).transpose(1, 2);
    output('out', attention(input('q', [B, M, D]), kT, v.reshape(B, E, D), mask, len, { scale: 0.3 }));
  };
  const both = await runBoth(build, {}, {
    inputs: { q: rand(B * M * D, 4), kNew: rand(B * D, 5), vNew: rand(B * D, 6), pos },
    states: { k: rand(B * E * D, 7), v: rand(B * E * D, 8) },
  });
  expect(both.program.kernels.map((k) => k.name)).toEqual(['k0_attention_attention']);
  expect(closeness(both.gpu.outputs.out!, both.cpu.outputs.out!, { atol: 1e-5, rtol: 1e-4 })).toBeUndefined();
  for (const name of ['k', 'v']) expect(closeness(both.gpu.states[name]!, both.cpu.states[name]!, { atol: 0, rtol: 0 })).toBeUndefined();
});
