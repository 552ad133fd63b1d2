// The attention templates' shared value arithmetic (scores, online softmax), built with V for their f32 names.
import { K, type KExpr } from '../kexpr/expr.ts';
import { V } from '../kexpr/value.ts';
import { wgslLiteral } from '../ops.ts';

/** A value the template declared, an f32. */
export const fv = (name: string): KExpr => K.v(name, 'f32');
export const ZERO = V.lit(0, 'f32');
/** The online softmax's score of a key not attended (and its maximum before any key): finite, so exp of a
 * difference with it underflows to 0 rather than giving NaN. */
export const LOWEST = K.wgsl('-3.0e38', 'f32');

const f = (x: number) => wgslLiteral(x, 'f32');
/** A key's dot product with the query, scaled. */
export const scaled = (dot: KExpr, scale: number): KExpr => V.arith('*', dot, f(scale));
/** A score softly capped (Gemma 2: cap * tanh(score / cap)). */
export const softcapped = (sc: KExpr, cap: number): KExpr => V.arith('*', V.fn('strata_tanh', [V.arith('/', sc, f(cap))]), f(cap));

/** exp(a - b): a probability or a rescale factor against a running maximum. */
export const expDiff = (a: KExpr, b: KExpr): KExpr => V.fn('exp', [V.arith('-', a, b)]);

/** A score's weight against the maximum: 0 for a key scored LOWEST (masked, or past the limit). */
export const weightOf = (sc: KExpr, max: KExpr): KExpr => V.select(ZERO, expDiff(sc, max), V.compare('>', sc, K.wgsl('-1.0e38', 'f32')));

/** 1 / sum, or 0 for a row that attended no key. */
export const inverseOf = (sum: KExpr): KExpr => V.select(ZERO, V.arith('/', V.lit(1, 'f32'), sum), V.compare('>', sum, ZERO));

/** The left-to-right sum of values. */
export const sumOf = (xs: readonly KExpr[]): KExpr => xs.reduce((a, x) => V.arith('+', a, x));
