// The fused MLP (`fused_mlp`: compiler/passes/fuseMlp.ts, compiler/lower/mlpKernel.ts) against the CPU reference: one
// batch-1 decode step of the llama fixture with 16-bit MLP weights (f16, bf16) and f32 ones, its loops written out
// (every weight word loaded first, 8 or 16 lanes a row; the GPU's 32 at a hidden size of 256 takes lavapipe minutes to
// compile) and not, subgroups on and off. Each layer's MLP is one kernel
// whose workgroups add their partial sums as fixed point; the next layer and the LM head decode them.
import { describe, expect, test } from 'vitest';
import { readFileSync } from 'node:fs';
import { StepContext } from '../../caches/stepContext.ts';
import { withKvPolicies } from '../../caches/spec.ts';
import type { StorageDType } from '../../compiler/ir.ts';
import { iota, output, trace } from '../../dsl/trace.ts';
import { parseConfig, parseConfigJson } from '../../models/config.ts';
import { buildModel } from '../../models/registry.ts';
import { expectClose, randomData, runGraphBoth } from '../helpers/gpu.ts';

const SLOTS = 2;
const CAPACITY = 16;
const FIXTURE = parseConfigJson(readFileSync('test/fixtures/hf/llama/config.json', 'utf8'), 'config.json') as Record<string, unknown>;

function decodeStep(storage: StorageDType, overrides: Record<string, unknown> = {}) {
  const model = buildModel(parseConfig({ ...FIXTURE, ...overrides }, 'llama.json'));
  return trace(() => {
    const ctx = new StepContext(withKvPolicies(model.memory(), undefined), { slots: SLOTS, capacity: CAPACITY, maxChunk: 1 }, 1, 1, { storage: (name) => (name.includes('mlp') ? storage : 'f32') });
    const hidden = model.forward(ctx).reshape(1, model.hiddenSize);
    output('logits', model.logits(ctx, hidden.gather(ctx.valid.sub(1).add(iota([1], 0, 'i32')))));
    ctx.finish();
  });
}

describe('a batch-1 decode step with fused MLPs', () => {
  // [weights, subgroups, written out, hidden size (the rows' lanes where the words are loaded first: 8 at 64, 16 at 128)]
  const cases = [['f16', true, true, 64], ['bf16', false, true, 128], ['f16', true, true, 128], ['f16', false, false, 64], ['f32', true, true, 64], ['f32', false, false, 128]] as const;
  for (const [storage, subgroups, unroll, hidden] of cases)
    test(`${storage} weights, subgroups ${subgroups ? 'on' : 'off'}${unroll ? ', written out' : ''}, hidden ${hidden}: logits and caches match the CPU reference`, async () => {
      const graph = decodeStep(storage, hidden === 64 ? {} : { hidden_size: hidden });
      const r = await runGraphBoth(graph, (g) => {
        const data = randomData(g, 11, { intHi: SLOTS });
        data.inputs = { ...data.inputs, slot_ids: [1], valid: [1] };
        data.states = { ...data.states, pos: [0, 6] };
        return data;
      }, { limits: { mlpFusion: true, mlpThreads: 1024, subgroups, unroll } });
      const layers = FIXTURE.num_hidden_layers as number;
      expect(r.program.kernels.filter((k) => k.templates.includes('mlp'))).toHaveLength(layers);
      expect(r.program.kernels.filter((k) => k.templates.includes('matvec') && k.ops.includes('silu'))).toHaveLength(0);
      // f32 arithmetic on both sides over the same rounded weights: the order of the sums differs, and the fixed
      // point rounds each partial to 2^-33
      expectClose(r.gpu.outputs, r.cpu.outputs, { atol: 1e-4, rtol: 1e-4 });
      expectClose(r.gpu.states, r.cpu.states, { atol: 1e-4, rtol: 1e-4 });
    });
});
