// The generation engine: prompts are prefilled in bucket-sized chunks and the first token is sampled on the GPU;
// then K decode steps are recorded into one submission, each feeding the token the previous step sampled. The
// host reads one small buffer per submission (the token ring) and nothing else. Sequences join and leave slots
// between submissions; the programs never change.
import type { Graph } from '../compiler/ir.ts';
import { Tensor } from '../dsl/tensor.ts';
import { constant, input, state, trace } from '../dsl/trace.ts';
import { GREEDY, PARAM_STRIDE, type SamplingParams, isSampling, packSamplingParams, pcgNext, sampleTokens, seedState } from '../dsl/nn/sampling.ts';
import type { Counters, Executable, GpuRuntime } from './gpuRuntime.ts';
import { ContextOverflowError, type ModelRunner } from './modelRunner.ts';

/** Stop token ids a sequence may have (model eos ids plus the caller's). */
export const MAX_STOP_IDS = 8;

/** The generator's device state, per slot; shared by name by every program of one runner. */
const STATE = {
  /** [slots, SLOT_FIELDS] i32, one row per slot written by one scatter: see SLOT */
  slot: 'gen.slot',
  /** [slots * (K + 1)] i32: column position % K holds the token sampled at that position; column K the first token */
  ring: 'gen.token_ring',
  /** [slots] u32 */
  rng: 'gen.rng',
  /** [slots * V] f32: 1 for every token in the slot's prompt or output (repetition penalty) */
  seen: 'gen.seen',
  /** [slots, PARAM_STRIDE] f32: packSamplingParams rows */
  params: 'gen.sampling',
  /** [slots, MAX_STOP_IDS] i32, -1 padded */
  stop: 'gen.stop_ids',
} as const;

/** Columns of a slot's row of STATE.slot. */
const SLOT = {
  /** the token the slot feeds at its next decode step */
  next: 0,
  /** tokens the slot may still sample */
  left: 1,
  /** 1 once the slot sampled a stop token or its last allowed token (or before its prompt is in) */
  done: 2,
} as const;
const SLOT_FIELDS = 4;

export type SamplerMode = 'greedy' | 'sample';

interface Layout {
  slots: number;
  vocab: number;
  /** decode steps per submission */
  K: number;
}

function slotField(rows: Tensor, field: keyof typeof SLOT): Tensor {
  return rows.slice(1, SLOT[field], SLOT[field] + 1).reshape(rows.shape[0]!);
}

/**
 * Samples the next token of every row from its logits [R, V] and records it for the row's slot: next token,
 * tokens left and done flag (one row write), seen set, RNG state. Rows whose slot is out of range change
 * nothing. -> [R] i32
 */
function sampleAndCommit(layout: Layout, logits: Tensor, slot: Tensor, mode: SamplerMode): Tensor {
  const { slots, vocab } = layout;
  const R = slot.shape[0]!;
  // greedy batches leave the RNG alone: only sampling rows use it, and they always run in 'sample' batches
  const rng = mode === 'sample' ? pcgNext(state(STATE.rng, [slots], 'u32').gather(slot)) : undefined;
  const token = sampleTokens(
    {
      logits,
      params: state(STATE.params, [slots, PARAM_STRIDE]).gather(slot),
      uniform: rng?.uniform ?? constant(0).broadcastTo([R]),
      seen: state(STATE.seen, [slots * vocab]).reshape(slots, vocab).gather(slot),
    },
    mode,
  );
  const stopIds = state(STATE.stop, [slots, MAX_STOP_IDS], 'i32').gather(slot);
  const isStop = Tensor.where(stopIds.eq(token.reshape(R, 1)), 1, 0).max(-1).gt(0);
  const slotState = state(STATE.slot, [slots, SLOT_FIELDS], 'i32');
  const left = slotField(slotState.gather(slot), 'left').sub(1);
  const live = slot.lt(slots);
  const row = new Array<Tensor>(SLOT_FIELDS).fill(constant(0, 'i32').broadcastTo([R]));
  row[SLOT.next] = token;
  row[SLOT.left] = left;
  row[SLOT.done] = isStop.or(left.le(0)).cast('i32');
  slotState.scatter(slot, Tensor.concat(row.map((x) => x.reshape(R, 1)), 1));
  if (rng) state(STATE.rng, [slots], 'u32').scatter(slot, rng.state);
  state(STATE.seen, [slots * vocab]).scatter(Tensor.where(live, slot.mul(vocab).add(token), slots * vocab), constant(1).broadcastTo([R]));
  return token;
}

