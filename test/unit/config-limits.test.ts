// Hostile configs (issue 10): absurd sizes, deep nesting and unsupported RoPE are refused when the config is parsed,
// within a second, naming the field, the value and the limit.
import { execFileSync } from 'node:child_process';
import { promises as fsp } from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { describe, expect, it } from 'vitest';
import { memoryPlan, formatMemoryPlan, type MemoryPlan } from '../../cli/inspect.ts';
import { ConfigError, checkRunnable, loadConfig, parseConfig, parseConfigJson, restoreTaggedFloats } from '../../models/config.ts';
import { CONFIG_LIMITS } from '../../models/configs/limits.ts';
import { isUserError } from '../../base/errors.ts';

// Each refusal takes milliseconds when idle (the old behaviour: blocked forever, or ran out of memory after 30 s
// or more). The bound only guards against that, with room for a loaded machine; it is not a speed test.
const REFUSAL_GUARD_MS = 10_000;

const root = path.resolve(import.meta.dirname, '../..');
const llamaText = await fsp.readFile(path.join(root, 'test/fixtures/hf/llama/config.json'), 'utf8');
const llama = () => parseConfigJson(llamaText);

/** The error of `action`, which must be a ConfigError thrown within a second. */
function refusal(action: () => unknown): string {
  const started = performance.now();
  let caught: unknown;
  try {
    action();
  } catch (error) {
    caught = error;
  }
  expect(performance.now() - started).toBeLessThan(REFUSAL_GUARD_MS);
  expect(caught).toBeInstanceOf(ConfigError);
  expect(isUserError(caught)).toBe(true);
  return (caught as Error).message;
}

describe('sizes are bounded at parse time', () => {
  it.each([1e9, 2 ** 31 - 1, 2 ** 32])('num_hidden_layers %d names the field, the value and the limit', (layers) => {
    const message = refusal(() => parseConfig({ ...llama(), num_hidden_layers: layers }));
    expect(message).toBe(`config.json: num_hidden_layers: ${layers} is above the limit ${CONFIG_LIMITS.num_hidden_layers}`);
  });

  it('head_dim 1e9 is refused before any RoPE table is built', () => {
    expect(refusal(() => parseConfig({ ...llama(), head_dim: 1e9 }))).toContain('head_dim: 1000000000 is above the limit 2048');
  });

  it.each([
    ['vocab_size', 1e12],
    ['num_attention_heads', 1e6],
    ['sliding_window', 2 ** 40],
    ['max_position_embeddings', 2 ** 53],
  ])('%s %d is refused', (field, value) => {
    expect(refusal(() => parseConfig({ ...llama(), [field]: value }))).toContain(`${field}: ${value} is above the limit`);
  });

  it('experts of every MoE family are bounded', async () => {
    const granite = parseConfigJson(await fsp.readFile(path.join(root, 'test/fixtures/hf/granitemoehybrid/config.json'), 'utf8'));
    expect(refusal(() => parseConfig({ ...granite, num_local_experts: 1e7 }))).toContain('num_local_experts: 10000000 is above the limit 4096');
    const qwen = parseConfigJson(await fsp.readFile(path.join(root, 'test/fixtures/hf/qwen3_next/config.json'), 'utf8'));
    expect(refusal(() => parseConfig({ ...qwen, num_experts: 1e7 }))).toContain('num_experts: 10000000 is above the limit 4096');
  });

  it('a weight larger than one GPU tensor can index is refused with the fields that size it', () => {
    const message = refusal(() => parseConfig({ ...llama(), vocab_size: 1 << 22, hidden_size: 4096 }));
    expect(message).toContain('vocab_size x hidden_size: a weight of 4194304 x 4096 = 17179869184 elements is above the limit 4294967295');
  });

  it('a per-layer list longer than the layer limit is refused by its length', () => {
    const message = refusal(() => parseConfig({ ...llama(), model_type: 'qwen3_next', layer_types: Array(100_000).fill('full_attention') }));
    expect(message).toContain('layer_types (length): 100000 is above the layer limit 1024');
  });

  it('inspect --memory refuses 1e9 layers at once instead of running out of memory', async () => {
    const folder = await fsp.mkdtemp(path.join(os.tmpdir(), 'strata-limits-'));
    try {
      await fsp.writeFile(path.join(folder, 'config.json'), JSON.stringify({ ...llama(), num_hidden_layers: 1e9 }));
      const started = performance.now();
      await expect(memoryPlan(folder, { memory: true, json: true })).rejects.toThrow('num_hidden_layers: 1000000000 is above the limit 1024');
      expect(performance.now() - started).toBeLessThan(REFUSAL_GUARD_MS);
    } finally {
      await fsp.rm(folder, { recursive: true, force: true });
    }
  });

  it("inspect's text table does not overflow the stack on a very long plan", () => {
    const layer = { layer: 0, kind: 'attention', kvBytes: 1, stateBytes: 0, snapshotBytes: 0, sharesKvWith: null, kvShape: [1, 2, 3, 4], stateShapes: {} };
    const plan = {
      family: 'llama', slots: 1, capacity: 2, maxChunk: 1, window: null, snapshotsPerSlot: 0,
      layers: Array.from({ length: 300_000 }, (_, i) => ({ ...layer, layer: i })),
      kvBytes: 1, stateBytes: 0, snapshotBytes: 0, bookkeepingBytes: 4, scratchBytes: 4, totalBytes: 9,
      weights: { storage: 'bf16', bindingLimit: 128 << 20, tensors: 1, bytes: 2, largest: { name: 'w', shape: [1], bytes: 2 }, split: [] },
    } as unknown as MemoryPlan;
    // the layer table, the memory totals, then the weights (a blank line, total, largest)
    expect(formatMemoryPlan(plan).split('\n').length).toBe(300_000 + 13);
  });
});

