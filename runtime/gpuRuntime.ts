// The WebGPU runtime: named device buffers shared across programs, pipelines cached by WGSL text (per device), and
// executables whose pipelines and bind groups are made once and replayed. It is the one executor: every
// submission and readback goes through `submitWork` / `submitAndRead` and everything it creates or reads back
// is counted, so tests can assert that a warm decode loop creates nothing and reads once per K steps.
import { bufferKey } from '../caches/bufferKeys.ts';
import type { BufferCopy, DeviceMemory, Region } from '../caches/deviceMemory.ts';
import type { DType } from '../compiler/ir.ts';
import type { BufferSpec, Program } from '../compiler/program.ts';
import type { DeviceLimits } from '../compiler/compile.ts';
import { compileLimitsOf } from './compileLimits.ts';
import type { StrataDevice } from './device.ts';
import { sharedPipeline } from './pipelineCache.ts';
import { type NDArray, type TypedArray, allocArray } from './ndarray.ts';

export interface Counters {
  shaderModules: number;
  pipelines: number;
  bindGroups: number;
  buffers: number;
  submits: number;
  readbacks: number;
  dispatches: number;
}

export class ShaderCompileError extends Error {
  override name = 'ShaderCompileError';
}

const USAGE = () => GPUBufferUsage.STORAGE | GPUBufferUsage.COPY_SRC | GPUBufferUsage.COPY_DST;

function typedFor(dtype: DType, buf: ArrayBuffer): TypedArray {
  switch (dtype) {
    case 'f32': return new Float32Array(buf);
    case 'i32': return new Int32Array(buf);
    case 'u32': case 'bool': return new Uint32Array(buf);
  }
}

export class GpuRuntime implements DeviceMemory {
  readonly device: GPUDevice;
  readonly counters: Counters = { shaderModules: 0, pipelines: 0, bindGroups: 0, buffers: 0, submits: 0, readbacks: 0, dispatches: 0 };
  private readonly named = new Map<string, GPUBuffer>();
  private readonly owned: GPUBuffer[] = [];

  constructor(readonly strata: StrataDevice) {
    this.device = strata.device;
  }

  /** What the compiler schedules against on this device (runtime/compileLimits.ts). */
  get limits(): Required<DeviceLimits> {
    return compileLimitsOf(this.strata);
  }

  createBuffer(bytes: number, label: string, usage = USAGE()): GPUBuffer {
    this.counters.buffers++;
    const b = this.device.createBuffer({ size: Math.max(4, Math.ceil(bytes / 4) * 4), usage, label });
    this.owned.push(b);
    return b;
  }

  /** A buffer shared by name (weights, states, and inputs/outputs of equal size across programs). */
  namedBuffer(key: string, bytes: number): GPUBuffer {
    const have = this.named.get(key);
    if (have) {
      if (have.size < bytes) throw new Error(`buffer '${key}' exists with ${have.size} bytes; a program needs ${bytes}`);
      return have;
    }
    const b = this.createBuffer(bytes, key);
    this.named.set(key, b);
    return b;
  }

  /** Keys of the shared buffers (for tests and memory reports). */
  namedKeys(): string[] {
    return [...this.named.keys()];
  }

  hasNamed(key: string): boolean {
    return this.named.has(key);
  }

  getNamed(key: string): GPUBuffer | undefined {
    return this.named.get(key);
  }

  /** Releases named buffers whose key starts with a prefix (e.g. a failed weight load). */
  releaseNamed(prefix: string): void {
    for (const [k, b] of this.named)
      if (k.startsWith(prefix)) {
        b.destroy();
        this.named.delete(k);
      }
  }

  write(buffer: GPUBuffer, data: ArrayBufferView, offset = 0): void {
    this.device.queue.writeBuffer(buffer, offset, data.buffer, data.byteOffset, data.byteLength);
  }

  /**
   * A pipeline for a WGSL source, compiled once per distinct text on the device (shared with other runtimes there:
   * runtime/pipelineCache.ts); compile errors carry line:column and the source.
   */
  pipeline(wgsl: string, label: string): Promise<GPUComputePipeline> {
    return sharedPipeline(this.device, wgsl, () => this.createPipeline(wgsl, label));
  }

  private async createPipeline(wgsl: string, label: string): Promise<GPUComputePipeline> {
    this.device.pushErrorScope('validation');
    this.counters.shaderModules++;
    const module = this.device.createShaderModule({ code: wgsl, label });
    const info = await module.getCompilationInfo();
    const errors = info.messages.filter((m) => m.type === 'error');
    if (errors.length) {
      await this.device.popErrorScope();
      const where = errors.map((m) => `${label}:${m.lineNum}:${m.linePos}: ${m.message}`).join('\n');
      const numbered = wgsl.split('\n').map((l, i) => `${String(i + 1).padStart(4)} | ${l}`).join('\n');
      throw new ShaderCompileError(`WGSL compile error\n${where}\n--- shader ---\n${numbered}`);
    }
    this.counters.pipelines++;
    const pipeline = this.device.createComputePipeline({ layout: 'auto', compute: { module, entryPoint: 'main' }, label });
    const err = await this.device.popErrorScope();
    if (err) throw new ShaderCompileError(`pipeline '${label}': ${err.message}\n--- shader ---\n${wgsl}`);
    return pipeline;
  }

