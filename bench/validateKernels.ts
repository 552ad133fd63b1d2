// Validates every kernel of the bench models' buckets as compiled for an H200-like adapter (subgroups, 16 storage
// buffers, 48 KiB of workgroup memory, unrolled), once per tiled matmul variant, on the local Dawn device:
// createShaderModule + getCompilationInfo errors, and the workgroup memory each module declares against 48 KiB.
// `npx tsx bench/validateKernels.ts` (ONLY=<config name part>); exits 1 on any error. Compiles no pipeline.
import { compileBucket } from '../cli/kernelSchedule.ts';
import { TILED_VARIANTS, type TiledVariant } from '../compiler/lower/tiledMatmul.ts';
import { parseConfig } from '../models/config.ts';
import { buildModel } from '../models/registry.ts';
import { getSharedDevice } from '../runtime/device.ts';
import { BENCH_CONFIGS } from './configs.ts';

const H200 = { subgroups: true, maxStorageBuffersPerShaderStage: 16, maxComputeWorkgroupStorageSize: 48 << 10, unroll: true };
const BUCKETS = [[1, 1], [8, 1], [1, 16], [1, 128]] as const;
const WGSL_SIZES: Record<string, number> = { f32: 4, u32: 4, i32: 4, 'vec4<f32>': 16, 'vec4<u32>': 16 };

/** Bytes of `var<workgroup>` a module declares (arrays of the scalar and vec4 types the emitter writes). */
function workgroupBytes(wgsl: string): number {
  let bytes = 0;
  for (const m of wgsl.matchAll(/var<workgroup>\s+\w+\s*:\s*array<([\w<>]+),\s*(\d+)>/g)) bytes += (WGSL_SIZES[m[1]!] ?? 16) * Number(m[2]);
  return bytes;
}

const device = (await getSharedDevice()).device;
let errors = 0;
let modules = 0;
for (const variant of Object.keys(TILED_VARIANTS) as TiledVariant[]) {
  for (const name of Object.keys(BENCH_CONFIGS)) {
    if (process.env.ONLY && !name.includes(process.env.ONLY)) continue;
    const model = buildModel(parseConfig(BENCH_CONFIGS[name]!, name));
    for (const [rows, tokens] of BUCKETS) {
      const program = compileBucket(model, () => 'f16', { rows, tokens, capacity: 264, limits: { ...H200, tiledMatmul: variant } });
      for (const k of program.kernels) {
        modules++;
        const at = `${variant} ${name} r${rows} t${tokens} ${k.name}`;
        if (workgroupBytes(k.wgsl) > H200.maxComputeWorkgroupStorageSize) {
          errors++;
          console.error(`${at}: ${workgroupBytes(k.wgsl)} bytes of workgroup memory`);
        }
        const info = await device.createShaderModule({ code: k.wgsl, label: k.name }).getCompilationInfo();
        for (const m of info.messages.filter((x) => x.type === 'error')) {
          errors++;
          console.error(`${at}:${m.lineNum}:${m.linePos} ${m.message}`);
        }
      }
    }
  }
}
console.log(`${modules} modules, ${errors} errors`);
process.exit(errors ? 1 : 0);
