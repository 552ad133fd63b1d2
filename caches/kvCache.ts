// The attention part of a session's memory: one K and one V buffer per layer that owns its KV
// ([slots * entries, kvHeads * dim], a ring of window + maxChunk - 1 entries for sliding windows), none for
// layers that read another's. Sequence operations on it are row copies; a ring and an evicting layer also get
// snapshot planes, because rolling them back needs the entries that newer positions overwrote or evicted.
import type { DeviceCopies, Region } from './deviceCopies.ts';
import { type EvictingPolicy, type KvSpec, type MemoryOptions, type MemorySpec, describePolicy, effectiveWindow, evictingPolicy, isRing, kvEntries, ownKv } from './spec.ts';
import { type StateEntry, kvStateName, policyStateName } from './stateTable.ts';

export interface KvLayer {
  layer: number;
  spec: KvSpec;
  /** Entries per slot (capacity, or the ring size). */
  entries: number;
  ring: boolean;
  window: number | undefined;
  /** Bytes of one entry (row) of K and of V. */
  rowBytes: { k: number; v: number };
  buffers: { k: GPUBuffer; v: GPUBuffer };
  /** Ring and evicting layers with snapshot storage: [planes * entries, ...] copies of a slot's entries. */
  snapshots?: { k: GPUBuffer; v: GPUBuffer };
  /** lastRecent or h2o: older positions are evicted, so the slot's entries are copied and saved whole. */
  policy?: EvictingPolicy;
  /** h2o: [slots * entries] position + 1 and accumulated score of each entry. */
  h2o?: { kpos: GPUBuffer; score: GPUBuffer };
  /** h2o with snapshot storage: [planes * entries] copies of both. */
  h2oSnapshots?: { kpos: GPUBuffer; score: GPUBuffer };
}

/** A named byte range of one slot, as saved to and restored from a file. */
export interface SlotTensor {
  name: string;
  shape: number[];
  dtype: 'F32' | 'I32';
  region: Region;
}

/** The buffer of a state table entry (allocated by HybridMemory). */
export type BufferOf = (role: StateEntry['role'], name: string) => GPUBuffer;

export class KvCache {
  readonly label = 'attention KV';
  readonly layers: KvLayer[] = [];

  constructor(
    spec: MemorySpec,
    readonly options: MemoryOptions,
    readonly planes: number,
    buffer: BufferOf,
  ) {
    spec.forEach((l, layer) => {
      const own = ownKv(l);
      if (!own) return;
      const entries = kvEntries(own, options);
      const ring = isRing(own, options);
      const buffers = { k: buffer('state', kvStateName(layer, 'k')), v: buffer('state', kvStateName(layer, 'v')) };
      const policy = evictingPolicy(own, options);
      const snapshots = (ring || policy) && planes > 0 ? { k: buffer('snapshot', kvStateName(layer, 'k')), v: buffer('snapshot', kvStateName(layer, 'v')) } : undefined;
      const rowBytes = { k: own.kvHeads * own.headDim * 4, v: own.kvHeads * (own.valueDim ?? own.headDim) * 4 };
      const h2oBuffers = (role: 'state' | 'snapshot') => ({ kpos: buffer(role, policyStateName(layer, 'kpos')), score: buffer(role, policyStateName(layer, 'score')) });
      const h2o = policy?.kind === 'h2o' ? h2oBuffers('state') : undefined;
      const h2oSnapshots = h2o && planes > 0 ? h2oBuffers('snapshot') : undefined;
      this.layers.push({
        layer, spec: own, entries, ring, window: effectiveWindow(own, options), rowBytes, buffers,
        ...(snapshots ? { snapshots } : {}), ...(policy ? { policy } : {}), ...(h2o ? { h2o } : {}), ...(h2oSnapshots ? { h2oSnapshots } : {}),
      });
    });
  }

  get rings(): KvLayer[] {
    return this.layers.filter((l) => l.ring);
  }

  /** Positions a ring can be cut back to without a snapshot: the entries the next query needs are intact. */
  ringKeeps(l: KvLayer, from: number, length: number): boolean {
    // position k lives at entry k mod E until k + E is written; the query at `from` needs (from - window, from)
    const oldest = Math.max(0, from - l.window! + 1);
    return oldest + l.entries >= length;
  }

  get evicting(): KvLayer[] {
    return this.layers.filter((l) => l.policy);
  }

  private evictingReason(what: string): string | null {
    const ev = this.evicting;
    return ev.length ? `layers ${ev.map((l) => `${l.layer} (${describePolicy(l.policy!)})`).join(', ')} evict positions for good: ${what}` : null;
  }

  /** Why the suffix [from, length) cannot be removed, or null. `plane`: a snapshot taken at `from`. */
  checkRemoveSuffix(from: number, length: number, plane: number | undefined): string | null {
    if (plane !== undefined && this.planes > 0) return null;
    if (this.evicting.length) return this.evictingReason('they go back only to a snapshot (or to 0)');
    const bad = this.rings.filter((l) => !this.ringKeeps(l, from, length));
    if (!bad.length) return null;
    return `sliding-window layers ${bad.map((l) => l.layer).join(', ')} keep a ring of ${bad[0]!.entries} entries: positions before ${from} that position ${from} still sees were overwritten`;
  }

