// Fusion guarded by kernel counts (a change that breaks fusion fails here, not only in a benchmark), and text
// snapshots of a graph, a program and a kernel's WGSL so that compiler changes show up as readable diffs.
import { describe, expect, it } from 'vitest';
import { compile } from '../../compiler/compile.ts';
import { compileFn } from '../../dsl/compileFn.ts';
import { type Graph, printGraph } from '../../compiler/ir.ts';
import { OPS } from '../../compiler/ops.ts';
import { printProgram } from '../../compiler/program.ts';
import { simplify } from '../../compiler/passes/simplify.ts';
import { linear, rmsnorm, softmax } from '../../dsl/nn/basic.ts';
import type { Tensor } from '../../dsl/tensor.ts';
import { input, trace, weight } from '../../dsl/trace.ts';
import { expectClose, randomData, runGraphBoth } from '../helpers/gpu.ts';

/** rmsnorm, then the gate and up projections, then silu(gate) * up: the first half of a Llama MLP. */
function gatedMlpInput(tokens: number, dim: number, hidden: number): () => Record<string, Tensor> {
  return () => {
    const h = rmsnorm(input('x', [tokens, dim]), weight('norm', [dim]), 1e-6);
    return { y: linear(h, weight('gate', [hidden, dim])).silu().mul(linear(h, weight('up', [hidden, dim]))) };
  };
}

/** Ten elementwise ops in a chain. */
function chain10(): Record<string, Tensor> {
  const x = input('x', [7, 300]);
  return { y: x.mul(2).add(1).tanh().sub(0.5).abs().sqrt().exp().neg().maximum(-3).div(input('d', [300])) };
}

/** Nodes that get a kernel of their own when fusion is off: compute ops (views, sources, constants and iota are inlined). */
function computeNodes(g: Graph): number {
  return simplify(g).nodes.filter((n) => OPS[n.op].kind !== 'source' && OPS[n.op].kind !== 'view' && n.op !== 'iota').length;
}

async function expectGpuMatchesCpu(g: Graph, options: { fuse?: boolean; limits?: { maxStorageBuffersPerShaderStage: number } } = {}) {
  const res = await runGraphBoth(g, (graph) => randomData(graph, 7, { lo: 0.1, hi: 1 }), options);
  // dot products of 64 terms in [0.1, 1] (CPU in double, GPU in f32) and exp/sqrt/tanh at a few ULP
  expectClose(res.gpu.outputs, res.cpu.outputs, { atol: 1e-5, rtol: 1e-5 });
  return res.program;
}

describe('kernel counts', () => {
  it.each([1, 5])('rmsnorm, two linears and silu(gate) * up fuse into at most 2 kernels (tokens=%i; currently 1)', async (tokens) => {
    const g = trace(gatedMlpInput(tokens, 64, 96));
    const program = compile(g);
    expect(program.kernels.length).toBeLessThanOrEqual(2);
    expect(program.kernels).toHaveLength(1);
    await expectGpuMatchesCpu(g);
  });

  it.each([7, 300])('softmax over the last axis (length %i) is 1 kernel', async (len) => {
    const g = trace(() => ({ y: softmax(input('x', [3, len])) }));
    expect(compile(g).kernels).toHaveLength(1);
    await expectGpuMatchesCpu(g);
  });

  it('an elementwise chain of 10 ops is 1 kernel', async () => {
    const g = trace(chain10);
    expect(g.nodes.filter((n) => OPS[n.op].kind === 'elementwise').length).toBeGreaterThanOrEqual(10);
    expect(compile(g).kernels).toHaveLength(1);
    await expectGpuMatchesCpu(g);
  });

  it.each([
    ['gated MLP', gatedMlpInput(5, 64, 96)],
    ['softmax', () => ({ y: softmax(input('x', [3, 300])) })],
    ['elementwise chain', chain10],
  ] as const)('fuse: false gives one kernel per compute op (%s)', async (_name, fn) => {
    const g = trace(fn);
    const program = compile(g, { fuse: false });
    expect(program.kernels).toHaveLength(computeNodes(g));
    expect(program.kernels.length).toBeGreaterThan(compile(g).kernels.length);
    await expectGpuMatchesCpu(g, { fuse: false });
  });

  it('a kernel that would bind more storage buffers than the adapter allows is split', async () => {
    // nine inputs summed: ten buffers in one kernel, over a limit of 8
    const g = trace(() => {
      const xs = Array.from({ length: 9 }, (_, i) => input(`x${i}`, [13]));
      return { y: xs.reduce((a, b) => a.add(b)) };
    });
    const program = compile(g, { limits: { maxStorageBuffersPerShaderStage: 8 } });
    expect(program.kernels.length).toBeGreaterThan(1);
    for (const k of program.kernels) expect(k.bindings.length).toBeLessThanOrEqual(8);
    await expectGpuMatchesCpu(g, { limits: { maxStorageBuffersPerShaderStage: 8 } });
  });
});

