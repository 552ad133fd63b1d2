// The scheduler: sequences join and leave slots between submissions; a joining prompt is prefilled in chunks
// (promptChunks) and its first token sampled on the GPU; then K decode steps of every live slot are recorded
// into one submission, each feeding the token the previous step sampled, and the host reads one small buffer per
// submission (the token ring) and nothing else. A finished sequence's slot keeps its state (KV, recurrent state,
// sampling state, next token) until another sequence takes the slot, so it can be continued (`resume`), forked
// or saved. What is traced lives in stepPrograms.ts; sequences and text streams in sequences.ts.
import { GREEDY, PARAM_STRIDE, type SamplingParams, isSampling, packSamplingParams, seedState, unpackSamplingParams } from '../dsl/nn/sampling.ts';
import type { Executable, GpuRuntime } from './gpuRuntime.ts';
import { ContextOverflowError, type ModelRunner } from './modelRunner.ts';
import { promptChunks } from './promptChunks.ts';
import { type FinishReason, Sequence, type SequenceOptions, UnknownSequenceError, sequenceStats } from './sequences.ts';
import { GEN, type Layout, MAX_STOP_IDS, SLOT, SLOT_FIELDS, type SamplerMode, generatorStateEntries, traceDecode, tracePrefill } from './stepPrograms.ts';

export { MAX_STOP_IDS, type SamplerMode } from './stepPrograms.ts';
export { type FinishReason, Sequence, type SequenceOptions, type SequenceStats, UnknownSequenceError } from './sequences.ts';

// ---------------------------------------------------------------- host side

/** One submission: who was in it, and where its tokens are in the ring. */
interface Batch {
  seqs: Sequence[];
  /** sequences whose first token (ring column K) this batch reads */
  first: Set<Sequence>;
  steps: number;
  /** ring column of each sequence's first step in this batch */
  firstColumn: Map<Sequence, number>;
  /** The token ring and every slot's position as read after this batch's steps. */
  ring: Promise<{ tokens: Int32Array; positions: Int32Array }>;
  /** Resolves once the host has read the batch (or the loop failed). */
  read: Promise<void>;
  markRead: () => void;
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

/** What the scheduler asks of a prefix cache at admission and release; see PrefixCache. */
export interface PrefixHooks {
  /** Fills a cleared slot with the longest cached prefix of the prompt (the memory's fork); returns its length (0: none). */
  restore(slot: number, promptIds: readonly number[]): number;
  /** Whether to keep the prompt's prefix after the prefill chunk that ends at `length`. */
  wantsBoundary(length: number): boolean;
  /** Keeps what the slot holds, which is exactly `ids`. */
  insert(slot: number, ids: readonly number[]): void;
}

/**
 * Steps of a submission that is the `batches`-th since the GPU was last idle: K / 8 (at least 1), doubling up to K.
 * The first submission is recorded while the GPU waits; a short one starts the GPU sooner and brings the first
 * decoded tokens back sooner, and each next one is recorded while the GPU runs the one before (H200, llama-400m at
 * batch 1: recording 32 steps took ~11 ms, a tenth of a 128-token decode, with the GPU idle).
 */
export function rampSteps(K: number, batches: number): number {
  return Math.min(K, Math.max(1, Math.floor(K / 8)) * 2 ** Math.min(batches, 30));
}

/** The submissions' steps of `steps` decode steps from an idle GPU, as the generator makes them (rampSteps). */
export function submissionSteps(K: number, steps: number): number[] {
  const out: number[] = [];
  for (let done = 0; done < steps; ) {
    const n = Math.min(rampSteps(K, out.length), steps - done);
    out.push(n);
    done += n;
  }
  return out;
}

/** A generator program's key in progress events, stats and warm-up lists. */
export const prefillKey = (tokens: number) => `prefill T=${tokens}`;
export const decodeKey = (rows: number | string, mode: SamplerMode, split = false) => `decode rows=${rows} ${mode}${split ? ' split' : ''}`;
/** A decode step's key among the generator's programs (and, after `gen:decode:`, the runner's and an AOT module's). */
const decodeProgram = (rows: number, mode: SamplerMode, split: boolean) => `${rows}:${mode}${split ? ':split' : ''}`;

/** A program of the generator and how to run it so that it changes nothing (its warm-up run). */
export interface IdleProgram {
  key: string;
  exe: Executable;
  /** Writes inputs under which a run of `exe` touches no slot. */
  idle(): void;
}

/** What the host knows of the sequence a slot holds (undefined parts: unknown, e.g. after a restore). */
interface SlotHolding {
  /** Tokens at positions 0..length-1, then the next token to feed (the newest sampled one). */
  tokens: number[] | undefined;
  params: SamplingParams | undefined;
  stopIds: number[] | undefined;
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
  private readonly holdings: SlotHolding[];
  /** The sequence that last ran in each slot. */
  private readonly holders: (Sequence | undefined)[];
  private readonly unread = new Set<Batch>();
  private running: Promise<void> | undefined;
  private readonly staging: GPUBuffer[] = [];
  private batches = 0;
  /** Submissions with steps since the GPU was last idle (rampSteps). */
  private sinceIdle = 0;
  private ringBytes = 0;
  private lastRowSlots = new Map<number, string>();
  /**
   * Length from which a batch runs its bucket's decode step whose attention takes key slices, where the bucket has
   * one (its longest sequence holding this many positions: compiler/attentionSplit.ts DecodeSplits).
   */
  private readonly splitFrom: number | undefined;
  /** Keys of the programs that have run (warm-up included): a program's first run is noted in the stats. */
  private readonly ran = new Set<string>();
  private readonly zeroSeen: Float32Array;
  /** Slots sequences run in (0..serving-1); the runner's later slots belong to the prefix cache. */
  private readonly serving: number;
  private readonly prefix: PrefixHooks | undefined;

