// The user-facing API: a model folder loaded into a session on a device, and `generate`, an async iterator of
// text pieces with stop strings, token limits, abort signals and per-call stats. Built on the Generator (token
// ids on the device) and the Tokenizer (text, streaming decode, chat templates).
import { type KvPolicySetting, type MemoryOptions, type MemoryReport, type MemorySpec, helperBufferBytes, kvSlotBytes, memoryReport, ownKv, stateSlotBytes, withKvPolicies } from '../caches/spec.ts';
import { MemoryError } from '../caches/hybridMemory.ts';
import { ShapeError } from '../compiler/ops.ts';
import { AOT_FORMAT, type AotModel, pickVariant } from '../compiler/aotModule.ts';
import type { DeviceLimits } from '../compiler/compile.ts';
import type { Program } from '../compiler/program.ts';
import { checkRunnable, loadConfig, type ModelConfig, parseConfig, type RopeConfig } from '../models/config.ts';
import { ropePositionLimit } from '../models/rope.ts';
import { openGguf } from './gguf.ts';
import { hfQuantization, hfQuantizedSource } from './hfQuantized.ts';
import type { ModelDef } from '../models/model.ts';
import { buildModel } from '../models/registry.ts';
import { StrataUserError, declareUserError, elide } from '../base/errors.ts';
import { type ModelSource, SourceReadError, isModelSource, readFailureReason, sourceHas } from '../base/modelSource.ts';
import { sourceFor } from '../base/defaultSource.ts';
import { type StrataDevice, getSharedDevice, withGpuErrorScope } from './device.ts';
import { Generator, UnknownSequenceError, decodeKey, prefillKey } from './generator.ts';
import { promptChunks } from './promptChunks.ts';
import { Generation, type SequenceOptions } from './sequences.ts';
import { type RestoredMemory, type SavedMemory, restoreMemory, saveMemory } from '../caches/sessionFile.ts';
import { GpuRuntime } from './gpuRuntime.ts';
import { isFileHandle, restoreMemoryFromBlob, restoreMemoryFromHandle, saveMemoryToBlob, saveMemoryToHandle } from './memoryBlobs.ts';
import { PrefixCache } from './prefixCache.ts';
import { ContextOverflowError, ModelRunner, WeightError } from './modelRunner.ts';
import { type TensorSource, openSafetensors } from '../base/safetensors.ts';
import type { QuantStorage } from '../compiler/quantized.ts';
import { type ChatMessage, Tokenizer } from './tokenizer.ts';

export { ContextOverflowError } from './modelRunner.ts';
export { UnknownSequenceError } from './generator.ts';
export { Generation, type GenerationResult } from './sequences.ts';
export { NoAdapterError } from './device.ts';

// Declared in modules another change is rewriting (runner, generator, compiler, memory), so branded here, where the
// user-facing API imports them, instead of extending StrataUserError there.
for (const errorClass of [WeightError, ContextOverflowError, UnknownSequenceError, ShapeError, MemoryError]) declareUserError(errorClass);

export class ModelNotFoundError extends StrataUserError {
  override name = 'ModelNotFoundError';
}

/** A prompt that cannot be generated from: empty, text without a tokenizer, or longer than the capacity. */
export class PromptError extends StrataUserError {
  override name = 'PromptError';
}

/** Session options the device cannot hold (a capacity whose KV cache exceeds one GPU buffer, ...). */
export class SessionOptionsError extends StrataUserError {
  override name = 'SessionOptionsError';
}

export interface LoadProgress {
  stage: 'device' | 'config' | 'tokenizer' | 'weights' | 'compile' | 'warm-up' | 'ready';
  /** Programs compiled so far and in all ('compile'). */
  done?: number;
  total?: number;
  detail?: string;
}

