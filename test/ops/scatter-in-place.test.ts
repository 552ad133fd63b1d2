// A scatter of one workgroup whose values read the rows it overwrites (the position update pos[slot] += valid, a
// row move) is one kernel: every thread reads, a barrier, then the writes, so every read sees the old state as with
// a kernel for the values and one for the writes. Such a kernel then shares a dispatch with a larger-workgroup
// kernel (passes/groupKernels.ts). Exact results against the CPU reference, and the same with the rule off.
import { describe, expect, it } from 'vitest';
import { linear } from '../../dsl/nn/basic.ts';
import { input, state, trace, weight } from '../../dsl/trace.ts';
import { type RunData, expectClose, rng, runGraphBoth, uniform } from '../helpers/gpu.ts';

const ROWS = 6;
const WIDTH = 40;

/** Positions advanced by slot (a duplicated slot adds the same count twice: both writes are old + 3) and two cache rows swapped. */
const inPlace = () =>
  trace(() => {
    const pos = state('pos', [ROWS], 'i32');
    const slots = input('slots', [4], 'i32');
    pos.scatter(slots, pos.gather(slots).add(input('valid', [4], 'i32')));
    const cache = state('cache', [ROWS, WIDTH]);
    const rows = input('dst', [2], 'i32');
    cache.scatter(rows, cache.gather(input('src', [2], 'i32')));
  });

/** The position update beside a matvec of a larger workgroup, as after a decode step's LM head. */
const besideMatvec = () =>
  trace(() => {
    const pos = state('pos', [ROWS], 'i32');
    const slots = input('slots', [4], 'i32');
    pos.scatter(slots, pos.gather(slots).add(input('valid', [4], 'i32')));
    return { logits: linear(input('x', [1, 512]), weight('w', [96, 512])) };
  });

function data(seed: number): RunData {
  const r = rng(seed);
  return {
    // slot 2 twice, one past the last row (dropped)
    inputs: { slots: [2, 0, 2, ROWS], valid: [3, 1, 3, 4], dst: [1, 4], src: [4, 1], x: uniform(r, 512, -1, 1) },
    weights: { w: uniform(r, 96 * 512, -1, 1) },
    states: { pos: uniform(r, ROWS, 0, 100, 'i32'), cache: uniform(r, ROWS * WIDTH, -1, 1) },
  };
}

describe.each([true, false])('oneGroupFusion %s', (oneGroupFusion) => {
  it('a scatter reading the rows it writes sees the old state', async () => {
    const res = await runGraphBoth(inPlace(), data(1), { limits: { oneGroupFusion } });
    expectClose(res.gpu.states, res.cpu.states, { atol: 0, rtol: 0 });
    const init = data(1).states!;
    // the CPU reference itself: slot 2 advanced once by 3, rows 1 and 4 swapped
    expect(res.cpu.states.pos!.data[2]).toBe((init.pos as number[])[2]! + 3);
    expect(res.cpu.states.cache!.data[WIDTH]).toBe((init.cache as number[])[4 * WIDTH]);
    // one kernel per scatter (a map and a scatter each with the rule off), grouped into dispatches
    expect(res.program.kernels.flatMap((k) => k.templates).sort()).toEqual(oneGroupFusion ? ['scatter', 'scatter'] : ['map', 'map', 'scatter', 'scatter']);
    expect(res.program.kernels.some((k) => k.wgsl.includes('storageBarrier()'))).toBe(oneGroupFusion);
  });

  it('the position update shares the dispatch of a matvec of a larger workgroup', async () => {
    const res = await runGraphBoth(besideMatvec(), data(2), { limits: { oneGroupFusion } });
    expectClose(res.gpu.states, res.cpu.states, { atol: 0, rtol: 0 });
    // dot products of 512 terms in [-1, 1], f32 against double
    expectClose(res.gpu.outputs, res.cpu.outputs, { atol: 1e-4, rtol: 1e-5 });
    const sizes = res.program.kernels.map((k) => k.workgroupSize);
    if (oneGroupFusion) {
      expect(res.program.kernels).toHaveLength(1);
      expect(sizes[0]).toBeGreaterThan(32);
    } else expect(res.program.kernels.length).toBeGreaterThan(1);
  });
});
