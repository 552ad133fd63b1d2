// Token sampling on the device, as a composition of primitives: repetition penalty, temperature, top-k, top-p,
// min-p, inverse-CDF sampling from a per-row uniform, greedy argmax, and a counter-based RNG (PCG hash).
// There is no sort: top-k and top-p thresholds and the sampled index are found by a fixed number of multi-way
// search rounds (a static graph), each round testing WAYS candidate thresholds at once with count reductions.
import { Tensor } from '../tensor.ts';
import { constant, iota } from '../trace.ts';

/** Sampling parameters of one row, as stored on the device (a row of f32). */
export interface SamplingParams {
  /** 0 (or less): greedy. */
  temperature: number;
  /** Keep the k most likely tokens; 0: off. */
  topK: number;
  /** Keep the smallest set of most likely tokens whose probability reaches p; 1: off. */
  topP: number;
  /** Drop tokens less likely than minP times the most likely one; 0: off. */
  minP: number;
  /** HF's repetition penalty over every token seen (prompt included): logits > 0 divided by it, others multiplied; 1: off. */
  repetitionPenalty: number;
}

export const GREEDY: SamplingParams = { temperature: 0, topK: 0, topP: 1, minP: 0, repetitionPenalty: 1 };

/** Column of each parameter in a device row; rows are PARAM_STRIDE wide (spare columns stay 0). */
const COLUMN = { temperature: 0, topK: 1, topP: 2, minP: 3, repetitionPenalty: 4 } as const satisfies Record<keyof SamplingParams, number>;
export const PARAM_STRIDE = 8;

export function packSamplingParams(p: SamplingParams): Float32Array {
  const row = new Float32Array(PARAM_STRIDE);
  for (const [name, col] of Object.entries(COLUMN)) row[col] = p[name as keyof SamplingParams];
  return row;
}

/** The parameters a device row holds (inverse of packSamplingParams). */
export function unpackSamplingParams(row: Float32Array): SamplingParams {
  return Object.fromEntries(Object.entries(COLUMN).map(([name, col]) => [name, row[col]!])) as unknown as SamplingParams;
}

/** Whether a row with these parameters needs the sampling graph (not only argmax). */
export function isSampling(p: SamplingParams): boolean {
  return p.temperature > 0;
}

/** Candidates tested per search round. */
export const WAYS = 16;
/** Logit threshold searches cover [max - VALUE_RANGE, max]: tokens further below carry under e^-80 of the mass. */
const VALUE_RANGE = 80;
/** (WAYS + 1)^7 ~ 4.1e8: the final interval is 80 / 4.1e8 ~ 2e-7, about one f32 ulp of a logit near 2. */
const VALUE_ROUNDS = 7;

/** Rounds of the integer search over [0, V): each round shrinks the interval to ceil(width / (WAYS + 1)). */
export function indexRounds(V: number): number {
  let rounds = 0;
  for (let width = V; width > 1; width = Math.ceil(width / (WAYS + 1))) rounds++;
  return rounds;
}

const rowMin = (x: Tensor) => x.neg().max(-1).neg();

/**
 * The largest candidate c in [lo, hi) that `accept` takes, for an `accept` that holds up to some threshold and
 * fails above it; `lo` is the answer when nothing above it is accepted. lo, hi: [S] f32.
 */
function searchValue(lo: Tensor, hi: Tensor, rounds: number, accept: (candidates: Tensor) => Tensor): Tensor {
  const S = lo.shape[0]!;
  const fractions = iota([1, WAYS], 1, 'f32').add(1).div(WAYS + 1); // [1,W]
  for (let r = 0; r < rounds; r++) {
    const candidates = lo.reshape(S, 1).add(hi.sub(lo).reshape(S, 1).mul(fractions)); // [S,W], increasing
    const ok = accept(candidates); // [S,W] bool, a prefix of each row
    [lo, hi] = narrow(ok, candidates, lo, hi);
  }
  return lo;
}

