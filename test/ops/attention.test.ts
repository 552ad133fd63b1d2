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

// B batch rows, M queries, E keys (E not a multiple of the workgroup), D and Dv head sizes
const [B, M, E, D, Dv] = [3, 5, 37, 16, 24];

function build(fused: boolean, softcap = 0) {
  const q = input('q', [B, M, D]);
  const kT = input('kT', [B, D, E]);
  const v = input('v', [B, E, Dv]);
  const len = input('len', [B, M], 'i32');
  // causal-style mask from a per-row length: key c is visible when c < len
  const mask = iota([B, M, E], 2, 'i32').lt(len.reshape(B, M, 1));
  output('out', attention(q, kT, v, mask, len, { scale: 0.3, softcap, fused }));
}

const data = {
  inputs: {
    q: rand(B * M * D, 1),
    kT: rand(B * D * E, 2),
    v: rand(B * E * Dv, 3),
    len: Array.from({ length: B * M }, (_, i) => [0, 1, 7, 36, 37][i % 5]!), // includes an empty row (output 0)
  },
};

// f32 on both sides; an online softmax sums in a different order than the reference: 1e-5.
test.each([0, 5])('fused attention matches the composition (softcap %d)', async (softcap) => {
  const both = await runBoth(() => build(true, softcap), {}, data);
  expect(closeness(both.gpu.outputs.out!, both.cpu.outputs.out!, { atol: 1e-5, rtol: 1e-4 })).toBeUndefined();
  const composed = runCpu(trace(() => build(false, softcap)), {
    inputs: Object.fromEntries(Object.entries(data.inputs).map(([k, v]) => [k, ndarray(k === 'q' ? [B, M, D] : k === 'kT' ? [B, D, E] : k === 'v' ? [B, E, Dv] : [B, M], k === 'len' ? 'i32' : 'f32', v)])),
  });
  // rows with no visible key: the kernel returns 0, the composition a uniform average; compare the others
  const fused = both.gpu.outputs.out!.data;
  const ref = composed.out!.data;
  for (let r = 0; r < B * M; r++) {
    if (data.inputs.len[r] === 0) continue;
    for (let d = 0; d < Dv; d++) expect(Math.abs(fused[r * Dv + d]! - ref[r * Dv + d]!)).toBeLessThan(1e-5);
  }
  expect(both.program.kernels.filter((k) => k.name.includes('attention'))).toHaveLength(1);
});
