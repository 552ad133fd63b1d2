// A session's memory: every KV, recurrent-state, position and snapshot buffer allocated once, up front, from
// the model's per-layer spec for N sequence slots, and the sequence operations on them (remove a range,
// fork, keep, clear, snapshot, roll back) as copies on the GPU. Every part is asked whether it can do an
// operation before any part changes, so the attention and recurrent caches never disagree.
import { DeviceCopies } from './deviceCopies.ts';
import type { DeviceMemory } from './deviceMemory.ts';
import type { KeyShifter } from './keyShift.ts';
import { bufferKey } from './bufferKeys.ts';
import { KvCache, type SlotTensor } from './kvCache.ts';
import { RecurrentCache } from './recurrentCache.ts';
import { type MemoryOptions, type MemoryReport, type MemorySpec, evictingPolicy, isRing, memoryReport, ownKv } from './spec.ts';
import { POSITION_STATE, type StateEntry, StateTable, entryBytes, memoryStateEntries } from './stateTable.ts';

/** An operation the memory refuses (the message says why and what is possible); nothing was changed. */
export class MemoryError extends Error {
  override name = 'MemoryError';
}

/** Whose memory this is: checked when a saved file is restored. */
export interface ModelIdentity {
  family: string;
  /** Hash of the config and the weight names, shapes and dtypes (see modelFingerprint). */
  fingerprint: string;
}

export interface HybridMemoryOptions {
  /**
   * Snapshot planes per slot (default 2 when the model has recurrent, sliding-window or evicting KV layers, else 0) and
   * an automatic snapshot every `every` tokens, taken after the step that reaches it (0: only on request).
   */
  snapshots?: { perSlot?: number; every?: number };
  /** Lets `removeRange` cut from the middle of a sequence: re-positions moved keys (see KeyShift). */
  keyShifter?: KeyShifter;
  model?: ModelIdentity;
}

interface Snapshot {
  position: number;
  /** Index among the slot's planes. */
  plane: number;
  /** When it was taken (larger is newer): the oldest is replaced when all planes are in use. */
  taken: number;
}

/** "0, 8, 16, 20..24": sorted integers with runs of three or more shortened. */
export function formatPositions(positions: number[]): string {
  const parts: string[] = [];
  for (let i = 0; i < positions.length; ) {
    let j = i;
    while (j + 1 < positions.length && positions[j + 1] === positions[j]! + 1) j++;
    if (j - i >= 2) parts.push(`${positions[i]}..${positions[j]}`);
    else for (let k = i; k <= j; k++) parts.push(String(positions[k]));
    i = j + 1;
  }
  return parts.join(', ');
}

export class HybridMemory {
  /**
   * Tokens held per slot: a host mirror of the device positions. Written only here: by every operation, and by
   * `afterStep`, through which steps report how far each slot got.
   */
  readonly lengths: readonly number[];
  /** Every buffer this session owns, with its behaviour under the operations here (see stateTable.ts). */
  readonly table: StateTable;
  readonly kv: KvCache;
  readonly recurrent: RecurrentCache;
  /** [slots] i32: each slot's length, advanced on the device by every step. */
  readonly positions: GPUBuffer;
  /** [slots * perSlot] i32: the length each snapshot plane was taken at. */
  readonly snapshotPositions: GPUBuffer | undefined;
  readonly snapshotsPerSlot: number;
  readonly snapshotEvery: number;
  readonly model: ModelIdentity | undefined;
  private readonly snapshots: Snapshot[][];
  private readonly allocations: { key: string; entry: StateEntry; buffer: GPUBuffer }[] = [];
  private readonly buffers = new Map<StateEntry, GPUBuffer>();
  /** The one writer of `lengths`. */
  private readonly slotLengths: number[];
  private readonly copies: DeviceCopies;
  private readonly shifter: KeyShifter | undefined;
  private clock = 0;