describe('snapshots', () => {
  const softmaxRows = () => ({ y: softmax(input('x', [2, 5])) });

  it('printGraph of a traced softmax', () => {
    expect(printGraph(trace(softmaxRows))).toMatchInlineSnapshot(`
      "%0 = input() {"name":"x"} : f32(2,5)
      %1 = rmax(%0) : f32(2)
      %2 = reshape(%1) {"shape":[2,1]} : f32(2,1)
      %3 = broadcast(%2) {"shape":[2,5]} : f32(2,5)
      %4 = sub(%0, %3) : f32(2,5)
      %5 = exp(%4) : f32(2,5)
      %6 = sum(%5) : f32(2)
      %7 = reshape(%6) {"shape":[2,1]} : f32(2,1)
      %8 = broadcast(%7) {"shape":[2,5]} : f32(2,5)
      %9 = div(%5, %8) : f32(2,5)  -> y"
    `);
  });

  it('printGraph after simplify folds views and shares equal subexpressions', () => {
    const g = trace(() => {
      const x = input('x', [4, 3]);
      return { y: x.T.T.reshape(12).reshape(4, 3).add(0).mul(x.exp()).add(x.exp()) };
    });
    expect(printGraph(simplify(g))).toMatchInlineSnapshot(`
      "%0 = input() {"name":"x"} : f32(4,3)
      %1 = exp(%0) : f32(4,3)
      %2 = mul(%0, %1) : f32(4,3)
      %3 = add(%2, %1) : f32(4,3)  -> y"
    `);
  });

  it('printProgram of an RMSNorm and a linear layer with an f16 weight', () => {
    const program = compileFn(() => {
      const h = rmsnorm(input('x', [2, 32]), weight('norm', [32]), 1e-5);
      return { y: linear(h, weight('w', [8, 32], 'f16')) };
    });
    expect(printProgram(program)).toMatchInlineSnapshot(`
      "program bucket={} kernels=1 buffers=4
        buf0 weight 'w' f16(8,32) 512B
        buf1 input 'x' f32(2,32) 256B
        buf2 weight 'norm' f32(32) 128B
        buf3 output 'y' f32(2,8) 64B
        k0_matvec_matmul wg=32 grid=1x1x1 reads=[buf0,buf1,buf2] writes=[buf3]"
    `);
  });

  it('WGSL of a short softmax: one map kernel, the row max and sum as sequential loops', () => {
    const program = compileFn(softmaxRows);
    expect(program.kernels).toHaveLength(1);
    expect(program.kernels[0]!.wgsl).toMatchInlineSnapshot(`
      "@group(0) @binding(0) var<storage, read_write> buf0: array<f32>;
      @group(0) @binding(1) var<storage, read> buf1: array<f32>;
      const WG: u32 = 32u;
      @compute @workgroup_size(32)
      fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
        let t = (wid.x + wid.y * 1u) * WG + lid;
        if (t >= 10u) { return; }
        let o0 = (t / 5u);
        let o1 = (t % 5u);
        let v0: f32 = buf1[(o0 * 5u + o1)];
        var a1: f32 = bitcast<f32>(0xff7fffffu);
        for (var k2: u32 = 0u; k2 < 5u; k2++) {
          let v3: f32 = buf1[(o0 * 5u + k2)];
          a1 = max(a1, v3);
        }
        let v4: f32 = a1;
        let v5: f32 = (v0 - v4);
        let v6: f32 = exp(v5);
        var a7: f32 = f32(0.00000000);
        for (var k8: u32 = 0u; k8 < 5u; k8++) {
          let v9: f32 = buf1[(o0 * 5u + k8)];
          let v10: f32 = (v9 - v4);
          let v11: f32 = exp(v10);
          a7 = (a7 + v11);
        }
        let v12: f32 = a7;
        let v13: f32 = (v6 / v12);
        buf0[t] = v13;
      }
      "
    `);
  });
});
