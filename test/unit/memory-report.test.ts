// The memory plan of every fixture's model equals sizes computed by hand from its raw config.json (HF field
// names, not our normalized config): KV only where a layer attends with its own cache (a window's ring for
// sliding layers), recurrent state only where a layer is recurrent, both for Falcon-H1. No GPU.
import { describe, expect, test, vi } from 'vitest';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { formatPositions } from '../../caches/hybridMemory.ts';
import { memoryFingerprint, modelFingerprint, stableJson } from '../../caches/sessionFile.ts';
import { type MemoryOptions, kvEntries, memoryReport } from '../../caches/spec.ts';
import { buildProgram } from '../../cli/main.ts';
import { memoryPlan } from '../../cli/inspect.ts';
import { loadConfig } from '../../models/config.ts';
import { MODELS, buildModel } from '../../models/registry.ts';

const FIXTURES = path.resolve(import.meta.dirname, '../fixtures/hf');
const OPTIONS: MemoryOptions = { slots: 3, capacity: 40, maxChunk: 4 };
const F32 = 4;

type Raw = Record<string, any>;
interface Expected {
  kv: number[];
  state: number[];
  sharesKvWith?: (number | null)[];
}

const kv = (c: Raw, entries = OPTIONS.capacity) => {
  const headDim = c.head_dim ?? c.hidden_size / c.num_attention_heads;
  return OPTIONS.slots * entries * c.num_key_value_heads * 2 * headDim * F32;
};
const slots = (perSlotFloats: number) => OPTIONS.slots * perSlotFloats * F32;
// Mamba-1: conv [I, K-1] + ssm [I, N]
const mamba1 = (I: number, K: number, N: number) => slots(I * (K - 1) + I * N);
// Mamba-2: conv [I + 2GN, K] (a ring of the last K inputs, which the fused decode step needs) + ssm [H, P, N]
const mamba2 = (I: number, G: number, N: number, K: number, H: number, P: number) => slots((I + 2 * G * N) * K + H * P * N);
const hybridMamba2 = (c: Raw) => mamba2(c.mamba_d_ssm ?? c.mamba_expand * c.hidden_size, c.mamba_n_groups, c.mamba_d_state, c.mamba_d_conv, c.mamba_n_heads, c.mamba_d_head);
const layers = (c: Raw) => [...Array(c.num_hidden_layers).keys()];

const EXPECTED: Record<string, (c: Raw) => Expected> = {
  llama: (c) => ({ kv: layers(c).map(() => kv(c)), state: layers(c).map(() => 0) }),
  mamba: (c) => ({ kv: layers(c).map(() => 0), state: layers(c).map(() => mamba1(c.expand * c.hidden_size, c.conv_kernel, c.state_size)) }),
  mamba2: (c) => ({
    kv: layers(c).map(() => 0),
    state: layers(c).map(() => mamba2(c.expand * c.hidden_size, c.n_groups, c.state_size, c.conv_kernel, c.num_heads, c.head_dim)),
  }),
  jamba: (c) => {
    const attn = (i: number) => i % c.attn_layer_period === c.attn_layer_offset;
    return {
      kv: layers(c).map((i) => (attn(i) ? kv(c) : 0)),
      state: layers(c).map((i) => (attn(i) ? 0 : mamba1(c.mamba_expand * c.hidden_size, c.mamba_d_conv, c.mamba_d_state))),
    };
  },
  bamba: (c) => ({
    kv: layers(c).map((i) => (c.attn_layer_indices.includes(i) ? kv(c) : 0)),
    state: layers(c).map((i) => (c.attn_layer_indices.includes(i) ? 0 : hybridMamba2(c))),
  }),
  granitemoehybrid: (c) => ({
    kv: c.layer_types.map((t: string) => (t === 'attention' || t === 'full_attention' ? kv(c) : 0)),
    state: c.layer_types.map((t: string) => (t === 'attention' || t === 'full_attention' ? 0 : hybridMamba2(c))),
  }),
  falcon_h1: (c) => ({ kv: layers(c).map(() => kv(c)), state: layers(c).map(() => hybridMamba2(c)) }),
  lfm2: (c) => ({
    kv: c.layer_types.map((t: string) => (t === 'full_attention' ? kv(c) : 0)),
    state: c.layer_types.map((t: string) => (t === 'full_attention' ? 0 : slots(c.hidden_size * (c.conv_L_cache - 1)))),
  }),
  qwen3_next: (c) => {
    const keyDim = c.linear_num_key_heads * c.linear_key_head_dim;
    const valueDim = c.linear_num_value_heads * c.linear_value_head_dim;
    // conv over q, k, v: [2K + V, kernel-1]; delta-rule state [Hv, Dk, Dv]
    const delta = slots((2 * keyDim + valueDim) * (c.linear_conv_kernel_dim - 1) + c.linear_num_value_heads * c.linear_key_head_dim * c.linear_value_head_dim);
    return { kv: c.layer_types.map((t: string) => (t === 'full_attention' ? kv(c) : 0)), state: c.layer_types.map((t: string) => (t === 'full_attention' ? 0 : delta)) };
  },
  gemma3n_text: (c) => {
    // the last num_kv_shared_layers read the last earlier layer of their type and own no KV
    const firstShared = c.num_hidden_layers - c.num_kv_shared_layers;
    const ring = Math.min(OPTIONS.capacity, c.sliding_window + OPTIONS.maxChunk - 1);
    const source = (i: number) => {
      if (i < firstShared) return null;
      for (let j = firstShared - 1; j >= 0; j--) if (c.layer_types[j] === c.layer_types[i]) return j;
      return null;
    };
    return {
      kv: layers(c).map((i) => (i >= firstShared ? 0 : kv(c, c.layer_types[i] === 'sliding_attention' ? ring : OPTIONS.capacity))),
      state: layers(c).map(() => 0),
      sharesKvWith: layers(c).map(source),
    };
  },
};

