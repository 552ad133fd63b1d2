// Loops with constant trips (a reduction of up to SEQ_MAX, a template's loops over head dims, tile rows or keys of
// a tile) bounded by a value a shader compiler cannot fold. Lavapipe's compiler writes every constant-trip loop out
// trip by trip, and such loops inside other loops multiply: a 3.4 KB top-k kernel of Qwen3-Next's router (16
// experts) took 4.6 s of CPU to compile, 0.3 s with this bound; a 4.6 KB prefill attention kernel 5-6 s, 0.4-0.7 s;
// an 8.9 KB tiled matmul 4-7 s, 0.7-0.9 s. The bound is the same number at run time: the folded-away term is 0 there.

/**
 * A loop from a constant to a constant bound, by one or by a constant step, as the emitter and the templates write
 * it: `for (var k7: u32 = 0u; k7 < 16u; k7++)`, `for (var t0: u32 = 0u; t0 < 140u; t0 += 64u)`.
 */
const CONSTANT_LOOP = /for \(var (\w+): u32 = (\d+)u; \1 < (\d+)u; \1(\+\+| \+= \d+u)\)/;

/**
 * A kernel's main lines with every constant loop bounded by `N + seq_zero`, and the parameter that declares what
 * `seq_zero` is made from (the dispatch's workgroup count, at least 1 in every dimension); undefined when the
 * kernel has no such loop.
 */
export function opaqueLoopBounds(main: readonly string[]): { main: string[]; parameter: string } | undefined {
  if (!main.some((l) => CONSTANT_LOOP.test(l))) return undefined;
  const every = new RegExp(CONSTANT_LOOP.source, 'g');
  const bounded = main.map((l) => l.replace(every, (_, k: string, from: string, n: string, step: string) => `for (var ${k}: u32 = ${from}u; ${k} < ${n}u + seq_zero; ${k}${step})`));
  return { main: ['let seq_zero = min(seq_groups.z, 1u) - 1u;', ...bounded], parameter: ', @builtin(num_workgroups) seq_groups: vec3<u32>' };
}
