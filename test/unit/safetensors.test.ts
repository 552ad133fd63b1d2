import { promises as fsp } from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { SafetensorsError, SafetensorsFile, ShardedSafetensors, openSafetensors } from '../../base/safetensors.ts';
import { bf16BitsToF32, f16BitsToF32, f32ToBf16Bits, f32ToF16Bits, packHalfWords, toFloat32, toInt32 } from '../../base/tensorValues.ts';
import { serializeSafetensors, writeSafetensors } from '../../base/safetensorsWrite.ts';

const root = path.resolve(import.meta.dirname, '../..');
const fixtureDir = path.join(root, 'test/fixtures/hf');
let scratch: string;

beforeAll(async () => {
  scratch = await fsp.mkdtemp(path.join(os.tmpdir(), 'strata-safetensors-'));
});
afterAll(async () => {
  await fsp.rm(scratch, { recursive: true, force: true });
});

/** A file with an arbitrary (possibly invalid) header text and `dataLength` zero bytes after it. */
async function rawFile(name: string, header: string | object, dataLength: number): Promise<string> {
  const json = new TextEncoder().encode(typeof header === 'string' ? header : JSON.stringify(header));
  const bytes = new Uint8Array(8 + json.byteLength + dataLength);
  new DataView(bytes.buffer).setBigUint64(0, BigInt(json.byteLength), true);
  bytes.set(json, 8);
  const file = path.join(scratch, name);
  await fsp.writeFile(file, bytes);
  return file;
}

async function expectOpenError(file: string, ...fragments: string[]): Promise<void> {
  const error = await openSafetensors(file).then(
    () => undefined,
    (caught: unknown) => caught,
  );
  expect(error).toBeInstanceOf(SafetensorsError);
  for (const fragment of fragments) expect((error as Error).message).toContain(fragment);
}

describe('safetensors round trip', () => {
  it('writes and reads back every dtype, shape and the metadata', async () => {
    const tensors = {
      f64: { dtype: 'F64', shape: [3], data: new Float64Array([1.5, -2, 1e300]) },
      f32: { dtype: 'F32', shape: [2, 2], data: new Float32Array([1, 2, 3, 4]) },
      f16: { dtype: 'F16', shape: [3], data: new Uint16Array([0x3c00, 0xc000, 0x3555]) },
      bf16: { dtype: 'BF16', shape: [2], data: new Uint16Array([0x3f80, 0xc0a0]) },
      i64: { dtype: 'I64', shape: [2], data: new BigInt64Array([-5n, 7n]) },
      i32: { dtype: 'I32', shape: [1, 3], data: new Int32Array([-1, 0, 2147483647]) },
      i16: { dtype: 'I16', shape: [2], data: new Int16Array([-300, 300]) },
      i8: { dtype: 'I8', shape: [2], data: new Int8Array([-128, 127]) },
      u8: { dtype: 'U8', shape: [2], data: new Uint8Array([0, 255]) },
      bool: { dtype: 'BOOL', shape: [3], data: new Uint8Array([1, 0, 1]) },
      u16: { dtype: 'U16', shape: [1], data: new Uint16Array([65535]) },
      u32: { dtype: 'U32', shape: [1], data: new Uint32Array([4000000000]) },
      u64: { dtype: 'U64', shape: [1], data: new BigUint64Array([9n]) },
      scalar: { dtype: 'F32', shape: [], data: new Float32Array([42]) },
      empty: { dtype: 'F32', shape: [0, 4], data: new Float32Array(0) },
    } as const;
    const file = path.join(scratch, 'roundtrip.safetensors');
    await writeSafetensors(file, tensors, { format: 'pt', note: 'hello' });
    expect((await fsp.readdir(scratch)).filter((name) => name.includes('.tmp-'))).toEqual([]);

    const reader = await SafetensorsFile.open(file);
    try {
      expect(reader.metadata).toEqual({ format: 'pt', note: 'hello' });
      expect(reader.tensorNames().sort()).toEqual(Object.keys(tensors).sort());
      for (const [name, tensor] of Object.entries(tensors)) {
        const read = await reader.readTensor(name);
        expect(read.dtype).toBe(tensor.dtype);
        expect(read.shape).toEqual(tensor.shape);
        expect(read.bytes).toEqual(new Uint8Array(tensor.data.buffer, tensor.data.byteOffset, tensor.data.byteLength));
        expect(reader.info(name).byteLength).toBe(tensor.data.byteLength);
      }
      expect([...toFloat32(await reader.readTensor('f64'))]).toEqual([1.5, -2, Infinity]);
      expect([...toFloat32(await reader.readTensor('f16'))]).toEqual([1, -2, f16BitsToF32(0x3555)]);
      expect([...toFloat32(await reader.readTensor('bf16'))]).toEqual([1, -5]);
      expect([...toInt32(await reader.readTensor('i64'))]).toEqual([-5, 7]);
      expect([...toInt32(await reader.readTensor('i8'))]).toEqual([-128, 127]);
      expect([...toFloat32(await reader.readTensor('u32'))]).toEqual([4000000000]);
      expect(() => reader.info('missing')).toThrow(/no tensor named "missing"/);
    } finally {
      await reader.close();
    }
  });

  it('pads the header to a multiple of 8 bytes with spaces', () => {
    const bytes = serializeSafetensors({ x: { dtype: 'U8', shape: [1], data: new Uint8Array([7]) } });
    const headerLength = Number(new DataView(bytes.buffer).getBigUint64(0, true));
    expect(headerLength % 8).toBe(0);
    expect(bytes[8 + headerLength - 1]).toBe(0x20);
    expect(bytes[bytes.length - 1]).toBe(7);
  });

  it('refuses to write data whose size does not match the shape', async () => {
    await expect(
      writeSafetensors(path.join(scratch, 'bad.safetensors'), {
        w: { dtype: 'F32', shape: [3], data: new Float32Array(2) },
      }),
    ).rejects.toThrow(/tensor "w": F32 \[3\] needs 12 bytes, data has 8/);
  });
});