  private constructor(
    readonly runner: ModelRunner,
    options: GeneratorOptions,
  ) {
    const slots = runner.options.slots;
    const serving = options.servingSlots ?? slots;
    if (!Number.isInteger(serving) || serving < 1 || serving > slots) throw new RangeError(`servingSlots must be an integer in 1..${slots}, got ${serving}`);
    this.serving = serving;
    this.prefix = options.prefix;
    this.K = options.stepsPerSubmit ?? 8;
    if (!Number.isInteger(this.K) || this.K < 1) throw new RangeError(`stepsPerSubmit must be a positive integer, got ${this.K}`);
    this.decodeRows = [...new Set([...(options.decodeRows ?? [1]), serving])].filter((r) => r >= 1 && r <= serving).sort((a, b) => a - b);
    this.layout = { slots, vocab: runner.model.vocabSize, K: this.K };
    this.freeSlots = Array.from({ length: serving }, (_, i) => i);
    this.holdings = Array.from({ length: slots }, () => ({ tokens: [], params: undefined, stopIds: undefined }));
    this.holders = new Array(slots).fill(undefined);
    this.zeroSeen = new Float32Array(runner.model.vocabSize);
    const rule = runner.decodeSplits;
    this.splitFrom = rule ? rule.from : undefined;
  }

  get runtime(): GpuRuntime {
    return this.runner.runtime;
  }

  get capacity(): number {
    return this.runner.options.capacity;
  }

