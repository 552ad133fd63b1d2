// Block-quantized weight storage: the device layout of each format and its WGSL decoders (one element, an aligned
// run read from one packed word, or a packed word's codes placed in float mantissas), in one typed table read by the kernels and the memory plan. The host side (encode
// on load, decode for the CPU reference, GGUF repacking) is runtime/quantize.ts, written to this layout.
//
// Both formats use blocks of 32 consecutive elements of a row (llama.cpp's QK8_0 / QK4_0) with f16 block
// constants, kept apart from the packed values so that a block's values are whole aligned u32x4 (q4: one, q8: two)
// and the buffer binds as array<vec4<u32>>, padded to a whole u32x4:
//   q8: words [0, n/4) hold four int8 each (element i in byte i%4 of word i/4, like Q8_0's bytes);
//       then ceil(n/64) words of f16 scales (block b in half b%2 of word b/2). value = scale * q.
//   q4: words [0, n/8) hold eight u4 each (element i in bits 4*(i%8) of word i/8);
//       then n/32 words, one per block: pack2x16float(scale, min). value = scale * q + min.
// q4 carries a minimum, not only a scale: llama.cpp's Q4_0 (min = -8 * scale) and Q4_K (per 32-element sub-block
// scale d*sc and min -dmin*m, rounded to f16) both repack into it, and quantizing on load with min/max (as Q4_1)
// loses less than a symmetric grid.
import { numel } from './ir.ts';
import { K, type KExpr } from './kexpr/expr.ts';
import { V } from './kexpr/value.ts';

export type QuantStorage = 'q8' | 'q4';
export const QUANT_BLOCK = 32;

/**
 * The matvec variants for block-quantized weights (DeviceLimits.quantMatvec; compiler/lower/matvecQuant.ts: 'lanes'
 * one packed word a thread and trip, 'wide' a whole u32x4 with x read where needed, 'staged' a u32x4 with x staged;
 * 'dot4' in matvecDot4.ts: 'lanes' where the adapter lacks WGSL's packed_4x8_integer_dot_product, DeviceLimits.packedDot;
 * 'half' in matvecHalf.ts: 'lanes' where the adapter lacks 'shader-f16', DeviceLimits.shaderF16; 'auto' picks one
 * per matvec, autoQuantMatvec).
 */
export const QUANT_MATVECS = ['word', 'lanes', 'wide', 'staged', 'dot4', 'half', 'auto'] as const;
export type QuantMatvec = (typeof QUANT_MATVECS)[number];

/** Whether an adapter with these capabilities compiles `variant` as itself ('dot4' needs WGSL's packed integer dot
 * product, 'half' the feature shader-f16; planKernels gives any other the GPU default instead). */
export function quantMatvecRuns(variant: QuantMatvec, adapter: { packedDot?: boolean; shaderF16?: boolean }): boolean {
  return variant === 'dot4' ? adapter.packedDot === true : variant === 'half' ? adapter.shaderF16 === true : true;
}

/** K from which 'auto' gives one row's matvec the 'wide' loop. */
export const WIDE_MIN_K = 4096;

/**
 * The K loop 'auto' stands for: 'wide' for one row of x with K >= WIDE_MIN_K, else 'lanes'. Measured on the H200
 * with x read as vec4s (DeviceLimits.vectorLoads; `bench quant-sweep --large`, bench/results/2026-12-03-h200-
 * vector-loads/): at 32768x8192 wide reads q4 at 2,271 GB/s against lanes' 1,672 (q8: 3,224 against 2,355),
 * and llama-400m's decode (K <= 2816) is faster with lanes (q4 kernels 1.64 against 1.88 ms summed, q8 1.48 against
 * 1.89). With 8 rows wide collapses (8x4096x8192 q8: 3% of the copy roofline against 17%, at a1d2585: 8 rows of 16 x
 * values a trip). Before vector loads wide lost over q4 everywhere (x's scalar loads, 32 a trip, each touching its own
 * cache line across a warp). Named variants pass through.
 */
export function autoQuantMatvec(variant: QuantMatvec, K: number, rows: number): Exclude<QuantMatvec, 'auto'> {
  if (variant !== 'auto') return variant;
  return rows === 1 && K >= WIDE_MIN_K ? 'wide' : 'lanes';
}
/**
 * The quantized matvec's shape (DeviceLimits.quantShape): columns a workgroup and threads (0 leaves one to the
 * planner), and the planner's cap on columns over a K of 2048 or less (`short`, 0: QUANT_SHORT_COLS; 16 gives the
 * rule before the cap).
 */
export interface QuantShape {
  cols: number;
  threads: number;
  short?: number;
}

/** The variant a GPU adapter compiles (STRATA_QUANT_MATVEC overrides it; a software adapter takes 'word'). */
export const GPU_QUANT_MATVEC: QuantMatvec = 'auto';

