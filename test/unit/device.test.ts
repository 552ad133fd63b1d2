// The real WebGPU adapter (lavapipe on machines without a GPU): limits requested, a compute shader round trip.
import { describe, expect, it } from 'vitest';
import { describeDevice, getSharedDevice, subgroupMatrixOf, takeUncapturedErrors } from '../../runtime/device.ts';
import { limitsShortfall } from '../../compiler/aotModule.ts';
import { DEFAULT_LIMITS } from '../../compiler/compile.ts';

describe('acquireDevice', () => {
  it('returns a device with the adapter limits the compiler schedules against', async () => {
    const strataDevice = await getSharedDevice();
    const { device, limits, features } = strataDevice;

    expect(limits.maxStorageBuffersPerShaderStage).toBeGreaterThanOrEqual(8);
    expect(limits.maxStorageBufferBindingSize).toBeGreaterThanOrEqual(128 * 1024 * 1024);
    expect(limits.maxComputeInvocationsPerWorkgroup).toBeGreaterThanOrEqual(256);
    // Requested explicitly, so the device has what the record says, not WebGPU's defaults.
    expect(device.limits.maxStorageBufferBindingSize).toBe(limits.maxStorageBufferBindingSize);
    expect(device.limits.maxBufferSize).toBe(limits.maxBufferSize);
    expect(features).toEqual([...device.features].sort());
    expect(typeof GPUBufferUsage.STORAGE).toBe('number');
    expect(describeDevice(strataDevice)).toContain('maxStorageBufferBindingSize');
    expect(await getSharedDevice()).toBe(strataDevice);
  });

  it('runs a compute shader that writes 1..n into a storage buffer and reads it back', async () => {
    const strataDevice = await getSharedDevice();
    const { device } = strataDevice;
    const count = 1000; // not a multiple of the workgroup size
    const workgroupSize = 64;
    const shader = device.createShaderModule({
      code: /* wgsl */ `
        @group(0) @binding(0) var<storage, read_write> values: array<u32>;
        @compute @workgroup_size(${workgroupSize})
        fn main(@builtin(global_invocation_id) id: vec3u) {
          if (id.x < arrayLength(&values)) { values[id.x] = id.x + 1u; }
        }`,
    });
    const byteSize = count * 4;
    const storage = device.createBuffer({ size: byteSize, usage: GPUBufferUsage.STORAGE | GPUBufferUsage.COPY_SRC });
    const readback = device.createBuffer({ size: byteSize, usage: GPUBufferUsage.MAP_READ | GPUBufferUsage.COPY_DST });

    device.pushErrorScope('validation');
    const pipeline = device.createComputePipeline({ layout: 'auto', compute: { module: shader, entryPoint: 'main' } });
    const bindGroup = device.createBindGroup({
      layout: pipeline.getBindGroupLayout(0),
      entries: [{ binding: 0, resource: { buffer: storage } }],
    });
    const encoder = device.createCommandEncoder();
    const pass = encoder.beginComputePass();
    pass.setPipeline(pipeline);
    pass.setBindGroup(0, bindGroup);
    pass.dispatchWorkgroups(Math.ceil(count / workgroupSize));
    pass.end();
    encoder.copyBufferToBuffer(storage, 0, readback, 0, byteSize);
    device.queue.submit([encoder.finish()]);
    expect(await device.popErrorScope()).toBeNull();

    await readback.mapAsync(GPUMapMode.READ);
    const values = new Uint32Array(readback.getMappedRange().slice(0));
    readback.unmap();
    storage.destroy();
    readback.destroy();

    expect(values).toEqual(Uint32Array.from({ length: count }, (_, index) => index + 1));
    expect(takeUncapturedErrors(strataDevice)).toEqual([]);
  });

  it('records errors that no error scope caught', async () => {
    const strataDevice = await getSharedDevice();
    takeUncapturedErrors(strataDevice);
    // Usage 0 is invalid: the error is uncaptured and arrives as an event.
    strataDevice.device.createBuffer({ size: 16, usage: 0 });
    await strataDevice.device.queue.onSubmittedWorkDone();
    await expect.poll(() => strataDevice.uncapturedErrors.length).toBeGreaterThan(0);
    const [first] = takeUncapturedErrors(strataDevice);
    expect(first?.kind).toBe('validation');
  });
});

// The subgroup matrix config an adapter offers (runtime/device.ts subgroupMatrixOf), and an AOT variant compiled for
// one: only a device with the same matrix shape and subgroup size runs it.
describe('subgroup matrices', () => {
  const info = (configs: { componentType: string; resultComponentType: string; M: number; N: number; K: number }[], min = 32, max = 32) =>
    ({ subgroupMinSize: min, subgroupMaxSize: max, subgroupMatrixConfigs: configs }) as unknown as GPUAdapterInfo;
  const features = new Set(['chromium-experimental-subgroup-matrix', 'shader-f16']);
  const f16 = (M: number, N: number, K: number) => ({ componentType: 'f16', resultComponentType: 'f32', M, N, K });

  it('takes the largest f16 x f16 -> f32 config of an adapter with one subgroup size, else none', () => {
    const h200 = [{ componentType: 'f16', resultComponentType: 'f16', M: 16, N: 16, K: 16 }, f16(16, 8, 16), f16(16, 16, 16)];
    expect(subgroupMatrixOf(info(h200), features)).toEqual({ m: 16, n: 16, k: 16, size: 32 });
    expect(subgroupMatrixOf(info(h200, 8, 32), features)).toBeUndefined(); // subgroups of varying size
    expect(subgroupMatrixOf(info(h200), new Set(['shader-f16']))).toBeUndefined(); // no feature
    expect(subgroupMatrixOf(info([{ componentType: 'f32', resultComponentType: 'f32', M: 8, N: 8, K: 8 }]), features)).toBeUndefined();
  });

  it('an AOT variant with subgroup matrices runs only where the same config is', () => {
    const m = { m: 16, n: 16, k: 16, size: 32 };
    const needs = (subgroupMatrix: typeof m | false) => ({ ...DEFAULT_LIMITS, subgroupMatrix });
    expect(limitsShortfall(needs(m), {}, [], [], m)).toBeNull();
    expect(limitsShortfall(needs(m), {}, [], [])).toBe('f16 subgroup matrices of 16x16x16 on subgroups of 32 are needed and this device has none');
    expect(limitsShortfall(needs(m), {}, [], [], { ...m, size: 64 })).toMatch(/this device has 16x16x16 on 64$/);
    expect(limitsShortfall(needs(false), {}, [], [])).toBeNull();
  });
});
