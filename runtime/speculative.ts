// Speculative decoding on one slot of a ModelRunner: a draft source proposes up to k tokens, the target checks
// them all in one multi-token step, the accepted ones stay and the rest are taken back. Attention layers go back
// by length; a recurrent state (or a sliding-window ring) cannot, so the slot is snapshotted before the verify
// step and, when a proposal is rejected, rolled back to the snapshot and the accepted tokens fed again.
// Greedy output equals plain greedy decoding; with sampling, each proposal d is kept with probability p(d) and a
// rejection samples from p without d (the rule of Leviathan et al. 2023 for a draft that proposes one token
// with certainty), so the output follows the target's distribution.
import { mulberry32 } from '../base/random.ts';
import { argmax } from './parity.ts';
import type { ModelRunner } from './modelRunner.ts';

/** Where proposals come from. `context` is every token so far (prompt and output); the last is not yet fed. */
export interface DraftSource {
  readonly name: string;
  propose(context: readonly number[], k: number): Promise<number[]>;
}

/**
 * Prompt lookup (Saxena 2023): the tokens that followed the most recent earlier occurrence of the context's
 * last n-gram (n from `maxNgram` down to `minNgram`). Free, and strong on code and edits, which repeat.
 */
export class PromptLookupDraft implements DraftSource {
  readonly name = 'prompt-lookup';
  constructor(
    readonly maxNgram = 3,
    readonly minNgram = 1,
  ) {}

  async propose(context: readonly number[], k: number): Promise<number[]> {
    const L = context.length;
    for (let n = Math.min(this.maxNgram, L - 1); n >= this.minNgram; n--) {
      for (let start = L - n - 1; start >= 0; start--) {
        let match = true;
        for (let j = 0; j < n && match; j++) match = context[start + j] === context[L - n + j];
        if (match) {
          const from = start + n;
          if (from < L) return context.slice(from, Math.min(L, from + k));
        }
      }
    }
    return [];
  }
}

/** A smaller model of the same tokenizer, run greedily in a slot of its own runner. */
export class ModelDraft implements DraftSource {
  readonly name: string;
  /** Tokens the draft's slot holds. */
  private fed: number[] = [];

  constructor(
    readonly runner: ModelRunner,
    readonly slot = 0,
  ) {
    this.name = `draft:${runner.model.family}`;
    runner.resetSlot(slot);
  }

  async propose(context: readonly number[], k: number): Promise<number[]> {
    const { runner, slot } = this;
    let common = 0;
    while (common < this.fed.length && common < context.length && this.fed[common] === context[common]) common++;
    common = Math.min(common, context.length - 1); // the last token is fed here: its logits give the first proposal
    await rollbackTo(runner, slot, common, this.fed);
    this.fed.length = common;
    // feed what it has not seen, keep that point (a recurrent draft goes back to it next time), then propose
    let logits = await feed(runner, slot, context.slice(common), this.fed);
    if (runner.caches.snapshotsPerSlot > 0) runner.caches.snapshot(slot);
    const out: number[] = [];
    for (let i = 0; i < k; i++) {
      const token = argmax(logits);
      out.push(token);
      if (i + 1 < k) logits = await feed(runner, slot, [token], this.fed);
    }
    return out;
  }
}

export interface SpeculativeOptions {
  draft: DraftSource;
  /** Tokens proposed per verify step. */
  k: number;
  maxNewTokens: number;
  stopIds?: readonly number[];
  /** 0 (default): greedy. */
  temperature?: number;
  topP?: number;
  seed?: number;
}

export interface SpeculativeResult {
  ids: number[];
  /** Target steps after the prefill: verify steps plus the re-feeds after a recurrent rollback. */
  targetSteps: number;
  verifySteps: number;
  proposed: number;
  accepted: number;
  /** accepted / proposed. */
  acceptanceRate: number;
  /** Verify steps that rejected a proposal and took tokens back; of them, those that re-fed from a snapshot. */
  rollbacks: number;
  recomputes: number;
  /** Generated tokens per target verify step (1 for plain decoding). */
  tokensPerStep: number;
  decodeSeconds: number;
}

