// Block-quantized weight storage: the device layout of each format and its WGSL decoders (one element, or an aligned
// run read from one packed word), in one typed table read by the kernels and the memory plan. The host side (encode
// on load, decode for the CPU reference, GGUF repacking) is runtime/quantize.ts, written to this layout.
//
// Both formats use blocks of 32 consecutive elements of a row (llama.cpp's QK8_0 / QK4_0) with f16 block
// constants, kept apart from the packed values so that value loads stay one aligned u32 per thread:
//   q8: words [0, n/4) hold four int8 each (element i in byte i%4 of word i/4, like Q8_0's bytes);
//       then ceil(n/64) words of f16 scales (block b in half b%2 of word b/2). value = scale * q.
//   q4: words [0, n/8) hold eight u4 each (element i in bits 4*(i%8) of word i/8);
//       then n/32 words, one per block: pack2x16float(scale, min). value = scale * q + min.
// q4 carries a minimum, not only a scale: llama.cpp's Q4_0 (min = -8 * scale) and Q4_K (per 32-element sub-block
// scale d*sc and min -dmin*m, rounded to f16) both repack into it, and quantizing on load with min/max (as Q4_1)
// loses less than a symmetric grid.
import { numel } from './ir.ts';

export type QuantStorage = 'q8' | 'q4';
export const QUANT_BLOCK = 32;

export interface QuantFormat {
  /** Elements packed in one u32 of the value region. */
  perWord: number;
  /** u32 words of the value region. */
  valueWords(count: number): number;
  /** u32 words in all (values then block constants). */
  words(count: number): number;
  /** WGSL value of element `i` (a u32 expression) of buffer `buf` holding `count` elements. */
  element(buf: string, i: string, count: number): string;
  /**
   * WGSL lines loading `perWord` elements starting at `i` (a multiple of perWord) from one word, and the
   * expressions of their values: one value word and one block-constant word per run.
   */
  run(buf: string, i: string, count: number, fresh: (p: string) => string): { lines: string[]; values: string[] };
}

export function isQuantized(storage: string): storage is QuantStorage {
  return storage === 'q8' || storage === 'q4';
}

/** Whether a weight of this shape can be stored block-quantized: rows of whole blocks. */
export function quantizable(shape: readonly number[]): boolean {
  return shape.length >= 2 && shape[shape.length - 1]! % QUANT_BLOCK === 0;
}

const q8: QuantFormat = {
  perWord: 4,
  valueWords: (n) => n / 4,
  words: (n) => n / 4 + Math.ceil(n / 64),
  element: (buf, i, n) =>
    `(f32(extractBits(bitcast<i32>(${buf}[(${i}) >> 2u]), ((${i}) & 3u) * 8u, 8u)) * unpack2x16float(${buf}[${n / 4}u + ((${i}) >> 6u)])[((${i}) >> 5u) & 1u])`,
  run: (buf, i, n, fresh) => {
    const [w, s] = [fresh('v'), fresh('v')];
    return {
      lines: [`let ${w} = bitcast<i32>(${buf}[(${i}) >> 2u]);`, `let ${s} = unpack2x16float(${buf}[${n / 4}u + ((${i}) >> 6u)])[((${i}) >> 5u) & 1u];`],
      values: [0, 1, 2, 3].map((u) => `(f32(extractBits(${w}, ${u * 8}u, 8u)) * ${s})`),
    };
  },
};

const q4: QuantFormat = {
  perWord: 8,
  valueWords: (n) => n / 8,
  words: (n) => n / 8 + n / 32,
  element: (buf, i, n) => {
    const sm = `unpack2x16float(${buf}[${n / 8}u + ((${i}) >> 5u)])`;
    return `(f32(extractBits(${buf}[(${i}) >> 3u], ((${i}) & 7u) * 4u, 4u)) * ${sm}.x + ${sm}.y)`;
  },
  run: (buf, i, n, fresh) => {
    const [w, sm] = [fresh('v'), fresh('v')];
    return {
      lines: [`let ${w} = ${buf}[(${i}) >> 3u];`, `let ${sm} = unpack2x16float(${buf}[${n / 8}u + ((${i}) >> 5u)]);`],
      values: Array.from({ length: 8 }, (_, u) => `(f32(extractBits(${w}, ${u * 4}u, 4u)) * ${sm}.x + ${sm}.y)`),
    };
  },
};

export const QUANT_FORMATS: { [K in QuantStorage]: QuantFormat } = { q8, q4 };

/** Device bytes per row of `rowElements` of a quantized weight (block constants included; rows are whole blocks). */
export function quantRowBytes(storage: QuantStorage, rowElements: number): number {
  return storage === 'q8' ? rowElements + rowElements / 16 : rowElements / 2 + rowElements / 8;
}

/** Bytes of a quantized weight of this shape on the device. */
export function quantBytes(storage: QuantStorage, shape: readonly number[]): number {
  return QUANT_FORMATS[storage].words(numel(shape)) * 4;
}