describe('fixtures', () => {
  const fixtureFiles = [
    ...['llama', 'mamba', 'mamba2', 'jamba', 'bamba', 'falcon_h1', 'granitemoehybrid', 'lfm2', 'qwen3_next', 'gemma3n_text'].flatMap(
      (family) => [`test/fixtures/hf/${family}/model.safetensors`, `test/fixtures/hf/${family}/reference.safetensors`],
    ),
    'assets/models/tiny-granite-code/model.safetensors',
  ];

  it.each(fixtureFiles)('reads every tensor of %s', async (relative) => {
    const reader = await openSafetensors(path.join(root, relative));
    try {
      expect(reader.tensorNames().length).toBeGreaterThan(0);
      for (const name of reader.tensorNames()) {
        const tensor = await reader.readTensor(name);
        const values = tensor.dtype === 'I32' ? toInt32(tensor) : toFloat32(tensor);
        expect(values.length).toBe(tensor.shape.reduce((a, b) => a * b, 1));
      }
    } finally {
      await reader.close();
    }
  });

  it('exposes the reference metadata and int32 prompts', async () => {
    const reader = await openSafetensors(path.join(fixtureDir, 'llama/reference.safetensors'));
    try {
      expect(reader.metadata['decode.prefill_len']).toBe('5');
      const ids = await reader.readTensor('prefill.input_ids');
      expect(ids.dtype).toBe('I32');
      expect(ids.shape[0]).toBe(2);
      expect(toInt32(ids).every((id) => id >= 0 && id < 256)).toBe(true);
    } finally {
      await reader.close();
    }
  });

  it('opens a model folder and packs its f16 weights two per u32', async () => {
    const reader = await openSafetensors(path.join(root, 'assets/models/tiny-granite-code'));
    try {
      const name = reader.tensorNames().find((candidate) => reader.info(candidate).dtype === 'F16')!;
      const tensor = await reader.readTensor(name);
      const words = packHalfWords(tensor);
      const halves = new Uint16Array(tensor.bytes.buffer);
      expect(words.length).toBe(Math.ceil(halves.length / 2));
      expect(words[0]).toBe((halves[0]! | (halves[1]! << 16)) >>> 0);
    } finally {
      await reader.close();
    }
  });
});

