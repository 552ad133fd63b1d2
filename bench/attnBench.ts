// `bench attn [--variants 'lanes sector vec:loads=64,wg=128 ...'] [--quick]` (variants apart by spaces): the decode attention kernel alone
// (compiler/lower/attentionDecode.ts) in each variant (compiler/lower/attentionDecodeVariants.ts, the syntax of
// STRATA_ATTN_DECODE) at llama-400m's decode shapes, read as the model reads its caches: microseconds per call and
// each variant's output distance from the first's.
import { compile } from '../compiler/compile.ts';
import { ATTENTION_DECODE_VARIANTS, formatAttentionDecode, parseAttentionDecode } from '../compiler/lower/attentionDecodeVariants.ts';
import { attention } from '../dsl/nn/attention.ts';
import { input, iota, trace } from '../dsl/trace.ts';
import { getSharedDevice } from '../runtime/device.ts';
import { type Executable, GpuRuntime } from '../runtime/gpuRuntime.ts';
import { timeGpu } from './timing.ts';

/** S sequences, KVH KV heads of G query heads, head D, cache rows E (capacity) of which `positions` are attended. */
interface AttnShape { name: string; S: number; KVH: number; G: number; D: number; E: number; positions: number }
const SHAPES: AttnShape[] = [
  { name: 'llama-400m 1x192', S: 1, KVH: 4, G: 4, D: 64, E: 264, positions: 192 },
  { name: 'llama-400m 1x1000', S: 1, KVH: 4, G: 4, D: 64, E: 1064, positions: 1000 },
  { name: 'llama-400m 8x192', S: 8, KVH: 4, G: 4, D: 64, E: 264, positions: 192 },
];
const QUICK_SHAPES: AttnShape[] = [{ name: 'quick', S: 1, KVH: 2, G: 2, D: 16, E: 40, positions: 33 }];

/** The step's attention as caches/stepContext.ts builds it: caches [S*E, KVH*D] (a key's elements adjacent) read through views. */
function program({ S, KVH, G, D, E }: AttnShape) {
  return () => {
    const kT = input('kc', [S * E, KVH * D]).reshape(S, E, KVH, D).permute(0, 2, 3, 1); // [S,KVH,D,E]
    const v = input('vc', [S * E, KVH * D]).reshape(S, E, KVH, D).permute(0, 2, 1, 3); // [S,KVH,E,D]
    const limit = input('len', [S, KVH, G], 'i32');
    const mask = iota([S, KVH, G, E], 3, 'i32').lt(limit.reshape(S, KVH, G, 1));
    return { y: attention(input('q', [S, KVH, G, D]), kT, v, mask, limit, { scale: 1 / Math.sqrt(D) }) };
  };
}

function fill(exe: Executable, s: AttnShape): void {
  let state = 12345;
  const rand = (n: number) => Float32Array.from({ length: n }, () => ((state = (Math.imul(state, 1664525) + 1013904223) >>> 0) / 2 ** 31 - 1));
  exe.writeInput('q', rand(s.S * s.KVH * s.G * s.D));
  exe.writeInput('kc', rand(s.S * s.E * s.KVH * s.D));
  exe.writeInput('vc', rand(s.S * s.E * s.KVH * s.D));
  exe.writeInput('len', new Int32Array(s.S * s.KVH * s.G).fill(s.positions));
}

export async function attnBenchMain(argv: string[]): Promise<void> {
  const at = argv.indexOf('--variants');
  const specs = at >= 0 ? argv[at + 1]!.split(/\s+/).filter(Boolean) : Object.keys(ATTENTION_DECODE_VARIANTS);
  const quick = argv.includes('--quick');
  const rt = new GpuRuntime(await getSharedDevice());
  const [iters, rounds] = quick ? [2, 1] : [200, 3];
  for (const spec of specs) console.log(`${spec}: ${formatAttentionDecode(parseAttentionDecode(spec, '--variants'))}`);
  for (const s of quick ? QUICK_SHAPES : SHAPES) {
    const exes: Executable[] = [];
    for (const spec of specs) {
      const p = compile(trace(program(s)), { limits: { ...rt.limits, attentionDecode: parseAttentionDecode(spec, '--variants') } });
      const exe = await rt.load(p, { namespace: `attn-bench-${s.name}-${spec}/` });
      fill(exe, s);
      exes.push(exe);
    }
    const outputs: Float32Array[] = [];
    for (const exe of exes) {
      exe.run();
      outputs.push((await exe.readOutput('y')).data as Float32Array);
    }
    if (!quick) await timeGpu(rt, (pass) => exes[0]!.encode(pass), 20000); // off idle clocks
    const best = specs.map(() => Infinity);
    for (let r = 0; r < rounds; r++) for (const [i, exe] of exes.entries()) best[i] = Math.min(best[i]!, await timeGpu(rt, (pass) => exe.encode(pass), iters));
    const ref = outputs[0]!;
    const scale = ref.reduce((m, x) => Math.max(m, Math.abs(x)), 0) || 1;
    console.log(`${s.name} (S ${s.S}, KV heads ${s.KVH} x ${s.G} query heads, head ${s.D}, ${s.positions} of ${s.E} positions)`);
    specs.forEach((spec, i) => {
      const diff = outputs[i]!.reduce((m, x, j) => Math.max(m, Math.abs(x - ref[j]!)), 0) / scale;
      const kernels = exes[i]!.program.kernels.map((k) => `${k.templates.join('+')} ${k.workgroups.join('x')}`).join(', ');
      console.log(`  ${spec.padEnd(36)} ${(best[i]! * 1e6).toFixed(2).padStart(8)} us  ${kernels}${diff > 1e-4 ? `  DIFF ${diff.toExponential(1)}` : ''}`);
    });
    rt.releaseNamed('attn-bench-');
  }
}
