// GGUF files written by llama.cpp's converter (test/fixtures/gguf/README.md) for Jamba, Mamba, Mamba-2, LFM2,
// Gemma 3n, Falcon-H1 and Qwen3-Next, read on the host against their reference folders: every HF tensor is served
// under its HF name, in its HF shape, with the folder's exact values (what the converter changed, undone: A =
// -exp(A_log), squeezed conv weights, Mamba-2's A/D/norm reshapes, stacked experts and AltUp projections, norms
// stored as w + 1, Qwen3-Next's regrouped q/k/v/z rows), or for Falcon-H1's folded muP multipliers the folder's
// values times them within f16 rounding, and the config rebuilt from the metadata parses to the folder's.
// Also a llama-quantize Q4_0 file: its blocks decode to the same weights within Q4_0's error. The models run from
// both in test/models/gguf.test.ts.
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { describe, expect, test } from 'vitest';
import { gguf } from '@huggingface/gguf';
import { openSafetensors } from '../../base/safetensors.ts';
import { toFloat32 } from '../../base/tensorValues.ts';
import { loadConfig, parseConfig } from '../../models/config.ts';
import { GGUF_FAMILIES, GGUF_FIXTURES, type GgufFamily, falconH1Folded, hostValues, openGgufReference } from '../helpers/ggufReference.ts';
import { GGUF_LAYOUTS, GgufError, type Meta, sparsityFromStdMultiplier } from '../../runtime/ggufLayouts.ts';
import { openGguf } from '../../runtime/gguf.ts';
import { sparsityStdMultiplier } from '../../models/families/gemma3n_text.ts';

describe.each(Object.keys(GGUF_FAMILIES) as GgufFamily[])('%s GGUF (f16, llama.cpp converter)', (family) => {
  test('every tensor of the folder, same name, shape, dtype and values', async () => {
    const { gguf, folder, fromGguf } = await openGgufReference(family);
    const own = await openSafetensors(folder);
    const hfConfig = JSON.parse(fs.readFileSync(path.join(folder, 'config.json'), 'utf8')) as Record<string, unknown>;
    expect(fromGguf.sort()).toEqual([...GGUF_FAMILIES[family]].sort()); // nothing else is missing from either side
    for (const name of own.tensorNames()) {
      expect(gguf.checkpoint.has(name), name).toBe(true);
      const [want, got] = [await own.readTensor(name), await gguf.checkpoint.readTensor(name)];
      expect([name, got.dtype, got.shape]).toEqual([name, want.dtype, want.shape]);
      const [a, b] = [toFloat32(want), toFloat32(got)];
      const fold = family === 'falcon_h1' ? falconH1Folded(hfConfig, name, want.shape[0]!) : undefined;
      let worst = 0;
      if (fold) {
        // the file holds f16(w * m), the folder f16(w): within two f16 roundings, 2^-10 relative (+ subnormals)
        const row = a.length / fold.length;
        for (let i = 0; i < a.length; i++) {
          const scaled = a[i]! * fold[Math.floor(i / row)]!;
          worst = Math.max(worst, Math.abs(b[i]! - scaled) / (2 ** -10 * Math.abs(scaled) + 2 ** -23));
        }
        expect([name, worst <= 1]).toEqual([name, true]);
        continue;
      }
      for (let i = 0; i < a.length; i++) worst = Math.max(worst, Math.abs(a[i]! - b[i]!));
      // A_log round-trips through -exp in f32, Qwen3-Next's norms through + 1 and - 1: exact on these files (measured)
      expect([name, worst]).toEqual([name, 0]);
    }
  });

  test('the config rebuilt from the metadata is the folder config', async () => {
    const { gguf, folder } = await openGgufReference(family);
    const fromGguf = parseConfig(gguf.config, `${family}.gguf`) as unknown as Record<string, unknown>;
    const fromFolder = (await loadConfig(folder)) as unknown as Record<string, unknown>;
    // what the file records otherwise: the tokenizer's bos/eos ids (the folder configs say 1/2 or 0/0, the tokenizer
    // 0/0), and the converter's context length where the family has one
    const recorded: Record<string, unknown> = { raw: undefined, bosTokenId: fromGguf.bosTokenId, eosTokenIds: fromGguf.eosTokenIds, padTokenId: fromGguf.padTokenId };
    if (fromFolder.attention) recorded.attention = { ...(fromFolder.attention as object), maxPositionEmbeddings: (fromGguf.attention as { maxPositionEmbeddings: number }).maxPositionEmbeddings };
    // Falcon-H1's file records no multiplier (folded into the weights: 1 here), chunk length or norm order (64 and
    // llama.cpp's norm after the gate; without mamba_rms_norm the order is moot)
    if (family === 'falcon_h1') {
      recorded.multipliers = { embedding: 1, lmHead: 1, attentionIn: 1, attentionOut: 1, key: 1, ssmIn: 1, ssmOut: 1, ssm: [1, 1, 1, 1, 1], mlpGate: 1, mlpDown: 1 };
      recorded.mamba = { ...(fromFolder.mamba as object), chunkSize: 64, normBeforeGate: false };
    }
    expect({ ...fromGguf, raw: undefined }).toEqual({ ...fromFolder, ...recorded });
  });
});

