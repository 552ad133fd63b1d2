// `bench quant-sweep`: the quantized matvec's K loops at a grid of shapes (DeviceLimits.quantShape: columns a
// workgroup, threads), q8 and q4, at the ops bench's headline matrix and llama-400m's decode shapes, batch 1, in
// bytes actually read as a fraction of the copy roofline (measured under load, once the first matrix has run for a
// second); each setting's output checked against the first's. `--quick`: one small matrix. `--large`: two matrices
// large enough that a dispatch's fixed cost (~3.3 us on the H200, `bench dispatch-cost`) no longer weighs:
// 32768x8192 and a real LM head (Granite-4.0-H-1B's 100352x1536); at 8192x4096 that cost alone holds q4 (21 MB,
// ~6.6 us at the copy roofline) near 67%. Prints one line a setting, best per (format, matrix) last; `--json FILE`
// writes the rows; `--variants lanes,half` only these K loops (default: all the adapter runs but 'word').
import { writeFileSync } from 'node:fs';
import { GPU_QUANT_MATVEC, QUANT_FORMATS, QUANT_MATVECS, type QuantMatvec, quantMatvecRuns } from '../compiler/quantized.ts';
import { StrataUserError } from '../base/errors.ts';
import { compile } from '../compiler/compile.ts';
import { input, trace, weight } from '../dsl/trace.ts';
import { getSharedDevice } from '../runtime/device.ts';
import { type Executable, GpuRuntime } from '../runtime/gpuRuntime.ts';
import { copyRoofline, copyRooflineBytes } from './ops.ts';
import { timeGpu } from './timing.ts';

const HEADLINE: [number, number] = [8192, 4096];
const DECODE: [number, number][] = [[3072, 1024], [5632, 1024]];
const LARGE: [number, number][] = [[32768, 8192], [100352, 1536]];

export interface SweepRow { storage: 'q8' | 'q4'; variant: QuantMatvec; cols: number; threads: number; rows: number; k: number; us: number; GBps: number; fractionOfCopy: number }

export async function quantSweepMain(argv: string[]): Promise<void> {
  const out = argv.includes('--json') ? argv[argv.indexOf('--json') + 1] : undefined;
  const rt = new GpuRuntime(await getSharedDevice());
  // measured once the GPU is under load (after the first matrix's warm-up below): measured first, on an idle H200,
  // it came out at 2,712-2,902 GB/s against the profile's 3,150-3,200 in the same call, flattering every fraction
  let copy = 0;
  const asked = argv.includes('--variants') ? argv[argv.indexOf('--variants') + 1]!.split(',') : undefined;
  const unknown = asked?.filter((v) => !(QUANT_MATVECS as readonly string[]).includes(v));
  if (unknown?.length) throw new StrataUserError(`--variants takes ${QUANT_MATVECS.join(', ')}, got '${unknown.join(',')}'`);
  const variants = ((asked ?? QUANT_MATVECS) as QuantMatvec[]).filter((v) => v !== 'word' && quantMatvecRuns(v, rt.limits));
  const large = argv.includes('--large');
  // large matrices also try 32 columns a workgroup: x's reads (every workgroup reads all of it) shared by more rows
  const grid = (full: boolean) => (full ? [0, 4, 8, 16] : large ? [0, 4, 16, 32] : [0, 4, 16]).flatMap((cols) => (full ? [0, 64, 128, 256] : large ? [0, 128] : [0, 64]).map((threads) => ({ cols, threads })));
  const rows: SweepRow[] = [];
  const matrices = argv.includes('--quick') ? [[64, 256] as [number, number]] : large ? LARGE : [HEADLINE, ...DECODE];
  for (const [n, k] of matrices)
    for (const storage of ['q8', 'q4'] as const) {
      const fn = () => ({ y: input('x', [1, k]).matmul(weight(`w_${storage}`, [n, k], storage).T) });
      const bytes = QUANT_FORMATS[storage].readBytes(n * k) + 4 * (k + n);
      // compile, load and check every setting first (host work, the GPU idle), then time them back to back after
      // a second of load: an H200 idles at 345 MHz and needs ~0.5 s of load to reach 1,980 MHz; with compiles
      // between timings the first sweep measured at 345 MHz throughout
      const loaded: { variant: QuantMatvec; cols: number; threads: number; exe: Executable }[] = [];
      let reference: Float32Array | undefined;
      const namespace = `quant-sweep-${storage}-${n}x${k}/`;
      for (const variant of variants)
        for (const { cols, threads } of grid(n === HEADLINE[0] || matrices.length === 1)) {
          const exe = await rt.load(compile(trace(fn), { limits: { ...rt.limits, quantMatvec: variant, quantShape: { cols, threads } } }), { namespace: `${namespace}${variant}-${cols}-${threads}/` });
          // the same random x and weight bytes for every setting (bytes <= 0x3b: finite f16 block constants); each
          // setting's y must match the first's (dot4 rounds x to int8, half sums each block in f16: looser bounds)
          fill(rt, exe.buffer('weight', `w_${storage}`)!);
          exe.writeInput('x', Float32Array.from(random(k, 2), (b) => b / 255 - 0.1));
          exe.run();
          const y = (await exe.readOutput('y')).data as Float32Array;
          reference ??= y;
          const err = maxRelative(y, reference);
          // a setting that computes something else is reported and left untimed; the sweep goes on (one device call)
          if (err > (variant === 'dot4' || variant === 'half' ? 2e-2 : 1e-3)) {
            console.log(`${label(storage, variant, cols, threads, n, k)} WRONG: y differs from the first setting's by ${err.toExponential(2)} (relative), not timed`);
            continue;
          }
          loaded.push({ variant, cols, threads, exe });
        }
      await loadFor(rt, loaded[0]!.exe, 1.0);
      if (!copy) {
        copy = (await copyRoofline(rt, copyRooflineBytes(rt, false), 200)) / 1e9;
        console.log(`copy roofline ${copy.toFixed(1)} GB/s (measured under load)`);
      }
      for (const { variant, cols, threads, exe } of loaded) {
        const seconds = await timeWarm(rt, (pass) => exe.encode(pass));
        const GBps = bytes / seconds / 1e9;
        rows.push({ storage, variant, cols, threads, rows: n, k, us: seconds * 1e6, GBps, fractionOfCopy: GBps / copy });
        if (out) writeFileSync(out, JSON.stringify({ copyGBps: copy, rows }, null, 1)); // a run cut short keeps what it timed
        console.log(`${label(storage, variant, cols, threads, n, k)} ${(seconds * 1e6).toFixed(2).padStart(7)} us ${GBps.toFixed(0).padStart(5)} GB/s ${(100 * GBps / copy).toFixed(0).padStart(4)}%`);
      }
      rt.releaseNamed(namespace);
      filled.clear();
    }
  // the 16-bit matvec at the headline matrix beside them, random weights as here and all-zero weights as the ops
  // bench has them (a GPU may compress constant data: bandwidth that random weights do not get)
  for (const zero of [false, true]) {
    const [n, k] = matrices[0]!;
    const exe = await rt.load(compile(trace(() => ({ y: input('x', [1, k]).matmul(weight('w', [n, k], 'f16').T) })), { limits: rt.limits }), { namespace: 'quant-sweep-f16/' });
    if (!zero) fill(rt, exe.buffer('weight', 'w')!);
    await loadFor(rt, exe, 1.0);
    const seconds = await timeWarm(rt, (pass) => exe.encode(pass));
    const GBps = (2 * n * k + 4 * (k + n)) / seconds / 1e9;
    console.log(`f16 ${zero ? 'zero  ' : 'random'} weights [1x${k}]x[${k}x${n}] ${(seconds * 1e6).toFixed(2).padStart(7)} us ${GBps.toFixed(0).padStart(5)} GB/s ${(100 * GBps / copy).toFixed(0).padStart(4)}%`);
    rt.releaseNamed('quant-sweep-f16/');
  }
  console.log('best per format and matrix (cols/threads "-": the planner\'s choice):');
  for (const [n, k] of matrices)
    for (const storage of ['q8', 'q4'] as const) {
      const mine = rows.filter((r) => r.rows === n && r.k === k && r.storage === storage);
      const best = mine.reduce((a, b) => (b.GBps > a.GBps ? b : a));
      // the GPU default's setting where the sweep ran it (--variants may leave it out)
      const base = mine.find((r) => r.variant === GPU_QUANT_MATVEC && r.cols === 0 && r.threads === 0);
      const defaults = base ? ` (default ${base.variant} ${(100 * base.fractionOfCopy).toFixed(0)}%)` : '';
      console.log(`  ${storage} [${k}x${n}]: ${best.variant} cols ${best.cols || '-'} threads ${best.threads || '-'} ${(100 * best.fractionOfCopy).toFixed(0)}%${defaults}`);
    }
}