describe('header validation', () => {
  it('rejects a file truncated inside its data', async () => {
    const full = serializeSafetensors({ weight: { dtype: 'F32', shape: [4, 4], data: new Float32Array(16) } });
    const file = path.join(scratch, 'truncated.safetensors');
    await fsp.writeFile(file, full.subarray(0, full.byteLength - 10));
    await expectOpenError(file, 'truncated.safetensors', 'tensor "weight"', 'out of range');
  });

  it('rejects a file truncated inside its header', async () => {
    const full = serializeSafetensors({ weight: { dtype: 'F32', shape: [4], data: new Float32Array(4) } });
    const file = path.join(scratch, 'cut-header.safetensors');
    await fsp.writeFile(file, full.subarray(0, 20));
    await expectOpenError(file, 'cut-header.safetensors', 'exceeds the file size');
  });

  it('rejects a file shorter than the length prefix', async () => {
    const file = path.join(scratch, 'tiny.safetensors');
    await fsp.writeFile(file, new Uint8Array(3));
    await expectOpenError(file, 'tiny.safetensors', 'too short');
  });

  it('rejects an absurd header length', async () => {
    const bytes = new Uint8Array(16);
    new DataView(bytes.buffer).setBigUint64(0, 1n << 40n, true);
    const file = path.join(scratch, 'huge-header.safetensors');
    await fsp.writeFile(file, bytes);
    await expectOpenError(file, 'huge-header.safetensors', 'header length 1099511627776');
  });

  it('rejects corrupted header JSON', async () => {
    const file = await rawFile('corrupt.safetensors', '{"weight": {"dtype": "F32", "shape": [1', 4);
    await expectOpenError(file, 'corrupt.safetensors', 'not valid JSON');
  });

  it('rejects a header that is not an object', async () => {
    const file = await rawFile('array.safetensors', '[1, 2]', 0);
    await expectOpenError(file, 'array.safetensors', 'must be a JSON object, got array');
  });

  it('rejects offsets beyond the data region', async () => {
    const file = await rawFile('offsets.safetensors', { w: { dtype: 'F32', shape: [2], data_offsets: [8, 16] } }, 12);
    await expectOpenError(file, 'offsets.safetensors', 'tensor "w"', '[8, 16] out of range', '12 bytes');
  });

  it('rejects a size that does not match dtype and shape', async () => {
    const file = await rawFile('size.safetensors', { w: { dtype: 'BF16', shape: [3, 2], data_offsets: [0, 8] } }, 8);
    await expectOpenError(file, 'size.safetensors', 'tensor "w"', 'size mismatch', 'needs 12 bytes', 'span 8');
  });

  it('rejects overlapping tensors', async () => {
    const header = {
      a: { dtype: 'F32', shape: [4], data_offsets: [0, 16] },
      b: { dtype: 'F32', shape: [2], data_offsets: [8, 16] },
    };
    const file = await rawFile('overlap.safetensors', header, 16);
    await expectOpenError(file, 'overlap.safetensors', 'tensor "b"', 'overlaps tensor "a"');
  });

  it('rejects a missing field, an unknown dtype and a bad shape', async () => {
    const missing = await rawFile('missing.safetensors', { w: { dtype: 'F32', shape: [1] } }, 4);
    await expectOpenError(missing, 'tensor "w"', 'data_offsets must be');
    const dtype = await rawFile('dtype.safetensors', { w: { dtype: 'F8', shape: [1], data_offsets: [0, 1] } }, 1);
    await expectOpenError(dtype, 'tensor "w"', 'dtype "F8"');
    const shape = await rawFile('shape.safetensors', { w: { dtype: 'U8', shape: [-1], data_offsets: [0, 1] } }, 1);
    await expectOpenError(shape, 'tensor "w"', 'shape must be');
  });

  it('rejects non-string metadata', async () => {
    const file = await rawFile('meta.safetensors', { __metadata__: { total: 3 } }, 0);
    await expectOpenError(file, 'meta.safetensors', '__metadata__.total must be a string');
  });

  it('names a file that does not exist', async () => {
    await expectOpenError(path.join(scratch, 'nope.safetensors'), 'nope.safetensors');
  });
});

