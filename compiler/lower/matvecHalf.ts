// The quantized matvec's K loop in packed f16 arithmetic (variant 'half' of DeviceLimits.quantMatvec, where the
// adapter has 'shader-f16'): two weight elements a vec2<f16> multiply-add, for q4 being ALU-bound in f32 (per element
// a decode and an FMA, with NVIDIA's integer pipe at half the float rate).
//
// The workgroup's rows of x are staged in workgroup memory per 32-element block as f16 pairs, divided by a power of
// two s >= max|x| of the block (no f16 overflow, no subnormals), beside (s, sum x) in f32. Each thread takes one
// block of every column per trip: a word's codes become vec2<f16> exactly with the magic number 1024, as in
// Marlin's dequantization (bitcast<vec2<f16>>((w & 0x000F000F) | 0x64006400) - 1024: codes 0..15 in the mantissa
// of 1024; q8's int8 bytes flipped to 0..255 and less 1152), multiply-add with x's pairs into one vec2<f16> over the
// block, and the block's sum goes to the f32 accumulator as d * s * sum (+ m * sum x for q4; the x sum shared by
// every column).
//
// Error: |x/s| <= 1 and |q| <= 15 (q4) or 128 (q8), so partial sums stay below 240 or 2048, far from f16's 65504.
// Each of the 16 products a lane accumulates and each partial sum is rounded to f16 (u = 2^-11), and x/s once:
// at most about 18u * sum |d q x| over the block (0.9%), typically sqrt(16)u (0.2%; 0.09% measured), and elements
// under 2^-14 s (f16 subnormals) within 2^-25 s each; f32 does the rest.
import type { Node } from '../ir.ts';
import { QUANT_BLOCK, type QuantStorage } from '../quantized.ts';
import { K as Kx, type KExpr } from '../kexpr/expr.ts';
import { V } from '../kexpr/value.ts';
import type { Emitter } from './emitter.ts';
import { type Column, type QuantLoop, blockStatistics, chunkFitting, components, loadColumn, padded, stagedTrips, unrolledStride } from './matvecQuant.ts';

const u32 = Kx.u32;

const storageOf = (w: Node) => (w as Node<'weight'>).attrs.storage as QuantStorage;

/**
 * How the 4 packed f16 pairs of x's 8-element group pair its elements: 'q4' (kernels of q4 weights only) pairs u
 * with u + 4, the nibbles of a q4 word one shift apart; 'q8' pairs u with u + 2 within each 4, the bytes of a q8
 * word one shift apart (q4 words then take two shifts a pair).
 */
type XOrder = 'q4' | 'q8';
const pairElement = (order: XOrder, pair: number, half: number) => (order === 'q4' ? pair + 4 * half : 4 * (pair >> 1) + (pair & 1) + 2 * half);

/** vec4<u32>s (8 elements each) of one row's chunk of C elements: a padding vec4 after every 8, so that the vec4s a quarter-warp reads (64 bytes apart) fall in distinct banks. */
const halfRow = (C: number) => C / 8 + Math.ceil(C / 64);
const halfAt = (C: number, i: number, v: KExpr) => padded(i * halfRow(C), v);

/** The chunk of K whose staged x for MB rows fits in `bytes` of workgroup memory (see chunkFitting). */
export function halfChunk(K: number, MB: number, bytes: number): { chunk: number; chunks: number } | undefined {
  return chunkFitting(K, (C) => MB * (16 * halfRow(C) + (8 * C) / QUANT_BLOCK) <= bytes);
}

/** The workgroup arrays of a chunk of C elements of MB rows: x's f16 pairs (mv_h) and each block's (s, sum x) (mv_s). */
export function halfShared(C: number, MB: number): string[] {
  return [`var<workgroup> mv_h: array<vec4<u32>, ${MB * halfRow(C)}>;`, `var<workgroup> mv_s: array<vec2<f32>, ${(MB * C) / QUANT_BLOCK}>;`];
}

