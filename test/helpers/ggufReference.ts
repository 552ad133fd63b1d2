// The safetensors side of a GGUF parity test (test/fixtures/gguf/README.md): a reference folder written by
// scripts/gguf-reference-folder.ts, which leaves out the token embedding / LM head to keep the fixtures small;
// those few tensors (a plain rename in every GGUF layout) are served from the GGUF itself (Falcon-H1's divided by
// the multipliers its converter folded into them).
import * as fs from 'node:fs';
import * as path from 'node:path';
import { type TensorSource, openSafetensors } from '../../base/safetensors.ts';
import { toFloat32 } from '../../base/tensorValues.ts';
import { type GgufModel, openGguf } from '../../runtime/gguf.ts';
import { GGML_BLOCKS, dequantize, isGgmlBlockDtype, repackGgml } from '../../runtime/quantize.ts';

export const GGUF_FIXTURES = path.resolve(import.meta.dirname, '../fixtures/gguf');

/** The families with a reference folder `<name>-gguf/` beside `<name>-gguf-f16.gguf`, and what each leaves out. */
export const GGUF_FAMILIES = {
  granite: ['model.embed_tokens.weight'],
  jamba: ['model.embed_tokens.weight', 'lm_head.weight'],
  mamba: ['backbone.embeddings.weight'],
  mamba2: ['backbone.embeddings.weight'],
  lfm2: ['model.embed_tokens.weight'],
  // also layers 1-3's MLP (the same renames are checked at layers 0, 4 and 5): keeps the fixtures under 2.5 MB
  gemma3n: ['model.embed_tokens.weight', 'model.embed_tokens_per_layer.weight', ...[1, 2, 3].flatMap((l) => ['gate', 'up', 'down'].map((p) => `model.layers.${l}.mlp.${p}_proj.weight`))],
  // also layers 1-2's projections (checked at layer 0); the folded ones are served divided by their multipliers
  falcon_h1: ['model.embed_tokens.weight', 'lm_head.weight', ...[1, 2].flatMap((l) => [...['gate', 'up', 'down'].map((p) => `feed_forward.${p}_proj`), 'mamba.in_proj', 'mamba.out_proj', ...['q', 'k', 'v', 'o'].map((p) => `self_attn.${p}_proj`)].map((n) => `model.layers.${l}.${n}.weight`))],
  // also layers 1-2's projections and layer 3's MoE (checked at layer 0)
  qwen3_next: ['model.embed_tokens.weight', 'lm_head.weight', ...[1, 2].flatMap((l) => ['in_proj_qkvz', 'in_proj_ba', 'out_proj'].map((p) => `model.layers.${l}.linear_attn.${p}.weight`)), ...[1, 2, 3].flatMap((l) => [...[0, 1, 2, 3].flatMap((e) => ['gate', 'up', 'down'].map((p) => `experts.${e}.${p}_proj`)), ...['gate', 'up', 'down'].map((p) => `shared_expert.${p}_proj`)].map((n) => `model.layers.${l}.mlp.${n}.weight`))],
} as const satisfies Record<string, readonly string[]>;
export type GgufFamily = keyof typeof GGUF_FAMILIES;

export interface GgufReference {
  gguf: GgufModel;
  folder: string;
  /** The folder's tensors, with the left-out ones taken from the GGUF. */
  checkpoint: TensorSource;
  /** The names the folder does not hold (taken from the GGUF). */
  fromGguf: string[];
}

/**
 * What FalconH1Model.modify_tensors multiplied an HF tensor by, per row (biases alike), from the HF config; undefined
 * for the tensors it keeps. The same substring tests in the same order as the converter.
 */
