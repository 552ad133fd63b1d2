// The bench's profile analysis without a GPU: kernel templates, bound bytes, the quantization check and the
// llama.cpp output reader.
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { describe, expect, test } from 'vitest';
import type { Program } from '../../compiler/program.ts';
import { buildKernelProfile, kernelBytes, kernelTemplate } from '../../bench/kernelProfile.ts';
import { readLlamaCpp } from '../../bench/llamacpp.ts';
import { detectQuantization } from '../../bench/timing.ts';

const program: Program = {
  bucket: {},
  inputs: {},
  outputs: {},
  weights: {},
  states: {},
  buffers: [
    { id: 0, role: 'weight', bytes: 4000, dtype: 'f32', shape: [1000] },
    { id: 1, role: 'input', bytes: 40, dtype: 'f32', shape: [10] },
    { id: 2, role: 'temp', bytes: 400, dtype: 'f32', shape: [100] },
  ],
  kernels: [
    { name: 'k0_element_matmul', wgsl: '', bindings: [0, 1, 2], writes: [2], workgroups: [4, 1, 1], workgroupSize: 64, templates: ['element'], ops: 'matmul', nodes: [] },
    { name: 'k1_matvec_add', wgsl: '', bindings: [2, 1], writes: [1], workgroups: [1, 1, 1], workgroupSize: 64, templates: ['matvec'], ops: 'matmul add', nodes: [] },
  ],
};

describe('bench kernel profile', () => {
  test('the template is the second part of the kernel name', () => {
    expect(kernelTemplate('k16_element_matmul')).toBe('element');
    expect(kernelTemplate('k3_matvec_add')).toBe('matvec');
  });

  test('bytes are the bound buffers, reads apart from writes', () => {
    expect(kernelBytes(program, program.kernels[0]!)).toEqual({ bytes: 4440, readBytes: 4040, writeBytes: 400 });
  });

  test('per-template totals and fractions of the copy roofline', () => {
    const p = buildKernelProfile(program, [0.002, 0.001], { timer: 'timestamp', repeats: 1, copyBytesPerSecond: 4.44e9 });
    expect(p.totalMs).toBeCloseTo(0.003);
    expect(p.kernels[0]!.fractionOfRoofline).toBeCloseTo(0.5); // 4440 B in 2 us = 2.22 GB/s over 4.44 GB/s
    expect(p.templates.map((t) => t.template)).toEqual(['element', 'matvec']);
    expect(p.templates[0]!.shareOfTime).toBeCloseTo(2 / 3);
  });

  test('timestamps masked to 2^16 ns read as quantized, nanosecond ones do not', () => {
    const masked = [0n, 65536n, 65536n, 131072n, 131072n, 131072n].map((t) => t + (1n << 40n));
    const stamps = (ts: bigint[]) => ts.slice(0, -1).map((begin, i) => ({ begin, end: ts[i + 1]! }));
    expect(detectQuantization(stamps(masked)).quantized).toBe(true);
    expect(detectQuantization(stamps(masked)).stepNs).toBe(65536);
    const fine = [1000n, 4021n, 4100n, 9377n, 9378n, 12000n];
    expect(detectQuantization(stamps(fine)).quantized).toBe(false);
    const coarse = detectQuantization(stamps([0n, 3072n, 5120n, 9216n, 10240n, 16384n]));
    expect([coarse.quantized, coarse.stepNs, coarse.note.startsWith('timestamps are coarse')]).toEqual([false, 1024, true]);
  });

  test('reads llama-bench and llama-batched-bench output', () => {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'llamacpp-'));
    fs.writeFileSync(path.join(dir, 'llama-bench.jsonl'), [
      '{"tag":"llama-400m-f16","n_prompt":128,"n_gen":0,"avg_ts":31656.5}',
      '{"tag":"llama-400m-f16","n_prompt":0,"n_gen":128,"avg_ts":972.25}',
    ].join('\n'));
    fs.writeFileSync(path.join(dir, 'batched.txt'), [
      '== llama-400m f16',
      '|    PP |     TG |    B |   N_KV |   T_PP s | S_PP t/s |   T_TG s | S_TG t/s |      T s |    S t/s |',
      '|-------|--------|------|--------|----------|----------|----------|----------|----------|----------|',
      '|   128 |    128 |    1 |    256 |    0.004 | 31000.00 |    0.131 |   970.00 |    0.141 |  1815.60 |',
      '|   128 |    128 |    8 |   2048 |    0.030 | 34000.00 |    0.192 |  5332.00 |    0.222 |  9000.00 |',
    ].join('\n'));
    expect(readLlamaCpp(dir).get('llama-400m-f16')).toEqual({ prefill128: 31656.5, decodeB1: 972.25, decodeB8: 5332 });
  });
});