export interface SessionOptions {
  /** Default: the process's shared device (runtime/device.ts getSharedDevice). */
  device?: StrataDevice;
  /** Sequences that can decode together. Default 1. */
  slots?: number;
  /** Tokens per sequence, prompt and output. Default min(2048, the model's max positions). */
  capacity?: number;
  /** Prefill chunk sizes (tokens per step); a prompt runs in chunks of these, the last padded. Default [16, 128]. */
  prefillChunks?: number[];
  /** Decode buckets (rows per step). Default [1, slots]. */
  decodeRows?: number[];
  /** Decode steps per submission (K): the host reads generated tokens once per K steps. Default 8. */
  stepsPerSubmit?: number;
  /**
   * Which programs run once while loading, for drivers that compile shaders at their first dispatch (lavapipe:
   * 0.1-3 s a kernel; GPU drivers compile when the pipeline is created, at load, whatever this says):
   * 'first' (default) the programs a first generation runs: the prefill buckets `prompt` runs through (without a
   * prompt, the smallest) and the smallest decode bucket (one row by default), greedy and sampling; 'all' (or true) every program; false
   * none. Every program's pipelines and bind groups are created at load either way, so a later first use creates
   * nothing; on such a driver it compiles then, and that generation's `stats.firstRuns` names the program.
   */
  warmUp?: boolean | 'first' | 'all';
  /** Loading and compiling progress. */
  onProgress?: (event: LoadProgress) => void;
  /**
   * A prompt the caller is about to generate from: checked (not empty, encodable, within the capacity) before
   * weights are uploaded or anything is compiled, so a bad one fails in a second, not after the load.
   */
  prompt?: Prompt;
  /** With `prompt`: it will be rendered through the chat template. */
  chat?: boolean;
  /**
   * Keep prompt prefixes on the GPU for reuse (runtime/prefixCache.ts): `entries` spare memory slots (each a
   * slot's KV and recurrent state: the budget), a prefix kept every `every` prompt tokens at chunk boundaries
   * (default: the largest prefill chunk) and where each sequence ends. Default: off.
   */
  prefixCache?: { entries: number; every?: number };
  /**
   * Block-quantize the 16/32-bit linear and embedding weights on load: 'q8' (int8, Q8_0-like) or 'q4' (4-bit with
   * a min, Q4_1-like); 32-element blocks with f16 constants, decoded inside the kernels. Default: as stored.
   */
  weights?: QuantStorage;
  /**
   * What attention layers keep (default: the model's, dense or its sliding windows): `{ kind: 'lastRecent', sinks,
   * recent }`, `{ kind: 'h2o', recent, heavy }`, `{ kind: 'window', window }` or `{ kind: 'dense' }`, for every
   * attention layer or as `{ [layer]: policy }`.
   */
  kvPolicy?: KvPolicySetting;
  /**
   * A module from `strata compile` for this model: its programs are used as they are (no tracing or compiling), and
   * its session shape (slots, capacity, prefill chunks, decode rows, steps per submit) replaces those options.
   */
  aot?: AotModel;
  /** Compile against these limits instead of the device's (what `strata compile` does for a portable module). */
  compileLimits?: DeviceLimits;
  /** Called with each program traced and compiled while loading. */
  onCompiled?: (key: string, program: Program) => void;
}

/** An AOT module that does not fit this model or device. */
export class AotModuleError extends StrataUserError {
  override name = 'AotModuleError';
}

export interface GenerateOptions extends SequenceOptions {
  /** Strings that end generation; the text stops before the first one found. */
  stop?: string[];
  /** Render a string prompt as one user message through the model's chat template. Default false. */
  chat?: boolean;
}

/** Prompt forms: text, chat messages (rendered with the tokenizer's chat template), or token ids. */
export type Prompt = string | readonly ChatMessage[] | { ids: readonly number[] };

/** A model on a device: programs compiled, weights uploaded, cache buffers allocated; ready to generate. */
export class Session {
  private constructor(
    /** The folder or URL the model came from, as given. */
    readonly modelDir: string,
    readonly config: ModelConfig,
    readonly model: ModelDef,
    readonly runner: ModelRunner,
    readonly generator: Generator,
    /** undefined when the folder has no tokenizer.json: prompts must then be token ids. */
    readonly tokenizer: Tokenizer | undefined,
    private readonly checkpoint: TensorSource,
    readonly loadSeconds: number,
    /** Cached prompt prefixes, when loaded with `prefixCache`. */
    readonly prefixCache: PrefixCache | undefined,
    /** The AOT module variant the session runs ('portable', an adapter's name), when loaded with `aot`. */
    readonly aotTarget: string | undefined,
  ) {}