/**
 * The u32 words whose f16 halves hold one weight word's codes (bits 0.. and 16.., or 4.. and 20..: `sixteenths`),
 * in x's pair order: q4 in 'q4' order one mask a pair, a shift every other (Marlin's: nibbles 1 and 5 stay at bits 4
 * and 20, f16 1024 + 16 q); in 'q8' order nibbles u and u + 2 masked apart and joined; q8 one shift and mask a pair of
 * bytes, after the sign flip that makes them unsigned (0..255: code + 128).
 */
function codeWords(e: Emitter, storage: QuantStorage, word: KExpr, order: XOrder): { bits: KExpr; sixteenths?: boolean }[] {
  // a mask of both 16-bit halves, written with all 8 digits
  const mask = (w: KExpr, m: number) => V.bits('&', w, Kx.bits(m, 8));
  if (storage === 'q8') {
    const u = e.fresh('qu');
    e.line(`let ${u} = ${V.bits('^', word, Kx.bits(0x80808080))};`);
    return [{ bits: mask(Kx.v(u), 0x00ff00ff) }, { bits: mask(V.shift('>>', Kx.v(u), Kx.u32(8)), 0x00ff00ff) }];
  }
  if (order === 'q4') {
    const high = e.fresh('qs');
    e.line(`let ${high} = ${V.shift('>>', word, Kx.u32(8))};`);
    return [word, Kx.v(high)].flatMap((w) => [{ bits: mask(w, 0x000f000f) }, { bits: mask(w, 0x00f000f0), sixteenths: true }]);
  }
  // nibble u's shift to bit 0, nibble u + 2's to bit 16 (a negative one: left)
  const shift = (b: number) => (b === 0 ? word : V.shift(b > 0 ? '>>' : '<<', word, Kx.u32(Math.abs(b))));
  return [0, 1, 4, 5].map((u) => ({ bits: V.bits('|', V.bits('&', shift(4 * u), Kx.bits(0xf)), V.bits('&', shift(4 * u + 8 - 16), Kx.bits(0xf0000))) }));
}

/**
 * The K loop's lines, per chunk of C elements: (1) one thread per (row, block) evaluates the block's 32 x (the
 * prologue once per element), takes s and sum x, and stores the f16 pairs of x / s and (s, sum x); (2) after a
 * barrier, each thread takes one block of every column per trip (written out: every trip's weight loads first,
 * ahead of the staging).
 */
export function halfLoop(e: Emitter, q: QuantLoop, chunking: { chunk: number; chunks: number }): string[] {
  const { K, MB, U, plan } = q;
  const C = chunking.chunk;
  const blocks = C / QUANT_BLOCK;
  const order: XOrder = plan.weights.every((w) => storageOf(w!) === 'q4') ? 'q4' : 'q8';
  const mm0 = plan.matmuls[0]!;
  const unrolled = (len: number) => unrolledStride(q, len);
  const stage = (ch: KExpr) => {
    const out: string[] = [];
    for (let i = 0; i < MB; i++)
      out.push(
        ...e.stridedLoop('lid', blocks, unrolled(blocks), (b) => {
          const k0 = e.bound(e.fresh('k'), K - QUANT_BLOCK);
          e.line(`let ${k0} = ${e.ix.add(e.ix.mul(ch, C), e.ix.mul(b, QUANT_BLOCK))};`);
          const xs = Array.from({ length: QUANT_BLOCK }, (_, u) => e.value(mm0.inputs[0]!, [...q.rowIdx(mm0, i), e.ix.add(k0, e.ix.lit(u))]));
          const { amax, sum } = blockStatistics(e, Array.from({ length: 8 }, (_, w) => xs.slice(4 * w, 4 * w + 4)));
          // s: the power of two above amax (its exponent bits plus one); 2^-126 for a block of zeros
          const scale = e.named('xs', V.bitcast('f32', V.arith('+', V.bits('&', V.bitcast('u32', amax), Kx.bits(0x7f800000, 8)), Kx.bits(0x00800000, 8))));
          const inv = e.named('xi', V.arith('/', V.lit(1, 'f32'), scale));
          for (let g = 0; g < 4; g++) {
            const at = (pair: number, half: number) => xs[8 * g + pairElement(order, pair, half)]!;
            const pairs = [0, 1, 2, 3].map((p) => V.pack2x16float(V.scale(V.vector([at(p, 0), at(p, 1)]), inv)));
            e.line(`mv_h[${halfAt(C, i, V.arith('+', V.arith('*', b, u32(4)), u32(g)))}] = ${V.vector(pairs)};`);
          }
          e.line(`mv_s[${V.arith('+', u32(i * blocks), b)}] = ${V.vector([scale, sum])};`);
        }),
      );
    return [...out, 'workgroupBarrier();'];
  };
  return stagedTrips(e, q, chunking, unrolled(C / U), stage, (p, pp, loaded) => halfTrip(e, q, order, p, pp, C, loaded));
}

