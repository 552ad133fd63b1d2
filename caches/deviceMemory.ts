// The narrow view of a device that caches/ works through: named buffers, host writes, copies on the GPU and
// reads back. The runtime implements it (runtime/gpuRuntime.ts, which also counts every submission and
// readback) and injects it, so caches/ never imports runtime/.

/** A byte range of a device buffer. */
export interface Region {
  buffer: GPUBuffer;
  offset: number;
  bytes: number;
}

/** One copyBufferToBuffer. */
export interface BufferCopy {
  src: GPUBuffer;
  srcOffset: number;
  dst: GPUBuffer;
  dstOffset: number;
  bytes: number;
}

export interface DeviceMemory {
  /** Whether a buffer of this key exists. */
  has(key: string): boolean;
  /** A buffer under a key that programs find it by (storage, copy source and destination). */
  allocate(key: string, bytes: number): GPUBuffer;
  write(buffer: GPUBuffer, data: ArrayBufferView, offset?: number): void;
  /** Records the copies, in order, into one submission. */
  copy(copies: readonly BufferCopy[], label: string): void;
  /** Reads regions back in one submission and one map (one counted readback). Blocking. */
  read(regions: readonly Region[]): Promise<Uint8Array[]>;
}
