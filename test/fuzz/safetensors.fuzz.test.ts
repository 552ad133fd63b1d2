// Fuzzes the safetensors reader: headers built valid and then broken in one way (a field replaced by any JSON, a
// wrong length prefix or data size, a duplicate key, a BOM, truncation, arbitrary text), read from a real file;
// and shard indexes with any weight_map. Every case must open, or be refused with a SafetensorsError.
import fc from 'fast-check';
import { promises as fsp } from 'node:fs';
import * as path from 'node:path';
import { afterAll, beforeAll, expect, test } from 'vitest';
import { DTYPE_BYTES, SafetensorsFile, ShardedSafetensors } from '../../base/safetensors.ts';
import { serializeSafetensors } from '../../base/safetensorsWrite.ts';
import { FUZZ_TIMEOUT_MS, Outcomes, fuzzParameters, fuzzScratch } from './harness.ts';

let scratch: string;
beforeAll(async () => {
  scratch = await fuzzScratch('strata-fuzz-st-');
});
afterAll(async () => {
  await fsp.rm(scratch, { recursive: true, force: true });
});

const dtypes = Object.keys(DTYPE_BYTES);
const anyJson = fc.jsonValue({ maxDepth: 4 });
const awkwardNumber = fc.oneof(
  fc.constantFrom(-1, 0, 1, 0.5, 2 ** 31, 2 ** 32, 2 ** 53, 2 ** 53 + 2, 1e300, -0),
  fc.integer({ min: -10, max: 100 }),
);

const tensorSpec = fc.record({
  name: fc.string({ maxLength: 6 }),
  dtype: fc.constantFrom(...dtypes),
  shape: fc.array(fc.nat(4), { maxLength: 3 }),
});

type Mutation =
  | { kind: 'none' }
  | { kind: 'field'; index: number; field: string; value: unknown }
  | { kind: 'dataLength'; delta: number }
  | { kind: 'prefix'; delta: number }
  | { kind: 'duplicate' }
  | { kind: 'bom' }
  | { kind: 'truncate'; at: number }
  | { kind: 'metadata'; value: unknown }
  | { kind: 'text'; text: string }
  | { kind: 'deep'; depth: number; field: string };

const mutation: fc.Arbitrary<Mutation> = fc.oneof(
  fc.constant({ kind: 'none' as const }),
  fc.record({ kind: fc.constant('field' as const), index: fc.nat(5), field: fc.constantFrom('dtype', 'shape', 'data_offsets', 'extra'), value: fc.oneof(anyJson, awkwardNumber, fc.array(awkwardNumber, { maxLength: 4 })) }),
  fc.record({ kind: fc.constant('dataLength' as const), delta: fc.integer({ min: -8, max: 8 }) }),
  fc.record({ kind: fc.constant('prefix' as const), delta: fc.oneof(fc.integer({ min: -16, max: 16 }), fc.constantFrom(2 ** 40, 1e8)) }),
  fc.constant({ kind: 'duplicate' as const }),
  fc.constant({ kind: 'bom' as const }),
  fc.record({ kind: fc.constant('truncate' as const), at: fc.nat(400) }),
  fc.record({ kind: fc.constant('metadata' as const), value: anyJson }),
  fc.record({ kind: fc.constant('text' as const), text: fc.oneof(fc.string({ maxLength: 60 }), anyJson.map((value) => JSON.stringify(value))) }),
  fc.record({ kind: fc.constant('deep' as const), depth: fc.integer({ min: 100, max: 5000 }), field: fc.constantFrom('dtype', 'shape', 'data_offsets') }),
);

