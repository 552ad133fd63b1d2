// Test helpers for running one traced function on both backends: the CPU reference (runCpu) and the compiled
// program on the real WebGPU device, with one GpuRuntime per test worker so pipelines are compiled once.
import { expect } from 'vitest';
import { mulberry32 } from '../../base/random.ts';
import { type DType, type Graph, type Node, type StorageDType, numel } from '../../compiler/ir.ts';
import { isQuantized } from '../../compiler/quantized.ts';
import { dequantize, quantize } from '../../runtime/quantize.ts';
import { type CompileOptions, compile } from '../../compiler/compile.ts';
import type { Program } from '../../compiler/program.ts';
import { type Dims, trace } from '../../dsl/trace.ts';
import type { Tensor } from '../../dsl/tensor.ts';
import { runCpu } from '../../runtime/cpuBackend.ts';
import { getSharedDevice } from '../../runtime/device.ts';
import { GpuRuntime } from '../../runtime/gpuRuntime.ts';
import { type NDArray, type TypedArray, allocArray } from '../../runtime/ndarray.ts';
import { f16BitsToF32, f32ToBf16Bits, f32ToF16Bits, bf16BitsToF32 } from '../../base/tensorValues.ts';

// ---------------------------------------------------------------- the shared runtime

// On globalThis, like the shared device, so a re-evaluated copy of this module still finds the same runtime.
const RUNTIME_KEY = Symbol.for('strata.test.gpuRuntime');

/** One GpuRuntime per test worker (process): pipelines are cached by WGSL text, and lavapipe compiles slowly. */
export function getRuntime(): Promise<GpuRuntime> {
  const holder = globalThis as { [RUNTIME_KEY]?: Promise<GpuRuntime> };
  holder[RUNTIME_KEY] ??= getSharedDevice().then((device) => new GpuRuntime(device));
  return holder[RUNTIME_KEY];
}

// ---------------------------------------------------------------- host values

/** A host value for an input, weight or state: an NDArray, or plain numbers in row-major order (shape and dtype come from the graph). */
export type HostValue = NDArray | ArrayLike<number>;

export interface RunData {
  inputs?: Record<string, HostValue>;
  /** f32 values; f16/bf16 weights are rounded to their storage type for both backends (see `storedWeight`). */
  weights?: Record<string, HostValue>;
  /** Initial values; both backends start from these, and the final values come back in `states`. */
  states?: Record<string, HostValue>;
}

export interface BackendResult {
  outputs: Record<string, NDArray>;
  /** Final value of every state the graph declares (written or only read). */
  states: Record<string, NDArray>;
}

export interface BothResult {
  graph: Graph;
  program: Program;
  cpu: BackendResult;
  gpu: BackendResult;
}

function isNDArray(v: HostValue): v is NDArray {
  return typeof v === 'object' && v !== null && 'shape' in v && 'dtype' in v && 'data' in v;
}

function toNDArray(node: Node, value: HostValue, what: string): NDArray {
  const data = isNDArray(value) ? value.data : value;
  if (isNDArray(value) && value.shape.join() !== node.shape.join())
    throw new Error(`${what}: shape (${value.shape.join(',')}) but the graph declares (${node.shape.join(',')})`);
  if (data.length !== numel(node.shape)) throw new Error(`${what}: ${data.length} values for shape (${node.shape.join(',')})`);
  const arr = allocArray(node.dtype, data.length);
  arr.set(node.dtype === 'bool' ? Array.from(data, (x) => (x ? 1 : 0)) : (data as ArrayLike<number>));
  return { shape: [...node.shape], dtype: node.dtype, data: arr };
}

/** What the device buffer holds for a value: bool is stored as u32, other dtypes as themselves. */
function deviceData(v: NDArray): ArrayBufferView {
  return v.dtype === 'bool' ? Uint32Array.from(v.data) : v.data;
}

/**
 * A weight as the device stores it: f16/bf16 rounded (round-to-nearest-even) and packed two halves per u32, low
 * half first; q8/q4 block-quantized, `rounded` then being the values the kernels decode.
 */