  /**
   * Compiles and loads every program (prefill chunks, decode buckets x {greedy, sample}, and the split step of each
   * decode bucket whose attention takes key slices: runner.splitsDecode): the warm-up.
   */
  static async create(runner: ModelRunner, options: GeneratorOptions = {}): Promise<Generator> {
    const g = new Generator(runner, options);
    // the generator's state joins the session's table before any program finds it by name
    for (const entry of generatorStateEntries(g.layout)) runner.caches.register(entry);
    const jobs: { key: string; build: () => Promise<void> }[] = [];
    for (const T of [...new Set(runner.options.chunks)].sort((a, b) => a - b))
      jobs.push({ key: prefillKey(T), build: async () => void g.prefill.set(T, await runner.loadProgram(`gen:prefill:${T}`, () => tracePrefill(runner, g.layout, T), { rows: 1, tokens: T })) });
    for (const split of [false, true])
      for (const rows of g.decodeRows.filter((r) => !split || runner.splitsDecode(r)))
        for (const mode of ['greedy', 'sample'] as const) {
          const key = decodeProgram(rows, mode, split);
          jobs.push({ key: decodeKey(rows, mode, split), build: async () => void g.decode.set(key, await runner.loadProgram(`gen:decode:${key}`, () => traceDecode(runner, g.layout, rows, mode, split), { rows, tokens: 1 })) });
        }
    for (const [i, job] of jobs.entries()) {
      options.onProgress?.({ done: i, total: jobs.length, program: job.key });
      await job.build();
    }
    options.onProgress?.({ done: jobs.length, total: jobs.length, program: '' });
    g.ringBytes = g.layout.slots * (g.K + 1) * 4;
    // two, so that one batch's copy can be mapped while the next batch is in flight
    for (let i = 0; i < 2; i++) g.staging.push(g.runtime.createBuffer(g.ringBytes + g.layout.slots * 4, `token ring readback ${i}`, GPUBufferUsage.MAP_READ | GPUBufferUsage.COPY_DST));
    return g;
  }

  /**
   * Every program this generator runs, by key (`prefill T=16`, `decode rows=1 greedy`), each with a writer of the
   * inputs that make a run change nothing (every row points past the last slot).
   */
  programs(): IdleProgram[] {
    const { slots } = this.layout;
    const list: IdleProgram[] = [];
    for (const [T, exe] of this.prefill)
      list.push({ key: prefillKey(T), exe, idle: () => {
        exe.writeInput('tokens', new Int32Array(T));
        exe.writeInput('slot_ids', new Int32Array([slots]));
        exe.writeInput('valid', new Int32Array([1]));
        exe.writeInput('commit', new Int32Array([0]));
      } });
    for (const [key, exe] of this.decode) {
      const [rows, mode, split] = key.split(':') as [string, SamplerMode, string | undefined];
      list.push({ key: decodeKey(rows, mode, split !== undefined), exe, idle: () => {
        exe.writeInput('decode_slots', new Int32Array(Number(rows)).fill(slots));
        this.lastRowSlots.delete(Number(rows));
      } });
    }
    return list;
  }

  /**
   * Runs programs once with every row inactive (nothing is written), so that drivers that compile shaders at
   * first dispatch (lavapipe) do it now rather than during a generation. `keys` picks the programs (default all).
   */
  async warmUp(keys?: readonly string[]): Promise<void> {
    for (const p of this.programs()) {
      if (keys && !keys.includes(p.key)) continue;
      p.idle();
      p.exe.run();
      this.ran.add(p.key);
    }
    await this.runtime.device.queue.onSubmittedWorkDone();
  }

  /** Notes a program's first run in the stats of the sequences it runs for. */
  private noteRun(key: string, seqs: readonly Sequence[]): void {
    if (this.ran.has(key)) return;
    this.ran.add(key);
    for (const s of seqs) s.firstRuns.push(key);
  }

  /** Keys of the programs that have not run yet (not warmed at load, not used since). */
  notRun(): string[] {
    return this.programs().map((p) => p.key).filter((k) => !this.ran.has(k));
  }

  /** Kernels per decode step of a bucket (model and sampling), of its split step with `split` (0 where it has none). */
  dispatchesPerStep(rows: number, mode: SamplerMode, split = false): number {
    return this.decode.get(decodeProgram(rows, mode, split))?.program.kernels.length ?? 0;
  }