  /** Copies a buffer to the host. Blocking: counted as a readback. */
  async readBuffer(src: GPUBuffer, bytes: number, staging?: GPUBuffer): Promise<ArrayBuffer> {
    const [out] = await this.submitAndRead('readback', () => {}, [{ buffer: src, offset: 0, bytes: Math.ceil(bytes / 4) * 4 }], staging);
    return out!.buffer as ArrayBuffer;
  }

  /** Records commands into one encoder and submits them (counted). */
  submitWork(label: string, record: (encoder: GPUCommandEncoder) => void): void {
    const encoder = this.device.createCommandEncoder({ label });
    record(encoder);
    this.submit([encoder.finish()]);
  }

  /**
   * Records commands, then copies of `regions` into a staging buffer (`staging`, reused by the caller, or a
   * temporary one), in one submission; resolves with each region's bytes once mapped. One counted readback.
   */
  async submitAndRead(label: string, record: (encoder: GPUCommandEncoder) => void, regions: readonly Region[], staging?: GPUBuffer): Promise<Uint8Array[]> {
    const total = regions.reduce((a, r) => a + r.bytes, 0);
    if (total === 0) {
      this.submitWork(label, record);
      return regions.map(() => new Uint8Array(0));
    }
    const stage = staging ?? this.createBuffer(total, `${label} staging`, GPUBufferUsage.MAP_READ | GPUBufferUsage.COPY_DST);
    try {
      this.submitWork(label, (encoder) => {
        record(encoder);
        let at = 0;
        for (const r of regions) {
          if (r.bytes) encoder.copyBufferToBuffer(r.buffer, r.offset, stage, at, r.bytes);
          at += r.bytes;
        }
      });
      this.counters.readbacks++;
      await stage.mapAsync(GPUMapMode.READ, 0, total);
      const all = new Uint8Array(stage.getMappedRange(0, total).slice(0));
      stage.unmap();
      let at = 0;
      return regions.map((r) => all.slice(at, (at += r.bytes)));
    } finally {
      if (!staging) stage.destroy();
    }
  }

  private submit(commands: GPUCommandBuffer[]): void {
    this.counters.submits++;
    this.device.queue.submit(commands);
  }

  // ---------------------------------------------------------------- DeviceMemory (what caches/ may do)

  has(key: string): boolean {
    return this.named.has(key);
  }

  allocate(key: string, bytes: number): GPUBuffer {
    return this.namedBuffer(key, bytes);
  }

  copy(copies: readonly BufferCopy[], label: string): void {
    if (!copies.length) return;
    this.submitWork(label, (encoder) => {
      for (const c of copies) encoder.copyBufferToBuffer(c.src, c.srcOffset, c.dst, c.dstOffset, c.bytes);
    });
  }

  read(regions: readonly Region[]): Promise<Uint8Array[]> {
    return this.submitAndRead('memory readback', () => {}, regions);
  }

  async load(program: Program, options: { namespace?: string } = {}): Promise<Executable> {
    const exe = new Executable(this, program, options.namespace ?? '');
    await exe.prepare();
    return exe;
  }

  destroy(): void {
    for (const b of this.owned) b.destroy();
    this.owned.length = 0;
    this.named.clear();
  }
}

/** Key of a program buffer in the runtime's shared table; temps are private to the executable. */
function programBufferKey(spec: BufferSpec, namespace: string): string | undefined {
  switch (spec.role) {
    case 'weight': case 'state': return bufferKey(namespace, spec.role, spec.name!);
    // inputs and outputs are shared between programs only when their sizes agree
    case 'input': case 'output': return bufferKey(namespace, spec.role, `${spec.name}:${spec.bytes}`);
    case 'temp': return undefined;
  }
}

export class Executable {
  readonly buffers: GPUBuffer[] = [];
  private readonly steps: { pipeline: GPUComputePipeline; bindGroup: GPUBindGroup; workgroups: [number, number, number] }[] = [];
  private readonly staging = new Map<number, GPUBuffer>();

  constructor(
    readonly runtime: GpuRuntime,
    readonly program: Program,
    readonly namespace: string,
  ) {}

