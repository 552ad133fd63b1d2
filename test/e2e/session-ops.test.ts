// Sequence operations on Session (fork, rollback, save/restore, continue) carry the generator's state with the
// memory: a sampled sequence forked, or saved and restored, continues with exactly the tokens one longer
// generation with the same seed produces. Llama fixture, prompts as token ids.
import { promises as fsp } from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { afterAll, beforeAll, describe, expect, test } from 'vitest';
import { MemoryError } from '../../caches/hybridMemory.ts';
import { loadReference } from '../../runtime/parity.ts';
import { Session } from '../../runtime/session.ts';

const LLAMA = path.resolve(import.meta.dirname, '../fixtures/hf/llama');
let session: Session;
let prompt: number[];
let dir: string;

beforeAll(async () => {
  session = await Session.load(LLAMA, { slots: 2, capacity: 64, prefillChunks: [4, 16], stepsPerSubmit: 4 });
  prompt = (await loadReference(LLAMA)).greedyPrompt;
  dir = await fsp.mkdtemp(path.join(os.tmpdir(), 'strata-session-ops-'));
});

afterAll(async () => {
  await session?.close();
  if (dir) await fsp.rm(dir, { recursive: true, force: true });
});

const created = (c: Session['counters']) => ({ shaderModules: c.shaderModules, pipelines: c.pipelines, bindGroups: c.bindGroups, buffers: c.buffers });
const ids = async (g: { result(): Promise<{ ids: number[] }> }) => (await g.result()).ids;

describe('continuing a slot', () => {
  const sampled = { temperature: 1.3, topP: 0.95, repetitionPenalty: 1.1, stopTokenIds: [] };

  test('a forked sampled sequence with the same seed continues like one longer generation, in both slots', async () => {
    const whole = await ids(session.generate({ ids: prompt }, { ...sampled, seed: 7, maxNewTokens: 13, slot: 0 }));
    const head = await ids(session.generate({ ids: prompt }, { ...sampled, seed: 7, maxNewTokens: 5, slot: 0 }));
    expect(head).toEqual(whole.slice(0, 5));
    const before = { ...session.counters };
    await session.fork(0, 1);
    expect(session.length(1)).toBe(session.length(0));
    const forked = await ids(session.continue(1, { maxNewTokens: 8 }));
    const original = await ids(session.continue(0, { maxNewTokens: 8 }));
    expect(forked).toEqual(whole.slice(5));
    expect(original).toEqual(whole.slice(5));
    expect(new Set(whole).size).toBeGreaterThan(3); // sampled, not one repeated token
    expect(created(session.counters)).toEqual(created(before));
  });

  test('save and restore mid-generation continue identically, sampling state included', async () => {
    const options = { ...sampled, temperature: 0.8, seed: 11 };
    const whole = await ids(session.generate({ ids: prompt }, { ...options, maxNewTokens: 12, slot: 0 }));
    await ids(session.generate({ ids: prompt }, { ...options, maxNewTokens: 4, slot: 0 }));
    const file = path.join(dir, 'slot0.safetensors');
    await session.save(file, { slots: [0] });
    // both slots overwritten by other sequences with other sampling state
    await ids(session.generate({ ids: prompt.slice(0, 5) }, { temperature: 1, seed: 3, maxNewTokens: 6, slot: 0 }));
    await ids(session.generate({ ids: prompt.slice(2) }, { seed: 5, maxNewTokens: 3, slot: 1 }));
    await session.restore(file, { into: 1 });
    expect(await ids(session.continue(1, { maxNewTokens: 8 }))).toEqual(whole.slice(4));
  });

  test('a rollback feeds the token that was at the new end, and continues like the run that never went past it', async () => {
    const greedy = { stopTokenIds: [], slot: 0 };
    const whole = await ids(session.generate({ ids: prompt }, { ...greedy, maxNewTokens: 10 }));
    await session.rollback(0, prompt.length + 3); // keeps generated tokens 0..2 fed, token 3 next
    expect(session.length(0)).toBe(prompt.length + 3);
    expect(await ids(session.continue(0, { maxNewTokens: 6 }))).toEqual(whole.slice(4));
  });

  test('a slot in use is refused, and nothing changes', async () => {
    const running = session.generate({ ids: prompt }, { stopTokenIds: [], maxNewTokens: 40, slot: 0 });
    await expect(session.fork(0, 1)).rejects.toThrow(MemoryError);
    await expect(session.fork(0, 1)).rejects.toThrow(/cannot fork slot 0: a generation is running or waiting there/);
    expect(() => session.continue(0)).toThrow(/cannot continue slot 0/);
    running.cancel();
    await running.result();
    await session.fork(0, 1); // once it ended (steps in flight for it are read first)
    expect(session.length(1)).toBe(session.length(0));
  });
});
