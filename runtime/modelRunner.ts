// Runs a model on the device: one compiled program per bucket (rows x tokens per step x logits mode), weights
// uploaded once (16-bit kept packed), session memory allocated once and shared by every program.
import { type DeviceLimits, compile } from '../compiler/compile.ts';
import type { Program } from '../compiler/program.ts';
import type { Graph, StorageDType } from '../compiler/ir.ts';
import { iota, output, trace } from '../dsl/trace.ts';
import { StepContext, type StepSources, splitsSomeLayer } from '../caches/stepContext.ts';
import type { DecodeSplits } from '../compiler/attentionSplit.ts';
import { type KvPolicySetting, type MemoryOptions, type MemorySpec, withKvPolicies } from '../caches/spec.ts';
import { HybridMemory } from '../caches/hybridMemory.ts';
import type { KeyShift } from '../caches/keyShift.ts';
import { KeyShiftPrograms } from './keyShiftPrograms.ts';
import { promptChunks } from './promptChunks.ts';
import { bufferKey } from '../caches/bufferKeys.ts';
import { modelFingerprint } from '../caches/sessionFile.ts';
import type { ModelDef } from '../models/model.ts';
import { type Executable, type GpuRuntime } from './gpuRuntime.ts';
import type { TensorData, TensorSource } from '../base/safetensors.ts';
import { type QuantStorage, quantizable } from '../compiler/quantized.ts';
import { GGML_BLOCKS, encodeWeight, encodeWeightRows, isGgmlBlockDtype } from './quantize.ts';

export type LogitsMode = 'all' | 'last';

export interface RunnerOptions {
  slots: number;
  capacity: number;
  /** Tokens per step of the prefill buckets; a prompt is split into chunks of these sizes, the last padded. */
  chunks: number[];
  fuse?: boolean;
  /** Shrinks every sliding window to this many positions (a session-level override). */
  window?: number;
  /** Snapshot planes per slot and automatic snapshots every N tokens (see HybridMemoryOptions). */
  snapshots?: { perSlot?: number; every?: number };
  /** Lets the memory remove positions from the middle of a sequence (see KeyShift). */
  keyShift?: KeyShift;
  /** What attention layers keep: dense, window, lastRecent (sinks + recent) or h2o (recent + heavy), per layer or for all. */
  kvPolicy?: KvPolicySetting;
  /** The model's config, folded into the model fingerprint that saved memory files carry. */
  config?: unknown;
  /** Programs compiled ahead of time, by program key (an AOT module's): used instead of tracing and compiling. */
  programs?: Readonly<Record<string, Program>>;
  /** Limits to compile against instead of the device's (an AOT module targets any adapter that has them). */
  compileLimits?: DeviceLimits;
  /** Called with each program this runner traces and compiles (what `strata compile` writes into a module). */
  onCompiled?: (key: string, program: Program) => void;
  /**
   * Block-quantize 16/32-bit weights on load (compiler/quantized.ts): every tensor of rank >= 2 whose rows are
   * whole 32-element blocks (the linear layers and embeddings); others (norms, convolutions, biases) stay as stored.
   * Tensors a GGUF file stores quantized keep their own format whatever this says.
   */
  weights?: QuantStorage;
}

export class WeightError extends Error {
  override name = 'WeightError';
}

export class ContextOverflowError extends Error {
  override name = 'ContextOverflowError';
}

let runnerCount = 0;

export class ModelRunner {
  readonly namespace = `m${runnerCount++}/`;
  private readonly programs = new Map<string, Executable>();
  private readonly constants: Record<string, Float32Array>;
  /** Host mirror of each slot's length (the memory's, which is its only writer). */
  readonly lengths: readonly number[];
  /** Weights (and constants) already uploaded: the host's record, so each is written once. */
  private readonly loaded = new Set<string>();
  readonly memory: MemoryOptions;
  /** The model's memory spec with the session's KV policies applied. */
  readonly spec: MemorySpec;
  /** Every cache buffer, allocated here before any program, and the sequence operations on them. */
  readonly caches: HybridMemory;

  constructor(
    readonly runtime: GpuRuntime,
    readonly model: ModelDef,
    readonly checkpoint: TensorSource,
    readonly options: RunnerOptions,
  ) {
    this.constants = model.constants();
    this.memory = { slots: options.slots, capacity: options.capacity, maxChunk: Math.max(...options.chunks, 1), ...(options.window !== undefined ? { window: options.window } : {}) };
    const weights = checkpoint.tensorNames().map((name) => checkpoint.info(name));
    this.spec = withKvPolicies(model.memory(), options.kvPolicy);
    this.caches = new HybridMemory(runtime, this.namespace, this.spec, this.memory, {
      ...(options.snapshots ? { snapshots: options.snapshots } : {}),
      ...(options.keyShift ? { keyShifter: new KeyShiftPrograms(runtime, this.namespace, this.memory, options.keyShift) } : {}),
      model: { family: model.family, fingerprint: modelFingerprint({ family: model.family, config: options.config, weights, constants: this.constants }) },
    });
    this.lengths = this.caches.lengths;
  }

