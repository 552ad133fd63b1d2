// `strata inspect <model-dir> --memory`: the memory plan a session of this model allocates (per layer its
// kind, KV and state shapes and bytes, and the total), from config.json alone: no GPU, no weights read.
import type { Command } from 'commander';
import * as path from 'node:path';
import { z } from 'zod';
import { type KvPolicy, type MemoryOptions, type MemoryReport, memoryReport, withKvPolicies } from '../caches/spec.ts';
import { ConfigError, loadConfig } from '../models/config.ts';
import { buildModel } from '../models/registry.ts';
import { kernelSchedule } from './kernelSchedule.ts';
import { type WeightPlan, weightPlan } from './weightPlan.ts';

const positiveInt = (flag: string) =>
  z
    .string()
    .regex(/^\d+$/, `${flag} must be a positive integer`)
    .transform(Number)
    .refine((n) => n >= 1, `${flag} must be a positive integer`);

const optionsSchema = z.object({
  memory: z.boolean().optional(),
  json: z.boolean().optional(),
  slots: positiveInt('--slots').default(1),
  capacity: positiveInt('--capacity').optional(),
  maxChunk: positiveInt('--max-chunk').default(16),
  window: positiveInt('--window').optional(),
  snapshots: z.string().regex(/^\d+$/, '--snapshots must be a non-negative integer').transform(Number).default(0),
  kvPolicy: z.string().optional(),
});

/** `--kv-policy`: dense, window:N, lastRecent:SINKS+RECENT or h2o:RECENT+HEAVY (every attention layer). */
export function parseKvPolicy(text: string): KvPolicy {
  const usage = `--kv-policy must be dense, window:N, lastRecent:SINKS+RECENT or h2o:RECENT+HEAVY, got '${text.slice(0, 40)}'`;
  const m = /^(dense|window|lastRecent|h2o)(?::(\d+)(?:\+(\d+))?)?$/.exec(text);
  if (!m) throw new ConfigError(usage);
  const [, kind, a, b] = m;
  if (kind === 'dense' && a === undefined) return { kind: 'dense' };
  if (kind === 'window' && a !== undefined && b === undefined) return { kind: 'window', window: Number(a) };
  if (kind === 'lastRecent' && a !== undefined && b !== undefined) return { kind: 'lastRecent', sinks: Number(a), recent: Number(b) };
  if (kind === 'h2o' && a !== undefined && b !== undefined) return { kind: 'h2o', recent: Number(a), heavy: Number(b) };
  throw new ConfigError(usage);
}

/** Default capacity: the model's trained context, at most 4096 positions. */
const DEFAULT_CAPACITY = 4096;

export interface MemoryPlan extends MemoryReport {
  family: string;
  /** The checkpoint the config implies, in bf16, and its pieces under a 128 MiB binding limit. */
  weights: WeightPlan;
  slots: number;
  capacity: number;
  maxChunk: number;
  window: number | null;
  snapshotsPerSlot: number;
}

export async function memoryPlan(dir: string, raw: Record<string, unknown>): Promise<MemoryPlan> {
  const parsed = optionsSchema.safeParse(raw);
  if (!parsed.success) throw new ConfigError(parsed.error.issues.map((i) => i.message).join('; '));
  const o = parsed.data;
  const config = await loadConfig(dir);
  const model = buildModel(config);
  const trained = (config as { attention?: { maxPositionEmbeddings?: number } }).attention?.maxPositionEmbeddings;
  const capacity = o.capacity ?? Math.min(DEFAULT_CAPACITY, trained ?? DEFAULT_CAPACITY);
  const options: MemoryOptions = { slots: o.slots, capacity, maxChunk: o.maxChunk, ...(o.window !== undefined ? { window: o.window } : {}) };
  let spec = model.memory();
  try {
    spec = withKvPolicies(spec, o.kvPolicy === undefined ? undefined : parseKvPolicy(o.kvPolicy));
  } catch (error) {
    if (error instanceof RangeError) throw new ConfigError(error.message);
    throw error;
  }
  const report = memoryReport(spec, options, { perSlot: o.snapshots });
  return { family: model.family, weights: weightPlan(model), slots: o.slots, capacity, maxChunk: o.maxChunk, window: o.window ?? null, snapshotsPerSlot: o.snapshots, ...report };
}

