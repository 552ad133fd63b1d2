// The decode attention kernel that projects its own q/k/v and writes its KV cache rows (DeviceLimits
// .attentionProjection, compiler/passes/planProjections.ts, compiler/lower/attentionProjection.ts) against the CPU
// reference: one decode step of the llama fixture (hidden 64, 4 heads of 16, 2 KV heads) over 2 sequences, with
// 16-bit weights (f16 and bf16: a lane reads u32x4s of packed pairs) and block-quantized ones (q8, q4: a lane decodes
// one packed word of 4 or 8 elements a step), subgroups on and off (the lanes' sum through shared memory).
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
  const model = buildModel(await loadConfig('test/fixtures/hf/llama'));
  const rows = 2;
  return trace(() => {
    const ctx = new StepContext(withKvPolicies(model.memory(), undefined), { slots: SLOTS, capacity: CAPACITY, maxChunk: 1 }, rows, 1, { storage: (name) => (name.includes('proj') ? storage : 'f32') });
    const hidden = model.forward(ctx).reshape(rows, model.hiddenSize);
    const lastRow = ctx.valid.sub(1).add(iota([rows], 0, 'i32'));
    output('logits', model.logits(ctx, hidden.gather(lastRow)));
    ctx.finish();
  });
}

describe('decode attention with its q/k/v projection', () => {
  // unroll: the GPU's K loop (4 steps a trip) as well as the software adapter's
  for (const [storage, subgroups, unroll] of [['f16', true, false], ['bf16', false, false], ['f16', true, true], ['q8', true, true], ['q4', false, false]] as const)
    test(`${storage} weights, subgroups ${subgroups ? 'on' : 'off'}${unroll ? ', unrolled' : ''}: logits and KV caches match the CPU reference`, async () => {
      const graph = await decodeStep(storage);
      const r = await runGraphBoth(graph, (g) => {
        const data = randomData(g, 7, { intHi: SLOTS });
        // sequences in slots 2 and 0 at positions 5 and 11: each workgroup reads the rows its own step writes
        data.inputs = { ...data.inputs, tokens: [17, 201], slot_ids: [2, 0], valid: [1, 1] };
        data.states = { ...data.states, pos: [11, 0, 5] };
        return data;
      }, { limits: { attentionProjection: true, subgroups, unroll } });
      // each layer's attention computes its projections: q/k/v matvecs and cache scatters have no kernel of their own
      const fused = r.program.kernels.filter((k) => k.templates.includes('attention/decode+qkv'));
      expect(fused).toHaveLength(2);
      // a lane's elements a step: 8 of a u32x4 of 16-bit pairs, a q8 word's 4, a q4 word's 8
      const perLane = storage === 'q8' ? 4 : 8;
      expect(fused[0]!.wgsl).toContain(`for (var pq: u32 = (pj_lane * ${perLane}u);`);
      // f32 arithmetic on both sides over the same rounded weights: only the order of the K sums differs
      expectClose(r.gpu.outputs, r.cpu.outputs, { atol: 1e-4, rtol: 1e-4 });
      expectClose(r.gpu.states, r.cpu.states, { atol: 1e-4, rtol: 1e-4 });
    });
});
