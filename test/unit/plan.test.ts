// The op table as the one source of each op's meaning, and the kernel planner's rules as data: compile only, no GPU.
import { expect, test } from 'vitest';
import { compileWithPlan } from '../../compiler/compile.ts';
import type { OpName } from '../../compiler/ir.ts';
import { OPS, type OpDef } from '../../compiler/ops.ts';
import { printKernelPlan } from '../../compiler/passes/planKernels.ts';
import { referenceOf } from '../../compiler/references.ts';
import { input, state, trace } from '../../dsl/trace.ts';

test('every op has a CPU reference in the table; the ops that always get a kernel name its template', () => {
  for (const op of Object.keys(OPS) as OpName[]) {
    const def = OPS[op] as OpDef<never>;
    expect(() => referenceOf(def), op).not.toThrow();
    if (def.kind === 'scatter' || def.kind === 'scan' || def.kind === 'kernel') expect(def.template, op).toBeDefined();
  }
  expect(OPS.attention.decompose).toBeTypeOf('function');
});

test('a long reduction under a scatter gets a buffer by the inlining rule; values read from the state by the in-place rule', () => {
  // rows of 300: the second scatter's 300 values do not fit one workgroup (256), so its values get a buffer
  const g = trace(() => {
    const cache = state('cache', [8, 300]);
    const written = cache.scatter(input('idx', [2], 'i32'), input('x', [2, 300, 64]).sum(-1));
    written.scatter(input('pos', [1], 'i32'), written.slice(0, 0, 1).neg());
  });
  const { plan, steps } = compileWithPlan(g);
  expect(steps.map((s) => [s.rule, s.node.op])).toEqual([
    ['inlining', 'sum'],
    ['in place', 'neg'],
  ]);
  expect(plan.kernels.map((k) => k.mode)).toEqual(['element', 'scatter', 'map', 'scatter']);
  expect(plan.kernels.every((k) => !k.refusal)).toBe(true);
  expect(printKernelPlan(plan, steps)).toContain('rule in place: %');
});

test('a scatter of one workgroup inlines values that read the rows it writes (reads, a barrier, then the writes)', () => {
  const positions = (limits: { oneGroupFusion?: boolean } = {}) =>
    compileWithPlan(trace(() => {
      const pos = state('pos', [4], 'i32');
      const slots = input('slots', [2], 'i32');
      pos.scatter(slots, pos.gather(slots).add(input('valid', [2], 'i32')));
    }), { limits });
  const { plan, steps, program } = positions();
  expect(steps).toEqual([]);
  expect(plan.kernels.map((k) => k.mode)).toEqual(['scatter']);
  expect(program.kernels[0]!.wgsl).toContain('storageBarrier(); // every thread has read the old rows');
  // off: the values get a buffer, a map and a scatter as before
  const off = positions({ oneGroupFusion: false });
  expect(off.steps.map((s) => s.rule)).toEqual(['in place']);
  expect(off.plan.kernels.map((k) => k.mode)).toEqual(['map', 'scatter']);
  // another version of the state shares the buffer being written: its reader always gets a buffer
  const older = compileWithPlan(trace(() => {
    const pos = state('pos', [4], 'i32');
    const slots = input('slots', [2], 'i32');
    const once = pos.scatter(slots, input('valid', [2], 'i32'));
    once.scatter(slots, pos.gather(slots).add(1));
  }));
  expect(older.steps.map((s) => s.rule)).toEqual(['in place']);
});

test('a row kernel whose reduction is indexed along the row gets the element template', () => {
  // per-head normalisation read back as one row: the mean of head j / 32 varies along the row
  const g = trace(() => {
    const x = input('x', [2, 4, 32]);
    return { y: x.div(x.mean(-1, true)).reshape(2, 128) };
  });
  const { plan, steps } = compileWithPlan(g);
  expect(steps).toEqual([]);
  expect(plan.kernels.map((k) => k.mode)).toEqual(['element']);
  // with the heads kept as rows, the row template holds it
  const rows = compileWithPlan(trace(() => {
    const x = input('x', [2, 4, 32]);
    return { y: x.div(x.mean(-1, true)) };
  }));
  expect(rows.plan.kernels.map((k) => k.mode)).toEqual(['row']);
});
