// The weights a config implies, as a checkpoint of one storage type would hold them: total bytes, the largest
// tensor, and which tensors the compiler splits into pieces under a binding limit (compiler/passes/splitWeights).
import type { StorageDType } from '../compiler/ir.ts';
import { planPieces } from '../compiler/passes/splitWeights.ts';
import type { ModelDef } from '../models/model.ts';
import { declaredWeights } from '../runtime/randomWeights.ts';

/** Browsers' and lavapipe's maxStorageBufferBindingSize. */
export const BROWSER_BINDING_LIMIT = 128 << 20;

export interface WeightPlan {
  storage: StorageDType;
  bindingLimit: number;
  tensors: number;
  bytes: number;
  largest: { name: string; shape: number[]; bytes: number };
  split: { name: string; shape: number[]; bytes: number; pieces: number }[];
}

export function weightPlan(model: ModelDef, storage: StorageDType = 'bf16', bindingLimit = BROWSER_BINDING_LIMIT): WeightPlan {
  const elementBytes = storage === 'f32' ? 4 : 2;
  let bytes = 0;
  let largest = { name: '', shape: [] as number[], bytes: 0 };
  const split: WeightPlan['split'] = [];
  const shapes = declaredWeights(model);
  for (const [name, shape] of shapes) {
    const size = shape.reduce((a, b) => a * b, 1) * elementBytes;
    bytes += size;
    if (size > largest.bytes) largest = { name, shape, bytes: size };
    if (size > bindingLimit) split.push({ name, shape, bytes: size, pieces: planPieces(name, shape, storage, bindingLimit).length });
  }
  return { storage, bindingLimit, tensors: shapes.size, bytes, largest, split };
}