  constructor(
    readonly device: DeviceMemory,
    /** Prefix of the buffer keys (bufferKeys.ts), the same as the programs that use this memory. */
    readonly namespace: string,
    readonly spec: MemorySpec,
    readonly options: MemoryOptions,
    opts: HybridMemoryOptions = {},
  ) {
    for (const k of ['slots', 'capacity', 'maxChunk'] as const)
      if (!Number.isInteger(options[k]) || options[k] < 1) throw new MemoryError(`memory option ${k} must be a positive integer, got ${options[k]}`);
    const rollbackNeedsSnapshots = spec.some((l) => l.states.length > 0 || (ownKv(l) && (isRing(ownKv(l)!, options) || evictingPolicy(ownKv(l)!, options))));
    this.snapshotsPerSlot = opts.snapshots?.perSlot ?? (rollbackNeedsSnapshots ? 2 : 0);
    this.snapshotEvery = opts.snapshots?.every ?? 0;
    if (!Number.isInteger(this.snapshotsPerSlot) || this.snapshotsPerSlot < 0) throw new MemoryError(`snapshots.perSlot must be a non-negative integer, got ${this.snapshotsPerSlot}`);
    if (!Number.isInteger(this.snapshotEvery) || this.snapshotEvery < 0) throw new MemoryError(`snapshots.every must be a non-negative integer, got ${this.snapshotEvery}`);
    if (this.snapshotEvery > 0 && this.snapshotsPerSlot === 0) throw new MemoryError(`snapshots.every = ${this.snapshotEvery} needs snapshot planes (snapshots.perSlot > 0)`);
    this.model = opts.model;
    const planes = options.slots * this.snapshotsPerSlot;
    this.table = new StateTable();
    for (const entry of memoryStateEntries(spec, options, planes)) this.register(entry);
    const buffer = (role: StateEntry['role'], name: string) => this.buffers.get(this.table.find(role, name)!)!;
    this.kv = new KvCache(spec, options, planes, buffer);
    this.recurrent = new RecurrentCache(spec, planes, buffer);
    this.positions = buffer('state', POSITION_STATE);
    this.snapshotPositions = planes > 0 ? buffer('snapshot', POSITION_STATE) : undefined;
    this.copies = new DeviceCopies(device, buffer('memory', 'scratch'), buffer('memory', 'zero'));
    this.shifter = opts.keyShifter;
    this.slotLengths = new Array<number>(options.slots).fill(0);
    this.lengths = this.slotLengths;
    this.snapshots = Array.from({ length: options.slots }, () => []);
  }

  // ------------------------------------------------------------------ what is allocated

  /** Bytes per layer and kind; equal to `allocatedBytes()`. */
  report(): MemoryReport {
    return memoryReport(this.spec, this.options, { perSlot: this.snapshotsPerSlot });
  }

  /**
   * Allocates a table entry's buffer (the memory's own at construction; the generator's state when it attaches,
   * before its programs load). Entries of another owner than 'memory' are carried by fork and save/restore.
   */
  register(entry: StateEntry): GPUBuffer {
    const key = bufferKey(this.namespace, entry.role, entry.name);
    if (this.device.has(key)) throw new MemoryError(`buffer '${key}' already exists: one memory per namespace, allocated before any program`);
    this.table.add(entry);
    const buffer = this.device.allocate(key, entryBytes(entry));
    this.allocations.push({ key, entry, buffer });
    this.buffers.set(entry, buffer);
    return buffer;
  }

  /** The buffer of a registered traced state (e.g. the generator's 'gen.rng'). */
  stateBuffer(name: string): GPUBuffer {
    return this.buffers.get(this.table.state(name))!;
  }

  /** Sum of the sizes of every buffer of the memory's own entries (what `report()` counts). */
  allocatedBytes(): number {
    return this.allocations.filter((a) => a.entry.owner === 'memory').reduce((a, b) => a + b.buffer.size, 0);
  }

  /** Entries carried per slot that other owners (the generator) registered. */
  private get attached(): StateEntry[] {
    return this.table.entries.filter((e) => e.owner !== 'memory');
  }

  /** Runtime keys of this memory's buffers. */
  bufferKeys(): string[] {
    return this.allocations.map((a) => a.key);
  }

