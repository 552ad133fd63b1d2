// A tensor's bytes as numbers: f16 and bf16 bit patterns to and from f32, a tensor of any safetensors dtype as a
// Float32Array or Int32Array, and 16-bit weights packed two to a u32 word as the GPU reads them.
import { DTYPE_BYTES, SafetensorsError, type SafetensorsDtype, type TensorData, elementCount } from './safetensors.ts';

const conversionView = new DataView(new ArrayBuffer(4));

export function f16BitsToF32(bits: number): number {
  const sign = bits & 0x8000 ? -1 : 1;
  const exponent = (bits >> 10) & 0x1f;
  const mantissa = bits & 0x3ff;
  if (exponent === 0) return sign * mantissa * 2 ** -24;
  if (exponent === 0x1f) return mantissa ? NaN : sign * Infinity;
  return sign * (1 + mantissa / 1024) * 2 ** (exponent - 15);
}

export function bf16BitsToF32(bits: number): number {
  conversionView.setUint32(0, (bits & 0xffff) << 16);
  return conversionView.getFloat32(0);
}

/** Round-to-nearest-even, as torch's `.half()`. */
export function f32ToF16Bits(value: number): number {
  conversionView.setFloat32(0, value);
  const x = conversionView.getUint32(0);
  const sign = (x >>> 16) & 0x8000;
  const exponent = (x >>> 23) & 0xff;
  const mantissa = x & 0x7fffff;
  if (exponent === 0xff) return sign | 0x7c00 | (mantissa ? 0x200 : 0);
  const halfExponent = exponent - 127 + 15;
  if (halfExponent >= 0x1f) return sign | 0x7c00;
  if (halfExponent <= 0) {
    if (halfExponent < -10) return sign;
    const full = mantissa | 0x800000;
    const shift = 14 - halfExponent;
    let half = full >>> shift;
    const remainder = full & ((1 << shift) - 1);
    const halfway = 1 << (shift - 1);
    if (remainder > halfway || (remainder === halfway && half & 1)) half++;
    return sign | half;
  }
  let half = (halfExponent << 10) | (mantissa >>> 13);
  const remainder = mantissa & 0x1fff;
  if (remainder > 0x1000 || (remainder === 0x1000 && half & 1)) half++; // may carry into the exponent: correct
  return sign | half;
}

/** Round-to-nearest-even, as torch's `.bfloat16()`. */
export function f32ToBf16Bits(value: number): number {
  conversionView.setFloat32(0, value);
  const x = conversionView.getUint32(0);
  if ((x & 0x7f800000) === 0x7f800000 && x & 0x7fffff) return ((x >>> 16) | 0x40) & 0xffff;
  return ((x + 0x7fff + ((x >>> 16) & 1)) >>> 16) & 0xffff;
}

function typedView<T>(
  bytes: Uint8Array<ArrayBuffer>,
  Ctor: { new (buffer: ArrayBuffer, byteOffset: number, length: number): T; BYTES_PER_ELEMENT: number },
): T {
  const length = bytes.byteLength / Ctor.BYTES_PER_ELEMENT;
  if (bytes.byteOffset % Ctor.BYTES_PER_ELEMENT === 0) return new Ctor(bytes.buffer, bytes.byteOffset, length);
  return new Ctor(bytes.slice().buffer, 0, length);
}

function tensorLabel(tensor: TensorData, name?: string): string {
  return `${name ? `tensor "${name}" ` : ''}(${tensor.dtype} [${tensor.shape.join(', ')}])`;
}

/**
 * Values as float32. F32 is returned as a view over `bytes` (no copy); other dtypes are converted.
 * 64-bit integers beyond 2^53 lose precision, as they do in any float conversion.
 */
