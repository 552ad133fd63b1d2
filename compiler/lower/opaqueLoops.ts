// Short sequential loops (a reduction of up to SEQ_MAX, emitter.ts) with a bound a shader compiler cannot fold.
// Lavapipe's compiler writes every constant-trip loop out trip by trip, and such loops inside other loops multiply:
// a 3.4 KB top-k kernel of Qwen3-Next's router (16 experts) took 4.6 s of CPU to compile, 0.3 s with this bound;
// a 9.3 KB one 11.6 s, 1.8 s. The bound is the same number at run time: the folded-away term is 0 there.

/** A sequential loop as the emitter writes it: `for (var k7: u32 = 0u; k7 < 16u; k7++)`. */
const SEQUENTIAL_LOOP = /for \(var (k\d+): u32 = 0u; \1 < (\d+)u; \1\+\+\)/;

/**
 * A kernel's main lines with every sequential loop bounded by `N + seq_zero`, and the parameter that declares what
 * `seq_zero` is made from (the dispatch's workgroup count, at least 1 in every dimension); undefined when the
 * kernel has no such loop.
 */
export function opaqueLoopBounds(main: readonly string[]): { main: string[]; parameter: string } | undefined {
  if (!main.some((l) => SEQUENTIAL_LOOP.test(l))) return undefined;
  const every = new RegExp(SEQUENTIAL_LOOP.source, 'g');
  const bounded = main.map((l) => l.replace(every, (_, k: string, n: string) => `for (var ${k}: u32 = 0u; ${k} < ${n}u + seq_zero; ${k}++)`));
  return { main: ['let seq_zero = min(seq_groups.z, 1u) - 1u;', ...bounded], parameter: ', @builtin(num_workgroups) seq_groups: vec3<u32>' };
}
