// `strata inspect <model-dir> --kernels`: the compiled schedule of a bucket (one line a dispatch: template, grid,
// bytes, fused ops), from config.json and the checkpoint's header alone: traced and compiled, no GPU.
import { existsSync } from 'node:fs';
import * as path from 'node:path';
import { type DeviceLimits, compile } from '../compiler/compile.ts';
import type { StorageDType } from '../compiler/ir.ts';
import { type Program, printSchedule } from '../compiler/program.ts';
import { StepContext } from '../caches/stepContext.ts';
import { iota, output, trace } from '../dsl/trace.ts';
import { loadConfig } from '../models/config.ts';
import type { ModelDef } from '../models/model.ts';
import { buildModel } from '../models/registry.ts';
import { openSafetensors } from '../base/safetensors.ts';

export interface ScheduleOptions {
  rows: number;
  tokens: number;
  capacity: number;
  /** Limits to schedule against: the adapter's differ (subgroups, storage buffers per stage). */
  limits: Partial<DeviceLimits>;
}

/** The Program of one bucket of a model, as ModelRunner compiles it (logits of each row's last token). */
export function compileBucket(model: ModelDef, storage: (name: string) => StorageDType | undefined, o: ScheduleOptions): Program {
  const memory = { slots: o.rows, capacity: o.capacity, maxChunk: o.tokens };
  const graph = trace(() => {
    const ctx = new StepContext(model.memory(), memory, o.rows, o.tokens, { storage });
    const hidden = model.forward(ctx).reshape(o.rows * o.tokens, model.hiddenSize);
    const lastRow = ctx.valid.sub(1).add(iota([o.rows], 0, 'i32').mul(o.tokens));
    output('logits', model.logits(ctx, hidden.gather(lastRow)));
    ctx.finish();
  });
  return compile(graph, { limits: o.limits, bucket: { rows: o.rows, tokens: o.tokens } });
}

export async function kernelSchedule(dir: string, o: ScheduleOptions): Promise<string> {
  const model = buildModel(await loadConfig(dir));
  const dtypes = new Map<string, StorageDType>();
  if (existsSync(path.join(dir, 'model.safetensors')) || existsSync(path.join(dir, 'model.safetensors.index.json'))) {
    const checkpoint = await openSafetensors(dir);
    try {
      for (const name of checkpoint.tensorNames()) {
        const dt = checkpoint.info(name).dtype;
        dtypes.set(name, dt === 'F16' ? 'f16' : dt === 'BF16' ? 'bf16' : 'f32');
      }
    } finally {
      await checkpoint.close();
    }
  }
  return printSchedule(compileBucket(model, (name) => dtypes.get(name), o));
}
