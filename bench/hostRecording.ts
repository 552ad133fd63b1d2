// `bench host-record [config] [--steps K] [--rounds N] [--gc]`: the host's share of decode over many submissions.
// Each round records K batch-1 decode steps of a bench configuration (random f16 weights) into one command buffer,
// submits it and waits, eight times, and reports the recording and Dawn's submit per step and the process's resident
// memory; with --gc (node --expose-gc) a garbage collection follows each round. Why: a step's recording runs at
// two speeds 1.5-2x apart, between processes and within one (bench/results/2026-12-03-h200-host-split/).
import { parseConfig } from '../models/config.ts';
import { buildModel } from '../models/registry.ts';
import { getSharedDevice } from '../runtime/device.ts';
import { GpuRuntime } from '../runtime/gpuRuntime.ts';
import { ModelRunner } from '../runtime/modelRunner.ts';
import { randomCheckpoint } from '../runtime/randomWeights.ts';
import { StrataUserError } from '../base/errors.ts';
import { BENCH_CONFIGS } from './configs.ts';
import { recordRuns } from './timing.ts';

/** One round: K steps a submission, 8 submissions; host milliseconds of recording and submit per step, resident MiB. */
export interface RecordingRound {
  recordUs: number;
  submitUs: number;
  residentMiB: number;
}

/** `rounds` rounds of batch-1 decode steps of `config` (random f16 weights), a garbage collection after each where `gc` is given. */
export async function hostRecording(rt: GpuRuntime, name: string, config: Record<string, unknown>, K: number, rounds: number, gc?: () => void): Promise<{ dispatches: number; rounds: RecordingRound[] }> {
  const model = buildModel(parseConfig(config, name));
  const runner = new ModelRunner(rt, model, randomCheckpoint(model, { storage: 'f16' }), { slots: 1, capacity: 64, chunks: [1], fuse: true });
  const decode = await runner.program(1, 1, 'last');
  const out: RecordingRound[] = [];
  for (let round = 0; round < rounds; round++) {
    let [record, submit] = [0, 0];
    for (let rep = 0; rep < 8; rep++) {
      const t0 = performance.now();
      const commands = recordRuns(rt, (pass) => decode.encode(pass), K);
      const t1 = performance.now();
      rt.device.queue.submit([commands]);
      submit += performance.now() - t1;
      record += t1 - t0;
      await rt.device.queue.onSubmittedWorkDone();
    }
    gc?.();
    out.push({ recordUs: (record / 8 / K) * 1000, submitUs: (submit / 8 / K) * 1000, residentMiB: process.memoryUsage().rss / 2 ** 20 });
  }
  return { dispatches: decode.program.kernels.length, rounds: out };
}

export async function hostRecordingMain(argv: string[]): Promise<void> {
  // the configuration: the one argument that is neither a flag nor the value of --steps or --rounds
  const name = argv.find((a, i) => !a.startsWith('--') && argv[i - 1] !== '--steps' && argv[i - 1] !== '--rounds') ?? 'llama-400m';
  const flag = (key: string, fallback: number) => {
    const at = argv.indexOf(key);
    const n = at >= 0 ? Number(argv[at + 1]) : fallback;
    if (!Number.isInteger(n) || n < 1) throw new StrataUserError(`${key} takes a positive integer, got '${argv[at + 1]}'`);
    return n;
  };
  const [K, rounds] = [flag('--steps', 32), flag('--rounds', 12)];
  const gc = argv.includes('--gc') ? (globalThis as { gc?: () => void }).gc : undefined;
  if (argv.includes('--gc') && !gc) throw new StrataUserError('--gc needs node --expose-gc');
  const config = BENCH_CONFIGS[name];
  if (!config) throw new StrataUserError(`unknown bench configuration '${name}' (${Object.keys(BENCH_CONFIGS).join(', ')})`);
  const rt = new GpuRuntime(await getSharedDevice());
  const r = await hostRecording(rt, name, config, K, rounds, gc);
  console.log(`${name}: ${r.dispatches} dispatches a step, ${K} steps a submission, 8 submissions a round${gc ? ', a garbage collection after each round' : ''}`);
  r.rounds.forEach((x, i) => console.log(`round ${i}: record ${x.recordUs.toFixed(0)} us, submit ${x.submitUs.toFixed(0)} us a step; resident ${x.residentMiB.toFixed(0)} MiB`));
}
