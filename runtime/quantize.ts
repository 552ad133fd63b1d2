// Host side of block-quantized weights (layouts in compiler/quantized.ts): quantizing 16/32-bit values on load,
// decoding device words back to the values the kernels compute (the CPU reference and tests read these), and
// repacking llama.cpp's GGML blocks (Q8_0, Q4_0, Q4_1, Q4_K) into the device layout without going through floats.
import { QUANT_BLOCK, QUANT_FORMATS, type QuantStorage, isQuantized } from '../compiler/quantized.ts';
import type { StorageDType } from '../compiler/ir.ts';
import { type GgmlBlockDtype, type TensorData } from '../base/safetensors.ts';
import { f16BitsToF32 as fromF16, f32ToF16Bits as toF16, packHalfWords, toFloat32 } from '../base/tensorValues.ts';

/**
 * The words a buffer of `storage` holds for rows [rowStart, rowStart + rows) of a checkpoint tensor (a weight
 * split into row pieces to fit the binding limit): each piece is encoded on its own, block constants included.
 */
export function encodeWeightRows(tensor: TensorData, storage: StorageDType, rowStart: number, rows: number, name?: string): Uint32Array | Float32Array {
  const total = tensor.shape[0] ?? 1;
  if (rowStart === 0 && rows === total) return encodeWeight(tensor, storage, name);
  const rowBytes = tensor.bytes.byteLength / total; // whole GGML blocks per row, or whole elements
  const bytes = tensor.bytes.slice(rowStart * rowBytes, (rowStart + rows) * rowBytes);
  return encodeWeight({ dtype: tensor.dtype, shape: [rows, ...tensor.shape.slice(1)], bytes }, storage, name);
}

/** The words (or f32 values) a weight buffer of `storage` holds for a checkpoint tensor, converting as needed. */
export function encodeWeight(tensor: TensorData, storage: StorageDType, name?: string): Uint32Array | Float32Array {
  const count = tensor.shape.reduce((a, b) => a * b, 1);
  if (isGgmlBlockDtype(tensor.dtype)) {
    const words = repackGgml(tensor.dtype, tensor.bytes, count);
    const own = GGML_BLOCKS[tensor.dtype].storage;
    if (storage === own) return words;
    // stored quantized but bound otherwise: decode on the host (the compiler gave it another storage)
    const values = dequantize(words, count, own);
    return storage === 'f32' ? values : encodeWeight({ dtype: 'F32', shape: tensor.shape, bytes: new Uint8Array(values.buffer as ArrayBuffer) }, storage, name);
  }
  if (isQuantized(storage)) return quantize(toFloat32(tensor, name), storage);
  return storage === 'f16' || storage === 'bf16' ? packHalfWords(tensor, storage === 'f16' ? 'F16' : 'BF16', name) : toFloat32(tensor, name);
}

/** Device words of `values` (a multiple of 32 elements, blocks along rows). */
export function quantize(values: ArrayLike<number>, storage: QuantStorage): Uint32Array {
  return storage === 'q8' ? quantizeQ8(values) : quantizeQ4(values);
}

/** Values the device decodes from `words` holding `count` elements. */
export function dequantize(words: Uint32Array, count: number, storage: QuantStorage): Float32Array {
  const out = new Float32Array(count);
  if (storage === 'q8') {
    const bytes = new Int8Array(words.buffer, words.byteOffset, count);
    const scales = new Uint16Array(words.buffer, words.byteOffset + count, Math.ceil(count / QUANT_BLOCK));
    for (let i = 0; i < count; i++) out[i] = bytes[i]! * fromF16(scales[i >> 5]!);
    return out;
  }
  const constBase = QUANT_FORMATS.q4.valueWords(count);
  for (let i = 0; i < count; i++) {
    const c = words[constBase + (i >> 5)]!;
    out[i] = ((words[i >> 3]! >>> ((i & 7) * 4)) & 15) * fromF16(c & 0xffff) + fromF16(c >>> 16);
  }
  return out;
}