/** New bounds from a round: the largest accepted candidate (or lo) and the smallest rejected one (or hi). */
function narrow(ok: Tensor, candidates: Tensor, lo: Tensor, hi: Tensor): [Tensor, Tensor] {
  const S = lo.shape[0]!;
  const nextLo = Tensor.where(ok, candidates, lo.reshape(S, 1)).max(-1, true);
  const nextHi = rowMin(Tensor.where(ok, hi.reshape(S, 1), candidates)).reshape(S, 1);
  // one [S,2] tensor so that both bounds come from one small kernel
  const bounds = Tensor.concat([nextLo, nextHi], 1);
  return [bounds.slice(1, 0, 1).reshape(S), bounds.slice(1, 1, 2).reshape(S)];
}

/** The largest integer i in [0, V) that `accept` takes (accept(0) must hold), exactly: [S] i32. */
function searchIndex(S: number, V: number, accept: (candidates: Tensor) => Tensor): Tensor {
  const steps = iota([1, WAYS], 1, 'i32').add(1); // [1,W]
  let lo = constant(0, 'i32').broadcastTo([S]);
  let hi = constant(V, 'i32').broadcastTo([S]);
  for (let r = indexRounds(V); r > 0; r--) {
    // lo + floor(width * (w+1) / (WAYS+1)): once width <= WAYS + 1 every integer of [lo, hi) is a candidate
    const candidates = lo.reshape(S, 1).add(hi.sub(lo).reshape(S, 1).mul(steps).div(WAYS + 1)); // [S,W]
    [lo, hi] = narrow(accept(candidates), candidates, lo, hi);
  }
  return lo;
}

/** Index of the first maximum of each row: x [S, V] -> [S] i32 (torch.argmax's tie rule). */
export function argmax(x: Tensor): Tensor {
  const [S, V] = x.shape as [number, number];
  const isMax = x.eq(x.max(-1, true));
  const first = rowMin(Tensor.where(isMax, iota([S, V], 1, 'f32'), V));
  return first.minimum(V - 1).cast('i32');
}

/** HF's RepetitionPenaltyLogitsProcessor: seen [S, V] (1 where the token occurred), penalty [S]. */
export function applyRepetitionPenalty(logits: Tensor, seen: Tensor, penalty: Tensor): Tensor {
  const p = penalty.reshape(penalty.shape[0]!, 1);
  return Tensor.where(seen.gt(0), Tensor.where(logits.gt(0), logits.div(p), logits.mul(p)), logits);
}

/**
 * One PCG step per row (an LCG advance and the RXS-M-XS output permutation, O'Neill 2014): state [S] u32 ->
 * the next state and a uniform in [0, 1) with 24 random bits.
 */
export function pcgNext(state: Tensor): { state: Tensor; uniform: Tensor } {
  const next = state.mul(747796405).add(2891336453);
  const word = next.shr(next.shr(28).add(4)).xor(next).mul(277803737);
  const bits = word.shr(22).xor(word);
  return { state: next, uniform: bits.shr(8).cast('f32').mul(1 / 16777216) };
}

/** A u32 RNG state from a user seed (splitmix32-style mixing, so nearby seeds start far apart). */
export function seedState(seed: number): number {
  let z = (Math.trunc(seed) + 0x9e3779b9) >>> 0;
  z = Math.imul(z ^ (z >>> 16), 0x85ebca6b) >>> 0;
  z = Math.imul(z ^ (z >>> 13), 0xc2b2ae35) >>> 0;
  return (z ^ (z >>> 16)) >>> 0;
}

export interface SampleInputs {
  /** [S, V] f32 */
  logits: Tensor;
  /** [S, PARAM_STRIDE] f32, one packSamplingParams row per row */
  params: Tensor;
  /** [S] f32 in [0, 1) */
  uniform: Tensor;
  /** [S, V] f32, 1 for tokens seen so far (repetition penalty); omit to skip the penalty */
  seen?: Tensor;
}

