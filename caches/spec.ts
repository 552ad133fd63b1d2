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
  /** An evicting policy the session chose for this layer (see KvPolicy; `window` is the model's own ring). */
  policy?: EvictingPolicy;
}

/**
 * What a layer's KV keeps. dense: every position (the default). window: the last `window` positions (a ring).
 * lastRecent: the first `sinks` positions and the last `recent` (StreamingLLM). h2o: the last `recent` positions
 * and the `heavy` older ones with the largest attention weight accumulated so far (Heavy-Hitter Oracle).
 */
export type KvPolicy =
  | { kind: 'dense' }
  | { kind: 'window'; window: number }
  | { kind: 'lastRecent'; sinks: number; recent: number }
  | { kind: 'h2o'; recent: number; heavy: number };

export type EvictingPolicy = Extract<KvPolicy, { kind: 'lastRecent' | 'h2o' }>;

/** One policy for every attention layer, or one per layer index (layers not listed keep the model's). */
export type KvPolicySetting = KvPolicy | { [layer: number]: KvPolicy };

/** A policy in words: 'dense', 'window 64', 'lastRecent 4+60', 'h2o 32+32'. */
export function describePolicy(p: KvPolicy): string {
  switch (p.kind) {
    case 'dense': return 'dense';
    case 'window': return `window ${p.window}`;
    case 'lastRecent': return `lastRecent sinks ${p.sinks} + recent ${p.recent}`;
    case 'h2o': return `h2o recent ${p.recent} + heavy ${p.heavy}`;
  }
}

/** Positions a policy keeps per slot (Infinity for dense). */
export function policyBudget(p: KvPolicy): number {
  switch (p.kind) {
    case 'dense': return Infinity;
    case 'window': return p.window;
    case 'lastRecent': return p.sinks + p.recent;
    case 'h2o': return p.recent + p.heavy;
  }
}

/** The spec with the session's KV policies applied to the layers that own KV. Throws RangeError on a bad policy. */
export function withKvPolicies(spec: MemorySpec, setting: KvPolicySetting | undefined): MemorySpec {
  if (setting === undefined) return spec;
  const uniform = typeof (setting as KvPolicy).kind === 'string';
  return spec.map((l, layer) => {
    const p = uniform ? (setting as KvPolicy) : (setting as Record<number, KvPolicy>)[layer];
    if (!p || !l.kv || l.kv.sharesWith !== undefined) return l;
    checkPolicy(p, layer);
    const { policy: _old, window: _window, ...kv } = l.kv;
    if (p.kind === 'dense') return { ...l, kv };
    if (p.kind === 'window') return { ...l, kv: { ...kv, window: p.window } };
    return { ...l, kv: { ...kv, policy: p } };
  });
}

function checkPolicy(p: KvPolicy, layer: number): void {
  const int = (name: string, v: number, min: number) => {
    if (!Number.isInteger(v) || v < min) throw new RangeError(`layer ${layer}: KV policy ${p.kind}: ${name} must be an integer >= ${min}, got ${v}`);
  };
  if (p.kind === 'window') int('window', p.window, 1);
  if (p.kind === 'lastRecent') (int('sinks', p.sinks, 0), int('recent', p.recent, 1));
  if (p.kind === 'h2o') (int('recent', p.recent, 1), int('heavy', p.heavy, 1));
}

/** The layer's evicting policy when it takes effect (its entries are fewer than the capacity). */
export function evictingPolicy(kv: KvSpec, opts: MemoryOptions): EvictingPolicy | undefined {
  return kv.policy && kvEntries(kv, opts) < opts.capacity ? kv.policy : undefined;
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

/**
 * Entries of a layer's KV buffer per slot: the capacity, the ring size for a sliding window, or for an evicting
 * policy its kept positions plus the chunk slack of its recent ring (sinks | ring, or ring | heavy).
 */
export function kvEntries(kv: KvSpec, opts: MemoryOptions): number {
  if (kv.policy) {
    const kept = kv.policy.kind === 'lastRecent' ? kv.policy.sinks + kv.policy.recent : kv.policy.heavy + kv.policy.recent;
    return Math.min(opts.capacity, kept + opts.maxChunk - 1);
  }
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

/** True when the layer's KV is a sliding-window ring shorter than the capacity (older entries get overwritten). */
export function isRing(kv: KvSpec, opts: MemoryOptions): boolean {
  return !kv.policy && kvEntries(kv, opts) < opts.capacity;
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
  /** Its share of the snapshot planes: recurrent states, sliding-window rings and evicting KV layers. */
  snapshotBytes: number;
  sharesKvWith: number | null;
  /** [slots, entries, kvHeads, keyDim + valueDim] */
  kvShape?: number[];
  /** Sliding window after the session override, when the layer has one. */
  window?: number;
  /** The evicting KV policy in effect, in words. */
  policy?: string;
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
    // h2o also keeps each entry's position and accumulated score
    const kvSlot = own ? kvSlotBytes(own, opts, 'k') + kvSlotBytes(own, opts, 'v') + (evictingPolicy(own, opts)?.kind === 'h2o' ? entries * 8 : 0) : 0;
    const stateSlot = l.states.reduce((a, s) => a + stateSlotBytes(s), 0);
    // rings and evicting layers are snapshotted whole (h2o with its positions and scores)
    const ringSlot = own && (isRing(own, opts) || evictingPolicy(own, opts)) ? kvSlot : 0;
    return {
      layer: i,
      kind: layerKind(l),
      kvBytes: opts.slots * kvSlot,
      stateBytes: opts.slots * stateSlot,
      snapshotBytes: planes * (stateSlot + ringSlot),
      sharesKvWith: l.kv?.sharesWith ?? null,
      ...(own ? { kvShape: [opts.slots, entries, own.kvHeads, own.headDim + (own.valueDim ?? own.headDim)] } : {}),
      ...(window !== undefined ? { window } : {}),
      ...(own && evictingPolicy(own, opts) ? { policy: describePolicy(evictingPolicy(own, opts)!) } : {}),
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