/** The bytes of a file: 8-byte length, header text, data region. */
function fileBytes(specs: { name: string; dtype: string; shape: number[] }[], change: Mutation): Uint8Array {
  const header: Record<string, unknown> = {};
  let offset = 0;
  for (const spec of specs) {
    const bytes = spec.shape.reduce((a, b) => a * b, 1) * DTYPE_BYTES[spec.dtype as keyof typeof DTYPE_BYTES];
    header[spec.name] = { dtype: spec.dtype, shape: spec.shape, data_offsets: [offset, offset + bytes] };
    offset += bytes;
  }
  let dataLength = offset;
  const names = Object.keys(header);
  let text: string;
  switch (change.kind) {
    case 'field':
      if (names.length > 0) (header[names[change.index % names.length]!] as Record<string, unknown>)[change.field] = change.value;
      text = JSON.stringify(header);
      break;
    case 'metadata':
      text = JSON.stringify({ __metadata__: change.value, ...header });
      break;
    case 'dataLength':
      dataLength = Math.max(0, dataLength + change.delta);
      text = JSON.stringify(header);
      break;
    case 'duplicate':
      text = names.length > 0 ? `{${JSON.stringify(names[0])}: ${JSON.stringify(header[names[0]!])}, ${JSON.stringify(header).slice(1)}` : '{"a": 1, "a": 2}';
      break;
    case 'text':
      text = change.text;
      break;
    case 'deep': {
      const nested = `${'['.repeat(change.depth)}0${']'.repeat(change.depth)}`;
      const entry = { dtype: '"U8"', shape: '[0]', data_offsets: `[${offset}, ${offset}]`, [change.field]: nested };
      text = `{${JSON.stringify(header).slice(1, -1)}${names.length ? ', ' : ''}"deep": {${Object.entries(entry).map(([k, v]) => `"${k}": ${v}`).join(', ')}}}`;
      break;
    }
    default:
      text = JSON.stringify(header);
  }
  let json = new TextEncoder().encode(text);
  if (change.kind === 'bom') json = new Uint8Array([0xef, 0xbb, 0xbf, ...json]);
  if (change.kind === 'truncate') json = json.slice(0, change.at);
  const prefix = BigInt(Math.max(0, json.byteLength + (change.kind === 'prefix' ? change.delta : 0)));
  const out = new Uint8Array(8 + json.byteLength + dataLength);
  new DataView(out.buffer).setBigUint64(0, prefix, true);
  out.set(json, 8);
  return out;
}

test('safetensors files: every header opens or is refused with a SafetensorsError', { timeout: FUZZ_TIMEOUT_MS }, async () => {
  const outcomes = new Outcomes('safetensors header');
  const file = path.join(scratch, 'fuzz.safetensors');
  await fc.assert(
    fc.asyncProperty(fc.array(tensorSpec, { maxLength: 5 }), mutation, async (specs, change) => {
      await fsp.writeFile(file, fileBytes(specs, change));
      await outcomes.run(async () => {
        const source = await SafetensorsFile.open(file);
        for (const name of source.tensorNames()) expect((await source.readTensor(name)).bytes.byteLength).toBe(source.info(name).byteLength);
        await source.close();
      });
    }),
    fuzzParameters,
  );
  outcomes.report();
});

test('shard indexes: every weight_map opens or is refused with a SafetensorsError', { timeout: FUZZ_TIMEOUT_MS }, async () => {
  const outcomes = new Outcomes('safetensors index');
  const dir = path.join(scratch, 'sharded');
  await fsp.mkdir(path.join(dir, 'folder.safetensors'), { recursive: true });
  await fsp.writeFile(path.join(dir, 'a.safetensors'), serializeSafetensors({ w0: { dtype: 'F32', shape: [2], data: new Float32Array(2) }, w1: { dtype: 'U8', shape: [1], data: new Uint8Array(1) } }));
  await fsp.writeFile(path.join(dir, 'b.safetensors'), serializeSafetensors({ w2: { dtype: 'F16', shape: [1], data: new Uint16Array(1) } }));
  const shardName = fc.oneof(
    fc.constantFrom('a.safetensors', 'b.safetensors', 'missing.safetensors', 'folder.safetensors', '', '.', '..', '../a.safetensors', 'sharded/a.safetensors', '/etc/hostname', './a.safetensors'),
    fc.string({ maxLength: 12 }),
  );
  const tensorName = fc.oneof(fc.constantFrom('w0', 'w1', 'w2', '__metadata__'), fc.string({ maxLength: 6 }));
  const index = fc.oneof(
    { weight: 4, arbitrary: fc.record({ weight_map: fc.dictionary(tensorName, shardName, { maxKeys: 4 }), metadata: fc.option(fc.dictionary(fc.string(), anyJson, { maxKeys: 2 }), { nil: undefined }) }, { requiredKeys: ['weight_map'] }) },
    { weight: 1, arbitrary: anyJson },
  );
  const file = path.join(dir, 'model.safetensors.index.json');
  await fc.assert(
    fc.asyncProperty(index, async (value) => {
      await fsp.writeFile(file, JSON.stringify(value) ?? '');
      await outcomes.run(async () => {
        const source = await ShardedSafetensors.open(file);
        for (const name of source.tensorNames()) await source.readTensor(name);
        await source.close();
      });
    }),
    fuzzParameters,
  );
  outcomes.report();
});
