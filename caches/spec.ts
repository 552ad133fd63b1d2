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

export interface LayerMemoryReport {
  layer: number;
  kind: LayerKind;
  kvBytes: number;
  stateBytes: number;
  sharesKvWith: number | null;
  kvShape?: number[];
  stateShapes: Record<string, number[]>;
}

export interface MemoryReport {
  layers: LayerMemoryReport[];
  kvBytes: number;
  stateBytes: number;
  /** Positions and other per-slot bookkeeping. */
  bookkeepingBytes: number;
  totalBytes: number;
}

/** Bytes per layer and kind, exactly what a session allocates (f32 values). */
export function memoryReport(spec: MemorySpec, opts: MemoryOptions): MemoryReport {
  const layers = spec.map((l, i): LayerMemoryReport => {
    const own = l.kv && l.kv.sharesWith === undefined ? l.kv : undefined;
    const entries = own ? kvEntries(own, opts) : 0;
    const kvShape = own ? [opts.slots, entries, own.kvHeads, own.headDim + (own.valueDim ?? own.headDim)] : undefined;
    const kvBytes = own ? opts.slots * entries * own.kvHeads * (own.headDim + (own.valueDim ?? own.headDim)) * 4 : 0;
    const stateShapes = Object.fromEntries(l.states.map((s) => [s.name, [opts.slots, ...s.shape]]));
    const stateBytes = l.states.reduce((a, s) => a + opts.slots * s.shape.reduce((x, y) => x * y, 1) * 4, 0);
    return { layer: i, kind: layerKind(l), kvBytes, stateBytes, sharesKvWith: l.kv?.sharesWith ?? null, ...(kvShape ? { kvShape } : {}), stateShapes };
  });
  const kvBytes = layers.reduce((a, l) => a + l.kvBytes, 0);
  const stateBytes = layers.reduce((a, l) => a + l.stateBytes, 0);
  const bookkeepingBytes = opts.slots * 4;
  return { layers, kvBytes, stateBytes, bookkeepingBytes, totalBytes: kvBytes + stateBytes + bookkeepingBytes };
}
