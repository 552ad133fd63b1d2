// Attention over slices of the keys (`attention_split`, flash-decoding: compiler/attentionSplit.ts, the decode
// kernel a workgroup a row and slice) and the slices combined (dsl/nn/attention.ts): the kernel against the op's
// CPU reference, the reference against its composition, and the combined result against one-slice attention. Rows
// with no key, all keys, and fewer keys than slices (some slices empty); GQA rows sharing a K/V batch index; softcap.
import { describe, expect, test } from 'vitest';
import { trace, input, iota, output } from '../../dsl/trace.ts';
import { attention } from '../../dsl/nn/attention.ts';
import { OPS } from '../../compiler/ops.ts';
import { ShapeError } from '../../compiler/ops.ts';
import { composer } from '../../dsl/trace.ts';
import { Tensor } from '../../dsl/tensor.ts';
import { closeness, runBoth, runCpuRef } from '../helpers/gpu.ts';
import { mulberry32 } from '../../base/random.ts';
import { GPU_DECODE_SPLITS, compileLimitsOf, decodeSplitsOf } from '../../runtime/compileLimits.ts';

interface Case { B: number; M: number; E: number; D: number; Dv: number; splits: number; softcap: number; subgroups: boolean }
const CASES: Case[] = [
  { B: 2, M: 4, E: 45, D: 16, Dv: 24, splits: 4, softcap: 0, subgroups: true },
  { B: 3, M: 1, E: 300, D: 18, Dv: 38, splits: 5, softcap: 5, subgroups: false },
];

const mask = ({ B, M, E }: Case) => {
  const len = input('len', [B, M], 'i32');
  return { len, mask: iota([B, M, E], 2, 'i32').lt(len.reshape(B, M, 1)) };
};

function inputs({ B, M, E, D, Dv }: Case): Record<string, number[]> {
  const rand = mulberry32(9);
  const r = (n: number) => Array.from({ length: n }, () => rand() * 2 - 1);
  // an empty row, a full one, one inside the first slice, odd lengths across the keys
  const len = Array.from({ length: B * M }, (_, i) => (i % 5 === 3 ? 0 : i % 5 === 1 ? E : i % 5 === 2 ? 3 : 1 + ((i * 37) % E)));
  return { q: r(B * M * D), kT: r(B * D * E), v: r(B * E * Dv), len };
}

const qkv = ({ B, M, E, D, Dv }: Case) => [input('q', [B, M, D]), input('kT', [B, D, E]), input('v', [B, E, Dv])] as const;

describe.each(CASES.map((c) => [`${c.E} keys in ${c.splits} slices`, c] as const))('attention_split, %s', (_name, c) => {
  test('the kernel (a workgroup a row and slice) writes each slice m, l and acc as the CPU reference', async () => {
    const both = await runBoth(() => {
      const { len, mask: m } = mask(c);
      const [q, kT, v] = qkv(c);
      output('parts', new Tensor(composer.emit('attention_split', [q.node, kT.node, v.node, m.node, len.node], { scale: 0.3, softcap: c.softcap, splits: c.splits })));
    }, {}, { inputs: inputs(c) }, { limits: { subgroups: c.subgroups } });
    expect(both.program.kernels.map((k) => k.templates)).toEqual([['attention/split']]);
    expect(both.program.kernels[0]!.workgroups[0] * both.program.kernels[0]!.workgroups[1]).toBeGreaterThanOrEqual(c.B * c.M * c.splits);
    expect(closeness(both.gpu.outputs.parts!, both.cpu.outputs.parts!, { atol: 1e-5, rtol: 1e-4 })).toBeUndefined();
  });

  test('its CPU reference equals its composition of primitives', () => {
    const build = (fused: boolean) => trace(() => {
      const { len, mask: m } = mask(c);
      const [q, kT, v] = qkv(c);
      const ins = [q.node, kT.node, v.node, m.node, len.node];
      const attrs = { scale: 0.3, softcap: c.softcap, splits: c.splits };
      output('parts', new Tensor(fused ? composer.emit('attention_split', ins, attrs) : OPS.attention_split.decompose(composer, ins, attrs)));
    });
    const data = { inputs: inputs(c) };
    expect(closeness(runCpuRef(build(true), data).outputs.parts!, runCpuRef(build(false), data).outputs.parts!, { atol: 1e-5, rtol: 1e-5 })).toBeUndefined();
  });

  test('the slices combined equal attention over all keys, on both sides', async () => {
    const run = (splits: number) => runBoth(() => {
      const { len, mask: m } = mask(c);
      const [q, kT, v] = qkv(c);
      output('out', attention(q, kT, v, m, len, { scale: 0.3, softcap: c.softcap, splits }));
    }, {}, { inputs: inputs(c) }, { limits: { subgroups: c.subgroups } });
    const [split, whole] = [await run(c.splits), await run(0)];
    expect(split.program.kernels.some((k) => k.templates.includes('attention/split'))).toBe(true);
    expect(closeness(split.cpu.outputs.out!, whole.cpu.outputs.out!, { atol: 1e-6, rtol: 1e-5 })).toBeUndefined();
    expect(closeness(split.gpu.outputs.out!, whole.cpu.outputs.out!, { atol: 1e-5, rtol: 1e-4 })).toBeUndefined();
  });
});

test('more slices than keys are a shape error naming the op', () => {
  expect(() => trace(() => {
    const c = { B: 1, M: 1, E: 5, D: 4, Dv: 4, splits: 6, softcap: 0, subgroups: false };
    const { len, mask: m } = mask(c);
    const [q, kT, v] = qkv(c);
    output('parts', new Tensor(composer.emit('attention_split', [q.node, kT.node, v.node, m.node, len.node], { scale: 1, softcap: 0, splits: 6 })));
  })).toThrow(ShapeError);
});

test('STRATA_ATTN_SPLITS is unset (the adapter\'s choice), 0 (off) or 2 to 64 slices at any length and batch; anything else is one line', () => {
  // the adapter's choice: 8 slices from 512 positions for 1 or 2 sequences on a GPU, one slice on a software adapter
  expect(compileLimitsOf({ limits: {}, features: [] }).decodeSplits).toEqual(GPU_DECODE_SPLITS);
  expect(compileLimitsOf({ limits: {}, features: [], isFallback: true }).decodeSplits).toBe(false);
  expect([undefined, '0', '2', '64'].map(decodeSplitsOf)).toEqual([undefined, false, { slices: 2, from: 0, sequences: Number.MAX_SAFE_INTEGER }, { slices: 64, from: 0, sequences: Number.MAX_SAFE_INTEGER }]);
  for (const bad of ['1', '65', 'four', '2.5']) expect(() => decodeSplitsOf(bad)).toThrow(`STRATA_ATTN_SPLITS must be 0 (off) or a number of key slices from 2 to 64, got '${bad}'`);
});