  /** Ids of the sequences that are waiting or running. */
  sequences(): number[] {
    return [...this.live.keys()];
  }

  /** Whether a waiting or running sequence has (or wants) this slot: sequence operations on it must wait. */
  busy(slot: number): boolean {
    const holder = this.holders[slot];
    return (holder !== undefined && !holder.isFinished) || this.pending.some((s) => s.origin.slot === slot);
  }

  /**
   * Resolves once no submitted batch that ran steps of a slot's last sequence is still unread (a cancelled
   * sequence can have steps in flight after it finished): then the host's lengths and tokens are the device's.
   */
  async settled(slot: number): Promise<void> {
    const holder = this.holders[slot];
    await Promise.all([...this.unread].filter((b) => holder && b.seqs.includes(holder)).map((b) => b.read));
  }

  /**
   * Queues a prompt (token ids) and returns its Sequence; it starts at the next submission boundary with a free
   * slot (`options.slot`: that one). Throws ContextOverflowError when the prompt does not fit the capacity.
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
    // a prompt of P tokens leaves capacity - P positions to feed back, and the last sampled token needs none
    return this.enqueue([...promptIds], this.capacity - P + 1, options, { ...(options.slot !== undefined ? { slot: this.checkSlot(options.slot) } : {}) });
  }

  /**
   * Continues the sequence that `slot` holds (a finished generation, a fork or a restored one) from its next
   * token, with its sampling state (parameters, RNG, seen tokens, stop ids) unless `options` sets them: the
   * tokens equal what one longer generation would have produced. The slot must not be in use.
   */
  resume(slot: number, options: SequenceOptions = {}): Sequence {
    this.checkSlot(slot);
    if (this.busy(slot)) throw new RangeError(`slot ${slot} is in use by a running or waiting sequence`);
    const length = this.runner.caches.lengths[slot]!;
    if (length === 0) throw new RangeError(`slot ${slot} holds no sequence to continue`);
    if (length >= this.capacity) throw new ContextOverflowError(`slot ${slot} holds ${length} positions, the session's capacity: nothing more fits`);
    return this.enqueue([], this.capacity - length, options, { slot, resume: true });
  }

  private checkSlot(slot: number): number {
    if (!Number.isInteger(slot) || slot < 0 || slot >= this.serving) throw new RangeError(`unknown slot ${slot}: this session has slots 0..${this.serving - 1}`);
    return slot;
  }