  // ------------------------------------------------------------------ sequence operations

  private checkSlot(slot: number, what = 'slot'): void {
    if (!Number.isInteger(slot) || slot < 0 || slot >= this.options.slots)
      throw new MemoryError(`unknown ${what} ${slot}: this memory has slots 0..${this.options.slots - 1}`);
  }

  private planeIndex(slot: number, plane: number): number {
    return slot * this.snapshotsPerSlot + plane;
  }

  /** Empties a slot: recurrent states copied from the zero state, position 0, its snapshots forgotten. */
  clear(slot: number): void {
    this.checkSlot(slot);
    this.encodeClear(slot);
    this.copies.submit();
    this.forget(slot);
  }

  /** Keeps one sequence and clears every other slot. */
  keep(slot: number): void {
    this.checkSlot(slot);
    for (let s = 0; s < this.options.slots; s++) if (s !== slot) this.encodeClear(s);
    this.copies.submit();
    for (let s = 0; s < this.options.slots; s++) if (s !== slot) this.forget(s);
  }

  private encodeClear(slot: number): void {
    this.kv.encodeClear(this.copies, slot);
    this.recurrent.encodeClear(this.copies, slot);
    this.copies.zeroFill(this.positions, slot * 4, 4);
  }

  private forget(slot: number): void {
    this.slotLengths[slot] = 0;
    this.snapshots[slot] = [];
  }

  /**
   * Copies sequence `src` into slot `dst` (KV entries, states, position, snapshots and the generator's state of
   * the slot: sampling parameters, RNG, next token, done flag), replacing what dst held.
   */
  fork(src: number, dst: number): void {
    this.checkSlot(src, 'source slot');
    this.checkSlot(dst, 'destination slot');
    if (src === dst) return;
    const length = this.lengths[src]!;
    this.kv.encodeCopy(this.copies, src, dst, length);
    this.recurrent.encodeCopy(this.copies, src, dst);
    this.copies.copy(this.positions, src * 4, this.positions, dst * 4, 4);
    for (const e of this.attached) this.copies.copy(this.buffers.get(e)!, src * e.slotBytes, this.buffers.get(e)!, dst * e.slotBytes, e.slotBytes);
    for (const s of this.snapshots[src]!) this.encodeCopyPlane(this.planeIndex(src, s.plane), this.planeIndex(dst, s.plane));
    this.copies.submit();
    this.slotLengths[dst] = length;
    this.snapshots[dst] = this.snapshots[src]!.map((s) => ({ ...s }));
  }

  private encodeCopyPlane(from: number, to: number): void {
    this.kv.encodeCopyPlane(this.copies, from, to);
    this.recurrent.encodeCopyPlane(this.copies, from, to);
    this.copies.copy(this.snapshotPositions!, from * 4, this.snapshotPositions!, to * 4, 4);
  }

  /**
   * Removes positions [from, to) of a slot's sequence (to defaults to its end). A suffix goes back to `from`:
   * always possible for full attention layers, and for recurrent layers, evicting KV layers (lastRecent, h2o) and
   * sliding-window rings cut back further than their slack only to a snapshot. A middle range moves the later KV
   * entries down (with a key shift, see KeyShift) and is refused for recurrent, ring and evicting layers. A
   * refusal changes nothing.
   */
  async removeRange(slot: number, from: number, to = Infinity): Promise<void> {
    this.checkSlot(slot);
    if (!Number.isInteger(from) || from < 0) throw new MemoryError(`removeRange: from must be a non-negative integer, got ${from}`);
    if (to !== Infinity && (!Number.isInteger(to) || to < from)) throw new MemoryError(`removeRange: to must be an integer >= from (${from}), got ${to}`);
    const length = this.lengths[slot]!;
    const end = Math.min(to, length);
    if (from >= end) return; // nothing stored there
    if (end === length) return this.rollback(slot, from);
    const reasons = [this.recurrent.checkRemoveMiddle(from, end), this.kv.checkRemoveMiddle()];
    if (!this.shifter && this.kv.layers.length)
      reasons.push('attention keys were written at their positions; moving them down needs a keyShift (the RoPE of each layer, or { kind: "none" } for keys without positions)');
    this.refuseIf(slot, `remove positions ${from}..${end - 1}`, reasons);
    const removed = end - from;
    await this.shifter!.prepare(this.kv.layers); // compile before anything changes
    this.kv.encodeRemoveMiddle(this.copies, slot, from, end, length);
    this.copies.submit();
    await this.shifter!.encode(this.kv.layers, slot, from, length - removed, -removed);
    this.device.write(this.positions, Int32Array.of(length - removed), slot * 4);
    this.slotLengths[slot] = length - removed;
    this.snapshots[slot] = this.snapshots[slot]!.filter((s) => s.position <= from);
  }

