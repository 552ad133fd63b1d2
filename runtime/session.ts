// The user-facing API: a model folder loaded into a session on a device, and `generate`, an async iterator of
// text pieces with stop strings, token limits, abort signals and per-call stats. Built on the Generator (token
// ids on the device) and the Tokenizer (text, streaming decode, chat templates).
import { type MemoryOptions, type MemoryReport, helperBufferBytes, kvSlotBytes, memoryReport, ownKv, stateSlotBytes } from '../caches/spec.ts';
import { MemoryError } from '../caches/hybridMemory.ts';
import { ShapeError } from '../compiler/ops.ts';
import { AOT_FORMAT, type AotModel, limitsShortfall } from '../compiler/aotModule.ts';
import type { DeviceLimits } from '../compiler/compile.ts';
import type { Program } from '../compiler/program.ts';
import { checkRunnable, loadConfig, type ModelConfig, parseConfig } from '../models/config.ts';
import { openGguf } from './gguf.ts';
import type { ModelDef } from '../models/model.ts';
import { buildModel } from '../models/registry.ts';
import { StrataUserError, declareUserError, elide } from '../base/errors.ts';
import { type ModelSource, SourceReadError, isModelSource, readFailureReason, sourceHas } from '../base/modelSource.ts';
import { sourceFor } from './defaultSource.ts';
import { type StrataDevice, getSharedDevice, withGpuErrorScope } from './device.ts';
import { type FinishReason, Generator, type Sequence, type SequenceOptions, type SequenceStats, UnknownSequenceError } from './generator.ts';
import { GpuRuntime } from './gpuRuntime.ts';
import { PrefixCache } from './prefixCache.ts';
import { ContextOverflowError, ModelRunner, WeightError } from './modelRunner.ts';
import { type TensorSource, openSafetensors } from './safetensors.ts';
import type { QuantStorage } from '../compiler/quantized.ts';
import { type ChatMessage, Tokenizer } from './tokenizer.ts';

export { ContextOverflowError } from './modelRunner.ts';
export { UnknownSequenceError } from './generator.ts';
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
  /** Run every program once while loading, for drivers that compile shaders at first use (lavapipe). Default true. */
  warmUp?: boolean;
  /** Loading and compiling progress (the warm-up compiles every program, so nothing compiles later). */
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

export interface GenerationResult {
  promptIds: number[];
  ids: number[];
  text: string;
  finishReason: FinishReason;
  stats: SequenceStats;
}

/** One generate call: iterate it for text pieces; afterwards `ids`, `text`, `finishReason` and `stats` are final. */
export class Generation implements AsyncIterable<string> {
  /** Generated ids (prompt excluded); truncated after the token that completes a stop string. */
  ids: number[] = [];
  text = '';
  finishReason: FinishReason | undefined;
  private started = false;

  constructor(
    readonly sequence: Sequence,
    readonly promptIds: number[],
    private readonly tokenizer: Tokenizer | undefined,
    private readonly stop: readonly string[],
  ) {}

  /** The generator's sequence id (for Session.cancel). */
  get id(): number {
    return this.sequence.id;
  }

  get stats(): SequenceStats | undefined {
    return this.sequence.stats;
  }

  cancel(): void {
    this.sequence.cancel();
  }

  async *[Symbol.asyncIterator](): AsyncIterator<string> {
    if (this.started) throw new Error('a Generation can be iterated once');
    this.started = true;
    const seq = this.sequence;
    const decoder = this.tokenizer?.createStreamDecoder({ skipSpecialTokens: true });
    const longestStop = Math.max(0, ...this.stop.map((s) => s.length));
    let full = ''; // all decoded text
    let emitted = 0; // chars of `full` handed out
    const ends: number[] = []; // length of `full` after each id
    const findStop = (): number => {
      let at = -1;
      const from = Math.max(0, emitted - longestStop);
      for (const s of this.stop) {
        const i = full.indexOf(s, from);
        if (i >= 0 && (at < 0 || i < at)) at = i;
      }
      return at;
    };
    const finishAtStop = (at: number): string => {
      const piece = full.slice(emitted, at);
      const stopEnd = at + this.stop.find((s) => full.startsWith(s, at))!.length;
      const keep = ends.findIndex((e) => e >= stopEnd);
      this.ids = seq.ids.slice(0, keep < 0 ? ends.length : keep + 1);
      this.text = full.slice(0, at);
      this.finishReason = 'stop';
      seq.cancel('stop');
      return piece;
    };
    for await (const batch of seq) {
      for (const id of batch) {
        if (decoder && !seq.stopIds.includes(id)) full += decoder.push(id);
        ends.push(full.length);
      }
      this.ids = seq.ids.slice(0, ends.length);
      const at = this.stop.length ? findStop() : -1;
      if (at >= 0) {
        const piece = finishAtStop(at);
        if (piece) yield piece;
        await seq.finished;
        return;
      }
      // hold back a tail that could still grow into a stop string
      let safe = full.length;
      for (const s of this.stop)
        for (let n = Math.min(s.length - 1, full.length - emitted); n > 0; n--)
          if (full.endsWith(s.slice(0, n))) {
            safe = Math.min(safe, full.length - n);
            break;
          }
      this.text = full.slice(0, safe);
      if (safe > emitted) {
        const piece = full.slice(emitted, safe);
        emitted = safe;
        yield piece;
      }
    }
    if (decoder) full += decoder.flush();
    const at = this.stop.length ? findStop() : -1;
    if (at >= 0) {
      const piece = finishAtStop(at);
      if (piece) yield piece;
      return;
    }
    this.text = full;
    this.ids = [...seq.ids];
    this.finishReason = seq.finishReason;
    if (full.length > emitted) yield full.slice(emitted);
  }