/** Q8_0: scale amax/127 (f16), values rounded with the stored scale. */
function quantizeQ8(values: ArrayLike<number>): Uint32Array {
  const n = values.length;
  const words = new Uint32Array(QUANT_FORMATS.q8.words(n));
  const bytes = new Int8Array(words.buffer, 0, n);
  const scales = new Uint16Array(words.buffer, n, n / QUANT_BLOCK);
  for (let b = 0; b < n / QUANT_BLOCK; b++) {
    let amax = 0;
    for (let j = 0; j < QUANT_BLOCK; j++) amax = Math.max(amax, Math.abs(values[b * QUANT_BLOCK + j]!));
    scales[b] = toF16(amax / 127);
    const d = fromF16(scales[b]!);
    for (let j = 0; j < QUANT_BLOCK; j++) bytes[b * QUANT_BLOCK + j] = d === 0 ? 0 : Math.max(-127, Math.min(127, Math.round(values[b * QUANT_BLOCK + j]! / d)));
  }
  return words;
}

/** 4-bit min/max (as llama.cpp's Q4_1): scale (max-min)/15 and min in f16, values rounded with the stored ones. */
function quantizeQ4(values: ArrayLike<number>): Uint32Array {
  const n = values.length;
  const words = new Uint32Array(QUANT_FORMATS.q4.words(n));
  const consts = new Uint16Array(words.buffer, QUANT_FORMATS.q4.valueWords(n) * 4, (n / QUANT_BLOCK) * 2);
  for (let b = 0; b < n / QUANT_BLOCK; b++) {
    let lo = Infinity;
    let hi = -Infinity;
    for (let j = 0; j < QUANT_BLOCK; j++) {
      const v = values[b * QUANT_BLOCK + j]!;
      lo = Math.min(lo, v);
      hi = Math.max(hi, v);
    }
    consts[2 * b] = toF16((hi - lo) / 15);
    consts[2 * b + 1] = toF16(lo);
    const [d, m] = [fromF16(consts[2 * b]!), fromF16(consts[2 * b + 1]!)];
    for (let j = 0; j < QUANT_BLOCK; j++) {
      const i = b * QUANT_BLOCK + j;
      const q = d === 0 ? 0 : Math.max(0, Math.min(15, Math.round((values[i]! - m) / d)));
      words[i >> 3] = (words[i >> 3]! | (q << ((i & 7) * 4))) >>> 0;
    }
  }
  return words;
}

// ---------------------------------------------------------------- GGML blocks (ggml-common.h)

export function isGgmlBlockDtype(dtype: string): dtype is GgmlBlockDtype {
  return Object.hasOwn(GGML_BLOCKS, dtype);
}
/** Elements and bytes per block of each GGML type, and the device format it repacks into. */
export const GGML_BLOCKS: { [K in GgmlBlockDtype]: { elements: number; bytes: number; storage: QuantStorage } } = {
  Q8_0: { elements: 32, bytes: 34, storage: 'q8' },
  Q4_0: { elements: 32, bytes: 18, storage: 'q4' },
  Q4_1: { elements: 32, bytes: 20, storage: 'q4' },
  Q4_K: { elements: 256, bytes: 144, storage: 'q4' },
};