  private enqueue(promptIds: number[], room: number, options: SequenceOptions, origin: Sequence['origin']): Sequence {
    const maxNew = options.maxNewTokens ?? 256;
    if (!Number.isInteger(maxNew) || maxNew < 1) throw new RangeError(`maxNewTokens must be a positive integer, got ${maxNew}`);
    const held = origin.resume ? this.holdings[origin.slot!]! : undefined;
    const given = ['temperature', 'topK', 'topP', 'minP', 'repetitionPenalty'].some((k) => options[k as keyof SamplingParams] !== undefined);
    const base = held && !given ? held.params : undefined;
    const params: SamplingParams = {
      temperature: options.temperature ?? base?.temperature ?? GREEDY.temperature,
      topK: options.topK ?? base?.topK ?? GREEDY.topK,
      topP: options.topP ?? base?.topP ?? GREEDY.topP,
      minP: options.minP ?? base?.minP ?? GREEDY.minP,
      repetitionPenalty: options.repetitionPenalty ?? base?.repetitionPenalty ?? GREEDY.repetitionPenalty,
    };
    if (!(params.temperature >= 0)) throw new RangeError(`temperature must be >= 0, got ${params.temperature}`);
    if (!(params.topK >= 0) || !Number.isInteger(params.topK)) throw new RangeError(`topK must be a non-negative integer (0: off), got ${params.topK}`);
    if (!(params.topP > 0 && params.topP <= 1)) throw new RangeError(`topP must be in (0, 1] (1: off), got ${params.topP}`);
    if (!(params.minP >= 0 && params.minP <= 1)) throw new RangeError(`minP must be in [0, 1] (0: off), got ${params.minP}`);
    if (!(params.repetitionPenalty > 0)) throw new RangeError(`repetitionPenalty must be > 0 (1: off), got ${params.repetitionPenalty}`);
    const stopIds = [...new Set(options.stopTokenIds ?? held?.stopIds ?? this.runner.model.eosTokenIds)];
    if (stopIds.length > MAX_STOP_IDS) throw new RangeError(`at most ${MAX_STOP_IDS} stop token ids, got ${stopIds.length}`);
    const seed = options.seed ?? Math.floor(Math.random() * 2 ** 32);
    const seq = new Sequence(promptIds, Math.min(maxNew, room), params, seed, stopIds, origin, this);
    // what a resumed sequence writes over the slot's sampling state: only what the caller set
    seq.overrides = { params: given || !held?.params, stops: options.stopTokenIds !== undefined || !held?.stopIds, seed: options.seed !== undefined };
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

  // ---------------------------------------------------------------- what a slot holds (sequence operations)

  /** Tokens a slot holds (positions 0..length-1) and its next token, as far as the host knows them. */
  slotTokens(slot: number): readonly number[] | undefined {
    return this.holdings[this.checkSlot(slot)]!.tokens;
  }

  /** After the memory forked `src` into `dst` (device state included): the host's knowledge follows. */
  forked(src: number, dst: number): void {
    const from = this.holdings[src]!;
    this.holdings[dst] = { tokens: from.tokens && [...from.tokens], params: from.params, stopIds: from.stopIds };
  }

  /**
   * After the memory dropped positions [from, to) of a slot: the held tokens follow and, when the end was cut,
   * the token at the new end becomes the slot's next token (a host write of 4 bytes).
   */
  removed(slot: number, from: number, to: number): void {
    const held = this.holdings[slot]!;
    if (!held.tokens) return;
    if (to < held.tokens.length - 1) held.tokens.splice(from, to - from);
    else {
      held.tokens.length = from + 1; // positions 0..from-1, then the token that was at `from`, fed next
      this.runtime.write(this.runner.caches.stateBuffer(GEN.slot), Int32Array.of(held.tokens[from]!), (slot * SLOT_FIELDS + SLOT.next) * 4);
    }
  }

  /** Whether rolling a slot back to `position` can set its next token (the host knows the token there). */
  knowsTokenAt(slot: number, position: number): boolean {
    const tokens = this.holdings[slot]!.tokens;
    return tokens !== undefined && position < tokens.length;
  }

  /** After a slot was overwritten from a file: its sampling state comes from the restored bytes, its tokens are unknown. */
  restored(slot: number, data: Map<string, Uint8Array>): void {
    const bytes = (name: string) => data.get(name)!;
    const params = bytes(GEN.params);
    const stops = bytes(GEN.stop);
    this.holdings[slot] = {
      tokens: undefined,
      params: unpackSamplingParams(new Float32Array(params.buffer, params.byteOffset, PARAM_STRIDE)),
      stopIds: [...new Int32Array(stops.buffer, stops.byteOffset, MAX_STOP_IDS)].filter((t) => t >= 0),
    };
  }

  // ---------------------------------------------------------------- the loop

  private kick(): void {
    if (this.running) return;
    this.running = this.loop().finally(() => {
      this.running = undefined;
      if (this.active.size || this.nextAdmission()) this.kick();
    });
  }

  /** The next waiting sequence that can start now, and its slot. */
  private nextAdmission(): { seq: Sequence; slot: number } | undefined {
    for (const seq of this.pending) {
      const want = seq.origin.slot;
      const slot = want === undefined ? this.freeSlots.find((s) => !this.pending.some((p) => p.origin.slot === s)) : this.freeSlots.includes(want) ? want : undefined;
      if (slot === undefined) continue;
      // a resumed sequence starts from the slot's length, final once no batch with its last steps is unread
      const holder = this.holders[slot];
      if (seq.origin.resume && holder && [...this.unread].some((b) => b.seqs.includes(holder))) continue;
      return { seq, slot };
    }
    return undefined;
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
        let admitted = false;
        for (let next = this.nextAdmission(); next; next = this.nextAdmission()) {
          this.pending.splice(this.pending.indexOf(next.seq), 1);
          this.freeSlots.splice(this.freeSlots.indexOf(next.slot), 1);
          await this.admit(next.seq, next.slot);
          admitted = true;
        }
        // the GPU is idle: nothing was in flight, or an admission waited for it
        if (admitted || !inFlight) this.sinceIdle = 0;
        const next = this.submitBatch();
        if (inFlight) await this.readBatch(inFlight);
        inFlight = next;
        if (!inFlight) {
          // everything submitted has been read: a sequence still here has nothing more coming
          for (const seq of this.active.values()) this.release(seq, seq.cancelReason ?? 'length');
          if (!this.nextAdmission()) break;
        }
      }
    } catch (error) {
      // a device or program failure ends every live sequence with the error instead of hanging its reader
      if (inFlight) await inFlight.ring.catch(() => undefined);
      for (const batch of this.unread) batch.markRead();
      this.unread.clear();
      for (const seq of [...this.live.values()]) {
        if (seq.slot >= 0 && !this.freeSlots.includes(seq.slot)) this.freeSlots.push(seq.slot);
        seq.finish('error', undefined, error);
      }
      this.live.clear();
      this.active.clear();
      this.pending.length = 0;
    }
  }

