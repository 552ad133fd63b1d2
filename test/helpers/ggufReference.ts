// The safetensors side of a GGUF parity test (test/fixtures/gguf/README.md): a reference folder written by
// scripts/gguf-reference-folder.ts, which leaves out the token embedding / LM head to keep the fixtures small;
// those few tensors (a plain rename in every GGUF layout) are served from the GGUF itself.
import * as path from 'node:path';
import { type TensorSource, openSafetensors, toFloat32 } from '../../base/safetensors.ts';
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

export async function openGgufReference(family: GgufFamily, file = `${family}-gguf-f16.gguf`): Promise<GgufReference> {
  const gguf = await openGguf(path.join(GGUF_FIXTURES, file));
  const folder = path.join(GGUF_FIXTURES, `${family}-gguf`);
  const own = await openSafetensors(folder);
  const fromGguf = gguf.checkpoint.tensorNames().filter((n) => !own.has(n));
  const pick = (name: string) => (own.has(name) ? own : gguf.checkpoint);
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