  private storage(name: string): StorageDType | undefined {
    if (this.constants[name]) return 'f32';
    if (!this.checkpoint.has(name)) return undefined;
    const { dtype, shape } = this.checkpoint.info(name);
    if (isGgmlBlockDtype(dtype)) return GGML_BLOCKS[dtype].storage;
    if (this.options.weights && quantizable(shape)) return this.options.weights;
    return dtype === 'F16' ? 'f16' : dtype === 'BF16' ? 'bf16' : 'f32';
  }

  /**
   * The compiled, loaded program for a bucket (compiled on first use). `splits` false: a decode step whose attention
   * keeps one slice of the keys where the adapter's rule would split it (`step` takes it while the batch is shorter
   * than the rule's length; a caller that cannot tell the lengths gets the split step).
   */
  async program(rows: number, tokens: number, logits: LogitsMode, splits = true): Promise<Executable> {
    const key = `${rows}x${tokens}:${logits}${splits ? '' : ':one slice'}`;
    const have = this.programs.get(key);
    if (have) return have;
    const graph = () => trace(() => {
      const ctx = this.context(rows, tokens, undefined, splits);
      const hidden = this.model.forward(ctx);
      if (logits === 'all') output('logits', this.model.logits(ctx, hidden));
      else {
        // hidden state of each row's last real token: row s, token valid[s]-1
        const flat = hidden.reshape(rows * tokens, this.model.hiddenSize);
        const lastRow = ctx.valid.sub(1).add(iota([rows], 0, 'i32').mul(tokens));
        output('logits', this.model.logits(ctx, flat.gather(lastRow)));
      }
      ctx.finish();
    });
    return this.loadProgram(key, graph, { rows, tokens });
  }

  /** The adapter's flash-decoding rule (DeviceLimits.decodeSplits), or false. */
  get decodeSplits(): DecodeSplits | false {
    return (this.options.compileLimits ?? this.runtime.limits).decodeSplits ?? false;
  }

  /** Whether a decode step of `rows` sequences traced with the rule differs from one without: some layer's attention takes slices. */
  splitsDecode(rows: number): boolean {
    return splitsSomeLayer(this.spec, this.memory, this.decodeSplits, rows);
  }

  /**
   * A StepContext over this runner's memory and weights, for a step program traced elsewhere (the generator's).
   * `splits`: whether its decode attention takes the adapter's key slices (default: yes; the generator and `step`
   * compile both and pick by the batch's longest sequence).
   */
  context(rows: number, tokens: number, sources?: StepSources, splits = true): StepContext {
    return new StepContext(this.spec, this.memory, rows, tokens, { storage: (n) => this.storage(n) }, sources, { decodeSplits: splits && this.decodeSplits });
  }

  /**
   * Compiles a step program once per key (traced only when needed: a program compiled ahead of time under this key
   * is used as it is) and loads it beside this runner's weights and memory.
   */
  async loadProgram(key: string, graph: Graph | (() => Graph), bucket: Record<string, number>): Promise<Executable> {
    const have = this.programs.get(key);
    if (have) return have;
    let program = this.options.programs?.[key];
    if (!program) {
      program = compile(typeof graph === 'function' ? graph() : graph, { fuse: this.options.fuse ?? true, limits: this.options.compileLimits ?? this.runtime.limits, bucket });
      this.options.onCompiled?.(key, program);
    }
    const exe = await this.runtime.load(program, { namespace: this.namespace });
    await this.uploadWeights(exe);
    this.programs.set(key, exe);
    return exe;
  }

