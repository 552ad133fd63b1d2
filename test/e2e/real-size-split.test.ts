// Granite-4.0-H-350M's real widths (100,352 x 768 bf16 tied embedding: 154 MB, over lavapipe's 128 MiB binding
// limit) with random weights. REDUCED: 2 of its 32 layers (real layer_types 9..10: a Mamba-2 layer and an
// attention layer), to keep CI time and memory modest; the split concerns only the embedding and the tied head.
// Lavapipe cannot bind more than 128 MiB, so the reference is (a) the same model split at 40 MiB (4 pieces, not 2)
// and (b) a CPU reference of the two ops that read the split weight: the embedding gather and the LM head.
import { readFileSync } from 'node:fs';
import { describe, expect, it } from 'vitest';
import { output, trace } from '../../dsl/trace.ts';
import { parseConfig } from '../../models/config.ts';
import { buildModel } from '../../models/registry.ts';
import { ModelRunner } from '../../runtime/modelRunner.ts';
import { randomCheckpoint } from '../../runtime/randomWeights.ts';
import { bf16BitsToF32 } from '../../base/tensorValues.ts';
import { getRuntime } from '../helpers/gpu.ts';

const EMBEDDINGS = 'model.embed_tokens.weight';
const real = JSON.parse(readFileSync(new URL('../fixtures/real-configs/granite-4.0-h-350m.json', import.meta.url), 'utf8')) as Record<string, unknown>;
const reduced = { ...real, num_hidden_layers: 2, layer_types: (real.layer_types as string[]).slice(9, 11) };
const config = parseConfig(reduced);
const model = buildModel(config);
const checkpoint = randomCheckpoint(model, { storage: 'bf16', seed: 7 });
const V = model.vocabSize;
const H = model.hiddenSize;
const PROMPT = [17, 100351, 50176, 9];

async function openRunner(bindingLimit?: number) {
  const runtime = await getRuntime();
  return new ModelRunner(runtime, model, checkpoint, {
    slots: 2,
    capacity: 16,
    chunks: [4],
    ...(bindingLimit ? { compileLimits: { ...runtime.limits, maxStorageBufferBindingSize: bindingLimit } } : {}),
  });
}

/** Prompt logits, then two greedy decode steps; the pieces the embedding was cut into. */
async function generate(runner: ModelRunner) {
  const logits = [await runner.prefill(0, PROMPT, 'all')];
  const tokens: number[] = [];
  for (let step = 0; step < 2; step++) {
    const last = logits[logits.length - 1]!.subarray(-V);
    let best = 0;
    for (let i = 1; i < V; i++) if (last[i]! > last[best]!) best = i; // a loop: spreading 100k arguments nears the stack limit
    tokens.push(best);
    const [next] = await runner.step([{ slot: 0, tokens: [tokens[tokens.length - 1]!] }], 'last', { rows: 1, tokens: 1 });
    logits.push(next!);
  }
  const exe = await runner.program(1, 1, 'last');
  const pieces = exe.program.buffers.filter((b) => b.piece?.of === EMBEDDINGS);
  return { logits, tokens, pieces };
}

function maxAbsDiff(a: Float32Array, b: Float32Array): number {
  let worst = 0;
  for (let i = 0; i < a.length; i++) worst = Math.max(worst, Math.abs(a[i]! - b[i]!));
  return worst;
}

describe('Granite-4.0-H-350M real widths: an embedding over the binding limit', () => {
  it('generates with the default 128 MiB limit and matches a split at 40 MiB', async () => {
    const runtime = await getRuntime();
    expect(runtime.limits.maxStorageBufferBindingSize).toBe(128 << 20);
    const atDefault = await generate(await openRunner());
    expect(atDefault.pieces.map((p) => p.piece!.rows)).toEqual([50176, 50176]);
    for (const p of atDefault.pieces) expect(p.bytes).toBeLessThanOrEqual(128 << 20);
    const finer = await generate(await openRunner(40 << 20));
    expect(finer.pieces).toHaveLength(4);
    expect(finer.tokens).toEqual(atDefault.tokens);
    // the same dot products in the same order, only in other buffers: equal to f32 rounding
    for (const [i, l] of atDefault.logits.entries()) {
      expect(l.length).toBe(i === 0 ? PROMPT.length * V : V);
      expect(l.every(Number.isFinite)).toBe(true);
      expect(maxAbsDiff(l, finer.logits[i]!)).toBeLessThanOrEqual(1e-6);
    }
  });

  it('the gather and the tied head over the pieces match a CPU reference', async () => {
    const runner = await openRunner();
    const graph = trace(() => {
      const ctx = runner.context(1, PROMPT.length);
      const hidden = model.forward(ctx);
      output('embedded', ctx.weight(EMBEDDINGS, [V, H]).gather(ctx.tokens));
      output('hidden', hidden);
      output('logits', model.logits(ctx, hidden));
      ctx.finish();
    });
    const exe = await runner.loadProgram('probe', graph, { rows: 1, tokens: PROMPT.length });
    exe.writeInput('tokens', Int32Array.from(PROMPT));
    exe.writeInput('slot_ids', Int32Array.from([1]));
    exe.writeInput('valid', Int32Array.from([PROMPT.length]));
    exe.run();
    const embedded = (await exe.readOutput('embedded')).data as Float32Array;
    const hidden = (await exe.readOutput('hidden')).data as Float32Array;
    const logits = (await exe.readOutput('logits')).data as Float32Array;
    const table = new Uint16Array((await checkpoint.readTensor(EMBEDDINGS)).bytes.buffer);
    const scaling = real.logits_scaling as number;
    let worst = 0;
    let largest = 0;
    for (const [t, id] of PROMPT.entries()) {
      // ids on both sides of the piece boundary (50176) and the last row
      for (let d = 0; d < H; d++) expect(embedded[t * H + d]).toBe(bf16BitsToF32(table[id * H + d]!));
      for (let v = 0; v < V; v++) {
        let dot = 0;
        for (let d = 0; d < H; d++) dot += hidden[t * H + d]! * bf16BitsToF32(table[v * H + d]!);
        const want = dot / scaling;
        worst = Math.max(worst, Math.abs(logits[t * V + v]! - want));
        largest = Math.max(largest, Math.abs(want));
      }
    }
    // 768-term f32 dot products against a double-precision reference
    expect(largest).toBeGreaterThan(0);
    expect(worst).toBeLessThanOrEqual(1e-5 * Math.max(1, largest));
  });
});
