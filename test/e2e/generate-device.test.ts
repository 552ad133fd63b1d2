// The generator's device-side contract on the llama fixture (no tokenizer: prompts are token ids): a warm decode
// loop creates nothing and reads back once per K steps; a seed reproduces a sampled run; limits and bad
// arguments are clear errors.
import * as path from 'node:path';
import { beforeAll, describe, expect, test } from 'vitest';
import { submissionSteps } from '../../runtime/generator.ts';
import { loadReference } from '../../runtime/parity.ts';
import { ContextOverflowError, ModelNotFoundError, Session, UnknownSequenceError } from '../../runtime/session.ts';

const LLAMA = path.resolve(import.meta.dirname, '../fixtures/hf/llama');
const K = 8;
let session: Session;
let prompt: number[];
let greedyReference: number[];

beforeAll(async () => {
  session = await Session.load(LLAMA, { slots: 2, capacity: 96, prefillChunks: [4, 16], stepsPerSubmit: K });
  const ref = await loadReference(LLAMA);
  prompt = ref.greedyPrompt;
  greedyReference = ref.greedyOutput.slice(prompt.length);
});

const created = (c: Session['counters']) => ({ shaderModules: c.shaderModules, pipelines: c.pipelines, bindGroups: c.bindGroups, buffers: c.buffers });

describe('decode loop', () => {
  test('greedy ids equal the transformers reference', async () => {
    const r = await session.generate({ ids: prompt }, { maxNewTokens: greedyReference.length, stopTokenIds: [] }).result();
    expect(r.ids).toEqual(greedyReference);
    expect(r.finishReason).toBe('length');
  });

  test('after warm-up, 64 decode steps create no pipeline, bind group or buffer and read back once a submission (K / 8 steps first, doubling to K)', async () => {
    await session.generate({ ids: prompt }, { maxNewTokens: 4, stopTokenIds: [] }).result(); // warm-up
    const before = { ...session.counters };
    // the first token comes from the prefill program, then 64 decode steps
    const r = await session.generate({ ids: prompt }, { maxNewTokens: 65, stopTokenIds: [] }).result();
    const after = session.counters;
    expect(r.ids).toHaveLength(65);
    expect(created(after)).toEqual(created(before));
    const batches = submissionSteps(K, 64).length;
    expect(after.readbacks - before.readbacks).toBe(batches);
    expect(r.stats.readbacks).toBe(batches);
    // one submission per decode batch, plus the slot clear and the prompt's prefill chunks (no readback there)
    expect(after.submits - before.submits).toBeLessThanOrEqual(batches + 2 + Math.ceil(prompt.length / 4));
    expect(r.stats.dispatchesPerDecodeStep).toBeGreaterThan(0);
  });

  test('the same seed gives the same tokens, another seed other tokens (sampled on the device)', async () => {
    const run = (seed: number) => session.generate({ ids: prompt }, { maxNewTokens: 24, temperature: 1.2, topK: 100, topP: 0.95, seed, stopTokenIds: [] }).result();
    const [a, b] = await Promise.all([run(1), run(1)]); // batched together in two slots
    const c = await run(2);
    const d = await run(1); // alone, after other runs used the slot
    expect(a.ids).toHaveLength(24);
    expect(b.ids).toEqual(a.ids);
    expect(d.ids).toEqual(a.ids);
    expect(c.ids).not.toEqual(a.ids);
    expect(a.ids).not.toEqual(greedyReference.slice(0, 24));
  });

  test('a stop token ends the sequence and stays its last id', async () => {
    const stop = greedyReference[5]!;
    const r = await session.generate({ ids: prompt }, { maxNewTokens: 30, stopTokenIds: [stop] }).result();
    expect(r.finishReason).toBe('stop');
    expect(r.ids).toEqual(greedyReference.slice(0, greedyReference.indexOf(stop) + 1));
  });
});