function ringState(layout: Layout): Tensor {
  return state(STATE.ring, [layout.slots * (layout.K + 1)], 'i32');
}

/**
 * A prefill chunk of T tokens for one slot (host inputs tokens/slot_ids/valid, as ModelRunner's programs) that
 * marks the prompt tokens seen and, when the host sets `commit` (the prompt's last chunk), samples the first
 * token from the last real position into the slot's next token and the ring's column K.
 */
function tracePrefill(runner: ModelRunner, layout: Layout, T: number): Graph {
  const { slots, vocab, K } = layout;
  const model = runner.model;
  return trace(() => {
    const ctx = runner.context(1, T);
    const hidden = model.forward(ctx).reshape(T, model.hiddenSize);
    const logits = model.logits(ctx, hidden.gather(ctx.valid.sub(1))); // [1,V]
    // the prompt counts for the repetition penalty, as in HF
    const seenIndex = Tensor.where(ctx.tokenValid, ctx.slotIds.reshape(1, 1).mul(vocab).add(ctx.tokens), slots * vocab);
    state(STATE.seen, [slots * vocab]).scatter(seenIndex, constant(1).broadcastTo([1, T]));
    const slot = Tensor.where(input('commit', [1], 'i32').eq(1), ctx.slotIds, slots);
    const token = sampleAndCommit(layout, logits, slot, 'sample');
    ringState(layout).scatter(Tensor.where(slot.lt(slots), slot.mul(K + 1).add(K), slots * (K + 1)), token);
    ctx.finish();
  });
}

/**
 * One decode step over `rows` rows. `decode_slots` (host-written when the batch changes) maps rows to slots;
 * a row whose slot is out of range, or done, feeds valid = 0 through an out-of-range slot, so none of its state
 * changes. Tokens come from and go back to the device.
 */
function traceDecode(runner: ModelRunner, layout: Layout, rows: number, mode: SamplerMode): Graph {
  const { slots, K } = layout;
  const model = runner.model;
  return trace(() => {
    const rowSlot = input('decode_slots', [rows], 'i32');
    const inRange = rowSlot.lt(slots);
    const slotRows = state(STATE.slot, [slots, SLOT_FIELDS], 'i32').gather(rowSlot); // out-of-range rows read the last slot
    const active = inRange.and(slotField(slotRows, 'done').eq(0));
    const slot = Tensor.where(active, rowSlot, slots);
    const tokens = slotField(slotRows, 'next').reshape(rows, 1);
    const ctx = runner.context(rows, 1, { tokens, slotIds: slot, valid: active.cast('i32') });
    const hidden = model.forward(ctx).reshape(rows, model.hiddenSize);
    const token = sampleAndCommit(layout, model.logits(ctx, hidden), slot, mode);
    ctx.finish();
    // the ring column is the position the token is sampled at, mod K: the host knows it without asking
    ringState(layout).scatter(Tensor.where(active, slot.mul(K + 1).add(ctx.start.mod(K)), slots * (K + 1)), token);
  });
}

// ---------------------------------------------------------------- host side

/** One submission: who was in it, and where its tokens are in the ring. */
interface Batch {
  seqs: Sequence[];
  /** sequences whose first token (ring column K) this batch reads */
  first: Set<Sequence>;
  steps: number;
  /** ring column of each sequence's first step in this batch */
  firstColumn: Map<Sequence, number>;
  staging: GPUBuffer;
  mapped: Promise<void>;
}

export class UnknownSequenceError extends Error {
  override name = 'UnknownSequenceError';
}

export type FinishReason = 'stop' | 'length' | 'cancelled' | 'aborted' | 'error';

export interface SequenceOptions extends Partial<SamplingParams> {
  /** Tokens to generate at most (the stop token included). Default 256; fewer when the capacity runs out. */
  maxNewTokens?: number;
  /** Seeds the slot's RNG: the same seed, prompt and options give the same tokens. Default: random. */
  seed?: number;
  /** Token ids that end the sequence (kept as its last id). Default: the model's eos ids. */
  stopTokenIds?: number[];
  signal?: AbortSignal;
}

