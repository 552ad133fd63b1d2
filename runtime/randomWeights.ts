// A checkpoint made in memory with random values for every weight a model declares: for examples, benchmarks
// and models defined in code. Values are uniform in [-scale, scale]; norms and A_log-like tensors need no care
// for speed figures, and the example only shows that a new architecture compiles and runs.
import type { StorageDType } from '../compiler/ir.ts';
import { trace } from '../dsl/trace.ts';
import { StepContext } from '../caches/stepContext.ts';
import type { MemoryOptions } from '../caches/spec.ts';
import type { ModelDef } from '../models/model.ts';
import { type TensorData, type TensorInfo, type TensorSource } from '../base/safetensors.ts';
import { f32ToBf16Bits, f32ToF16Bits } from '../base/tensorValues.ts';

/** Every checkpoint tensor a model reads, with its shape (computed constants left out). */
export function declaredWeights(model: ModelDef): Map<string, number[]> {
  const memory: MemoryOptions = { slots: 1, capacity: 8, maxChunk: 1 };
  const constants = model.constants();
  // one traced decode step declares every weight the model reads
  const graph = trace(() => {
    const ctx = new StepContext(model.memory(), memory, 1, 1, { storage: () => 'f32' });
    model.logits(ctx, model.forward(ctx));
  });
  const shapes = new Map<string, number[]>();
  for (const [name, n] of graph.weights) if (!constants[name]) shapes.set(name, [...n.shape]);
  return shapes;
}

export function randomCheckpoint(model: ModelDef, options: { storage?: StorageDType; seed?: number; scale?: number } = {}): TensorSource {
  const storage = options.storage ?? 'f32';
  const shapes = declaredWeights(model);
  const dtype = storage === 'f16' ? 'F16' : storage === 'bf16' ? 'BF16' : 'F32';
  const scale = options.scale ?? 0.05;
  let offset = 0;
  const infos = new Map<string, TensorInfo>();
  for (const [name, shape] of shapes) {
    const count = shape.reduce((a, b) => a * b, 1);
    const byteLength = count * (dtype === 'F32' ? 4 : 2);
    infos.set(name, { name, dtype, shape, byteOffset: offset, byteLength, file: '<random>' });
    offset += byteLength;
  }
  return {
    metadata: { format: 'random' },
    tensorNames: () => [...shapes.keys()],
    has: (name) => shapes.has(name),
    info: (name) => {
      const info = infos.get(name);
      if (!info) throw new Error(`random checkpoint: no tensor '${name}'`);
      return info;
    },
    async readTensor(name): Promise<TensorData> {
      const info = infos.get(name)!;
      const count = info.shape.reduce((a, b) => a * b, 1);
      const bytes = new Uint8Array(info.byteLength);
      // seeded by the tensor's name, so a tensor has the same values whenever and however often it is read
      let seed = tensorSeed(name, options.seed ?? 1);
      const next = () => ((seed = (seed * 1664525 + 1013904223) >>> 0) / 4294967296) * 2 - 1;
      if (dtype === 'F32') {
        const f = new Float32Array(bytes.buffer);
        for (let i = 0; i < count; i++) f[i] = next() * scale;
      } else {
        // real-size checkpoints hold billions of 16-bit values: draw each from a table of 65,536 encoded values
        // spread uniformly over [-scale, scale], two per 32-bit xorshift step, instead of encoding every one
        const enc = dtype === 'F16' ? f32ToF16Bits : f32ToBf16Bits;
        const table = new Uint16Array(65536);
        for (let i = 0; i < 65536; i++) table[i] = enc(((i + 0.5) / 65536) * 2 * scale - scale);
        const h = new Uint16Array(bytes.buffer);
        let state = seed || 1;
        for (let i = 0; i < count; i += 2) {
          state ^= state << 13;
          state ^= state >>> 17;
          state ^= state << 5;
          h[i] = table[state & 0xffff]!;
          if (i + 1 < count) h[i + 1] = table[state >>> 16]!;
        }
      }
      return { dtype: info.dtype, shape: info.shape, bytes };
    },
    close: async () => {},
  };
}

/** FNV-1a of the name, mixed with the checkpoint's seed. */
function tensorSeed(name: string, seed: number): number {
  let hash = 2166136261 ^ seed;
  for (let i = 0; i < name.length; i++) hash = Math.imul(hash ^ name.charCodeAt(i), 16777619);
  return hash >>> 0;
}
