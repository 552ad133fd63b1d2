// Session memory through a Blob (runtime/memoryBlobs.ts; the browser's way, also in Node): save, restore into a new
// session, continue with the logits and tokens of the run that never stopped; a damaged Blob is refused whole.
import { expect, test } from 'vitest';
import { RestoreError } from '../../caches/sessionFile.ts';
import { restoreMemoryFromBlob, saveMemoryToBlob } from '../../runtime/memoryBlobs.ts';
import { greedy, openFixture, prompt } from './memoryHarness.ts';

test('save to a Blob, restore in a new session, continue: identical logits and tokens', async () => {
  const first = await openFixture('llama', { slots: 2, capacity: 40 });
  const last = await first.prefill(1, prompt(9, 30));
  const blob = await saveMemoryToBlob(first.caches, { slots: [1] });
  const tail = await greedy(first, 1, last, 5);

  const second = await openFixture('llama', { slots: 2, capacity: 40 });
  const restored = await restoreMemoryFromBlob(second.caches, blob, { into: 0 });
  expect(restored.sequences).toEqual([{ from: 1, into: 0, length: 9 }]);
  expect(restored.file).toBe('blob/memory.safetensors');
  const again = await greedy(second, 0, last, 5);
  expect(again.tokens).toEqual(tail.tokens);
  expect(again.logits).toEqual(tail.logits);
});

test('a damaged Blob is refused with one typed line and changes nothing', async () => {
  const runner = await openFixture('llama', { slots: 1, capacity: 16 });
  await runner.prefill(0, prompt(4, 31));
  const bytes = new Uint8Array(await (await saveMemoryToBlob(runner.caches)).arrayBuffer());
  bytes[bytes.length - 1]! ^= 0xff; // last byte of the last tensor
  const before = await runner.caches.readSlot(0);
  const error = await restoreMemoryFromBlob(runner.caches, new Blob([bytes])).then(() => null, (e: unknown) => e);
  expect(error).toBeInstanceOf(RestoreError);
  expect((error as Error).message).toMatch(/^blob\/memory\.safetensors: cannot restore session memory: checksum mismatch/);
  expect(await runner.caches.readSlot(0)).toEqual(before);
  expect(runner.lengths).toEqual([4]);
});