export interface SequenceStats {
  promptTokens: number;
  /** Prompt tokens taken from the prefix cache (not prefilled). */
  cachedPromptTokens: number;
  generatedTokens: number;
  prefillSeconds: number;
  prefillTokensPerSecond: number;
  /** From the call to the first token on the host (queueing, prefill, the first decode submission). */
  timeToFirstTokenSeconds: number;
  decodeSeconds: number;
  /** Tokens after the first over the time from the end of prefill to the last token on the host. */
  decodeTokensPerSecond: number;
  /** Device work while the sequence was live; shared with sequences that decoded beside it. */
  submits: number;
  readbacks: number;
  dispatches: number;
  dispatchesPerToken: number;
  /** Kernels in one decode step of the largest bucket used (model + sampling). */
  dispatchesPerDecodeStep: number;
  stepsPerSubmit: number;
}

export interface GeneratorOptions {
  /** Decode steps per submission (K); the host reads the token ring once per K steps. Default 8. */
  stepsPerSubmit?: number;
  /** Decode buckets (rows per step); the smallest that holds the live sequences runs. Default [1, slots]. */
  decodeRows?: number[];
  /** Called while programs compile (warm-up). */
  onProgress?: (event: { done: number; total: number; program: string }) => void;
  /** Slots sequences run in: 0..servingSlots-1 (default every slot of the runner; the rest belong to a prefix cache). */
  servingSlots?: number;
  /** Reuses cached prompt prefixes at admission and keeps new ones (runtime/prefixCache.ts). */
  prefix?: PrefixHooks;
}

/** What the generator asks of a prefix cache; see PrefixCache. */
export interface PrefixHooks {
  /** Fills a cleared slot with the longest cached prefix of the prompt; returns its length (0: none). */
  restore(slot: number, promptIds: readonly number[]): number;
  /** Whether to keep the prompt's prefix after the prefill chunk that ends at `length`. */
  wantsBoundary(length: number): boolean;
  /** Keeps what the slot holds, which is exactly `ids`. */
  insert(slot: number, ids: readonly number[]): void;
}

let sequenceIds = 0;

/** One generation in flight: an async iterable of token-id batches (one batch per readback). */
export class Sequence implements AsyncIterable<number[]> {
  readonly id = ++sequenceIds;
  /** Generated ids so far (prompt excluded; a stop token is kept as the last id). */
  readonly ids: number[] = [];
  finishReason: FinishReason | undefined;
  stats: SequenceStats | undefined;
  error: unknown;
  readonly finished: Promise<void>;

  /** @internal host bookkeeping */
  slot = -1;
  /** @internal */ firstPending = false;
  /** @internal a submitted batch will deliver the first token */ firstRequested = false;
  /** @internal decode steps the slot may still take */ stepsLeft = 0;
  /** @internal decode steps submitted so far */ stepsSubmitted = 0;
  /** @internal */ cancelReason: FinishReason | undefined;
  /** @internal */ readonly times = { created: performance.now(), prefillStart: 0, prefillEnd: 0, firstToken: 0, end: 0 };
  /** @internal */ counters0: Counters | undefined;
  /** @internal */ decodeKernels = 0;
  /** @internal prompt tokens restored from the prefix cache */ cachedTokens = 0;

  private readonly queue: number[][] = [];
  private wake: (() => void) | undefined;
  private resolveFinished!: () => void;

  constructor(
    readonly promptIds: readonly number[],
    /** Tokens this sequence may generate (maxNewTokens, clamped to the capacity). */
    readonly maxTotal: number,
    readonly params: SamplingParams,
    readonly seed: number,
    readonly stopIds: readonly number[],
    private readonly generator: Generator,
  ) {
    this.finished = new Promise((resolve) => (this.resolveFinished = resolve));
  }

  get isFinished(): boolean {
    return this.finishReason !== undefined;
  }

  /** Stops the sequence at the next submission boundary (a no-op once it finished). */
  cancel(reason: FinishReason = 'cancelled'): void {
    if (!this.isFinished) this.generator.cancel(this.id, reason);
  }