describe('limits and errors', () => {
  test('a prompt longer than the capacity is a ContextOverflowError, thrown before anything runs', () => {
    const long = Array.from({ length: 97 }, (_, i) => i % 200);
    expect(() => session.generate({ ids: long })).toThrow(ContextOverflowError);
    expect(() => session.generate({ ids: long })).toThrow('the prompt has 97 tokens but a sequence holds at most 96');
  });

  test('generation stops at the capacity (finishReason length), never past it', async () => {
    const nearlyFull = Array.from({ length: 92 }, (_, i) => (i * 7) % 200);
    const r = await session.generate({ ids: nearlyFull }, { maxNewTokens: 50, stopTokenIds: [] }).result();
    expect(r.ids).toHaveLength(96 - 92 + 1);
    expect(r.finishReason).toBe('length');
    // the session is still usable
    const again = await session.generate({ ids: prompt }, { maxNewTokens: 6, stopTokenIds: [] }).result();
    expect(again.ids).toEqual(greedyReference.slice(0, 6));
  });

  test('cancelling an unknown sequence id names the live ones', () => {
    expect(() => session.cancel(123456)).toThrow(UnknownSequenceError);
    expect(() => session.cancel(123456)).toThrow('no sequence 123456 is waiting or running');
  });

  test('an aborted signal ends the generation early with finishReason aborted', async () => {
    const controller = new AbortController();
    const g = session.generate({ ids: prompt }, { maxNewTokens: 60, stopTokenIds: [], signal: controller.signal });
    let batches = 0;
    for await (const _ of g.sequence) if (++batches === 1) controller.abort();
    await g.sequence.finished;
    expect(g.sequence.finishReason).toBe('aborted');
    expect(g.sequence.ids.length).toBeLessThan(60);
  });

  test('a missing model folder says what to pass', async () => {
    await expect(Session.load('/nonexistent/model')).rejects.toThrow(ModelNotFoundError);
    await expect(Session.load('/nonexistent/model')).rejects.toThrow(/does not exist .*Pass the folder of a Hugging Face checkpoint/);
  });

  test('a prompt without a tokenizer must be token ids', () => {
    expect(() => session.generate('hello')).toThrow('has no tokenizer.json: pass the prompt as token ids');
  });
});

test('a load warms what the first generation runs; a program first run later creates nothing and is named in the stats', async () => {
  const short = prompt.slice(0, 3);
  const warm = await Session.load(LLAMA, { slots: 2, capacity: 96, prefillChunks: [4, 16], stepsPerSubmit: K, prompt: { ids: short } });
  try {
    expect(warm.generator.notRun()).toEqual(['prefill T=16', 'decode rows=2 greedy', 'decode rows=2 sample']);
    const first = await warm.generate({ ids: short }, { maxNewTokens: 12, stopTokenIds: [] }).result();
    expect(first.stats.firstRuns).toEqual([]);
    const before = { ...warm.counters };
    const long = Array.from({ length: 20 }, (_, i) => (i * 5) % 200); // chunks of 16 and 4
    const sampled = { temperature: 1, seed: 3, maxNewTokens: 12, stopTokenIds: [] };
    const [a, b] = await Promise.all([warm.generate({ ids: long }, sampled).result(), warm.generate({ ids: short }, sampled).result()]);
    expect(a.stats.firstRuns).toEqual(['prefill T=16', 'decode rows=2 sample']);
    expect(b.stats.firstRuns).toEqual(['decode rows=2 sample']);
    expect(created(warm.counters)).toEqual(created(before));
    expect(warm.generator.notRun()).toEqual(['decode rows=2 greedy']);
  } finally {
    await warm.close();
  }
});

test('close cancels what runs and frees the buffers', async () => {
  const other = await Session.load(LLAMA, { slots: 1, capacity: 32, prefillChunks: [4], warmUp: false });
  const g = other.generate({ ids: prompt }, { maxNewTokens: 20, stopTokenIds: [] });
  const waiting = other.generate({ ids: prompt }, { maxNewTokens: 20, stopTokenIds: [] });
  await other.close();
  expect(g.sequence.isFinished).toBe(true);
  expect(waiting.sequence.finishReason).toBe('cancelled');
  expect(other.sequences()).toEqual([]);
});
