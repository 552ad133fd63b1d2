// `bench greedy-batch <model-dir>`: a model's reference greedy generations (reference.json, as
// assets/models/tiny-granite-code has), all prompts decoding together in one batch, against the reference ids. A
// check for GPU-only kernels the suite cannot run on lavapipe (subgroup matrices: batched decode rows on tiles), run
// with and without them (STRATA_TILED_ROWS=0) on the GPU machine. `--alone` decodes the prompts one after another
// (the batch-1 programs instead). Prints one line per prompt and a summary.
import { Session } from '../runtime/session.ts';
import { readGenerations } from '../test/models/parityHarness.ts';

export async function greedyBatchMain(argv: string[]): Promise<void> {
  const dir = argv.find((a) => !a.startsWith('--'));
  if (!dir) throw new Error('[bench] greedy-batch takes a model folder with reference.json');
  const alone = argv.includes('--alone');
  const greedy = readGenerations(dir);
  const session = await Session.load(dir, { slots: alone ? 1 : greedy.length, capacity: 256, stepsPerSubmit: 8 });
  const run = (g: (typeof greedy)[number]) => session.generate(g.prompt, { maxNewTokens: g.output_ids.length - g.prompt_ids.length }).result();
  const results = [];
  if (alone) for (const g of greedy) results.push(await run(g));
  else results.push(...(await Promise.all(greedy.map(run))));
  let same = 0;
  results.forEach((r, i) => {
    const want = greedy[i]!.output_ids.slice(greedy[i]!.prompt_ids.length);
    const first = want.findIndex((id, j) => r.ids[j] !== id);
    if (first < 0 && r.ids.length === want.length) same++;
    console.log(`prompt ${i}: ${want.length} tokens, ${first < 0 ? 'identical' : `first difference at token ${first} (${r.ids[first]} for ${want[first]})`}`);
  });
  console.log(`greedy-batch: ${same} of ${results.length} generations identical to the reference, ${alone ? 'decoding one at a time' : `decoding ${results.length} at once`}`);
  await session.close();
}