test('a Mamba-2 Q4_0 GGUF (llama-quantize) serves Q4_0 / Q8_0 blocks of the same weights, within their rounding', async () => {
  const { gguf } = await openGgufReference('mamba2', 'mamba2-gguf-q4_0-quantize.gguf');
  const f16 = (await openGgufReference('mamba2')).gguf.checkpoint;
  const errors: Record<string, string> = {};
  for (const name of gguf.checkpoint.tensorNames()) {
    const { dtype } = gguf.checkpoint.info(name);
    if (dtype !== 'Q4_0' && dtype !== 'Q8_0') continue;
    const [q, r] = [await hostValues(gguf.checkpoint, name), await hostValues(f16, name)];
    let [e, s] = [0, 0];
    for (let i = 0; i < q.length; i++) [e, s] = [e + (q[i]! - r[i]!) ** 2, s + r[i]! ** 2];
    errors[name] = `${dtype} ${Math.sqrt(e / s).toFixed(2)}`;
  }
  // relative rms error: 0.5% (Q8_0) and 6-9% (Q4_0) measured; a misplaced row or block would be ~140%
  expect(errors).toEqual({
    'backbone.embeddings.weight': 'Q8_0 0.01',
    'backbone.layers.0.mixer.in_proj.weight': 'Q4_0 0.09',
    'backbone.layers.0.mixer.out_proj.weight': 'Q4_0 0.06',
    'backbone.layers.1.mixer.in_proj.weight': 'Q4_0 0.09',
    'backbone.layers.1.mixer.out_proj.weight': 'Q4_0 0.07',
  });
});

test("Gemma 3n's activation sparsity comes back from the converter's std multiplier Φ⁻¹(s)", () => {
  expect(sparsityFromStdMultiplier(-Infinity)).toBe(0); // Φ⁻¹(0), what the fixture holds
  // torch's f32 Normal(0, 1).icdf(0.95), one ulp above Strata's own f32 multiplier of 0.95
  expect(sparsityFromStdMultiplier(Math.fround(1.6448536269514722))).toBe(0.95);
  for (const s of [0.01, 0.5, 0.75, 0.95, 0.99]) expect(sparsityFromStdMultiplier(sparsityStdMultiplier(s))).toBe(s);
  expect(() => sparsityFromStdMultiplier(Number.NaN)).toThrow(GgufError);
});

test('RoPE scaling: linear is mapped, the types the converter records only in part are refused by name', async () => {
  const { metadata } = await gguf(path.join(GGUF_FIXTURES, 'lfm2-gguf-f16.gguf'), { allowLocalFile: true });
  const config = (type: string) => {
    const meta = { ...metadata, 'lfm2.rope.scaling.type': type, 'lfm2.rope.scaling.factor': 4 } as Meta;
    return GGUF_LAYOUTS.lfm2!.config(meta, 'lfm2', () => false, 2048, () => undefined);
  };
  expect(config('linear').rope_parameters).toEqual({ rope_theta: 1e6, rope_type: 'linear', factor: 4 });
  expect(() => config('yarn')).toThrow(new GgufError('GGUF lfm2: rope.scaling.type "yarn" is not mapped (none, linear)'));
});

test("Qwen3-Next's norms, stored as w + 1, come back as weights whose 1 + w is the stored value (the fixture's are 0)", async () => {
  const file = path.join(GGUF_FIXTURES, 'qwen3_next-gguf-f16.gguf');
  const parsed = await gguf(file, { allowLocalFile: true });
  const info = parsed.tensorInfos.find((t) => t.name === 'output_norm.weight')!;
  const bytes = fs.readFileSync(file);
  // random w + 1 the converter could have written, over [0.5, 2) and its edges
  const stored = Float32Array.from({ length: Number(info.shape[0]) }, (_, i) => Math.fround(1 + (i === 0 ? -0.5 : i === 1 ? 0.9999999 : Math.sin(i * 12.9898) * 0.49)));
  bytes.set(new Uint8Array(stored.buffer), Number(parsed.tensorDataOffset) + Number(info.offset));
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'strata-gguf-norm-'));
  try {
    fs.writeFileSync(path.join(dir, 'shifted.gguf'), bytes);
    const w = await hostValues((await openGguf(path.join(dir, 'shifted.gguf'))).checkpoint, 'model.norm.weight');
    expect(Array.from(w, (x) => Math.fround(1 + x))).toEqual(Array.from(stored));
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
});