  /** @internal */
  push(ids: number[]): void {
    if (!ids.length) return;
    this.ids.push(...ids);
    this.queue.push(ids);
    this.wake?.();
  }

  /** @internal */
  finish(reason: FinishReason, stats: SequenceStats | undefined, error?: unknown): void {
    if (this.isFinished) return;
    this.finishReason = reason;
    this.stats = stats;
    this.error = error;
    this.wake?.();
    this.resolveFinished();
  }

  async *[Symbol.asyncIterator](): AsyncIterator<number[]> {
    try {
      for (;;) {
        const batch = this.queue.shift();
        if (batch) {
          yield batch;
          continue;
        }
        if (this.isFinished) {
          if (this.finishReason === 'error') throw this.error;
          return;
        }
        await new Promise<void>((resolve) => (this.wake = resolve));
        this.wake = undefined;
      }
    } finally {
      // a consumer that stops iterating (break, return, throw) ends the sequence
      this.cancel();
    }
  }
}

/** Runs sequences on a ModelRunner's slots. Create with `Generator.create` (compiles every program). */
export class Generator {
  readonly K: number;
  readonly decodeRows: number[];
  private readonly layout: Layout;
  private readonly prefill = new Map<number, Executable>();
  private readonly decode = new Map<string, Executable>();
  private readonly pending: Sequence[] = [];
  private readonly active = new Map<number, Sequence>(); // by slot
  private readonly live = new Map<number, Sequence>(); // by id: pending and active
  private readonly freeSlots: number[];
  private running: Promise<void> | undefined;
  private readonly staging: GPUBuffer[] = [];
  private batches = 0;
  private ringBytes = 0;
  private lastRowSlots = new Map<number, string>();
  private readonly zeroSeen: Float32Array;
  private readonly prefix: PrefixHooks | undefined;

  private constructor(
    readonly runner: ModelRunner,
    options: GeneratorOptions,
  ) {
    const slots = runner.options.slots;
    const serving = options.servingSlots ?? slots;
    if (!Number.isInteger(serving) || serving < 1 || serving > slots) throw new RangeError(`servingSlots must be an integer in 1..${slots}, got ${serving}`);
    this.prefix = options.prefix;
    this.K = options.stepsPerSubmit ?? 8;
    if (!Number.isInteger(this.K) || this.K < 1) throw new RangeError(`stepsPerSubmit must be a positive integer, got ${this.K}`);
    this.decodeRows = [...new Set([...(options.decodeRows ?? [1]), serving])].filter((r) => r >= 1 && r <= serving).sort((a, b) => a - b);
    this.layout = { slots, vocab: runner.model.vocabSize, K: this.K };
    this.freeSlots = Array.from({ length: serving }, (_, i) => i);
    this.zeroSeen = new Float32Array(runner.model.vocabSize);
  }

  get runtime(): GpuRuntime {
    return this.runner.runtime;
  }

  get capacity(): number {
    return this.runner.options.capacity;
  }

  /** Compiles and loads every program (prefill chunks, decode buckets x {greedy, sample}): the warm-up. */
  static async create(runner: ModelRunner, options: GeneratorOptions = {}): Promise<Generator> {
    const g = new Generator(runner, options);
    const jobs: { key: string; build: () => Promise<void> }[] = [];
    for (const T of [...new Set(runner.options.chunks)].sort((a, b) => a - b))
      jobs.push({ key: `prefill T=${T}`, build: async () => void g.prefill.set(T, await runner.loadProgram(`gen:prefill:${T}`, () => tracePrefill(runner, g.layout, T), { rows: 1, tokens: T })) });
    for (const rows of g.decodeRows)
      for (const mode of ['greedy', 'sample'] as const)
        jobs.push({ key: `decode rows=${rows} ${mode}`, build: async () => void g.decode.set(`${rows}:${mode}`, await runner.loadProgram(`gen:decode:${rows}:${mode}`, () => traceDecode(runner, g.layout, rows, mode), { rows, tokens: 1 })) });
    for (const [i, job] of jobs.entries()) {
      options.onProgress?.({ done: i, total: jobs.length, program: job.key });
      await job.build();
    }
    options.onProgress?.({ done: jobs.length, total: jobs.length, program: '' });
    g.ringBytes = g.layout.slots * (g.K + 1) * 4;
    // two, so that one batch's copy can be mapped while the next batch is in flight
    for (let i = 0; i < 2; i++) g.staging.push(g.runtime.createBuffer(g.ringBytes, `token ring readback ${i}`, GPUBufferUsage.MAP_READ | GPUBufferUsage.COPY_DST));
    return g;
  }

