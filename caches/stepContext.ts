// What a model sees of the session while one step is traced: the step's tokens and positions (device
// buffers), its weights, and its memory. KV rows are scattered in place at device positions (a ring for
// sliding windows); recurrent states are gathered by slot and scattered back. Positions advance on the device.
import type { StorageDType } from '../compiler/ir.ts';
import { ShapeError } from '../compiler/ops.ts';
import { Tensor } from '../dsl/tensor.ts';
import { constant, input, iota, state, weight } from '../dsl/trace.ts';
import { type MemoryOptions, type MemorySpec, effectiveWindow, evictingPolicy, kvEntries } from './spec.ts';
import { POSITION_STATE, type StateEntry, StateTable, kvStateName, memoryStateEntries, policyStateName, recurrentStateName } from './stateTable.ts';
import { attention } from '../dsl/nn/attention.ts';
import { type DecodeSplits, slicesFit } from '../compiler/attentionSplit.ts';
import { DECODE_MAX_HEAD_DIM, DECODE_MAX_ROWS } from '../compiler/lower/attentionDecode.ts';

/** What an h2o layer's step does besides attending (see StepContext.h2oStep). */
interface H2oStep {
  /** [S,T] ring entry of each new position. */
  entry: Tensor;
  /** [S,E] position each entry holds after this step, -1 for none. */
  keyPos: Tensor;
  /** [S,T] rows moving into heavy places, and where to ([S,T], R: none). */
  moveFrom: Tensor;
  moveTo: Tensor;
  /** Writes positions and scores (plus this step's attention weights [S,E]). */
  commit(weight: Tensor): void;
}

export interface WeightCatalog {
  /** Storage dtype of a checkpoint tensor, or undefined when the checkpoint lacks it. */
  storage(name: string): StorageDType | undefined;
}

export interface AttendOptions {
  scale: number;
  /** tanh soft-capping of attention scores (Gemma 2 style). */
  softcap?: number;
}

const env = (name: string): string | undefined => (typeof process === 'undefined' ? undefined : process.env?.[name]);

/**
 * Trace-wide switches: false replaces fused kernels by their compositions (tests, fusion-off benchmarks). From the
 * environment (Node), for measuring the paths they replaced: STRATA_SELECTIVE_STEP=0 traces the Mamba-1 decode
 * step as its composition (6 dispatches a layer, not 4), STRATA_SELECTIVE_SCAN=0 its prefill scan as the chunked
 * composition (jamba-small's 128-token prefill: 221 kernels, not 104), STRATA_SSD_SCAN=0 the Mamba-2 prefill scan as the
 * chunked SSD algorithm (about ten kernels a layer) instead of the selective_scan kernel, STRATA_JAMBA_ROUTING=topk Jamba's expert selection as
 * topK's rounds (2 single-workgroup kernels of their own, not inlined into the experts' down projections).
 */
export const kernelOptions = {
  fusedAttention: true,
  fusedSsdStep: true,
  fusedSelectiveStep: env('STRATA_SELECTIVE_STEP') !== '0',
  fusedSelectiveScan: env('STRATA_SELECTIVE_SCAN') !== '0',
  fusedSsdScan: env('STRATA_SSD_SCAN') !== '0',
  /** Jamba's top-k as per-expert rank columns (dsl/nn/moe.ts topkProbabilityColumns) rather than route()'s dense. */
  rankRouting: env('STRATA_JAMBA_ROUTING') !== 'topk',
  /**
   * Decode attention over slices of the keys (flash-decoding, dsl/nn/attention.ts `splits`) for every step traced,
   * whatever the adapter's choice (StepOptions.decodeSplits); undefined: the adapter's. Tests set it.
   */
  attentionSplits: undefined as DecodeSplits | false | undefined,
};

/**
 * Slices a decode attention over E keys of heads D and Dv takes under `rule` in a step of S sequences (0: one): where
 * the rule takes that many sequences, the cache holds more keys than its length, H2O does not score it, the decode
 * kernel takes its heads and the slices fit.
 */
function slicesFor(rule: DecodeSplits | false | undefined, S: number, E: number, D: number, Dv: number, scored: boolean): number {
  if (!rule || S > rule.sequences || E <= rule.from || scored || Math.max(D, Dv) > DECODE_MAX_HEAD_DIM || !slicesFit(E, rule.slices)) return 0;
  return rule.slices;
}

