// The recurrent part of a session's memory: conv / SSM / delta-rule states per recurrent layer
// ([slots, ...shape] each) and their snapshot planes. A state folds every position into a fixed size, so it
// can only go back to a position where a snapshot was taken, and nothing can be cut from its middle.
import type { DeviceCopies } from './deviceCopies.ts';
import type { BufferOf, SlotTensor } from './kvCache.ts';
import { type MemorySpec, stateSlotBytes } from './spec.ts';
import { recurrentStateName } from './stateTable.ts';

export interface RecurrentBuffer {
  layer: number;
  name: string;
  /** One slot's shape. */
  shape: number[];
  /** One slot's bytes. */
  bytes: number;
  buffer: GPUBuffer;
  snapshots?: GPUBuffer;
}

export class RecurrentCache {
  readonly label = 'recurrent state';
  readonly states: RecurrentBuffer[] = [];

  constructor(spec: MemorySpec, planes: number, buffer: BufferOf) {
    spec.forEach((l, layer) =>
      l.states.forEach((s) => {
        const bytes = stateSlotBytes(s);
        const key = recurrentStateName(layer, s.name);
        this.states.push({
          layer,
          name: s.name,
          shape: [...s.shape],
          bytes,
          buffer: buffer('state', key),
          ...(planes > 0 ? { snapshots: buffer('snapshot', key) } : {}),
        });
      }),
    );
  }

  get layers(): number[] {
    return [...new Set(this.states.map((s) => s.layer))];
  }

  checkRemoveSuffix(from: number, plane: number | undefined): string | null {
    if (!this.states.length || plane !== undefined) return null;
    return `recurrent layers ${this.layers.join(', ')} hold no state at position ${from} (their state folds every position; only a snapshot brings an earlier one back)`;
  }

  checkRemoveMiddle(from: number, to: number): string | null {
    if (!this.states.length) return null;
    return `recurrent layers ${this.layers.join(', ')} cannot forget positions ${from}..${to - 1} from the middle of their state`;
  }

  encodeRemoveSuffix(copies: DeviceCopies, slot: number, plane: number): void {
    for (const s of this.states) copies.copy(s.snapshots!, plane * s.bytes, s.buffer, slot * s.bytes, s.bytes);
  }

  encodeCopy(copies: DeviceCopies, src: number, dst: number): void {
    for (const s of this.states) copies.copy(s.buffer, src * s.bytes, s.buffer, dst * s.bytes, s.bytes);
  }

  encodeClear(copies: DeviceCopies, slot: number): void {
    for (const s of this.states) copies.zeroFill(s.buffer, slot * s.bytes, s.bytes);
  }

  encodeSnapshot(copies: DeviceCopies, slot: number, plane: number): void {
    for (const s of this.states) copies.copy(s.buffer, slot * s.bytes, s.snapshots!, plane * s.bytes, s.bytes);
  }

  encodeCopyPlane(copies: DeviceCopies, srcPlane: number, dstPlane: number): void {
    for (const s of this.states) copies.copy(s.snapshots!, srcPlane * s.bytes, s.snapshots!, dstPlane * s.bytes, s.bytes);
  }

  slotTensors(slot: number): SlotTensor[] {
    return this.states.map((s) => ({ name: recurrentStateName(s.layer, s.name), shape: [...s.shape], dtype: 'F32', region: { buffer: s.buffer, offset: slot * s.bytes, bytes: s.bytes } }));
  }
}