export function storedWeight(values: ArrayLike<number>, storage: StorageDType): { rounded: Float32Array; upload: Uint32Array | Float32Array } {
  if (isQuantized(storage)) {
    const upload = quantize(values, storage);
    return { rounded: dequantize(upload, values.length, storage), upload };
  }
  if (storage === 'f32') {
    const f = Float32Array.from(values);
    return { rounded: f, upload: f };
  }
  const [encode, decode] = storage === 'f16' ? [f32ToF16Bits, f16BitsToF32] : [f32ToBf16Bits, bf16BitsToF32];
  const halves = new Uint16Array(values.length + (values.length % 2));
  const rounded = new Float32Array(values.length);
  for (let i = 0; i < values.length; i++) {
    halves[i] = encode(values[i]!);
    rounded[i] = decode(halves[i]!);
  }
  return { rounded, upload: new Uint32Array(halves.buffer) };
}

function fromDevice(spec: { dtype: DType; shape: number[] }, raw: ArrayBuffer): NDArray {
  const n = numel(spec.shape);
  let data: TypedArray;
  switch (spec.dtype) {
    case 'f32': data = new Float32Array(raw, 0, n); break;
    case 'i32': data = new Int32Array(raw, 0, n); break;
    case 'u32': data = new Uint32Array(raw, 0, n); break;
    case 'bool': data = Uint8Array.from(new Uint32Array(raw, 0, n), (x) => (x ? 1 : 0)); break;
  }
  return { shape: [...spec.shape], dtype: spec.dtype, data };
}

// ---------------------------------------------------------------- running

let runCounter = 0;

/**
 * Runs a compiled program once on the GPU: uploads inputs, weights and initial states by name, runs, reads every
 * output and every state back. Buffers are private to this call (a fresh namespace; weights are released after),
 * so tests may reuse names with other shapes.
 */
export async function runGpu(graph: Graph, program: Program, data: RunData): Promise<BackendResult> {
  const rt = await getRuntime();
  const namespace = `test${runCounter++}/`;
  const exe = await rt.load(program, { namespace });
  try {
    for (const [name, node] of graph.inputs) {
      if (program.inputs[name] === undefined) continue; // folded away
      const v = data.inputs?.[name];
      if (v === undefined) throw new Error(`runGpu: missing input '${name}'`);
      exe.writeInput(name, deviceData(toNDArray(node, v, `input '${name}'`)));
    }
    for (const [name, node] of graph.weights) {
      const buf = exe.buffer('weight', name);
      if (!buf) continue;
      const v = data.weights?.[name];
      if (v === undefined) throw new Error(`runGpu: missing weight '${name}'`);
      rt.write(buf, storedWeight(toNDArray(node, v, `weight '${name}'`).data, node.attrs.storage).upload);
    }
    // rows of a weight the compiler split to fit the binding limit (compiler/passes/splitWeights)
    for (const [name, id] of Object.entries(program.weights)) {
      const piece = program.buffers[id]!.piece;
      const node = piece && graph.weights.get(piece.of);
      if (!piece || !node) continue;
      const v = data.weights?.[piece.of];
      if (v === undefined) throw new Error(`runGpu: missing weight '${piece.of}'`);
      const rowElems = numel(node.shape.slice(1));
      const rows = toNDArray(node, v, `weight '${piece.of}'`).data.slice(piece.rowStart * rowElems, (piece.rowStart + piece.rows) * rowElems);
      rt.write(exe.buffer('weight', name)!, storedWeight(rows, node.attrs.storage).upload);
    }
    for (const [name, node] of graph.states) {
      const buf = exe.buffer('state', name);
      if (!buf) continue;
      const v = data.states?.[name];
      if (v === undefined) throw new Error(`runGpu: missing state '${name}'`);
      rt.write(buf, deviceData(toNDArray(node, v, `state '${name}'`)));
    }
    exe.run();
    const outputs: Record<string, NDArray> = {};
    for (const name of Object.keys(program.outputs)) outputs[name] = await exe.readOutput(name);
    const states: Record<string, NDArray> = {};
    for (const [name, id] of Object.entries(program.states)) {
      const spec = program.buffers[id]!;
      states[name] = fromDevice(spec, await rt.readBuffer(exe.buffer('state', name)!, spec.bytes));
    }
    return { outputs, states };
  } finally {
    rt.releaseNamed(namespace);
    for (const name of Object.keys(program.weights)) rt.releaseNamed(`weight:${name}`);
  }
}