  /**
   * Sets a slot up for a sequence: a prompt clears the slot, writes its sampling state (a few bytes per state)
   * and is prefilled in chunks; a resumed sequence keeps the slot's state and only gets its token budget.
   */
  private async admit(seq: Sequence, slot: number): Promise<void> {
    const rt = this.runtime;
    const memory = this.runner.caches;
    const V = this.layout.vocab;
    seq.slot = slot;
    this.holders[slot] = seq;
    seq.counters0 = { ...rt.counters };
    seq.times.prefillStart = performance.now();
    const resume = seq.origin.resume === true;
    const held = this.holdings[slot]!;
    if (!resume) {
      memory.clear(slot);
      // a cached prefix comes in by the memory's fork, which also copies the generator's state of the slot:
      // everything below overwrites that state
      const cached = this.prefix?.restore(slot, seq.promptIds) ?? 0;
      seq.cachedTokens = cached;
      let seen = this.zeroSeen;
      if (cached > 0) {
        // the restored prefix was not prefilled here: mark its tokens seen as its prefill would have
        seen = new Float32Array(V);
        for (let i = 0; i < cached; i++) seen[seq.promptIds[i]!] = 1;
      }
      rt.write(memory.stateBuffer(GEN.seen), seen, slot * V * 4);
    }
    if (!resume || seq.overrides.params) rt.write(memory.stateBuffer(GEN.params), packSamplingParams(seq.params), slot * PARAM_STRIDE * 4);
    if (!resume || seq.overrides.seed) rt.write(memory.stateBuffer(GEN.rng), new Uint32Array([seedState(seq.seed)]), slot * 4);
    if (!resume || seq.overrides.stops) {
      const stops = new Int32Array(MAX_STOP_IDS).fill(-1);
      stops.set(seq.stopIds);
      rt.write(memory.stateBuffer(GEN.stop), stops, slot * MAX_STOP_IDS * 4);
    }
    held.params = seq.params;
    held.stopIds = [...seq.stopIds];
    if (resume) {
      // tokens left and the done flag; the next token stays where the last step (or a fork or restore) put it
      rt.write(memory.stateBuffer(GEN.slot), Int32Array.of(seq.maxTotal, 0), (slot * SLOT_FIELDS + SLOT.left) * 4);
      seq.decodeStart = memory.lengths[slot]!;
      seq.stepsLeft = seq.maxTotal;
    } else {
      const row = new Int32Array(SLOT_FIELDS);
      row[SLOT.left] = seq.maxTotal;
      row[SLOT.done] = 1; // until the prompt's last chunk samples the first token
      rt.write(memory.stateBuffer(GEN.slot), row, slot * SLOT_FIELDS * 4);
      const ids = seq.promptIds;
      const cached = seq.cachedTokens;
      for (const chunk of promptChunks(ids.length - cached, [...this.prefill.keys()])) {
        const at = cached + chunk.at;
        const exe = this.prefill.get(chunk.bucket)!;
        const tokens = new Int32Array(chunk.bucket);
        tokens.set(ids.slice(at, at + chunk.tokens));
        exe.writeInput('tokens', tokens);
        exe.writeInput('slot_ids', new Int32Array([slot]));
        exe.writeInput('valid', new Int32Array([chunk.tokens]));
        exe.writeInput('commit', new Int32Array([at + chunk.tokens === ids.length ? 1 : 0]));
        this.noteRun(prefillKey(chunk.bucket), [seq]);
        exe.run();
        const end = at + chunk.tokens;
        if (end < ids.length && this.prefix?.wantsBoundary(end)) {
          // the prefix cache forks the slot as it stands: the memory learns its length first
          memory.afterStep([{ slot, length: end }]);
          this.prefix.insert(slot, ids.slice(0, end));
        }
      }
      // waits for the GPU (no data comes back) so that prefill and decode are timed apart
      await this.runtime.device.queue.onSubmittedWorkDone();
      held.tokens = [...ids];
      seq.firstPending = true;
      seq.decodeStart = ids.length;
      seq.stepsLeft = seq.maxTotal - 1;
      memory.afterStep([{ slot, length: ids.length }]);
    }
    seq.times.prefillEnd = performance.now();
    this.active.set(slot, seq);
  }

