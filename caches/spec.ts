// The per-layer memory spec: what each layer remembers between steps. Models declare it; a session turns it
// into fixed device buffers (one KV buffer per attending layer or sharing group, recurrent states per layer).

export interface KvSpec {
  kvHeads: number;
  headDim: number;
  /** Value head size when it differs from the key's. */
  valueDim?: number;
  /** Sliding window: the layer keeps only the last `window` positions, in a ring. */
  window?: number;
  /** This layer reads layer `sharesWith`'s KV and owns none. */
  sharesWith?: number;
}

export interface RecurrentStateSpec {
  /** e.g. 'conv', 'ssm', 'delta'. */
  name: string;
  /** Shape of one slot's state. */
  shape: number[];
}

export interface LayerMemorySpec {
  kv?: KvSpec;
  states: RecurrentStateSpec[];
}

export type MemorySpec = LayerMemorySpec[];

export interface MemoryOptions {
  /** Concurrent sequences. */
  slots: number;
  /** Longest sequence (prompt + generation) per slot. */
  capacity: number;
  /** Longest chunk a step may write: a sliding-window ring holds window + maxChunk - 1 entries so a chunk never overwrites keys its own queries still need. */
  maxChunk: number;
  /** Per-session override of sliding windows (shrink only). */
  window?: number;
}

export type LayerKind = 'attention' | 'recurrent' | 'both' | 'shared-kv' | 'none';

export function layerKind(l: LayerMemorySpec): LayerKind {
  if (l.kv?.sharesWith !== undefined) return 'shared-kv';
  if (l.kv && l.states.length) return 'both';
  if (l.kv) return 'attention';
  if (l.states.length) return 'recurrent';
  return 'none';
}

/** Entries of a layer's KV buffer per slot: the capacity, or the ring size for a sliding window. */
export function kvEntries(kv: KvSpec, opts: MemoryOptions): number {
  const window = opts.window !== undefined && kv.window !== undefined ? Math.min(opts.window, kv.window) : kv.window;
  if (window === undefined || window + opts.maxChunk - 1 >= opts.capacity) return opts.capacity;
  return window + opts.maxChunk - 1;
}

export function effectiveWindow(kv: KvSpec, opts: MemoryOptions): number | undefined {
  return opts.window !== undefined && kv.window !== undefined ? Math.min(opts.window, kv.window) : kv.window;
}

/** Bytes of one slot's share of a KV buffer: `which` 'k' or 'v'. */
export function kvSlotBytes(kv: KvSpec, opts: MemoryOptions, which: 'k' | 'v'): number {
  return kvEntries(kv, opts) * kv.kvHeads * (which === 'k' ? kv.headDim : (kv.valueDim ?? kv.headDim)) * 4;
}

/** Bytes of one slot's recurrent state. */
export function stateSlotBytes(s: RecurrentStateSpec): number {
  return s.shape.reduce((x, y) => x * y, 1) * 4;
}

/** The layer's own KV (undefined when it has none or reads another layer's). */
export function ownKv(l: LayerMemorySpec): KvSpec | undefined {
  return l.kv && l.kv.sharesWith === undefined ? l.kv : undefined;
}

/** True when the layer's KV is a ring shorter than the capacity (older entries get overwritten). */
export function isRing(kv: KvSpec, opts: MemoryOptions): boolean {
  return kvEntries(kv, opts) < opts.capacity;
}

export interface SnapshotOptions {
  /** Snapshot planes per slot (0: no snapshot storage). */
  perSlot: number;
}

export interface LayerMemoryReport {
  layer: number;
  kind: LayerKind;
  /** Its own KV buffers (keys and values), 0 for none or a layer reading another's KV. */
  kvBytes: number;
  /** Its recurrent states. */
  stateBytes: number;
  /** Its share of the snapshot planes: recurrent states and sliding-window rings. */
  snapshotBytes: number;
  sharesKvWith: number | null;
  /** [slots, entries, kvHeads, keyDim + valueDim] */
  kvShape?: number[];
  /** Sliding window after the session override, when the layer has one. */
  window?: number;
  stateShapes: Record<string, number[]>;
}

export interface MemoryReport {
  layers: LayerMemoryReport[];
  kvBytes: number;
  stateBytes: number;
  snapshotBytes: number;
  /** Positions per slot and per snapshot plane. */
  bookkeepingBytes: number;
  /** The zero state clears copy from and the scratch buffer for copies inside one buffer. */
  scratchBytes: number;
  totalBytes: number;
}

/** Sizes of the two helper buffers of a session's memory: the zero state and the copy scratch. */
export function helperBufferBytes(spec: MemorySpec, opts: MemoryOptions): { zero: number; scratch: number } {
  let zero = 4;
  let scratch = 4;
  for (const l of spec) {
    for (const s of l.states) {
      zero = Math.max(zero, stateSlotBytes(s));
      scratch = Math.max(scratch, stateSlotBytes(s));
    }
    const own = ownKv(l);
    if (own) scratch = Math.max(scratch, kvSlotBytes(own, opts, 'k'), kvSlotBytes(own, opts, 'v'));
  }
  return { zero, scratch };
}

/** Bytes per layer and kind, exactly what a session allocates (f32 values, i32 positions). */
export function memoryReport(spec: MemorySpec, opts: MemoryOptions, snapshots: SnapshotOptions = { perSlot: 0 }): MemoryReport {
  const planes = opts.slots * snapshots.perSlot;
  const layers = spec.map((l, i): LayerMemoryReport => {
    const own = ownKv(l);
    const entries = own ? kvEntries(own, opts) : 0;
    const window = own ? effectiveWindow(own, opts) : undefined;
    const kvSlot = own ? kvSlotBytes(own, opts, 'k') + kvSlotBytes(own, opts, 'v') : 0;
    const stateSlot = l.states.reduce((a, s) => a + stateSlotBytes(s), 0);
    const ringSlot = own && isRing(own, opts) ? kvSlot : 0;
    return {
      layer: i,
      kind: layerKind(l),
      kvBytes: opts.slots * kvSlot,
      stateBytes: opts.slots * stateSlot,
      snapshotBytes: planes * (stateSlot + ringSlot),
      sharesKvWith: l.kv?.sharesWith ?? null,
      ...(own ? { kvShape: [opts.slots, entries, own.kvHeads, own.headDim + (own.valueDim ?? own.headDim)] } : {}),
      ...(window !== undefined ? { window } : {}),
      stateShapes: Object.fromEntries(l.states.map((s) => [s.name, [opts.slots, ...s.shape]])),
    };
  });
  const sum = (f: (l: LayerMemoryReport) => number) => layers.reduce((a, l) => a + f(l), 0);
  const kvBytes = sum((l) => l.kvBytes);
  const stateBytes = sum((l) => l.stateBytes);
  const snapshotBytes = sum((l) => l.snapshotBytes);
  const bookkeepingBytes = (opts.slots + planes) * 4;
  const helpers = helperBufferBytes(spec, opts);
  const scratchBytes = helpers.zero + helpers.scratch;
  return { layers, kvBytes, stateBytes, snapshotBytes, bookkeepingBytes, scratchBytes, totalBytes: kvBytes + stateBytes + snapshotBytes + bookkeepingBytes + scratchBytes };
}