  /**
   * Loads a model folder: a path (Node) or URL (browser) as a string, or any ModelSource (a fetch source, files a
   * user picked, ...), or a GGUF file (`*.gguf`, a path in Node, see runtime/gguf.ts). Only byte ranges of the
   * checkpoint are read, one tensor at a time.
   */
  static async load(location: string | ModelSource, options: SessionOptions = {}): Promise<Session> {
    const t0 = performance.now();
    const progress = options.onProgress ?? (() => {});
    const source = isModelSource(location) ? location : sourceFor(location);
    const modelDir = source.location;
    // Everything that can be checked from the folder, the config, the tokenizer and the options is checked
    // before the first weight is uploaded or the first program compiled.
    const ggufFile = typeof location === 'string' && location.endsWith('.gguf') ? await openGguf(location) : undefined;
    if (!ggufFile) await checkModelFolder(source);
    const configFile = ggufFile ? `${modelDir} (GGUF metadata)` : source.where('config.json');
    progress({ stage: 'config', detail: configFile });
    const config = ggufFile ? parseConfig(ggufFile.config, configFile) : await loadConfig(source);
    checkRunnable(config, configFile);
    const quantization = ggufFile ? undefined : hfQuantization(config.raw, configFile);
    const model = buildModel(config);
    progress({ stage: 'tokenizer' });
    const tokenizer = ggufFile
      ? ggufFile.tokenizer && new Tokenizer(ggufFile.tokenizer.json, ggufFile.tokenizer.config, `${modelDir} (GGUF tokenizer)`)
      : (await sourceHas(source, 'tokenizer.json')) ? await Tokenizer.load(source) : undefined;
    const aot = options.aot;
    if (aot !== undefined && (aot?.format !== AOT_FORMAT || !Array.isArray(aot.variants)))
      throw new AotModuleError(`the aot option is not a module written by \`strata compile\` (format ${JSON.stringify(elide(String(aot?.format), 40))}, expected ${JSON.stringify(AOT_FORMAT)})`);
    if (aot && aot.family !== model.family) throw new AotModuleError(`the AOT module was compiled for a ${aot.family} model, but ${configFile} is ${model.family}`);
    const slots = aot?.session.slots ?? options.slots ?? 1;
    const maxPositions = maxPositionsOf(config);
    const capacity = aot?.session.capacity ?? options.capacity ?? Math.min(2048, maxPositions ?? 2048);
    const chunks = aot?.session.prefillChunks ?? options.prefillChunks ?? [16, 128].filter((c) => c <= Math.max(16, capacity));
    checkRopeReach(config, capacity);
    const decodeRows = aot?.session.decodeRows ?? options.decodeRows;
    const stepsPerSubmit = aot?.session.stepsPerSubmit ?? options.stepsPerSubmit;
    const cacheEntries = options.prefixCache?.entries ?? 0;
    if (!Number.isInteger(cacheEntries) || cacheEntries < 0) throw new SessionOptionsError(`prefixCache.entries must be a non-negative integer, got ${cacheEntries}`);
    if (aot && cacheEntries > 0) throw new SessionOptionsError('a prefix cache needs memory slots that an AOT module does not have: load the module without prefixCache');
    const cacheEvery = options.prefixCache?.every ?? Math.max(...chunks);
    if (!Number.isInteger(cacheEvery) || cacheEvery < 0) throw new SessionOptionsError(`prefixCache.every must be a non-negative integer (0: only where sequences end), got ${cacheEvery}`);
    let promptIds: number[] | undefined;
    if (options.prompt !== undefined) {
      promptIds = encodePrompt(options.prompt, tokenizer, modelDir, options.chat === undefined ? {} : { chat: options.chat });
      checkPromptFits(promptIds, capacity, model.vocabSize);
    }
    progress({ stage: 'device' });
    const device = options.device ?? (await getSharedDevice());
    let spec: MemorySpec;
    try {
      spec = withKvPolicies(model.memory(), options.kvPolicy);
    } catch (error) {
      if (error instanceof RangeError) throw new SessionOptionsError(error.message);
      throw error;
    }
    checkMemoryFits(spec, { slots: slots + cacheEntries, capacity, maxChunk: Math.max(...chunks, 1) }, device.limits);
    // Refused rather than traced: the caller chose a module so as not to trace and compile, and a load that silently
    // takes many times longer would hide that the module does not fit.
    const variant = aot ? pickVariant(aot, device.limits, device.features, device.subgroupMatrix) : undefined;
    if (variant && 'refused' in variant)
      throw new AotModuleError(`the AOT module has no variant this device can run (${variant.refused}): compile it with \`strata compile --target device\` on this device, add --target portable, or load without it to trace`);
    // with a module's variant its limits, so that the steps the runner asks for (the generator's split steps:
    // DeviceLimits.decodeSplits) are the ones the module holds
    const compileLimits = options.compileLimits ?? variant?.limits;
    progress({ stage: 'weights', detail: 'opening the checkpoint' });
    const checkpoint = ggufFile ? ggufFile.checkpoint : hfQuantizedSource(await openSafetensors(source), quantization);
    try {
      // A validation error Dawn raises while buffers are made or programs compiled becomes a typed error here,
      // instead of being printed by dawn.node on stdout.
      const { runner, generator, prefixCache } = await withGpuErrorScope(device, 'loading the model', async () => {
        const runtime = new GpuRuntime(device);
        // the prefix cache's entries are memory slots past the ones sequences run in
        const runner = new ModelRunner(runtime, model, checkpoint, {
          slots: slots + cacheEntries,
          capacity,
          chunks,
          ...(options.weights ? { weights: options.weights } : {}),
          ...(options.kvPolicy ? { kvPolicy: options.kvPolicy } : {}),
          ...(variant ? { programs: variant.programs } : {}),
          ...(compileLimits ? { compileLimits } : {}),
          ...(options.onCompiled ? { onCompiled: options.onCompiled } : {}),
        });
        if (aot && runner.caches.model?.fingerprint !== aot.modelFingerprint) {
          runtime.destroy();
          throw new AotModuleError(`the AOT module was compiled for another ${aot.family} checkpoint (its config, tensor names, shapes or dtypes differ from ${modelDir}): compile it again from this folder`);
        }
        const prefixCache = cacheEntries
          ? new PrefixCache(runner.caches, { slots: Array.from({ length: cacheEntries }, (_, i) => slots + i), every: cacheEvery })
          : undefined;
        const generator = await Generator.create(runner, {
          servingSlots: slots,
          ...(prefixCache ? { prefix: prefixCache } : {}),
          ...(stepsPerSubmit !== undefined ? { stepsPerSubmit } : {}),
          ...(decodeRows ? { decodeRows } : {}),
          onProgress: (e) => progress({ stage: 'compile', done: e.done, total: e.total, detail: e.program }),
        });
        const warm = warmUpKeys(options.warmUp ?? 'first', chunks, generator.decodeRows[0]!, promptIds);
        if (warm !== 'none') {
          // only the keys the generator holds: the split steps exist only where the adapter's rule splits a bucket
          const held = generator.programs().map((p) => p.key);
          const keys = warm === 'all' ? held : warm.filter((key) => held.includes(key));
          progress({ stage: 'warm-up', detail: keys.join(', ') });
          await generator.warmUp(keys);
        }
        return { runner, generator, prefixCache };
      });
      progress({ stage: 'ready' });
      return new Session(modelDir, config, model, runner, generator, tokenizer, checkpoint, (performance.now() - t0) / 1000, prefixCache, variant?.target);
    } catch (error) {
      await checkpoint.close();
      throw error;
    }
  }

