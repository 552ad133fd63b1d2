// Dumps every compiled Program (plan, schedule, WGSL) of the bench configurations (4 buckets) and the fixture models
// (4 buckets, an H200-like and a lavapipe-like adapter) into a folder, so a compiler change can be diffed against the
// programs it replaces: npx tsx bench/scheduleDump.ts <outDir> (ONLY=<name part> for a subset, VARIANTS=1 for the
// non-default kernels and storage formats too). Compile only, no GPU.
import { mkdirSync, writeFileSync, existsSync } from 'node:fs';
import { compileBucket } from '../cli/kernelSchedule.ts';
import { printProgram, printSchedule, type Program } from '../compiler/program.ts';
import { loadConfig, parseConfig } from '../models/config.ts';
import { buildModel } from '../models/registry.ts';
import { BENCH_CONFIGS } from '../bench/configs.ts';
import type { StorageDType } from '../compiler/ir.ts';
import { QUANT_MATVECS } from '../compiler/quantized.ts';
import { MATVEC_ROWS_VARIANTS } from '../compiler/lower/matvecRows.ts';
import { TILED_VARIANTS } from '../compiler/lower/tiledMatmul.ts';
const out = process.argv[2]!;
mkdirSync(out, { recursive: true });
// STRATA_ONE_GROUP_FUSION=0 dumps the programs without one-workgroup fusion (DeviceLimits.oneGroupFusion), to diff against
const oneGroupFusion = process.env.STRATA_ONE_GROUP_FUSION !== '0';
// decode attentions that compute their q/k/v (DeviceLimits.attentionProjection): the GPU's default, =0 or =batched
// as on an adapter; the lavapipe-like dump only with STRATA_ATTN_PROJECTION=1, as on lavapipe
const projectionEnv = process.env.STRATA_ATTN_PROJECTION;
const attentionProjection: boolean | 'batched' = projectionEnv === '0' ? false : projectionEnv === 'batched' ? 'batched' : true;
// prefill tiles' left operands from buffers (DeviceLimits.tiledPlainLeft): on, STRATA_TILED_PLAIN_LEFT=0 or =norms as on an adapter
const plainEnv = process.env.STRATA_TILED_PLAIN_LEFT;
const tiledPlainLeft: boolean | 'norms' = plainEnv === '0' ? false : plainEnv === 'norms' ? 'norms' : true;
// STRATA_SSD_PROJECTION=1 (or heads): Mamba-2 decode steps that compute their in_proj rows (DeviceLimits.ssdProjection)
const ssdProjection: boolean | 'heads' = process.env.STRATA_SSD_PROJECTION === 'heads' ? 'heads' : process.env.STRATA_SSD_PROJECTION === '1';
const LIMITS = { subgroups: true, maxStorageBuffersPerShaderStage: 16, oneGroupFusion, attentionProjection, ssdProjection, tiledPlainLeft, ...(attentionProjection ? { maxComputeWorkgroupStorageSize: 32768 } : {}) };
const LAVA = { subgroups: false, maxStorageBuffersPerShaderStage: 8, unroll: false, oneGroupFusion, attentionProjection: projectionEnv === '1', ssdProjection, tiledPlainLeft };
function dump(tag: string, p: Program) {
  const text = [printProgram(p), printSchedule(p), ...p.kernels.map((k) => `// ---- ${k.name}\n${k.wgsl}`)].join('\n');
  writeFileSync(`${out}/${tag}.txt`, text);
  console.log(tag, p.kernels.length);
}
const only = process.env.ONLY;
for (const name of Object.keys(BENCH_CONFIGS)) {
  if (only && !name.includes(only)) continue;
  const model = buildModel(parseConfig(BENCH_CONFIGS[name]!, name));
  for (const [rows, tokens] of [[1, 1], [8, 1], [1, 128], [1, 16]] as const)
    dump(`${name}-r${rows}-t${tokens}`, compileBucket(model, () => 'f16', { rows, tokens, capacity: 264, limits: LIMITS }));
}
// VARIANTS=1 adds the storage formats and kernel variants the defaults above do not reach (bf16, q8, q4 weights with
// every quantized matvec, the rows path's and the tiled matmul's variants, preloaded matvec weights), on the bench
// configurations at decode (r1, r8) and prefill (t128); VARIANT=<tag part> for a subset
if (process.env.VARIANTS === '1') {
  type Storage = (name: string) => StorageDType;
  const variants: [string, Storage, Record<string, unknown>][] = [['bf16', () => 'bf16', {}], ['preload', () => 'f16', { matvecPreload: true }]];
  // q8 keys among q4 weights: one matvec meets both formats
  const mixed: Storage = (name) => (/k_proj|in_proj/.test(name) ? 'q8' : 'q4');
  for (const [tag, storage] of [['q8', () => 'q8'], ['q4', () => 'q4'], ['mixed', mixed]] as [string, Storage][])
    for (const quantMatvec of QUANT_MATVECS) variants.push([`${tag}-${quantMatvec}`, storage, { quantMatvec, packedDot: true, shaderF16: true }]);
  for (const matvecRows of Object.keys(MATVEC_ROWS_VARIANTS)) for (const s of ['f16', 'bf16'] as const) variants.push([`rows-${matvecRows}-${s}`, () => s, { matvecRows }]);
  for (const tiledMatmul of Object.keys(TILED_VARIANTS)) variants.push([`tiled-${tiledMatmul}`, () => 'f16', { tiledMatmul }]);
  for (const name of Object.keys(BENCH_CONFIGS)) {
    if (only && !name.includes(only)) continue;
    const model = buildModel(parseConfig(BENCH_CONFIGS[name]!, name));
    for (const [tag, storage, limits] of variants) {
      if (process.env.VARIANT && !tag.includes(process.env.VARIANT)) continue;
      const buckets = tag.startsWith('tiled') ? [[1, 128]] : tag.startsWith('rows') ? [[8, 1]] : [[1, 1], [8, 1], [1, 128]];
      for (const [rows, tokens] of buckets as [number, number][])
        dump(`${name}-${tag}-r${rows}-t${tokens}`, compileBucket(model, storage, { rows, tokens, capacity: 264, limits: { ...LIMITS, ...limits } }));
    }
  }
}
const dirs = ['bamba', 'falcon_h1', 'gemma3n_text', 'granitemoehybrid', 'jamba', 'lfm2', 'llama', 'mamba', 'mamba2', 'qwen3_next'].map((d) => `test/fixtures/hf/${d}`);
dirs.push('assets/models/tiny-granite-code');
for (const dir of dirs) {
  if (only && !dir.includes(only)) continue;
  if (!existsSync(`${dir}/config.json`)) continue;
  const model = buildModel(await loadConfig(dir));
  const tag = dir.split('/').pop();
  for (const [rows, tokens] of [[1, 1], [2, 1], [1, 16], [2, 8]] as const)
    for (const [ln, lim] of [['h', LIMITS], ['l', LAVA]] as const)
      dump(`${tag}-r${rows}-t${tokens}-${ln}`, compileBucket(model, () => undefined, { rows, tokens, capacity: 64, limits: lim }));
}