function human(bytes: number): string {
  if (bytes >= 1 << 30) return `${(bytes / (1 << 30)).toFixed(2)} GiB`;
  if (bytes >= 1 << 20) return `${(bytes / (1 << 20)).toFixed(2)} MiB`;
  if (bytes >= 1 << 10) return `${(bytes / (1 << 10)).toFixed(1)} KiB`;
  return `${bytes} B`;
}

export function formatMemoryPlan(plan: MemoryPlan): string {
  const shape = (s: number[]) => `[${s.join(',')}]`;
  const rows = plan.layers.map((l) => [
    String(l.layer),
    l.kind,
    l.kvShape ? shape(l.kvShape) + (l.policy ? ` ${l.policy}` : l.window !== undefined ? ` ring, window ${l.window}` : '') : l.sharesKvWith !== null ? `reads layer ${l.sharesKvWith}` : '-',
    Object.entries(l.stateShapes).map(([n, s]) => `${n} ${shape(s)}`).join(' ') || '-',
    String(l.kvBytes),
    String(l.stateBytes),
    ...(plan.snapshotsPerSlot ? [String(l.snapshotBytes)] : []),
  ]);
  const head = ['layer', 'kind', 'KV [slots,entries,kvHeads,k+v dims]', 'state [slots,...]', 'KV bytes', 'state bytes', ...(plan.snapshotsPerSlot ? ['snapshot bytes'] : [])];
  const all = [head, ...rows];
  // a loop, not Math.max(...column): spreading one argument per layer overflows the stack on deep models
  const widths = head.map((_, c) => all.reduce((widest, r) => Math.max(widest, r[c]!.length), 0));
  const numeric = (c: number) => c >= 4;
  const line = (r: string[]) => r.map((cell, c) => (numeric(c) ? cell.padStart(widths[c]!) : cell.padEnd(widths[c]!))).join('  ').trimEnd();
  const window = plan.window !== null ? `, windows shrunk to ${plan.window}` : '';
  return [
    `${plan.family}: ${plan.layers.length} layers; ${plan.slots} slot(s) x ${plan.capacity} positions, prefill chunks up to ${plan.maxChunk}${window}`,
    '',
    ...all.map(line),
    '',
    `KV           ${plan.kvBytes.toString().padStart(12)}  ${human(plan.kvBytes)}`,
    `state        ${plan.stateBytes.toString().padStart(12)}  ${human(plan.stateBytes)}`,
    `snapshots    ${plan.snapshotBytes.toString().padStart(12)}  ${human(plan.snapshotBytes)} (${plan.snapshotsPerSlot} per slot)`,
    `positions    ${plan.bookkeepingBytes.toString().padStart(12)}  ${human(plan.bookkeepingBytes)}`,
    `zero+scratch ${plan.scratchBytes.toString().padStart(12)}  ${human(plan.scratchBytes)}`,
    `total        ${plan.totalBytes.toString().padStart(12)}  ${human(plan.totalBytes)}`,
    '',
    `weights      ${plan.weights.bytes.toString().padStart(12)}  ${human(plan.weights.bytes)} (${plan.weights.tensors} tensors as ${plan.weights.storage})`,
    `largest      ${plan.weights.largest.bytes.toString().padStart(12)}  ${human(plan.weights.largest.bytes)} '${plan.weights.largest.name}' [${plan.weights.largest.shape.join(',')}]`,
    ...plan.weights.split.map((s) => `split        ${s.bytes.toString().padStart(12)}  '${s.name}' into ${s.pieces} pieces under the ${human(plan.weights.bindingLimit)} binding limit`),
  ].join('\n');
}