/**
 * One packed word decoded without int-to-float conversions (those run at an eighth of the FMA rate on NVIDIA and
 * bound the word path's q4 at 39% of the copy roofline): element u's code is placed in the mantissa of a float
 * v_u in [1, 2), and its value is d * (k_u * v_u - o_u) + m with k_u a power of two. A dot product with x over the
 * word is then d * (sum (k_u x_u) v_u - sum o_u x_u) + m * sum x_u, where every sum but the first is shared by
 * all weight rows that meet the same x. Codes sit at mantissa bits 15 and up, so v's leading 1 is at most 256x a
 * code's unit: the sum loses no more than a few f32 ulps of 256 sum(|x|).
 */
export interface MantissaWord {
  /** WGSL lines (shifted copies of the word) and each element's float v_u. */
  decode(word: KExpr, fresh: (p: string) => string): { lines: string[]; values: KExpr[] };
  /** k_u and o_u of element u of a word. */
  k(u: number): number;
  o(u: number): number;
  /** Lines and expressions of block `blk`'s scale d and, where the format has one, minimum m. */
  constants(buf: string, blk: KExpr, count: number, fresh: (p: string) => string): { lines: string[]; d: KExpr; m?: KExpr };
}

export interface QuantFormat {
  /** Elements packed in one u32 of the value region, and bits of each. */
  perWord: number;
  bits: number;
  /** u32 words of the value region. */
  valueWords(count: number): number;
  /** u32 words in all (values then block constants), padded to whole u32x4 (the buffer binds as array<vec4<u32>>). */
  words(count: number): number;
  /** Bytes a kernel reads for every element of a weight of `count` elements: values and block constants. */
  readBytes(count: number): number;
  /** WGSL value of element `i` (a u32 expression) of buffer `buf` holding `count` elements. */
  element(buf: string, i: KExpr, count: number): KExpr;
  /**
   * WGSL lines loading `perWord` elements starting at `i` (a multiple of perWord) from one word, and the
   * expressions of their values: one value word and one block-constant word per run.
   */
  run(buf: string, i: KExpr, count: number, fresh: (p: string) => string): { lines: string[]; values: KExpr[] };
  /** The mantissa decode of a packed word (see MantissaWord). */
  mantissa: MantissaWord;
}

export function isQuantized(storage: string): storage is QuantStorage {
  return storage === 'q8' || storage === 'q4';
}

/** Whether a weight of this shape can be stored block-quantized: rows of whole blocks. */
export function quantizable(shape: readonly number[]): boolean {
  return shape.length >= 2 && shape[shape.length - 1]! % QUANT_BLOCK === 0;
}

/** The u32 word `w` of a weight of `count` elements in `format`, its buffer bound as array<vec4<u32>>. */
export function quantWord(buf: string, w: KExpr, count: number, format: QuantFormat): KExpr {
  return V.at(K.load(buf, V.shift('>>', w, K.u32(2)), format.words(count) / 4, 'vec4<u32>'), V.bits('&', w, K.u32(3)));
}

const pad4 = (words: number) => Math.ceil(words / 4) * 4;
/** Bits of a float in [1, 2) whose mantissa's top bits are a code: 1.0's exponent. */
const ONE = K.bits(0x3f800000);
/** `word` shifted so that the bits at `from` land at `to`. */
const shiftTo = (word: KExpr, from: number, to: number) => (to === from ? word : V.shift(to > from ? '<<' : '>>', word, K.u32(Math.abs(to - from))));
const u = K.u32;
/** `a op c` on u32s. */
const op = (o: '>>' | '<<', a: KExpr, c: number) => V.shift(o, a, u(c));
const and = (a: KExpr, c: number) => V.bits('&', a, u(c));
/** Word `base + i` where `base` is a multiple of 4 (a region's start): the u32x4 index folds the base. */
const wordAt = (buf: string, base: number, i: KExpr, n: number, format: QuantFormat) =>
  V.at(K.load(buf, V.arith('+', u(base / 4), op('>>', i, 2)), format.words(n) / 4, 'vec4<u32>'), and(i, 3));
/** The f32 of a code's integer. */
const float = (code: KExpr) => V.cast('f32', code);

