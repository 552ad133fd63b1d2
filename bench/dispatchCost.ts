// `bench dispatch-cost`: what one dispatch costs on this adapter, apart from its kernel: host time to record it and
// GPU time per dispatch of trivial kernels submitted back to back, dependent (one buffer: Dawn puts a barrier
// between them) or independent, 8 pipelines alternating or one. The floor under every decode step's dispatch count.
import { getSharedDevice } from '../runtime/device.ts';

const N = 191; // granite4h-350m-like's decode dispatches

export async function dispatchCostBench(): Promise<void> {
  const device = (await getSharedDevice()).device;
  const mod = device.createShaderModule({ code: `@group(0) @binding(0) var<storage, read_write> b: array<f32>; @group(0) @binding(1) var<storage, read> c: array<f32>;
@compute @workgroup_size(64) fn main(@builtin(global_invocation_id) g: vec3<u32>) { if (g.x < 64u) { b[g.x] = b[g.x] + c[g.x]; } }` });
  const bgl = device.createBindGroupLayout({ entries: [
    { binding: 0, visibility: GPUShaderStage.COMPUTE, buffer: { type: 'storage' } },
    { binding: 1, visibility: GPUShaderStage.COMPUTE, buffer: { type: 'read-only-storage' } },
  ] });
  const layout = device.createPipelineLayout({ bindGroupLayouts: [bgl] });
  const pipelines = Array.from({ length: 8 }, () => device.createComputePipeline({ layout, compute: { module: mod, entryPoint: 'main' } }));
  const buffer = () => device.createBuffer({ size: 256, usage: GPUBufferUsage.STORAGE });
  const input = buffer();
  const bindGroup = (b: GPUBuffer) => device.createBindGroup({ layout: bgl, entries: [{ binding: 0, resource: { buffer: b } }, { binding: 1, resource: { buffer: input } }] });
  const shared = bindGroup(buffer());
  const own = Array.from({ length: N }, () => bindGroup(buffer()));
  const record = (dependent: boolean, onePipeline: boolean): GPUCommandBuffer => {
    const enc = device.createCommandEncoder();
    const pass = enc.beginComputePass();
    for (let i = 0; i < N; i++) {
      if (!onePipeline || i === 0) pass.setPipeline(pipelines[i % 8]!);
      pass.setBindGroup(0, dependent ? shared : own[i]!);
      pass.dispatchWorkgroups(1);
    }
    pass.end();
    return enc.finish();
  };
  for (const dependent of [true, false]) for (const onePipeline of [false, true]) {
    let host = Infinity;
    let gpu = Infinity;
    for (let round = 0; round < 6; round++) {
      const steps = 100;
      const t0 = performance.now();
      const recorded = Array.from({ length: steps }, () => record(dependent, onePipeline));
      host = Math.min(host, (performance.now() - t0) / steps);
      const t1 = performance.now();
      device.queue.submit(recorded);
      await device.queue.onSubmittedWorkDone();
      gpu = Math.min(gpu, (performance.now() - t1) / steps);
    }
    const perDispatch = (ms: number) => `${((ms * 1000) / N).toFixed(2)} us`;
    console.log(`${dependent ? 'dependent  ' : 'independent'} ${onePipeline ? 'one pipeline' : '8 pipelines '}: host records ${perDispatch(host)} a dispatch, GPU runs ${perDispatch(gpu)} a dispatch (${N} a step, best of 6 x 100 steps)`);
  }
}
