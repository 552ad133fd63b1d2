// What a model sees of the session while one step is traced: the step's tokens and positions (device
// buffers), its weights, and its memory. KV rows are scattered in place at device positions (a ring for
// sliding windows); recurrent states are gathered by slot and scattered back. Positions advance on the device.
import type { StorageDType } from '../compiler/ir.ts';
import { ShapeError } from '../compiler/ops.ts';
import { Tensor } from '../dsl/tensor.ts';
import { input, iota, state, weight } from '../dsl/trace.ts';
import { type MemoryOptions, type MemorySpec, effectiveWindow, kvEntries } from './spec.ts';
import { POSITION_STATE, type StateEntry, StateTable, kvStateName, memoryStateEntries, recurrentStateName } from './stateTable.ts';
import { attention } from '../dsl/nn/attention.ts';

export interface WeightCatalog {
  /** Storage dtype of a checkpoint tensor, or undefined when the checkpoint lacks it. */
  storage(name: string): StorageDType | undefined;
}

export interface AttendOptions {
  scale: number;
  /** tanh soft-capping of attention scores (Gemma 2 style). */
  softcap?: number;
}

/** Trace-wide switch: false replaces fused kernels by their compositions (tests, fusion-off benchmarks). */
export const kernelOptions = { fusedAttention: true };

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
    const window = effectiveWindow(ownSpec, this.memory);
    const ring = E < this.memory.capacity;
    const R = this.memory.slots * E;
    let kc = stateOf(this.table.state(kvStateName(owner, 'k'))); // [R, KVH * D]
    let vc = stateOf(this.table.state(kvStateName(owner, 'v'))); // [R, KVH * Dv]
    if (spec.sharesWith === undefined) {
      if (!k || !v) throw new ShapeError(`layer ${layer} owns its KV: attend needs k and v`);
      const entry = ring ? this.positions.mod(E) : this.positions;
      // a position past a full (non-ring) buffer is dropped rather than written into the next slot's rows
      const fits = ring ? this.tokenValid : this.tokenValid.and(this.positions.lt(E));
      const row = Tensor.where(fits, this.slotIds.reshape(S, 1).mul(E).add(entry), R); // [S,T]; R = dropped
      kc = kc.scatter(row, k.reshape(S, T, KVH * D));
      vc = vc.scatter(row, v.reshape(S, T, KVH * Dv));
    }
    const G = H / KVH;
    const keys = kc.reshape(this.memory.slots, E, KVH * D).gather(this.slotIds).reshape(S, E, KVH, D);
    const values = vc.reshape(this.memory.slots, E, KVH * Dv).gather(this.slotIds).reshape(S, E, KVH, Dv);
    // position held by each entry: the entry index, or for a ring the latest position written there
    const c = iota([S, E], 1, 'i32');
    let keyPos = c;
    if (ring) {
      const last = this.start.add(this.valid).sub(1).reshape(S, 1);
      keyPos = last.sub(last.sub(c).mod(E).add(E).mod(E));
    }
    const qPos = this.positions.reshape(S, T, 1);
    const kp = keyPos.reshape(S, 1, E);
    let mask = kp.le(qPos).and(kp.ge(0)); // [S,T,E]
    if (window !== undefined) mask = mask.and(kp.gt(qPos.sub(window)));
    const qg = q.reshape(S, T, KVH, G, D).permute(0, 2, 3, 1, 4).reshape(S, KVH, G * T, D);
    const kT = keys.permute(0, 2, 3, 1); // [S,KVH,D,E]
    const vv = values.permute(0, 2, 1, 3); // [S,KVH,E,Dv]
    const m = mask.reshape(S, 1, 1, T, E).broadcastTo([S, KVH, G, T, E]).reshape(S, KVH, G * T, E);
    // keys at or past the limit are masked: the kernel's loop stops there (cost follows the real length)
    const lastKey = ring ? this.start.add(this.valid).reshape(S, 1).minimum(E) : this.positions.add(1); // [S,1] or [S,T]
    const limit = lastKey.reshape(S, 1, 1, lastKey.shape[1]!).broadcastTo([S, KVH, G, T]).reshape(S, KVH, G * T);
    const out = attention(qg, kT, vv, m, limit, { scale: opts.scale, ...(opts.softcap ? { softcap: opts.softcap } : {}), fused: kernelOptions.fusedAttention });
    return out.reshape(S, KVH, G, T, Dv).permute(0, 3, 1, 2, 4).reshape(S, T, H, Dv);
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
