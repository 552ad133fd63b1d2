// Hostile checkpoints (issue 10): files that are not files, shard names that leave the model folder, headers the
// `safetensors` crate refuses, and values that would make huge or unbounded messages. Each gets a SafetensorsError
// with a short message, within a second.
import { execFileSync, spawnSync } from 'node:child_process';
import { promises as fsp } from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { isUserError } from '../../base/errors.ts';
import { SafetensorsError, openSafetensors } from '../../base/safetensors.ts';
import { removeStaleTemporaries, serializeSafetensors, writeSafetensors } from '../../base/safetensorsWrite.ts';

// Each refusal takes milliseconds when idle (the old behaviour: blocked forever, or ran out of memory after 30 s
// or more). The bound only guards against that, with room for a loaded machine; it is not a speed test.
const REFUSAL_GUARD_MS = 10_000;

let scratch: string;
let counter = 0;
beforeAll(async () => {
  scratch = await fsp.mkdtemp(path.join(os.tmpdir(), 'strata-hostile-'));
});
afterAll(async () => {
  await fsp.rm(scratch, { recursive: true, force: true });
});

const fresh = async () => {
  const dir = path.join(scratch, `case${counter++}`);
  await fsp.mkdir(dir);
  return dir;
};

/** A safetensors file with exactly this header text and `dataLength` zero bytes. */
async function rawFile(dir: string, header: string | Uint8Array, dataLength: number, name = 'model.safetensors'): Promise<string> {
  const json = typeof header === 'string' ? new TextEncoder().encode(header) : header;
  const bytes = new Uint8Array(8 + json.byteLength + dataLength);
  new DataView(bytes.buffer).setBigUint64(0, BigInt(json.byteLength), true);
  bytes.set(json, 8);
  const file = path.join(dir, name);
  await fsp.writeFile(file, bytes);
  return file;
}

/** The message of the SafetensorsError `location` is refused with, within a second. */
async function refusal(location: string): Promise<string> {
  const started = performance.now();
  const error = await openSafetensors(location).then(
    async (source) => {
      await source.close();
      return undefined;
    },
    (caught: unknown) => caught,
  );
  expect(performance.now() - started).toBeLessThan(REFUSAL_GUARD_MS);
  expect(error).toBeInstanceOf(SafetensorsError);
  expect(isUserError(error)).toBe(true);
  return (error as Error).message;
}

const tensor = (offsets: [number, number], shape = [offsets[1] - offsets[0]]) => ({ dtype: 'U8', shape, data_offsets: offsets });

describe('files that are not files', () => {
  it('model.safetensors that is a folder', async () => {
    const dir = await fresh();
    await fsp.mkdir(path.join(dir, 'model.safetensors'));
    expect(await refusal(dir)).toBe(`${path.join(dir, 'model.safetensors')}: cannot open (is a folder, not a file)`);
  });

  it('model.safetensors that is a FIFO is refused without blocking', { timeout: 20_000 }, async () => {
    const dir = await fresh();
    execFileSync('mkfifo', [path.join(dir, 'model.safetensors')]);
    expect(await refusal(dir)).toContain('is a named pipe (FIFO), not a regular file');
  });

  it('an index that is a FIFO is refused without blocking', { timeout: 20_000 }, async () => {
    const dir = await fresh();
    execFileSync('mkfifo', [path.join(dir, 'model.safetensors.index.json')]);
    expect(await refusal(dir)).toContain('model.safetensors.index.json: cannot read (is a named pipe (FIFO), not a regular file)');
  });

  it.each(['', '.', '..', '../x.safetensors', 'sub/x.safetensors', '/etc/passwd', 'a\\b.safetensors'])(
    'an index mapping a tensor to shard %j is refused before anything is opened',
    async (shard) => {
      const dir = await fresh();
      await fsp.writeFile(path.join(dir, 'model.safetensors.index.json'), JSON.stringify({ weight_map: { 'w': shard } }));
      expect(await refusal(dir)).toMatch(/weight_map maps tensor "w" to shard .*, which is not (a file name|a plain file name in the model folder)/);
    },
  );

  it('an index mapping a tensor to a shard that is a folder', async () => {
    const dir = await fresh();
    await fsp.mkdir(path.join(dir, 'shard.safetensors'));
    await fsp.writeFile(path.join(dir, 'model.safetensors.index.json'), JSON.stringify({ weight_map: { w: 'shard.safetensors' } }));
    expect(await refusal(dir)).toContain('shard.safetensors: cannot open (is a folder, not a file)');
  });

  it('a symbolic link to a regular file is followed (the Hugging Face cache links to blobs)', async () => {
    const dir = await fresh();
    const blob = path.join(dir, 'blob');
    await fsp.writeFile(blob, serializeSafetensors({ w: { dtype: 'F32', shape: [1], data: new Float32Array([1]) } }));
    await fsp.symlink(blob, path.join(dir, 'model.safetensors'));
    const source = await openSafetensors(dir);
    expect(source.tensorNames()).toEqual(['w']);
    await source.close();
  });
});