/**
 * Feeds tokens into a slot in steps of `chunk` tokens (default the largest prefill chunk; one token goes alone);
 * returns the last token's logits.
 */
async function feed(runner: ModelRunner, slot: number, tokens: readonly number[], fed: number[], chunk = Math.max(...runner.options.chunks)): Promise<Float32Array> {
  let last: Float32Array | undefined;
  for (let at = 0; at < tokens.length; at += chunk) {
    const piece = tokens.slice(at, at + chunk);
    [last] = (await runner.step([{ slot, tokens: [...piece] }], 'last', { rows: 1, tokens: piece.length === 1 ? 1 : chunk })) as [Float32Array];
    fed.push(...piece);
  }
  return last!;
}

/**
 * Takes a slot back to `position` of the tokens it was fed: directly when its memory can (attention), else to
 * the newest snapshot at or before it and the tokens after it fed again. Returns the tokens re-fed.
 */
async function rollbackTo(runner: ModelRunner, slot: number, position: number, fed: readonly number[], chunk?: number): Promise<number> {
  const memory = runner.caches;
  if (position === memory.lengths[slot]) return 0;
  if (memory.restorablePositions(slot).includes(position)) {
    memory.rollback(slot, position);
    return 0;
  }
  const base = Math.max(0, ...memory.snapshotsOf(slot).filter((p) => p <= position));
  memory.rollback(slot, base);
  const again = fed.slice(base, position);
  if (again.length) await feed(runner, slot, again, [], chunk);
  return again.length;
}

/** Sampling on the host from one row of logits (temperature, top-p), with an excluded token for rejections. */
function sampleHost(logits: Float32Array, temperature: number, topP: number, uniform: number, exclude = -1): number {
  const order = Array.from(logits.keys()).filter((i) => i !== exclude);
  const max = Math.max(...order.map((i) => logits[i]!));
  const weights = new Map(order.map((i) => [i, Math.exp((logits[i]! - max) / temperature)]));
  order.sort((a, b) => weights.get(b)! - weights.get(a)!);
  const total = order.reduce((a, i) => a + weights.get(i)!, 0);
  let kept = 0;
  let cut = order.length;
  for (let j = 0; j < order.length; j++) {
    kept += weights.get(order[j]!)! / total;
    if (kept >= topP) {
      cut = j + 1;
      break;
    }
  }
  const nucleus = order.slice(0, cut);
  const mass = nucleus.reduce((a, i) => a + weights.get(i)!, 0);
  let u = uniform * mass;
  for (const i of nucleus) if ((u -= weights.get(i)!) <= 0) return i;
  return nucleus[nucleus.length - 1]!;
}

/** p(token) under temperature and top-p. */
function probability(logits: Float32Array, temperature: number, topP: number, token: number): number {
  const max = Math.max(...logits);
  const weights = Array.from(logits, (l) => Math.exp((l - max) / temperature));
  const order = Array.from(weights.keys()).sort((a, b) => weights[b]! - weights[a]!);
  const total = weights.reduce((a, b) => a + b, 0);
  let kept = 0;
  const nucleus = new Set<number>();
  for (const i of order) {
    nucleus.add(i);
    kept += weights[i]! / total;
    if (kept >= topP) break;
  }
  if (!nucleus.has(token)) return 0;
  return weights[token]! / [...nucleus].reduce((a, i) => a + weights[i]!, 0);
}

/**
 * One proposal against the target's logits at its position: kept with probability p(d), else replaced by a
 * sample from p without d, so the token that comes out follows p whatever was proposed. Greedy (temperature 0):
 * kept when it is the argmax, else replaced by the argmax.
 */
export function verifyProposal(logits: Float32Array, proposal: number, sampling: { temperature: number; topP: number }, random: () => number): { kept: boolean; token: number } {
  const { temperature, topP } = sampling;
  if (temperature <= 0) {
    const best = argmax(logits);
    return { kept: best === proposal, token: best };
  }
  if (random() < probability(logits, temperature, topP, proposal)) return { kept: true, token: proposal };
  return { kept: false, token: sampleHost(logits, temperature, topP, random(), proposal) };
}


