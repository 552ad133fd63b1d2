// GPU-side copies for sequence operations: the copies of one operation go out in one submission, a scratch
// buffer carries copies inside one buffer (WebGPU forbids a buffer as both source and destination of a copy),
// and a zero state is the source of every clear. Nothing here writes from the host or reads back.
import type { BufferCopy, DeviceMemory } from './deviceMemory.ts';

export type { Region } from './deviceMemory.ts';

export class DeviceCopies {
  private pending: BufferCopy[] = [];
  private copies = 0;

  constructor(
    readonly device: DeviceMemory,
    /** Holds at least the largest region ever copied within one buffer. */
    readonly scratch: GPUBuffer,
    /** Never written: the zero state clears copy from. */
    readonly zero: GPUBuffer,
  ) {}

  /** Copies `bytes` from one region to another; within one buffer it goes through the scratch buffer. */
  copy(src: GPUBuffer, srcOffset: number, dst: GPUBuffer, dstOffset: number, bytes: number): void {
    if (bytes === 0) return;
    if (src === dst && srcOffset === dstOffset) return;
    this.copies++;
    if (src !== dst) {
      this.pending.push({ src, srcOffset, dst, dstOffset, bytes });
      return;
    }
    // in scratch-sized pieces, front to back: safe unless the destination overlaps the source from above
    if (bytes > this.scratch.size && dstOffset > srcOffset && dstOffset < srcOffset + bytes)
      throw new Error(`memory ops: a ${bytes}-byte copy upwards inside '${src.label}' exceeds the ${this.scratch.size}-byte scratch buffer`);
    for (let at = 0; at < bytes; at += this.scratch.size) {
      const n = Math.min(this.scratch.size, bytes - at);
      this.pending.push({ src, srcOffset: srcOffset + at, dst: this.scratch, dstOffset: 0, bytes: n }, { src: this.scratch, srcOffset: 0, dst, dstOffset: dstOffset + at, bytes: n });
    }
  }

  /** Sets a region to the zero state (a copy from the zero buffer, in pieces if the region is larger). */
  zeroFill(dst: GPUBuffer, offset: number, bytes: number): void {
    for (let at = 0; at < bytes; at += this.zero.size) this.copy(this.zero, 0, dst, offset + at, Math.min(this.zero.size, bytes - at));
  }

  /** Submits what was recorded (nothing when no copy was). Returns the number of copies. */
  submit(): number {
    const n = this.copies;
    if (this.pending.length > 0) this.device.copy(this.pending, 'memory ops');
    this.pending = [];
    this.copies = 0;
    return n;
  }

  /** Drops what was recorded without submitting it. */
  discard(): void {
    this.pending = [];
    this.copies = 0;
  }
}