describe('quantized weights in the bench', () => {
  test('bench --weights adds q8 / q4 cases; profile --storage takes them', async () => {
    const { parseBenchArgs } = await import('../../bench/main.ts');
    const { parseProfileArgs } = await import('../../bench/profile.ts');
    expect(parseBenchArgs(['models', '--weights', 'q8,q4']).weights).toEqual(['q8', 'q4']);
    expect(parseBenchArgs(['models']).weights).toBeUndefined();
    expect(() => parseBenchArgs(['models', '--weights', 'q3'])).toThrow("--weights takes q8, q4 or q8,q4, got 'q3'");
    expect(parseProfileArgs(['granite4h', '--storage', 'q4']).storage).toBe('q4');
  });

  test('a quantized matvec counts the bytes it reads: packed values and block constants, not f32', async () => {
    const { compile } = await import('../../compiler/compile.ts');
    const { trace, input, weight } = await import('../../dsl/trace.ts');
    const q = compile(trace(() => ({ y: input('x', [1, 64]).matmul(weight('w', [32, 64], 'q4').T) })), {});
    expect(q.kernels).toHaveLength(1);
    // x: 64 f32; w: 256 words of 8 nibbles, then 64 words of (scale, min); y: 32 f32
    expect(kernelBytes(q, q.kernels[0]!)).toEqual({ bytes: 256 + 1280 + 128, readBytes: 256 + 1280, writeBytes: 128 });
  });
});

test('bench models --prompt sets the tokens before the timed decode (128 unless given)', async () => {
  const { parseBenchArgs } = await import('../../bench/main.ts');
  expect(parseBenchArgs(['models', '--prompt', '4000']).prompt).toBe(4000);
  expect(parseBenchArgs(['models']).prompt).toBeUndefined();
  expect(() => parseBenchArgs(['models', '--prompt', '0'])).toThrow("[bench] --prompt takes a number of tokens, got '0'");
});

test('profile --capacity sizes the caches apart from the context (0: what the run needs)', async () => {
  const { parseProfileArgs } = await import('../../bench/profile.ts');
  expect(parseProfileArgs(['llama-400m', '--context', '128', '--capacity', '4096'])).toMatchObject({ model: 'llama-400m', context: 128, capacity: 4096 });
  expect(parseProfileArgs(['llama-400m']).capacity).toBe(0);
  expect(() => parseProfileArgs(['llama-400m', '--capacity', 'big'])).toThrow("[bench profile] --capacity takes a whole number, got 'big'");
});

test('bench --cases takes an h2o case (every attention layer under h2o 32+32)', async () => {
  const { parseBenchArgs } = await import('../../bench/main.ts');
  expect(parseBenchArgs(['models', '--cases', 'f16:1,f16:8:h2o']).cases).toEqual([
    { storage: 'f16', batch: 1, fused: true },
    { storage: 'f16', batch: 8, fused: true, kvPolicy: { kind: 'h2o', recent: 32, heavy: 32 } },
  ]);
  expect(() => parseBenchArgs(['models', '--cases', 'f16:1:lru'])).toThrow("--cases takes storage:batch[:unfused|:h2o] entries (storage f32, f16, q8 or q4), got 'f16:1:lru'");
});
