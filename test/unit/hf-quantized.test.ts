// GPTQ and AWQ checkpoints (test/fixtures/hf-quantized, packed by its pack.py with the standard library only) read
// into q4 blocks on the host: every weight equals the dequantized reference up to the f16 rounding of the block
// minimum; what does not map is refused with one typed line naming the field. The model run is
// test/models/hf-quantized.test.ts.
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { afterAll, describe, expect, test } from 'vitest';
import { openSafetensors } from '../../base/safetensors.ts';
import { toFloat32, toInt32 } from '../../base/tensorValues.ts';
import { serializeSafetensors } from '../../base/safetensorsWrite.ts';
import { isUserError } from '../../base/errors.ts';
import { QuantizedCheckpointError, hfQuantization, hfQuantizedSource } from '../../runtime/hfQuantized.ts';
import { dequantize, repackGgml } from '../../runtime/quantize.ts';
import { Session } from '../../runtime/session.ts';

const DIR = path.resolve(import.meta.dirname, '../fixtures/hf-quantized');
const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'strata-hfq-'));
afterAll(() => fs.rmSync(tmp, { recursive: true, force: true }));
const configOf = (folder: string) => JSON.parse(fs.readFileSync(path.join(folder, 'config.json'), 'utf8')) as Record<string, unknown>;

async function open(folder: string) {
  const scheme = hfQuantization(configOf(folder), folder);
  return hfQuantizedSource(await openSafetensors(folder), scheme);
}

describe('GPTQ and AWQ layers as q4 blocks', () => {
  test.each(['gptq', 'awq'])('%s: every projection decodes to the dequantized weights', async (format) => {
    const source = await open(path.join(DIR, format));
    const reference = await openSafetensors(path.join(DIR, 'dequantized'));
    expect(source.tensorNames().sort()).toEqual(reference.tensorNames().sort()); // qweight/qzeros/scales/g_idx become .weight
    let projections = 0;
    for (const name of reference.tensorNames()) {
      const want = await reference.readTensor(name);
      if (want.dtype !== 'F32') {
        expect(await source.readTensor(name)).toEqual(want); // embedding, norms, LM head: passed through
        continue;
      }
      projections++;
      const info = source.info(name);
      expect([info.dtype, info.shape]).toEqual(['Q4_1', want.shape]);
      const got = await source.readTensor(name);
      const count = want.shape[0]! * want.shape[1]!;
      const values = dequantize(repackGgml('Q4_1', got.bytes, count), count, 'q4');
      const exact = toFloat32(want);
      // the block minimum -scale * zero is rounded to f16: within 2^-11 of |scale * zero| <= 0.03 * 15 (pack.py);
      // a packing mistake moves weights by whole scales (>= 0.004)
      let worst = 0;
      for (let i = 0; i < count; i++) worst = Math.max(worst, Math.abs(values[i]! - exact[i]!));
      expect(worst).toBeLessThanOrEqual(2 ** -11 * 0.03 * 15);
    }
    expect(projections).toBe(7);
  });

  test('GPTQ and AWQ files of the same codes give the same blocks', async () => {
    const [gptq, awq] = await Promise.all([open(path.join(DIR, 'gptq')), open(path.join(DIR, 'awq'))]);
    for (const name of ['model.layers.0.self_attn.k_proj.weight', 'model.layers.0.mlp.down_proj.weight'])
      expect((await gptq.readTensor(name)).bytes).toEqual((await awq.readTensor(name)).bytes);
  });
});

describe('quantized checkpoints that are refused', () => {
  const gptq = configOf(path.join(DIR, 'gptq'));
  const awq = configOf(path.join(DIR, 'awq'));
  const refusal = (config: Record<string, unknown>, change: Record<string, unknown>): string => {
    const raw = { ...config, quantization_config: { ...(config.quantization_config as object), ...change } };
    let error: unknown;
    try {
      hfQuantization(raw, 'model/config.json');
    } catch (e) {
      error = e;
    }
    expect(error).toBeInstanceOf(QuantizedCheckpointError);
    expect(isUserError(error)).toBe(true);
    expect((error as Error).message).not.toContain('\n');
    return (error as Error).message;
  };

  test.each([
    [{ bits: 8 }, gptq, 'quantization_config.bits = 8: gptq is read at 4 bits only'],
    [{ bits: 3 }, gptq, 'quantization_config.bits = 3'],
    [{ desc_act: true }, gptq, 'quantization_config.desc_act = true (act-order'],
    [{ group_size: 48 }, gptq, 'quantization_config.group_size = 48: must be -1 or a positive multiple of 32'],
    [{ checkpoint_format: 'marlin' }, gptq, 'quantization_config.checkpoint_format = "marlin"'],
    [{ quant_method: 'bitsandbytes' }, gptq, 'quantization_config.quant_method = "bitsandbytes" is not read'],
    [{ version: 'gemv' }, awq, 'quantization_config.version = "gemv": only AutoAWQ\'s GEMM packing is read'],
    [{ zero_point: false }, awq, 'quantization_config.zero_point = false'],
  ])('%j', (change, config, message) => {
    expect(refusal(config, change)).toContain(`model/config.json: ${message}`);
  });

  test('a GPTQ layer whose g_idx is not input / group_size (act-order) is refused when read', async () => {
    const folder = path.join(tmp, 'act-order');
    fs.mkdirSync(folder);
    const original = await openSafetensors(path.join(DIR, 'gptq'));
    const tensors = Object.fromEntries(
      await Promise.all(
        original.tensorNames().map(async (name) => {
          const t = await original.readTensor(name);
          return [name, { dtype: t.dtype as 'F16', shape: t.shape, data: t.bytes }] as const;
        }),
      ),
    );
    const layer = 'model.layers.0.mlp.down_proj';
    const gIdx = Int32Array.from(toInt32(await original.readTensor(`${layer}.g_idx`)));
    [gIdx[3], gIdx[100]] = [gIdx[100]!, gIdx[3]!];
    tensors[`${layer}.g_idx`] = { dtype: 'I32' as 'F16', shape: [gIdx.length], data: new Uint8Array(gIdx.buffer) };
    fs.writeFileSync(path.join(folder, 'model.safetensors'), serializeSafetensors(tensors));
    fs.copyFileSync(path.join(DIR, 'gptq', 'config.json'), path.join(folder, 'config.json'));
    const source = await open(folder);
    await expect(source.readTensor('model.layers.0.mlp.up_proj.weight')).resolves.toBeDefined();
    const error = await source.readTensor(`${layer}.weight`).then(() => undefined, (e: Error) => e);
    expect(error).toBeInstanceOf(QuantizedCheckpointError);
    expect(error!.message).toBe(`${layer}.g_idx: input 3 is in group 1, not 0 = input / group_size (act-order): not supported`);
  });
});

test('Session.load refuses a checkpoint it cannot read by its config, before any weight or device work', async () => {
  const folder = path.join(tmp, 'bits8');
  fs.mkdirSync(folder);
  const config = configOf(path.join(DIR, 'gptq'));
  fs.writeFileSync(path.join(folder, 'config.json'), JSON.stringify({ ...config, quantization_config: { ...(config.quantization_config as object), bits: 8 } }));
  const error = await Session.load(folder).then(() => undefined, (e: Error) => e);
  expect(error).toBeInstanceOf(QuantizedCheckpointError);
  expect(error!.message).toBe(`${path.join(folder, 'config.json')}: quantization_config.bits = 8: gptq is read at 4 bits only (Strata's q4 storage)`);
});
