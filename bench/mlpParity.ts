// `bench mlp-parity [--config NAME]`: the fused MLP's GPU-only forms (32 lanes a row, subgroup shuffles: hidden sizes
// that are multiples of 256, which the suite's lavapipe cannot afford to compile) checked on the GPU machine: each
// bench configuration with random f16 weights prefills 16 tokens and decodes 8 at batch 1 with fused MLPs and without
// (STRATA_MLP_FUSION's DeviceLimits.mlpFusion, each runner compiling its own programs), fed the same tokens; prints
// the largest logit difference against the largest logit and whether the argmax ever differs.
import { parseConfig } from '../models/config.ts';
import { buildModel } from '../models/registry.ts';
import { getSharedDevice } from '../runtime/device.ts';
import { GpuRuntime } from '../runtime/gpuRuntime.ts';
import { ModelRunner } from '../runtime/modelRunner.ts';
import { argmax, maxAbsDiff } from '../runtime/parity.ts';
import { randomCheckpoint } from '../runtime/randomWeights.ts';
import { BENCH_CONFIGS } from './configs.ts';

export async function mlpParityMain(argv: string[]): Promise<void> {
  const only = argv.indexOf('--config') >= 0 ? argv[argv.indexOf('--config') + 1] : undefined;
  const rt = new GpuRuntime(await getSharedDevice());
  for (const name of Object.keys(BENCH_CONFIGS)) {
    if (only && name !== only) continue;
    const model = buildModel(parseConfig(BENCH_CONFIGS[name]!, `${name}.json`));
    const checkpoint = randomCheckpoint(model, { storage: 'f16' });
    const run = async (mlpFusion: boolean, feed?: number[]) => {
      const runner = new ModelRunner(rt, model, checkpoint, { slots: 1, capacity: 64, chunks: [1, 16], compileLimits: { ...rt.limits, mlpFusion } });
      const prompt = Array.from({ length: 16 }, (_, i) => (i * 7919) % 32000);
      const logits = [(await runner.step([{ slot: 0, tokens: prompt }], 'last', { rows: 1, tokens: 16 }))[0]!];
      const fed: number[] = [];
      for (let t = 0; t < 8; t++) {
        const next = feed?.[t] ?? argmax(logits[logits.length - 1]!);
        fed.push(next);
        logits.push((await runner.step([{ slot: 0, tokens: [next] }], 'last', { rows: 1, tokens: 1 }))[0]!);
      }
      const fusedKernels = (await runner.program(1, 1, 'last')).program.kernels.filter((k) => k.templates.includes('mlp')).length;
      return { logits, fed, fusedKernels };
    };
    const plain = await run(false);
    const fused = await run(true, plain.fed);
    const worst = Math.max(...plain.logits.map((l, i) => maxAbsDiff(l, fused.logits[i]!)));
    const scale = Math.max(...plain.logits.map((l) => l.reduce((m, x) => Math.max(m, Math.abs(x)), 0)));
    const flips = plain.logits.filter((l, i) => argmax(l) !== argmax(fused.logits[i]!)).length;
    console.log(`${name}: ${fused.fusedKernels} fused MLP kernels; decode logits within ${worst.toExponential(2)} of the unfused program's (largest |logit| ${scale.toFixed(3)}), argmax differs at ${flips} of ${plain.logits.length} positions`);
  }
}