  /**
   * Runs every program once with every row inactive (out-of-range slots: nothing is written), so that drivers
   * that compile shaders at first use (lavapipe) do it now rather than during the first generation.
   */
  async warmUp(): Promise<void> {
    const { slots } = this.layout;
    for (const [T, exe] of this.prefill) {
      exe.writeInput('tokens', new Int32Array(T));
      exe.writeInput('slot_ids', new Int32Array([slots]));
      exe.writeInput('valid', new Int32Array([1]));
      exe.writeInput('commit', new Int32Array([0]));
      exe.run();
    }
    for (const [key, exe] of this.decode) {
      const rows = Number(key.split(':')[0]);
      exe.writeInput('decode_slots', new Int32Array(rows).fill(slots));
      this.lastRowSlots.delete(rows);
      exe.run();
    }
    await this.runtime.device.queue.onSubmittedWorkDone();
  }

  /** Kernels per decode step of a bucket (model and sampling). */
  dispatchesPerStep(rows: number, mode: SamplerMode): number {
    return this.decode.get(`${rows}:${mode}`)?.program.kernels.length ?? 0;
  }

  /** Ids of the sequences that are waiting or running. */
  sequences(): number[] {
    return [...this.live.keys()];
  }

  /**
   * Queues a prompt (token ids) and returns its Sequence; it starts at the next submission boundary with a free
   * slot. Throws ContextOverflowError when the prompt does not fit the capacity.
   */
  submit(promptIds: readonly number[], options: SequenceOptions = {}): Sequence {
    const P = promptIds.length;
    const V = this.layout.vocab;
    if (P === 0) throw new RangeError('the prompt is empty: pass at least one token');
    const bad = promptIds.find((t) => !Number.isInteger(t) || t < 0 || t >= V);
    if (bad !== undefined) throw new RangeError(`prompt token ${bad} is not an id of this model's vocabulary (0..${V - 1})`);
    if (P > this.capacity)
      throw new ContextOverflowError(
        `the prompt has ${P} tokens but a sequence holds at most ${this.capacity} (the session's capacity): shorten the prompt or load the session with a larger capacity`,
      );
    const maxNew = options.maxNewTokens ?? 256;
    if (!Number.isInteger(maxNew) || maxNew < 1) throw new RangeError(`maxNewTokens must be a positive integer, got ${maxNew}`);
    const params: SamplingParams = {
      temperature: options.temperature ?? GREEDY.temperature,
      topK: options.topK ?? GREEDY.topK,
      topP: options.topP ?? GREEDY.topP,
      minP: options.minP ?? GREEDY.minP,
      repetitionPenalty: options.repetitionPenalty ?? GREEDY.repetitionPenalty,
    };
    if (!(params.temperature >= 0)) throw new RangeError(`temperature must be >= 0, got ${params.temperature}`);
    if (!(params.topK >= 0) || !Number.isInteger(params.topK)) throw new RangeError(`topK must be a non-negative integer (0: off), got ${params.topK}`);
    if (!(params.topP > 0 && params.topP <= 1)) throw new RangeError(`topP must be in (0, 1] (1: off), got ${params.topP}`);
    if (!(params.minP >= 0 && params.minP <= 1)) throw new RangeError(`minP must be in [0, 1] (0: off), got ${params.minP}`);
    if (!(params.repetitionPenalty > 0)) throw new RangeError(`repetitionPenalty must be > 0 (1: off), got ${params.repetitionPenalty}`);
    const stopIds = [...new Set(options.stopTokenIds ?? this.runner.model.eosTokenIds)];
    if (stopIds.length > MAX_STOP_IDS) throw new RangeError(`at most ${MAX_STOP_IDS} stop token ids, got ${stopIds.length}`);
    // a prompt of P tokens leaves capacity - P positions to feed back, and the last sampled token needs none
    const maxTotal = Math.min(maxNew, this.capacity - P + 1);
    const seed = options.seed ?? Math.floor(Math.random() * 2 ** 32);
    const seq = new Sequence([...promptIds], maxTotal, params, seed, stopIds, this);
    if (options.signal) {
      if (options.signal.aborted) {
        seq.finish('aborted', undefined);
        return seq;
      }
      options.signal.addEventListener('abort', () => seq.cancel('aborted'), { once: true });
    }
    this.pending.push(seq);
    this.live.set(seq.id, seq);
    this.kick();
    return seq;
  }