  /**
   * Encodes up to K decode steps (fewer right after the GPU was idle: rampSteps) and a copy of the token ring into
   * one submission. Returns undefined when no live sequence needs anything more from the device.
   */
  private submitBatch(): Batch | undefined {
    const rt = this.runtime;
    const { slots, K } = this.layout;
    const seqs = [...this.active.values()].filter((s) => !s.cancelReason).sort((a, b) => a.slot - b.slot);
    const first = seqs.filter((s) => s.firstPending && !s.firstRequested);
    const steps = Math.min(rampSteps(K, this.sinceIdle), Math.max(0, ...seqs.map((s) => s.stepsLeft)));
    if (steps === 0 && first.length === 0) return undefined;
    const rows = this.decodeRows.find((r) => r >= seqs.length)!;
    const mode: SamplerMode = seqs.some((s) => isSampling(s.params)) ? 'sample' : 'greedy';
    // the step with key slices once the longest sequence holds the rule's length (each attends all it holds)
    const longest = Math.max(0, ...seqs.map((s) => s.decodeStart + s.stepsSubmitted));
    const split = this.splitFrom !== undefined && longest >= this.splitFrom && this.decode.has(decodeProgram(rows, mode, true));
    const exe = this.decode.get(decodeProgram(rows, mode, split))!;
    const record = (encoder: GPUCommandEncoder) => {
      if (steps === 0) return;
      this.noteRun(decodeKey(rows, mode, split), seqs);
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
    };
    const staging = this.staging[this.batches++ % 2]!;
    const memory = this.runner.caches;
    // the positions come along (same submission, same map): how far each slot really got, also a sequence
    // cancelled while steps for it were in flight
    const regions = [
      { buffer: memory.stateBuffer(GEN.ring), offset: 0, bytes: this.ringBytes },
      { buffer: memory.positions, offset: 0, bytes: slots * 4 },
    ];
    const read = rt.submitAndRead('decode', record, regions, staging);
    // a sequence's step i feeds position decodeStart + i and writes its token to ring column (decodeStart + i) % K
    const firstColumn = new Map(seqs.map((s) => [s, (s.decodeStart + s.stepsSubmitted) % K]));
    let markRead!: () => void;
    const done = new Promise<void>((resolve) => (markRead = resolve));
    const batch: Batch = { seqs, first: new Set(first), steps, firstColumn, read: done, markRead, ring: read.then(([ring, pos]) => ({ tokens: new Int32Array(ring!.buffer, ring!.byteOffset, ring!.byteLength / 4), positions: new Int32Array(pos!.buffer, pos!.byteOffset, slots) })) };
    this.unread.add(batch);
    for (const s of first) s.firstRequested = true;
    if (steps > 0) this.sinceIdle++;
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
    const { tokens: ring, positions } = await batch.ring;
    const now = performance.now();
    const W = K + 1;
    const memory = this.runner.caches;
    const lengths: { slot: number; length: number; snapshot: boolean }[] = [];
    const release: [Sequence, FinishReason][] = [];
    for (const seq of batch.seqs) {
      // a slot taken by a later sequence meanwhile is no longer this one's to account for
      if (this.holders[seq.slot] !== seq) continue;
      const base = seq.slot * W;
      const got: number[] = [];
      if (batch.first.has(seq)) {
        got.push(ring[base + K]!);
        seq.firstPending = false;
        seq.times.firstToken = now;
      }
      // every step that fed a token moved the position by one and sampled one token
      const fed = positions[seq.slot]! - memory.lengths[seq.slot]!;
      const column = batch.firstColumn.get(seq)!;
      for (let i = 0; i < fed; i++) got.push(ring[base + ((column + i) % K)]!);
      this.holdings[seq.slot]!.tokens?.push(...got);
      const live = !seq.isFinished && !seq.cancelReason;
      if (live) seq.push(got);
      lengths.push({ slot: seq.slot, length: positions[seq.slot]!, snapshot: live && batch.steps > 0 && !this.ends(seq, []) });
      if (seq.isFinished) continue; // released while this batch was in flight
      if (seq.cancelReason) release.push([seq, seq.cancelReason]);
      else if (this.ends(seq, [])) release.push([seq, seq.stopIds.includes(seq.ids[seq.ids.length - 1]!) ? 'stop' : 'length']);
    }
    memory.afterStep(lengths);
    this.unread.delete(batch);
    batch.markRead();
    for (const [seq, reason] of release) this.release(seq, reason);
  }

