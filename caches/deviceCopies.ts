// GPU-side copies for sequence operations: one command encoder per operation, a scratch buffer for copies
// inside one buffer (WebGPU forbids a buffer as both source and destination of a copy), and a zero state
// as the source of every clear. Nothing here writes from the host or reads back.
import type { GpuRuntime } from '../runtime/gpuRuntime.ts';

/** A byte range of a device buffer. */
export interface Region {
  buffer: GPUBuffer;
  offset: number;
  bytes: number;
}

export class DeviceCopies {
  private encoder: GPUCommandEncoder | undefined;
  private copies = 0;

  constructor(
    readonly runtime: GpuRuntime,
    /** Holds at least the largest region ever copied within one buffer. */
    readonly scratch: GPUBuffer,
    /** Never written: the zero state clears copy from. */
    readonly zero: GPUBuffer,
  ) {}

  private get enc(): GPUCommandEncoder {
    return (this.encoder ??= this.runtime.device.createCommandEncoder({ label: 'memory ops' }));
  }

  /** Copies `bytes` from one region to another; within one buffer it goes through the scratch buffer. */
  copy(src: GPUBuffer, srcOffset: number, dst: GPUBuffer, dstOffset: number, bytes: number): void {
    if (bytes === 0) return;
    if (src === dst && srcOffset === dstOffset) return;
    if (src !== dst) {
      this.enc.copyBufferToBuffer(src, srcOffset, dst, dstOffset, bytes);
    } else {
      if (bytes > this.scratch.size) throw new Error(`memory ops: a ${bytes}-byte copy inside '${src.label}' exceeds the ${this.scratch.size}-byte scratch buffer`);
      this.enc.copyBufferToBuffer(src, srcOffset, this.scratch, 0, bytes);
      this.enc.copyBufferToBuffer(this.scratch, 0, dst, dstOffset, bytes);
    }
    this.copies++;
  }

  /** Sets a region to the zero state (a copy from the zero buffer, in pieces if the region is larger). */
  zeroFill(dst: GPUBuffer, offset: number, bytes: number): void {
    for (let at = 0; at < bytes; at += this.zero.size) this.copy(this.zero, 0, dst, offset + at, Math.min(this.zero.size, bytes - at));
  }

  /** Submits what was encoded (nothing when no copy was recorded). Returns the number of copies. */
  submit(): number {
    const n = this.copies;
    if (this.encoder && n > 0) this.runtime.submit([this.encoder.finish()]);
    this.encoder = undefined;
    this.copies = 0;
    return n;
  }

  /** Drops what was encoded without submitting it. */
  discard(): void {
    this.encoder = undefined;
    this.copies = 0;
  }
}

/**
 * Reads several regions back in one submission and one map (counted as one readback). Blocking.
 * Returns one Uint8Array per region, in order.
 */
export async function readRegions(runtime: GpuRuntime, regions: Region[]): Promise<Uint8Array[]> {
  const total = regions.reduce((a, r) => a + r.bytes, 0);
  if (total === 0) return regions.map(() => new Uint8Array(0));
  const stage = runtime.createBuffer(total, 'memory readback', GPUBufferUsage.MAP_READ | GPUBufferUsage.COPY_DST);
  try {
    const enc = runtime.device.createCommandEncoder({ label: 'memory readback' });
    let at = 0;
    for (const r of regions) {
      if (r.bytes) enc.copyBufferToBuffer(r.buffer, r.offset, stage, at, r.bytes);
      at += r.bytes;
    }
    runtime.submit([enc.finish()]);
    runtime.counters.readbacks++;
    await stage.mapAsync(GPUMapMode.READ, 0, total);
    const all = new Uint8Array(stage.getMappedRange(0, total).slice(0));
    stage.unmap();
    const out: Uint8Array[] = [];
    at = 0;
    for (const r of regions) {
      out.push(all.slice(at, at + r.bytes));
      at += r.bytes;
    }
    return out;
  } finally {
    stage.destroy();
  }
}
