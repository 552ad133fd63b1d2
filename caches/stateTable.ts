// Every device buffer a session owns, in one table: name (the traced state name programs use), shape, dtype,
// owner, and what each sequence operation does to one slot's part of it. HybridMemory allocates from it and
// drives fork and save/restore of generator state by it; StepContext and the generator's step programs trace
// their states from it; the runtime finds the buffers under the keys of bufferKeys.ts.
import type { BufferRole } from './bufferKeys.ts';
import { type MemoryOptions, type MemorySpec, evictingPolicy, helperBufferBytes, kvEntries, ownKv } from './spec.ts';

export type StateOwner = 'memory' | 'generator';

export type StateKind =
  | 'position' // [slots] i32: tokens each slot holds, advanced on the device by every step
  | 'kv' // [slots * capacity, kvHeads * dim]: keys or values at their positions
  | 'ring' // [slots * (window + maxChunk - 1), kvHeads * dim]: a sliding window's keys or values
  | 'evicting' // [slots * entries, kvHeads * dim]: keys or values under lastRecent or h2o (sinks or heavy | recent ring)
  | 'keyPositions' // [slots, entries] i32: position + 1 each h2o entry holds (0: empty)
  | 'scores' // [slots, entries] f32: attention weight each h2o entry accumulated
  | 'recurrent' // [slots, ...shape]: conv, SSM or delta-rule state
  | 'snapshot' // [planes, ...]: copies of recurrent states, rings and evicting layers, and the positions they were taken at
  | 'helper' // the zero state clears copy from and the scratch of copies inside one buffer
  | 'sampling' // [slots, PARAM_STRIDE] f32: temperature, top-k/p, min-p, repetition penalty
  | 'rng' // [slots] u32: PCG state
  | 'slotRow' // [slots, 4] i32: next token to feed, tokens left, done flag
  | 'seen' // [slots * vocab] f32: tokens of the prompt and output (repetition penalty)
  | 'stopIds' // [slots, 8] i32
  | 'tokenRing'; // [slots * (K + 1)] i32: tokens sampled in the last submission, read by the host

/** What an operation does to one slot's part of a buffer (keep: what happens to every other slot). */
export type Effect =
  | 'zero' // set to the zero state, a copy on the device
  | 'copy' // copied from the source slot on the device
  | 'masked' // untouched: entries past the new length are masked by the position
  | 'from snapshot' // copied back from a snapshot plane (a ring only when cut back past its slack; evicting layers: only to a snapshot)
  | 'host write' // a few bytes only the host knows (a length, the next token to feed)
  | 'kept' // untouched and still meaningful (sampling state: a rolled-back sequence draws on from its RNG)
  | 'forgotten' // host bookkeeping dropped; the bytes stay until overwritten
  | 'saved' // written to the file: its slot's part (a full KV layer: rows below the length)
  | 'written' // overwritten from the file
  | 'not saved' // not part of a saved slot
  | 'shared'; // not per slot

export interface Behaviour {
  clear: Effect;
  fork: Effect;
  keep: Effect;
  rollback: Effect;
  save: Effect;
  restore: Effect;
}

