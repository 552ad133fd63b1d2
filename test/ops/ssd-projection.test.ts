// The Mamba-2 decode step that computes its own in_proj rows (DeviceLimits.ssdProjection,
// compiler/passes/projectSsdInputs.ts, compiler/lower/ssdStepKernel.ts) against the CPU reference: one decode step
// of the granitemoehybrid fixture over 2 sequences, with 16-bit in_proj weights (packed words, the K loop's fast
// path) and bf16 ones (the emitter's element loads), subgroups on and off (the lanes' sum through shared memory).
import { describe, expect, test } from 'vitest';
import { StepContext } from '../../caches/stepContext.ts';
import { withKvPolicies } from '../../caches/spec.ts';
import type { StorageDType } from '../../compiler/ir.ts';
import { iota, output, trace } from '../../dsl/trace.ts';
import { loadConfig } from '../../models/config.ts';
import { buildModel } from '../../models/registry.ts';
import { expectClose, randomData, runGraphBoth } from '../helpers/gpu.ts';

const SLOTS = 3;
const CAPACITY = 16;

async function decodeStep(storage: StorageDType) {
  const model = buildModel(await loadConfig('test/fixtures/hf/granitemoehybrid'));
  const rows = 2;
  return trace(() => {
    const ctx = new StepContext(withKvPolicies(model.memory(), undefined), { slots: SLOTS, capacity: CAPACITY, maxChunk: 1 }, rows, 1, { storage: (name) => (name.includes('in_proj') ? storage : 'f32') });
    const hidden = model.forward(ctx).reshape(rows, model.hiddenSize);
    const lastRow = ctx.valid.sub(1).add(iota([rows], 0, 'i32'));
    output('logits', model.logits(ctx, hidden.gather(lastRow)));
    ctx.finish();
  });
}

describe('Mamba-2 decode step with its in_proj rows', () => {
  for (const [storage, subgroups] of [['f16', true], ['bf16', false]] as const)
    test(`${storage} weights, subgroups ${subgroups ? 'on' : 'off'}: logits, conv rings and SSM states match the CPU reference`, async () => {
      const graph = await decodeStep(storage);
      const r = await runGraphBoth(graph, (g) => {
        const data = randomData(g, 7, { intHi: SLOTS });
        // sequences in slots 2 and 0, the second a padding row (its states stay as they were)
        data.inputs = { ...data.inputs, tokens: [17, 201], slot_ids: [2, 0], valid: [1, 0] };
        data.states = { ...data.states, pos: [11, 0, 5] };
        return data;
      }, { limits: { ssdProjection: true, subgroups, unroll: false } });
      // each Mamba layer's step computes in_proj: its matvec has no kernel of its own
      expect(r.program.kernels.filter((k) => k.templates.includes('ssdstep/in_proj'))).toHaveLength(3);
      expect(r.program.kernels.filter((k) => k.templates.some((t) => t.startsWith('ssdstep')) && !k.templates.includes('ssdstep/in_proj'))).toHaveLength(0);
      // f32 arithmetic on both sides over the same rounded weights: only the order of the K sums differs
      expectClose(r.gpu.outputs, r.cpu.outputs, { atol: 1e-4, rtol: 1e-4 });
      expectClose(r.gpu.states, r.cpu.states, { atol: 1e-4, rtol: 1e-4 });
    });
});