/** `n` pseudo-random bytes (0..0x3b) from `seed`. */
function random(n: number, seed: number): Uint8Array {
  let state = seed >>> 0;
  const out = new Uint8Array(n);
  for (let i = 0; i < n; i++) out[i] = ((state = (Math.imul(state, 1664525) + 1013904223) >>> 0) >>> 24) % 0x3c;
  return out;
}

/** The same random bytes (seed 1) for every buffer of one size: made once, the large matrices' take a second. */
const filled = new Map<number, Uint8Array>();
function fill(rt: GpuRuntime, buffer: GPUBuffer): void {
  let bytes = filled.get(buffer.size);
  if (!bytes) filled.set(buffer.size, (bytes = random(buffer.size, 1)));
  rt.write(buffer, bytes);
}

/** A setting as the sweep prints it: format, K loop, shape ("-": the planner's), matrix. */
function label(storage: string, variant: QuantMatvec, cols: number, threads: number, n: number, k: number): string {
  return `${storage} ${variant.padEnd(6)} cols ${String(cols || '-').padStart(2)} threads ${String(threads || '-').padStart(3)} [1x${k}]x[${k}x${n}]`;
}

/** Largest |a - b| over the largest |b|. */
function maxRelative(a: Float32Array, b: Float32Array): number {
  let err = 0;
  let scale = 0;
  for (let i = 0; i < b.length; i++) {
    err = Math.max(err, Math.abs(a[i]! - b[i]!));
    scale = Math.max(scale, Math.abs(b[i]!));
  }
  return err / Math.max(scale, 1e-30);
}

/** Seconds per run, the better of two timings of ~20 ms each after ~20 ms of runs (the setting's own warm-up). */
/** Runs `exe` for about `seconds` (the GPU's clocks up). */
async function loadFor(rt: GpuRuntime, exe: Executable, seconds: number): Promise<void> {
  const probe = await timeGpu(rt, (pass) => exe.encode(pass), 50);
  await timeGpu(rt, (pass) => exe.encode(pass), Math.min(200000, Math.ceil(seconds / probe)));
}

async function timeWarm(rt: GpuRuntime, encode: (pass: GPUComputePassEncoder) => void): Promise<number> {
  const probe = await timeGpu(rt, encode, 50);
  const iters = Math.min(20000, Math.max(50, Math.ceil(0.02 / probe)));
  await timeGpu(rt, encode, iters);
  return Math.min(await timeGpu(rt, encode, iters), await timeGpu(rt, encode, iters));
}
