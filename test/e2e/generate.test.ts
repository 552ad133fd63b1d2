// Greedy generation of tiny-granite-code (granitemoehybrid: Mamba-2 and attention layers, f16 weights) equals
// transformers' reference ids, one sequence at a time and with four sequences decoding in one batch, where
// sequences join and leave between submissions without anything being compiled or created.
import * as fs from 'node:fs';
import * as path from 'node:path';
import { beforeAll, expect, test } from 'vitest';
import { submissionSteps } from '../../runtime/generator.ts';
import { Session } from '../../runtime/session.ts';

const DIR = path.resolve(import.meta.dirname, '../../assets/models/tiny-granite-code');
interface Greedy {
  prompt: string;
  prompt_ids: number[];
  output_ids: number[];
  text: string;
}
const reference: { greedy: Greedy[] } = JSON.parse(fs.readFileSync(path.join(DIR, 'reference.json'), 'utf8'));
const generated = (g: Greedy) => g.output_ids.slice(g.prompt_ids.length);

let session: Session;
// lavapipe runs tiny-granite at a few tokens per second on a busy machine: generous limits
const SLOW = { timeout: 1_800_000 }; // hang guard (vitest.config.ts), not a speed limit
beforeAll(async () => {
  session = await Session.load(DIR, { slots: 4, capacity: 128, prefillChunks: [16], stepsPerSubmit: 8 });
}, 1_800_000);

test('greedy ids and text equal the reference for each prompt', SLOW, async () => {
  for (const g of reference.greedy) {
    const r = await session.generate(g.prompt, { maxNewTokens: generated(g).length }).result();
    expect(r.promptIds).toEqual(g.prompt_ids);
    expect(r.ids).toEqual(generated(g));
    expect(g.prompt + r.text).toEqual(g.text);
    // one readback a submission: 1, 2, 4, then 8 decode steps each (submissionSteps)
    expect(r.stats.readbacks).toBe(submissionSteps(8, generated(g).length - 1).length);
  }
});

test('four sequences batched (prompts of different lengths, joining and leaving mid-run) give the same ids', SLOW, async () => {
  const before = { ...session.counters };
  const [a, b, c] = reference.greedy as [Greedy, Greedy, Greedy];
  const runA = session.generate(a.prompt, { maxNewTokens: generated(a).length });
  const runB = session.generate(b.prompt, { maxNewTokens: generated(b).length });
  // a sampled sequence beside them that leaves early and frees its slot
  const extra = session.generate('import sys\nimport os\n\ndef main(argv):\n    ', { maxNewTokens: 40, temperature: 0.8, topP: 0.9, seed: 7, stopTokenIds: [] });
  const pending = [runA.result(), runB.result(), extra.result()];
  let maxLive = 0;
  const watch = setInterval(() => (maxLive = Math.max(maxLive, session.sequences().length)), 2);
  // the third reference prompt joins once the others are decoding
  while (runA.sequence.ids.length === 0) await new Promise((resolve) => setTimeout(resolve, 5));
  const runC = session.generate(c.prompt, { maxNewTokens: generated(c).length });
  const [ra, rb, rExtra, rc] = await Promise.all([...pending, runC.result()]);
  clearInterval(watch);
  expect(maxLive).toBe(4); // all four decoded together for a while
  expect(rc!.stats.dispatchesPerDecodeStep).toBe(rExtra!.stats.dispatchesPerDecodeStep); // in one sampling batch of 4 rows
  expect(ra!.ids).toEqual(generated(a));
  expect(rb!.ids).toEqual(generated(b));
  expect(rc!.ids).toEqual(generated(c));
  expect(rExtra!.ids).toHaveLength(40);
  const after = session.counters;
  for (const k of ['shaderModules', 'pipelines', 'bindGroups', 'buffers'] as const) expect(after[k] - before[k], k).toBe(0);
});

test('a stop string ends the text before it, and the ids at the token that completes it', SLOW, async () => {
  const g = reference.greedy[0]!;
  const full = g.text.slice(g.prompt.length); // 'def _f(): pass\n_f = f.f\n\ndef _f(): ...'
  const run = session.generate(g.prompt, { maxNewTokens: 40, stop: ['\n\n'] });
  let streamed = '';
  for await (const piece of run) streamed += piece;
  expect(run.finishReason).toBe('stop');
  expect(run.text).toBe(full.slice(0, full.indexOf('\n\n')));
  expect(streamed).toBe(run.text);
  const tokenizer = session.tokenizer!;
  const ids = generated(g);
  const through = ids.findIndex((_, i) => tokenizer.decode(ids.slice(0, i + 1)).includes('\n\n'));
  expect(run.ids).toEqual(ids.slice(0, through + 1));
});