  get capacity(): number {
    return this.generator.capacity;
  }

  /** Slots sequences run in (the prefix cache's slots are not counted). */
  get slots(): number {
    return this.runner.options.slots - (this.prefixCache?.maxEntries ?? 0);
  }

  /** Token ids of a prompt as `generate` would feed them. */
  encode(prompt: Prompt, options: { chat?: boolean } = {}): number[] {
    return encodePrompt(prompt, this.tokenizer, this.modelDir, options);
  }

  /**
   * Starts generating: iterate the result for text pieces. Sequences started while others run decode beside them
   * (up to `slots`; later ones wait for a free slot). Throws ContextOverflowError when the prompt exceeds the
   * capacity; generation stops at the capacity otherwise (finishReason 'length').
   */
  generate(prompt: Prompt, options: GenerateOptions = {}): Generation {
    const { stop = [], chat, ...sequenceOptions } = options;
    const ids = this.encode(prompt, chat === undefined ? {} : { chat });
    checkPromptFits(ids, this.capacity, this.model.vocabSize);
    const stopIds = sequenceOptions.stopTokenIds ?? [...new Set([...this.model.eosTokenIds, ...(this.tokenizer?.eosTokenIds ?? [])])];
    const seq = this.generator.submit(ids, { ...sequenceOptions, stopTokenIds: stopIds });
    return new Generation(seq, ids, this.tokenizer, stop.filter((s) => s.length > 0));
  }