/** Whether a decode step of S sequences traced with `rule` splits some layer's attention: the generator compiles a split step only then. */
export function splitsSomeLayer(spec: MemorySpec, memory: MemoryOptions, rule: DecodeSplits | false | undefined, S: number): boolean {
  return spec.some(({ kv }) => kv !== undefined && kv.sharesWith === undefined && slicesFor(rule, S, kvEntries(kv, memory), kv.headDim, kv.valueDim ?? kv.headDim, evictingPolicy(kv, memory)?.kind === 'h2o') > 0);
}

/** How a step is traced for its adapter (ModelRunner: from its DeviceLimits). */
export interface StepOptions {
  /** Decode attentions over key slices (DeviceLimits.decodeSplits): where a cache holds more keys than its `from`; absent or false: one slice. */
  decodeSplits?: DecodeSplits | false;
}

/** A traced state from its table entry (name, shape and dtype are the table's). */
export const stateOf = (e: StateEntry): Tensor => state(e.name, e.shape, e.dtype);

/** Device tensors that stand in for the host inputs, e.g. a decode step that feeds tokens sampled on the GPU. */
export interface StepSources {
  /** [S, T] i32 */
  tokens?: Tensor;
  /** [S] i32 */
  slotIds?: Tensor;
  /** [S] i32 */
  valid?: Tensor;
}

export class StepContext {
  /** [S, T] token ids of this step (padding beyond `valid` per row). */
  readonly tokens: Tensor;
  /** [S] cache slot of each row; a row whose slot is out of range is inactive (its writes are dropped). */
  readonly slotIds: Tensor;
  /** [S] real tokens per row in this step. */
  readonly valid: Tensor;
  /** [S] tokens each row's sequence held before this step. */
  readonly start: Tensor;
  /** [S, T] absolute position of every token. */
  readonly positions: Tensor;
  /** [S, T] bool: token is real (t < valid). */
  readonly tokenValid: Tensor;
  private readonly pos: Tensor;
  /** The session's memory entries: every state this step traces is one of them. */
  readonly table: StateTable;

  constructor(
    readonly spec: MemorySpec,
    readonly memory: MemoryOptions,
    /** rows per step */
    readonly S: number,
    /** tokens per row per step */
    readonly T: number,
    private readonly catalog: WeightCatalog,
    sources: StepSources = {},
    private readonly options: StepOptions = {},
  ) {
    this.tokens = sources.tokens ?? input('tokens', [S, T], 'i32');
    this.slotIds = sources.slotIds ?? input('slot_ids', [S], 'i32');
    this.valid = sources.valid ?? input('valid', [S], 'i32');
    this.table = new StateTable(memoryStateEntries(spec, memory, 0));
    this.pos = stateOf(this.table.state(POSITION_STATE));
    this.start = this.pos.gather(this.slotIds);
    const t = iota([S, T], 1, 'i32');
    this.positions = this.start.reshape(S, 1).add(t);
    this.tokenValid = t.lt(this.valid.reshape(S, 1));
  }

  /** A checkpoint weight; 16-bit ones stay 16-bit on the device. */
  weight(name: string, shape: number[]): Tensor {
    const storage = this.catalog.storage(name) ?? 'f32';
    return weight(name, shape, storage);
  }

  /** A computed constant (not in the checkpoint), e.g. RoPE inverse frequencies; the session uploads its value. */
  constant(name: string, shape: number[]): Tensor {
    return weight(name, shape, 'f32');
  }