/** Device words of a GGML-quantized tensor's raw bytes (`count` elements), bit-exact except Q4_K's products. */
export function repackGgml(type: GgmlBlockDtype, raw: Uint8Array, count: number): Uint32Array {
  const view = new DataView(raw.buffer, raw.byteOffset, raw.byteLength);
  const storage = GGML_BLOCKS[type].storage;
  const words = new Uint32Array(QUANT_FORMATS[storage].words(count));
  if (type === 'Q8_0') {
    // block: f16 d, int8 qs[32]
    const bytes = new Uint8Array(words.buffer, 0, count);
    const scales = new Uint16Array(words.buffer, count, count / 32);
    for (let b = 0; b < count / 32; b++) {
      scales[b] = view.getUint16(b * 34, true);
      bytes.set(raw.subarray(b * 34 + 2, b * 34 + 34), b * 32);
    }
    return words;
  }
  const constBase = QUANT_FORMATS.q4.valueWords(count);
  const put = (i: number, q: number) => (words[i >> 3] = (words[i >> 3]! | (q << ((i & 7) * 4))) >>> 0);
  if (type === 'Q4_0') {
    // block: f16 d, u8 qs[16]; element j in the low nibble of qs[j], element j+16 in the high one; x = d * (q - 8)
    for (let b = 0; b < count / 32; b++) {
      const at = b * 18;
      const d = fromF16(view.getUint16(at, true));
      words[constBase + b] = (view.getUint16(at, true) | (toF16(-8 * d) << 16)) >>> 0;
      for (let j = 0; j < 16; j++) {
        const byte = raw[at + 2 + j]!;
        put(b * 32 + j, byte & 15);
        put(b * 32 + j + 16, byte >> 4);
      }
    }
    return words;
  }
  if (type === 'Q4_1') {
    // block: f16 d, f16 m, u8 qs[16] (nibbles as Q4_0); x = d * q + m: the device's q4 block as it is
    for (let b = 0; b < count / 32; b++) {
      const at = b * 20;
      words[constBase + b] = view.getUint32(at, true);
      for (let j = 0; j < 16; j++) {
        const byte = raw[at + 4 + j]!;
        put(b * 32 + j, byte & 15);
        put(b * 32 + j + 16, byte >> 4);
      }
    }
    return words;
  }
  // Q4_K super-block of 256: f16 d, f16 dmin, u8 scales[12] (6-bit scale and min of 8 sub-blocks), u8 qs[128];
  // sub-block s: x = d * sc[s] * q - dmin * m[s]; qs in four 32-byte chunks, low nibbles sub-block 2c, high 2c+1
  for (let sb = 0; sb < count / 256; sb++) {
    const at = sb * 144;
    const d = fromF16(view.getUint16(at, true));
    const dmin = fromF16(view.getUint16(at + 2, true));
    const sc = raw.subarray(at + 4, at + 16);
    const qs = raw.subarray(at + 16, at + 144);
    for (let s = 0; s < 8; s++) {
      // get_scale_min_k4
      const [scale, min] = s < 4 ? [sc[s]! & 63, sc[s + 4]! & 63] : [(sc[s + 4]! & 0xf) | ((sc[s - 4]! >> 6) << 4), (sc[s + 4]! >> 4) | ((sc[s]! >> 6) << 4)];
      words[constBase + sb * 8 + s] = (toF16(d * scale) | (toF16(-dmin * min) << 16)) >>> 0;
      const chunk = s >> 1;
      const high = s & 1;
      for (let j = 0; j < 32; j++) {
        const byte = qs[chunk * 32 + j]!;
        put(sb * 256 + s * 32 + j, high ? byte >> 4 : byte & 15);
      }
    }
  }
  return words;
}

/** Q8_0 blocks (ggml layout) of f32 values, quantized as quantize(values, 'q8') does. */
export function quantizeGgmlQ8(values: Float32Array): Uint8Array<ArrayBuffer> {
  const n = values.length;
  const words = quantizeQ8(values);
  const bytes = new Uint8Array(words.buffer, 0, n);
  const scales = new Uint16Array(words.buffer, n, n / QUANT_BLOCK);
  const out = new Uint8Array((n / QUANT_BLOCK) * 34);
  const view = new DataView(out.buffer);
  for (let b = 0; b < n / QUANT_BLOCK; b++) {
    view.setUint16(b * 34, scales[b]!, true);
    out.set(bytes.subarray(b * QUANT_BLOCK, (b + 1) * QUANT_BLOCK), b * 34 + 2);
  }
  return out;
}