  /**
   * Continues the sequence a slot holds (a finished generation, a fork or a restored sequence) from its next
   * token, with the sampling state it carries (parameters, RNG, seen tokens, stop ids) unless `options` sets them:
   * the tokens equal what one longer generation would have produced. Run generations you mean to continue in a
   * known slot (`generate(prompt, { slot })`): a later generation may otherwise take the slot.
   */
  continue(slot: number, options: GenerateOptions = {}): Generation {
    const { stop = [], chat: _chat, ...sequenceOptions } = options;
    if (this.generator.busy(slot)) throw new MemoryError(`cannot continue slot ${slot}: a generation is running or waiting there (await it or cancel it first)`);
    const seq = this.generator.resume(slot, sequenceOptions);
    return new Generation(seq, [], this.tokenizer, stop.filter((s) => s.length > 0));
  }

  // ---------------------------------------------------------------- sequence operations on slots
  // A slot keeps its sequence (KV, recurrent state, sampling state, next token) after its generation ends, until
  // another generation takes it. These operations need the slots they touch idle (no generation running or
  // waiting there) and change nothing when they refuse (MemoryError, saying why and what is possible).

  /** Positions a slot holds (prompt and fed tokens; the newest sampled token waits to be fed). */
  length(slot: number): number {
    this.memory.restorablePositions(slot); // checks the slot
    return this.memory.lengths[slot]!;
  }

  /**
   * Copies the sequence in `src` into slot `dst` on the GPU: KV entries, recurrent states, positions, snapshots
   * and the generator's state (sampling parameters, RNG, seen tokens, next token). Continuing both with the same
   * options gives the same tokens.
   */
  async fork(src: number, dst: number): Promise<void> {
    await this.checkIdle(src, 'fork');
    await this.checkIdle(dst, 'fork into');
    this.memory.fork(src, dst);
    this.generator.forked(src, dst);
  }

  /**
   * Drops every position from `position` on: the slot then holds positions 0..position-1 and feeds the token
   * that was at `position` next. Recurrent layers, evicting KV layers (lastRecent, h2o) and sliding windows cut
   * past their slack go back only to a snapshot (elsewhere a MemoryError says why and lists the positions it can
   * go back to); the RNG is not rolled back (a continuation draws fresh numbers).
   */
  async rollback(slot: number, position: number): Promise<void> {
    await this.checkIdle(slot, 'roll back');
    this.rollbackIdle(slot, position);
  }

