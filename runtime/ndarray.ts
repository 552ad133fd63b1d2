// Host-side tensors: the CPU backend's values and what readbacks return.
import { type DType, numel } from '../compiler/ir.ts';

export type TypedArray = Float32Array | Int32Array | Uint32Array | Uint8Array;

export interface NDArray {
  shape: number[];
  dtype: DType;
  data: TypedArray;
}

export function allocArray(dtype: DType, n: number): TypedArray {
  switch (dtype) {
    case 'f32': return new Float32Array(n);
    case 'i32': return new Int32Array(n);
    case 'u32': return new Uint32Array(n);
    case 'bool': return new Uint8Array(n);
  }
}

export function ndarray(shape: readonly number[], dtype: DType, data?: ArrayLike<number>): NDArray {
  const n = numel(shape);
  const arr = allocArray(dtype, n);
  if (data) {
    if (data.length !== n) throw new Error(`ndarray: ${data.length} values for shape (${shape.join(',')}) of ${n}`);
    arr.set(data as ArrayLike<number>);
  }
  return { shape: [...shape], dtype, data: arr };
}

/** Bytes a dtype takes in a device buffer (bool is stored as u32). */
export function deviceBytes(dtype: DType): number {
  return 4;
}
