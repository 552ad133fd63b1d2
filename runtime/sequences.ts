// Sequences and streams: a Sequence is one generation's token ids as the scheduler hands them over (an async
// iterable of batches, one per readback) with its finish reason and stats; a Generation turns a Sequence into
// text (streaming detokenization, stop strings). Neither touches the device.
import type { SamplingParams } from '../dsl/nn/sampling.ts';
import type { Counters } from './gpuRuntime.ts';
import type { Tokenizer } from './tokenizer.ts';

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
  /** Run in this slot (waiting until it is free) rather than the lowest free one, e.g. to continue or fork it later. */
  slot?: number;
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
  /**
   * Programs that ran for the first time during this generation (`prefill T=128`, `decode rows=4 sample`): the
   * load's warm-up did not run them, so on a driver that compiles shaders at first dispatch (lavapipe) their
   * compile is in this generation's time.
   */
  firstRuns: string[];
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
  /** @internal position fed at the first decode step (the prompt's length, or a resumed slot's length) */ decodeStart = 0;
  /** @internal */ firstPending = false;
  /** @internal a submitted batch will deliver the first token */ firstRequested = false;
  /** @internal decode steps the slot may still take */ stepsLeft = 0;
  /** @internal decode steps submitted so far */ stepsSubmitted = 0;
  /** @internal */ cancelReason: FinishReason | undefined;
  /** @internal */ readonly times = { created: performance.now(), prefillStart: 0, prefillEnd: 0, firstToken: 0, end: 0 };
  /** @internal */ counters0: Counters | undefined;
  /** @internal */ decodeKernels = 0;
  /** @internal programs first run while this sequence was live */ readonly firstRuns: string[] = [];
  /** @internal prompt tokens restored from the prefix cache */ cachedTokens = 0;
  /** @internal what a resumed sequence writes over the slot's sampling state */ overrides = { params: true, stops: true, seed: true };

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
    /** Where it starts: a prompt to prefill (into `slot` if given), or the sequence a slot holds (`resume`). */
    readonly origin: { slot?: number; resume?: boolean },
    private readonly owner: { cancel(id: number, reason: FinishReason): void },
  ) {
    this.finished = new Promise((resolve) => (this.resolveFinished = resolve));
  }

  get isFinished(): boolean {
    return this.finishReason !== undefined;
  }

  /** Stops the sequence at the next submission boundary (a no-op once it finished). */
  cancel(reason: FinishReason = 'cancelled'): void {
    if (!this.isFinished) this.owner.cancel(this.id, reason);
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


/** A finished sequence's stats from the device counters now and when it started. */
export function sequenceStats(seq: Sequence, c: Counters, stepsPerSubmit: number): SequenceStats {
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
    stepsPerSubmit,
    firstRuns: [...seq.firstRuns],
  };
}
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