  private rollbackIdle(slot: number, position: number): void {
    if (position < this.memory.lengths[slot]! && !this.generator.knowsTokenAt(slot, position))
      throw new MemoryError(`slot ${slot}: the token at position ${position} is unknown to this session (a restored sequence), so it cannot be fed after a rollback`);
    this.memory.rollback(slot, position);
    this.generator.removed(slot, position, Infinity);
  }

  /**
   * Removes positions [from, to) of a slot's sequence (to: its end by default). A suffix is a rollback; a middle
   * range needs attention-only layers and a key shift (see HybridMemory.removeRange).
   */
  async removeRange(slot: number, from: number, to = Infinity): Promise<void> {
    await this.checkIdle(slot, 'remove positions of');
    if (to >= this.memory.lengths[slot]!) return this.rollbackIdle(slot, from);
    await this.memory.removeRange(slot, from, to);
    this.generator.removed(slot, from, to);
  }

  /** Copies a slot's recurrent states, rings and position to a snapshot plane on the GPU; returns its position. */
  async snapshot(slot: number): Promise<number> {
    await this.checkIdle(slot, 'snapshot');
    return this.memory.snapshot(slot);
  }

  /** Positions `rollback` accepts for a slot now. */
  restorablePositions(slot: number): number[] {
    return this.memory.restorablePositions(slot);
  }

  /**
   * Writes some slots (default: all) atomically: positions, KV entries, recurrent states and the generator's state,
   * with a checksum and the model's and memory layout's fingerprints. One readback. `to` is a path (Node: temp file +
   * rename) or a FileSystemFileHandle (browser: OPFS or a picked file; written through a swap file); `saveToBlob`
   * gives the same bytes as a Blob.
   */
  async save(to: string | FileSystemFileHandle, options: { slots?: number[] } = {}): Promise<SavedMemory> {
    const slots = await this.idleSlotsToSave(options.slots);
    return typeof to === 'string' ? saveMemory(this.memory, to, { slots }) : saveMemoryToHandle(this.memory, to, { slots });
  }

  /** What `save` writes, as a Blob (to download, or keep in IndexedDB); `restore` takes it back. */
  async saveToBlob(options: { slots?: number[] } = {}): Promise<Blob> {
    return saveMemoryToBlob(this.memory, { slots: await this.idleSlotsToSave(options.slots) });
  }

  /** The slots to save (default: the slots sequences run in; a prefix cache's slots belong to it), each idle. */
  private async idleSlotsToSave(slots = Array.from({ length: this.slots }, (_, i) => i)): Promise<number[]> {
    for (const slot of slots) await this.checkIdle(slot, 'save');
    return slots;
  }

  /**
   * Loads what `save` wrote (by a session of the same model and memory layout): a path, a Blob or File, or a
   * FileSystemFileHandle, into its slots, or one saved sequence into slot `into`; a refused file (RestoreError) leaves
   * the session as it was. The restored sequence can then be continued (`continue`) exactly where it stopped.
   */
  async restore(from: string | Blob | FileSystemFileHandle, options: { into?: number } = {}): Promise<RestoredMemory> {
    if (options.into !== undefined) await this.checkIdle(options.into, 'restore into');
    else for (let slot = 0; slot < this.slots; slot++) await this.checkIdle(slot, 'restore into');
    const restored =
      typeof from === 'string'
        ? await restoreMemory(this.memory, from, options)
        : isFileHandle(from)
          ? await restoreMemoryFromHandle(this.memory, from, options)
          : await restoreMemoryFromBlob(this.memory, from, options);
    for (const s of restored.sequences) this.generator.restored(s.into, await this.memory.readSlot(s.into));
    return restored;
  }

  private get memory() {
    return this.runner.caches;
  }

  /** Refuses a slot a generation runs in or waits for; waits for steps still in flight for one that ended. */
  private async checkIdle(slot: number, what: string): Promise<void> {
    if (!Number.isInteger(slot) || slot < 0 || slot >= this.slots) throw new MemoryError(`cannot ${what} slot ${slot}: this session has slots 0..${this.slots - 1}`);
    if (this.generator.busy(slot)) throw new MemoryError(`cannot ${what} slot ${slot}: a generation is running or waiting there (await it or cancel it first)`);
    await this.generator.settled(slot);
  }