/**
 * Next token of every row, [S] i32. 'greedy' builds only the penalised argmax; 'sample' also builds the
 * sampling path and picks per row by its temperature (rows with temperature 0 get the same argmax).
 * Order as HF's processors: repetition penalty, temperature, top-k, top-p, min-p.
 */
export function sampleTokens(inputs: SampleInputs, mode: 'greedy' | 'sample'): Tensor {
  const { params, uniform } = inputs;
  const [S, V] = inputs.logits.shape as [number, number];
  const param = (name: keyof SamplingParams) => params.slice(1, COLUMN[name], COLUMN[name] + 1).reshape(S);
  const logits = inputs.seen ? applyRepetitionPenalty(inputs.logits, inputs.seen, param('repetitionPenalty')) : inputs.logits;
  const greedy = argmax(logits);
  if (mode === 'greedy') return greedy;

  const temperature = param('temperature');
  const sampling = temperature.gt(0);
  const z = logits.div(Tensor.where(sampling, temperature, 1).reshape(S, 1)); // [S,V]
  const zmax = z.max(-1); // [S]
  const floor = zmax.sub(VALUE_RANGE);
  const ceiling = zmax.add(zmax.abs().mul(2 ** -20)).add(2 ** -20); // strictly above zmax: never accepted
  const zCol = z.reshape(S, 1, V);
  const atOrAbove = (c: Tensor) => zCol.ge(c.reshape(S, WAYS, 1)); // [S,W,V]

  // top-k: the k-th largest logit is the largest c with count(z >= c) >= k (ties at it are kept, as HF)
  const topK = param('topK');
  const k = Tensor.where(topK.gt(0), topK.minimum(V), V).reshape(S, 1);
  const tauK = searchValue(floor, ceiling, VALUE_ROUNDS, (c) => Tensor.where(atOrAbove(c), 1, 0).sum(-1).ge(k));

  // top-p over the top-k set: the largest c whose tokens hold at least p of its mass
  const weights = z.sub(zmax.reshape(S, 1)).exp(); // [S,V] unnormalised probabilities
  const inTopK = Tensor.where(z.ge(tauK.reshape(S, 1)), weights, 0);
  const topP = param('topP');
  const needMass = topP.mul(inTopK.sum(-1)).reshape(S, 1);
  const tauP = searchValue(tauK, ceiling, VALUE_ROUNDS, (c) => Tensor.where(atOrAbove(c), inTopK.reshape(S, 1, V), 0).sum(-1).ge(needMass));
  let threshold = Tensor.where(topP.gt(0).and(topP.lt(1)), tauP, tauK);

  // min-p relative to the most likely token: p_i >= minP * p_max  <=>  z_i >= zmax + log(minP)
  const minP = param('minP');
  threshold = threshold.maximum(Tensor.where(minP.gt(0), zmax.add(minP.maximum(1e-30).log()), floor));

  // inverse CDF: the largest i with sum(kept weights before i) <= u * total
  const kept = Tensor.where(z.ge(threshold.reshape(S, 1)), weights, 0); // [S,V]
  const target = uniform.mul(kept.sum(-1)).reshape(S, 1);
  const keptCol = kept.reshape(S, 1, V);
  const vocab = iota([1, 1, V], 2, 'i32');
  const token = searchIndex(S, V, (c) => Tensor.where(vocab.lt(c.reshape(S, WAYS, 1)), keptCol, 0).sum(-1).le(target));
  // rounding can only land on a token of zero weight at a boundary; fall back to the argmax there
  const flatIndex = iota([S], 0, 'i32').mul(V).add(token);
  const sampled = Tensor.where(kept.reshape(S * V).gather(flatIndex).gt(0), token, greedy);
  return Tensor.where(sampling, sampled, greedy);
}
