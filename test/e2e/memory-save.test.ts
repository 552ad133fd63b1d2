// Saving a session's memory and restoring it into a new session: continuing gives the same logits and tokens
// as a run that never stopped; every kind of bad file is refused with a clear error and leaves the live
// session's bytes, lengths and snapshots as they were.
import { afterAll, beforeAll, describe, expect, test } from 'vitest';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { HybridMemory } from '../../caches/hybridMemory.ts';
import { RestoreError, restoreMemory, saveMemory } from '../../caches/sessionFile.ts';
import type { MemorySpec } from '../../caches/spec.ts';
import { loadConfig } from '../../models/config.ts';
import type { ModelRunner } from '../../runtime/modelRunner.ts';
import { SafetensorsFile } from '../../base/safetensors.ts';
import { writeSafetensors } from '../../base/safetensorsWrite.ts';
import { getRuntime } from '../helpers/gpu.ts';
import { FIXTURES, firstRegistered, greedy, openFixture, prompt } from './memoryHarness.ts';

const RECURRENT = firstRegistered('jamba', 'falcon_h1', 'bamba', 'granitemoehybrid', 'lfm2', 'mamba', 'mamba2', 'qwen3_next');
let tmp: string;

beforeAll(() => {
  tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'strata-memory-'));
});
afterAll(() => fs.rmSync(tmp, { recursive: true, force: true }));

describe.each(['llama', ...(RECURRENT ? [RECURRENT] : [])])('%s', (family) => {
  test('save, restore in a new session, continue: identical logits and tokens to the uninterrupted run', async () => {
    const first = await openFixture(family, { slots: 2, capacity: 40 });
    const last0 = await first.prefill(0, prompt(9, 20));
    const last1 = await first.prefill(1, prompt(4, 21));
    const head = await greedy(first, 0, last0, 3);
    const file = path.join(tmp, `${family}-all.safetensors`);
    const saved = await saveMemory(first.caches, file);
    expect(saved.sequences).toEqual([{ slot: 0, length: 12 }, { slot: 1, length: 4 }]);
    expect(fs.readdirSync(tmp).filter((f) => f.includes('.tmp-'))).toEqual([]); // temp file renamed away
    const tail0 = await greedy(first, 0, head.logits[2]!, 6);
    const tail1 = await greedy(first, 1, last1, 4);

    const second = await openFixture(family, { slots: 2, capacity: 40 });
    const restored = await restoreMemory(second.caches, file);
    expect(restored.sequences).toEqual([{ from: 0, into: 0, length: 12 }, { from: 1, into: 1, length: 4 }]);
    expect(second.lengths).toEqual([12, 4]);
    const again0 = await greedy(second, 0, head.logits[2]!, 6);
    const again1 = await greedy(second, 1, last1, 4);
    expect(again0.tokens).toEqual(tail0.tokens);
    expect(again0.logits).toEqual(tail0.logits);
    expect(again1.logits).toEqual(tail1.logits);
  });

  test('one sequence goes into another slot of a session with another slot count and capacity', async () => {
    const first = await openFixture(family, { slots: 2, capacity: 40 });
    await first.prefill(1, prompt(3, 22));
    const last = await first.prefill(0, prompt(10, 23));
    const file = path.join(tmp, `${family}-one.safetensors`);
    expect((await saveMemory(first.caches, file, { slots: [0] })).sequences).toEqual([{ slot: 0, length: 10 }]);
    const tail = await greedy(first, 0, last, 5);
    const other = await openFixture(family, { slots: 3, capacity: 24 });
    await other.prefill(1, prompt(5, 24));
    const untouched = await other.caches.readSlot(1);
    await restoreMemory(other.caches, file, { into: 2 });
    expect(other.lengths).toEqual([0, 5, 10]);
    expect(await other.caches.readSlot(1)).toEqual(untouched);
    expect((await greedy(other, 2, last, 5)).logits).toEqual(tail.logits);
  });
});