/** The behaviour of every kind of state under the sequence operations. */
export const BEHAVIOUR: { readonly [K in StateKind]: Behaviour } = {
  position: { clear: 'zero', fork: 'copy', keep: 'zero', rollback: 'host write', save: 'saved', restore: 'written' },
  kv: { clear: 'masked', fork: 'copy', keep: 'masked', rollback: 'masked', save: 'saved', restore: 'written' },
  // evicted positions cannot be recomputed from what is kept: a rollback goes to a snapshot (or 0) only
  evicting: { clear: 'masked', fork: 'copy', keep: 'masked', rollback: 'from snapshot', save: 'saved', restore: 'written' },
  keyPositions: { clear: 'zero', fork: 'copy', keep: 'zero', rollback: 'from snapshot', save: 'saved', restore: 'written' },
  scores: { clear: 'zero', fork: 'copy', keep: 'zero', rollback: 'from snapshot', save: 'saved', restore: 'written' },
  ring: { clear: 'masked', fork: 'copy', keep: 'masked', rollback: 'from snapshot', save: 'saved', restore: 'written' },
  recurrent: { clear: 'zero', fork: 'copy', keep: 'zero', rollback: 'from snapshot', save: 'saved', restore: 'written' },
  snapshot: { clear: 'forgotten', fork: 'copy', keep: 'forgotten', rollback: 'kept', save: 'not saved', restore: 'forgotten' },
  helper: { clear: 'shared', fork: 'shared', keep: 'shared', rollback: 'shared', save: 'not saved', restore: 'shared' },
  // the generator writes its rows when a sequence joins a slot, so clearing leaves them
  sampling: { clear: 'kept', fork: 'copy', keep: 'kept', rollback: 'kept', save: 'saved', restore: 'written' },
  rng: { clear: 'kept', fork: 'copy', keep: 'kept', rollback: 'kept', save: 'saved', restore: 'written' },
  slotRow: { clear: 'kept', fork: 'copy', keep: 'kept', rollback: 'host write', save: 'saved', restore: 'written' },
  seen: { clear: 'kept', fork: 'copy', keep: 'kept', rollback: 'kept', save: 'saved', restore: 'written' },
  stopIds: { clear: 'kept', fork: 'copy', keep: 'kept', rollback: 'kept', save: 'saved', restore: 'written' },
  tokenRing: { clear: 'kept', fork: 'copy', keep: 'kept', rollback: 'kept', save: 'saved', restore: 'written' },
};

export type StateDType = 'f32' | 'i32' | 'u32';

export interface StateEntry {
  /** Buffer role in the key (bufferKeys.ts): 'state' for what programs trace, 'snapshot' and 'memory' for the memory's own. */
  role: Extract<BufferRole, 'state' | 'snapshot' | 'memory'>;
  /** The name programs trace (`L3.k`, `pos`, `gen.rng`), unique within its role. */
  name: string;
  kind: StateKind;
  /** The whole buffer's shape; its first dimension counts slots (or slot rows, or planes). */
  shape: number[];
  dtype: StateDType;
  owner: StateOwner;
  /** The layer a KV or recurrent state belongs to. */
  layer?: number;
  /** Bytes of one slot's (or plane's) part; 0 for shared buffers. */
  slotBytes: number;
}

export const kvStateName = (layer: number, which: 'k' | 'v') => `L${layer}.${which}`;
export const recurrentStateName = (layer: number, name: string) => `L${layer}.${name}`;
/** h2o's per-entry states: 'kpos' (position + 1, 0 empty) and 'score'. */
export const policyStateName = (layer: number, which: 'kpos' | 'score') => `L${layer}.${which}`;
export const POSITION_STATE = 'pos';

export const entryBytes = (e: StateEntry) => e.shape.reduce((a, b) => a * b, 1) * 4;

/**
 * The memory's entries for a spec (in allocation order: per layer K, V and their snapshot planes, recurrent
 * states and theirs, positions, snapshot positions, helpers). `planes` = slots x snapshots per slot.
 */
