// Where a block-quantized run's logit error comes from: tiny-granite-code (or another folder with a reference.json)
// decoded along its reference generations, teacher-forced, with the weights of one kind at a time replaced by the
// values their blocks decode to (run through the float kernels), against the run as stored.
//   npx tsx scripts/quant-logit-error.ts [q8|q4] [model folder]
import * as path from 'node:path';
import { openSafetensors } from '../base/safetensors.ts';
import type { QuantStorage } from '../compiler/quantized.ts';
import { argmax, dequantizedSource, openRunner, readGenerations, teacherForcedLogits } from '../test/models/parityHarness.ts';

const storage = (process.argv[2] ?? 'q8') as QuantStorage;
const folder = path.resolve(process.argv[3] ?? 'assets/models/tiny-granite-code');
const greedy = readGenerations(folder);
const longest = Math.max(...greedy.map((g) => g.prompt_ids.length));
const source = await openSafetensors(folder);

const embedding = (name: string) => /embed_tokens|lm_head/.test(name);
const kinds: Record<string, (name: string) => boolean> = {
  all: () => true,
  'embedding / LM head': embedding,
  'attention / Mamba / DeltaNet projections': (name) => /self_attn|mamba|linear_attn|conv\.in_proj|conv\.out_proj/.test(name),
  MLPs: (name) => /mlp|feed_forward|experts/.test(name),
  'all but embedding / LM head': (name) => !embedding(name),
};

/** Last-token logits at every reference position, [step][slot]. */
async function logits(pick?: (name: string) => boolean): Promise<Float32Array[][]> {
  const checkpoint = pick ? dequantizedSource(source, storage, pick) : source;
  const runner = await openRunner(folder, { slots: greedy.length, capacity: Math.max(...greedy.map((g) => g.output_ids.length)), chunks: [1, longest], checkpoint });
  return teacherForcedLogits(runner, greedy);
}

const reference = await logits();
const want = (slot: number, step: number) => greedy[slot]!.output_ids[greedy[slot]!.prompt_ids.length + step]!;
for (const [kind, pick] of [['as stored', undefined] as const, ...Object.entries(kinds)]) {
  const run = pick ? await logits(pick) : reference;
  let worst = 0, sum = 0, count = 0, flips = 0;
  const margins = greedy.map(() => Infinity);
  run.forEach((rows, step) => rows.forEach((row, slot) => {
    const base = reference[step]![slot]!;
    row.forEach((v, i) => { const d = Math.abs(v - base[i]!); worst = Math.max(worst, d); sum += d; count++; });
    if (argmax(row) !== want(slot, step)) flips++;
    // the reference token's lead over the best other token: negative where greedy decoding would leave the reference
    const others = row.filter((_, i) => i !== want(slot, step));
    margins[slot] = Math.min(margins[slot]!, row[want(slot, step)]! - Math.max(...others));
  }));
  console.log(`${pick ? storage : ''} ${kind}: max |d logit| ${worst.toFixed(4)}, mean ${(sum / count).toFixed(4)}; positions off the reference ${flips}; least reference-token lead per prompt ${margins.map((m) => m.toFixed(3)).join(' / ')}`);
}
process.exit(0);