describe('bad files are refused and the live session stays as it was', () => {
  let good: string;
  let live: ModelRunner;
  let before: Map<string, Uint8Array>[];

  beforeAll(async () => {
    const source = await openFixture('llama', { slots: 2, capacity: 40 });
    await source.prefill(0, prompt(12, 30));
    await source.prefill(1, prompt(6, 31));
    good = path.join(tmp, 'good.safetensors');
    await saveMemory(source.caches, good);
    live = await openFixture('llama', { slots: 2, capacity: 40 });
    await live.prefill(0, prompt(7, 32));
    await live.prefill(1, prompt(2, 33));
    before = [await live.caches.readSlot(0), await live.caches.readSlot(1)];
  });

  async function expectRefused(file: string, message: RegExp, opts: { into?: number } = {}, runner = live) {
    const error = await restoreMemory(runner.caches, file, opts).catch((e: unknown) => e);
    expect(error).toBeInstanceOf(RestoreError);
    expect((error as Error).message).toMatch(message);
    if (runner === live) {
      expect(live.lengths).toEqual([7, 2]);
      expect([await live.caches.readSlot(0), await live.caches.readSlot(1)]).toEqual(before);
    }
  }

  function variant(name: string, edit: (bytes: Buffer) => Buffer): string {
    const file = path.join(tmp, name);
    fs.writeFileSync(file, edit(fs.readFileSync(good)));
    return file;
  }

  /** Rewrites the good file with edited tensors or metadata (a well-formed file that lies). */
  async function rewritten(name: string, edit: (tensors: Map<string, { dtype: 'F32' | 'I32'; shape: number[]; data: Uint8Array }>, metadata: Record<string, string>) => void): Promise<string> {
    const src = await SafetensorsFile.open(good);
    const tensors = new Map<string, { dtype: 'F32' | 'I32'; shape: number[]; data: Uint8Array }>();
    for (const n of src.tensorNames()) {
      const t = await src.readTensor(n);
      tensors.set(n, { dtype: t.dtype as 'F32' | 'I32', shape: t.shape, data: t.bytes });
    }
    const metadata = { ...src.metadata };
    await src.close();
    edit(tensors, metadata);
    const file = path.join(tmp, name);
    await writeSafetensors(file, tensors, metadata);
    return file;
  }

  test('a missing file', async () => {
    await expectRefused(path.join(tmp, 'nope.safetensors'), /nope\.safetensors: cannot restore session memory: not a readable safetensors file .*cannot open \(ENOENT\)/);
  });

  test('a file truncated in its data', async () => {
    await expectRefused(variant('cut-data.safetensors', (b) => b.subarray(0, b.length - 100)), /not a readable safetensors file \(truncated or damaged\?\).*out of range/);
  });

  test('a file truncated in its header', async () => {
    await expectRefused(variant('cut-header.safetensors', (b) => b.subarray(0, 40)), /not a readable safetensors file.*header length \d+ exceeds the file size 40/);
  });

  test('a corrupted byte in the data', async () => {
    await expectRefused(
      variant('flip.safetensors', (b) => {
        const c = Buffer.from(b);
        c[c.length - 3]! ^= 0x40;
        return c;
      }),
      /checksum mismatch \(file says [0-9a-f]{12}, contents hash to [0-9a-f]{12}\): the file is corrupted/,
    );
  });

  test('a corrupted header', async () => {
    await expectRefused(
      variant('header.safetensors', (b) => {
        const c = Buffer.from(b);
        c[8] = 0x78; // '{' -> 'x'
        return c;
      }),
      /not a readable safetensors file.*header is not valid JSON/,
    );
  });

  test('a tensor whose shape was changed', async () => {
    const file = await rewritten('shape.safetensors', (t) => {
      const k = t.get('seq0.L0.k')!;
      t.set('seq0.L0.k', { ...k, shape: [k.shape[1]!, k.shape[0]!] });
    });
    await expectRefused(file, /tensor "seq0\.L0\.k" is F32 \[32, 12\], expected F32 \[12, 32\]/);
  });

  test('a missing tensor', async () => {
    const file = await rewritten('missing.safetensors', (t) => void t.delete('seq1.L1.v'));
    await expectRefused(file, /tensor "seq1\.L1\.v" is missing/);
  });

  test('a file of another model (a different config)', async () => {
    const config = await loadConfig(path.join(FIXTURES, 'llama'));
    const other = await openFixture('llama', { slots: 2, capacity: 40, config: { ...config, normEps: config.normEps * 10 } });
    await expectRefused(good, /saved by another model \(llama, fingerprint [0-9a-f]{12}\) than this session's \(llama, fingerprint [0-9a-f]{12}\): the config or the weights differ/, {}, other);
  });

  test.runIf(RECURRENT)('a file of another family', async () => {
    const other = await openFixture(RECURRENT!, { slots: 2, capacity: 40 });
    await expectRefused(good, new RegExp(`saved by another model \\(llama, .*than this session's \\(${RECURRENT}, `), {}, other);
  });

  test('a file of another memory layout', async () => {
    const runtime = await getRuntime();
    const spec = (kvHeads: number): MemorySpec => [{ kv: { kvHeads, headDim: 8 }, states: [] }, { states: [{ name: 'conv', shape: [4, 3] }] }];
    const options = { slots: 1, capacity: 8, maxChunk: 4 };
    const unique = Math.random().toString(36).slice(2);
    const a = new HybridMemory(runtime, `layoutA-${unique}/`, spec(2), options);
    const b = new HybridMemory(runtime, `layoutB-${unique}/`, spec(1), options);
    const file = path.join(tmp, 'layout.safetensors');
    await saveMemory(a, file);
    await expect(restoreMemory(b, file)).rejects.toThrow(/its memory layout \(fingerprint [0-9a-f]{12}\) differs from this session's \([0-9a-f]{12}\): per-layer KV heads/);
  });

  test('a sequence longer than the capacity, a slot out of range, into with several sequences', async () => {
    const small = await openFixture('llama', { slots: 2, capacity: 8 });
    await expectRefused(good, /sequence of slot 0 holds 12 positions; this session's capacity is 8/, {}, small);
    const one = path.join(tmp, 'one.safetensors');
    const source = await openFixture('llama', { slots: 2, capacity: 40 });
    await source.prefill(0, prompt(3, 34));
    await saveMemory(source.caches, one, { slots: [0] });
    await expectRefused(one, /sequence of slot 0 would go into slot 5; this session has slots 0\.\.1/, { into: 5 });
    await expectRefused(good, /it holds 2 sequences; 'into' restores a file holding one/, { into: 1 });
  });

  test('a model checkpoint instead of a memory file', async () => {
    await expectRefused(path.join(FIXTURES, 'llama', 'model.safetensors'), /it is not a Strata memory file \(format null, expected "strata-memory\/1"\)/);
  });
});
