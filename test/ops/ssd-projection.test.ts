// The Mamba-2 decode step that computes its own in_proj rows (DeviceLimits.ssdProjection,
// compiler/passes/projectSsdInputs.ts, compiler/lower/ssdStepKernel.ts) against the CPU reference: one decode step
// of the granitemoehybrid fixture over 2 sequences, with 16-bit in_proj weights (f16 and bf16: a lane reads u32x4s of
// packed pairs, projectRows.ts's vectorSteps), subgroups on and off (the lanes' sum through shared memory).
import { describe, expect, test } from 'vitest';
import { StepContext } from '../../caches/stepContext.ts';
import { withKvPolicies } from '../../caches/spec.ts';
import type { StorageDType } from '../../compiler/ir.ts';
import { iota, output, trace } from '../../dsl/trace.ts';
import { readFileSync } from 'node:fs';
import { parseConfig, parseConfigJson } from '../../models/config.ts';
import { buildModel } from '../../models/registry.ts';
import { expectClose, randomData, runGraphBoth } from '../helpers/gpu.ts';

const SLOTS = 3;
const CAPACITY = 16;

const FIXTURE = parseConfigJson(readFileSync('test/fixtures/hf/granitemoehybrid/config.json', 'utf8'), 'config.json') as Record<string, unknown>;
// heads of 32 x 128 state (granite4h's shape): a head's rows split over 2 workgroups (ssdStepKernel.ts ELEMENTS_PER_THREAD)
const SPLIT_HEADS = { mamba_d_head: 32, mamba_n_heads: 4, mamba_d_state: 128 };

function decodeStep(storage: StorageDType, overrides: Record<string, unknown> = {}) {
  const model = buildModel(parseConfig({ ...FIXTURE, ...overrides }, 'granitemoehybrid.json'));
  const rows = 2;
  return trace(() => {
    const ctx = new StepContext(withKvPolicies(model.memory(), undefined), { slots: SLOTS, capacity: CAPACITY, maxChunk: 1 }, rows, 1, { storage: (name) => (name.includes('in_proj') ? storage : 'f32') });
    const hidden = model.forward(ctx).reshape(rows, model.hiddenSize);
    const lastRow = ctx.valid.sub(1).add(iota([rows], 0, 'i32'));
    output('logits', model.logits(ctx, hidden.gather(lastRow)));
    ctx.finish();
  });
}

/** Runs one decode step on both sides: sequences in slots 2 and 0, the second a padding row (its states stay). */
async function check(graph: ReturnType<typeof decodeStep>, subgroups: boolean, unroll: boolean, ssdProjection: true | 'heads', wide = false) {
  const r = await runGraphBoth(graph, (g) => {
    const data = randomData(g, 7, { intHi: SLOTS });
    data.inputs = { ...data.inputs, tokens: [17, 201], slot_ids: [2, 0], valid: [1, 0] };
    data.states = { ...data.states, pos: [11, 0, 5] };
    return data;
  }, { limits: { ssdProjection, subgroups, unroll, ...(wide ? { ssdThreads: 1024 } : {}) } });
  // each Mamba layer's step computes in_proj: its matvec has no kernel of its own
  expect(r.program.kernels.filter((k) => k.templates.includes('ssdstep/in_proj'))).toHaveLength(3);
  expect(r.program.kernels.filter((k) => k.templates.some((t) => t.startsWith('ssdstep')) && !k.templates.includes('ssdstep/in_proj'))).toHaveLength(0);
  // f32 arithmetic on both sides over the same rounded weights: only the order of the K sums differs
  expectClose(r.gpu.outputs, r.cpu.outputs, { atol: 1e-4, rtol: 1e-4 });
  expectClose(r.gpu.states, r.cpu.states, { atol: 1e-4, rtol: 1e-4 });
}

describe('Mamba-2 decode step with its in_proj rows', () => {
  // unroll: the GPU's K loop (4 steps a trip) as well as the software adapter's; split: granite4h's head shape
  // 'heads' (STRATA_SSD_PROJECTION=heads): the same head shape in one workgroup a head
  const cases = [['f16', true, false, false, true], ['bf16', false, false, false, true], ['f16', true, false, true, true], ['f16', true, true, false, true], ['f16', false, false, true, 'heads']] as const;
  for (const [storage, subgroups, unroll, split, mode] of cases)
    test(`${storage} weights, subgroups ${subgroups ? 'on' : 'off'}${unroll ? ', unrolled' : ''}${split ? (mode === 'heads' ? ', whole heads of 32 x 128' : ', heads split over workgroups') : ''}: logits, conv rings and SSM states match the CPU reference`, () => {
      const graph = decodeStep(storage, split ? SPLIT_HEADS : {});
      return check(graph, subgroups, unroll, mode);
    });
  // workgroups of 1024 threads (DeviceLimits.ssdThreads, the GPU default): a head's 32 x 128 state, 4 elements a
  // thread; hidden 256: 4 K trips, each workgroup's loop starting at one of its own
  test('f16 weights, whole heads in workgroups of 1024 threads, K loops rotated: logits, conv rings and SSM states match the CPU reference', () => check(decodeStep('f16', { ...SPLIT_HEADS, mamba_n_heads: 16, hidden_size: 256 }), true, true, 'heads', true));
});