  /** Ends a waiting or running sequence (at the next submission boundary if it is running). */
  cancel(id: number, reason: FinishReason = 'cancelled'): void {
    const seq = this.live.get(id);
    if (!seq) {
      const known = this.sequences();
      throw new UnknownSequenceError(`no sequence ${id} is waiting or running${known.length ? ` (live: ${known.join(', ')})` : ' (none is live)'}`);
    }
    const queued = this.pending.indexOf(seq);
    if (queued >= 0) {
      this.pending.splice(queued, 1);
      this.live.delete(id);
      seq.finish(reason, undefined);
      return;
    }
    seq.cancelReason ??= reason;
  }

  /** Resolves when every submitted sequence has finished. */
  async idle(): Promise<void> {
    while (this.running) await this.running;
  }

  private kick(): void {
    if (this.running) return;
    this.running = this.loop().finally(() => {
      this.running = undefined;
      if (this.pending.length || this.active.size) this.kick();
    });
  }

  /**
   * Admits waiting sequences into free slots, submits the next batch, then reads the previous one: one batch is
   * always in flight while the host reads, decodes and encodes, so the GPU does not wait on the host. The cost
   * is that a sequence that stopped on the device is known one batch later (at most K wasted steps).
   */
  private async loop(): Promise<void> {
    let inFlight: Batch | undefined;
    try {
      for (;;) {
        for (const seq of this.active.values()) if (seq.cancelReason) this.release(seq, seq.cancelReason);
        while (this.pending.length && this.freeSlots.length) await this.admit(this.pending.shift()!, this.freeSlots.shift()!);
        const next = this.submitBatch();
        if (inFlight) await this.readBatch(inFlight);
        inFlight = next;
        if (!inFlight) {
          // everything submitted has been read: a sequence still here has nothing more coming
          for (const seq of this.active.values()) this.release(seq, seq.cancelReason ?? 'length');
          if (!this.pending.length) break;
        }
      }
    } catch (error) {
      // a device or program failure ends every live sequence with the error instead of hanging its reader
      if (inFlight?.mapped) await inFlight.mapped.catch(() => undefined);
      for (const seq of [...this.live.values()]) {
        if (seq.slot >= 0) this.freeSlots.push(seq.slot);
        seq.finish('error', undefined, error);
      }
      this.live.clear();
      this.active.clear();
      this.pending.length = 0;
    }
  }

  private stateBuffer(name: string): GPUBuffer {
    const b = this.runtime.getNamed(`${this.runner.namespace}state:${name}`);
    if (!b) throw new Error(`generator state '${name}' has no buffer: the programs are not loaded`);
    return b;
  }