  /** Stops a running or waiting generation by id; UnknownSequenceError if none has that id. */
  cancel(id: number): void {
    this.generator.cancel(id);
  }

  /** Ids of generations waiting or running. */
  sequences(): number[] {
    return this.generator.sequences();
  }

  /** Cancels every generation, waits for the device loop to stop, and frees the session's GPU buffers. */
  async close(): Promise<void> {
    for (const id of this.generator.sequences()) this.generator.cancel(id);
    await this.generator.idle();
    this.runner.runtime.destroy();
    await this.checkpoint.close();
  }

  /** Bytes and shapes of this session's cache buffers, per layer (KV, recurrent states), as allocated. */
  memoryPlan(): MemoryReport {
    return memoryReport(this.runner.spec, this.runner.memory);
  }

  /** Device counters (pipelines, bind groups, buffers created; submits, readbacks, dispatches). */
  get counters() {
    return this.runner.runtime.counters;
  }
}

/** A prompt as token ids: text through the tokenizer (and the chat template with `chat`), ids as given. */
/** The programs a load warms up (see SessionOptions.warmUp): program keys, or all or none of them. */
export function warmUpKeys(warmUp: boolean | 'first' | 'all', chunks: readonly number[], rows: number, promptIds: readonly number[] | undefined): string[] | 'all' | 'none' {
  if (warmUp === false) return 'none';
  if (warmUp === true || warmUp === 'all') return 'all';
  const buckets = promptIds ? promptChunks(promptIds.length, chunks).map((c) => c.bucket) : [Math.min(...chunks)];
  // the decode buckets' split steps too, where the generator has them (keys it lacks warm nothing)
  return [...new Set(buckets)].map(prefillKey).concat(decodeKey(rows, 'greedy'), decodeKey(rows, 'sample'), decodeKey(rows, 'greedy', true), decodeKey(rows, 'sample', true));
}

function encodePrompt(prompt: Prompt, tokenizer: Tokenizer | undefined, modelDir: string, options: { chat?: boolean }): number[] {
  let ids: number[];
  if (typeof prompt === 'object' && 'ids' in prompt) ids = [...prompt.ids];
  else {
    if (!tokenizer) {
      throw new PromptError(
        `${modelDir} has no tokenizer.json: pass the prompt as token ids (\`strata generate --prompt-ids 1,2,3\`, or { ids: [...] } in the API), ` +
          "or copy tokenizer.json (and tokenizer_config.json) from the model's Hugging Face repository into the folder",
      );
    }
    if (typeof prompt === 'string' && !options.chat) ids = tokenizer.encode(prompt);
    else {
      const messages = typeof prompt === 'string' ? [{ role: 'user', content: prompt }] : prompt;
      // the rendered template carries its own special tokens, as HF's apply_chat_template(tokenize=True)
      ids = tokenizer.encode(tokenizer.applyChatTemplate(messages), { addSpecialTokens: false });
    }
  }
  if (ids.length === 0) {
    throw new PromptError(
      typeof prompt === 'string' ? `the prompt ${JSON.stringify(elide(prompt, 40))} encodes to no tokens: pass some text` : 'the prompt is empty: pass at least one token',
    );
  }
  return ids;
}

/** A prompt of ids the model has, that fits a sequence; checked before loading when the prompt is known. */
function checkPromptFits(ids: readonly number[], capacity: number, vocabSize: number): void {
  const bad = ids.findIndex((id) => !Number.isInteger(id) || id < 0 || id >= vocabSize);
  if (bad >= 0) throw new PromptError(`prompt token ${elide(String(ids[bad]), 40)} (at ${bad}) is not an id of this model's vocabulary (0..${vocabSize - 1})`);
  if (ids.length > capacity) {
    throw new ContextOverflowError(
      `the prompt has ${ids.length} tokens but a sequence holds at most ${capacity} (the session's capacity): shorten the prompt or raise the capacity (--capacity)`,
    );
  }
}