/**
 * Generates from `promptIds` in an empty `slot` of the target runner with speculative decoding. The runner
 * needs a prefill chunk and programs for 1 and k + 1 tokens per step (compiled on first use).
 */
export async function speculativeGenerate(target: ModelRunner, slot: number, promptIds: readonly number[], options: SpeculativeOptions): Promise<SpeculativeResult> {
  const { draft, k, maxNewTokens } = options;
  if (!Number.isInteger(k) || k < 0) throw new RangeError(`k (tokens proposed per step) must be a non-negative integer, got ${k}`);
  if (!Number.isInteger(maxNewTokens) || maxNewTokens < 1) throw new RangeError(`maxNewTokens must be a positive integer, got ${maxNewTokens}`);
  const temperature = options.temperature ?? 0;
  const topP = options.topP ?? 1;
  const random = mulberry32(options.seed ?? 0);
  const pick = (logits: Float32Array) => (temperature > 0 ? sampleHost(logits, temperature, topP, random()) : argmax(logits));
  const stopIds = new Set(options.stopIds ?? target.model.eosTokenIds);
  const memory = target.caches;
  const V = target.model.vocabSize;
  const capacity = target.options.capacity;
  const result: SpeculativeResult = { ids: [], targetSteps: 0, verifySteps: 0, proposed: 0, accepted: 0, acceptanceRate: 0, rollbacks: 0, recomputes: 0, tokensPerStep: 0, decodeSeconds: 0 };

  target.resetSlot(slot);
  const fed: number[] = [];
  const first = pick(await feed(target, slot, promptIds, fed));
  const ids = result.ids;
  ids.push(first);
  const t0 = performance.now();
  while (ids.length < maxNewTokens && !stopIds.has(ids[ids.length - 1]!) && fed.length + 1 < capacity) {
    const context = [...promptIds, ...ids];
    const last = ids[ids.length - 1]!;
    // the step writes 1 + m positions: keep within the capacity and the token budget
    const room = Math.min(k, maxNewTokens - ids.length - 1, capacity - fed.length - 1);
    const proposal = room > 0 ? (await draft.propose(context, room)).slice(0, room) : [];
    const m = proposal.length;
    const L = fed.length;
    if (m > 0 && memory.snapshotsPerSlot > 0) memory.snapshot(slot);
    const [logits] = (await target.step([{ slot, tokens: [last, ...proposal] }], 'all', { rows: 1, tokens: m > 0 ? k + 1 : 1 })) as [Float32Array];
    fed.push(last, ...proposal);
    result.targetSteps++;
    result.verifySteps++;
    result.proposed += m;
    const row = (i: number) => logits.subarray(i * V, (i + 1) * V);
    // accept proposals while the target agrees; the first disagreement is replaced by the target's own token
    let accepted = 0;
    let next = -1;
    while (accepted < m) {
      const d = proposal[accepted]!;
      const verdict = verifyProposal(row(accepted), d, { temperature, topP }, random);
      if (!verdict.kept) {
        next = verdict.token;
        break;
      }
      ids.push(d);
      accepted++;
      if (stopIds.has(d) || ids.length >= maxNewTokens) break;
    }
    result.accepted += accepted;
    const ended = stopIds.has(ids[ids.length - 1]!) || ids.length >= maxNewTokens;
    if (!ended) ids.push(next >= 0 ? next : pick(row(m)));
    // the slot holds last + every kept proposal; the newest token waits to be fed
    const keepFed = L + 1 + accepted;
    if (keepFed < fed.length) {
      result.rollbacks++;
      // re-fed in the verify step's bucket: at most k + 1 tokens, and no other program
      const again = await rollbackTo(target, slot, keepFed, fed, k + 1);
      if (again > 0) {
        result.recomputes++;
        result.targetSteps++;
      }
      fed.length = keepFed;
    }
  }
  result.decodeSeconds = (performance.now() - t0) / 1000;
  result.acceptanceRate = result.proposed ? result.accepted / result.proposed : 0;
  result.tokensPerStep = result.verifySteps ? (ids.length - 1) / result.verifySteps : 0;
  return result;
}