  /** Goes back to `position` (drops every later position): to a snapshot, 0, or as far as the caches allow. */
  rollback(slot: number, position: number): void {
    this.checkSlot(slot);
    const length = this.lengths[slot]!;
    if (!Number.isInteger(position) || position < 0 || position > length)
      throw new MemoryError(`slot ${slot} holds ${length} positions: cannot roll back to ${position}`);
    if (position === length) return;
    if (position === 0) return this.clear(slot);
    const snapshot = this.snapshots[slot]!.find((s) => s.position === position);
    const plane = snapshot ? this.planeIndex(slot, snapshot.plane) : undefined;
    this.refuseIf(slot, `remove positions ${position}..${length - 1}`, [this.kv.checkRemoveSuffix(position, length, plane), this.recurrent.checkRemoveSuffix(position, plane)]);
    this.kv.encodeRemoveSuffix(this.copies, slot, position, length, plane);
    if (plane !== undefined) {
      this.recurrent.encodeRemoveSuffix(this.copies, slot, plane);
      this.copies.copy(this.snapshotPositions!, plane * 4, this.positions, slot * 4, 4);
    }
    this.copies.submit();
    if (plane === undefined) this.device.write(this.positions, Int32Array.of(position), slot * 4);
    this.slotLengths[slot] = position;
    this.snapshots[slot] = this.snapshots[slot]!.filter((s) => s.position <= position);
  }

  private refuseIf(slot: number, what: string, reasons: (string | null)[]): void {
    const why = reasons.filter((r): r is string => r !== null);
    if (!why.length) return;
    const length = this.lengths[slot]!;
    throw new MemoryError(
      `slot ${slot} (${length} positions): cannot ${what}: ${why.join('; ')}. Positions it can go back to: ${formatPositions(this.restorablePositions(slot))}` +
        (this.snapshotsPerSlot ? '' : ' (this memory keeps no snapshots)'),
    );
  }

  /** Every position `rollback` accepts for this slot right now, ascending (always 0 and the current length). */
  restorablePositions(slot: number): number[] {
    this.checkSlot(slot);
    const length = this.lengths[slot]!;
    const out: number[] = [];
    for (let p = 0; p <= length; p++) {
      if (p === 0 || p === length) {
        out.push(p);
        continue;
      }
      const snapshot = this.snapshots[slot]!.find((s) => s.position === p);
      const plane = snapshot ? this.planeIndex(slot, snapshot.plane) : undefined;
      if (this.kv.checkRemoveSuffix(p, length, plane) === null && this.recurrent.checkRemoveSuffix(p, plane) === null) out.push(p);
    }
    return out;
  }

  // ------------------------------------------------------------------ snapshots

  /** Positions of the slot's snapshots, ascending. */
  snapshotsOf(slot: number): number[] {
    this.checkSlot(slot);
    return this.snapshots[slot]!.map((s) => s.position).sort((a, b) => a - b);
  }