export function register(program: Command): void {
  program
    .command('inspect')
    .description('Show what a model would allocate: with --memory, its per-layer memory plan (KV, recurrent state, snapshots)')
    .argument('<model-dir>', 'folder with config.json')
    .option('--memory', 'print the memory plan')
    .option('--slots <n>', 'concurrent sequences', '1')
    .option('--capacity <n>', `positions per sequence (default: the trained context, at most ${DEFAULT_CAPACITY})`)
    .option('--max-chunk <n>', 'longest prefill chunk (sizes sliding-window rings)', '16')
    .option('--window <n>', 'shrink every sliding window to this many positions')
    .option('--snapshots <n>', 'snapshot planes per slot', '0')
    .option('--kv-policy <policy>', 'what attention layers keep: dense, window:N, lastRecent:SINKS+RECENT, h2o:RECENT+HEAVY (with --memory or --kernels)')
    .option('--json', 'print the plan as one JSON object')
    .option('--kernels', 'print the compiled kernel schedule of a bucket (--rows, --tokens; no GPU needed)')
    .option('--rows <n>', 'sequences per step of the bucket (with --kernels)', '1')
    .option('--tokens <n>', 'tokens per sequence of the bucket (with --kernels)', '1')
    .option('--subgroups', 'schedule for an adapter with subgroups (with --kernels)')
    .option('--attention-projection', 'decode attention computes its q/k/v rows itself, as GPUs do by default (STRATA_ATTN_PROJECTION=1; with --kernels)')
    .option('--ssd-projection', 'the Mamba-2 decode step computes its in_proj rows itself, as STRATA_SSD_PROJECTION=1 (with --kernels)')
    .option('--mlp-fusion', 'each dense gated MLP of a one-row decode step is one kernel, as GPUs do by default (STRATA_MLP_FUSION=1; with --kernels)')
    .option('--storage-buffers <n>', 'storage buffers per shader stage the adapter allows (with --kernels)', '8')
    .option('--subgroup-matrix', "schedule for an adapter with 16x16x16 f16 subgroup matrices on subgroups of 32 and 48 KiB of workgroup memory, as Dawn's on an H200: batched decode rows on tiles too (with --kernels)")
    .action(async (dir: string, options: Record<string, unknown>) => {
      if (options.kernels) {
        const int = (flag: string, v: unknown) => {
          const n = Number(v);
          if (!Number.isInteger(n) || n < 1) throw new ConfigError(`${flag} must be a positive integer, got '${String(v)}'`);
          return n;
        };
        const rows = int('--rows', options.rows);
        const tokens = int('--tokens', options.tokens);
        const capacity = options.capacity === undefined ? 256 : int('--capacity', options.capacity);
        const limits = { subgroups: options.subgroups === true, maxStorageBuffersPerShaderStage: int('--storage-buffers', options.storageBuffers), attentionProjection: options.attentionProjection === true, ssdProjection: options.ssdProjection === true, mlpFusion: options.mlpFusion === true, ...(options.subgroupMatrix === true ? { subgroupMatrix: { m: 16, n: 16, k: 16, size: 32 }, tiledRows: 2, maxComputeWorkgroupStorageSize: 48 << 10 } : {}) };
        const kvPolicy = typeof options.kvPolicy === 'string' ? parseKvPolicy(options.kvPolicy) : undefined;
        console.log(await kernelSchedule(path.resolve(dir), { rows, tokens, capacity, limits, ...(kvPolicy ? { kvPolicy } : {}) }));
        return;
      }
      if (!options.memory) {
        const config = await loadConfig(path.resolve(dir));
        const model = buildModel(config);
        console.log(`${model.family}: ${model.memory().length} layers, hidden ${model.hiddenSize}, vocab ${model.vocabSize}. Use --memory for the memory plan.`);
        return;
      }
      const plan = await memoryPlan(path.resolve(dir), options);
      console.log(options.json ? JSON.stringify(plan, null, 2) : formatMemoryPlan(plan));
    });
}