describe('file descriptors', () => {
  const openDescriptors = async () => (await fsp.readdir('/proc/self/fd')).length;

  it('a reader that is never closed holds no descriptor (no DEP0137 warning at garbage collection)', async () => {
    const dir = await fresh();
    await fsp.writeFile(path.join(dir, 'model.safetensors'), serializeSafetensors({ w: { dtype: 'F32', shape: [2], data: new Float32Array([1, 2]) } }));
    const before = await openDescriptors();
    const source = await openSafetensors(dir);
    expect([...new Float32Array((await source.readTensor('w')).bytes.buffer)]).toEqual([1, 2]);
    expect(await openDescriptors()).toBe(before);
  });

  it('a file rewritten after its header was read is refused, not misread', async () => {
    const dir = await fresh();
    const file = path.join(dir, 'model.safetensors');
    await fsp.writeFile(file, serializeSafetensors({ w: { dtype: 'F32', shape: [2], data: new Float32Array([1, 2]) } }));
    const source = await openSafetensors(dir);
    await fsp.writeFile(file, serializeSafetensors({ w: { dtype: 'F32', shape: [3], data: new Float32Array([1, 2, 3]) } }));
    await expect(source.readTensor('w')).rejects.toThrow('the file changed since its header was read');
    await source.close();
    await expect(source.readTensor('w')).rejects.toThrow('after close()');
  });
});

describe("the safetensors crate's validation", () => {
  it('a hole between tensors', async () => {
    const dir = await fresh();
    await rawFile(dir, JSON.stringify({ a: tensor([0, 4]), b: tensor([8, 12]) }), 12);
    expect(await refusal(dir)).toContain('4 bytes [4, 8) of the data region belong to no tensor (a hole before tensor "b")');
  });

  it('a hole at the start', async () => {
    const dir = await fresh();
    await rawFile(dir, JSON.stringify({ a: tensor([4, 8]) }), 8);
    expect(await refusal(dir)).toContain('a hole before tensor "a"');
  });

  it('trailing bytes after the last tensor', async () => {
    const dir = await fresh();
    await rawFile(dir, JSON.stringify({ a: tensor([0, 4]) }), 10);
    expect(await refusal(dir)).toContain('6 trailing bytes after the last tensor');
  });

  it('overlapping tensors', async () => {
    const dir = await fresh();
    await rawFile(dir, JSON.stringify({ a: tensor([0, 8]), b: tensor([4, 12]) }), 12);
    expect(await refusal(dir)).toContain('tensor "b" [4, 12] overlaps tensor "a" [0, 8]');
  });

  it('a duplicate key (JSON.parse alone would keep the last)', async () => {
    const dir = await fresh();
    await rawFile(dir, `{"a": ${JSON.stringify(tensor([0, 4]))}, "a": ${JSON.stringify(tensor([0, 4]))}}`, 4);
    expect(await refusal(dir)).toContain('header has key "a" twice');
  });

  it('a duplicate key inside an entry', async () => {
    const dir = await fresh();
    await rawFile(dir, '{"a": {"dtype": "U8", "dtype": "U8", "shape": [4], "data_offsets": [0, 4]}}', 4);
    expect(await refusal(dir)).toContain('header has key "dtype" twice');
  });

  it('a byte order mark before the header JSON', async () => {
    const dir = await fresh();
    const json = new TextEncoder().encode(JSON.stringify({ a: tensor([0, 4]) }));
    await rawFile(dir, new Uint8Array([0xef, 0xbb, 0xbf, ...json]), 4);
    expect(await refusal(dir)).toContain('header starts with a UTF-8 byte order mark');
  });

  it('still accepts empty tensors anywhere and a header padded with spaces', async () => {
    const dir = await fresh();
    await rawFile(dir, `${JSON.stringify({ e: tensor([0, 0], [0, 3]), a: tensor([0, 4]), z: tensor([4, 4], [0]) })}    `, 4);
    const source = await openSafetensors(dir);
    expect(source.tensorNames().sort()).toEqual(['a', 'e', 'z']);
    await source.close();
  });
});