/** Runs the graph on the CPU reference with the same host data (f16/bf16 weights rounded as the device stores them). */
export function runCpuRef(graph: Graph, data: RunData): BackendResult {
  const inputs: Record<string, NDArray> = {};
  const weights: Record<string, NDArray> = {};
  const states: Record<string, NDArray> = {};
  for (const [name, node] of graph.inputs) if (data.inputs?.[name] !== undefined) inputs[name] = toNDArray(node, data.inputs[name]!, `input '${name}'`);
  for (const [name, node] of graph.weights) {
    if (data.weights?.[name] === undefined) continue;
    const v = toNDArray(node, data.weights[name]!, `weight '${name}'`);
    weights[name] = { ...v, data: storedWeight(v.data, node.attrs.storage).rounded };
  }
  for (const [name, node] of graph.states) if (data.states?.[name] !== undefined) states[name] = toNDArray(node, data.states[name]!, `state '${name}'`);
  const outputs = runCpu(graph, { inputs, weights, states });
  return { outputs, states };
}

export type RunOptions = Pick<CompileOptions, 'fuse' | 'limits'>;

/** Compiles a traced graph for the shared device (its limits, overridable) and runs it on both backends. */
export async function runGraphBoth(graph: Graph, data: RunData | ((graph: Graph) => RunData), options: RunOptions & { bucket?: Dims } = {}): Promise<BothResult> {
  const rt = await getRuntime();
  const program = compile(graph, { bucket: options.bucket ?? {}, limits: { ...rt.limits, ...options.limits }, fuse: options.fuse ?? true });
  const host = typeof data === 'function' ? data(graph) : data;
  const cpu = runCpuRef(graph, host);
  const gpu = await runGpu(graph, program, host);
  return { graph, program, cpu, gpu };
}

/**
 * Traces `fn` with `dims`, runs it on the CPU reference and, compiled, on the GPU. `data` may be a function of
 * the traced graph (e.g. `(g) => randomData(g, seed)`) when the inputs are only known after tracing.
 */
export async function runBoth(fn: () => Record<string, Tensor> | void, dims: Dims, data: RunData | ((graph: Graph) => RunData), options: RunOptions = {}): Promise<BothResult> {
  return runGraphBoth(trace(fn, dims), data, { ...options, bucket: dims });
}

// ---------------------------------------------------------------- comparing

export interface Tolerance {
  atol?: number;
  rtol?: number;
}

function fmtIndex(flat: number, shape: readonly number[]): string {
  const idx: number[] = [];
  for (let i = shape.length - 1; i >= 0; i--) {
    idx.unshift(flat % shape[i]!);
    flat = Math.floor(flat / shape[i]!);
  }
  return `[${idx.join(',')}]`;
}

/** Describes how `actual` differs from `expected` beyond |a - e| <= atol + rtol * |e| (NaN equals NaN), or undefined when close. */
export function closeness(actual: NDArray, expected: NDArray, tol: Tolerance = {}): string | undefined {
  const { atol = 1e-5, rtol = 1e-5 } = tol;
  if (actual.shape.join() !== expected.shape.join()) return `shape (${actual.shape.join(',')}) != expected (${expected.shape.join(',')})`;
  if (actual.dtype !== expected.dtype) return `dtype ${actual.dtype} != expected ${expected.dtype}`;
  let bad = 0;
  let firstBad = -1;
  let maxAbs = 0;
  let maxAbsAt = -1;
  let maxRel = 0;
  let maxRelAt = -1;
  for (let i = 0; i < expected.data.length; i++) {
    const a = actual.data[i]!;
    const e = expected.data[i]!;
    if (Number.isNaN(a) && Number.isNaN(e)) continue;
    const abs = a === e ? 0 : Math.abs(a - e); // a === e also covers equal infinities
    const rel = abs === 0 ? 0 : abs / Math.max(Math.abs(e), Number.MIN_VALUE);
    if (!(abs <= atol + rtol * Math.abs(e))) {
      bad++;
      if (firstBad < 0) firstBad = i;
    }
    if (!(abs <= maxAbs)) [maxAbs, maxAbsAt] = [Number.isNaN(abs) ? Infinity : abs, i];
    if (!(rel <= maxRel)) [maxRel, maxRelAt] = [Number.isNaN(rel) ? Infinity : rel, i];
  }
  if (bad === 0) return undefined;
  const at = (i: number) => `${fmtIndex(i, expected.shape)} (gpu ${actual.data[i]}, cpu ${expected.data[i]})`;
  return [
    `${bad} of ${expected.data.length} elements of ${expected.dtype}(${expected.shape.join(',')}) differ beyond atol=${atol} rtol=${rtol}`,
    `  first at ${at(firstBad)}`,
    `  max abs err ${maxAbs.toPrecision(3)} at ${at(maxAbsAt)}`,
    `  max rel err ${maxRel.toPrecision(3)} at ${at(maxRelAt)}`,
  ].join('\n');
}

