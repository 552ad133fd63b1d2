// The real config.json of small public checkpoints (test/fixtures/real-configs/, sources in its README): each
// parses, passes checkRunnable, and has a memory plan and a weight plan at full size (no GPU); then, with random
// bf16 weights at the real widths, prefills 4 tokens and decodes 2 on lavapipe.
// REDUCED for the GPU run, to keep CI time and memory modest: layers cut to one of each kind the model has
// (`layers` below), and Qwen3-Next's 512 experts to 16 (each layer's experts alone are 3.2 GB in bf16). Widths,
// vocabularies, heads and state sizes stay real, so every embedding and LM head is full size (Gemma 3n's
// 262,400 x 2048 head and 262,144 x 1280 per-layer table are split under the 128 MiB binding limit).
import { readFileSync } from 'node:fs';
import { describe, expect, it } from 'vitest';
import { memoryPlan } from '../../cli/inspect.ts';
import { checkRunnable, parseConfig, parseConfigJson } from '../../models/config.ts';
import { buildModel } from '../../models/registry.ts';
import { getSharedDevice } from '../../runtime/device.ts';
import { GpuRuntime } from '../../runtime/gpuRuntime.ts';
import { ModelRunner } from '../../runtime/modelRunner.ts';
import { randomCheckpoint } from '../../runtime/randomWeights.ts';

const dir = new URL('../fixtures/real-configs/', import.meta.url);
// parseConfigJson restores transformers' tagged floats ({"__float__": "Infinity"} in Mamba-2's time_step_limit)
const read = (file: string) => parseConfigJson(readFileSync(new URL(file, dir), 'utf8'), file);

interface Case {
  file: string;
  /** Full-size figures the plan must show (parameters as a bf16 checkpoint holds them). */
  params: [number, number];
  /**
   * The edit that makes the GPU run's config: fewer layers (one per kind), fewer experts where memory forces it.
   * None for Granite-4.0-H-350M, which runs (the same two layers) in real-size-split.test.ts beside a CPU reference.
   */
  reduce?(config: Record<string, unknown>): Record<string, unknown>;
}

const cases: Case[] = [
  { file: 'granite-4.0-h-350m.json', params: [330e6, 350e6] },
  { file: 'granite-4.0-h-1b.json', params: [1.40e9, 1.52e9], reduce: (c) => ({ ...c, num_hidden_layers: 2, layer_types: ['mamba', 'attention'] }) },
  { file: 'lfm2-350m.json', params: [340e6, 360e6], reduce: (c) => ({ ...c, num_hidden_layers: 2, layer_types: ['conv', 'full_attention'], full_attn_idxs: [1] }) },
  { file: 'mamba-130m-hf.json', params: [125e6, 135e6], reduce: (c) => ({ ...c, num_hidden_layers: 1 }) },
  { file: 'mamba2-130m.json', params: [125e6, 135e6], reduce: (c) => ({ ...c, num_hidden_layers: 1 }) },
  { file: 'falcon-h1-0.5b.json', params: [450e6, 550e6], reduce: (c) => ({ ...c, num_hidden_layers: 1 }) },
  { file: 'bamba-9b.json', params: [9.0e9, 9.8e9], reduce: (c) => ({ ...c, num_hidden_layers: 2, attn_layer_indices: [1] }) },
  {
    file: 'qwen3-next-80b-a3b.json',
    params: [79e9, 81e9],
    reduce: (c) => ({ ...c, num_hidden_layers: 2, layer_types: ['linear_attention', 'full_attention'], num_experts: 16 }),
  },
  {
    file: 'gemma-3n-e2b-text.json',
    params: [4.2e9, 4.6e9],
    reduce: (c) => ({
      ...c,
      num_hidden_layers: 5,
      layer_types: (c.layer_types as string[]).slice(0, 5),
      intermediate_size: (c.intermediate_size as number[]).slice(0, 5),
      activation_sparsity_pattern: (c.activation_sparsity_pattern as number[]).slice(0, 5),
      num_kv_shared_layers: 0,
    }),
  },
];

/** A loop, not Math.max(...logits): spreading 128k arguments overflows the stack. */
function argmax(values: Float32Array): number {
  let best = 0;
  for (let i = 1; i < values.length; i++) if (values[i]! > values[best]!) best = i;
  return best;
}

describe('real configurations', () => {
  it.each(cases)('$file parses, runs its checks and has a full-size plan', async ({ file, params }) => {
    const config = parseConfig(read(file), file);
    checkRunnable(config, file);
    const plan = await memoryPlan(new URL(file, dir).pathname, { memory: true, capacity: '1024' });
    expect(plan.layers).toHaveLength(buildModel(config).memory().length);
    expect(plan.totalBytes).toBeGreaterThan(0);
    const parameters = plan.weights.bytes / 2;
    expect(parameters).toBeGreaterThanOrEqual(params[0]);
    expect(parameters).toBeLessThanOrEqual(params[1]);
    for (const s of plan.weights.split) expect(s.pieces).toBeGreaterThan(1);
  });

  it.each(cases.filter((c) => c.reduce))('$file (reduced layers, real widths) prefills and decodes on lavapipe', async ({ file, reduce }) => {
    const model = buildModel(parseConfig(reduce!(read(file)), file));
    // a runtime of its own, destroyed after: gigabytes of weights per model must not pile up across cases
    const runtime = new GpuRuntime(await getSharedDevice());
    const logits: Float32Array[] = [];
    const V = model.vocabSize;
    try {
      const runner = new ModelRunner(runtime, model, randomCheckpoint(model, { storage: 'bf16', seed: 3 }), { slots: 1, capacity: 8, chunks: [4] });
      logits.push(await runner.prefill(0, [1, 2, V - 1, 5], 'last'));
      for (let step = 0; step < 2; step++) {
        const last = logits[logits.length - 1]!;
        const [next] = await runner.step([{ slot: 0, tokens: [argmax(last)] }], 'last', { rows: 1, tokens: 1 });
        logits.push(next!);
      }
    } finally {
      runtime.destroy();
    }
    for (const l of logits) {
      expect(l).toHaveLength(V);
      expect(l.every(Number.isFinite)).toBe(true);
    }
    // random weights still give logits that depend on the input
    expect(logits[1]).not.toEqual(logits[2]);
  });
});
