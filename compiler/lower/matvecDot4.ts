// The quantized matvec's K loop with WGSL's packed integer dot product (variant 'dot4' of DeviceLimits.quantMatvec,
// where the adapter has the language feature packed_4x8_integer_dot_product), the way llama.cpp's CUDA mmvq
// reaches bandwidth: the workgroup's rows of x are quantized once to int8 per 32-element block (like Q8_1: scale
// d_x = max|x| / 127 and the block's sum of x) into workgroup memory, then every weight block is a few dot4I8Packed
// of its packed bytes with x's: q8 d_w d_x sum(q_w q_x); q4 (w = d_w q + m) d_w d_x sum(q q_x) + m sum(x). No
// float decode at all: 4 weight elements a dot4I8Packed, one int-to-float conversion per trip and row.
// x's quantization adds an error like llama.cpp's (at most half of d_x per element, against the weight).
import { type Node, numel } from '../ir.ts';
import { QUANT_BLOCK, QUANT_FORMATS, type QuantStorage } from '../quantized.ts';
import { K as Kx, type KExpr, isLit } from '../kexpr/expr.ts';
import { V } from '../kexpr/value.ts';
import type { Emitter } from './emitter.ts';
import { type QuantLoop, blockStatistics, chunkFitting, components, overChunks, unrolledStride } from './matvecQuant.ts';

const u32 = Kx.u32;

const storageOf = (w: Node) => (w as Node<'weight'>).attrs.storage as QuantStorage;

/** Workgroup bytes of one row's quantized x block: 32 int8 (mv_q) and vec2(d_x, sum x) (mv_d). */
const BLOCK_BYTES = QUANT_BLOCK + 8;

/**
 * The chunk of K (whole blocks) whose quantized x for all MB rows fits in `bytes` of workgroup memory, and how many
 * chunks K takes; undefined when not even one block per row fits.
 */
export function dot4Chunk(K: number, MB: number, bytes: number): { chunk: number; chunks: number } | undefined {
  return chunkFitting(K, (C) => (C / QUANT_BLOCK) * MB * BLOCK_BYTES <= bytes);
}

/** The workgroup arrays of a chunk of C elements of MB rows: x's packed int8 (vec4<u32>: 16 elements) and block (d, sum). */
export function dot4Shared(C: number, MB: number): string[] {
  return [`var<workgroup> mv_q: array<vec4<u32>, ${(MB * C) / 16}>;`, `var<workgroup> mv_d: array<vec2<f32>, ${(MB * C) / QUANT_BLOCK}>;`];
}

/**
 * How x's 8 words of a group of 8 elements hold their bytes. 'natural' (q8's order): word 2g+h holds elements
 * 8g+4h .. 8g+4h+3. 'pairs' (kernels of q4 weights only): word 2g holds the even elements 8g, 8g+2, 8g+4, 8g+6 and
 * word 2g+1 the odd ones, the order of a q4 word's low and high nibbles of each byte (one mask and one shift apart).
 */
type XOrder = 'natural' | 'pairs';
const elementOf = (order: XOrder, word: number, byte: number) => (order === 'natural' ? 4 * word + byte : 8 * (word >> 1) + 2 * byte + (word & 1));

/**
 * A weight's packed words of one trip as int8 words in x's order (`order`), each paired with x's word index: q8's
 * words are x's own (natural order); q4's nibbles, unsigned 0..15, become bytes by a mask and a shift ('pairs'), or
 * are spread into consecutive bytes (natural order, when q8 weights share the kernel's x).
 */
function int8Words(e: Emitter, storage: QuantStorage, words: KExpr[], order: XOrder): KExpr[] {
  if (storage === 'q8') return words;
  const nibbles = (w: KExpr) => V.bits('&', w, Kx.bits(0x0f0f0f0f, 8));
  /** `w` or'd with itself shifted left. */
  const spread = (w: KExpr, by: number) => V.bits('|', w, V.shift('<<', w, Kx.u32(by)));
  return words.flatMap((w) => {
    if (order === 'pairs') return [nibbles(w), nibbles(V.shift('>>', w, Kx.u32(4)))];
    // nibbles 0..3 (low half) and 4..7 (high half) spread to bytes: 16 bits to two 8-bit halves, then to nibbles
    return [V.bits('&', w, Kx.bits(0xffff)), V.shift('>>', w, Kx.u32(16))].map((half) => {
      const t = e.fresh('qs');
      e.line(`let ${t} = ${V.bits('&', spread(half, 8), Kx.bits(0x00ff00ff, 8))};`);
      return nibbles(spread(Kx.v(t), 4));
    });
  });
}

/**
 * The K loop's lines, per chunk of C elements: (1) one thread per (row, block) evaluates the block's 32 x (the
 * prologue once per element), takes max|x| and sum x, and stores the int8 codes and (d_x, sum) to mv_q / mv_d;
 * (2) after a barrier, each thread reads one u32x4 of every column per trip (16 q8 elements, or 32 when a q4
 * weight is in the kernel) and its x words as vec4<u32>.
 */