  /** Whether the ids so far plus `more` end the sequence (a stop token, or the token budget). */
  private ends(seq: Sequence, more: number[]): boolean {
    const all = seq.ids.length + more.length;
    const last = more.length ? more[more.length - 1]! : seq.ids[seq.ids.length - 1];
    return all >= seq.maxTotal || (last !== undefined && all > 0 && seq.stopIds.includes(last));
  }

  /** Frees a slot and finishes its sequence with stats. Its device state stays as it is until the slot is reused. */
  private release(seq: Sequence, reason: FinishReason): void {
    // a prompt's sequence that ended on the device holds its prompt and every id but the newest: the next chat
    // turn's prefix (the lengths are the device's here: release follows the batch's afterStep)
    const fed = seq.promptIds.length + seq.ids.length - 1;
    if (this.prefix && !seq.origin.resume && !seq.cancelReason && (reason === 'stop' || reason === 'length') && this.runner.caches.lengths[seq.slot] === fed)
      this.prefix.insert(seq.slot, [...seq.promptIds, ...seq.ids.slice(0, -1)]);
    this.active.delete(seq.slot);
    this.live.delete(seq.id);
    this.freeSlots.push(seq.slot);
    this.freeSlots.sort((a, b) => a - b);
    seq.times.end = performance.now();
    seq.finish(reason, sequenceStats(seq, this.runtime.counters, this.K));
  }
}
