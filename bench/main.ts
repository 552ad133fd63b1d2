// The bench run: `npm run bench -- [ops|models|tiled] [--quick] [--json] [--config NAME] [--out FILE]` (entry: bench/cli.ts;
// also `npx strata bench`). Figures, not pass/fail. Every figure comes from this run on this adapter, the roofline included.
import { QUANT_MATVECS, type QuantMatvec, type QuantStorage } from '../compiler/quantized.ts';
import { MATVEC_ROWS_VARIANTS, type MatvecRowsVariant } from '../compiler/lower/matvecRows.ts';
import { execSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import type { StorageDType } from '../compiler/ir.ts';
import type { KvPolicy } from '../caches/spec.ts';
import { getSharedDevice } from '../runtime/device.ts';
import { GpuRuntime } from '../runtime/gpuRuntime.ts';
import { BENCH_CONFIGS, TINY_BENCH_CONFIG } from './configs.ts';
import { type ModelBenchCase, benchModel } from './models.ts';
import { formatKernelProfile } from './kernelProfile.ts';
import { type OpsReport, copyRoofline, copyRooflineBytes, opsBench } from './ops.ts';
import { type TiledRow, formatTiled, tiledBench } from './tiledBench.ts';

export interface BenchArgs {
  /** `tiled`: only the tiled matmul's variants at prefill shapes (bench/tiledBench.ts). */
  what: 'ops' | 'models' | 'all' | 'tiled';
  quick: boolean;
  json: boolean;
  configs?: string[];
  out?: string;
  /** Also bench these block-quantized weight storages (random f16 weights quantized on load). */
  weights?: QuantStorage[];
  /** With `weights`: bench only the quantized storages (a second run on a GPU machine whose time is short). */
  quantizedOnly?: boolean;
  /** Ops: only the quantized matvecs, with these K loops (DeviceLimits.quantMatvec). */
  variants?: QuantMatvec[];
  /** Ops: only the f32 and f16 matvecs at batch 8, the default rows path and these variants (DeviceLimits.matvecRows). */
  rows?: MatvecRowsVariant[];
  /** Exactly these cases (`storage:batch[:unfused|:h2o]`), in place of the default list and `weights`. */
  cases?: BenchCase[];
  /** `models`: measure the copy roofline only, not the ops table (A/B runs of whole models within one device call). */
  noOps?: boolean;
  /** `models`: prompt tokens before the timed decode (default 128): a long one times decode at a long context. */
  prompt?: number;
  log?: (line: string) => void;
}

export interface BenchReport {
  date: string;
  machine: { hostname: string; cpus: string; os: string };
  adapter: Record<string, unknown>;
  commit: string;
  quick: boolean;
  ops?: OpsReport;
  tiled?: TiledRow[];
  models?: ModelBenchCase[];
}

interface BenchCase {
  storage: StorageDType;
  batch: number;
  fused: boolean;
  kvPolicy?: KvPolicy;
}

/** The `:h2o` case's policy: half of a 64-position budget recent, half heavy hitters (as the perplexity table's). */
const H2O_CASE: KvPolicy = { kind: 'h2o', recent: 32, heavy: 32 };

const indent = (text: string) => text.split('\n').map((l) => `    ${l}`).join('\n');

/** The commit a bundle was built from (esbuild --define by bench/device/prepare.sh); undeclared when run from source. */
declare const STRATA_BUILD_COMMIT: string | undefined;

/**
 * STRATA_COMMIT where set, else the commit the bundle was built from, else the checkout's HEAD (a bundle runs in a
 * copy whose git HEAD need not be the one it was built from).
 */
function commit(): string {
  if (process.env.STRATA_COMMIT) return process.env.STRATA_COMMIT;
  if (typeof STRATA_BUILD_COMMIT === 'string') return STRATA_BUILD_COMMIT;
  try {
    return execSync('git rev-parse --short HEAD', { stdio: ['ignore', 'pipe', 'ignore'] }).toString().trim();
  } catch {
    return 'unknown';
  }
}

export async function runBench(args: BenchArgs): Promise<BenchReport> {
  const log = args.log ?? ((l: string) => console.error(l));
  const strata = await getSharedDevice();
  const rt = new GpuRuntime(strata);
  const report: BenchReport = {
    date: new Date().toISOString(),
    machine: { hostname: os.hostname(), cpus: `${os.cpus().length} x ${os.cpus()[0]?.model ?? '?'}`, os: `${os.platform()} ${os.release()}` },
    adapter: { ...strata.adapterInfo, fallback: strata.isFallback ?? false, maxStorageBufferBindingSize: strata.limits.maxStorageBufferBindingSize },
    commit: commit(),
    quick: args.quick,
  };
  log(`adapter: ${strata.adapterInfo.vendor} ${strata.adapterInfo.device || strata.adapterInfo.description}`);
  if (args.what === 'tiled') {
    report.tiled = await tiledBench(rt, args.quick);
    log(formatTiled(report.tiled));
    const text = JSON.stringify(report, null, 2);
    if (args.out) fs.writeFileSync(args.out, text);
    if (args.json) console.log(text);
    return report;
  }
  let copyGBps: number;
  if (args.noOps && args.what === 'models') {
    copyGBps = (await copyRoofline(rt, copyRooflineBytes(rt, args.quick), args.quick ? 5 : 50)) / 1e9;
    log(`copy roofline ${copyGBps.toFixed(1)} GB/s (ops table left out: --no-ops)`);
  } else {
    const ops = await opsBench(rt, args.quick, log, args.variants, args.rows);
    report.ops = ops;
    copyGBps = ops.copyGBps;
    if (args.out) fs.writeFileSync(args.out, JSON.stringify(report, null, 2));
    log(`elementwise chain fused ${ops.elementwiseChain.fusedMs.toFixed(3)} ms vs unfused ${ops.elementwiseChain.unfusedMs.toFixed(3)} ms`);
    log(`tiled matmul variants:\n${indent(formatTiled(ops.tiled))}`);
  }
  if (args.what !== 'ops') {
    const configs: [string, Record<string, unknown>][] = args.quick ? [['tiny-llama', TINY_BENCH_CONFIG]] : Object.entries(BENCH_CONFIGS).filter(([n]) => !args.configs || args.configs.includes(n));
    const [prompt, fresh] = args.quick ? [16, 16] : [args.prompt ?? 128, 128];
    report.models = [];
    for (const [name, config] of configs) {
      const cases: BenchCase[] = args.cases ? [...args.cases] : [];
      if (!args.cases && !(args.quantizedOnly && args.weights)) {
        for (const storage of ['f32', 'f16'] as const) for (const batch of [1, 8]) cases.push({ storage, batch, fused: true });
        cases.push({ storage: 'f16', batch: 1, fused: false });
      }
      if (!args.cases) for (const storage of args.weights ?? []) for (const batch of [1, 8]) cases.push({ storage, batch, fused: true });
      for (const c of cases) {
        try {
          const r = await benchModel(rt, { name, config, ...c, promptTokens: prompt, newTokens: fresh, stepsPerSubmit: 32, copyBytesPerSecond: copyGBps * 1e9, profile: c.fused, profileAloneIters: args.quick ? 3 : 20 });
          report.models.push(r);
          log(`${name} ${c.storage} batch ${c.batch}${c.fused ? '' : ' UNFUSED'}${c.kvPolicy ? ` ${r.kvPolicy}` : ''}: prefill ${r.prefillTokensPerSecond.toFixed(0)} tok/s, decode ${r.decodeTokensPerSecond.toFixed(1)} tok/s (${r.decodeStepMs.toFixed(2)} ms/step, median of ${r.decodeStepMsRuns.map((x) => x.toFixed(2)).join(' ')}: host records one in ${r.hostEncodeMs.toFixed(2)} and Dawn submits it in ${r.submitMs.toFixed(2)}, the GPU runs one in ${r.gpuStepMs.toFixed(2)}${r.gpuStampedStepMs === undefined ? '' : ` (${r.gpuStampedStepMs.toFixed(2)} by its timestamps)`}; ${r.dispatchesPerDecodeStep} dispatches), ${(r.rooflineFraction * 100).toFixed(1)}% of copy roofline, compile ${r.compileSeconds.toFixed(1)} s`);
          if (r.kernelProfile) log(indent(formatKernelProfile(r.kernelProfile, 10)));
          // written after every case, so that a run cut short by a time limit still leaves its figures
          if (args.out) fs.writeFileSync(args.out, JSON.stringify(report, null, 2));
        } catch (err) {
          log(`${name} ${c.storage} batch ${c.batch}: FAILED ${(err as Error).message.split('\n')[0]}`);
        }
      }
      rt.releaseNamed('m');
    }
  }
  const text = JSON.stringify(report, null, 2);
  if (args.out) fs.writeFileSync(args.out, text);
  if (args.json) console.log(text);
  return report;
}

/** One `--cases` entry: `f16:1`, `q8:8`, `f16:1:unfused`, `f16:1:h2o` (every attention layer under H2O_CASE). */
function parseCase(text: string): BenchCase {
  const [storage, batch, mode] = text.split(':');
  const ok = (storage === 'f32' || storage === 'f16' || storage === 'q8' || storage === 'q4') && Number.isInteger(Number(batch)) && Number(batch) >= 1 && (mode === undefined || mode === 'unfused' || mode === 'h2o');
  if (!ok) throw new Error(`[bench] --cases takes storage:batch[:unfused|:h2o] entries (storage f32, f16, q8 or q4), got '${text}'`);
  return { storage: storage as StorageDType, batch: Number(batch), fused: mode !== 'unfused', ...(mode === 'h2o' ? { kvPolicy: H2O_CASE } : {}) };
}

/** `bench [ops|models|tiled] [--quick] [--json] [--config A,B] [--out FILE] [--weights q8,q4 [--quantized-only]] [--cases f16:1,q8:1,...] [--no-ops] [--variants word,dot4] [--rows staged,staged-wide] [--prompt N]`, as the README documents. */
export function parseBenchArgs(argv: string[]): BenchArgs {
  const what = (['ops', 'models', 'tiled'].find((w) => argv.includes(w)) ?? 'all') as BenchArgs['what'];
  const value = (flag: string) => (argv.includes(flag) ? argv[argv.indexOf(flag) + 1] : undefined);
  const configs = value('--config')?.split(',');
  const out = value('--out');
  const weights = value('--weights')?.split(',');
  if (weights && !weights.every((w): w is QuantStorage => w === 'q8' || w === 'q4')) throw new Error(`[bench] --weights takes q8, q4 or q8,q4, got '${weights.join(',')}'`);
  const cases = value('--cases')?.split(',').map(parseCase);
  const variants = value('--variants')?.split(',');
  if (variants && !variants.every((v): v is QuantMatvec => (QUANT_MATVECS as readonly string[]).includes(v))) throw new Error(`[bench] --variants takes some of ${QUANT_MATVECS.join(',')}, got '${variants.join(',')}'`);
  const rows = value('--rows')?.split(',');
  if (rows && !rows.every((v): v is MatvecRowsVariant => Object.hasOwn(MATVEC_ROWS_VARIANTS, v))) throw new Error(`[bench] --rows takes some of ${Object.keys(MATVEC_ROWS_VARIANTS).join(',')}, got '${rows.join(',')}'`);
  const promptText = value('--prompt');
  const prompt = promptText === undefined ? undefined : Number(promptText);
  if (prompt !== undefined && (!Number.isInteger(prompt) || prompt < 1)) throw new Error(`[bench] --prompt takes a number of tokens, got '${promptText}'`);
  return { ...(cases ? { cases } : {}), ...(variants ? { variants } : {}), ...(rows ? { rows } : {}), what, quick: argv.includes('--quick'), json: argv.includes('--json'), ...(configs ? { configs } : {}), ...(out ? { out } : {}), ...(weights ? { weights } : {}), ...(argv.includes('--quantized-only') ? { quantizedOnly: true } : {}), ...(argv.includes('--no-ops') ? { noOps: true } : {}), ...(prompt ? { prompt } : {}) };
}
