// 16-bit weight storage (f16, bf16): two elements a u32, element i in half i % 2 (low half first), and their
// decoders as typed kernel expressions (the emitter's element loads, the matvec's and tiled matmul's word runs).
import { K, type KExpr } from './kexpr/expr.ts';
import { V } from './kexpr/value.ts';

export type HalfStorage = 'f16' | 'bf16';

/** The u32 of a weight of `count` 16-bit elements that holds element `i`. */
export const halfWord = (buf: string, i: KExpr, count: number): KExpr => K.load(buf, V.shift('>>', i, K.u32(1)), Math.ceil(count / 2), 'u32');

/** bf16 is an f32's high half: the low half moves up, the high half is masked. */
const bfLow = (word: KExpr) => V.bitcast('f32', V.shift('<<', word, K.u32(16)));
const bfHigh = (word: KExpr) => V.bitcast('f32', V.bits('&', word, K.bits(0xffff0000)));

/** Element `i` (a u32) of a weight of `count` elements, as f32. */
export function halfElement(storage: HalfStorage, buf: string, i: KExpr, count: number): KExpr {
  const word = halfWord(buf, i, count);
  const odd = V.bits('&', i, K.u32(1));
  if (storage === 'f16') return V.at(V.unpack2x16float(word), odd);
  // one bitcast of the chosen bits, not a select of two floats
  return V.bitcast('f32', V.select(V.shift('<<', word, K.u32(16)), V.bits('&', word, K.bits(0xffff0000)), V.compare('==', odd, K.u32(1))));
}

/** Both elements of a packed word (a u32 value), low first, and the lines naming f16's one unpacking of both. */
export function halfPair(storage: HalfStorage, word: KExpr, fresh: (p: string) => string): { lines: string[]; values: KExpr[] } {
  if (storage === 'bf16') return { lines: [], values: [bfLow(word), bfHigh(word)] };
  const pair = fresh('v');
  const v = K.v(pair, 'vec2<f32>');
  return { lines: [`let ${pair} = ${V.unpack2x16float(word)};`], values: [V.field(v, 'x'), V.field(v, 'y')] };
}