describe('untrusted JSON depth', () => {
  const deep = (depth: number) => `${'['.repeat(depth)}1${']'.repeat(depth)}`;

  it('a field nested 20k deep is refused with its path, not a stack overflow', () => {
    const text = llamaText.trim().replace(/\}$/, `, "extra": ${deep(20_000)}}`);
    expect(refusal(() => parseConfig(parseConfigJson(text)))).toMatch(/extra\[0\]\[0\].*JSON nested deeper than 64 levels/);
  });

  it('restoreTaggedFloats refuses depth instead of recursing into it', () => {
    let value: unknown = { __float__: 'Infinity' };
    for (let i = 0; i < 20_000; i++) value = [value];
    expect(() => restoreTaggedFloats(value)).toThrow(ConfigError);
  });

  it('a deep object given to parseConfig directly is refused too', () => {
    let value: unknown = 1;
    for (let i = 0; i < 20_000; i++) value = { inner: value };
    expect(refusal(() => parseConfig({ ...llama(), extra: value }))).toContain('JSON nested deeper than 64 levels');
  });
});

describe('what parses but cannot run is refused before loading', () => {
  it.each([
    ['rope_parameters.rope_type', { rope_parameters: { rope_type: 'su', rope_theta: 10000, factor: 4 } }],
    ['rope_scaling.type', { rope_parameters: undefined, rope_scaling: { type: 'su', factor: 4 } }],
  ])('an unknown rope type names %s', (field, edit) => {
    const config = parseConfig({ ...llama(), ...edit });
    expect(refusal(() => checkRunnable(config))).toBe(`config.json: ${field}: rope type "su" is not supported (supported: default, linear, dynamic, yarn, llama3, longrope)`);
  });

  it('a config.json that is a folder, or a FIFO, is refused without blocking', { timeout: 20_000 }, async () => {
    const folder = await fsp.mkdtemp(path.join(os.tmpdir(), 'strata-limits-'));
    try {
      await fsp.mkdir(path.join(folder, 'config.json'));
      await expect(loadConfig(folder)).rejects.toThrow('config.json: cannot read (is a folder, not a file)');
      await fsp.rmdir(path.join(folder, 'config.json'));
      execFileSync('mkfifo', [path.join(folder, 'config.json')]);
      const started = performance.now();
      await expect(loadConfig(folder)).rejects.toThrow('config.json: cannot read (is a named pipe (FIFO), not a regular file)');
      expect(performance.now() - started).toBeLessThan(REFUSAL_GUARD_MS);
    } finally {
      await fsp.rm(folder, { recursive: true, force: true });
    }
  });
});
