// `strata inspect <model-dir> --kernels`: the kernel plan of a bucket (the rules that gave nodes buffers, then one
// line a kernel: template, grid, what it inlines and reads) and its compiled schedule (one line a dispatch:
// template, grid, bytes, fused ops), from config.json and the checkpoint's header alone: traced and compiled, no GPU.
import { existsSync } from 'node:fs';
import * as path from 'node:path';
import { type DeviceLimits, compile, compileWithPlan } from '../compiler/compile.ts';
import { printKernelPlan } from '../compiler/passes/planKernels.ts';
import type { Graph, StorageDType } from '../compiler/ir.ts';
import { type Program, printSchedule } from '../compiler/program.ts';
import { StepContext } from '../caches/stepContext.ts';
import { type KvPolicySetting, withKvPolicies } from '../caches/spec.ts';
import { iota, output, trace } from '../dsl/trace.ts';
import { loadConfig } from '../models/config.ts';
import type { ModelDef } from '../models/model.ts';
import { buildModel } from '../models/registry.ts';
import { openSafetensors } from '../base/safetensors.ts';
import { hfQuantization, hfQuantizedSource } from '../runtime/hfQuantized.ts';
import { GGML_BLOCKS, isGgmlBlockDtype } from '../runtime/quantize.ts';

export interface ScheduleOptions {
  rows: number;
  tokens: number;
  capacity: number;
  /** Limits to schedule against: the adapter's differ (subgroups, storage buffers per stage). */
  limits: Partial<DeviceLimits>;
  /** KV policies to apply to the model's memory spec (as Session.load's kvPolicy). */
  kvPolicy?: KvPolicySetting;
}

/** The Program of one bucket of a model, as ModelRunner compiles it (logits of each row's last token). */
export function compileBucket(model: ModelDef, storage: (name: string) => StorageDType | undefined, o: ScheduleOptions): Program {
  return compile(traceBucket(model, storage, o), { limits: o.limits, bucket: { rows: o.rows, tokens: o.tokens } });
}

function traceBucket(model: ModelDef, storage: (name: string) => StorageDType | undefined, o: ScheduleOptions): Graph {
  const memory = { slots: o.rows, capacity: o.capacity, maxChunk: o.tokens };
  return trace(() => {
    const ctx = new StepContext(withKvPolicies(model.memory(), o.kvPolicy), memory, o.rows, o.tokens, { storage }, {}, { decodeSplits: o.limits.decodeSplits ?? false });
    const hidden = model.forward(ctx).reshape(o.rows * o.tokens, model.hiddenSize);
    const lastRow = ctx.valid.sub(1).add(iota([o.rows], 0, 'i32').mul(o.tokens));
    output('logits', model.logits(ctx, hidden.gather(lastRow)));
    ctx.finish();
  });
}

export async function kernelSchedule(dir: string, o: ScheduleOptions): Promise<string> {
  const config = await loadConfig(dir);
  const model = buildModel(config);
  const dtypes = new Map<string, StorageDType>();
  if (existsSync(path.join(dir, 'model.safetensors')) || existsSync(path.join(dir, 'model.safetensors.index.json'))) {
    // GPTQ/AWQ layers as the session sees them (q4)
    const checkpoint = hfQuantizedSource(await openSafetensors(dir), hfQuantization(config.raw, path.join(dir, 'config.json')));
    try {
      for (const name of checkpoint.tensorNames()) {
        const dt = checkpoint.info(name).dtype;
        dtypes.set(name, isGgmlBlockDtype(dt) ? GGML_BLOCKS[dt].storage : dt === 'F16' ? 'f16' : dt === 'BF16' ? 'bf16' : 'f32');
      }
    } finally {
      await checkpoint.close();
    }
  }
  const storage = (name: string) => dtypes.get(name);
  const { program, plan, steps } = compileWithPlan(traceBucket(model, storage, o), { limits: o.limits, bucket: { rows: o.rows, tokens: o.tokens } });
  return `${printKernelPlan(plan, steps)}\n${printSchedule(program)}`;
}