describe('sharded checkpoints', () => {
  async function writeShards(folder: string, dropSecond: boolean): Promise<string> {
    await fsp.mkdir(folder, { recursive: true });
    await writeSafetensors(path.join(folder, 'model-00001-of-00002.safetensors'), {
      'embed.weight': { dtype: 'F32', shape: [2], data: new Float32Array([1, 2]) },
    }, { format: 'pt' });
    if (!dropSecond) {
      await writeSafetensors(path.join(folder, 'model-00002-of-00002.safetensors'), {
        'head.weight': { dtype: 'F32', shape: [1], data: new Float32Array([3]) },
      });
    }
    const index = path.join(folder, 'model.safetensors.index.json');
    await fsp.writeFile(
      index,
      JSON.stringify({
        metadata: { total_size: 12 },
        weight_map: {
          'embed.weight': 'model-00001-of-00002.safetensors',
          'head.weight': 'model-00002-of-00002.safetensors',
        },
      }),
    );
    return index;
  }

  it('reads tensors across shards from the folder', async () => {
    const folder = path.join(scratch, 'sharded');
    await writeShards(folder, false);
    const reader = await openSafetensors(folder);
    try {
      expect(reader).toBeInstanceOf(ShardedSafetensors);
      expect(reader.tensorNames()).toEqual(['embed.weight', 'head.weight']);
      expect(reader.metadata).toEqual({ format: 'pt' });
      expect([...toFloat32(await reader.readTensor('head.weight'))]).toEqual([3]);
      expect(reader.info('head.weight').file).toContain('model-00002-of-00002.safetensors');
    } finally {
      await reader.close();
    }
  });

  it('names the missing shard and a tensor it should hold', async () => {
    const index = await writeShards(path.join(scratch, 'sharded-missing'), true);
    await expectOpenError(index, 'model.safetensors.index.json', 'shard "model-00002-of-00002.safetensors"', 'head.weight', 'not found');
  });

  it('names a tensor the index maps to the wrong shard', async () => {
    const folder = path.join(scratch, 'sharded-wrong');
    const index = await writeShards(folder, false);
    await fsp.writeFile(
      index,
      JSON.stringify({ weight_map: { 'embed.weight': 'model-00002-of-00002.safetensors' } }),
    );
    await expectOpenError(index, 'tensor "embed.weight"', 'does not contain it');
  });

  it('validates the index JSON', async () => {
    const folder = path.join(scratch, 'sharded-bad-index');
    await fsp.mkdir(folder, { recursive: true });
    const index = path.join(folder, 'model.safetensors.index.json');
    await fsp.writeFile(index, JSON.stringify({ weight_map: { a: 3 } }));
    await expectOpenError(index, 'model.safetensors.index.json', 'weight_map.a');
  });
});

describe('value conversion', () => {
  it('f16 -> f32 -> f16 is the identity on every non-NaN half', () => {
    for (let bits = 0; bits < 0x10000; bits++) {
      const value = f16BitsToF32(bits);
      if (Number.isNaN(value)) continue;
      expect(f32ToF16Bits(value)).toBe(bits);
    }
  });

  it('rounds f32 to f16 and bf16 to nearest even', () => {
    expect(f32ToF16Bits(1 + 2 ** -11)).toBe(0x3c00); // halfway, even mantissa stays
    expect(f32ToF16Bits(1 + 3 * 2 ** -11)).toBe(0x3c02); // halfway, odd mantissa rounds up
    expect(f32ToF16Bits(65520)).toBe(0x7c00); // rounds to infinity
    expect(f32ToF16Bits(2 ** -25)).toBe(0); // halfway to the smallest subnormal, rounds to even 0
    expect(f32ToF16Bits(3 * 2 ** -26)).toBe(1);
    expect(f32ToBf16Bits(1)).toBe(0x3f80);
    expect(f32ToBf16Bits(1 + 2 ** -8)).toBe(0x3f80);
    expect(f32ToBf16Bits(1 + 3 * 2 ** -8)).toBe(0x3f82);
    expect(bf16BitsToF32(0xc0a0)).toBe(-5);
    expect(Number.isNaN(bf16BitsToF32(f32ToBf16Bits(NaN)))).toBe(true);
  });

  it('packs an odd count of halves with a zero pad, low half first', () => {
    const tensor = { dtype: 'F16' as const, shape: [3], bytes: new Uint8Array(new Uint16Array([0x1111, 0x2222, 0x3333]).buffer) };
    expect([...packHalfWords(tensor)]).toEqual([0x22221111, 0x00003333]);
  });

  it('converts f32 to packed halves when given a target', () => {
    const tensor = { dtype: 'F32' as const, shape: [2], bytes: new Uint8Array(new Float32Array([1, -2]).buffer) };
    expect([...packHalfWords(tensor, 'F16')]).toEqual([0xc0003c00]);
    expect([...packHalfWords(tensor, 'BF16')]).toEqual([0xc0003f80]);
    expect(() => packHalfWords(tensor)).toThrow(/not 16-bit/);
  });

  it('refuses int64 values that do not fit int32, naming the tensor', () => {
    const tensor = { dtype: 'I64' as const, shape: [2], bytes: new Uint8Array(new BigInt64Array([1n, 1n << 40n]).buffer) };
    expect(() => toInt32(tensor, 'position_ids')).toThrow(/tensor "position_ids" \(I64 \[2\]\) element 1 = 1099511627776/);
    const floats = { dtype: 'F32' as const, shape: [1], bytes: new Uint8Array(4) };
    expect(() => toInt32(floats, 'w')).toThrow(/not an integer tensor/);
  });
});
