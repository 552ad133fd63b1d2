// Bad checkpoints give errors that name the thing and what was expected, and leave nothing on the GPU.
import { afterAll, beforeAll, describe, expect, test } from 'vitest';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { loadConfig } from '../../models/config.ts';
import { buildModel } from '../../models/registry.ts';
import { getSharedDevice } from '../../runtime/device.ts';
import { GpuRuntime } from '../../runtime/gpuRuntime.ts';
import { ModelRunner } from '../../runtime/modelRunner.ts';
import { openSafetensors } from '../../base/safetensors.ts';
import { writeSafetensors } from '../../base/safetensorsWrite.ts';

const LLAMA = path.resolve(import.meta.dirname, '../fixtures/hf/llama');
let tmp: string;

/** A copy of the llama fixture with its config and tensors edited. */
async function variant(name: string, edit: { config?: (c: Record<string, unknown>) => void; tensors?: (t: Map<string, { dtype: string; shape: number[]; data: Uint8Array }>) => void }) {
  const dir = path.join(tmp, name);
  fs.mkdirSync(dir, { recursive: true });
  const config = JSON.parse(fs.readFileSync(path.join(LLAMA, 'config.json'), 'utf8'));
  edit.config?.(config);
  fs.writeFileSync(path.join(dir, 'config.json'), JSON.stringify(config));
  const src = await openSafetensors(LLAMA);
  const tensors = new Map<string, { dtype: string; shape: number[]; data: Uint8Array }>();
  for (const n of src.tensorNames()) {
    const t = await src.readTensor(n);
    tensors.set(n, { dtype: t.dtype, shape: t.shape, data: t.bytes });
  }
  await src.close();
  edit.tensors?.(tensors);
  await writeSafetensors(path.join(dir, 'model.safetensors'), tensors as never);
  return dir;
}

async function load(dir: string) {
  const runtime = new GpuRuntime(await getSharedDevice());
  const model = buildModel(await loadConfig(dir));
  const runner = new ModelRunner(runtime, model, await openSafetensors(dir), { slots: 1, capacity: 16, chunks: [1] });
  return { runtime, runner };
}

beforeAll(() => {
  tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'strata-load-'));
});
afterAll(() => fs.rmSync(tmp, { recursive: true, force: true }));

describe('loading a checkpoint', () => {
  test('a weight with the wrong shape names the tensor and both shapes, and nothing stays on the GPU', async () => {
    const dir = await variant('shape', {
      tensors: (t) => {
        const w = t.get('model.layers.1.mlp.up_proj.weight')!;
        t.set('model.layers.1.mlp.up_proj.weight', { ...w, shape: [w.shape[1]!, w.shape[0]!] });
      },
    });
    const { runtime, runner } = await load(dir);
    await expect(runner.program(1, 1, 'last')).rejects.toThrow("weight 'model.layers.1.mlp.up_proj.weight': checkpoint has shape (64,128), the model expects (128,64)");
    expect(runtime.namedKeys().filter((k) => k.startsWith(runner.namespace) && k.includes('weight:'))).toEqual([]);
  });

  test('a missing weight is named with its expected shape', async () => {
    const dir = await variant('missing', { tensors: (t) => t.delete('model.norm.weight') });
    const { runner } = await load(dir);
    await expect(runner.program(1, 1, 'last')).rejects.toThrow("weight 'model.norm.weight' is missing from the checkpoint (expected shape (64))");
  });

  test('a truncated safetensors file is refused when opened', async () => {
    const dir = await variant('truncated', {});
    const file = path.join(dir, 'model.safetensors');
    fs.truncateSync(file, fs.statSync(file).size - 100);
    await expect(openSafetensors(dir)).rejects.toThrow(/model\.safetensors/);
  });

  test('a corrupted header is refused', async () => {
    const dir = await variant('corrupt', {});
    const file = path.join(dir, 'model.safetensors');
    const bytes = fs.readFileSync(file);
    bytes[8] = 0x58; // the header's opening brace becomes 'X': not JSON
    fs.writeFileSync(file, bytes);
    await expect(openSafetensors(dir)).rejects.toThrow(/model\.safetensors/);
  });

  test('an unknown model_type lists the supported ones', async () => {
    const dir = await variant('unknown', { config: (c) => (c.model_type = 'gpt2') });
    await expect(loadConfig(dir)).rejects.toThrow(/model_type.*gpt2.*llama/s);
  });

  test('a mistyped config field names its JSON path', async () => {
    const dir = await variant('mistyped', { config: (c) => (c.hidden_size = '64') });
    await expect(loadConfig(dir)).rejects.toThrow('hidden_size: expected number, got string');
  });

  test('a missing config field names its JSON path', async () => {
    const dir = await variant('nofield', { config: (c) => delete c.num_hidden_layers });
    await expect(loadConfig(dir)).rejects.toThrow(/num_hidden_layers: missing/);
  });
});
