// `bench env-parity <model-dir> --env NAME=A,B [--weights q8|q4]`: a model's reference prompts decoded as one batch,
// teacher-forced along their reference generations, once with the environment switch NAME=A and once with NAME=B
// (each compiles its own programs: DeviceLimits are read at compile time), and the largest logit difference between
// the two. The GPU-side parity check of kernels the suite cannot run on lavapipe (subgroup matrices: batched rows on
// tiles, STRATA_TILED_ROWS and STRATA_TILED_ROWS_QUANT), where a greedy run against the reference cannot tell a
// kernel bug from a quantized model's near-tie. Prints one line per setting and one verdict line.
import type { QuantStorage } from '../compiler/quantized.ts';
import { argmax, maxAbsDiff, openRunner } from '../runtime/parity.ts';
import { readGenerations, teacherForcedLogits } from '../test/models/parityHarness.ts';

/**
 * Logit differences above this between two settings fail the check: the tiled kernels round x (and quantized weights'
 * decoded values) to f16, 2^-11 of each product, which moves tiny-granite-code's logits by ~1e-2; q8's own
 * quantization moves them by 0.10-0.30, so a kernel error shows well above 0.05.
 */
export const TOLERANCE = 0.05;

/** The largest absolute difference of two runs' logits ([step][slot] rows) and the rows whose argmax differs. */
export function logitDifference(a: readonly Float32Array[][], b: readonly Float32Array[][]): { worst: number; flips: number } {
  if (a.length !== b.length) return { worst: Infinity, flips: a.length };
  let worst = 0;
  let flips = 0;
  a.forEach((rows, step) =>
    rows.forEach((row, slot) => {
      const other = b[step]?.[slot];
      worst = Math.max(worst, other ? maxAbsDiff(row, other) : Infinity);
      if (!other || argmax(row) !== argmax(other)) flips++;
    }),
  );
  return { worst, flips };
}

export async function envParityMain(argv: string[]): Promise<void> {
  const dir = argv[0];
  const env = argv[argv.indexOf('--env') + 1];
  const weights = argv.includes('--weights') ? (argv[argv.indexOf('--weights') + 1] as QuantStorage) : undefined;
  const match = env && argv.includes('--env') ? /^([A-Z0-9_]+)=([^,]*),([^,]*)$/.exec(env) : null;
  if (!dir || !match) throw new Error('[bench] env-parity takes a model folder with reference.json and --env NAME=A,B');
  if (weights !== undefined && weights !== 'q8' && weights !== 'q4') throw new Error(`[bench] --weights must be q8 or q4, got '${weights}'`);
  const [, name, a, b] = match as unknown as [string, string, string, string];
  const greedy = readGenerations(dir);
  const longest = Math.max(...greedy.map((g) => g.prompt_ids.length));
  const capacity = Math.max(...greedy.map((g) => g.output_ids.length));
  const saved = process.env[name];
  const run = async (value: string) => {
    process.env[name] = value;
    const runner = await openRunner(dir, { slots: greedy.length, capacity, chunks: [1, longest], ...(weights ? { weights } : {}) });
    return teacherForcedLogits(runner, greedy);
  };
  try {
    const [la, lb] = [await run(a), await run(b)];
    const { worst, flips } = logitDifference(la, lb);
    const steps = la.length * greedy.length;
    console.log(`${name}=${a} against ${name}=${b}${weights ? `, ${weights} weights` : ''}: ${steps} teacher-forced rows of ${greedy.length} sequences decoded together`);
    console.log(`max |d logit| ${worst.toExponential(2)}, argmax differs in ${flips} of ${steps} rows`);
    console.log(`env-parity: ${worst <= TOLERANCE ? 'ok' : 'FAILED'} (tolerance ${TOLERANCE})`);
    if (worst > TOLERANCE) process.exitCode = 1;
  } finally {
    if (saved === undefined) delete process.env[name];
    else process.env[name] = saved;
  }
}