  /** Resets a slot for a new sequence (host writes of a few bytes per state) and prefills its prompt. */
  private async admit(seq: Sequence, slot: number): Promise<void> {
    const rt = this.runtime;
    const V = this.layout.vocab;
    seq.slot = slot;
    seq.counters0 = { ...rt.counters };
    seq.times.prefillStart = performance.now();
    this.runner.resetSlot(slot);
    const ids = seq.promptIds;
    const cached = this.prefix?.restore(slot, ids) ?? 0;
    seq.cachedTokens = cached;
    let seen = this.zeroSeen;
    if (cached > 0) {
      // the restored prefix was not prefilled here: mark its tokens seen as its prefill would have
      seen = new Float32Array(V);
      for (let i = 0; i < cached; i++) seen[ids[i]!] = 1;
    }
    rt.write(this.stateBuffer(STATE.seen), seen, slot * V * 4);
    rt.write(this.stateBuffer(STATE.params), packSamplingParams(seq.params), slot * PARAM_STRIDE * 4);
    rt.write(this.stateBuffer(STATE.rng), new Uint32Array([seedState(seq.seed)]), slot * 4);
    const stops = new Int32Array(MAX_STOP_IDS).fill(-1);
    stops.set(seq.stopIds);
    rt.write(this.stateBuffer(STATE.stop), stops, slot * MAX_STOP_IDS * 4);
    const row = new Int32Array(SLOT_FIELDS);
    row[SLOT.left] = seq.maxTotal;
    row[SLOT.done] = 1; // until the prompt's last chunk samples the first token
    rt.write(this.stateBuffer(STATE.slot), row, slot * SLOT_FIELDS * 4);

    const chunks = [...this.prefill.keys()].sort((a, b) => a - b);
    for (let at = cached; at < ids.length; ) {
      const left = ids.length - at;
      const T = chunks.find((c) => c >= left) ?? chunks[chunks.length - 1]!;
      const n = Math.min(T, left);
      const exe = this.prefill.get(T)!;
      const tokens = new Int32Array(T);
      tokens.set(ids.slice(at, at + n));
      exe.writeInput('tokens', tokens);
      exe.writeInput('slot_ids', new Int32Array([slot]));
      exe.writeInput('valid', new Int32Array([n]));
      exe.writeInput('commit', new Int32Array([at + n === ids.length ? 1 : 0]));
      exe.run();
      at += n;
      this.runner.lengths[slot] = at;
      if (at < ids.length && this.prefix?.wantsBoundary(at)) this.prefix.insert(slot, ids.slice(0, at));
    }
    // waits for the GPU (no data comes back) so that prefill and decode are timed apart
    await this.runtime.device.queue.onSubmittedWorkDone();
    seq.times.prefillEnd = performance.now();
    seq.firstPending = true;
    seq.stepsLeft = seq.maxTotal - 1;
    this.active.set(slot, seq);
    this.runner.caches.afterStep([slot]);
  }

  /**
   * Encodes up to K decode steps and a copy of the token ring into one submission. Returns undefined when no
   * live sequence needs anything more from the device.
   */
  private submitBatch(): Batch | undefined {
    const rt = this.runtime;
    const { slots, K } = this.layout;
    const seqs = [...this.active.values()].filter((s) => !s.cancelReason).sort((a, b) => a.slot - b.slot);
    const first = seqs.filter((s) => s.firstPending && !s.firstRequested);
    const steps = Math.min(K, Math.max(0, ...seqs.map((s) => s.stepsLeft)));
    if (steps === 0 && first.length === 0) return undefined;
    const rows = this.decodeRows.find((r) => r >= seqs.length)!;
    const mode: SamplerMode = seqs.some((s) => isSampling(s.params)) ? 'sample' : 'greedy';
    const exe = this.decode.get(`${rows}:${mode}`)!;
    const encoder = rt.device.createCommandEncoder();
    if (steps > 0) {
      const rowSlots = new Int32Array(rows).fill(slots);
      seqs.forEach((s, i) => (rowSlots[i] = s.slot));
      const key = rowSlots.join(',');
      if (this.lastRowSlots.get(rows) !== key) {
        exe.writeInput('decode_slots', rowSlots);
        this.lastRowSlots.set(rows, key);
      }
      const pass = encoder.beginComputePass();
      for (let i = 0; i < steps; i++) exe.encode(pass);
      pass.end();
    }
    const staging = this.staging[this.batches++ % 2]!;
    encoder.copyBufferToBuffer(this.stateBuffer(STATE.ring), 0, staging, 0, this.ringBytes);
    rt.submit([encoder.finish()]);
    rt.counters.readbacks++;
    // step i of a sequence feeds position P + i and writes its token to ring column (P + i) % K
    const firstColumn = new Map(seqs.map((s) => [s, (s.promptIds.length + s.stepsSubmitted) % K]));
    const batch: Batch = { seqs, first: new Set(first), steps, firstColumn, staging, mapped: staging.mapAsync(GPUMapMode.READ, 0, this.ringBytes) };
    for (const s of first) s.firstRequested = true;
    for (const s of seqs) {
      s.stepsLeft -= steps;
      s.stepsSubmitted += steps;
      if (steps > 0) s.decodeKernels = Math.max(s.decodeKernels, exe.program.kernels.length);
    }
    return batch;
  }

