// The generator's step programs, what is traced per bucket: a prefill chunk that samples a slot's first token
// when its prompt is in, and a decode step that feeds each row's next token from the device, samples the
// following one and records it. The generator's per-slot device state is declared here as state table entries
// (owner 'generator'), so the memory carries it through fork and save/restore.
import type { Graph } from '../compiler/ir.ts';
import { type StateEntry, StateTable } from '../caches/stateTable.ts';
import { stateOf } from '../caches/stepContext.ts';
import { Tensor } from '../dsl/tensor.ts';
import { constant, input, trace } from '../dsl/trace.ts';
import { PARAM_STRIDE, pcgNext, sampleTokens } from '../dsl/nn/sampling.ts';
import type { ModelRunner } from './modelRunner.ts';

/** Stop token ids a sequence may have (model eos ids plus the caller's). */
export const MAX_STOP_IDS = 8;

/** Names of the generator's states (their entries: generatorStateEntries). */
export const GEN = {
  slot: 'gen.slot',
  ring: 'gen.token_ring',
  rng: 'gen.rng',
  seen: 'gen.seen',
  params: 'gen.sampling',
  stop: 'gen.stop_ids',
} as const;

/** Columns of a slot's row of GEN.slot. */
export const SLOT = {
  /** the token the slot feeds at its next decode step */
  next: 0,
  /** tokens the slot may still sample */
  left: 1,
  /** 1 once the slot sampled a stop token or its last allowed token (or before its prompt is in) */
  done: 2,
} as const;
export const SLOT_FIELDS = 4;

export type SamplerMode = 'greedy' | 'sample';

export interface Layout {
  slots: number;
  vocab: number;
  /** decode steps per submission */
  K: number;
}

/** The generator's rows of the session's state table: one row per slot in each buffer. */
export function generatorStateEntries({ slots, vocab, K }: Layout): StateEntry[] {
  const entry = (name: string, kind: StateEntry['kind'], perSlot: number, dtype: StateEntry['dtype'], shape: number[]): StateEntry => ({
    role: 'state', name, kind, owner: 'generator', dtype, shape, slotBytes: perSlot * 4,
  });
  return [
    entry(GEN.slot, 'slotRow', SLOT_FIELDS, 'i32', [slots, SLOT_FIELDS]),
    // column position % K holds the token sampled at that position; column K the first token
    entry(GEN.ring, 'tokenRing', K + 1, 'i32', [slots * (K + 1)]),
    entry(GEN.rng, 'rng', 1, 'u32', [slots]),
    entry(GEN.seen, 'seen', vocab, 'f32', [slots * vocab]),
    entry(GEN.params, 'sampling', PARAM_STRIDE, 'f32', [slots, PARAM_STRIDE]),
    entry(GEN.stop, 'stopIds', MAX_STOP_IDS, 'i32', [slots, MAX_STOP_IDS]),
  ];
}

/** Traced views of the generator's states for one program. */
class GeneratorStates {
  private readonly table: StateTable;
  constructor(readonly layout: Layout) {
    this.table = new StateTable(generatorStateEntries(layout));
  }
  get(name: (typeof GEN)[keyof typeof GEN]): Tensor {
    return stateOf(this.table.state(name));
  }
}

export function slotField(rows: Tensor, field: keyof typeof SLOT): Tensor {
  return rows.slice(1, SLOT[field], SLOT[field] + 1).reshape(rows.shape[0]!);
}

/**
 * Samples the next token of every row from its logits [R, V] and records it for the row's slot: next token,
 * tokens left and done flag (one row write), seen set, RNG state. Rows whose slot is out of range change
 * nothing. -> [R] i32
 */