describe('bounded messages', () => {
  const deep = (depth: number) => `${'['.repeat(depth)}1${']'.repeat(depth)}`;

  it.each(['dtype', 'shape', 'data_offsets'])('a %s nested 20k deep gives a short SafetensorsError, not a stack overflow', async (field) => {
    const dir = await fresh();
    const entry: Record<string, string> = { dtype: '"U8"', shape: '[4]', data_offsets: '[0, 4]', [field]: deep(20_000) };
    await rawFile(dir, `{"a": {${Object.entries(entry).map(([k, v]) => `"${k}": ${v}`).join(', ')}}}`, 4);
    expect((await refusal(dir)).length).toBeLessThan(1000);
  });

  it('a 20 MB tensor name gives a message of a few hundred characters', async () => {
    const dir = await fresh();
    const name = 'n'.repeat(20_000_000);
    await rawFile(dir, JSON.stringify({ [name]: { dtype: 'X', shape: [1], data_offsets: [0, 1] } }), 1);
    const message = await refusal(dir);
    expect(message.length).toBeLessThan(1000);
    expect(message).toContain('characters elided');
  });

  it('a 3M-element bad shape gives a short message', async () => {
    const dir = await fresh();
    await rawFile(dir, JSON.stringify({ a: { dtype: 'U8', shape: [...Array(3_000_000).fill(1), -1], data_offsets: [0, 1] } }), 1);
    expect((await refusal(dir)).length).toBeLessThan(1000);
  });

  it('a 3M-element shape that does not match its offsets gives a short message', async () => {
    const dir = await fresh();
    await rawFile(dir, JSON.stringify({ a: { dtype: 'U8', shape: Array(3_000_000).fill(1), data_offsets: [0, 2] } }), 2);
    expect((await refusal(dir)).length).toBeLessThan(1000);
  });
});

describe('temp files of interrupted saves', () => {
  const deadPid = (): number => {
    const child = spawnSync(process.execPath, ['-e', 'process.stdout.write(String(process.pid))'], { encoding: 'utf8' });
    return Number(child.stdout);
  };
  const tensors = { w: { dtype: 'F32' as const, shape: [1], data: new Float32Array([1]) } };

  it('the next save of the same target removes those of dead processes and keeps a live one', async () => {
    const dir = await fresh();
    const target = path.join(dir, 'memory.safetensors');
    const stale = `${target}.tmp-${deadPid()}-abc123`;
    const live = `${target}.tmp-${process.ppid}-def456`; // a running process's save in progress
    const other = path.join(dir, `other.safetensors.tmp-${deadPid()}-abc123`);
    for (const file of [stale, live, other]) await fsp.writeFile(file, 'partial');
    await writeSafetensors(target, tensors);
    const left = (await fsp.readdir(dir)).sort();
    expect(left).toEqual([path.basename(other), 'memory.safetensors', path.basename(live)].sort());
  });

  it("this process's own leftovers are removed when no save is writing them", async () => {
    const dir = await fresh();
    const target = path.join(dir, 'memory.safetensors');
    await fsp.writeFile(`${target}.tmp-${process.pid}-zz9`, 'partial');
    expect(await removeStaleTemporaries(target)).toEqual([`${target}.tmp-${process.pid}-zz9`]);
  });
});