/**
 * Refuses a capacity past the positions where transformers would change a rope's frequencies (dynamic NTK,
 * longrope's long factors): Strata's tables are fixed, so later positions would silently differ.
 */
function checkRopeReach(config: ModelConfig, capacity: number): void {
  const attention = (config as { attention?: { rope: RopeConfig | null; maxPositionEmbeddings: number } }).attention;
  if (!attention?.rope) return;
  const reach = ropePositionLimit(attention.rope, attention.maxPositionEmbeddings);
  if (reach && capacity > reach.positions) {
    throw new SessionOptionsError(
      `capacity ${capacity} reaches past ${reach.field} (${reach.positions}), where rope type "${attention.rope.type}" changes its frequencies; Strata keeps them fixed: lower the capacity (--capacity) to at most ${reach.positions}`,
    );
  }
}

/**
 * Refuses a memory plan with a buffer larger than the device binds (KV caches grow with slots x capacity): the
 * buffers would fail to allocate, and every kernel using them to compile.
 */
function checkMemoryFits(spec: MemorySpec, memory: MemoryOptions, limits: Readonly<Record<string, number>>): void {
  const largest = Math.min(limits.maxBufferSize ?? Infinity, limits.maxStorageBufferBindingSize ?? Infinity);
  const buffers: { what: string; bytes: number; perPosition: boolean }[] = [];
  spec.forEach((layer, index) => {
    const own = ownKv(layer);
    if (own) {
      buffers.push({ what: `layer ${index}'s K cache`, bytes: memory.slots * kvSlotBytes(own, memory, 'k'), perPosition: true });
      buffers.push({ what: `layer ${index}'s V cache`, bytes: memory.slots * kvSlotBytes(own, memory, 'v'), perPosition: true });
    }
    for (const state of layer.states) buffers.push({ what: `layer ${index}'s ${state.name} state`, bytes: memory.slots * stateSlotBytes(state), perPosition: false });
  });
  const helpers = helperBufferBytes(spec, memory);
  buffers.push({ what: 'the memory copy scratch buffer', bytes: Math.max(helpers.scratch, helpers.zero), perPosition: true });
  const tooBig = buffers.find((buffer) => buffer.bytes > largest);
  if (!tooBig) return;
  const hint = tooBig.perPosition
    ? `lower the capacity (now ${memory.capacity}) or the slots (now ${memory.slots})`
    : `lower the slots (now ${memory.slots})`;
  throw new SessionOptionsError(
    `${tooBig.what} would need ${tooBig.bytes} bytes in one GPU buffer, but this adapter binds at most ${largest}: ${hint}`,
  );
}

async function checkModelFolder(source: ModelSource): Promise<void> {
  const given = source.location;
  const hint = 'Pass the folder of a Hugging Face checkpoint (config.json, *.safetensors, tokenizer.json), e.g. assets/models/tiny-granite-code';
  try {
    await source.stat('config.json');
    return;
  } catch (error) {
    if (!(error instanceof SourceReadError && error.missing)) return; // there but unreadable: loadConfig says why
  }
  // no config.json: say whether the folder itself is missing
  const folderProblem = await source.list().then(
    () => null,
    (error: unknown) => readFailureReason(error),
  );
  const resolved = (source as { folder?: string }).folder ?? given; // a Node folder, made absolute
  if (folderProblem === 'ENOENT') throw new ModelNotFoundError(`model folder '${given}' does not exist (resolved to ${resolved}). ${hint}`);
  if (folderProblem === 'ENOTDIR') throw new ModelNotFoundError(`'${given}' is not a folder. ${hint}`);
  throw new ModelNotFoundError(`'${given}' has no config.json, so it is not a model folder. ${hint}`);
}

function maxPositionsOf(config: ModelConfig): number | undefined {
  const c = config as { attention?: { maxPositionEmbeddings?: number }; maxPositionEmbeddings?: number };
  return c.attention?.maxPositionEmbeddings ?? c.maxPositionEmbeddings;
}