  /**
   * Copies the slot's recurrent states, sliding-window rings, evicting KV layers and position to a snapshot plane
   * on the GPU; the oldest snapshot is replaced when every plane is in use. Returns the position it holds.
   */
  snapshot(slot: number): number {
    this.checkSlot(slot);
    if (this.snapshotsPerSlot === 0) throw new MemoryError('this memory keeps no snapshots (snapshots.perSlot is 0)');
    const position = this.lengths[slot]!;
    const mine = this.snapshots[slot]!;
    const existing = mine.find((s) => s.position === position);
    if (existing) {
      existing.taken = ++this.clock;
      return position;
    }
    let plane = [...Array(this.snapshotsPerSlot).keys()].find((p) => !mine.some((s) => s.plane === p));
    if (plane === undefined) {
      const oldest = mine.reduce((a, b) => (a.taken <= b.taken ? a : b));
      plane = oldest.plane;
      mine.splice(mine.indexOf(oldest), 1);
    }
    const index = this.planeIndex(slot, plane);
    this.kv.encodeSnapshot(this.copies, slot, index);
    this.recurrent.encodeSnapshot(this.copies, slot, index);
    this.copies.copy(this.positions, slot * 4, this.snapshotPositions!, index * 4, 4);
    this.copies.submit();
    mine.push({ position, plane, taken: ++this.clock });
    return position;
  }

  /**
   * The hook after a prefill chunk or decode step: records how many positions each slot now holds (what the
   * device's positions say after the step) and snapshots every slot that moved `every` tokens past its latest
   * snapshot (unless `snapshot` is false: a sequence that ended).
   */
  afterStep(steps: Iterable<{ slot: number; length: number; snapshot?: boolean }>): void {
    const moved = new Map<number, number>();
    for (const { slot, length, snapshot } of steps) {
      this.checkSlot(slot);
      if (!Number.isInteger(length) || length < 0 || length > this.options.capacity) throw new MemoryError(`slot ${slot}: a step cannot leave ${length} positions (capacity ${this.options.capacity})`);
      this.slotLengths[slot] = length;
      if (snapshot !== false) moved.set(slot, length);
    }
    if (this.snapshotEvery === 0) return;
    for (const [slot, length] of moved) {
      const latest = Math.max(0, ...this.snapshots[slot]!.map((s) => s.position).filter((p) => p <= length));
      if (length - latest >= this.snapshotEvery) this.snapshot(slot);
    }
  }

  // ------------------------------------------------------------------ contents (save, restore, tests)

  /**
   * The byte ranges of one slot holding `length` positions (default: what it holds), as saved: its position,
   * KV entries and states, then the generator's state of the slot when a generator is attached.
   */
  slotTensors(slot: number, length = this.lengths[slot]!): SlotTensor[] {
    this.checkSlot(slot);
    return [
      { name: POSITION_STATE, shape: [1], dtype: 'I32', region: { buffer: this.positions, offset: slot * 4, bytes: 4 } },
      ...this.kv.slotTensors(slot, length),
      ...this.recurrent.slotTensors(slot),
      ...this.attached.map((e): SlotTensor => ({
        name: e.name,
        shape: [e.slotBytes / 4],
        dtype: e.dtype === 'f32' ? 'F32' : 'I32', // u32 RNG state travels as its bits
        region: { buffer: this.buffers.get(e)!, offset: slot * e.slotBytes, bytes: e.slotBytes },
      })),
    ];
  }

  /** Reads a slot's tensors back (one readback). Blocking. */
  async readSlot(slot: number): Promise<Map<string, Uint8Array>> {
    const tensors = this.slotTensors(slot);
    const bytes = await this.device.read(tensors.map((t) => t.region));
    return new Map(tensors.map((t, i) => [t.name, bytes[i]!]));
  }

  /**
   * Overwrites a slot with saved tensors (validated by the caller: every name of `slotTensors(slot, length)`,
   * with its size) and sets its length. The slot's snapshots are forgotten.
   */
  writeSlot(slot: number, length: number, data: Map<string, Uint8Array>): void {
    this.checkSlot(slot);
    for (const t of this.slotTensors(slot, length)) {
      const bytes = data.get(t.name)!;
      if (bytes.byteLength) this.device.write(t.region.buffer, bytes, t.region.offset);
    }
    this.slotLengths[slot] = length;
    this.snapshots[slot] = [];
  }
}