export function toFloat32(tensor: TensorData, name?: string): Float32Array {
  const { bytes } = tensor;
  switch (tensor.dtype) {
    case 'F32':
      return typedView(bytes, Float32Array);
    case 'F64':
      return Float32Array.from(typedView(bytes, Float64Array));
    case 'F16': {
      const halves = typedView(bytes, Uint16Array);
      const out = new Float32Array(halves.length);
      for (let i = 0; i < halves.length; i++) out[i] = f16BitsToF32(halves[i]!);
      return out;
    }
    case 'BF16': {
      const halves = typedView(bytes, Uint16Array);
      const words = new Uint32Array(halves.length);
      for (let i = 0; i < halves.length; i++) words[i] = halves[i]! << 16;
      return new Float32Array(words.buffer);
    }
    case 'I64':
      return Float32Array.from(typedView(bytes, BigInt64Array), Number);
    case 'U64':
      return Float32Array.from(typedView(bytes, BigUint64Array), Number);
    case 'I32':
      return Float32Array.from(typedView(bytes, Int32Array));
    case 'U32':
      return Float32Array.from(typedView(bytes, Uint32Array));
    case 'I16':
      return Float32Array.from(typedView(bytes, Int16Array));
    case 'U16':
      return Float32Array.from(typedView(bytes, Uint16Array));
    case 'I8':
      return Float32Array.from(new Int8Array(bytes.buffer, bytes.byteOffset, bytes.byteLength));
    case 'U8':
    case 'BOOL':
      return Float32Array.from(bytes);
    default:
      throw new SafetensorsError(`toFloat32: ${tensorLabel(tensor, name)} is block-quantized (${tensor.dtype}): decode it with runtime/quantize.ts`);
  }
}

/** Integer values as int32 (I32 is a view, no copy). Values outside int32 are an error, not a wrap. */
export function toInt32(tensor: TensorData, name?: string): Int32Array {
  const { bytes } = tensor;
  const checkedFrom = (values: ArrayLike<bigint | number>): Int32Array => {
    const out = new Int32Array(values.length);
    for (let i = 0; i < values.length; i++) {
      const value = values[i]!;
      if (value < -2147483648 || value > 2147483647) {
        throw new SafetensorsError(`toInt32: ${tensorLabel(tensor, name)} element ${i} = ${value} does not fit in int32`);
      }
      out[i] = Number(value);
    }
    return out;
  };
  switch (tensor.dtype) {
    case 'I32':
      return typedView(bytes, Int32Array);
    case 'I64':
      return checkedFrom(typedView(bytes, BigInt64Array));
    case 'U64':
      return checkedFrom(typedView(bytes, BigUint64Array));
    case 'U32':
      return checkedFrom(typedView(bytes, Uint32Array));
    case 'I16':
      return Int32Array.from(typedView(bytes, Int16Array));
    case 'U16':
      return Int32Array.from(typedView(bytes, Uint16Array));
    case 'I8':
      return Int32Array.from(new Int8Array(bytes.buffer, bytes.byteOffset, bytes.byteLength));
    case 'U8':
    case 'BOOL':
      return Int32Array.from(bytes);
    default:
      throw new SafetensorsError(`toInt32: ${tensorLabel(tensor, name)} is not an integer tensor`);
  }
}

export type HalfDtype = 'F16' | 'BF16';

/**
 * 16-bit values packed two per u32 for GPU upload: word i holds element 2i in its low half and 2i+1 in its
 * high half (little-endian), an odd count padded with a zero half. F16/BF16 input is copied bit for bit;
 * other float input (or a different half type) is converted with round-to-nearest-even to `target`.
 */
export function packHalfWords(tensor: TensorData, target?: HalfDtype, name?: string): Uint32Array {
  const elementTotal = elementCount(tensor.shape);
  const words = new Uint32Array(Math.ceil(elementTotal / 2));
  const halves = new Uint16Array(words.buffer, 0, elementTotal);
  const want = target ?? (tensor.dtype === 'F16' || tensor.dtype === 'BF16' ? tensor.dtype : undefined);
  if (!want) {
    throw new SafetensorsError(`packHalfWords: ${tensorLabel(tensor, name)} is not 16-bit; pass a target half dtype`);
  }
  if (tensor.dtype === want) {
    halves.set(typedView(tensor.bytes, Uint16Array));
    return words;
  }
  if (tensor.dtype !== 'F32' && tensor.dtype !== 'F64' && tensor.dtype !== 'F16' && tensor.dtype !== 'BF16') {
    throw new SafetensorsError(`packHalfWords: ${tensorLabel(tensor, name)} is not a float tensor`);
  }
  const values = toFloat32(tensor, name);
  const encode = want === 'F16' ? f32ToF16Bits : f32ToBf16Bits;
  for (let i = 0; i < elementTotal; i++) halves[i] = encode(values[i]!);
  return words;
}