  checkRemoveMiddle(): string | null {
    if (this.evicting.length) return this.evictingReason('their entries cannot be moved');
    const rings = this.rings;
    if (rings.length) return `sliding-window layers ${rings.map((l) => l.layer).join(', ')} keep a ring: entries cannot be moved inside it`;
    return null;
  }

  encodeRemoveSuffix(copies: DeviceCopies, slot: number, from: number, length: number, plane: number | undefined): void {
    if (plane === undefined) return; // entries past the new length are masked by the position
    for (const l of this.layers) {
      if (!l.snapshots || (l.ring && this.ringKeeps(l, from, length))) continue;
      this.copyEntries(copies, l, 'snapshot', plane, 'live', slot);
    }
  }

  /** Moves entries [to, length) of a slot down to `from` (full-capacity layers only). */
  encodeRemoveMiddle(copies: DeviceCopies, slot: number, from: number, to: number, length: number): void {
    for (const l of this.layers)
      for (const which of ['k', 'v'] as const) {
        const row = l.rowBytes[which];
        const base = slot * l.entries * row;
        copies.copy(l.buffers[which], base + to * row, l.buffers[which], base + from * row, (length - to) * row);
      }
  }

  encodeCopy(copies: DeviceCopies, src: number, dst: number, length: number): void {
    for (const l of this.layers) {
      const rows = l.ring || l.policy ? l.entries : Math.min(length, l.entries);
      for (const which of ['k', 'v'] as const) {
        const row = l.rowBytes[which];
        copies.copy(l.buffers[which], src * l.entries * row, l.buffers[which], dst * l.entries * row, rows * row);
      }
      for (const b of l.h2o ? [l.h2o.kpos, l.h2o.score] : []) copies.copy(b, src * l.entries * 4, b, dst * l.entries * 4, l.entries * 4);
    }
  }

  /** Empties a slot's h2o entries (positions 0 = empty, scores 0); other layers' stale entries are masked by the position. */
  encodeClear(copies: DeviceCopies, slot: number): void {
    for (const l of this.layers) for (const b of l.h2o ? [l.h2o.kpos, l.h2o.score] : []) copies.zeroFill(b, slot * l.entries * 4, l.entries * 4);
  }

  encodeSnapshot(copies: DeviceCopies, slot: number, plane: number): void {
    for (const l of this.layers) if (l.snapshots) this.copyEntries(copies, l, 'live', slot, 'snapshot', plane);
  }

  encodeCopyPlane(copies: DeviceCopies, srcPlane: number, dstPlane: number): void {
    for (const l of this.layers) if (l.snapshots) this.copyEntries(copies, l, 'snapshot', srcPlane, 'snapshot', dstPlane);
  }

  /** Copies all of a ring's or evicting layer's entries (h2o: with positions and scores) between a slot and a plane. */
  private copyEntries(copies: DeviceCopies, l: KvLayer, from: 'live' | 'snapshot', fromIndex: number, to: 'live' | 'snapshot', toIndex: number): void {
    const kv = (side: 'live' | 'snapshot') => (side === 'live' ? l.buffers : l.snapshots!);
    for (const which of ['k', 'v'] as const) {
      const bytes = l.entries * l.rowBytes[which];
      copies.copy(kv(from)[which], fromIndex * bytes, kv(to)[which], toIndex * bytes, bytes);
    }
    if (!l.h2oSnapshots) return;
    const h2o = (side: 'live' | 'snapshot') => (side === 'live' ? l.h2o! : l.h2oSnapshots!);
    for (const which of ['kpos', 'score'] as const) copies.copy(h2o(from)[which], fromIndex * l.entries * 4, h2o(to)[which], toIndex * l.entries * 4, l.entries * 4);
  }

  /** A slot's live entries: rows [0, length) of a full layer, the whole ring of a sliding one. */
  slotTensors(slot: number, length: number): SlotTensor[] {
    const out: SlotTensor[] = [];
    for (const l of this.layers) {
      const rows = l.ring || l.policy ? l.entries : Math.min(length, l.entries);
      for (const which of ['k', 'v'] as const) {
        const row = l.rowBytes[which];
        out.push({ name: kvStateName(l.layer, which), shape: [rows, row / 4], dtype: 'F32', region: { buffer: l.buffers[which], offset: slot * l.entries * row, bytes: rows * row } });
      }
      if (l.h2o)
        for (const which of ['kpos', 'score'] as const)
          out.push({ name: policyStateName(l.layer, which), shape: [l.entries], dtype: which === 'kpos' ? 'I32' : 'F32', region: { buffer: l.h2o[which], offset: slot * l.entries * 4, bytes: l.entries * 4 } });
    }
    return out;
  }
}
