// RoPE types against transformers' rope_init_fn values. The expected numbers were computed by
// test/fixtures/rope/expected.py, a numpy-float32 transcription of transformers 5's modeling_rope_utils
// (_compute_default/linear_scaling/dynamic_ntk/yarn/llama3/longrope_parameters at init time); there is no torch on
// this machine, so that script, not torch, produced them. Tolerance: 1e-6 relative (a few f32 ulps: JS rounds a
// double pow to f32 where torch computes the pow in f32).
import { readFileSync } from 'node:fs';
import { describe, expect, it } from 'vitest';
import { rope } from '../../dsl/nn/basic.ts';
import { input, trace } from '../../dsl/trace.ts';
import { ConfigError, type RopeConfig } from '../../models/configs/common.ts';
import { checkRunnable, parseConfig, parseConfigJson } from '../../models/config.ts';
import { ropePositionLimit, ropeTables } from '../../models/rope.ts';
import { runCpu } from '../../runtime/cpuBackend.ts';

const ropeOf = (type: string, theta: number, rotaryDim: number, scaling: Record<string, unknown> = {}): RopeConfig => ({ type, theta, rotaryDim, partialRotaryFactor: 1, scaling });

const cases: { name: string; rope: RopeConfig; maxPositions: number; invFreq: number[]; attentionScaling: number }[] = [
  { name: 'default', rope: ropeOf('default', 10000, 8), maxPositions: 2048, invFreq: [1.0, 0.100000001, 0.00999999978, 0.00100000005], attentionScaling: 1 },
  { name: 'linear', rope: ropeOf('linear', 10000, 8, { factor: 4 }), maxPositions: 2048, invFreq: [0.25, 0.0250000004, 0.00249999994, 0.000250000012], attentionScaling: 1 },
  // at init (positions within max_position_embeddings) dynamic NTK leaves the base as it is
  { name: 'dynamic', rope: ropeOf('dynamic', 10000, 8, { factor: 2 }), maxPositions: 2048, invFreq: [1.0, 0.100000001, 0.00999999978, 0.00100000005], attentionScaling: 1 },
  {
    name: 'yarn (Qwen3-style: factor 4 over 32768)',
    rope: ropeOf('yarn', 1_000_000, 16, { factor: 4, original_max_position_embeddings: 32768 }),
    maxPositions: 131072,
    invFreq: [1.0, 0.177827939, 0.0316227786, 0.00421755994, 0.000500000024, 4.44569851e-5, 7.90569356e-6, 1.40585337e-6],
    attentionScaling: 1.138629436111989,
  },
  {
    name: 'yarn with mscale / mscale_all_dim (DeepSeek-style)',
    rope: ropeOf('yarn', 10000, 16, { factor: 40, original_max_position_embeddings: 4096, mscale: 1, mscale_all_dim: 0.707 }),
    maxPositions: 163840,
    invFreq: [1.0, 0.316227764, 0.100000001, 0.0239147246, 0.00512499968, 0.000849862176, 2.49999994e-5, 7.90569447e-6],
    attentionScaling: 1.0857263992561355,
  },
  {
    name: 'llama3 (Llama 3.1/3.2: factor 32, 1/4, 8192)',
    rope: ropeOf('llama3', 500000, 64, { factor: 32, low_freq_factor: 1, high_freq_factor: 4, original_max_position_embeddings: 8192 }),
    maxPositions: 131072,
    invFreq: [
      1.0, 0.66360122, 0.440366626, 0.292227805, 0.193922758, 0.128687382, 0.0853971019, 0.0566696189, 0.0376060307, 0.0249554086, 0.0165604409,
      0.0109895291, 0.00729266508, 0.00483942125, 0.00321144611, 0.00129054801, 0.000429556705, 9.70828623e-5, 1.94616387e-5, 1.29147684e-5,
      8.57025589e-6, 5.68723181e-6, 3.77405445e-6, 2.50446692e-6, 1.66196764e-6, 1.10288363e-6, 7.31874934e-7, 4.85673127e-7, 3.22293289e-7,
      2.1387423e-7, 1.41927202e-7, 9.4183072e-8,
    ],
    attentionScaling: 1,
  },
  {
    name: 'longrope (Phi-3-style: factor from 131072 / 4096, short factors)',
    rope: ropeOf('longrope', 10000, 8, { original_max_position_embeddings: 4096, short_factor: [1, 1.25, 2.5, 6], long_factor: [1, 2, 4, 8] }),
    maxPositions: 131072,
    invFreq: [1.0, 0.0799999982, 0.00400000019, 0.000166666665],
    attentionScaling: 1.1902380714238083,
  },
];