  /** Waits for a batch's copy of the ring and hands each sequence its new tokens. */
  private async readBatch(batch: Batch): Promise<void> {
    const { K } = this.layout;
    await batch.mapped;
    const ring = new Int32Array(batch.staging.getMappedRange(0, this.ringBytes).slice(0));
    batch.staging.unmap();
    const now = performance.now();
    const W = K + 1;
    const fed: number[] = [];
    for (const seq of batch.seqs) {
      if (seq.isFinished) continue; // released while this batch was in flight
      const base = seq.slot * W;
      const got: number[] = [];
      if (batch.first.has(seq)) {
        got.push(ring[base + K]!);
        seq.firstPending = false;
        seq.times.firstToken = now;
      }
      const column = batch.firstColumn.get(seq)!;
      for (let i = 0; i < batch.steps && !this.ends(seq, got); i++) got.push(ring[base + ((column + i) % K)]!);
      if (!seq.cancelReason) seq.push(got);
      // every token but the newest has been fed back (the newest waits in the slot's next token)
      this.runner.lengths[seq.slot] = seq.promptIds.length + Math.max(0, seq.ids.length - 1);
      if (seq.cancelReason) this.release(seq, seq.cancelReason);
      else if (this.ends(seq, [])) this.release(seq, seq.stopIds.includes(seq.ids[seq.ids.length - 1]!) ? 'stop' : 'length');
      else fed.push(seq.slot);
    }
    if (batch.steps > 0 && fed.length) this.runner.caches.afterStep(fed);
  }

  /** Whether the ids so far plus `more` end the sequence (a stop token, or the token budget). */
  private ends(seq: Sequence, more: number[]): boolean {
    const all = seq.ids.length + more.length;
    const last = more.length ? more[more.length - 1]! : seq.ids[seq.ids.length - 1];
    return all >= seq.maxTotal || (last !== undefined && all > 0 && seq.stopIds.includes(last));
  }

  /** Frees a slot and finishes its sequence with stats. Its device state stays as it is until the slot is reused. */
  private release(seq: Sequence, reason: FinishReason): void {
    // a sequence that ended on the device holds its prompt and every id but the newest: the next chat turn's prefix
    const fed = seq.promptIds.length + seq.ids.length - 1;
    if (this.prefix && !seq.cancelReason && (reason === 'stop' || reason === 'length') && this.runner.lengths[seq.slot] === fed)
      this.prefix.insert(seq.slot, [...seq.promptIds, ...seq.ids.slice(0, -1)]);
    this.active.delete(seq.slot);
    this.live.delete(seq.id);
    this.freeSlots.push(seq.slot);
    this.freeSlots.sort((a, b) => a - b);
    seq.times.end = performance.now();
    seq.finish(reason, this.statsOf(seq));
  }

  private statsOf(seq: Sequence): SequenceStats {
    const c = this.runtime.counters;
    const c0 = seq.counters0 ?? c;
    const t = seq.times;
    const prefillSeconds = (t.prefillEnd - t.prefillStart) / 1000;
    const decodeSeconds = (t.end - t.prefillEnd) / 1000;
    const n = seq.ids.length;
    const dispatches = c.dispatches - c0.dispatches;
    return {
      promptTokens: seq.promptIds.length,
      cachedPromptTokens: seq.cachedTokens,
      generatedTokens: n,
      prefillSeconds,
      prefillTokensPerSecond: prefillSeconds > 0 ? (seq.promptIds.length - seq.cachedTokens) / prefillSeconds : 0,
      timeToFirstTokenSeconds: t.firstToken ? (t.firstToken - t.created) / 1000 : 0,
      decodeSeconds,
      decodeTokensPerSecond: decodeSeconds > 0 && n > 1 ? (n - 1) / decodeSeconds : 0,
      submits: c.submits - c0.submits,
      readbacks: c.readbacks - c0.readbacks,
      dispatches,
      dispatchesPerToken: n ? dispatches / n : 0,
      dispatchesPerDecodeStep: seq.decodeKernels,
      stepsPerSubmit: this.K,
    };
  }
}
