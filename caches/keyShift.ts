// What removing positions from the middle of a sequence does to the cached keys that move down. A rotary key
// stored at position p carries RoPE(p); moved to p - n it must carry RoPE(p - n). The programs that re-rotate
// are built by the runtime (runtime/keyShiftPrograms.ts), which owns the compiler, and injected here.
import type { KvLayer } from './kvCache.ts';

/** How a layer's cached keys encode their position: RoPE (HF rotate_half layout) with these frequencies. */
export interface RopeKeys {
  invFreq: Float32Array;
  rotaryDim: number;
}

/**
 * What removing positions from the middle of a sequence must do to the keys that move down:
 * 'none' for keys without positions (NoPE attention such as Jamba's), or the RoPE of each layer (null for a
 * layer without positions).
 */
export type KeyShift = { kind: 'none' } | { kind: 'rope'; layer(layer: number): RopeKeys | null };

/** Re-positions moved keys on the device. */
export interface KeyShifter {
  /** Prepares (compiles) what `encode` will need, so that a failure happens before anything moves. */
  prepare(layers: readonly KvLayer[]): Promise<void>;
  /** Rotates the keys in entries [from, to) of a slot by `delta` positions in every rotary layer. */
  encode(layers: readonly KvLayer[], slot: number, from: number, to: number, delta: number): Promise<void>;
}