  /** Runs to the end and returns everything. */
  async result(): Promise<GenerationResult> {
    for await (const _ of this) void _;
    await this.sequence.finished;
    return { promptIds: this.promptIds, ids: this.ids, text: this.text, finishReason: this.finishReason!, stats: this.sequence.stats! };
  }
}

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
    const model = buildModel(config);
    progress({ stage: 'tokenizer' });
    const tokenizer = ggufFile
      ? ggufFile.tokenizer && new Tokenizer(ggufFile.tokenizer.json, ggufFile.tokenizer.config, `${modelDir} (GGUF tokenizer)`)
      : (await sourceHas(source, 'tokenizer.json')) ? await Tokenizer.load(source) : undefined;
    const aot = options.aot;
    if (aot !== undefined && (aot?.format !== AOT_FORMAT || typeof aot.programs !== 'object'))
      throw new AotModuleError(`the aot option is not a module written by \`strata compile\` (format ${JSON.stringify(elide(String(aot?.format), 40))}, expected ${JSON.stringify(AOT_FORMAT)})`);
    if (aot && aot.family !== model.family) throw new AotModuleError(`the AOT module was compiled for a ${aot.family} model, but ${configFile} is ${model.family}`);
    const slots = aot?.session.slots ?? options.slots ?? 1;
    const maxPositions = maxPositionsOf(config);
    const capacity = aot?.session.capacity ?? options.capacity ?? Math.min(2048, maxPositions ?? 2048);
    const chunks = aot?.session.prefillChunks ?? options.prefillChunks ?? [16, 128].filter((c) => c <= Math.max(16, capacity));
    const decodeRows = aot?.session.decodeRows ?? options.decodeRows;
    const stepsPerSubmit = aot?.session.stepsPerSubmit ?? options.stepsPerSubmit;
    const cacheEntries = options.prefixCache?.entries ?? 0;
    if (!Number.isInteger(cacheEntries) || cacheEntries < 0) throw new SessionOptionsError(`prefixCache.entries must be a non-negative integer, got ${cacheEntries}`);
    if (aot && cacheEntries > 0) throw new SessionOptionsError('a prefix cache needs memory slots that an AOT module does not have: load the module without prefixCache');
    const cacheEvery = options.prefixCache?.every ?? Math.max(...chunks);
    if (!Number.isInteger(cacheEvery) || cacheEvery < 0) throw new SessionOptionsError(`prefixCache.every must be a non-negative integer (0: only where sequences end), got ${cacheEvery}`);
    if (options.prompt !== undefined) {
      const ids = encodePrompt(options.prompt, tokenizer, modelDir, options.chat === undefined ? {} : { chat: options.chat });
      checkPromptFits(ids, capacity, model.vocabSize);
    }
    progress({ stage: 'device' });
    const device = options.device ?? (await getSharedDevice());
    checkMemoryFits(model, { slots: slots + cacheEntries, capacity, maxChunk: Math.max(...chunks, 1) }, device.limits);
    const shortfall = aot ? limitsShortfall(aot.limits, device.limits, device.features) : null;
    if (shortfall) throw new AotModuleError(`the AOT module cannot run on this device: ${shortfall}; compile it again with lower limits`);
    progress({ stage: 'weights', detail: 'opening the checkpoint' });
    const checkpoint = ggufFile ? ggufFile.checkpoint : await openSafetensors(source);
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
          ...(aot ? { programs: aot.programs } : {}),
          ...(options.compileLimits ? { compileLimits: options.compileLimits } : {}),
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
        if (options.warmUp ?? true) {
          progress({ stage: 'warm-up', detail: 'running every program once' });
          await generator.warmUp();
        }
        return { runner, generator, prefixCache };
      });
      progress({ stage: 'ready' });
      return new Session(modelDir, config, model, runner, generator, tokenizer, checkpoint, (performance.now() - t0) / 1000, prefixCache);
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
    return memoryReport(this.model.memory(), this.runner.memory);
  }

  /** Device counters (pipelines, bind groups, buffers created; submits, readbacks, dispatches). */
  get counters() {
    return this.runner.runtime.counters;
  }
}

/** A prompt as token ids: text through the tokenizer (and the chat template with `chat`), ids as given. */
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
 * Refuses a memory plan with a buffer larger than the device binds (KV caches grow with slots x capacity): the
 * buffers would fail to allocate, and every kernel using them to compile.
 */
function checkMemoryFits(model: ModelDef, memory: MemoryOptions, limits: Readonly<Record<string, number>>): void {
  const largest = Math.min(limits.maxBufferSize ?? Infinity, limits.maxStorageBufferBindingSize ?? Infinity);
  const buffers: { what: string; bytes: number; perPosition: boolean }[] = [];
  model.memory().forEach((layer, index) => {
    const own = ownKv(layer);
    if (own) {
      buffers.push({ what: `layer ${index}'s K cache`, bytes: memory.slots * kvSlotBytes(own, memory, 'k'), perPosition: true });
      buffers.push({ what: `layer ${index}'s V cache`, bytes: memory.slots * kvSlotBytes(own, memory, 'v'), perPosition: true });
    }
    for (const state of layer.states) buffers.push({ what: `layer ${index}'s ${state.name} state`, bytes: memory.slots * stateSlotBytes(state), perPosition: false });
  });
  const helpers = helperBufferBytes(model.memory(), memory);
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