  /**
   * Writes this step's K/V into layer `layer`'s cache (unless it reads another layer's) and attends over it.
   * q [S,T,H,D], k [S,T,KVH,D], v [S,T,KVH,Dv] -> [S,T,H,Dv]. Grouped heads share a KV head (GQA).
   */
  attend(layer: number, q: Tensor, k: Tensor | undefined, v: Tensor | undefined, opts: AttendOptions): Tensor {
    const spec = this.spec[layer]?.kv;
    if (!spec) throw new ShapeError(`layer ${layer} attends but its memory spec has no KV`);
    const owner = spec.sharesWith ?? layer;
    const ownSpec = this.spec[owner]!.kv!;
    const { S, T } = this;
    const [H, D] = [q.shape[2]!, q.shape[3]!];
    const KVH = ownSpec.kvHeads;
    const Dv = ownSpec.valueDim ?? ownSpec.headDim;
    const E = kvEntries(ownSpec, this.memory);
    const policy = evictingPolicy(ownSpec, this.memory);
    const window = effectiveWindow(ownSpec, this.memory);
    const ring = E < this.memory.capacity;
    const R = this.memory.slots * E;
    const writes = spec.sharesWith === undefined;
    if (writes && (!k || !v)) throw new ShapeError(`layer ${layer} owns its KV: attend needs k and v`);
    let kc = stateOf(this.table.state(kvStateName(owner, 'k'))); // [R, KVH * D]
    let vc = stateOf(this.table.state(kvStateName(owner, 'v'))); // [R, KVH * Dv]
    const slotBase = this.slotIds.reshape(S, 1).mul(E); // [S,1] first row of each step row's slot
    const c = iota([S, E], 1, 'i32');
    const last = this.start.add(this.valid).sub(1).reshape(S, 1); // [S,1] latest position written this step
    // the entry each new position goes to, and the position each entry holds after this step (-1: none)
    let entry: Tensor;
    let keyPos: Tensor;
    let h2o: H2oStep | undefined;
    if (policy?.kind === 'h2o') {
      h2o = this.h2oStep(owner, policy.heavy, E, writes);
      entry = h2o.entry;
      keyPos = h2o.keyPos;
    } else if (policy?.kind === 'lastRecent') {
      // sinks at entries [0, sinks), then a ring of recent + maxChunk - 1 entries
      const sinks = policy.sinks;
      const span = E - sinks;
      entry = Tensor.where(this.positions.lt(sinks), this.positions, this.positions.sub(sinks).mod(span).add(sinks));
      // a ring entry holds the latest position p <= last with (p - sinks) % span == c - sinks
      const ringPos = last.sub(last.sub(c).mod(span).add(span).mod(span));
      keyPos = Tensor.where(c.lt(sinks), c, Tensor.where(ringPos.ge(sinks), ringPos, -1));
    } else if (ring) {
      entry = this.positions.mod(E);
      keyPos = last.sub(last.sub(c).mod(E).add(E).mod(E));
    } else {
      entry = this.positions;
      keyPos = c;
    }
    if (writes) {
      // a position past a full (non-ring) buffer is dropped rather than written into the next slot's rows
      const fits = ring ? this.tokenValid : this.tokenValid.and(this.positions.lt(E));
      const row = Tensor.where(fits, slotBase.add(entry), R); // [S,T]; R = dropped
      if (h2o) {
        // the ring entries about to be overwritten that won a heavy place move there first (both reads traced
        // before both writes, so that the two gathers and the two scatters can each share a dispatch)
        const [movedK, movedV] = [kc.gather(h2o.moveFrom), vc.gather(h2o.moveFrom)];
        kc = kc.scatter(h2o.moveTo, movedK);
        vc = vc.scatter(h2o.moveTo, movedV);
      }
      kc = kc.scatter(row, k!.reshape(S, T, KVH * D));
      vc = vc.scatter(row, v!.reshape(S, T, KVH * Dv));
    }
    const G = H / KVH;
    const keys = kc.reshape(this.memory.slots, E, KVH * D).gather(this.slotIds).reshape(S, E, KVH, D);
    const values = vc.reshape(this.memory.slots, E, KVH * Dv).gather(this.slotIds).reshape(S, E, KVH, Dv);
    const qPos = this.positions.reshape(S, T, 1);
    const kp = keyPos.reshape(S, 1, E);
    let mask = kp.le(qPos).and(kp.ge(0)); // [S,T,E]
    if (policy?.kind === 'lastRecent') mask = mask.and(c.reshape(S, 1, E).lt(policy.sinks).or(kp.gt(qPos.sub(policy.recent))));
    else if (window !== undefined) mask = mask.and(kp.gt(qPos.sub(window)));
    const qg = q.reshape(S, T, KVH, G, D).permute(0, 2, 3, 1, 4).reshape(S, KVH, G * T, D);
    const kT = keys.permute(0, 2, 3, 1); // [S,KVH,D,E]
    const vv = values.permute(0, 2, 1, 3); // [S,KVH,E,Dv]
    const m = mask.reshape(S, 1, 1, T, E).broadcastTo([S, KVH, G, T, E]).reshape(S, KVH, G * T, E);
    // keys at or past the limit are masked: the kernel's loop stops there (cost follows the real length)
    const lastKey = h2o ? constant(E, 'i32').broadcastTo([S, 1]) : ring ? this.start.add(this.valid).reshape(S, 1).minimum(E) : this.positions.add(1); // [S,1] or [S,T]
    const limit = lastKey.reshape(S, 1, 1, lastKey.shape[1]!).broadcastTo([S, KVH, G, T]).reshape(S, KVH, G * T);
    const attendOpts = { scale: opts.scale, ...(opts.softcap ? { softcap: opts.softcap } : {}) };
    const scored = Boolean(h2o && writes);
    let out = attention(qg, kT, vv, m, limit, { ...attendOpts, fused: kernelOptions.fusedAttention, weights: scored, splits: this.splitsOf(G * T, E, D, Dv, scored) });
    if (h2o && scored) {
      // H2O's scores: the probability the attention kernel gave each entry (a row per query head and token, each
      // written by its own workgroup), summed in a fixed order over this step's real queries and every head
      const probs = out.slice(3, Dv, Dv + E); // [S,KVH,G*T,E]
      out = out.slice(3, 0, Dv);
      const real = this.tokenValid.reshape(S, 1, 1, T, 1).broadcastTo([S, KVH, G, T, 1]).reshape(S, KVH, G * T, 1);
      h2o.commit(Tensor.where(real, probs, 0).sum(2).sum(1)); // [S,E]
    }
    return out.reshape(S, KVH, G, T, Dv).permute(0, 3, 1, 2, 4).reshape(S, T, H, Dv);
  }

