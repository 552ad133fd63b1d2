// `bench profile <model-dir | bench-config> [--rows R] [--tokens T] ...`: compiles one bucket of a model through
// ModelRunner and prints each kernel's GPU time, template, grid, bytes and fraction of the copy roofline, sorted
// by time, with totals per template. A model folder runs its checkpoint; a bench configuration random weights.
import { isQuantized } from '../compiler/quantized.ts';
import { formatAttentionDecode } from '../compiler/lower/attentionDecodeVariants.ts';
import { kernelOptions } from '../caches/stepContext.ts';
import * as fs from 'node:fs';
import type { StorageDType } from '../compiler/ir.ts';
import { loadConfig, parseConfig } from '../models/config.ts';
import type { ModelDef } from '../models/model.ts';
import { buildModel } from '../models/registry.ts';
import { getSharedDevice } from '../runtime/device.ts';
import { GpuRuntime } from '../runtime/gpuRuntime.ts';
import { ModelRunner } from '../runtime/modelRunner.ts';
import { randomCheckpoint } from '../runtime/randomWeights.ts';
import { type TensorSource, openSafetensors } from '../base/safetensors.ts';
import { BENCH_CONFIGS, TINY_BENCH_CONFIG } from './configs.ts';
import { formatKernelProfile } from './kernelProfile.ts';
import { measureKernelProfile } from './measureKernels.ts';
import { copyRoofline, copyRooflineBytes } from './ops.ts';
import { timeGpu } from './timing.ts';

export const PROFILE_USAGE = `usage: bench profile <model-dir | ${[...Object.keys(BENCH_CONFIGS), 'tiny-llama'].join(' | ')}>
  [--rows 1] [--tokens 1]      the bucket: rows (sequences) x tokens per step
  [--context 0]                positions put in the cache first (decode steps run before profiling)
  [--capacity N]               cache positions of each sequence (default: what the context and the runs need;
                               a larger one is what a long-context session compiles at a short context)
  [--storage f16|f32|q8|q4]    weight storage of a bench configuration (random weights; default f16); q8 / q4
                               block-quantize on load (a model folder's weights too)
  [--unfused]                  compile with fusion off
  [--wallclock]                time each kernel alone by wall clock even where timestamp queries work
  [--top 40] [--json FILE]`;

export interface ProfileArgs {
  model: string;
  rows: number;
  tokens: number;
  context: number;
  /** Cache positions per sequence; 0: what the run needs. */
  capacity: number;
  storage: StorageDType;
  fuse: boolean;
  wallclock: boolean;
  top: number;
  json?: string;
}

export function parseProfileArgs(argv: string[]): ProfileArgs {
  const value = (flag: string) => (argv.includes(flag) ? argv[argv.indexOf(flag) + 1] : undefined);
  const count = (flag: string, fallback: number) => {
    const text = value(flag);
    const n = text === undefined ? fallback : Number(text);
    if (!Number.isInteger(n) || n < 0) throw new Error(`[bench profile] ${flag} takes a whole number, got '${text}'\n${PROFILE_USAGE}`);
    return n;
  };
  const valued = new Set(['--rows', '--tokens', '--context', '--capacity', '--storage', '--top', '--json']);
  const model = argv.find((a, i) => !a.startsWith('--') && !valued.has(argv[i - 1] ?? ''));
  if (!model) throw new Error(`[bench profile] no model folder or bench configuration given\n${PROFILE_USAGE}`);
  const storage = value('--storage') ?? 'f16';
  if (storage !== 'f16' && storage !== 'f32' && storage !== 'q8' && storage !== 'q4') throw new Error(`[bench profile] --storage takes f16, f32, q8 or q4, got '${storage}'`);
  const json = value('--json');
  return {
    model,
    rows: Math.max(1, count('--rows', 1)),
    tokens: Math.max(1, count('--tokens', 1)),
    context: count('--context', 0),
    capacity: count('--capacity', 0),
    storage,
    fuse: !argv.includes('--unfused'),
    wallclock: argv.includes('--wallclock'),
    top: count('--top', 40),
    ...(json ? { json } : {}),
  };
}

async function openModel(a: ProfileArgs): Promise<{ model: ModelDef; checkpoint: TensorSource; source: string }> {
  if (fs.existsSync(a.model) && fs.statSync(a.model).isDirectory()) {
    const model = buildModel(await loadConfig(a.model));
    return { model, checkpoint: await openSafetensors(a.model), source: `${a.model} (checkpoint)` };
  }
  const config = a.model === 'tiny-llama' ? TINY_BENCH_CONFIG : BENCH_CONFIGS[a.model];
  if (!config) throw new Error(`[bench profile] '${a.model}' is neither a model folder nor a bench configuration\n${PROFILE_USAGE}`);
  const model = buildModel(parseConfig(config, `${a.model}.json`));
  return { model, checkpoint: randomCheckpoint(model, { storage: isQuantized(a.storage) ? 'f16' : a.storage }), source: `${a.model} (random ${a.storage} weights)` };
}