export function dot4Loop(e: Emitter, q: QuantLoop, chunking: { chunk: number; chunks: number }): string[] {
  const { K, MB, U, plan } = q;
  const { chunk: C, chunks } = chunking;
  const blocks = C / QUANT_BLOCK;
  const order: XOrder = plan.weights.every((w) => storageOf(w!) === 'q4') ? 'pairs' : 'natural';
  const mm0 = plan.matmuls[0]!;
  const x = mm0.inputs[0]!;
  const unrolled = (len: number) => unrolledStride(q, len);
  const at = (ch: KExpr, C: number, local: KExpr) => e.ix.add(e.ix.mul(ch, C), local);
  const body = (ch: KExpr) => {
    const out: string[] = [];
    for (let i = 0; i < MB; i++)
      out.push(
        ...e.stridedLoop('lid', blocks, unrolled(blocks), (b) => {
          const k0 = e.bound(e.fresh('k'), K - QUANT_BLOCK);
          e.line(`let ${k0} = ${e.ix.add(e.ix.mul(ch, C), e.ix.mul(b, QUANT_BLOCK))};`); // C: the chunk's elements
          const xs = Array.from({ length: QUANT_BLOCK }, (_, u) => e.value(x, [...q.rowIdx(mm0, i), e.ix.add(k0, e.ix.lit(u))]));
          // the block's 8 words of x, each a vec4 of its 4 elements in the kernel's order
          const { vs, amax, sum } = blockStatistics(e, Array.from({ length: 8 }, (_, w) => [0, 1, 2, 3].map((byte) => xs[elementOf(order, w, byte)]!)));
          const f32 = (x: number) => V.lit(x, 'f32');
          const inv = e.named('xi', V.select(f32(0), V.arith('/', f32(127), amax), V.compare('>', amax, f32(0))));
          const q8 = (v: KExpr) => V.pack4xI8(V.cast('vec4<i32>', V.fn('round', [V.scale(v, inv)])));
          const slot = V.arith('+', u32((i * C) / 16), V.arith('*', b, u32(2)));
          e.line(`mv_q[${slot}] = ${V.vector(vs.slice(0, 4).map(q8))};`);
          e.line(`mv_q[${V.arith('+', slot, u32(1))}] = ${V.vector(vs.slice(4).map(q8))};`);
          e.line(`mv_d[${V.arith('+', u32(i * blocks), b)}] = ${V.vector([V.arith('/', amax, f32(127)), sum])};`);
        }),
      );
    out.push('workgroupBarrier();');
    out.push(
      ...e.stridedLoop('lid', C / U, unrolled(C / U), (pp) => {
        const p = isLit(ch, 0) ? pp : e.bound(e.fresh('k'), K / U - 1);
        if (p !== pp) e.line(`let ${p} = ${at(ch, C / U, pp)};`);
        dot4Trip(e, q, order, p, pp, C);
      }),
    );
    return out;
  };
  return overChunks(e, chunks, body);
}

/**
 * One trip: step `p` of K (elements p*U .. p*U+U-1; `pp` within the chunk of C) for every (matmul, row, column):
 * per row x's U/4 words and its block's (d_x, sum x), per column its words and block constants, per (row, column)
 * one integer sum of dot4I8Packed and one conversion.
 */
function dot4Trip(e: Emitter, q: QuantLoop, order: XOrder, p: KExpr, pp: KExpr, C: number): void {
  const { plan, K, MB, R, U } = q;
  const rows = Array.from({ length: MB }, (_, i) => {
    const words = Array.from({ length: U / 16 }, (_, g) => {
      const at = U > 16 ? V.arith('+', V.arith('+', u32((i * C) / 16), V.arith('*', pp, u32(U / 16))), u32(g)) : V.arith('+', u32((i * C) / 16), pp);
      return components(e.named('xq', Kx.load('mv_q', at, (MB * C) / 16, 'vec4<u32>')));
    });
    const block = V.arith('+', u32((i * C) / QUANT_BLOCK), U < QUANT_BLOCK ? V.arith('/', pp, u32(QUANT_BLOCK / U)) : pp);
    const d = e.named('xd', Kx.load('mv_d', block, (MB * C) / QUANT_BLOCK, 'vec2<f32>'));
    return { words: words.flat(), d };
  });
  plan.matmuls.forEach((_, t) => {
    const w = plan.weights[t]!;
    const storage = storageOf(w);
    const f = QUANT_FORMATS[storage];
    const buf = e.buffer(w);
    const n = numel(w.shape);
    const vec4s = U / f.perWord / 4;
    for (let c = 0; c < R; c++) {
      const col = q.colIdx[c]!;
      // written as the loop's index stands, not simplified
      const block = V.arith('+', V.arith('*', col, Kx.u32(K / QUANT_BLOCK)), U < QUANT_BLOCK ? V.arith('/', p, Kx.u32(QUANT_BLOCK / U)) : p);
      const cst = f.mantissa.constants(buf, block, n, (x) => e.fresh(x));
      cst.lines.forEach((l) => e.line(l));
      const words: KExpr[] = [];
      for (let h = 0; h < vec4s; h++) {
        const row = V.arith('*', col, u32(K / f.perWord / 4));
        const at = vec4s > 1 ? V.arith('+', V.arith('+', row, V.arith('*', p, u32(vec4s))), u32(h)) : V.arith('+', row, p);
        words.push(...components(e.named('qv', Kx.load(buf, at, f.words(n) / 4, 'vec4<u32>'))));
      }
      const ints = int8Words(e, storage, words, order).map((word) => {
        const v = e.fresh('qw');
        e.line(`let ${v} = ${word};`);
        return Kx.v(v);
      });
      for (let i = 0; i < MB; i++) {
        const { words: xw, d: xd } = rows[i]!;
        const a = Kx.v(q.acc(t, i, c), 'f32');
        const dot = V.sum(ints.map((wi, j) => V.dot4I8Packed(wi, xw[j]!)));
        const scaled = V.arith('+', a, V.arith('*', V.arith('*', cst.d, V.field(xd, 'x')), V.cast('f32', dot)));
        e.line(`${a} = ${cst.m ? V.arith('+', scaled, V.arith('*', cst.m, V.field(xd, 'y'))) : scaled};`);
      }
    }
  });
}