const FAMILIES = Object.keys(EXPECTED);

describe('memory report vs analytic sizes', () => {
  test.each(FAMILIES)('%s', async (family) => {
    if (!(family in MODELS)) {
      console.log(`${family}: no forward pass registered yet, memory spec not testable`);
      return;
    }
    const dir = path.join(FIXTURES, family);
    const raw = JSON.parse(fs.readFileSync(path.join(dir, 'config.json'), 'utf8')) as Raw;
    const want = EXPECTED[family]!(raw);
    const report = memoryReport(buildModel(await loadConfig(dir)).memory(), OPTIONS);
    expect(report.layers.map((l) => l.kvBytes)).toEqual(want.kv);
    expect(report.layers.map((l) => l.stateBytes)).toEqual(want.state);
    if (want.sharesKvWith) expect(report.layers.map((l) => l.sharesKvWith)).toEqual(want.sharesKvWith);
    expect(report.kvBytes).toBe(want.kv.reduce((a, b) => a + b, 0));
    expect(report.stateBytes).toBe(want.state.reduce((a, b) => a + b, 0));
    expect(report.totalBytes).toBe(report.kvBytes + report.stateBytes + report.snapshotBytes + report.bookkeepingBytes + report.scratchBytes);
  });

  test('kinds: Jamba attention/recurrent, Falcon-H1 both, Gemma 3n shared-kv', async () => {
    const kinds = async (family: string) => memoryReport(buildModel(await loadConfig(path.join(FIXTURES, family))).memory(), OPTIONS).layers.map((l) => l.kind);
    if ('jamba' in MODELS) expect(await kinds('jamba')).toEqual(['recurrent', 'recurrent', 'attention', 'recurrent']);
    if ('falcon_h1' in MODELS) expect(await kinds('falcon_h1')).toEqual(['both', 'both', 'both']);
    if ('gemma3n_text' in MODELS) expect(await kinds('gemma3n_text')).toEqual(['attention', 'attention', 'attention', 'attention', 'shared-kv', 'shared-kv']);
  });

  test('sliding windows allocate only the ring, a session window shrinks it, and a ring never exceeds the capacity', () => {
    const spec = [{ kv: { kvHeads: 2, headDim: 8, window: 16 }, states: [] }];
    const ring = (o: Partial<MemoryOptions>) => memoryReport(spec, { ...OPTIONS, ...o }).layers[0]!.kvShape![1];
    expect(ring({ capacity: 100, maxChunk: 4 })).toBe(19);
    expect(ring({ capacity: 100, maxChunk: 4, window: 6 })).toBe(9);
    expect(ring({ capacity: 100, maxChunk: 4, window: 60 })).toBe(19); // shrink only
    expect(ring({ capacity: 12, maxChunk: 4 })).toBe(12);
    expect(kvEntries(spec[0]!.kv, { ...OPTIONS, capacity: 100 })).toBe(19);
  });

  test('snapshot planes hold recurrent states and rings, and positions are counted per slot and plane', () => {
    const spec = [
      { kv: { kvHeads: 1, headDim: 4, window: 4 }, states: [] },
      { kv: { kvHeads: 1, headDim: 4 }, states: [{ name: 'ssm', shape: [2, 3] }] },
      { states: [], kv: { kvHeads: 1, headDim: 4, sharesWith: 1 } },
    ];
    const options = { slots: 2, capacity: 32, maxChunk: 2 };
    const r = memoryReport(spec, options, { perSlot: 3 });
    expect(r.layers.map((l) => l.snapshotBytes)).toEqual([6 * 5 * 8 * 4, 6 * 6 * 4, 0]);
    expect(r.layers.map((l) => l.kvBytes)).toEqual([2 * 5 * 8 * 4, 2 * 32 * 8 * 4, 0]);
    expect(r.bookkeepingBytes).toBe((2 + 6) * 4);
    expect(r.scratchBytes).toBe(6 * 4 /* zero: largest state */ + 32 * 4 * 4 /* scratch: largest K or V slot */);
  });
});