  private async uploadWeights(exe: Executable): Promise<void> {
    const uploaded: string[] = [];
    let held: { name: string; tensor: TensorData } | undefined;
    try {
      for (const [name, id] of Object.entries(exe.program.weights)) {
        if (this.loaded.has(name)) continue;
        const spec = exe.program.buffers[id]!;
        const buf = exe.buffers[id]!;
        const constant = this.constants[name];
        if (constant) {
          if (constant.length !== spec.shape.reduce((a, b) => a * b, 1)) throw new WeightError(`constant '${name}' has ${constant.length} values, expected shape (${spec.shape.join(',')})`);
          this.runtime.write(buf, constant);
        } else {
          const piece = spec.piece;
          const tensorName = piece?.of ?? name;
          const want = piece ? [piece.totalRows, ...spec.shape.slice(1)] : spec.shape;
          if (!this.checkpoint.has(tensorName)) throw new WeightError(`weight '${tensorName}' is missing from the checkpoint (expected shape (${want.join(',')}))`);
          const info = this.checkpoint.info(tensorName);
          if (info.shape.join() !== want.join())
            throw new WeightError(`weight '${tensorName}': checkpoint has shape (${info.shape.join(',')}), the model expects (${want.join(',')})`);
          // the pieces of a split weight (compiler/passes/splitWeights) come one after another: read it once
          if (held?.name !== tensorName) held = { name: tensorName, tensor: await this.checkpoint.readTensor(tensorName) };
          const storage = spec.storage ?? 'f32';
          this.runtime.write(buf, piece ? encodeWeightRows(held.tensor, storage, piece.rowStart, piece.rows, tensorName) : encodeWeight(held.tensor, storage, name));
        }
        uploaded.push(name);
      }
    } catch (err) {
      // nothing stays half-loaded: drop this runner's weights and programs
      this.runtime.releaseNamed(bufferKey(this.namespace, 'weight', ''));
      this.programs.clear();
      this.loaded.clear();
      throw err;
    }
    for (const name of uploaded) this.loaded.add(name);
  }

  /**
   * Runs one step: each row feeds `tokens` into its slot (rows may differ in length; the step is padded to
   * the bucket). Returns logits per row: [T, V] ('all') or [V] ('last'), as Float32Arrays.
   */
  async step(rows: { slot: number; tokens: number[] }[], logits: LogitsMode, bucket?: { rows: number; tokens: number }): Promise<Float32Array[]> {
    const R = bucket?.rows ?? rows.length;
    const T = bucket?.tokens ?? Math.max(...rows.map((r) => r.tokens.length));
    for (const r of rows) {
      if (r.slot < 0 || r.slot >= this.options.slots || !Number.isInteger(r.slot)) throw new RangeError(`unknown sequence slot ${r.slot}: this session has slots 0..${this.options.slots - 1}`);
      if (this.lengths[r.slot]! + r.tokens.length > this.options.capacity)
        throw new ContextOverflowError(`slot ${r.slot}: ${this.lengths[r.slot]} tokens + ${r.tokens.length} new exceed the capacity of ${this.options.capacity}`);
    }
    // a decode batch shorter than the flash-decoding rule's length runs the one-slice step (as the generator's do)
    const rule = this.decodeSplits;
    const oneSlice = rule !== false && T === 1 && Math.max(...rows.map((r) => this.lengths[r.slot]!)) < rule.from && this.splitsDecode(R);
    const exe = await this.program(R, T, logits, !oneSlice);
    const tokens = new Int32Array(R * T);
    const slotIds = new Int32Array(R).fill(this.options.slots); // inactive rows point past the last slot
    const valid = new Int32Array(R);
    rows.forEach((r, i) => {
      tokens.set(r.tokens, i * T);
      slotIds[i] = r.slot;
      valid[i] = r.tokens.length;
    });
    exe.writeInput('tokens', tokens);
    exe.writeInput('slot_ids', slotIds);
    exe.writeInput('valid', valid);
    exe.run();
    this.caches.afterStep(rows.map((r) => ({ slot: r.slot, length: this.lengths[r.slot]! + r.tokens.length })));
    const out = await exe.readOutput('logits');
    const V = this.model.vocabSize;
    const data = out.data as Float32Array;
    return rows.map((r, i) => (logits === 'all' ? data.slice(i * T * V, i * T * V + r.tokens.length * V) : data.slice(i * V, (i + 1) * V)));
  }

  /** Feeds a whole prompt into a slot in bucket-sized chunks (promptChunks); returns logits for every token ('all') or the last. */
  async prefill(slot: number, tokens: number[], logits: LogitsMode = 'last'): Promise<Float32Array> {
    const parts: Float32Array[] = [];
    for (const chunk of promptChunks(tokens.length, this.options.chunks)) {
      const [l] = await this.step([{ slot, tokens: tokens.slice(chunk.at, chunk.at + chunk.tokens) }], logits, { rows: 1, tokens: chunk.bucket });
      parts.push(l!);
    }
    if (logits === 'last') return parts[parts.length - 1]!;
    const all = new Float32Array(parts.reduce((a, p) => a + p.length, 0));
    let off = 0;
    for (const p of parts) (all.set(p, off), (off += p.length));
    return all;
  }

  /** Empties a slot: position 0 and zero recurrent state, copied on the device from the zero state. */
  resetSlot(slot: number): void {
    this.caches.clear(slot);
  }
}