function sampleAndCommit(gen: GeneratorStates, logits: Tensor, slot: Tensor, mode: SamplerMode): Tensor {
  const { slots, vocab } = gen.layout;
  const R = slot.shape[0]!;
  // greedy batches leave the RNG alone: only sampling rows use it, and they always run in 'sample' batches
  const rng = mode === 'sample' ? pcgNext(gen.get(GEN.rng).gather(slot)) : undefined;
  const token = sampleTokens(
    {
      logits,
      params: gen.get(GEN.params).gather(slot),
      uniform: rng?.uniform ?? constant(0).broadcastTo([R]),
      seen: gen.get(GEN.seen).reshape(slots, vocab).gather(slot),
    },
    mode,
  );
  const stopIds = gen.get(GEN.stop).gather(slot);
  const isStop = Tensor.where(stopIds.eq(token.reshape(R, 1)), 1, 0).max(-1).gt(0);
  const slotState = gen.get(GEN.slot);
  const left = slotField(slotState.gather(slot), 'left').sub(1);
  const live = slot.lt(slots);
  const row = new Array<Tensor>(SLOT_FIELDS).fill(constant(0, 'i32').broadcastTo([R]));
  row[SLOT.next] = token;
  row[SLOT.left] = left;
  row[SLOT.done] = isStop.or(left.le(0)).cast('i32');
  slotState.scatter(slot, Tensor.concat(row.map((x) => x.reshape(R, 1)), 1));
  if (rng) gen.get(GEN.rng).scatter(slot, rng.state);
  gen.get(GEN.seen).scatter(Tensor.where(live, slot.mul(vocab).add(token), slots * vocab), constant(1).broadcastTo([R]));
  return token;
}

/**
 * A prefill chunk of T tokens for one slot (host inputs tokens/slot_ids/valid, as ModelRunner's programs) that
 * marks the prompt tokens seen and, when the host sets `commit` (the prompt's last chunk), samples the first
 * token from the last real position into the slot's next token and the ring's column K.
 */
export function tracePrefill(runner: ModelRunner, layout: Layout, T: number): Graph {
  const { slots, vocab, K } = layout;
  const model = runner.model;
  return trace(() => {
    const gen = new GeneratorStates(layout);
    const ctx = runner.context(1, T);
    const hidden = model.forward(ctx).reshape(T, model.hiddenSize);
    const logits = model.logits(ctx, hidden.gather(ctx.valid.sub(1))); // [1,V]
    // the prompt counts for the repetition penalty, as in HF
    const seenIndex = Tensor.where(ctx.tokenValid, ctx.slotIds.reshape(1, 1).mul(vocab).add(ctx.tokens), slots * vocab);
    gen.get(GEN.seen).scatter(seenIndex, constant(1).broadcastTo([1, T]));
    const slot = Tensor.where(input('commit', [1], 'i32').eq(1), ctx.slotIds, slots);
    const token = sampleAndCommit(gen, logits, slot, 'sample');
    gen.get(GEN.ring).scatter(Tensor.where(slot.lt(slots), slot.mul(K + 1).add(K), slots * (K + 1)), token);
    ctx.finish();
  });
}

/**
 * One decode step over `rows` rows. `decode_slots` (host-written when the batch changes) maps rows to slots;
 * a row whose slot is out of range, or done, feeds valid = 0 through an out-of-range slot, so none of its state
 * changes. Tokens come from and go back to the device. `splits`: the attention takes the adapter's key slices (the
 * generator runs that step for long sequences: compiler/attentionSplit.ts DecodeSplits).
 */
export function traceDecode(runner: ModelRunner, layout: Layout, rows: number, mode: SamplerMode, splits = false): Graph {
  const { slots, K } = layout;
  const model = runner.model;
  return trace(() => {
    const gen = new GeneratorStates(layout);
    const rowSlot = input('decode_slots', [rows], 'i32');
    const inRange = rowSlot.lt(slots);
    const slotRows = gen.get(GEN.slot).gather(rowSlot); // out-of-range rows read the last slot
    const active = inRange.and(slotField(slotRows, 'done').eq(0));
    const slot = Tensor.where(active, rowSlot, slots);
    const tokens = slotField(slotRows, 'next').reshape(rows, 1);
    const ctx = runner.context(rows, 1, { tokens, slotIds: slot, valid: active.cast('i32') }, splits);
    const hidden = model.forward(ctx).reshape(rows, model.hiddenSize);
    const token = sampleAndCommit(gen, model.logits(ctx, hidden), slot, mode);
    ctx.finish();
    // the ring column is the position the token is sampled at, mod K: the host knows it without asking
    gen.get(GEN.ring).scatter(Tensor.where(active, slot.mul(K + 1).add(ctx.start.mod(K)), slots * (K + 1)), token);
  });
}