/**
 * One trip: block `p` of K (`pp` within the chunk of C) for every (matmul, row, column): per row x's 16 pairs and
 * its (s, sum x), per column its block constants and 16 code pairs, per (row, column) one vec2<f16> sum of 16
 * multiply-adds and its conversion.
 */
function halfTrip(e: Emitter, q: QuantLoop, order: XOrder, p: KExpr, pp: KExpr, C: number, loaded?: Column[][]): void {
  const { plan, MB, R } = q;
  const rows = Array.from({ length: MB }, (_, i) => {
    const pairs = Array.from({ length: 4 }, (_, g) => {
      const v = e.named('xq', Kx.load('mv_h', halfAt(C, i, V.arith('+', V.arith('*', pp, u32(4)), u32(g))), MB * halfRow(C), 'vec4<u32>'));
      return components(v).map((word) => e.named('xh', V.bitcast('vec2<f16>', word)));
    });
    const s = e.named('xd', Kx.load('mv_s', V.arith('+', u32((i * C) / QUANT_BLOCK), pp), (MB * C) / QUANT_BLOCK, 'vec2<f32>'));
    return { pairs: pairs.flat(), s };
  });
  plan.matmuls.forEach((_, t) => {
    const storage = storageOf(plan.weights[t]!);
    const offset = storage === 'q8' ? 1152 : 1024;
    for (let c = 0; c < R; c++) {
      const { d, m, words } = loaded?.[t]![c] ?? loadColumn(e, q, t, c, p);
      const codes = words.flatMap((w) => {
        const word = e.fresh('qw');
        e.line(`let ${word} = ${w};`);
        return codeWords(e, storage, Kx.v(word), order).map(({ bits, sixteenths }) => {
          const [v, f] = [e.fresh('qh'), V.bitcast('vec2<f16>', V.bits('|', bits, Kx.bits(0x64006400)))];
          const half = (x: number) => V.splat(2, V.lit(x, 'f16'));
          // exact: 1024 + q (or 1024 + 16 q) less 1024 (or divided by 16 less 64, one multiply-add)
          e.line(`let ${v} = ${sixteenths ? V.fn('fma', [f, half(0.0625), half(-offset / 16)]) : V.arith('-', f, half(offset))};`);
          return Kx.v(v, 'vec2<f16>');
        });
      });
      for (let i = 0; i < MB; i++) {
        const { pairs, s } = rows[i]!;
        const [h, hf] = [e.fresh('qh'), e.fresh('qf')];
        e.line(`let ${h} = ${V.sum(codes.map((cv, j) => V.arith('*', cv, pairs[j]!)))};`);
        e.line(`let ${hf} = ${V.cast('vec2<f32>', Kx.v(h, 'vec2<f16>'))};`);
        const [a, sv, hv] = [Kx.v(q.acc(t, i, c), 'f32'), s, Kx.v(hf, 'vec2<f32>')];
        const scaled = V.arith('+', a, V.arith('*', V.arith('*', d, V.field(sv, 'x')), V.arith('+', V.field(hv, 'x'), V.field(hv, 'y'))));
        e.line(`${a} = ${m ? V.arith('+', scaled, V.arith('*', m, V.field(sv, 'y'))) : scaled};`);
      }
    }
  });
}