describe('rope tables equal transformers rope_init_fn', () => {
  it.each(cases)('$name', ({ rope: config, maxPositions, invFreq, attentionScaling }) => {
    const tables = ropeTables(config, maxPositions);
    expect(tables.invFreq).toHaveLength(invFreq.length);
    tables.invFreq.forEach((value, i) => expect(Math.abs(value - invFreq[i]!)).toBeLessThanOrEqual(1e-6 * invFreq[i]!));
    expect(tables.attentionScaling).toBeCloseTo(attentionScaling, 12);
  });

  it('attention scaling multiplies cos and sin', () => {
    const x = Float32Array.from({ length: 2 * 1 * 8 }, (_, i) => Math.sin(i + 1));
    const run = (scaling: number) =>
      runCpu(trace(() => ({ y: rope(input('x', [1, 2, 1, 8]), input('p', [1, 2], 'i32'), input('f', [4]), 8, scaling) })), {
        inputs: { x: { shape: [1, 2, 1, 8], dtype: 'f32', data: x }, p: { shape: [1, 2], dtype: 'i32', data: Int32Array.from([3, 9]) }, f: { shape: [4], dtype: 'f32', data: Float32Array.from([1, 0.1, 0.01, 0.001]) } },
      }).y!.data;
    const plain = run(1);
    const scaled = run(1.25);
    plain.forEach((v, i) => expect(scaled[i]).toBeCloseTo(1.25 * v, 6));
  });
});

describe('rope settings in config.json', () => {
  const llama = () => parseConfigJson(readFileSync(new URL('../fixtures/hf/llama/config.json', import.meta.url), 'utf8'));

  it.each([
    ['rope_parameters', { rope_parameters: { rope_type: 'yarn', rope_theta: 10000, factor: 4, original_max_position_embeddings: 128 } }],
    ['rope_scaling (transformers 4)', { rope_parameters: undefined, rope_theta: 10000, rope_scaling: { type: 'yarn', factor: 4, original_max_position_embeddings: 128 } }],
  ])('yarn written in %s runs, with the same tables', (_, edit) => {
    const config = parseConfig({ ...llama(), ...edit }) as { attention: { rope: RopeConfig; maxPositionEmbeddings: number } };
    expect(() => checkRunnable(config as never)).not.toThrow();
    const tables = ropeTables(config.attention.rope, config.attention.maxPositionEmbeddings);
    expect(tables.attentionScaling).toBeCloseTo(0.1 * Math.log(4) + 1, 12);
  });

  it.each([
    [{ rope_parameters: { rope_type: 'su', rope_theta: 10000 } }, 'config.json: rope_parameters.rope_type: rope type "su" is not supported (supported: default, linear, dynamic, yarn, llama3, longrope)'],
    [{ rope_parameters: undefined, rope_scaling: { type: 'ntk' } }, 'config.json: rope_scaling.type: rope type "ntk" is not supported (supported: default, linear, dynamic, yarn, llama3, longrope)'],
    [{ rope_parameters: { rope_type: 'linear', rope_theta: 10000 } }, 'config.json: rope_parameters.factor: rope type "linear" needs a number here'],
    [{ rope_parameters: undefined, rope_scaling: { rope_type: 'llama3', factor: 8, low_freq_factor: 1, high_freq_factor: 4 } }, 'config.json: rope_scaling.original_max_position_embeddings: rope type "llama3" needs a number here'],
    [{ rope_parameters: { rope_type: 'longrope', rope_theta: 10000, short_factor: [1], long_factor: [1] } }, 'config.json: rope_parameters.long_factor: rope type "longrope" needs 8 positive numbers (rotary dim / 2)'],
  ])('an unknown type or a missing parameter is a ConfigError naming the field (%#)', (edit, message) => {
    const config = parseConfig({ ...llama(), ...edit });
    let caught: unknown;
    try {
      checkRunnable(config);
    } catch (error) {
      caught = error;
    }
    expect(caught).toBeInstanceOf(ConfigError);
    expect((caught as Error).message).toBe(message);
  });

  it('dynamic and longrope say how far their fixed tables hold', () => {
    expect(ropePositionLimit(ropeOf('dynamic', 10000, 8, { factor: 2 }), 2048)).toEqual({ positions: 2048, field: 'max_position_embeddings' });
    expect(ropePositionLimit(ropeOf('longrope', 10000, 8, { original_max_position_embeddings: 4096 }), 131072)).toEqual({ positions: 4096, field: 'original_max_position_embeddings' });
    expect(ropePositionLimit(ropeOf('yarn', 10000, 8, { factor: 4 }), 2048)).toBeUndefined();
  });
});
