// The fused attention kernel against its composition (CPU) on random data, with masks and device limits.
import { expect, test } from 'vitest';
import { input, iota, output } from '../../dsl/trace.ts';
import { attention } from '../../dsl/nn/attention.ts';
import { runBoth, closeness } from '../helpers/gpu.ts';
import { runCpu } from '../../runtime/cpuBackend.ts';
import { trace } from '../../dsl/trace.ts';
import { ndarray } from '../../runtime/ndarray.ts';

function rand(n: number, seed: number): number[] {
  let s = seed;
  return Array.from({ length: n }, () => ((s = (s * 1103515245 + 12345) % 2147483648) / 2147483648) * 2 - 1);
}

// B batch rows, M queries, E keys, D and Dv head sizes. The first shape has one query row per workgroup and keys
// in one round; the second 4 rows a workgroup (M = 8), keys in two rounds of 256 (E = 300), D not a multiple of the
// 16 key elements loaded together and Dv over one pass of 32 lanes (40).
interface Shape { B: number; M: number; E: number; D: number; Dv: number; lens: number[] }
const SHAPES: Shape[] = [
  { B: 3, M: 5, E: 37, D: 16, Dv: 24, lens: [0, 1, 7, 36, 37] }, // includes an empty row (output 0)
  { B: 2, M: 8, E: 300, D: 20, Dv: 40, lens: [300, 257, 256, 0, 33, 1, 299, 200] },
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
test.each([
  [0, 0],
  [5, 0],
  [0, 1],
])('fused attention matches the composition (softcap %d, shape %d)', async (softcap, shapeIndex) => {
  const shape = SHAPES[shapeIndex]!;
  const { B, M, E, D, Dv } = shape;
  const both = await runBoth(() => build(shape, true, softcap), {}, data(shape));
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
