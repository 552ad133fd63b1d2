// Fuzzes restoring session memory files: a valid file (KV cache and a recurrent state, two slots) with bytes
// flipped, cut or appended, its metadata or tensor entries rewritten, restored into a live memory on the real
// adapter. Every case must restore, or be refused with a RestoreError that leaves the memory as it was.
import fc from 'fast-check';
import { promises as fsp } from 'node:fs';
import * as path from 'node:path';
import { afterAll, beforeAll, expect, test } from 'vitest';
import { HybridMemory } from '../../caches/hybridMemory.ts';
import { restoreMemory, saveMemory } from '../../caches/sessionFile.ts';
import type { MemorySpec } from '../../caches/spec.ts';
import { serializeSafetensors } from '../../base/safetensorsWrite.ts';
import { getRuntime } from '../helpers/gpu.ts';
import { FUZZ_TIMEOUT_MS, Outcomes, fuzzParameters, fuzzScratch } from './harness.ts';

let scratch: string;
beforeAll(async () => {
  scratch = await fuzzScratch('strata-fuzz-session-');
});
afterAll(async () => {
  await fsp.rm(scratch, { recursive: true, force: true });
});

const spec: MemorySpec = [{ kv: { kvHeads: 1, headDim: 4 }, states: [] }, { states: [{ name: 'conv', shape: [2, 3] }] }];
const options = { slots: 2, capacity: 8, maxChunk: 4 };

/** Parses a safetensors file into header JSON and data (the file is one this test wrote, so it is well formed). */
function split(bytes: Uint8Array): { header: Record<string, { dtype: string; shape: number[]; data_offsets: [number, number] } | Record<string, string>>; data: Uint8Array } {
  const length = Number(new DataView(bytes.buffer, bytes.byteOffset, 8).getBigUint64(0, true));
  return { header: JSON.parse(new TextDecoder().decode(bytes.subarray(8, 8 + length))), data: bytes.subarray(8 + length) };
}

type Mutation =
  | { kind: 'none' }
  | { kind: 'flip'; positions: number[]; values: number[] }
  | { kind: 'cut'; at: number }
  | { kind: 'append'; bytes: number[] }
  | { kind: 'metadata'; key: string; value: string }
  | { kind: 'shape'; tensor: number; shape: number[] }
  | { kind: 'rename'; tensor: number; name: string }
  | { kind: 'drop'; tensor: number };

const metadataKey = fc.constantFrom('strata.format', 'strata.model', 'strata.family', 'strata.memory', 'strata.sequences', 'strata.checksum', 'other');
const metadataValue = fc.oneof(
  fc.string({ maxLength: 20 }),
  fc.jsonValue({ maxDepth: 3 }).map((v) => JSON.stringify(v)),
  fc.array(fc.record({ slot: fc.integer({ min: -1, max: 4 }), length: fc.integer({ min: -1, max: 12 }) }), { maxLength: 3 }).map((v) => JSON.stringify(v)),
);
const mutation: fc.Arbitrary<Mutation> = fc.oneof(
  fc.constant({ kind: 'none' as const }),
  fc.record({ kind: fc.constant('flip' as const), positions: fc.array(fc.nat(), { minLength: 1, maxLength: 4 }), values: fc.array(fc.nat(255), { minLength: 4, maxLength: 4 }) }),
  fc.record({ kind: fc.constant('cut' as const), at: fc.nat() }),
  fc.record({ kind: fc.constant('append' as const), bytes: fc.array(fc.nat(255), { minLength: 1, maxLength: 16 }) }),
  fc.record({ kind: fc.constant('metadata' as const), key: metadataKey, value: metadataValue }),
  fc.record({ kind: fc.constant('shape' as const), tensor: fc.nat(), shape: fc.array(fc.nat(9), { maxLength: 4 }) }),
  fc.record({ kind: fc.constant('rename' as const), tensor: fc.nat(), name: fc.oneof(fc.string({ maxLength: 12 }), fc.constantFrom('seq0.pos', 'seq1.pos', 'seq0.L0.k', 'seq5.L0.k')) }),
  fc.record({ kind: fc.constant('drop' as const), tensor: fc.nat() }),
);

function mutate(good: Uint8Array, change: Mutation): Uint8Array {
  switch (change.kind) {
    case 'none':
      return good;
    case 'flip': {
      const out = good.slice();
      change.positions.forEach((at, i) => (out[at % out.length] = change.values[i]!));
      return out;
    }
    case 'cut':
      return good.slice(0, change.at % good.length);
    case 'append':
      return new Uint8Array([...good, ...change.bytes]);
    default: {
      // rewrite the header and re-serialize the tensors it then names (data re-cut from the original offsets)
      const { header, data } = split(good);
      const metadata = { ...(header.__metadata__ as Record<string, string>) };
      const entries = Object.entries(header).filter(([name]) => name !== '__metadata__') as [string, { dtype: string; shape: number[]; data_offsets: [number, number] }][];
      const tensors = new Map(entries.map(([name, t]) => [name, { dtype: t.dtype, shape: t.shape, data: data.subarray(t.data_offsets[0], t.data_offsets[1]) }]));
      const pick = (index: number) => entries[index % entries.length]![0];
      if (change.kind === 'metadata') metadata[change.key] = change.value;
      if (change.kind === 'drop') tensors.delete(pick(change.tensor));
      if (change.kind === 'rename') {
        const name = pick(change.tensor);
        const tensor = tensors.get(name)!;
        tensors.delete(name);
        tensors.set(change.name, tensor);
      }
      if (change.kind === 'shape') {
        const name = pick(change.tensor);
        const tensor = tensors.get(name)!;
        const elements = change.shape.reduce((a, b) => a * b, 1);
        const bytes = elements * (tensor.dtype === 'F32' || tensor.dtype === 'I32' ? 4 : 2);
        const resized = new Uint8Array(bytes);
        resized.set(tensor.data.subarray(0, bytes));
        tensors.set(name, { ...tensor, shape: change.shape, data: resized });
      }
      return serializeSafetensors(tensors as never, metadata);
    }
  }
}

test('session files: every mutation restores or is refused with a RestoreError, leaving the memory as it was', { timeout: FUZZ_TIMEOUT_MS }, async () => {
  const runtime = await getRuntime();
  const source = new HybridMemory(runtime, `fuzz-source-${process.pid}/`, spec, options);
  const target = new HybridMemory(runtime, `fuzz-target-${process.pid}/`, spec, options);
  const goodFile = path.join(scratch, 'good.safetensors');
  await saveMemory(source, goodFile);
  const good = new Uint8Array(await fsp.readFile(goodFile));
  const file = path.join(scratch, 'case.safetensors');
  const outcomes = new Outcomes('session file');
  await fc.assert(
    fc.asyncProperty(mutation, fc.option(fc.integer({ min: -1, max: 3 }), { nil: undefined }), async (change, into) => {
      await fsp.writeFile(file, mutate(good, change));
      const before = [...target.lengths];
      let refused = false;
      await outcomes.run(async () => {
        try {
          await restoreMemory(target, file, into === undefined ? {} : { into });
        } catch (error) {
          refused = true;
          throw error;
        }
      });
      if (refused) expect([...target.lengths]).toEqual(before);
    }),
    fuzzParameters,
  );
  outcomes.report();
});