  /** Key slices of a decode attention (kernelOptions.attentionSplits, else StepOptions.decodeSplits): one token a row, rows the decode kernel takes, and slicesFor. */
  private splitsOf(rows: number, E: number, D: number, Dv: number, scored: boolean): number {
    if (this.T !== 1 || rows > DECODE_MAX_ROWS) return 0;
    return slicesFor(kernelOptions.attentionSplits ?? this.options.decodeSplits, this.S, E, D, Dv, scored);
  }

  /**
   * H2O on the device, in fixed buffers: a ring of recent + maxChunk - 1 entries, then `heavy` places (the ring
   * first, so that until it wraps the keys lie in dense's order and the results equal dense's). Before a
   * step writes its positions into the ring, the entries they overwrite compete with the heavy entries for the
   * `heavy` places by accumulated score (ties keep the incumbent); winners move into the places losers leave.
   */
  private h2oStep(owner: number, heavy: number, E: number, writes: boolean): H2oStep {
    const { S, T } = this;
    const slots = this.memory.slots;
    const R = slots * E;
    const span = E - heavy;
    const kposState = stateOf(this.table.state(policyStateName(owner, 'kpos'))); // [slots, E] position + 1
    const scoreState = stateOf(this.table.state(policyStateName(owner, 'score'))); // [slots, E]
    const kposRows = kposState.gather(this.slotIds); // [S,E]
    if (!writes) return { entry: iota([S, T], 1, 'i32'), keyPos: kposRows.sub(1), moveFrom: iota([S, T], 1, 'i32'), moveTo: iota([S, T], 1, 'i32'), commit: () => {} };
    const scoreRows = scoreState.gather(this.slotIds); // [S,E]
    const slotBase = this.slotIds.reshape(S, 1).mul(E);
    const entry = this.positions.mod(span); // [S,T]
    const flat = slotBase.add(entry); // [S,T] rows of the entries this step overwrites
    const candPos = kposState.reshape(R).gather(flat); // [S,T] position + 1 they hold
    const candScore = scoreState.reshape(R).gather(flat);
    const candLive = this.tokenValid.and(candPos.gt(0));
    const NONE = -3.0e38;
    const N = heavy + T;
    const values = Tensor.concat([Tensor.where(kposRows.slice(1, span, E).gt(0), scoreRows.slice(1, span, E), NONE), Tensor.where(candLive, candScore, NONE)], 1); // [S,N]
    // rank of each contender: how many beat it (a higher score, or an equal one earlier in the list)
    const vi = values.reshape(S, N, 1);
    const vj = values.reshape(S, 1, N);
    const before = iota([1, N, N], 2, 'i32').lt(iota([1, N, N], 1, 'i32'));
    const rank = Tensor.where(vj.gt(vi).or(vj.eq(vi).and(before)), 1, 0).sum(-1); // [S,N] f32 counts
    const wins = Tensor.where(rank.lt(heavy).and(values.gt(NONE)), 1, 0); // [S,N]
    const heavyWins = wins.slice(1, 0, heavy); // [S,heavy]
    const candWins = wins.slice(1, heavy, N); // [S,T]
    const freed = Tensor.where(heavyWins.gt(0.5), 0, 1); // places losers (and empty places) leave
    // the k-th winning newcomer takes the k-th freed place
    const freedRank = freed.cumsum(-1).sub(freed);
    const candRank = candWins.cumsum(-1).sub(candWins);
    const place = iota([1, 1, heavy], 2, 'f32');
    const match = freed.reshape(S, 1, heavy).gt(0.5).and(freedRank.reshape(S, 1, heavy).eq(candRank.reshape(S, T, 1))); // [S,T,heavy]
    const dest = Tensor.where(match, place, 0).sum(-1).cast('i32').add(span); // [S,T] entry of the place taken
    const moving = candWins.gt(0.5);
    const moveTo = Tensor.where(moving, slotBase.add(dest), R);
    // every entry's position and score after the moves and this step's writes
    const e = iota([1, 1, E], 2, 'i32');
    const isNew = entry.reshape(S, T, 1).eq(e).and(this.tokenValid.reshape(S, T, 1)); // [S,T,E]
    const isDest = dest.reshape(S, T, 1).eq(e).and(moving.reshape(S, T, 1));
    const anyNew = Tensor.where(isNew, 1, 0).max(1).gt(0.5); // [S,E]
    const anyDest = Tensor.where(isDest, 1, 0).max(1).gt(0.5);
    const newPos = Tensor.where(isNew, this.positions.add(1).reshape(S, T, 1), 0).sum(1); // [S,E]
    const destPos = Tensor.where(isDest, candPos.reshape(S, T, 1), 0).sum(1);
    const destScore = Tensor.where(isDest, candScore.reshape(S, T, 1), 0).sum(1);
    const lost = Tensor.concat([constant(0).broadcastTo([S, span]), freed], 1).gt(0.5); // [S,E] heavy places given up
    const kposNext = Tensor.where(anyNew, newPos, Tensor.where(anyDest, destPos, Tensor.where(lost, 0, kposRows))); // [S,E]
    const scoreNext = Tensor.where(anyNew, 0, Tensor.where(anyDest, destScore, Tensor.where(lost, 0, scoreRows)));
    return {
      entry,
      keyPos: kposNext.sub(1),
      moveFrom: flat,
      moveTo,
      commit: (weight: Tensor) => {
        // the new scores traced before both writes, so that the two scatters can share a dispatch
        const scores = scoreNext.add(weight);
        kposState.scatter(this.slotIds, kposNext);
        scoreState.scatter(this.slotIds, scores);
      },
    };
  }

  /** A recurrent state of this step's rows: [S, ...shape]. */
  readState(layer: number, name: string): Tensor {
    return stateOf(this.recurrentEntry(layer, name)).gather(this.slotIds);
  }

  /** Replaces this step's rows of a recurrent state; inactive rows are dropped. */
  writeState(layer: number, name: string, value: Tensor): void {
    stateOf(this.recurrentEntry(layer, name)).scatter(this.slotIds, value);
  }

  private recurrentEntry(layer: number, name: string): StateEntry {
    const entry = this.spec[layer]?.states.some((s) => s.name === name) ? this.table.find('state', recurrentStateName(layer, name)) : undefined;
    if (!entry) throw new ShapeError(`layer ${layer} has no recurrent state '${name}' in its memory spec`);
    return entry;
  }

  /** Advances every active row's position by its valid tokens (on the device). */
  finish(): void {
    this.pos.scatter(this.slotIds, this.start.add(this.valid));
  }
}