describe('inspect --memory', () => {
  test('--json prints one object with totalBytes and a layer entry per model layer', async () => {
    const log = vi.spyOn(console, 'log').mockImplementation(() => {});
    try {
      await buildProgram().parseAsync(['node', 'strata', 'inspect', path.join(FIXTURES, 'llama'), '--memory', '--slots', '2', '--capacity', '64', '--json']);
      const plan = JSON.parse(log.mock.calls.map((c) => c.join(' ')).join('\n'));
      expect(plan.totalBytes).toBe(memoryReport(buildModel(await loadConfig(path.join(FIXTURES, 'llama'))).memory(), { slots: 2, capacity: 64, maxChunk: 16 }).totalBytes);
      expect(plan.layers.map((l: Record<string, unknown>) => [l.layer, l.kvBytes, l.stateBytes, l.sharesKvWith])).toEqual([
        [0, 2 * 64 * 2 * 32 * 4, 0, null],
        [1, 2 * 64 * 2 * 32 * 4, 0, null],
      ]);
    } finally {
      log.mockRestore();
    }
  });

  test('the text form lists every layer and the total', async () => {
    const log = vi.spyOn(console, 'log').mockImplementation(() => {});
    try {
      await buildProgram().parseAsync(['node', 'strata', 'inspect', path.join(FIXTURES, 'llama'), '--memory', '--capacity', '64']);
      const text = log.mock.calls.map((c) => c.join(' ')).join('\n');
      expect(text).toMatch(/^llama: 2 layers; 1 slot\(s\) x 64 positions/);
      expect(text).toMatch(/^0 +attention +\[1,64,2,32\] +- +16384 +0$/m);
      expect(text).toMatch(/^total +\d+ /m);
    } finally {
      log.mockRestore();
    }
  });

  test('bad options name the flag', async () => {
    await expect(memoryPlan(path.join(FIXTURES, 'llama'), { memory: true, slots: '0' })).rejects.toThrow('--slots must be a positive integer');
    await expect(memoryPlan(path.join(FIXTURES, 'llama'), { memory: true, capacity: 'lots' })).rejects.toThrow('--capacity must be a positive integer');
  });
});

describe('helpers', () => {
  test('formatPositions shortens runs', () => {
    expect(formatPositions([0, 4, 8, 9, 10, 11, 20, 21])).toBe('0, 4, 8..11, 20, 21');
  });

  test('stableJson and fingerprints ignore key order and see every change', () => {
    expect(stableJson({ b: 1, a: { d: 2, c: [3, { f: 4, e: 5 }] } })).toBe('{"a":{"c":[3,{"e":5,"f":4}],"d":2},"b":1}');
    const weights = [{ name: 'a', shape: [2, 3], dtype: 'F32' }, { name: 'b', shape: [3], dtype: 'F16' }];
    const base = modelFingerprint({ family: 'x', config: { eps: 1e-5, n: 2 }, weights });
    expect(modelFingerprint({ family: 'x', config: { n: 2, eps: 1e-5 }, weights: [...weights].reverse() })).toBe(base);
    expect(modelFingerprint({ family: 'x', config: { eps: 1e-6, n: 2 }, weights })).not.toBe(base);
    expect(modelFingerprint({ family: 'x', config: { eps: 1e-5, n: 2 }, weights: [weights[0]!, { ...weights[1]!, shape: [4] }] })).not.toBe(base);
    const spec = [{ kv: { kvHeads: 2, headDim: 8, window: 4 }, states: [] }];
    expect(memoryFingerprint(spec, { slots: 1, capacity: 64, maxChunk: 4 })).toBe(memoryFingerprint(spec, { slots: 5, capacity: 32, maxChunk: 4 }));
    expect(memoryFingerprint(spec, { slots: 1, capacity: 64, maxChunk: 4 })).not.toBe(memoryFingerprint(spec, { slots: 1, capacity: 64, maxChunk: 8 }));
  });
});