export async function profileMain(argv: string[]): Promise<void> {
  const a = parseProfileArgs(argv);
  const { model, checkpoint, source } = await openModel(a);
  const strata = await getSharedDevice();
  const rt = new GpuRuntime(strata);
  const software = strata.isFallback ?? false;
  const copyBytesPerSecond = await copyRoofline(rt, copyRooflineBytes(rt, software), software ? 5 : 50);
  const warmRuns = Math.ceil(a.context / a.tokens);
  const timedRuns = software ? 3 : 20;
  // room for the context, the warm-up and timed runs, the profiled runs and some slack
  const capacity = Math.max(a.capacity, a.context + a.tokens * (timedRuns + 16) + 64);
  const runner = new ModelRunner(rt, model, checkpoint, { slots: a.rows, capacity, chunks: [a.tokens], fuse: a.fuse, ...(isQuantized(a.storage) ? { weights: a.storage } : {}) });
  const t0 = performance.now();
  const exe = await runner.program(a.rows, a.tokens, 'last');
  const compileSeconds = (performance.now() - t0) / 1000;
  exe.writeInput('tokens', new Int32Array(a.rows * a.tokens).map((_, i) => 3 + ((i * 7919) % 97)));
  exe.writeInput('slot_ids', new Int32Array(a.rows).map((_, i) => i));
  exe.writeInput('valid', new Int32Array(a.rows).fill(a.tokens));
  const t1 = performance.now();
  exe.run();
  await rt.device.queue.onSubmittedWorkDone();
  const firstRunMs = performance.now() - t1;
  // every measured run starts from the same context: the cache cleared, then the context's runs again
  const atContext = async () => {
    for (let r = 0; r < a.rows; r++) runner.resetSlot(r);
    for (let i = 0; i < warmRuns; i++) exe.run();
    await rt.device.queue.onSubmittedWorkDone();
  };
  await atContext();
  // a decode step moves the context by one position a run (20 runs in one pass); a multi-token step would
  // move it by its tokens, so each of its runs is a submission of its own from the same context
  const multi = a.tokens > 1;
  let programMs = 0;
  if (multi) {
    const runs: number[] = [];
    for (let i = 0; i < timedRuns; i++) {
      await atContext();
      const t = performance.now();
      exe.run();
      await rt.device.queue.onSubmittedWorkDone();
      runs.push(performance.now() - t);
    }
    programMs = runs.sort((x, y) => x - y)[runs.length >> 1]!;
  } else {
    programMs = (await timeGpu(rt, (pass) => exe.encode(pass), timedRuns)) * 1e3;
  }
  const profile = await measureKernelProfile(rt, exe, { copyBytesPerSecond, repeats: 5, aloneIters: software ? 3 : 20, wallclock: a.wallclock, ...(multi ? { beforeRun: atContext } : {}) });
  const adapter = `${strata.adapterInfo.vendor} ${strata.adapterInfo.device || strata.adapterInfo.description}`;
  console.log(`${source}: bucket ${a.rows} rows x ${a.tokens} tokens after ${warmRuns * a.tokens} positions of ${capacity}, ${a.fuse ? 'fused' : 'fusion off'}, on ${adapter}`);
  // the variants environment variables select (runtime/compileLimits.ts)
  console.log(`decode attention ${formatAttentionDecode(rt.limits.attentionDecode)} (STRATA_ATTN_DECODE), tiled ${rt.limits.subgroupMatrix ? `subgroup matrix ${rt.limits.subgroupMatrix.m}x${rt.limits.subgroupMatrix.n}x${rt.limits.subgroupMatrix.k}` : rt.limits.tiledMatmul} (STRATA_SUBGROUP_MATRIX), quantized matvec ${rt.limits.quantMatvec}, one-workgroup fusion ${rt.limits.oneGroupFusion ? 'on' : 'off'} (STRATA_ONE_GROUP_FUSION), attention projection ${rt.limits.attentionProjection === 'batched' ? 'batched buckets' : rt.limits.attentionProjection ? 'on' : 'off'} (STRATA_ATTN_PROJECTION), prefill tiles' left operands ${rt.limits.tiledPlainLeft === 'norms' ? 'norms from buffers' : rt.limits.tiledPlainLeft ? 'from buffers' : 'in prologues'} (STRATA_TILED_PLAIN_LEFT), SSD in_proj projection ${rt.limits.ssdProjection === 'heads' ? 'on, whole heads' : rt.limits.ssdProjection ? 'on' : 'off'} (STRATA_SSD_PROJECTION)${rt.limits.ssdProjection ? ` in workgroups of ${rt.limits.ssdThreads} threads (STRATA_SSD_THREADS)` : ''}`);
  // and the trace-time switches (caches/stepContext.ts kernelOptions)
  console.log(`Mamba-1 decode step ${kernelOptions.fusedSelectiveStep ? 'fused' : 'composed'} (STRATA_SELECTIVE_STEP), prefill scan ${kernelOptions.fusedSelectiveScan ? 'fused' : 'chunked'} (STRATA_SELECTIVE_SCAN), Jamba routing ${kernelOptions.rankRouting ? 'rank columns' : 'topk'} (STRATA_JAMBA_ROUTING), decode attention ${rt.limits.decodeSplits ? `over ${rt.limits.decodeSplits.slices} key slices from ${rt.limits.decodeSplits.from} positions` : 'in one slice'} (STRATA_ATTN_SPLITS)`);
  console.log(`compile + load ${compileSeconds.toFixed(1)} s; first run ${firstRunMs.toFixed(1)} ms; warm run ${programMs.toFixed(3)} ms (${multi ? `median of ${timedRuns} submissions, each from the same context` : `${timedRuns} runs in one submission`}, all kernels in one pass)`);
  console.log(formatKernelProfile(profile, a.top));
  if (a.json) {
    const report = { date: new Date().toISOString(), model: source, rows: a.rows, tokens: a.tokens, context: warmRuns * a.tokens, fused: a.fuse, adapter: strata.adapterInfo, compileSeconds, firstRunMs, programMs, profile };
    fs.writeFileSync(a.json, JSON.stringify(report, null, 2));
  }
}