  async prepare(): Promise<void> {
    const rt = this.runtime;
    for (const spec of this.program.buffers) {
      const key = programBufferKey(spec, this.namespace);
      this.buffers.push(key ? rt.namedBuffer(key, spec.bytes) : rt.createBuffer(spec.bytes, `temp${spec.id}`));
    }
    for (const k of this.program.kernels) {
      const pipeline = await rt.pipeline(k.wgsl, k.name);
      rt.counters.bindGroups++;
      const bindGroup = rt.device.createBindGroup({
        layout: pipeline.getBindGroupLayout(0),
        entries: k.bindings.map((b, i) => ({ binding: i, resource: { buffer: this.buffers[b]! } })),
        label: k.name,
      });
      this.steps.push({ pipeline, bindGroup, workgroups: k.workgroups });
    }
    for (const id of Object.values(this.program.outputs)) {
      this.staging.set(id, rt.createBuffer(this.program.buffers[id]!.bytes, `stage${id}`, GPUBufferUsage.MAP_READ | GPUBufferUsage.COPY_DST));
    }
  }

  /** Records every dispatch of the program into a compute pass. */
  encode(pass: GPUComputePassEncoder): void {
    for (const s of this.steps) {
      pass.setPipeline(s.pipeline);
      pass.setBindGroup(0, s.bindGroup);
      pass.dispatchWorkgroups(...s.workgroups);
    }
    this.runtime.counters.dispatches += this.steps.length;
  }

  /**
   * Records each dispatch in a pass of its own with timestamps at its start and end (profiling only: passes
   * cost more than dispatches). Returns the kernel names in query order (query 2i = start, 2i+1 = end).
   */
  encodeProfiled(encoder: GPUCommandEncoder, querySet: GPUQuerySet, firstQuery: number): string[] {
    this.steps.forEach((s, i) => {
      const pass = encoder.beginComputePass({ timestampWrites: { querySet, beginningOfPassWriteIndex: firstQuery + 2 * i, endOfPassWriteIndex: firstQuery + 2 * i + 1 } });
      pass.setPipeline(s.pipeline);
      pass.setBindGroup(0, s.bindGroup);
      pass.dispatchWorkgroups(...s.workgroups);
      pass.end();
    });
    this.runtime.counters.dispatches += this.steps.length;
    return this.program.kernels.map((k) => k.name);
  }

  /** Encodes and submits one run. */
  run(): void {
    this.runtime.submitWork(this.program.kernels[0]?.name ?? 'program', (encoder) => {
      const pass = encoder.beginComputePass();
      this.encode(pass);
      pass.end();
    });
  }

  /** Encodes and submits dispatch `index` alone (measuring: a driver that compiles at first dispatch does it here). */
  runKernel(index: number): void {
    const s = this.steps[index];
    if (!s) throw new RangeError(`program has no kernel ${index} (it has ${this.steps.length})`);
    this.runtime.submitWork(this.program.kernels[index]!.name, (encoder) => {
      const pass = encoder.beginComputePass();
      pass.setPipeline(s.pipeline);
      pass.setBindGroup(0, s.bindGroup);
      pass.dispatchWorkgroups(...s.workgroups);
      pass.end();
    });
    this.runtime.counters.dispatches++;
  }

  buffer(role: 'input' | 'output' | 'weight' | 'state', name: string): GPUBuffer | undefined {
    const table = role === 'input' ? this.program.inputs : role === 'output' ? this.program.outputs : role === 'weight' ? this.program.weights : this.program.states;
    const id = table[name];
    return id === undefined ? undefined : this.buffers[id];
  }

  /** Writes an input; inputs the program does not use are ignored. */
  writeInput(name: string, data: ArrayBufferView): void {
    const id = this.program.inputs[name];
    if (id === undefined) return;
    const spec = this.program.buffers[id]!;
    if (data.byteLength !== spec.bytes) throw new Error(`input '${name}' takes ${spec.bytes} bytes (${spec.dtype}(${spec.shape.join(',')})), got ${data.byteLength}`);
    this.runtime.write(this.buffers[id]!, data);
  }

  async readOutput(name: string): Promise<NDArray> {
    const id = this.program.outputs[name];
    if (id === undefined) throw new Error(`program has no output '${name}' (outputs: ${Object.keys(this.program.outputs).join(', ')})`);
    const spec = this.program.buffers[id]!;
    const raw = await this.runtime.readBuffer(this.buffers[id]!, spec.bytes, this.staging.get(id));
    const data = typedFor(spec.dtype, raw);
    const arr = spec.dtype === 'bool' ? Uint8Array.from(data) : data;
    return { shape: [...spec.shape], dtype: spec.dtype, data: arr.length === spec.shape.reduce((a, b) => a * b, 1) ? arr : arr.slice(0, spec.shape.reduce((a, b) => a * b, 1)) as TypedArray };
  }
}

export { allocArray };