/**
 * Asserts GPU values are close to the CPU reference: one array, or records of named arrays (every name the CPU
 * has must be on the GPU). The failure message names the output, the max abs/rel errors and where they are.
 */
export function expectClose(gpu: NDArray | Record<string, NDArray>, cpu: NDArray | Record<string, NDArray>, tol: Tolerance = {}): void {
  const failures: string[] = [];
  if (isNDArray(cpu as HostValue)) {
    const msg = closeness(gpu as NDArray, cpu as NDArray, tol);
    if (msg) failures.push(msg);
  } else {
    const g = gpu as Record<string, NDArray>;
    for (const [name, expected] of Object.entries(cpu as Record<string, NDArray>)) {
      const actual = g[name];
      const msg = actual ? closeness(actual, expected, tol) : 'missing on the GPU';
      if (msg) failures.push(`'${name}': ${msg}`);
    }
  }
  if (failures.length) expect.fail(failures.join('\n'));
}

/** Shorthand: runs `fn` on both backends and asserts every output and final state agree. */
export async function expectBothClose(fn: () => Record<string, Tensor> | void, dims: Dims, data: RunData | ((graph: Graph) => RunData), tol: Tolerance = {}, options: RunOptions = {}): Promise<BothResult> {
  const r = await runBoth(fn, dims, data, options);
  expectClose(r.gpu.outputs, r.cpu.outputs, tol);
  expectClose(r.gpu.states, r.cpu.states, tol);
  return r;
}

// ---------------------------------------------------------------- deterministic random data

/** Seeded numbers in [0, 1) (base/random.ts), so fast-check can hand a seed and tests fill large arrays cheaply. */
export const rng = mulberry32;

/** `count` values uniform in [lo, hi): floats for f32, integers (inclusive of lo, exclusive of hi) otherwise. */
export function uniform(random: () => number, count: number, lo: number, hi: number, dtype: DType = 'f32'): number[] {
  const out = new Array<number>(count);
  for (let i = 0; i < count; i++) {
    const x = lo + (hi - lo) * random();
    out[i] = dtype === 'f32' ? Math.fround(x) : dtype === 'bool' ? (random() < 0.5 ? 1 : 0) : Math.floor(x);
  }
  return out;
}

/**
 * Random values for every input, weight and state of a graph: f32 uniform in [lo, hi), integers in [0, intHi)
 * (valid gather/scatter rows when intHi is the table's row count), bools half true.
 */
export function randomData(graph: Graph, seed: number, range: { lo?: number; hi?: number; intHi?: number } = {}): RunData {
  const { lo = -1, hi = 1, intHi = 8 } = range;
  const random = rng(seed);
  const fill = (n: Node) => uniform(random, numel(n.shape), n.dtype === 'f32' ? lo : 0, n.dtype === 'f32' ? hi : intHi, n.dtype);
  const of = (m: Map<string, Node>) => Object.fromEntries([...m].map(([name, n]) => [name, fill(n)]));
  return { inputs: of(graph.inputs), weights: of(graph.weights), states: of(graph.states) };
}