export function falconH1Folded(config: Record<string, unknown>, name: string, rows: number): Float32Array | undefined {
  const c = config as Record<string, number> & { mlp_multipliers: [number, number]; ssm_multipliers: number[] };
  const m = (name.includes('down_proj') ? c.mlp_multipliers[1]
    : name.includes('gate_proj') ? c.mlp_multipliers[0]
    : name.includes('k_proj') ? c.key_multiplier * c.attention_in_multiplier
    : name.includes('q_proj') || name.includes('v_proj') ? c.attention_in_multiplier
    : name.includes('o_proj') ? c.attention_out_multiplier
    : name.includes('out_proj') ? c.ssm_out_multiplier
    : name.includes('in_proj') ? c.ssm_in_multiplier
    : name.includes('lm_head') ? c.lm_head_multiplier
    : name.includes('embed_tokens') ? c.embedding_multiplier
    : undefined);
  if (m === undefined) return undefined;
  const out = new Float32Array(rows).fill(m);
  if (name.includes('in_proj') && !name.includes('out_proj')) {
    // in_proj's [z (I), x (I), B (G N), C (G N), dt] rows, each segment times its ssm_multipliers entry
    const [inner, groupState] = [c.mamba_d_ssm, c.mamba_n_groups * c.mamba_d_state];
    const ends = [inner, 2 * inner, 2 * inner + groupState, 2 * inner + 2 * groupState, rows];
    for (let r = 0; r < rows; r++) out[r] = m * c.ssm_multipliers[ends.findIndex((end) => r < end)]!;
  }
  return out;
}

/** A TensorSource whose named tensors are served as F32 divided, row by row, by what the converter multiplied them by. */
function unfolded(source: TensorSource, folds: (name: string, rows: number) => Float32Array | undefined): TensorSource {
  return {
    ...source,
    tensorNames: () => source.tensorNames(),
    has: (name) => source.has(name),
    info: (name) => (folds(name, source.info(name).shape[0]!) ? { ...source.info(name), dtype: 'F32' } : source.info(name)),
    readTensor: async (name) => {
      const shape = source.info(name).shape;
      const fold = folds(name, shape[0]!);
      if (!fold) return source.readTensor(name);
      const values = await hostValues(source, name);
      const row = values.length / shape[0]!;
      for (let i = 0; i < values.length; i++) values[i] = values[i]! / fold[Math.floor(i / row)]!;
      return { dtype: 'F32', shape, bytes: new Uint8Array(values.buffer) };
    },
    close: () => source.close(),
  };
}

export async function openGgufReference(family: GgufFamily, file = `${family}-gguf-f16.gguf`): Promise<GgufReference> {
  const gguf = await openGguf(path.join(GGUF_FIXTURES, file));
  const folder = path.join(GGUF_FIXTURES, `${family}-gguf`);
  const own = await openSafetensors(folder);
  const fromGguf = gguf.checkpoint.tensorNames().filter((n) => !own.has(n));
  // Falcon-H1's multipliers are folded into the GGUF's weights: the folder's config applies them again
  const hfConfig = JSON.parse(fs.readFileSync(path.join(folder, 'config.json'), 'utf8')) as Record<string, unknown>;
  const taken = family === 'falcon_h1' ? unfolded(gguf.checkpoint, (name, rows) => falconH1Folded(hfConfig, name, rows)) : gguf.checkpoint;
  const pick = (name: string) => (own.has(name) ? own : taken);
  const checkpoint: TensorSource = {
    metadata: own.metadata,
    tensorNames: () => [...own.tensorNames(), ...fromGguf],
    has: (name) => own.has(name) || fromGguf.includes(name),
    info: (name) => pick(name).info(name),
    readTensor: (name) => pick(name).readTensor(name),
    close: () => own.close(),
  };
  return { gguf, folder, checkpoint, fromGguf };
}

/** Host values of a served tensor: GGML blocks decoded as the device decodes them (runtime/quantize.ts). */
export async function hostValues(source: TensorSource, name: string): Promise<Float32Array<ArrayBuffer>> {
  const t = await source.readTensor(name);
  const count = t.shape.reduce((a, b) => a * b, 1);
  if (isGgmlBlockDtype(t.dtype)) return Float32Array.from(dequantize(repackGgml(t.dtype, t.bytes, count), count, GGML_BLOCKS[t.dtype].storage));
  return Float32Array.from(toFloat32(t, name));
}

/** `source` with its quantized tensors decoded on the host and served as F32: the same values, other kernels. */
export function dequantizedSource(source: TensorSource): TensorSource {
  return {
    metadata: source.metadata,
    tensorNames: () => source.tensorNames(),
    has: (name) => source.has(name),
    info: (name) => ({ ...source.info(name), dtype: 'F32' }),
    readTensor: async (name) => {
      const values = await hostValues(source, name);
      return { dtype: 'F32', shape: source.info(name).shape, bytes: new Uint8Array(values.buffer) };
    },
    close: () => source.close(),
  };
}