export function memoryStateEntries(spec: MemorySpec, options: MemoryOptions, planes: number): StateEntry[] {
  const out: StateEntry[] = [];
  const memory = { owner: 'memory' as const, dtype: 'f32' as const };
  spec.forEach((l, layer) => {
    const own = ownKv(l);
    if (!own) return;
    const entries = kvEntries(own, options);
    const policy = evictingPolicy(own, options);
    const kind = policy ? 'evicting' : entries < options.capacity ? 'ring' : 'kv';
    for (const which of ['k', 'v'] as const) {
      const width = own.kvHeads * (which === 'k' ? own.headDim : (own.valueDim ?? own.headDim));
      out.push({ ...memory, role: 'state', name: kvStateName(layer, which), kind, layer, shape: [options.slots * entries, width], slotBytes: entries * width * 4 });
    }
    if (policy?.kind === 'h2o') {
      const perSlot = { layer, shape: [options.slots, entries], slotBytes: entries * 4 };
      out.push({ ...memory, ...perSlot, role: 'state', name: policyStateName(layer, 'kpos'), kind: 'keyPositions', dtype: 'i32' });
      out.push({ ...memory, ...perSlot, role: 'state', name: policyStateName(layer, 'score'), kind: 'scores' });
    }
    if (kind !== 'kv' && planes > 0) {
      for (const which of ['k', 'v'] as const) {
        const width = own.kvHeads * (which === 'k' ? own.headDim : (own.valueDim ?? own.headDim));
        out.push({ ...memory, role: 'snapshot', name: kvStateName(layer, which), kind: 'snapshot', layer, shape: [planes * entries, width], slotBytes: entries * width * 4 });
      }
      if (policy?.kind === 'h2o') {
        const perPlane = { layer, kind: 'snapshot' as const, shape: [planes, entries], slotBytes: entries * 4 };
        out.push({ ...memory, ...perPlane, role: 'snapshot', name: policyStateName(layer, 'kpos'), dtype: 'i32' });
        out.push({ ...memory, ...perPlane, role: 'snapshot', name: policyStateName(layer, 'score') });
      }
    }
  });
  spec.forEach((l, layer) =>
    l.states.forEach((s) => {
      const slotBytes = s.shape.reduce((a, b) => a * b, 1) * 4;
      out.push({ ...memory, role: 'state', name: recurrentStateName(layer, s.name), kind: 'recurrent', layer, shape: [options.slots, ...s.shape], slotBytes });
      if (planes > 0) out.push({ ...memory, role: 'snapshot', name: recurrentStateName(layer, s.name), kind: 'snapshot', layer, shape: [planes, ...s.shape], slotBytes });
    }),
  );
  out.push({ ...memory, role: 'state', name: POSITION_STATE, kind: 'position', dtype: 'i32', shape: [options.slots], slotBytes: 4 });
  if (planes > 0) out.push({ ...memory, role: 'snapshot', name: POSITION_STATE, kind: 'snapshot', dtype: 'i32', shape: [planes], slotBytes: 4 });
  const helpers = helperBufferBytes(spec, options);
  out.push({ ...memory, role: 'memory', name: 'scratch', kind: 'helper', shape: [helpers.scratch / 4], slotBytes: 0 });
  out.push({ ...memory, role: 'memory', name: 'zero', kind: 'helper', shape: [helpers.zero / 4], slotBytes: 0 });
  return out;
}

/** A session's table: the memory's entries and, once a generator is attached, its entries. */
export class StateTable {
  private readonly byKey = new Map<string, StateEntry>();

  constructor(readonly entries: StateEntry[] = []) {
    for (const e of entries) this.add(e);
  }

  add(entry: StateEntry): void {
    const id = `${entry.role} ${entry.name}`;
    if (this.byKey.has(id)) throw new Error(`state table: '${id}' is declared twice`);
    this.byKey.set(id, entry);
    if (!this.entries.includes(entry)) this.entries.push(entry);
  }

  /** The entry of a traced state (role 'state'). */
  state(name: string): StateEntry {
    const e = this.byKey.get(`state ${name}`);
    if (!e) throw new Error(`state table: no state '${name}'`);
    return e;
  }

  find(role: StateEntry['role'], name: string): StateEntry | undefined {
    return this.byKey.get(`${role} ${name}`);
  }

  /** The table as text: one line per entry with its behaviour (strata inspect --memory, docs). */
  print(): string {
    const cols = ['clear', 'fork', 'keep', 'rollback', 'save', 'restore'] as const;
    const rows = this.entries.map((e) => [
      `${e.role}:${e.name}`,
      `${e.dtype}(${e.shape.join(',')})`,
      e.owner,
      ...cols.map((c) => BEHAVIOUR[e.kind][c]),
    ]);
    const header = ['buffer', 'shape', 'owner', ...cols];
    const widths = header.map((h, i) => Math.max(h.length, ...rows.map((r) => r[i]!.length)));
    return [header, ...rows].map((r) => r.map((c, i) => c.padEnd(widths[i]!)).join('  ').trimEnd()).join('\n');
  }
}
