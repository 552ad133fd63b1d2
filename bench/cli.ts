// Entry point of the bench (`npm run bench`, `node dist/bench.mjs` on a GPU machine): `bench [ops|models] ...` runs
// the bench, `bench profile ...` the per-kernel profile of one bucket, `bench speculative ...` speculative decoding against plain, `bench serve-load ...` a loopback load run of strata serve, `bench dispatch-cost` the cost of one dispatch apart from its kernel, `bench mlp-fusion` a gated MLP's two matvecs against one dispatch that sums in fixed point, `bench mlp-parity` the fused MLP's GPU-only forms against the unfused program, `bench attn` the decode attention kernel's variants, `bench quant-sweep` the quantized matvec's shapes, `bench greedy-batch` a model's reference generations decoded together, `bench env-parity` their logits under two settings of a switch, `bench host-record` a decode step's recording over many submissions, `bench stream-times` when a generation's text pieces arrive. Nothing else imports this file.
import { StrataUserError } from '../base/errors.ts';
import { parseBenchArgs, runBench } from './main.ts';
import { profileMain } from './profile.ts';
import { attnBenchMain } from './attnBench.ts';
import { dispatchCostBench } from './dispatchCost.ts';
import { mlpFusionBench } from './mlpFusion.ts';
import { mlpParityMain } from './mlpParity.ts';
import { serveLoadBench } from './serveLoad.ts';
import { speculativeBench } from './speculative.ts';
import { quantSweepMain } from './quantSweep.ts';
import { greedyBatchMain } from './greedyBatch.ts';
import { envParityMain } from './envParity.ts';
import { hostRecordingMain } from './hostRecording.ts';
import { streamTimesMain } from './streamTimes.ts';

const argv = process.argv.slice(2);
try {
  if (argv[0] === 'profile') await profileMain(argv.slice(1));
  else if (argv[0] === 'speculative') await speculativeBench(argv.slice(1));
  else if (argv[0] === 'attn') await attnBenchMain(argv.slice(1));
  else if (argv[0] === 'quant-sweep') await quantSweepMain(argv.slice(1));
  else if (argv[0] === 'greedy-batch') await greedyBatchMain(argv.slice(1));
  else if (argv[0] === 'env-parity') await envParityMain(argv.slice(1));
  else if (argv[0] === 'host-record') await hostRecordingMain(argv.slice(1));
  else if (argv[0] === 'stream-times') await streamTimesMain(argv.slice(1));
  else if (argv[0] === 'dispatch-cost') await dispatchCostBench();
  else if (argv[0] === 'mlp-fusion') await mlpFusionBench(argv.slice(1));
  else if (argv[0] === 'mlp-parity') await mlpParityMain(argv.slice(1));
  else if (argv[0] === 'serve-load') await serveLoadBench(argv.slice(1));
  else await runBench(parseBenchArgs(argv));
  process.exit(process.exitCode ?? 0); // Dawn can keep the event loop alive after the work is done
} catch (error) {
  // a user error is its one line; anything else keeps its stack
  console.error(error instanceof StrataUserError ? error.message : error instanceof Error ? (error.stack ?? error.message) : String(error));
  process.exit(1);
}