const q8: QuantFormat = {
  perWord: 4,
  bits: 8,
  valueWords: (n) => n / 4,
  words: (n) => pad4(n / 4 + Math.ceil(n / 64)),
  readBytes: (n) => n + (n / QUANT_BLOCK) * 2,
  element: (buf, i, n) => {
    const code = V.extractBits(V.bitcast('i32', quantWord(buf, op('>>', i, 2), n, q8)), V.arith('*', and(i, 3), u(8)), u(8));
    const scale = V.at(V.unpack2x16float(quantWord(buf, V.arith('+', u(n / 4), op('>>', i, 6)), n, q8)), and(op('>>', i, 5), 1));
    return V.arith('*', float(code), scale);
  },
  run: (buf, i, n, fresh) => {
    const [w, s] = [fresh('v'), fresh('v')];
    const scale = V.at(V.unpack2x16float(quantWord(buf, V.arith('+', u(n / 4), op('>>', i, 6)), n, q8)), and(op('>>', i, 5), 1));
    return {
      lines: [`let ${w} = ${V.bitcast('i32', quantWord(buf, op('>>', i, 2), n, q8))};`, `let ${s} = ${scale};`],
      values: [0, 1, 2, 3].map((b) => V.arith('*', float(V.extractBits(K.v(w, 'i32'), u(b * 8), u(8))), K.v(s, 'f32'))),
    };
  },
  // int8 q as the unsigned byte q + 128 (the sign bit flipped) in mantissa bits 15..22: v = 1.5 + q / 256, so
  // d * q = d * (256 v - 384); the flip and the exponent are one xor after the mask
  mantissa: {
    decode: (word) => ({ lines: [], values: [0, 1, 2, 3].map((b) => V.bitcast('f32', V.bits('^', V.bits('&', shiftTo(word, 8 * b, 15), K.bits(0x7f8000)), K.bits(0x3fc00000)))) }),
    k: () => 256,
    o: () => 384,
    constants: (buf, blk, n, fresh) => {
      const d = fresh('qd');
      // the block's half shifted down first: one f16 conversion, not two (conversions are eighth-rate on NVIDIA)
      const shifted = V.shift('>>', wordAt(buf, n / 4, op('>>', blk, 1), n, q8), V.shift('<<', and(blk, 1), u(4)));
      return { lines: [`let ${d} = ${V.field(V.unpack2x16float(shifted), 'x')};`], d: K.v(d, 'f32') };
    },
  },
};

const q4: QuantFormat = {
  perWord: 8,
  bits: 4,
  valueWords: (n) => n / 8,
  words: (n) => pad4(n / 8 + n / 32),
  readBytes: (n) => n / 2 + (n / QUANT_BLOCK) * 4,
  element: (buf, i, n) => {
    const sm = V.unpack2x16float(quantWord(buf, V.arith('+', u(n / 8), op('>>', i, 5)), n, q4));
    const code = V.extractBits(quantWord(buf, op('>>', i, 3), n, q4), V.arith('*', and(i, 7), u(4)), u(4));
    return V.arith('+', V.arith('*', float(code), V.field(sm, 'x')), V.field(sm, 'y'));
  },
  run: (buf, i, n, fresh) => {
    const [w, sm] = [fresh('v'), fresh('v')];
    const pair = K.v(sm, 'vec2<f32>');
    return {
      lines: [`let ${w} = ${quantWord(buf, op('>>', i, 3), n, q4)};`, `let ${sm} = ${V.unpack2x16float(quantWord(buf, V.arith('+', u(n / 8), op('>>', i, 5)), n, q4))};`],
      values: Array.from({ length: 8 }, (_, b) => V.arith('+', V.arith('*', float(V.extractBits(K.v(w), u(b * 4), u(4))), V.field(pair, 'x')), V.field(pair, 'y'))),
    };
  },
  // nibbles in pairs from one shift: the even one at mantissa bits 15..18 (v = 1 + u / 256, k = 256), the odd one
  // at 19..22 (v = 1 + u / 16, k = 16), so scale * u + min = scale * (k v - k) + min; 4 shifts and 8 masks a word
  mantissa: {
    decode: (word, fresh) => {
      const shifted = [0, 1, 2, 3].map(() => fresh('qs'));
      return {
        lines: shifted.map((s, p) => `let ${s} = ${shiftTo(word, 8 * p, 15)};`),
        values: Array.from({ length: 8 }, (_, b) => V.bitcast('f32', V.bits('|', V.bits('&', K.v(shifted[b >> 1]!), K.bits(b & 1 ? 0x780000 : 0x78000)), ONE))),
      };
    },
    k: (b) => (b & 1 ? 16 : 256),
    o: (b) => (b & 1 ? 16 : 256),
    constants: (buf, blk, n, fresh) => {
      const sm = fresh('qd');
      const pair = K.v(sm, 'vec2<f32>');
      return { lines: [`let ${sm} = ${V.unpack2x16float(wordAt(buf, n / 8, blk, n, q4))};`], d: V.field(pair, 'x'), m: V.field(pair, 'y') };
    },
  },
};

export const QUANT_FORMATS: { [K in QuantStorage]: QuantFormat } = { q8, q4 };

/** Device bytes per row of `rowElements` of a quantized weight (block constants included; rows are whole blocks). */
export function quantRowBytes(storage: QuantStorage, rowElements: number): number {
  return QUANT_FORMATS[storage].readBytes(rowElements);
}

/** Bytes of a quantized weight of this shape on the device (a few more than it holds: whole u32x4). */
export function quantBytes(storage: QuantStorage, shape: readonly number[]): number {
  return QUANT_FORMATS[storage].words(numel(shape)) * 4;
}
